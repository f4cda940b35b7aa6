//! The log record every ingest path produces and the index stores, and the enrichment applied on
//! the way in: level detection and parsed fields of JSON and logfmt lines.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// One log line with its metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct LogRecord {
    /// Unix nanoseconds. Accepted as an integer, a string of digits, or RFC 3339 text.
    #[serde(deserialize_with = "timestamp")]
    pub ts: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// A Skiff component's own log (apiserver, scheduler, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Pod labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Fields parsed from a structured line (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Value>,
    /// Idempotency key: the sender's stream (a file identity) and the line's offset in it.
    /// A line at or below the highest offset already stored for its source is a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Longest label value accepted; label values are metadata, never content.
pub const MAX_LABEL_BYTES: usize = 4096;

/// Why a record is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("label {0} is longer than {MAX_LABEL_BYTES} bytes")]
    LabelTooLong(String),
    #[error("label {0} is empty")]
    EmptyLabel(String),
}

impl LogRecord {
    /// The value of one of the schema's label fields.
    pub fn label(&self, name: &str) -> Option<&str> {
        match name {
            "stream" => self.stream.as_deref(),
            "namespace" => self.namespace.as_deref(),
            "pod" => self.pod.as_deref(),
            "container" => self.container.as_deref(),
            "node" => self.node.as_deref(),
            "app" => self.app.as_deref(),
            "level" => self.level.as_deref(),
            "component" => self.component.as_deref(),
            "owner_kind" => self.owner_kind.as_deref(),
            "owner_name" => self.owner_name.as_deref(),
            "pod_uid" => self.pod_uid.as_deref(),
            _ => self.labels.get(name).map(String::as_str),
        }
    }

    /// Set one of the schema's label fields (others go to `labels`).
    pub fn set_label(&mut self, name: &str, value: String) {
        let slot = match name {
            "stream" => &mut self.stream,
            "namespace" => &mut self.namespace,
            "pod" => &mut self.pod,
            "container" => &mut self.container,
            "node" => &mut self.node,
            "app" => &mut self.app,
            "level" => &mut self.level,
            "component" => &mut self.component,
            "owner_kind" => &mut self.owner_kind,
            "owner_name" => &mut self.owner_name,
            "pod_uid" => &mut self.pod_uid,
            _ => {
                self.labels.insert(name.to_owned(), value);
                return;
            }
        };
        *slot = Some(value);
    }

    /// Check metadata, cut an over-long message to `max_line_bytes` (returns whether it was),
    /// and fill in what the line itself says: parsed fields, level, app.
    pub fn prepare(&mut self, max_line_bytes: usize) -> Result<bool, RecordError> {
        for name in crate::schema::LABEL_FIELDS {
            if self.label(name).is_some_and(|v| v.len() > MAX_LABEL_BYTES) {
                return Err(RecordError::LabelTooLong(name.to_owned()));
            }
        }
        for (k, v) in &self.labels {
            if k.is_empty() {
                return Err(RecordError::EmptyLabel("(name)".into()));
            }
            if k.len() + v.len() > MAX_LABEL_BYTES {
                return Err(RecordError::LabelTooLong(k.clone()));
            }
        }
        let truncated = self.message.len() > max_line_bytes;
        if truncated {
            let mut end = max_line_bytes;
            while !self.message.is_char_boundary(end) {
                end -= 1;
            }
            self.message.truncate(end);
        }
        let trimmed = self.message.trim_end_matches(['\n', '\r']).len();
        self.message.truncate(trimmed);
        if self.fields.is_none() {
            self.fields = parse_fields(&self.message);
        }
        if self.level.is_none() {
            self.level = self
                .fields
                .as_ref()
                .and_then(level_of_fields)
                .or_else(|| level_of_text(&self.message))
                .map(str::to_owned);
        }
        if self.app.is_none() {
            self.app = self
                .labels
                .get("app")
                .or_else(|| self.labels.get("app.kubernetes.io/name"))
                .or_else(|| self.labels.get("k8s-app"))
                .cloned();
        }
        Ok(truncated)
    }
}

fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ts {
        Int(i64),
        Float(f64),
        Text(String),
    }
    match Ts::deserialize(d)? {
        Ts::Int(n) => Ok(n),
        Ts::Float(f) => Ok((f * 1e9) as i64),
        Ts::Text(s) => parse_timestamp(&s).map_err(serde::de::Error::custom),
    }
}

/// Unix nanoseconds from digits (nanoseconds) or RFC 3339 text.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("timestamp {s:?} is out of range"));
    }
    let ts: jiff::Timestamp = s
        .parse()
        .map_err(|e| format!("timestamp {s:?} is neither nanoseconds nor RFC 3339: {e}"))?;
    i64::try_from(ts.as_nanosecond()).map_err(|_| format!("timestamp {s:?} is out of range"))
}

/// Fields of a structured line: a JSON object, or logfmt with at least two `key=value` pairs.
pub fn parse_fields(line: &str) -> Option<serde_json::Value> {
    let t = line.trim();
    if t.starts_with('{') {
        return serde_json::from_str::<serde_json::Value>(t)
            .ok()
            .filter(|v| v.is_object());
    }
    let pairs = logfmt(t);
    (pairs.len() >= 2).then(|| {
        serde_json::Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
        )
    })
}

/// `key=value key="quoted value"` pairs; an empty result when the line is not logfmt.
pub fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            return Vec::new();
        };
        let key = &rest[..eq];
        if key.is_empty() || key.contains(char::is_whitespace) || key.contains('"') {
            return Vec::new();
        }
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let Some(end) = end else {
                return Vec::new();
            };
            value = quoted[..end].replace("\\\"", "\"");
            rest = &quoted[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = rest[..end].to_owned();
            rest = &rest[end..];
        }
        out.push((key.to_owned(), value));
        rest = rest.trim_start();
    }
    out
}

/// The level a structured line states.
fn level_of_fields(fields: &serde_json::Value) -> Option<&'static str> {
    let obj = fields.as_object()?;
    [
        "level",
        "lvl",
        "severity",
        "log.level",
        "loglevel",
        "levelname",
    ]
    .iter()
    .find_map(|k| obj.get(*k))
    .and_then(|v| match v {
        serde_json::Value::String(s) => normalize_level(s),
        // Bunyan/pino numeric levels.
        serde_json::Value::Number(n) => match n.as_u64()? {
            0..=10 => Some("trace"),
            11..=20 => Some("debug"),
            21..=30 => Some("info"),
            31..=40 => Some("warn"),
            41..=50 => Some("error"),
            _ => Some("fatal"),
        },
        _ => None,
    })
}

/// The canonical level a word names.
pub fn normalize_level(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "trace" | "trc" => "trace",
        "debug" | "dbg" | "d" => "debug",
        "info" | "inf" | "information" | "notice" | "i" => "info",
        "warn" | "warning" | "wrn" | "w" => "warn",
        "error" | "err" | "e" => "error",
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" | "f" => "fatal",
        _ => return None,
    })
}

/// A level word near the start of an unstructured line (`ERROR ...`, `[warn] ...`,
/// `2026-... INFO ...`), or a glog-style prefix (`E1126 12:00:00.000 ...`).
fn level_of_text(line: &str) -> Option<&'static str> {
    let bytes = line.as_bytes();
    if bytes.len() > 5
        && matches!(bytes[0], b'I' | b'W' | b'E' | b'F')
        && bytes[1..5].iter().all(u8::is_ascii_digit)
    {
        return normalize_level(&line[..1]);
    }
    line.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() >= 3)
        .take(6)
        .find_map(|w| {
            // Only shouting or bracketed words count: "error" inside prose is not a level.
            (w.chars().all(|c| c.is_ascii_uppercase()) || line.contains(&format!("[{w}]")))
                .then(|| normalize_level(w))
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(message: &str) -> LogRecord {
        let mut r = LogRecord {
            ts: 1,
            message: message.into(),
            ..LogRecord::default()
        };
        r.prepare(1 << 20).unwrap();
        r
    }

    #[test]
    fn levels_come_from_structure_or_the_first_words() {
        assert_eq!(
            prepared(r#"{"level":"WARNING","msg":"x"}"#)
                .level
                .as_deref(),
            Some("warn")
        );
        assert_eq!(
            prepared(r#"{"level":50,"msg":"x"}"#).level.as_deref(),
            Some("error")
        );
        assert_eq!(
            prepared("level=error msg=\"boom now\"").level.as_deref(),
            Some("error")
        );
        assert_eq!(
            prepared("2026-11-26 12:00:00 ERROR db down")
                .level
                .as_deref(),
            Some("error")
        );
        assert_eq!(prepared("[info] started").level.as_deref(), Some("info"));
        assert_eq!(
            prepared("E1126 12:00:00.1 1 x.go:1] failed")
                .level
                .as_deref(),
            Some("error")
        );
        assert_eq!(prepared("an error happened in prose").level, None);
        assert_eq!(prepared("GET /index.html 200").level, None);
    }

    #[test]
    fn structured_lines_are_parsed() {
        let r = prepared(r#"{"msg":"hi","user":{"id":7}}"#);
        assert_eq!(r.fields.unwrap()["user"]["id"], 7);
        let r = prepared(r#"ts=1 msg="a \"quoted\" word" status=500"#);
        let f = r.fields.unwrap();
        assert_eq!(f["msg"], "a \"quoted\" word");
        assert_eq!(f["status"], "500");
        assert_eq!(prepared("just words here").fields, None);
        assert_eq!(prepared("only=one").fields, None);
        assert_eq!(prepared("{not json").fields, None);
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let mut r = LogRecord {
            ts: 1,
            message: "é".repeat(10),
            ..LogRecord::default()
        };
        assert!(r.prepare(5).unwrap());
        assert_eq!(r.message, "éé");
    }

    #[test]
    fn metadata_is_checked() {
        let mut r = LogRecord {
            ts: 1,
            pod: Some("x".repeat(MAX_LABEL_BYTES + 1)),
            ..LogRecord::default()
        };
        assert_eq!(r.prepare(100), Err(RecordError::LabelTooLong("pod".into())));
    }

    #[test]
    fn timestamps_parse_in_every_accepted_form() {
        let r: LogRecord =
            serde_json::from_str(r#"{"ts":"2026-11-26T00:00:00.5Z","message":""}"#).unwrap();
        assert_eq!(r.ts, 1_795_651_200_500_000_000);
        let r: LogRecord =
            serde_json::from_str(r#"{"ts":"1795651200500000000","message":""}"#).unwrap();
        assert_eq!(r.ts, 1_795_651_200_500_000_000);
        let r: LogRecord =
            serde_json::from_str(r#"{"ts":1795651200500000000,"message":""}"#).unwrap();
        assert_eq!(r.ts, 1_795_651_200_500_000_000);
        assert!(serde_json::from_str::<LogRecord>(r#"{"ts":"yesterday","message":""}"#).is_err());
    }
}
