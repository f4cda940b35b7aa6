//! The Loki-compatible API in process: Grafana's health check, log queries (directions,
//! filters, parsers, line_format, logcli-style paging), metric queries checked against counts
//! computed here, labels, series, stats, volume, and errors worded like Loki's.

mod common;

use common::{SEC, T0, line, service};
use serde_json::Value;

/// 120 lines, one a second from T0, alternating between two pods; every third an error.
fn lines() -> Vec<Value> {
    (0..120)
        .map(|i| {
            let pod = format!("web-{}", i % 2);
            let msg = if i % 3 == 0 {
                format!(r#"{{"status":500,"path":"/api/cart","msg":"upstream error {i}"}}"#)
            } else {
                format!("GET /health 200 ok {i}")
            };
            line(T0 + i * SEC, &pod, &msg)
        })
        .collect()
}

fn ts_of(i: i64) -> i64 {
    T0 + i * SEC
}

fn enc(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// All entries of a streams answer as (ns, line), in answer order across streams.
fn entries(v: &Value) -> Vec<(i64, String)> {
    assert_eq!(v["data"]["resultType"], "streams", "{v}");
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().unwrap() {
        for e in s["values"].as_array().unwrap() {
            out.push((
                e[0].as_str().unwrap().parse().unwrap(),
                e[1].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

async fn ready() -> common::Service {
    let s = service();
    let (status, v) = s.ingest(&lines()).await;
    assert_eq!(status, 200, "{v}");
    s.settle().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_health_check_and_buildinfo() {
    let s = service();
    let v = s
        .get("/loki/api/v1/query?query=vector(1)%2Bvector(1)&time=4000000000")
        .await;
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(v["data"]["result"][0]["metric"], serde_json::json!({}));
    assert_eq!(v["data"]["result"][0]["value"][0], 4);
    assert_eq!(v["data"]["result"][0]["value"][1], "2");
    let v = s.get("/loki/api/v1/query?query=1%2B2*3&time=1.5").await;
    assert_eq!(v["data"]["resultType"], "scalar");
    assert_eq!(v["data"]["result"][1], "7");
    assert_eq!(v["data"]["result"][0], 1.5);
    let v = s.get("/loki/api/v1/status/buildinfo").await;
    assert!(v["version"].as_str().unwrap().starts_with("3."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_queries_filter_parse_and_page() {
    let s = ready().await;
    let range = format!("start={}&end={}", T0, T0 + 3600 * SEC);

    // Backward (the default) with a limit: the newest errors of one pod.
    let q = enc(r#"{namespace="shop", pod="web-0"} |= "error""#);
    let v = s
        .get(&format!(
            "/loki/api/v1/query_range?query={q}&{range}&limit=3"
        ))
        .await;
    let got = entries(&v);
    assert_eq!(
        got.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![ts_of(114), ts_of(108), ts_of(102)]
    );
    let stream = &v["data"]["result"][0]["stream"];
    assert_eq!(stream["pod"], "web-0");
    assert_eq!(stream["namespace"], "shop");
    assert_eq!(stream["container"], "app");

    // A part of a word matches (Loki's substring semantics); case matters.
    let q = enc(r#"{namespace="shop"} |= "rror 11""#);
    let v = s
        .get(&format!(
            "/loki/api/v1/query_range?query={q}&{range}&direction=FORWARD"
        ))
        .await;
    // Entries come grouped by stream, each stream in order.
    let mut got: Vec<i64> = entries(&v).iter().map(|e| e.0).collect();
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
    got.sort();
    assert_eq!(got, vec![ts_of(111), ts_of(114), ts_of(117)]);
    let q = enc(r#"{namespace="shop"} |= "ERROR""#);
    let v = s
        .get(&format!("/loki/api/v1/query_range?query={q}&{range}"))
        .await;
    assert!(entries(&v).is_empty());
    assert_eq!(v["data"]["result"], serde_json::json!([]));

    // Parsers, label filters, line_format.
    let q = enc(
        r#"{app="web", tier="front"} | json | status >= 500 and path=~"/api/.*" | line_format "{{.pod}} {{.path}} {{.status}}""#,
    );
    let v = s
        .get(&format!(
            "/loki/api/v1/query_range?query={q}&{range}&limit=1000"
        ))
        .await;
    let got = entries(&v);
    assert_eq!(got.len(), 40);
    assert!(
        got.iter().all(|e| e.1.ends_with(" /api/cart 500")),
        "{got:?}"
    );
    let stream = &v["data"]["result"][0]["stream"];
    assert_eq!(stream["status"], "500");

    // Regex and negative filters.
    let q = enc(r#"{pod=~"web-.*"} != "health" !~ "error [0-4]""#);
    let v = s
        .get(&format!(
            "/loki/api/v1/query_range?query={q}&{range}&limit=1000"
        ))
        .await;
    let want = (0..120)
        .filter(|i| i % 3 == 0 && !(i.to_string().starts_with(['0', '1', '2', '3', '4'])))
        .count();
    assert_eq!(entries(&v).len(), want);

    // logcli's paging: forward, moving start past the last line seen, start inclusive and
    // end exclusive, with equal timestamps kept in a stable order.
    let q = enc(r#"{namespace="shop"}"#);
    let mut start = T0;
    let end = T0 + 60 * SEC;
    let mut seen = Vec::new();
    loop {
        let v = s
            .get(&format!(
                "/loki/api/v1/query_range?query={q}&start={start}&end={end}&limit=7&direction=forward"
            ))
            .await;
        let mut page = entries(&v);
        page.sort();
        if page.is_empty() {
            break;
        }
        start = page.last().unwrap().0 + 1;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 60);
    assert_eq!(seen[0].0, T0);
    assert_eq!(seen[59].0, ts_of(59));
}

/// Lines of `pod` (or any) with a timestamp in `(t - 60s, t]` whose index passes `keep`.
fn window(t: i64, pod: Option<i64>, keep: impl Fn(i64) -> bool) -> usize {
    (0..120)
        .filter(|i| ts_of(*i) > t - 60 * SEC && ts_of(*i) <= t)
        .filter(|i| pod.is_none_or(|p| i % 2 == p))
        .filter(|i| keep(*i))
        .count()
}

fn matrix(v: &Value) -> Vec<(Value, Vec<(f64, f64)>)> {
    assert_eq!(v["data"]["resultType"], "matrix", "{v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_f64().unwrap(),
                        p[1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect();
            (s["metric"].clone(), points)
        })
        .collect()
}

/// A per-pod matrix answer against `want(step, pod)` at each step (steps with 0 left out).
fn assert_per_pod(v: &Value, steps: &[i64], want: impl Fn(i64, i64) -> f64) {
    let m = matrix(v);
    assert_eq!(m.len(), 2, "{v}");
    for (metric, points) in &m {
        assert_eq!(metric.as_object().unwrap().len(), 1, "{metric}");
        let pod: i64 = metric["pod"].as_str().unwrap()[4..].parse().unwrap();
        let want: Vec<(f64, f64)> = steps
            .iter()
            .map(|t| (*t as f64 / 1e9, want(*t, pod)))
            .filter(|p| p.1 > 0.0)
            .collect();
        assert_eq!(
            points.len(),
            want.len(),
            "pod {pod}: {points:?} vs {want:?}"
        );
        for (got, want) in points.iter().zip(&want) {
            assert_eq!(got.0, want.0, "pod {pod}");
            assert!(
                (got.1 - want.1).abs() < 1e-9,
                "pod {pod}: {got:?} vs {want:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_queries_count_windows_like_loki() {
    let s = ready().await;
    let steps: Vec<i64> = (0..5).map(|k| T0 + 30 * SEC + k * 30 * SEC).collect();
    let range = format!("start={}&end={}&step=30s", steps[0], steps[4]);

    // Counted from the columns: per pod, then summed.
    let q = enc(r#"sum by (pod) (count_over_time({namespace="shop"}[1m]))"#);
    let v = s
        .get(&format!("/loki/api/v1/query_range?query={q}&{range}"))
        .await;
    assert_per_pod(&v, &steps, |t, pod| window(t, Some(pod), |_| true) as f64);

    // Read through the pipeline: a line filter, rate.
    let q = enc(r#"sum(rate({namespace="shop"} |= "error" [1m]))"#);
    let v = s
        .get(&format!("/loki/api/v1/query_range?query={q}&{range}"))
        .await;
    let m = matrix(&v);
    assert_eq!(m.len(), 1);
    let want: Vec<(f64, f64)> = steps
        .iter()
        .map(|t| {
            (
                *t as f64 / 1e9,
                window(*t, None, |i| i % 3 == 0) as f64 / 60.0,
            )
        })
        .filter(|p| p.1 > 0.0)
        .collect();
    assert_eq!(m[0].1.len(), want.len());
    for (got, want) in m[0].1.iter().zip(&want) {
        assert_eq!(got.0, want.0);
        assert!((got.1 - want.1).abs() < 1e-9, "{got:?} vs {want:?}");
    }

    // Vector matching: errors per pod over all lines per pod and container, ignoring the
    // container the left side does not have.
    let q = enc(
        r#"sum by (pod) (count_over_time({namespace="shop"} |= "error" [1m])) / ignoring(container) sum by (pod, container) (count_over_time({namespace="shop"}[1m]))"#,
    );
    let v = s
        .get(&format!("/loki/api/v1/query_range?query={q}&{range}"))
        .await;
    assert_per_pod(&v, &steps, |t, pod| {
        window(t, Some(pod), |i| i % 3 == 0) as f64 / window(t, Some(pod), |_| true) as f64
    });

    // Instant: topk, bytes, comparison.
    let at = T0 + 120 * SEC;
    let q = enc(r#"topk(1, count_over_time({namespace="shop"} | json [2m]))"#);
    let v = s
        .get(&format!("/loki/api/v1/query?query={q}&time={at}"))
        .await;
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 1);
    let q = enc(r#"sum(count_over_time({namespace="shop"}[2m])) > 100"#);
    let v = s
        .get(&format!("/loki/api/v1/query?query={q}&time={at}"))
        .await;
    // (T0, T0+2m]: the first line is outside the left-open window.
    assert_eq!(v["data"]["result"][0]["value"][1], "119");
    let q = enc(r#"sum(count_over_time({namespace="shop"}[2m])) > 500"#);
    let v = s
        .get(&format!("/loki/api/v1/query?query={q}&time={at}"))
        .await;
    assert_eq!(v["data"]["result"], serde_json::json!([]));
    let q = enc(r#"sum(bytes_over_time({pod="web-1"}[2m]))"#);
    let v = s
        .get(&format!("/loki/api/v1/query?query={q}&time={at}"))
        .await;
    let want: usize = lines()
        .iter()
        .filter(|l| l["pod"] == "web-1")
        .map(|l| l["message"].as_str().unwrap().len())
        .sum();
    assert_eq!(v["data"]["result"][0]["value"][1], want.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_series_stats_and_volume() {
    let s = ready().await;
    let range = format!("start={}&end={}", T0, T0 + 3600 * SEC);
    let v = s.get(&format!("/loki/api/v1/labels?{range}")).await;
    assert_eq!(
        v["data"],
        serde_json::json!(["app", "container", "namespace", "node", "pod", "stream"])
    );
    let v = s
        .get(&format!("/loki/api/v1/label/pod/values?{range}"))
        .await;
    assert_eq!(v["data"], serde_json::json!(["web-0", "web-1"]));
    let q = enc(r#"{pod="web-1"}"#);
    let v = s
        .get(&format!("/loki/api/v1/label/pod/values?{range}&query={q}"))
        .await;
    assert_eq!(v["data"], serde_json::json!(["web-1"]));
    let v = s
        .get(&format!("/loki/api/v1/label/tier/values?{range}"))
        .await;
    assert_eq!(v["data"], serde_json::json!(["front"]));
    // Outside the lines' time: nothing.
    let v = s
        .get(&format!(
            "/loki/api/v1/label/pod/values?start={}&end={}",
            T0 - 3600 * SEC,
            T0
        ))
        .await;
    assert_eq!(v["data"], serde_json::json!([]));

    for key in ["match[]", "match"] {
        let v = s
            .get(&format!("/loki/api/v1/series?{range}&{}={q}", enc(key)))
            .await;
        let series = v["data"].as_array().unwrap();
        assert_eq!(series.len(), 1, "{v}");
        assert_eq!(series[0]["pod"], "web-1");
    }
    let q = enc(r#"{namespace="shop"}"#);
    let v = s
        .get(&format!("/loki/api/v1/index/stats?{range}&query={q}"))
        .await;
    assert_eq!(v["streams"], 2);
    assert_eq!(v["entries"], 120);
    let total: usize = lines()
        .iter()
        .map(|l| l["message"].as_str().unwrap().len())
        .sum();
    assert_eq!(v["bytes"], total);
    let v = s
        .get(&format!(
            "/loki/api/v1/index/volume?{range}&query={q}&targetLabels=pod"
        ))
        .await;
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
    let v = s
        .get(&format!(
            "/loki/api/v1/index/volume_range?{range}&query={q}&step=60"
        ))
        .await;
    assert_eq!(v["data"]["resultType"], "matrix");
    assert_eq!(v["data"]["result"][0]["metric"]["namespace"], "shop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_400_worded_like_loki() {
    let s = service();
    for (uri, needle) in [
        (
            format!("/loki/api/v1/query_range?query={}", enc(r#"{app="a"#)),
            "parse error at line 1, col 6",
        ),
        (
            format!("/loki/api/v1/query?query={}", enc(r#"{app="a"}"#)),
            "not supported as an instant query",
        ),
        (
            format!(
                "/loki/api/v1/query_range?query={}&limit=100000",
                enc(r#"{app="a"}"#)
            ),
            "max entries limit",
        ),
        (
            format!(
                "/loki/api/v1/query_range?query={}&start=10&end=5",
                enc(r#"{app="a"}"#)
            ),
            "end timestamp",
        ),
        (
            format!(
                "/loki/api/v1/query_range?query={}&start=0&end=100000000000000&step=1",
                enc(r#"rate({app="a"}[1m])"#)
            ),
            "maximum resolution",
        ),
        (
            format!("/loki/api/v1/query_range?query={}", enc(r#"{app=~".*"}"#)),
            "empty-compatible",
        ),
        ("/loki/api/v1/series".to_owned(), "match[]"),
        (
            "/loki/api/v1/query_range?query=%7Bapp%3D%22a%22%7D&direction=sideways".to_owned(),
            "direction",
        ),
    ] {
        let (status, v) = s.call("GET", &uri, Vec::new()).await;
        assert_eq!(status, 400, "{uri}: {v}");
        assert_eq!(v["status"], "error", "{uri}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{uri}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_takes_snappy_protobuf_and_gzip_json() {
    use skiff_search::push::{LabelPair, ProtoEntry, ProtoStream, PushRequest, Timestamp};
    use std::io::Write;
    let s = service();
    let req = PushRequest {
        streams: vec![ProtoStream {
            labels: r#"{namespace="shop", pod="cart-1", k8s_container_name="app", team="pay"}"#
                .into(),
            entries: (0..3)
                .map(|i| ProtoEntry {
                    timestamp: Some(Timestamp {
                        seconds: T0 / SEC + i,
                        nanos: 5,
                    }),
                    line: format!("proto line {i}"),
                    structured_metadata: vec![LabelPair {
                        name: "trace_id".into(),
                        value: format!("t{i}"),
                    }],
                })
                .collect(),
            hash: 0,
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&req))
        .unwrap();
    let http_req = |ct: &str, gzip: bool, body: Vec<u8>| {
        let mut b = http::Request::builder()
            .method("POST")
            .uri("/loki/api/v1/push")
            .header("content-type", ct);
        if gzip {
            b = b.header("content-encoding", "gzip");
        }
        b.body(axum::body::Body::from(body)).unwrap()
    };
    use tower::ServiceExt;
    let resp = s
        .app
        .clone()
        .oneshot(http_req("application/x-protobuf", false, body))
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let json = serde_json::json!({"streams": [{
        "stream": {"namespace": "shop", "pod": "cart-2"},
        "values": [[(T0 + 10 * SEC).to_string(), "json line", {"trace_id": "tj"}]],
    }]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(json.to_string().as_bytes()).unwrap();
    let resp = s
        .app
        .clone()
        .oneshot(http_req("application/json", true, gz.finish().unwrap()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    s.settle().await;

    let range = format!("start={}&end={}", T0, T0 + 60 * SEC);
    let q = enc(r#"{namespace="shop", team="pay"} | trace_id="t1""#);
    let v = s
        .get(&format!("/loki/api/v1/query_range?query={q}&{range}"))
        .await;
    assert_eq!(entries(&v), vec![(T0 + SEC + 5, "proto line 1".to_owned())]);
    assert_eq!(v["data"]["result"][0]["stream"]["container"], "app");
    let q = enc(r#"{pod="cart-2"}"#);
    let v = s
        .get(&format!("/loki/api/v1/query_range?query={q}&{range}"))
        .await;
    assert_eq!(entries(&v), vec![(T0 + 10 * SEC, "json line".to_owned())]);

    for (ct, body, needle) in [
        ("application/x-protobuf", b"not snappy".to_vec(), "snappy"),
        (
            "application/json",
            b"{\"streams\": 3}".to_vec(),
            "JSON body",
        ),
        (
            "application/json",
            br#"{"streams":[{"stream":{},"values":[["soon","x"]]}]}"#.to_vec(),
            "not Unix ns",
        ),
    ] {
        let resp = s
            .app
            .clone()
            .oneshot(http_req(ct, false, body))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(needle), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_logs_in_json_and_protobuf_are_stored_with_their_attributes() {
    use tower::ServiceExt;
    let s = service();
    let body = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "k8s.namespace.name", "value": {"stringValue": "shop"}},
            {"key": "k8s.pod.name", "value": {"stringValue": "otel-1"}},
        ]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": (T0 + 5 * SEC).to_string(), "severityText": "ERROR",
            "body": {"stringValue": "payment failed"}, "traceId": "5b8efff798038103d269b633813fc60c",
        }]}],
    }]});
    let request = |ct: &str, body: Vec<u8>| {
        http::Request::builder()
            .method("POST")
            .uri("/v1/logs")
            .header("content-type", ct)
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let resp = s
        .app
        .clone()
        .oneshot(request("application/json", body.to_string().into_bytes()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The same record in protobuf, from another pod, as an SDK's default exporter sends it.
    let proto = {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use prost::Message;
        let text = |s: &str| AnyValue {
            value: Some(any_value::Value::StringValue(s.to_owned())),
        };
        let kv = |k: &str, v: &str| KeyValue {
            key: k.to_owned(),
            value: Some(text(v)),
            ..Default::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("k8s.namespace.name", "shop"),
                        kv("k8s.pod.name", "otel-2"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: (T0 + 6 * SEC) as u64,
                        severity_number: 17,
                        body: Some(text("payment failed")),
                        trace_id: vec![
                            0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33,
                            0x81, 0x3f, 0xc6, 0x0c,
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    let resp = s
        .app
        .clone()
        .oneshot(request("application/x-protobuf", proto))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let resp = s
        .app
        .clone()
        .oneshot(request("application/x-protobuf", vec![0xff, 0xff, 0xff]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = s
        .app
        .clone()
        .oneshot(request("text/plain", b"payment failed".to_vec()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    s.settle().await;
    let q = enc(
        r#"{namespace="shop", pod=~"otel-.*", level="error"} | trace_id="5b8efff798038103d269b633813fc60c""#,
    );
    let v = s
        .get(&format!(
            "/loki/api/v1/query_range?query={q}&start={T0}&end={}&direction=forward",
            T0 + 60 * SEC
        ))
        .await;
    let mut got = entries(&v);
    got.sort();
    assert_eq!(
        got,
        vec![
            (T0 + 5 * SEC, "payment failed".to_owned()),
            (T0 + 6 * SEC, "payment failed".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwrapped_values_pattern_and_regexp() {
    let s = ready().await;
    let steps: Vec<i64> = (0..5).map(|k| T0 + 30 * SEC + k * 30 * SEC).collect();
    let range = format!("start={}&end={}&step=30s", steps[0], steps[4]);
    // The health lines are "GET /health 200 ok <i>"; every third line is JSON instead.
    let health = |i: i64| i % 3 != 0;
    let in_window = |t: i64, pod: i64| -> Vec<f64> {
        (0..120)
            .filter(|i| ts_of(*i) > t - 60 * SEC && ts_of(*i) <= t)
            .filter(|i| i % 2 == pod && health(*i))
            .map(|i| i as f64)
            .collect()
    };

    // sum_over_time over a pattern capture, grouped by pod (the JSON lines do not match the
    // pattern and give no sample).
    let q = enc(
        r#"sum_over_time({namespace="shop"} | pattern "GET <_> <status> ok <n>" | unwrap n [1m]) by (pod)"#,
    );
    let v = s
        .get(&format!("/loki/api/v1/query_range?query={q}&{range}"))
        .await;
    assert_per_pod(&v, &steps, |t, pod| in_window(t, pod).iter().sum());

    // quantile_over_time over a regexp capture: the median of the window's values.
    let at = T0 + 90 * SEC;
    let q = enc(
        r#"quantile_over_time(0.5, {pod="web-0"} | regexp `ok (?P<n>\d+)$` | unwrap n [1m]) by (pod)"#,
    );
    let v = s
        .get(&format!("/loki/api/v1/query?query={q}&time={at}"))
        .await;
    let mut values = in_window(at, 0);
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let median = if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    };
    assert_eq!(v["data"]["result"][0]["metric"]["pod"], "web-0", "{v}");
    assert_eq!(
        v["data"]["result"][0]["value"][1],
        median.to_string(),
        "{v}"
    );

    // Without grouping each series keeps its labels but the unwrapped one: every JSON line in
    // (T0, T0+2m] has its own `msg`, so each is a series.
    let q = enc(r#"max_over_time({namespace="shop"} | json | unwrap status [2m])"#);
    let v = s
        .get(&format!(
            "/loki/api/v1/query?query={q}&time={}",
            T0 + 120 * SEC
        ))
        .await;
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(
        result.len(),
        (1..120).filter(|i| !health(*i)).count(),
        "{v}"
    );
    for r in result {
        assert!(
            r["metric"]["msg"]
                .as_str()
                .unwrap()
                .starts_with("upstream error ")
        );
        assert_eq!(r["value"][1], "500", "{r}");
        assert_eq!(r["metric"]["path"], "/api/cart", "{r}");
        assert!(r["metric"].get("status").is_none(), "{r}");
    }

    // Parsers in log queries: labels to filter on.
    let q = enc(r#"{namespace="shop"} | pattern "GET <path> <status> ok <n>" | n > 110"#);
    let v = s
        .get(&format!(
            "/loki/api/v1/query_range?query={q}&start={}&end={}&limit=100",
            T0,
            T0 + 200 * SEC
        ))
        .await;
    let mut got: Vec<i64> = entries(&v).iter().map(|(ts, _)| (ts - T0) / SEC).collect();
    got.sort();
    let want: Vec<i64> = (111..120).filter(|i| health(*i)).collect();
    assert_eq!(got, want);
    let stream = &v["data"]["result"][0]["stream"];
    assert_eq!(stream["path"], "/health", "{v}");

    // unwrap outside a range aggregation, and ops that need one, are refused where they are.
    for q in [
        r#"{namespace="shop"} | json | unwrap status"#,
        r#"avg_over_time({namespace="shop"}[1m])"#,
    ] {
        let uri = format!("/loki/api/v1/query_range?query={}&{range}", enc(q));
        let (status, v) = s.call("GET", &uri, Vec::new()).await;
        assert_eq!(status, 400, "{q}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains("unwrap"),
            "{q}: {v}"
        );
    }
}
