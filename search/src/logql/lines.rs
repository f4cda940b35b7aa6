//! Running a log pipeline over one line in memory: selector matching (for live tail and for
//! matchers the index cannot answer), line filters, `json`, `logfmt`, label filters and
//! `line_format`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::ast::*;
use super::lexer::value_as_number;
use crate::record::{LogRecord, logfmt};
use crate::schema::LABEL_FIELDS;

pub type Labels = BTreeMap<String, String>;

/// The built-in labels that make up a line's stream in LogQL answers: the schema's label fields
/// up to `component`. The owner and pod uid can be selected on but are left out of stream
/// identities, as Loki's Kubernetes setups do.
pub const STREAM_LABELS: &[&str] = LABEL_FIELDS.split_at(8).0;

/// A label of a record by LogQL name: a built-in label, else a pod label.
pub fn record_label<'a>(r: &'a LogRecord, name: &str) -> Option<&'a str> {
    if LABEL_FIELDS.contains(&name) {
        r.label(name)
    } else {
        r.labels.get(name).map(String::as_str)
    }
}

pub fn stream_labels(r: &LogRecord) -> Labels {
    STREAM_LABELS
        .iter()
        .filter_map(|n| r.label(n).map(|v| ((*n).to_owned(), v.to_owned())))
        .collect()
}

/// A line after its pipeline: its labels and (possibly reformatted) text.
#[derive(Clone, Debug, PartialEq)]
pub struct Processed {
    pub labels: Labels,
    pub line: String,
}

impl LogExpr {
    pub fn selector_matches(&self, r: &LogRecord) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(record_label(r, &m.name)))
    }

    /// The line after the stages, or `None` when a filter drops it. The selector is not
    /// checked here.
    pub fn process(&self, r: &LogRecord) -> Option<Processed> {
        let mut labels = stream_labels(r);
        let mut line: Cow<str> = Cow::Borrowed(&r.message);
        for stage in &self.stages {
            match stage {
                Stage::Line(f) => {
                    if !f.matches(&line) {
                        return None;
                    }
                }
                Stage::Json => json_labels(&line, &mut labels),
                Stage::Logfmt => {
                    for (k, v) in logfmt(&line) {
                        insert_extracted(&mut labels, &sanitize(&k), v);
                    }
                }
                Stage::Label(f) => {
                    if !f.matches(&labels, r) {
                        return None;
                    }
                }
                Stage::LineFormat(parts) => {
                    line = Cow::Owned(render(parts, &line, &labels, r));
                }
                Stage::Drop(picks) => {
                    labels.retain(|k, v| !picks.iter().any(|p| p.picks(k, v)));
                }
                Stage::Keep(picks) => {
                    labels.retain(|k, v| picks.iter().any(|p| p.picks(k, v)));
                }
                Stage::LabelFormat(assignments) => {
                    // Every right side reads the labels as they were before this stage.
                    let before = labels.clone();
                    for (dst, value) in assignments {
                        match value {
                            LabelValue::Rename(src) => {
                                let v = before
                                    .get(src)
                                    .cloned()
                                    .or_else(|| record_label(r, src).map(str::to_owned))
                                    .unwrap_or_default();
                                if src != dst {
                                    labels.remove(src);
                                }
                                labels.insert(dst.clone(), v);
                            }
                            LabelValue::Template(parts) => {
                                labels.insert(dst.clone(), render(parts, &line, &before, r));
                            }
                        }
                    }
                }
            }
        }
        Some(Processed {
            labels,
            line: line.into_owned(),
        })
    }
}

/// A `line_format`/`label_format` template over the current line and labels.
fn render(parts: &[TemplatePart], line: &str, labels: &Labels, r: &LogRecord) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            TemplatePart::Text(t) => out.push_str(t),
            TemplatePart::Line => out.push_str(line),
            TemplatePart::Label(name) => {
                let v = labels
                    .get(name)
                    .map(String::as_str)
                    .or_else(|| record_label(r, name));
                out.push_str(v.unwrap_or(""));
            }
        }
    }
    out
}

impl LineFilter {
    pub fn matches(&self, line: &str) -> bool {
        match self.op {
            LineOp::Contains => self.values.iter().any(|v| line.contains(v.as_str())),
            LineOp::NotContains => !self.values.iter().any(|v| line.contains(v.as_str())),
            LineOp::Regex => self.regexes.iter().any(|r| r.is_match(line)),
            LineOp::NotRegex => !self.regexes.iter().any(|r| r.is_match(line)),
        }
    }
}

impl LabelFilter {
    pub fn matches(&self, labels: &Labels, r: &LogRecord) -> bool {
        match self {
            LabelFilter::And(a, b) => a.matches(labels, r) && b.matches(labels, r),
            LabelFilter::Or(a, b) => a.matches(labels, r) || b.matches(labels, r),
            LabelFilter::Cmp {
                name,
                op,
                value,
                regex,
            } => {
                let actual = labels
                    .get(name)
                    .map(String::as_str)
                    .or_else(|| record_label(r, name))
                    .unwrap_or("");
                match value {
                    FilterValue::Str(want) => match op {
                        CmpOp::Eq => actual == want,
                        CmpOp::Ne => actual != want,
                        CmpOp::Re => regex.as_ref().is_some_and(|re| re.is_match(actual)),
                        CmpOp::NotRe => !regex.as_ref().is_some_and(|re| re.is_match(actual)),
                        _ => false,
                    },
                    // A value that is not a number fails a numeric filter (Loki keeps such
                    // lines with an __error__ label instead).
                    FilterValue::Num(want) => {
                        let Some(n) = value_as_number(actual) else {
                            return false;
                        };
                        match op {
                            CmpOp::Eq => n == *want,
                            CmpOp::Ne => n != *want,
                            CmpOp::Gt => n > *want,
                            CmpOp::Ge => n >= *want,
                            CmpOp::Lt => n < *want,
                            CmpOp::Le => n <= *want,
                            CmpOp::Re | CmpOp::NotRe => false,
                        }
                    }
                }
            }
        }
    }
}

/// A label name LogQL accepts: other characters become `_`.
pub fn sanitize(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// An extracted label; one that clashes with a stream label gets `_extracted`, as in Loki.
fn insert_extracted(labels: &mut Labels, name: &str, value: String) {
    if name.is_empty() {
        return;
    }
    if STREAM_LABELS.contains(&name) && labels.contains_key(name) {
        labels.insert(format!("{name}_extracted"), value);
    } else {
        labels.insert(name.to_owned(), value);
    }
}

/// `| json`: every scalar of a JSON object line, nested keys joined with `_`; arrays skipped.
fn json_labels(line: &str, labels: &mut Labels) {
    match serde_json::from_str::<serde_json::Value>(line.trim()) {
        Ok(serde_json::Value::Object(obj)) => flatten("", &obj, labels),
        _ => {
            labels.insert("__error__".into(), "JSONParserErr".into());
        }
    }
}

fn flatten(prefix: &str, obj: &serde_json::Map<String, serde_json::Value>, labels: &mut Labels) {
    for (k, v) in obj {
        let name = if prefix.is_empty() {
            sanitize(k)
        } else {
            format!("{prefix}_{}", sanitize(k))
        };
        match v {
            serde_json::Value::Object(inner) => flatten(&name, inner, labels),
            serde_json::Value::Array(_) => {}
            serde_json::Value::String(s) => insert_extracted(labels, &name, s.clone()),
            serde_json::Value::Null => insert_extracted(labels, &name, String::new()),
            other => insert_extracted(labels, &name, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parser::parse_log;
    use super::*;

    fn rec(msg: &str) -> LogRecord {
        LogRecord {
            ts: 1,
            message: msg.into(),
            namespace: Some("shop".into()),
            pod: Some("web-1".into()),
            level: Some("info".into()),
            labels: [("tier".to_owned(), "front".to_owned())].into(),
            ..LogRecord::default()
        }
    }

    #[test]
    fn pipeline_stages() {
        let e = parse_log(
            r#"{namespace="shop", tier="front"} |= "GET" | json | status >= 500 and req_path=~"/api/.*" | line_format "{{.status}} {{.req_path}} {{.pod}}""#,
        )
        .unwrap();
        let r = rec(
            r#"{"method":"GET","status":503,"req":{"path":"/api/cart"},"tags":[1],"level":"error"}"#,
        );
        assert!(e.selector_matches(&r));
        let p = e.process(&r).unwrap();
        assert_eq!(p.line, "503 /api/cart web-1");
        assert_eq!(p.labels["level"], "info");
        assert_eq!(p.labels["level_extracted"], "error");
        assert!(!p.labels.contains_key("tags"));
        assert!(
            e.process(&rec(
                r#"{"method":"GET","status":200,"req":{"path":"/api/x"}}"#
            ))
            .is_none()
        );
        assert!(e.process(&rec("GET not json")).is_none());
        assert!(!e.selector_matches(&LogRecord {
            namespace: Some("other".into()),
            ..rec("")
        }));
    }

    #[test]
    fn drop_keep_and_label_format() {
        let line = "method=GET status=503 user=ann";
        let e = parse_log(r#"{pod="web-1"} | logfmt | drop user, method="POST""#).unwrap();
        let p = e.process(&rec(line)).unwrap();
        assert!(!p.labels.contains_key("user"));
        assert_eq!(p.labels["method"], "GET");
        let e = parse_log(r#"{pod="web-1"} | logfmt | keep pod, status=~"5..""#).unwrap();
        let p = e.process(&rec(line)).unwrap();
        assert_eq!(p.labels.keys().collect::<Vec<_>>(), vec!["pod", "status"]);
        let p = e.process(&rec("status=200")).unwrap();
        assert_eq!(p.labels.keys().collect::<Vec<_>>(), vec!["pod"]);
        let e = parse_log(
            r#"{pod="web-1"} | logfmt | label_format code=status, who="{{.user}}@{{.namespace}}", method=method | code >= 500"#,
        )
        .unwrap();
        let p = e.process(&rec(line)).unwrap();
        assert_eq!(p.labels["code"], "503");
        assert!(!p.labels.contains_key("status"));
        assert_eq!(p.labels["who"], "ann@shop");
        assert_eq!(p.labels["method"], "GET");
        assert!(e.process(&rec("status=200")).is_none());
        for bad in [
            r#"{pod="web-1"} | drop"#,
            r#"{pod="web-1"} | label_format a"#,
            r#"{pod="web-1"} | label_format a=1"#,
            r#"{pod="web-1"} | label_format a="{{ .b | upper }}""#,
        ] {
            assert!(parse_log(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logfmt_numbers_and_errors() {
        let e = parse_log(r#"{pod="web-1"} | logfmt | latency > 250ms, size <= 1KiB"#).unwrap();
        assert!(e.process(&rec("msg=done latency=300ms size=900")).is_some());
        assert!(e.process(&rec("msg=done latency=0.2s size=900")).is_none());
        assert!(e.process(&rec("msg=done latency=fast size=900")).is_none());
        let e = parse_log(r#"{pod="web-1"} | json | __error__ != """#).unwrap();
        let p = e.process(&rec("plain text")).unwrap();
        assert_eq!(p.labels["__error__"], "JSONParserErr");
        let e = parse_log(r#"{pod="web-1"} != "health" or "ready" !~ "^DEBUG""#).unwrap();
        assert!(e.process(&rec("GET /cart")).is_some());
        assert!(e.process(&rec("GET /ready")).is_none());
        assert!(e.process(&rec("DEBUG x")).is_none());
    }
}
