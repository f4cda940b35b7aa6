//! The Prometheus text format 0.0.4 written by hand: one `# HELP`/`# TYPE` header per family,
//! then its samples, each with optional millisecond timestamp. Families must be written whole
//! (all samples of a name together), which the callers do by iterating per family.

use std::fmt::Write;

/// Accumulates an exposition.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
}

/// Escape a label value: backslash, double quote and newline.
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl TextWriter {
    /// An empty exposition.
    pub fn new() -> Self {
        TextWriter::default()
    }

    /// Start a family: `kind` is `counter`, `gauge` or `untyped`.
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        timestamp_ms: Option<i64>,
    ) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        if value.is_nan() {
            self.out.push_str("NaN");
        } else if value.is_infinite() {
            self.out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(self.out, "{value}");
        }
        if let Some(ts) = timestamp_ms {
            let _ = write!(self.out, " {ts}");
        }
        self.out.push('\n');
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_with_escaped_labels_and_timestamps() {
        let mut w = TextWriter::new();
        w.family("container_cpu_usage_seconds_total", "CPU", "counter");
        w.sample(
            "container_cpu_usage_seconds_total",
            &[("pod", "a\"b"), ("namespace", "x\\y\nz")],
            1.5,
            Some(1700000000123),
        );
        w.family("up", "Up", "gauge");
        w.sample("up", &[], 1.0, None);
        assert_eq!(
            w.finish(),
            "# HELP container_cpu_usage_seconds_total CPU\n# TYPE container_cpu_usage_seconds_total counter\n\
             container_cpu_usage_seconds_total{pod=\"a\\\"b\",namespace=\"x\\\\y\\nz\"} 1.5 1700000000123\n\
             # HELP up Up\n# TYPE up gauge\nup 1\n"
        );
    }
}
