//! The few families of kubelet's `/metrics/resource` the metrics server reads, parsed from the
//! Prometheus text format: node CPU and working set, and per container CPU, working set and
//! start time. Every sample carries its own timestamp (the scrape time when it has none).

use std::collections::HashMap;

/// One node's usage.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    /// When it was sampled, ms since the epoch.
    pub timestamp_ms: i64,
    /// Cumulative CPU, nanoseconds.
    pub cpu_nanos: u64,
    /// Working set, bytes.
    pub memory_bytes: u64,
    /// Container start, ms since the epoch (0 for nodes).
    pub start_ms: i64,
}

/// `(namespace, pod, container)`.
pub type ContainerKey = (String, String, String);

/// What one scrape of a node gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeScrape {
    /// The node itself.
    pub node: Point,
    /// Every container.
    pub containers: HashMap<ContainerKey, Point>,
}

/// A sample: name, labels, value, timestamp.
type Sample<'a> = (&'a str, Vec<(&'a str, String)>, f64, Option<i64>);

/// Parse `name{k="v",…} value [timestamp]`; `None` for comments and lines it cannot read.
fn parse_line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, rest) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, rest)
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, Vec::new(), rest)
        }
    };
    let mut fields = rest.split_whitespace();
    let value = fields.next()?.parse::<f64>().ok()?;
    let timestamp = fields.next().and_then(|t| t.parse::<i64>().ok());
    Some((name, labels, value, timestamp))
}

/// Labels up to the closing brace, and what follows it.
fn parse_labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim(), value));
        s = &rest[end + 1..];
    }
}

/// Read a `/metrics/resource` exposition taken at `scraped_ms`.
pub fn parse(text: &str, scraped_ms: i64) -> NodeScrape {
    let mut out = NodeScrape::default();
    for line in text.lines() {
        let Some((name, labels, value, ts)) = parse_line(line) else {
            continue;
        };
        let ts = ts.unwrap_or(scraped_ms);
        let label = |k: &str| {
            labels
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let key = || (label("namespace"), label("pod"), label("container"));
        let containers = &mut out.containers;
        let mut container = |f: &dyn Fn(&mut Point)| {
            let p = containers.entry(key()).or_default();
            p.timestamp_ms = p.timestamp_ms.max(ts);
            f(p);
        };
        match name {
            "node_cpu_usage_seconds_total" => {
                out.node.cpu_nanos = (value * 1e9) as u64;
                out.node.timestamp_ms = ts;
            }
            "node_memory_working_set_bytes" => {
                out.node.memory_bytes = value as u64;
                out.node.timestamp_ms = out.node.timestamp_ms.max(ts);
            }
            "container_cpu_usage_seconds_total" => {
                container(&|p| p.cpu_nanos = (value * 1e9) as u64)
            }
            "container_memory_working_set_bytes" => container(&|p| p.memory_bytes = value as u64),
            "container_start_time_seconds" => container(&|p| p.start_ms = (value * 1e3) as i64),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubelet_resource_metrics() {
        let text = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="web-1"} 1.5 1700000001000
container_memory_working_set_bytes{container="app",namespace="default",pod="web-1"} 1048576 1700000001000
container_start_time_seconds{container="app",namespace="default",pod="web-1"} 1.6999e+09 1700000001000
container_cpu_usage_seconds_total{container="x",namespace="a\"b",pod="p"} 2 1700000002000
node_cpu_usage_seconds_total 100.25 1700000000500
node_memory_working_set_bytes 2e+09 1700000000500
pod_cpu_usage_seconds_total{namespace="default",pod="web-1"} 1.5 1700000001000
resource_scrape_error 0
"#;
        let s = parse(text, 1);
        assert_eq!(
            s.node,
            Point {
                timestamp_ms: 1700000000500,
                cpu_nanos: 100_250_000_000,
                memory_bytes: 2_000_000_000,
                start_ms: 0
            }
        );
        let web = s.containers[&("default".into(), "web-1".into(), "app".into())];
        assert_eq!(web.cpu_nanos, 1_500_000_000);
        assert_eq!(web.memory_bytes, 1 << 20);
        assert_eq!(web.start_ms, 1_699_900_000_000);
        assert_eq!(web.timestamp_ms, 1700000001000);
        let odd = s.containers[&("a\"b".into(), "p".into(), "x".into())];
        assert_eq!(odd.cpu_nanos, 2_000_000_000);
    }

    #[test]
    fn samples_without_timestamps_take_the_scrape_time() {
        let s = parse(
            "node_cpu_usage_seconds_total 3\nnode_memory_working_set_bytes 5\n",
            42,
        );
        assert_eq!(s.node.timestamp_ms, 42);
        assert!(parse("garbage {{{ line\n", 1).containers.is_empty());
    }
}
