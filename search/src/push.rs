//! Loki's push API, `POST /loki/api/v1/push`, so promtail, Grafana Alloy, Vector and Fluent Bit
//! can ship to skiff-search unchanged: snappy-compressed protobuf (the default) or JSON
//! (optionally gzip-compressed). Stream labels become the record's built-in labels where the
//! names match (`namespace`, `pod`, `container`, …) and pod labels otherwise; structured
//! metadata joins the pod labels, so label filters see it. 204 once durable, 429 when the
//! indexer is behind (clients retry), 400 naming what is wrong.

use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use crate::http::{Api, ApiError, MAX_BODY_BYTES};
use crate::record::LogRecord;

pub fn router() -> Router<Arc<Api>> {
    Router::new().route("/loki/api/v1/push", post(push))
}

/// Loki's `push.proto`, by hand: four small messages.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

pub use proto::{Entry as ProtoEntry, LabelPair, PushRequest, Stream as ProtoStream, Timestamp};

#[derive(Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: std::collections::BTreeMap<String, String>,
    values: Vec<JsonEntry>,
}

/// `["<ns>", "line"]` or `["<ns>", "line", {"trace_id": "…"}]`.
#[derive(Deserialize)]
struct JsonEntry(
    String,
    String,
    #[serde(default)] std::collections::BTreeMap<String, String>,
);

/// Label names Loki shippers commonly use for what Skiff calls by another name.
fn builtin_name(name: &str) -> &str {
    match name {
        "namespace_name" | "k8s_namespace_name" => "namespace",
        "pod_name" | "k8s_pod_name" => "pod",
        "container_name" | "k8s_container_name" => "container",
        "node_name" | "k8s_node_name" | "host" | "hostname" => "node",
        "detected_level" | "severity" => "level",
        other => other,
    }
}

fn record(
    labels: &[(String, String)],
    ts: i64,
    line: String,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> LogRecord {
    let mut r = LogRecord {
        ts,
        message: line,
        ..LogRecord::default()
    };
    for (k, v) in labels {
        if !v.is_empty() {
            r.set_label(builtin_name(k), v.clone());
        }
    }
    for (k, v) in metadata {
        r.labels.insert(k, v);
    }
    r
}

/// The pairs of a `{a="b", c="d"}` label set.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let expr = crate::logql::parse_log(text)
        .or_else(|_| {
            // A label set need not select anything: parse it with a placeholder matcher.
            let inner = text
                .trim()
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim();
            let padded = if inner.is_empty() {
                "{__skiff__=\"x\"}".to_owned()
            } else {
                format!("{{__skiff__=\"x\", {inner}}}")
            };
            crate::logql::parse_log(&padded)
        })
        .map_err(|e| format!("labels {text:?}: {e}"))?;
    let mut out = Vec::new();
    for m in expr.matchers {
        if m.name == "__skiff__" {
            continue;
        }
        if m.op != crate::logql::ast::MatchOp::Eq {
            return Err(format!("labels {text:?}: only name=\"value\" pairs"));
        }
        out.push((m.name, m.value));
    }
    Ok(out)
}

/// Records from a push body, as its content type and encoding say.
pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<LogRecord>, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf")
        .to_ascii_lowercase();
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body: std::borrow::Cow<[u8]> = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .take(MAX_BODY_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip body: {e}"))?;
        if out.len() > MAX_BODY_BYTES {
            return Err(format!("body is over {MAX_BODY_BYTES} bytes uncompressed"));
        }
        out.into()
    } else {
        body.into()
    };
    if content_type.starts_with("application/json") {
        let push: JsonPush =
            serde_json::from_slice(&body).map_err(|e| format!("JSON body: {e}"))?;
        let mut out = Vec::new();
        for s in push.streams {
            let labels: Vec<(String, String)> = s.stream.into_iter().collect();
            for (i, e) in s.values.into_iter().enumerate() {
                let ts =
                    e.0.parse::<i64>()
                        .map_err(|_| format!("entry {i}: timestamp {:?} is not Unix ns", e.0))?;
                out.push(record(&labels, ts, e.1, e.2));
            }
        }
        return Ok(out);
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .map_err(|e| format!("snappy body: {e} (send snappy-compressed protobuf, or JSON with Content-Type: application/json)"))?;
    if raw.len() > MAX_BODY_BYTES {
        return Err(format!("body is over {MAX_BODY_BYTES} bytes uncompressed"));
    }
    let push = <PushRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| format!("protobuf body: {e}"))?;
    let mut out = Vec::new();
    for s in push.streams {
        let labels = parse_labels(&s.labels)?;
        for e in s.entries {
            let ts = e
                .timestamp
                .map(|t| t.seconds.saturating_mul(1_000_000_000) + i64::from(t.nanos))
                .unwrap_or(0);
            out.push(record(
                &labels,
                ts,
                e.line,
                e.structured_metadata.into_iter().map(|p| (p.name, p.value)),
            ));
        }
    }
    Ok(out)
}

async fn push(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let records = decode(&headers, &body).map_err(|e| {
        api.pipeline.metrics.reject("invalid");
        ApiError::bad_request(e)
    })?;
    crate::http::store(&api, records).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
