//! Counts summed from segment rollups equal counts made line by line: histograms and LogQL
//! metric queries, with splits, label filters, ranges that cut segments, and lines stamped
//! on a minute's first nanosecond (the edge both bucket conventions disagree on).

mod common;

use common::{SEC, T0, service};
use serde_json::{Value, json};

const MINUTE: i64 = 60 * SEC;

fn record(ts: i64, namespace: &str, pod: &str, level: Option<&str>, message: &str) -> Value {
    let mut r = json!({
        "ts": ts, "message": message, "namespace": namespace, "pod": pod, "container": "app",
        "stream": "stdout", "node": "n1",
    });
    if let Some(level) = level {
        r["level"] = json!(level);
    }
    r
}

fn loki(query: &str, start: i64, end: i64, step: i64) -> String {
    let q: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
    format!(
        "/loki/api/v1/query_range?query={q}&start={start}&end={end}&step={}",
        step / SEC
    )
}

/// A LogQL matrix as sorted (labels, values) text, comparable across runs.
fn matrix(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = (v["data"]["result"].as_array().unwrap().iter())
        .map(|s| format!("{} {} {}", s["metric"], s["values"], s["value"]))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_count_what_lines_count() {
    let s = service();
    let store = &s.pipeline.store;
    store.rollups.set_min_docs(u32::MAX);
    // Four commits (segments) over 40 minutes; some lines exactly on a minute, some 1 ns
    // after one, the rest spread over the minute.
    let levels = [Some("info"), Some("error"), None];
    for batch in 0..4i64 {
        let mut lines = Vec::new();
        for i in 0..300i64 {
            let minute = (batch * 10 + i % 10) * MINUTE;
            let within = match i % 7 {
                0 => 0,
                1 => 1,
                2 => MINUTE - 1,
                n => n * 7_777_777_777 % MINUTE,
            };
            lines.push(record(
                T0 + minute + within,
                ["a", "b"][(i % 2) as usize],
                &format!("p{}", i % 3),
                levels[(i % 3) as usize],
                &"x".repeat(1 + (i % 5) as usize),
            ));
        }
        s.ingest(&lines).await;
        s.settle().await;
    }
    let end = T0 + 40 * MINUTE;
    let queries = [
        format!("/api/v1/histogram?start={T0}&end={end}&interval=1m&split=level"),
        format!("/api/v1/histogram?start={T0}&end={end}&interval=5m&split=pod&namespace=a"),
        format!("/api/v1/histogram?start={T0}&end={end}&interval=1m"),
        // Ends inside the segments: on a minute, then not.
        format!(
            "/api/v1/histogram?start={T0}&end={}&interval=1m&split=level",
            T0 + 15 * MINUTE
        ),
        format!(
            "/api/v1/histogram?start={T0}&end={}&interval=1m&split=level",
            T0 + 15 * MINUTE + 30 * SEC
        ),
        // Neither end on a minute (as `since=` ranges are): the cut minutes are counted
        // line by line, the whole ones from rollups.
        format!(
            "/api/v1/histogram?start={}&end={}&interval=1m&split=level",
            T0 + 2 * MINUTE + 30 * SEC,
            T0 + 33 * MINUTE + 17 * SEC + 1
        ),
        format!(
            "/api/v1/histogram?start={}&end={}&interval=5m&split=pod",
            T0 + 7 * SEC,
            T0 + 7 * MINUTE + 59 * SEC
        ),
        format!(
            "/loki/api/v1/query?query={}&time={}",
            form_urlencoded::byte_serialize(
                br#"sum by (level) (count_over_time({namespace="a"}[17m]))"#
            )
            .collect::<String>(),
            T0 + 23 * MINUTE + 10 * SEC
        ),
        loki(
            r#"sum by (level) (count_over_time({namespace=~"a|b"}[1m]))"#,
            T0 + MINUTE,
            end,
            MINUTE,
        ),
        loki(
            r#"sum by (pod) (bytes_over_time({container="app", namespace!="b"}[5m]))"#,
            T0 + 5 * MINUTE,
            end,
            5 * MINUTE,
        ),
        loki(
            r#"count_over_time({pod=~"p[01]"}[2m])"#,
            T0 + 2 * MINUTE,
            T0 + 20 * MINUTE,
            MINUTE,
        ),
    ];
    let mut by_lines = Vec::new();
    for q in &queries {
        by_lines.push(s.get(q).await);
    }
    let counted: u64 = (by_lines[2]["buckets"].as_array().unwrap().iter())
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 1200, "{}", by_lines[2]);
    let instant = &by_lines[7]["data"]["result"];
    assert!(
        instant.as_array().is_some_and(|r| !r.is_empty()),
        "{instant}"
    );

    // The service's builder rolls every segment up for the sets the queries asked for.
    store.rollups.set_min_docs(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.rollups.pending(store) > 0 {
        assert!(std::time::Instant::now() < deadline, "rollups not built");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(store.rollups.entries() > 0);
    assert!(s.pipeline.metrics.rollup_entries.get() > 0);
    for (q, expected) in queries.iter().zip(&by_lines) {
        let used = store.rollups.used();
        let got = s.get(q).await;
        assert!(store.rollups.used() > used, "{q}: no rollup used");
        if q.starts_with("/loki") {
            assert_eq!(matrix(&got), matrix(expected), "{q}");
        } else {
            assert_eq!(got, *expected, "{q}");
        }
    }
}
