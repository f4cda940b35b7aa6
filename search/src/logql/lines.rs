//! Running a log pipeline over one line in memory: selector matching (for live tail and for
//! matchers the index cannot answer), line filters, `json`, `logfmt`, `regexp`, `pattern`,
//! label filters, `line_format`, `label_format`, `drop`/`keep`; and the values `unwrap` reads.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::ast::*;
use super::lexer::{parse_bytes, parse_duration, value_as_number};
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
                Stage::Json(paths) if paths.is_empty() => json_labels(&line, &mut labels),
                Stage::Json(paths) => json_paths(&line, paths, &mut labels),
                Stage::Logfmt(params) if params.is_empty() => {
                    for (k, v) in logfmt(&line) {
                        insert_extracted(&mut labels, &sanitize(&k), v);
                    }
                }
                Stage::Logfmt(params) => {
                    let pairs = logfmt(&line);
                    for (label, key) in params {
                        if let Some((_, v)) = pairs.iter().find(|(k, _)| k == key) {
                            insert_extracted(&mut labels, label, v.clone());
                        }
                    }
                }
                Stage::Regexp(re) => {
                    if let Some(caps) = re.captures(&line) {
                        for name in re.capture_names().flatten() {
                            if let Some(m) = caps.name(name) {
                                insert_extracted(&mut labels, name, m.as_str().to_owned());
                            }
                        }
                    }
                }
                Stage::Pattern(parts) => {
                    if let Some(captures) = match_pattern(parts, &line) {
                        for (name, value) in captures {
                            insert_extracted(&mut labels, name, value.to_owned());
                        }
                    }
                }
                // Taken out by the parser; a range aggregation reads the label afterwards.
                Stage::Unwrap(_) => {}
                Stage::Label(f) => {
                    if !f.matches(&labels, r) {
                        return None;
                    }
                }
                Stage::LineFormat(parts) => match render(parts, &line, &labels, r) {
                    Ok(formatted) => line = Cow::Owned(formatted),
                    // As Loki: the line stays as it was, marked.
                    Err(e) => template_error(&mut labels, e),
                },
                Stage::Decolorize => {
                    if line.contains('\x1b') {
                        line = Cow::Owned(decolorize(&line));
                    }
                }
                Stage::Unpack => {
                    if let Some(entry) = unpack(&line, &mut labels) {
                        line = Cow::Owned(entry);
                    }
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
                            LabelValue::Template(parts) => match render(parts, &line, &before, r) {
                                Ok(v) => {
                                    labels.insert(dst.clone(), v);
                                }
                                Err(e) => template_error(&mut labels, e),
                            },
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
fn render(
    parts: &[TemplatePart],
    line: &str,
    labels: &Labels,
    r: &LogRecord,
) -> Result<String, String> {
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
            TemplatePart::Go(t) => {
                // What `{{.name}}` reads: pod labels, then built-in ones, then the pipeline's.
                let built_in = LABEL_FIELDS.iter().filter_map(|n| Some((*n, r.label(n)?)));
                let all = (r.labels.iter())
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .chain(built_in)
                    .chain(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                out.push_str(&t.render(line, r.ts, all)?);
            }
        }
    }
    Ok(out)
}

fn template_error(labels: &mut Labels, details: String) {
    labels.insert("__error__".into(), "TemplateFormatErr".into());
    labels.insert("__error_details__".into(), details);
}

/// The line without ANSI escape sequences (colours, cursor moves).
fn decolorize(line: &str) -> String {
    static ANSI: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])").expect("a valid pattern")
    });
    ANSI.replace_all(line, "").into_owned()
}

/// `| unpack`: the string keys of a JSON object line become labels; `_entry`, if there, is
/// the line to continue with. Not an object: `__error__` as `| json` says it.
fn unpack(line: &str, labels: &mut Labels) -> Option<String> {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(line.trim()) else {
        labels.insert("__error__".into(), "JSONParserErr".into());
        return None;
    };
    let mut entry = None;
    for (k, v) in obj {
        match (k.as_str(), v) {
            ("_entry", serde_json::Value::String(s)) => entry = Some(s),
            (_, serde_json::Value::String(s)) => insert_extracted(labels, &sanitize(&k), s),
            _ => {}
        }
    }
    entry
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

/// The named captures of `parts` in `line`, when the whole pattern matches from the line's
/// start: a capture runs to the next occurrence of the literal after it (to the end of the line
/// when it is last); text after the last literal is ignored.
pub fn match_pattern<'a, 'l>(
    parts: &'a [PatternPart],
    line: &'l str,
) -> Option<Vec<(&'a str, &'l str)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    for (i, part) in parts.iter().enumerate() {
        match part {
            PatternPart::Literal(lit) => {
                if !line[pos..].starts_with(lit.as_str()) {
                    return None;
                }
                pos += lit.len();
            }
            PatternPart::Capture(name) => {
                let end = match parts.get(i + 1) {
                    Some(PatternPart::Literal(next)) => pos + line[pos..].find(next.as_str())?,
                    _ => line.len(),
                };
                if let Some(name) = name {
                    out.push((name.as_str(), &line[pos..end]));
                }
                pos = end;
            }
        }
    }
    Some(out)
}

/// The sample an unwrapped label gives, or `None` when it is not a number of that kind (Loki
/// marks such lines with `__error__`; here they give no sample).
pub fn unwrap_value(conversion: Conversion, value: &str) -> Option<f64> {
    let value = value.trim();
    match conversion {
        Conversion::Number => value.parse().ok(),
        Conversion::Duration => {
            let (sign, v) = match value.strip_prefix('-') {
                Some(v) => (-1.0, v),
                None => (1.0, value),
            };
            if v == "0" {
                return Some(0.0);
            }
            parse_duration(v).map(|ns| sign * ns as f64 / 1e9)
        }
        Conversion::Bytes => value.parse().ok().or_else(|| parse_bytes(value)),
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

/// `| json a="b.c"`: each parameter's path in a JSON object line; objects and arrays found
/// give their JSON text, a path that is not there gives no label.
fn json_paths(line: &str, paths: &[(String, Vec<JsonStep>)], labels: &mut Labels) {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
        labels.insert("__error__".into(), "JSONParserErr".into());
        return;
    };
    for (label, path) in paths {
        let found = path.iter().try_fold(&doc, |v, step| match step {
            JsonStep::Key(k) => v.get(k),
            JsonStep::Index(i) => v.get(i),
        });
        let value = match found {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) => String::new(),
            Some(other) => other.to_string(),
            None => continue,
        };
        insert_extracted(labels, label, value);
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
    fn pattern_and_regexp_extract_labels() {
        let line = r#"10.0.0.1 - - [26/Nov/2026] "GET /api/cart HTTP/1.1" 503 1234 extra"#;
        let e = parse_log(
            r#"{namespace="shop"} | pattern `<ip> - - [<_>] "<method> <uri> <_>" <status> <size> ` | status >= 500"#,
        )
        .unwrap();
        let p = e.process(&rec(line)).unwrap();
        assert_eq!(p.labels["ip"], "10.0.0.1");
        assert_eq!(p.labels["method"], "GET");
        assert_eq!(p.labels["uri"], "/api/cart");
        assert_eq!(p.labels["size"], "1234");
        assert!(!p.labels.contains_key("_"));
        // A line the pattern does not match keeps its labels; the filter then drops it.
        assert!(e.process(&rec("not an access log")).is_none());
        // A trailing capture takes the rest of the line; an extracted name that is a stream
        // label gets `_extracted`.
        let e = parse_log(r#"{namespace="shop"} | pattern "<sev>: <pod>""#).unwrap();
        let p = e.process(&rec("warn: disk at 91%: slow")).unwrap();
        assert_eq!(p.labels["sev"], "warn");
        assert_eq!(p.labels["pod_extracted"], "disk at 91%: slow");
        assert_eq!(p.labels["pod"], "web-1");

        let e =
            parse_log(r#"{namespace="shop"} | regexp `took (?P<took>\d+)ms user=(?P<user>\w+)`"#)
                .unwrap();
        let p = e.process(&rec("GET / took 42ms user=ann")).unwrap();
        assert_eq!(
            (p.labels["took"].as_str(), p.labels["user"].as_str()),
            ("42", "ann")
        );
        let p = e.process(&rec("nothing to see")).unwrap();
        assert!(!p.labels.contains_key("took"));
    }

    #[test]
    fn unwrapped_values_convert() {
        use Conversion::*;
        assert_eq!(unwrap_value(Number, " 2.5 "), Some(2.5));
        assert_eq!(unwrap_value(Number, "2s"), None);
        assert_eq!(unwrap_value(Duration, "1h2m3.5s"), Some(3723.5));
        assert_eq!(unwrap_value(Duration, "250ms"), Some(0.25));
        assert_eq!(unwrap_value(Duration, "-2s"), Some(-2.0));
        assert_eq!(unwrap_value(Duration, "0"), Some(0.0));
        assert_eq!(unwrap_value(Duration, "12"), None);
        assert_eq!(unwrap_value(Bytes, "512"), Some(512.0));
        assert_eq!(unwrap_value(Bytes, "1.5KB"), Some(1500.0));
        assert_eq!(unwrap_value(Bytes, "2MiB"), Some(2.0 * 1024.0 * 1024.0));
        assert_eq!(unwrap_value(Bytes, "lots"), None);
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
            r#"{pod="web-1"} | label_format a="{{ .b | nosuchfunction }}""#,
            r#"{pod="web-1"} | line_format "{{ if .b }}""#,
        ] {
            assert!(parse_log(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parser_parameters_pick_labels() {
        let e = parse_log(
            r#"{pod="web-1"} | json status, ua="request.headers[\"User-Agent\"]", first="servers[0]", req="request" | status >= 500"#,
        )
        .unwrap();
        let p = e
            .process(&rec(
                r#"{"status":503,"servers":["a","b"],"request":{"headers":{"User-Agent":"curl/8"}},"other":1}"#,
            ))
            .unwrap();
        assert_eq!(p.labels["status"], "503");
        assert_eq!(p.labels["ua"], "curl/8");
        assert_eq!(p.labels["first"], "a");
        assert_eq!(p.labels["req"], r#"{"headers":{"User-Agent":"curl/8"}}"#);
        assert!(!p.labels.contains_key("other"));
        let e = parse_log(r#"{pod="web-1"} | logfmt host, ip="client_ip""#).unwrap();
        let p = e
            .process(&rec("host=db client_ip=10.0.0.1 extra=x"))
            .unwrap();
        assert_eq!(
            (p.labels["host"].as_str(), p.labels["ip"].as_str()),
            ("db", "10.0.0.1")
        );
        assert!(!p.labels.contains_key("extra"));
        for bad in [
            r#"{pod="web-1"} | json a="b[""#,
            r#"{pod="web-1"} | json a="b[x]""#,
            r#"{pod="web-1"} | json a="""#,
            r#"{pod="web-1"} | logfmt --strict"#,
        ] {
            assert!(parse_log(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_templates_decolorize_and_unpack() {
        let e = parse_log(
            r#"{pod="web-1"} | logfmt | label_format who="{{ .user | upper }}" | line_format "{{ .who }} {{ .status | int | add 1 }} {{ __line__ | trunc 10 }} {{ .pod }}""#,
        )
        .unwrap();
        let p = e.process(&rec("method=GET status=503 user=ann")).unwrap();
        assert_eq!(p.line, "ANN 504 method=GET web-1");
        assert_eq!(p.labels["who"], "ANN");
        // A failing template leaves the line as it was and says why, as Loki does.
        let e = parse_log(r#"{pod="web-1"} | logfmt | line_format "{{ div .status 0 }}""#).unwrap();
        let p = e.process(&rec("status=5")).unwrap();
        assert_eq!(p.line, "status=5");
        assert_eq!(p.labels["__error__"], "TemplateFormatErr");
        let e = parse_log(r#"{pod="web-1"} | decolorize"#).unwrap();
        let p = e
            .process(&rec("\x1b[31mERROR\x1b[0m \x1b[1;33mdisk\x1b[0m full"))
            .unwrap();
        assert_eq!(p.line, "ERROR disk full");
        let e = parse_log(
            r#"{pod="web-1"} | unpack | line_format "{{.container_name}}: {{__line__}}""#,
        )
        .unwrap();
        let p = e
            .process(&rec(
                r#"{"container_name":"app","level":"warn","_entry":"disk full"}"#,
            ))
            .unwrap();
        assert_eq!(p.line, "app: disk full");
        assert_eq!(p.labels["level_extracted"], "warn");
        let p = e.process(&rec("not packed")).unwrap();
        assert_eq!(p.labels["__error__"], "JSONParserErr");
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
