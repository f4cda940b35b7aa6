//! OTLP logs over HTTP with JSON encoding (`POST /v1/logs`, the OpenTelemetry Collector's
//! `otlphttp` exporter with `encoding: json`, or an SDK with `OTEL_EXPORTER_OTLP_PROTOCOL=
//! http/json`). Resource attributes of the Kubernetes semantic conventions fill the built-in
//! labels (`k8s.namespace.name` → namespace, `k8s.pod.name` → pod, …, `service.name` → app), the
//! severity the level, and every other attribute, the trace id and the span id become labels, so
//! label filters and LogQL see them. 200 with `{}` once durable, 429 when the indexer is behind;
//! the protobuf encoding is answered 415 saying to use JSON.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use crate::http::{Api, ApiError};
use crate::record::{LogRecord, normalize_level};

pub fn router() -> Router<Arc<Api>> {
    Router::new().route("/v1/logs", post(logs))
}

/// An OTLP `AnyValue` as text.
fn any_value(v: &Value) -> Option<String> {
    let (kind, inner) = v.as_object()?.iter().next()?;
    Some(match kind.as_str() {
        "stringValue" => inner.as_str()?.to_owned(),
        "intValue" => inner
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| inner.to_string()),
        "boolValue" | "doubleValue" => inner.to_string(),
        // Arrays, maps and bytes keep their JSON form.
        _ => inner.to_string(),
    })
}

fn attributes(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["key"].as_str()?.to_owned(), any_value(&a["value"])?)))
        .collect()
}

/// Put an attribute where Skiff keeps it.
fn set(r: &mut LogRecord, key: &str, value: String) {
    let builtin = match key {
        "k8s.namespace.name" => "namespace",
        "k8s.pod.name" => "pod",
        "k8s.container.name" => "container",
        "k8s.node.name" => "node",
        "k8s.pod.uid" => "pod_uid",
        "service.name" => "app",
        _ => {
            r.labels.insert(key.to_owned(), value);
            return;
        }
    };
    r.set_label(builtin, value);
}

/// The records of an `ExportLogsServiceRequest` in JSON.
pub fn decode(body: &[u8]) -> Result<Vec<LogRecord>, String> {
    let req: Value = serde_json::from_slice(body).map_err(|e| format!("JSON body: {e}"))?;
    let resource_logs = req["resourceLogs"]
        .as_array()
        .ok_or("resourceLogs (an array) is required")?;
    let mut out = Vec::new();
    for rl in resource_logs {
        let resource = attributes(&rl["resource"]["attributes"]);
        for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
            for lr in sl["logRecords"].as_array().into_iter().flatten() {
                let ts = ["timeUnixNano", "observedTimeUnixNano"]
                    .iter()
                    .filter_map(|k| {
                        let v = &lr[*k];
                        v.as_str()
                            .and_then(|s| s.parse::<i64>().ok())
                            .or_else(|| v.as_i64())
                    })
                    .find(|n| *n > 0)
                    .unwrap_or_else(|| jiff::Timestamp::now().as_nanosecond() as i64);
                let mut r = LogRecord {
                    ts,
                    message: any_value(&lr["body"]).unwrap_or_default(),
                    ..LogRecord::default()
                };
                for (k, v) in resource
                    .iter()
                    .cloned()
                    .chain(attributes(&lr["attributes"]))
                {
                    set(&mut r, &k, v);
                }
                if let Some(level) = lr["severityText"].as_str().and_then(normalize_level) {
                    r.level = Some(level.to_owned());
                } else if let Some(n) = lr["severityNumber"].as_u64() {
                    // OTLP severity numbers: 1–4 trace, 5–8 debug, 9–12 info, 13–16 warn,
                    // 17–20 error, 21–24 fatal.
                    let level = ["trace", "debug", "info", "warn", "error", "fatal"]
                        [((n.clamp(1, 24) - 1) / 4) as usize];
                    r.level = Some(level.to_owned());
                }
                for (k, name) in [("traceId", "trace_id"), ("spanId", "span_id")] {
                    if let Some(id) = lr[k].as_str().filter(|s| !s.is_empty()) {
                        r.labels.insert(name.to_owned(), id.to_owned());
                    }
                }
                out.push(r);
            }
        }
    }
    Ok(out)
}

async fn logs(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        api.pipeline.metrics.reject("invalid");
        return Ok((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            axum::Json(serde_json::json!({
                "error": format!("Content-Type {content_type:?}: only OTLP's JSON encoding is taken (http/json)")
            })),
        )
            .into_response());
    }
    let records = decode(&body).map_err(|e| {
        api.pipeline.metrics.reject("invalid");
        ApiError::bad_request(e)
    })?;
    crate::http::store(&api, records).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], "{}").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_attributes_become_labels() {
        let body = serde_json::json!({"resourceLogs": [{
            "resource": {"attributes": [
                {"key": "k8s.namespace.name", "value": {"stringValue": "shop"}},
                {"key": "k8s.pod.name", "value": {"stringValue": "web-1"}},
                {"key": "service.name", "value": {"stringValue": "web"}},
            ]},
            "scopeLogs": [{"logRecords": [
                {"timeUnixNano": "1795651200000000001", "severityText": "WARN",
                 "body": {"stringValue": "slow"}, "traceId": "abc",
                 "attributes": [{"key": "http.status", "value": {"intValue": "503"}}]},
                {"observedTimeUnixNano": "1795651200000000002", "severityNumber": 17,
                 "body": {"stringValue": "failed"}},
            ]}],
        }]});
        let records = decode(body.to_string().as_bytes()).unwrap();
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!(r.ts, 1_795_651_200_000_000_001);
        assert_eq!(r.message, "slow");
        assert_eq!(r.namespace.as_deref(), Some("shop"));
        assert_eq!(r.pod.as_deref(), Some("web-1"));
        assert_eq!(r.app.as_deref(), Some("web"));
        assert_eq!(r.level.as_deref(), Some("warn"));
        assert_eq!(r.labels["trace_id"], "abc");
        assert_eq!(r.labels["http.status"], "503");
        assert_eq!(records[1].level.as_deref(), Some("error"));
        assert_eq!(records[1].ts, 1_795_651_200_000_000_002);
        assert!(decode(b"{}").is_err());
        assert!(decode(b"not json").is_err());
    }
}
