//! OpenTelemetry traces end to end: `skiffd up` with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a
//! small OTLP/HTTP receiver in this test. A `kubectl apply` of a Deployment must produce one
//! connected trace from the API server's request span down to the store write, and the
//! Deployment controller's reconcile must carry its trace into the API server (client span →
//! `traceparent` → server span → store). JSON component log lines carry the trace ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use skiff_e2e::{Cluster, bin_dir, wait_for};

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: traced}
spec:
  replicas: 1
  selector: {matchLabels: {app: traced}}
  template:
    metadata: {labels: {app: traced}}
    spec:
      containers:
      - name: app
        image: skiff-testapp:e2e
        args: [serve, --port, "0"]
"#;

/// One received span, flattened.
#[derive(Clone, Debug)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
    service: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value_text(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP trace receiver (protobuf, the exporter's default) on a free loopback port.
fn start_receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let sink = spans.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let sink = sink.clone();
                    async move {
                        let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                            return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                        };
                        let mut out = sink.lock().unwrap();
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| kv.value.as_ref())
                                .map(value_text)
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    out.push(Span {
                                        trace_id: hex(&s.trace_id),
                                        span_id: hex(&s.span_id),
                                        parent: hex(&s.parent_span_id),
                                        name: s.name,
                                        kind: s.kind,
                                        attributes: s
                                            .attributes
                                            .iter()
                                            .map(|kv| {
                                                (
                                                    kv.key.clone(),
                                                    kv.value
                                                        .as_ref()
                                                        .map(value_text)
                                                        .unwrap_or_default(),
                                                )
                                            })
                                            .collect(),
                                        service: service.clone(),
                                    });
                                }
                            }
                        }
                        // An empty ExportTraceServiceResponse.
                        (axum::http::StatusCode::OK, Vec::new())
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{addr}"), spans)
}

/// Whether `span` descends from the span `ancestor` (same trace, through parent links).
fn descends(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut cur = span;
    for _ in 0..32 {
        if cur.parent == ancestor.span_id && cur.trace_id == ancestor.trace_id {
            return true;
        }
        match by_id.get(cur.parent.as_str()) {
            Some(p) => cur = p,
            None => return false,
        }
    }
    false
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[test]
fn kubectl_apply_produces_a_connected_trace() {
    let (endpoint, spans) = start_receiver();
    let cluster = Cluster::start_with_env(
        &[
            "--image-alias",
            &format!(
                "skiff-testapp={}",
                bin_dir().join("skiff-testapp").display()
            ),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "skiff-e2e"),
            // Export every half second rather than every five.
            ("OTEL_BSP_SCHEDULE_DELAY", "500"),
        ],
    )
    .expect("skiffd starts");
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(WEB))
        .expect_ok("deployment.apps/traced created");

    // The apply's create: a server span whose trace reaches the store write.
    let (request, store) = wait_for(Duration::from_secs(30), "the apply's trace", || {
        let spans = spans.lock().unwrap().clone();
        let request = spans.iter().find(|s| {
            s.kind == SERVER
                && s.name == "POST /apis/apps/v1/namespaces/{namespace}/deployments"
                && s.attributes
                    .get("http.response.status_code")
                    .map(String::as_str)
                    == Some("201")
        })?;
        let store = spans.iter().find(|s| {
            s.name == "store.create"
                && s.attributes
                    .get("key")
                    .is_some_and(|k| k.contains("deployments") && k.ends_with("/traced"))
                && descends(&spans, s, request)
        })?;
        Some((request.clone(), store.clone()))
    })
    .unwrap_or_else(|e| {
        let spans = spans.lock().unwrap();
        let names: Vec<String> = spans
            .iter()
            .map(|s| format!("{} {} {:?}", s.kind, s.name, s.attributes))
            .take(60)
            .collect();
        panic!(
            "{e}; {} spans received, e.g.:\n{}\n{}",
            spans.len(),
            names.join("\n"),
            cluster.log()
        )
    });
    assert_eq!(request.service, "skiff-e2e");
    assert_eq!(store.trace_id, request.trace_id);
    assert_eq!(request.attributes["http.request.method"], "POST");

    // The Deployment controller's reconcile creates the ReplicaSet: reconcile → client span
    // (traceparent) → the API server's span → the store, all one trace.
    wait_for(
        Duration::from_secs(30),
        "a reconcile's trace into the API server",
        || {
            let spans = spans.lock().unwrap().clone();
            let server = spans.iter().find(|s| {
                s.kind == SERVER
                    && s.name == "POST /apis/apps/v1/namespaces/{namespace}/replicasets"
            })?;
            let client = spans
                .iter()
                .find(|s| s.span_id == server.parent && s.kind == CLIENT)?;
            let reconcile = spans
                .iter()
                .find(|s| s.name == "reconcile" && descends(&spans, client, s))?;
            spans
                .iter()
                .any(|s| s.name == "store.create" && descends(&spans, s, server))
                .then_some(reconcile.trace_id.clone())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // JSON component log lines carry trace ids of exported traces.
    let traces: std::collections::HashSet<String> = spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.trace_id.clone())
        .collect();
    let mut logged = 0;
    let mut matched = 0;
    for entry in walk(cluster.dir.path()) {
        if entry.extension().is_some_and(|e| e == "log")
            && entry.parent().is_some_and(|p| p.ends_with("skiff"))
        {
            let text = std::fs::read_to_string(&entry).unwrap_or_default();
            for line in text.lines() {
                if let Some(i) = line.find("\"trace_id\":\"") {
                    logged += 1;
                    let id = &line[i + 12..i + 44];
                    if traces.contains(id) {
                        matched += 1;
                    }
                }
            }
        }
    }
    assert!(
        logged > 0 && matched > 0,
        "{logged} log lines with trace ids, {matched} of exported traces"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
