//! Where batches go. One record format inside (`skiff-search`'s NDJSON record, as JSON values);
//! each sink encodes it for its server:
//!
//! - `search`: skiff-search's `POST /api/v1/ingest`, NDJSON records with their idempotency key.
//! - `loki`: Loki's `POST /loki/api/v1/push` in JSON, one stream per label set (namespace, pod,
//!   container, node, stream, app), as promtail and Alloy send it.
//! - `elasticsearch`: `POST /_bulk` creating documents in `logstash-YYYY.MM.DD` (the classic EFK
//!   layout, fluentd's `logstash_format`), `log` plus `kubernetes.*` fields, with the
//!   idempotency key as `_id` so a re-sent line is a 409 conflict, not a second copy.
//!
//! Retries are the caller's.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{Value, json};

/// One line as skiff-search takes it (the one record format; the other sinks re-shape it).
#[derive(Debug, Default, Serialize)]
pub struct Record<'a> {
    pub ts: i64,
    pub message: &'a str,
    pub stream: &'a str,
    pub node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_name: Option<&'a str>,
    /// The idempotency key: the file's identity and the line's end offset.
    pub source: &'a str,
    pub offset: u64,
}

/// Which server speaks at the sink URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Search,
    Loki,
    Elasticsearch,
}

impl std::str::FromStr for SinkKind {
    type Err = String;

    fn from_str(s: &str) -> Result<SinkKind, String> {
        match s {
            "search" | "skiff-search" => Ok(SinkKind::Search),
            "loki" => Ok(SinkKind::Loki),
            "elasticsearch" | "es" => Ok(SinkKind::Elasticsearch),
            other => Err(format!(
                "sink {other:?}: one of search, loki, elasticsearch"
            )),
        }
    }
}

impl SinkKind {
    fn path(self) -> &'static str {
        match self {
            SinkKind::Search => "/api/v1/ingest",
            SinkKind::Loki => "/loki/api/v1/push",
            SinkKind::Elasticsearch => "/_bulk",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            SinkKind::Search | SinkKind::Elasticsearch => "application/x-ndjson",
            SinkKind::Loki => "application/json",
        }
    }

    /// The request body for `records`.
    pub fn encode(self, records: &[Record<'_>]) -> Bytes {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.message.len() + 256).sum());
        match self {
            SinkKind::Search => {
                for r in records {
                    serde_json::to_writer(&mut body, r).expect("a record serializes");
                    body.push(b'\n');
                }
            }
            SinkKind::Loki => {
                let mut streams: BTreeMap<BTreeMap<&str, &str>, Vec<(String, &str)>> =
                    BTreeMap::new();
                for r in records {
                    let mut labels = BTreeMap::new();
                    for (name, value) in [
                        ("namespace", r.namespace),
                        ("pod", r.pod),
                        ("container", r.container),
                        ("component", r.component),
                        ("node", Some(r.node)),
                        ("stream", Some(r.stream)),
                        (
                            "app",
                            r.labels.and_then(|l| l.get("app")).map(String::as_str),
                        ),
                    ] {
                        if let Some(v) = value {
                            labels.insert(name, v);
                        }
                    }
                    streams
                        .entry(labels)
                        .or_default()
                        .push((r.ts.to_string(), r.message));
                }
                let streams: Vec<Value> = streams
                    .into_iter()
                    .map(|(stream, values)| json!({"stream": stream, "values": values}))
                    .collect();
                serde_json::to_writer(&mut body, &json!({ "streams": streams }))
                    .expect("a JSON value serializes");
            }
            SinkKind::Elasticsearch => {
                for r in records {
                    let time = jiff::Timestamp::from_nanosecond(i128::from(r.ts))
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                    let index = format!("logstash-{}", time.strftime("%Y.%m.%d"));
                    let action = json!({"create": {
                        "_index": index,
                        "_id": format!("{}:{}", r.source, r.offset),
                    }});
                    let mut kubernetes = json!({
                        "namespace_name": r.namespace,
                        "pod_name": r.pod,
                        "container_name": r.container,
                        "host": r.node,
                        "pod_id": r.pod_uid,
                    });
                    if let Some(labels) = r.labels {
                        kubernetes["labels"] = json!(labels);
                    }
                    if let (Some(kind), Some(name)) = (r.owner_kind, r.owner_name) {
                        kubernetes["owner"] = json!({"kind": kind, "name": name});
                    }
                    let mut doc = json!({
                        "@timestamp": time.to_string(),
                        "log": r.message,
                        "stream": r.stream,
                        "kubernetes": kubernetes,
                    });
                    if let Some(c) = r.component {
                        doc["component"] = json!(c);
                    }
                    serde_json::to_writer(&mut body, &action).expect("a JSON value serializes");
                    body.push(b'\n');
                    serde_json::to_writer(&mut body, &doc).expect("a JSON value serializes");
                    body.push(b'\n');
                }
            }
        }
        Bytes::from(body)
    }
}

/// How a send ended.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: the server is down, busy (429) or failing (5xx).
    #[error("{0}")]
    Retry(String),
    /// The server refused the batch itself (4xx): retrying would block the node's logs forever.
    #[error("{0}")]
    Refused(String),
}

pub struct Sink {
    kind: SinkKind,
    url: String,
    /// Sent as `Authorization: Bearer …` (a search service beyond loopback wants one).
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Sink {
    pub fn new(kind: SinkKind, url: &str, token: Option<String>) -> Sink {
        Sink {
            kind,
            url: url.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Send one encoded batch. `Ok(n)`: stored, except `n` lines the server refused one by
    /// one (an Elasticsearch `_bulk` answer can refuse some items and keep the rest).
    #[tracing::instrument(
        name = "log.ship",
        level = "info",
        skip_all,
        fields(otel.kind = "client", sink = ?self.kind, bytes = body.len())
    )]
    pub async fn send(&self, body: Bytes) -> Result<usize, SendError> {
        let mut req = http::Request::post(format!("{}{}", self.url, self.kind.path()))
            .header(http::header::CONTENT_TYPE, self.kind.content_type());
        if let Some(headers) = req.headers_mut() {
            skiff_telemetry::trace::inject_current(headers);
        }
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| SendError::Refused(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| SendError::Retry("no answer within 30s".into()))?
            .map_err(|e| SendError::Retry(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| SendError::Retry(format!("{status}: reading the answer: {e}")))?;
        if status.is_success() {
            return match self.kind {
                SinkKind::Elasticsearch => bulk_outcome(&body),
                _ => Ok(0),
            };
        }
        let msg = format!("{status}: {}", String::from_utf8_lossy(&body).trim());
        if status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(SendError::Retry(msg))
        } else {
            Err(SendError::Refused(msg))
        }
    }
}

/// Read a `_bulk` answer: retry when any item was rejected for load (429) or a server fault;
/// a 409 conflict is a line stored by an earlier try; other item errors are refused lines.
fn bulk_outcome(body: &[u8]) -> Result<usize, SendError> {
    let answer: Value = serde_json::from_slice(body)
        .map_err(|e| SendError::Retry(format!("_bulk answer is not JSON: {e}")))?;
    if answer["errors"] != Value::Bool(true) {
        return Ok(0);
    }
    let mut refused = 0;
    let mut first_error = None;
    for item in answer["items"].as_array().into_iter().flatten() {
        let Some(result) = item.as_object().and_then(|o| o.values().next()) else {
            continue;
        };
        let status = result["status"].as_u64().unwrap_or(0);
        match status {
            200..=299 | 409 => {}
            429 | 500..=599 => {
                return Err(SendError::Retry(format!(
                    "_bulk item answered {status}: {}",
                    result["error"]
                )));
            }
            _ => {
                refused += 1;
                first_error.get_or_insert_with(|| result["error"].to_string());
            }
        }
    }
    if let Some(e) = first_error {
        tracing::error!(refused, error = %e, "Elasticsearch refused some lines");
    }
    Ok(refused)
}
