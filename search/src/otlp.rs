//! OTLP logs over HTTP (`POST /v1/logs`) in both encodings: protobuf (`application/x-protobuf`,
//! the default of the OpenTelemetry Collector's `otlphttp` exporter and of the SDKs) and JSON
//! (`application/json`, `encoding: json` or `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`). Both decode
//! into the same [`Entry`] and then the same record. Resource attributes of the Kubernetes semantic conventions fill the built-in
//! labels (`k8s.namespace.name` → namespace, `k8s.pod.name` → pod, …, `service.name` → app), the
//! severity the level, and every other attribute, the trace id and the span id become labels, so
//! label filters and LogQL see them. 200 (an empty `ExportLogsServiceResponse` in the request's
//! encoding) once durable, 429 when the indexer is behind, 400 for a body that does not decode,
//! 415 for other content types.

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

/// One OTLP log record with its resource attributes, whichever the encoding.
#[derive(Default)]
struct Entry {
    ts: i64,
    body: Option<String>,
    attributes: Vec<(String, String)>,
    severity_text: Option<String>,
    severity_number: Option<u64>,
    trace_id: Option<String>,
    span_id: Option<String>,
}

impl Entry {
    fn into_record(self) -> LogRecord {
        let mut r = LogRecord {
            ts: if self.ts > 0 {
                self.ts
            } else {
                jiff::Timestamp::now().as_nanosecond() as i64
            },
            message: self.body.unwrap_or_default(),
            ..LogRecord::default()
        };
        for (k, v) in self.attributes {
            set(&mut r, &k, v);
        }
        if let Some(level) = self.severity_text.as_deref().and_then(normalize_level) {
            r.level = Some(level.to_owned());
        } else if let Some(n) = self.severity_number.filter(|n| *n > 0) {
            // OTLP severity numbers: 1–4 trace, 5–8 debug, 9–12 info, 13–16 warn,
            // 17–20 error, 21–24 fatal.
            let level = ["trace", "debug", "info", "warn", "error", "fatal"]
                [((n.clamp(1, 24) - 1) / 4) as usize];
            r.level = Some(level.to_owned());
        }
        for (name, id) in [("trace_id", self.trace_id), ("span_id", self.span_id)] {
            if let Some(id) = id.filter(|s| !s.is_empty()) {
                r.labels.insert(name.to_owned(), id);
            }
        }
        r
    }
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
                    .unwrap_or(0);
                let text = |k: &str| lr[k].as_str().map(str::to_owned);
                let entry = Entry {
                    ts,
                    body: any_value(&lr["body"]),
                    attributes: resource
                        .iter()
                        .cloned()
                        .chain(attributes(&lr["attributes"]))
                        .collect(),
                    severity_text: text("severityText"),
                    severity_number: lr["severityNumber"].as_u64(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                };
                out.push(entry.into_record());
            }
        }
    }
    Ok(out)
}

/// An OTLP protobuf `AnyValue` as text (arrays and maps as JSON).
fn proto_value(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<String> {
    Some(match proto_json(v)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

fn proto_json(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<Value> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    Some(match v.value.as_ref()? {
        V::StringValue(s) => Value::String(s.clone()),
        V::BoolValue(b) => Value::Bool(*b),
        V::IntValue(i) => Value::from(*i),
        V::DoubleValue(d) => Value::from(*d),
        V::BytesValue(b) => Value::String(hex(b)),
        V::ArrayValue(a) => Value::Array(a.values.iter().filter_map(proto_json).collect()),
        V::KvlistValue(l) => Value::Object(
            l.values
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), proto_json(kv.value.as_ref()?)?)))
                .collect(),
        ),
        V::StringValueStrindex(_) => return None,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn proto_attributes(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> Vec<(String, String)> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), proto_value(kv.value.as_ref()?)?)))
        .collect()
}

/// The records of an `ExportLogsServiceRequest` in protobuf.
pub fn decode_protobuf(body: &[u8]) -> Result<Vec<LogRecord>, String> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;
    let req = ExportLogsServiceRequest::decode(body)
        .map_err(|e| format!("protobuf ExportLogsServiceRequest: {e}"))?;
    let mut out = Vec::new();
    for rl in req.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| proto_attributes(&r.attributes))
            .unwrap_or_default();
        for sl in rl.scope_logs {
            for lr in sl.log_records {
                let ts = [lr.time_unix_nano, lr.observed_time_unix_nano]
                    .into_iter()
                    .find(|n| *n > 0)
                    .map_or(0, |n| n.min(i64::MAX as u64) as i64);
                let entry = Entry {
                    ts,
                    body: lr.body.as_ref().and_then(proto_value),
                    attributes: resource
                        .iter()
                        .cloned()
                        .chain(proto_attributes(&lr.attributes))
                        .collect(),
                    severity_text: Some(lr.severity_text).filter(|s| !s.is_empty()),
                    severity_number: u64::try_from(lr.severity_number).ok(),
                    trace_id: Some(hex(&lr.trace_id)),
                    span_id: Some(hex(&lr.span_id)),
                };
                out.push(entry.into_record());
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
    let protobuf = content_type.starts_with("application/x-protobuf");
    if !protobuf && !content_type.starts_with("application/json") {
        api.pipeline.metrics.reject("invalid");
        return Ok((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            axum::Json(serde_json::json!({
                "error": format!("Content-Type {content_type:?}: OTLP logs are application/x-protobuf or application/json")
            })),
        )
            .into_response());
    }
    let decoded = if protobuf {
        decode_protobuf(&body)
    } else {
        decode(&body)
    };
    let records = decoded.map_err(|e| {
        api.pipeline.metrics.reject("invalid");
        ApiError::bad_request(e)
    })?;
    crate::http::store(&api, records).await?;
    // An empty ExportLogsServiceResponse: zero bytes in protobuf, `{}` in JSON.
    Ok(if protobuf {
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::new(),
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
    })
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

    #[test]
    fn protobuf_values_become_text() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        use opentelemetry_proto::tonic::common::v1::{
            AnyValue, ArrayValue, KeyValue, KeyValueList,
        };
        let v = |value| AnyValue { value: Some(value) };
        assert_eq!(proto_value(&v(V::IntValue(503))).as_deref(), Some("503"));
        assert_eq!(
            proto_value(&v(V::BytesValue(vec![0xab, 0x01]))).as_deref(),
            Some("ab01")
        );
        let list = v(V::ArrayValue(ArrayValue {
            values: vec![v(V::StringValue("a".into())), v(V::BoolValue(true))],
        }));
        assert_eq!(proto_value(&list).as_deref(), Some(r#"["a",true]"#));
        let map = v(V::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(v(V::DoubleValue(1.5))),
                ..Default::default()
            }],
        }));
        assert_eq!(proto_value(&map).as_deref(), Some(r#"{"k":1.5}"#));
        assert!(decode_protobuf(&[0xff, 0xff]).is_err());
    }
}
