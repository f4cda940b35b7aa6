//! Live tail over real sockets: 100 WebSocket clients get their backlog and then new matching
//! lines only; the server-sent-events twin streams the same; bad queries are refused before
//! the upgrade.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use skiff_search::record::LogRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

fn record(pod: &str, message: &str) -> LogRecord {
    LogRecord {
        ts: jiff::Timestamp::now().as_nanosecond() as i64,
        message: message.into(),
        namespace: Some("shop".into()),
        pod: Some(pod.into()),
        container: Some("app".into()),
        ..LogRecord::default()
    }
}

fn enc(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// The (pod, line) pairs of a tail frame.
fn lines(frame: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in frame["streams"].as_array().unwrap() {
        for v in s["values"].as_array().unwrap() {
            out.push((
                s["stream"]["pod"].as_str().unwrap().to_owned(),
                v[1].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_sse_clients_follow_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let config = skiff_search::Config::new(dir.path().into(), "127.0.0.1:0".parse().unwrap());
    let server = skiff_search::start(config, Default::default(), shutdown.clone())
        .await
        .unwrap();
    let addr = server.addr;
    let pipeline = server.pipeline.clone();
    let ingest = |records: Vec<LogRecord>| {
        let p = pipeline.clone();
        async move {
            tokio::task::spawn_blocking(move || p.ingest(records).unwrap())
                .await
                .unwrap()
        }
    };
    ingest(vec![
        record("web-0", "hello old 1"),
        record("web-1", "hello old 2"),
        record("web-0", "bye old"),
        record("web-0", "hello old 3"),
    ])
    .await;
    // Searchable after the next commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pipeline
        .store
        .days()
        .iter()
        .map(|d| d.searcher().num_docs())
        .sum::<u64>()
        < 4
    {
        assert!(Instant::now() < deadline, "old lines not searchable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let query = enc(r#"{namespace="shop"} |= "hello""#);
    let url = format!("ws://{addr}/loki/api/v1/tail?query={query}&limit=2");
    let mut clients = Vec::new();
    for _ in 0..100 {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        clients.push(ws);
    }
    // Backlog: the two newest matching lines, oldest first.
    for ws in &mut clients {
        let frame = next_frame(ws).await;
        assert_eq!(
            lines(&frame),
            vec![
                ("web-1".to_owned(), "hello old 2".to_owned()),
                ("web-0".to_owned(), "hello old 3".to_owned())
            ]
        );
    }
    assert_eq!(pipeline.metrics.tail_clients.get(), 100);

    // The SSE client: no backlog, then the same lines.
    let mut sse = tokio::net::TcpStream::connect(addr).await.unwrap();
    sse.write_all(
        format!("GET /api/v1/tail?query={query}&limit=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 4096];
    let n = sse.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    // Give the followers time to subscribe before the new lines go in.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent = Instant::now();
    ingest(vec![
        record("web-2", "hello new"),
        record("web-2", "bye new"),
    ])
    .await;
    let mut slowest = Duration::ZERO;
    for ws in &mut clients {
        let frame = next_frame(ws).await;
        slowest = slowest.max(sent.elapsed());
        assert_eq!(
            lines(&frame),
            vec![("web-2".to_owned(), "hello new".to_owned())]
        );
    }
    eprintln!("100 WebSocket clients had the new line {slowest:?} after ingest");
    let mut body = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !body.contains("hello new") {
        assert!(Instant::now() < deadline, "SSE got {body:?}");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sse.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        body.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(body.contains("data: {"), "{body}");
    assert!(!body.contains("bye new"), "{body}");
    assert!(!body.contains("old"), "{body}");

    // Clients leaving are noticed.
    for mut ws in clients {
        ws.close(None).await.unwrap();
    }
    drop(sse);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pipeline.metrics.tail_clients.get() != 0 {
        assert!(
            Instant::now() < deadline,
            "{} tail clients left",
            pipeline.metrics.tail_clients.get()
        );
        ingest(vec![record("web-3", "hello again")]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A bad query is refused before the upgrade.
    let bad = format!("ws://{addr}/loki/api/v1/tail?query={}", enc("{app="));
    match tokio_tungstenite::connect_async(&bad).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("the server stops with tails open");
}

async fn next_frame<S>(ws: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}
