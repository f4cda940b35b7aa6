//! The native HTTP API in process: ingest, search (order, cursor pages, highlighting, filters),
//! histogram, label values, context, deduplication, and bad input answered with 4xx.

mod common;

use common::{SEC, T0, line, service};
use serde_json::{Value, json};

fn messages(v: &Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["message"].as_str().unwrap().to_owned())
        .collect()
}

const RANGE: &str = "start=1795651200000000000&end=1795654800000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_searchable_in_a_stable_order_with_pages() {
    let s = service();
    let mut lines = Vec::new();
    for i in 0..10 {
        // Pairs of lines share a timestamp: the ingest order breaks the tie.
        lines.push(line(
            T0 + (i / 2) * SEC,
            "web-1",
            &format!("request {i} ok"),
        ));
    }
    lines.push(line(
        T0 + 20 * SEC,
        "web-2",
        "ERROR connection refused by db",
    ));
    let (status, out) = s.ingest(&lines).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["accepted"], 11);
    s.settle().await;

    let v = s.get(&format!("/api/v1/search?{RANGE}&limit=4")).await;
    assert_eq!(v["total"], 11);
    assert_eq!(
        messages(&v),
        [
            "ERROR connection refused by db",
            "request 9 ok",
            "request 8 ok",
            "request 7 ok"
        ]
    );
    // Pages continue exactly where the last one stopped, ties included.
    let mut all = messages(&v);
    let mut cursor = v["cursor"].as_str().unwrap().to_owned();
    loop {
        let v = s
            .get(&format!("/api/v1/search?{RANGE}&limit=4&cursor={cursor}"))
            .await;
        all.extend(messages(&v));
        match v["cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..10).rev().map(|i| format!("request {i} ok")).collect();
    expected.insert(0, "ERROR connection refused by db".into());
    assert_eq!(all, expected);

    let v = s
        .get(&format!("/api/v1/search?{RANGE}&order=asc&limit=2"))
        .await;
    assert_eq!(messages(&v), ["request 0 ok", "request 1 ok"]);

    // Query text, label filters, detected level, highlighting.
    let v = s
        .get(&format!(
            "/api/v1/search?{RANGE}&query=%22connection%20refused%22&highlight=true"
        ))
        .await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["hits"][0]["level"], "error");
    assert_eq!(v["hits"][0]["pod"], "web-2");
    assert_eq!(v["hits"][0]["labels"]["tier"], "front");
    assert!(
        v["hits"][0]["highlight"]
            .as_str()
            .unwrap()
            .contains("<b>connection</b> <b>refused</b>"),
        "{v}"
    );
    let v = s
        .get(&format!("/api/v1/search?{RANGE}&pod=web-1&query=request"))
        .await;
    assert_eq!(v["total"], 10);
    let v = s
        .get(&format!("/api/v1/search?{RANGE}&label=tier=back"))
        .await;
    assert_eq!(v["total"], 0);
    let v = s
        .get(&format!(
            "/api/v1/search?{RANGE}&label=tier!=back&level=error"
        ))
        .await;
    assert_eq!(v["total"], 1);
    let v = s
        .get(&format!("/api/v1/search?{RANGE}&query=level:error"))
        .await;
    assert_eq!(v["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_values_and_context() {
    let s = service();
    let mut lines = Vec::new();
    for i in 0..6 {
        lines.push(line(T0 + i * 30 * SEC, "web-1", &format!("INFO tick {i}")));
    }
    lines.push(line(T0 + 61 * SEC, "web-2", "WARN slow"));
    s.ingest(&lines).await;
    s.settle().await;

    let v = s
        .get("/api/v1/histogram?start=1795651200000000000&end=1795651380000000000&interval=1m&split=level")
        .await;
    let counts: Vec<u64> = v["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [2, 3, 2]);
    assert_eq!(v["buckets"][1]["by"], json!({"info": 2, "warn": 1}));

    let v = s.get(&format!("/api/v1/labels/pod/values?{RANGE}")).await;
    assert_eq!(
        v["values"],
        json!([{"value": "web-1", "count": 6}, {"value": "web-2", "count": 1}])
    );
    // Counted from the term dictionary above (the segment is inside the range); from the
    // columns when the range cuts the segment or another filter applies.
    let v = s
        .get("/api/v1/labels/pod/values?start=1795651200000000000&end=1795651261000000000")
        .await;
    assert_eq!(v["values"], json!([{"value": "web-1", "count": 3}]));
    let v = s
        .get(&format!("/api/v1/labels/pod/values?{RANGE}&level=warn"))
        .await;
    assert_eq!(v["values"], json!([{"value": "web-2", "count": 1}]));
    let v = s.get(&format!("/api/v1/labels?{RANGE}")).await;
    for l in [
        "namespace",
        "pod",
        "container",
        "node",
        "app",
        "stream",
        "level",
    ] {
        assert!(
            v["labels"].as_array().unwrap().contains(&json!(l)),
            "{l}: {v}"
        );
    }

    let hit = s
        .get(&format!("/api/v1/search?{RANGE}&query=%22tick%203%22"))
        .await;
    let seq = hit["hits"][0]["seq"].as_u64().unwrap();
    let v = s
        .get(&format!("/api/v1/context?seq={seq}&before=2&after=1"))
        .await;
    let around: Vec<&str> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    // Same container only: web-2's line is not part of web-1's context.
    assert_eq!(
        around,
        ["INFO tick 1", "INFO tick 2", "INFO tick 3", "INFO tick 4"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_lines_are_stored_once() {
    let s = service();
    let keyed = |offset: u64, msg: &str| {
        let mut l = line(T0, "web-1", msg);
        l["source"] = json!("n1:42:abc");
        l["offset"] = json!(offset);
        l
    };
    let (_, out) = s.ingest(&[keyed(0, "one"), keyed(4, "two")]).await;
    assert_eq!(out, json!({"accepted": 2, "duplicates": 0, "truncated": 0}));
    let (_, out) = s.ingest(&[keyed(4, "two"), keyed(8, "three")]).await;
    assert_eq!(out, json!({"accepted": 1, "duplicates": 1, "truncated": 0}));
    s.settle().await;
    let v = s.get(&format!("/api/v1/search?{RANGE}&order=asc")).await;
    assert_eq!(messages(&v), ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_stores_nothing() {
    let s = service();
    let bad = |body: &[u8]| s.call("POST", "/api/v1/ingest", body.to_vec());
    let (status, v) = bad(b"{\"ts\":1,\"message\":\"fine\"}\n{not json}\n").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().starts_with("line 2:"), "{v}");
    let (status, v) = bad(b"{\"ts\":1,\"message\":\"\xff\xfe\"}\n").await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = bad(b"{\"ts\":\"yesterday\",\"message\":\"x\"}").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("timestamp"), "{v}");
    let long_pod = "p".repeat(5000);
    let (status, v) = s
        .ingest(&[json!({"ts": T0, "message": "x", "pod": long_pod})])
        .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("label pod"), "{v}");
    let (status, _) = bad(&vec![b' '; skiff_search::http::MAX_BODY_BYTES + 10]).await;
    assert_eq!(status, 413);

    // Binary-ish but valid JSON text and an over-long line are stored (the line cut).
    let (status, v) = s
        .ingest(&[
            line(T0, "web-1", "\u{0}\u{1}binary\u{7f}"),
            line(T0 + 1, "web-1", &"z".repeat(5000)),
        ])
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["truncated"], 1);
    s.settle().await;
    let v = s.get(&format!("/api/v1/search?{RANGE}")).await;
    assert_eq!(v["total"], 2);
    assert_eq!(v["hits"][0]["message"].as_str().unwrap().len(), 1024);

    for (uri, what) in [
        ("/api/v1/search?query=(unclosed", "query"),
        ("/api/v1/search?start=abc", "start"),
        ("/api/v1/search?since=forever", "since"),
        ("/api/v1/search?limit=-1", "limit"),
        ("/api/v1/search?cursor=zzz", "cursor"),
        ("/api/v1/search?order=sideways", "order"),
        ("/api/v1/histogram?split=message", "split"),
        ("/api/v1/histogram?interval=1ns&since=24h", "buckets"),
        ("/api/v1/context", "seq"),
    ] {
        let (status, v) = s.call("GET", uri, Vec::new()).await;
        assert_eq!(status, 400, "{uri}: {v}");
        assert!(v["error"].as_str().unwrap().contains(what), "{uri}: {v}");
    }
    let (status, _) = s
        .call("GET", "/api/v1/context?seq=999999", Vec::new())
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parsed_fields_are_searchable_and_ids_are_found_through_the_message() {
    let s = service();
    let json_line = |ts: i64, user: &str, trace: &str, request: &str| {
        let message = json!({
            "ts": ts as f64 / 1e9, "level": "info", "msg": "order paid", "user": user,
            "trace_id": trace, "request_id": request,
            "http": {"path": "/api/v1/orders", "span_id": "aaaaaaaaaaaaaaaa"},
        });
        line(ts, "web-1", &message.to_string())
    };
    let lines = [
        json_line(
            T0,
            "alice",
            "02ee4f0b02ab6df7",
            "550e8400-e29b-41d4-a716-446655440000",
        ),
        json_line(
            T0 + SEC,
            "bob",
            "7a44cb38448a50f6",
            "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        ),
        line(
            T0 + 2 * SEC,
            "web-2",
            "ts=2026-11-26T00:00:02Z level=warn msg=\"slow\" user=carol trace_id=104534e4fb2db5bf",
        ),
    ];
    let (status, out) = s.ingest(&lines).await;
    assert_eq!(status, 200, "{out}");
    s.settle().await;

    let total = |v: Value| v["total"].as_u64().unwrap();
    let search = |q: &str| format!("/api/v1/search?{RANGE}&query={}", urlencode(q));
    // Values are indexed by field, at any depth, from JSON and logfmt lines.
    assert_eq!(total(s.get(&search("fields.user:alice")).await), 1);
    assert_eq!(total(s.get(&search("fields.user:carol")).await), 1);
    assert_eq!(total(s.get(&search("fields.http.path:orders")).await), 2);
    assert_eq!(total(s.get(&search("fields.user:alice")).await), 1);
    // Identifiers are not in the fields index, but a query by field finds them in the message.
    let v = s.get(&search("fields.trace_id:7a44cb38448a50f6")).await;
    assert_eq!(total(v.clone()), 1, "{v}");
    assert_eq!(v["hits"][0]["fields"]["user"], "bob", "{v}");
    let v = s.get(&search("fields.trace_id:104534e4fb2db5bf")).await;
    assert_eq!(v["hits"][0]["pod"], "web-2", "{v}");
    let v = s
        .get(&search(
            "fields.request_id:\"550e8400-e29b-41d4-a716-446655440000\"",
        ))
        .await;
    assert_eq!(total(v.clone()), 1, "{v}");
    assert_eq!(v["hits"][0]["fields"]["user"], "alice", "{v}");

    // What the fields index holds: words of values, not the ids or the line's own time.
    let mut terms = Vec::new();
    for day in s.pipeline.store.days().iter() {
        let searcher = day.searcher();
        for segment in searcher.segment_readers() {
            let index = segment
                .inverted_index(s.pipeline.store.fields.fields)
                .unwrap();
            let mut stream = index.terms().stream().unwrap();
            while stream.advance() {
                terms.push(String::from_utf8_lossy(stream.key()).into_owned());
            }
        }
    }
    let has = |word: &str| terms.iter().any(|t| t.contains(word));
    assert!(has("alice") && has("carol") && has("orders"), "{terms:?}");
    for id in [
        "02ee4f0b02ab6df7",
        "104534e4fb2db5bf",
        "550e8400",
        "aaaaaaaaaaaaaaaa",
    ] {
        assert!(!has(id), "{id} is in the fields index: {terms:?}");
    }
    assert!(
        !terms.iter().any(|t| t.starts_with("ts\0")),
        "the line's time is in the fields index: {terms:?}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_lines_across_segments_with_overlapping_times() {
    let s = service();
    // Five commits, five segments; their time ranges overlap (batch b holds seconds b, b+5, …).
    for b in 0..5 {
        let lines: Vec<Value> = (0..4)
            .map(|i| {
                let sec = b + 5 * i;
                line(T0 + sec * SEC, "web-1", &format!("line {sec}"))
            })
            .collect();
        s.ingest(&lines).await;
        s.settle().await;
    }
    let segments: usize = (s.pipeline.store.days().iter())
        .map(|d| d.searcher().segment_readers().len())
        .sum();
    assert!(segments > 1, "{segments} segment(s)");
    let v = s.get(&format!("/api/v1/search?{RANGE}&limit=3")).await;
    assert_eq!(v["total"], 20);
    assert_eq!(v["total_relation"], "eq");
    assert_eq!(messages(&v), ["line 19", "line 18", "line 17"]);
    let v = s
        .get(&format!("/api/v1/search?{RANGE}&limit=3&order=asc"))
        .await;
    assert_eq!(messages(&v), ["line 0", "line 1", "line 2"]);
    // Pages walk every line once, in order, whichever segments they come from; a range that
    // cuts the segments leaves out what is outside.
    for order in ["desc", "asc"] {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let v = s
                .get(&format!(
                    "/api/v1/search?{RANGE}&limit=4&order={order}{cursor}"
                ))
                .await;
            all.extend(messages(&v));
            match v["cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        let mut expected: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        if order == "desc" {
            expected.reverse();
        }
        assert_eq!(all, expected, "{order}");
    }
    let v = s
        .get(&format!(
            "/api/v1/search?start={}&end={}&limit=100",
            T0 + 3 * SEC,
            T0 + 8 * SEC
        ))
        .await;
    assert_eq!(v["total"], 5);
    assert_eq!(
        messages(&v),
        ["line 7", "line 6", "line 5", "line 4", "line 3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_past_ten_thousand_are_a_lower_bound() {
    let s = service();
    // One day index per batch: merges may join a day's segments (and a whole segment is
    // counted at once), but never two days.
    const DAY: i64 = 86_400 * SEC;
    for b in 0..3i64 {
        let lines: Vec<Value> = (0..6000i64)
            .map(|i| line(T0 + b * DAY + i * 1000, "web-1", "GET /healthz 200"))
            .collect();
        for chunk in lines.chunks(2000) {
            s.ingest(chunk).await;
        }
        s.settle().await;
    }
    let v = s
        .get(&format!(
            "/api/v1/search?start={T0}&end={}&limit=2",
            T0 + 3 * DAY
        ))
        .await;
    assert_eq!(v["total_relation"], "gte", "{}", v["total"]);
    let total = v["total"].as_u64().unwrap();
    assert!((10_000..18_000).contains(&total), "{total}");
    assert_eq!(v["hits"].as_array().unwrap().len(), 2);
    // Fewer matches than that are counted exactly.
    let v = s
        .get(&format!(
            "/api/v1/search?start={}&end={}&limit=2",
            T0 + 2 * DAY,
            T0 + 3 * DAY
        ))
        .await;
    assert_eq!(
        (v["total"].as_u64(), v["total_relation"].as_str()),
        (Some(6000), Some("eq"))
    );
}
