//! The collector against a real skiff-search in the same process: lines of every file arrive
//! with their metadata, partial records are joined, and rename rotation, copytruncate, deleted
//! files and restarts (including one that lost its last checkpoints, as after a kill -9) lose
//! no line and store none twice. The Loki sink ships to skiff-search's Loki push API; the
//! Elasticsearch sink to a stand-in `_bulk` server (no Elasticsearch runs here) that answers
//! as Elasticsearch does: a 429, per-item conflicts and refusals.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_log_collector::sink::SinkKind;
use skiff_log_collector::{Config, metrics::Metrics};
use skiff_search::query::{Filters, Order, SearchRequest};
use tokio_util::sync::CancellationToken;

struct Search {
    _dir: tempfile::TempDir,
    server: Option<skiff_search::Server>,
    shutdown: CancellationToken,
}

async fn search() -> Search {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        skiff_search::Config::new(dir.path().to_owned(), "127.0.0.1:0".parse().unwrap());
    config.commit_interval = Duration::from_millis(100);
    config.writer_memory_bytes = 15_000_000;
    let shutdown = CancellationToken::new();
    let server = skiff_search::start(config, Default::default(), shutdown.clone())
        .await
        .unwrap();
    Search {
        _dir: dir,
        server: Some(server),
        shutdown,
    }
}

impl Search {
    fn url(&self) -> String {
        format!("http://{}", self.server.as_ref().unwrap().addr)
    }

    /// One page of every stored line, oldest first.
    fn page(&self, after: Option<(i64, u64)>, limit: usize) -> skiff_search::query::SearchResult {
        let pipeline = &self.server.as_ref().unwrap().pipeline;
        skiff_search::query::search(
            &pipeline.store,
            &SearchRequest {
                filters: Filters {
                    text: None,
                    labels: Vec::new(),
                    start: 0,
                    end: i64::MAX,
                    words: Vec::new(),
                },
                order: Order::Asc,
                limit,
                after,
                highlight: false,
                count: false,
            },
        )
        .unwrap()
    }

    /// Every stored message, oldest first.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let r = self.page(after, 5000);
            out.extend(r.hits.iter().map(|h| h.record.message.clone()));
            match r.next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
    }

    fn records(&self) -> Vec<skiff_search::record::LogRecord> {
        self.page(None, 10_000)
            .hits
            .into_iter()
            .map(|h| h.record)
            .collect()
    }

    /// Wait until `n` lines are stored; then check none is stored twice.
    async fn expect(&self, expected: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.messages();
            if got.len() >= expected.len() {
                let mut counts: HashMap<&String, usize> = HashMap::new();
                for m in &got {
                    *counts.entry(m).or_default() += 1;
                }
                for m in expected {
                    assert_eq!(
                        counts.get(m).copied(),
                        Some(1),
                        "{m:?} stored {:?} times",
                        counts.get(m)
                    );
                }
                assert_eq!(got.len(), expected.len(), "unexpected extra lines");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} lines arrived; missing e.g. {:?}",
                got.len(),
                expected.len(),
                expected.iter().find(|m| !got.contains(m))
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.server.take().unwrap().wait().await;
    }
}

struct Collector {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start_collector(pods: &Path, data: &Path, url: &str) -> Collector {
    start_collector_to(pods, data, url, SinkKind::Search)
}

fn start_collector_to(pods: &Path, data: &Path, url: &str, sink: SinkKind) -> Collector {
    start_collector_with(pods, data, url, |c| c.sink = sink)
}

fn start_collector_with(
    pods: &Path,
    data: &Path,
    url: &str,
    configure: impl FnOnce(&mut Config),
) -> Collector {
    let mut config = Config::new(
        pods.to_owned(),
        data.to_owned(),
        "node-a".into(),
        url.to_owned(),
    );
    config.scan_interval = Duration::from_millis(100);
    config.poll_interval = Duration::from_millis(20);
    config.flush_interval = Duration::from_millis(50);
    config.batch_lines = 7; // small batches: many checkpoints and acknowledgements
    configure(&mut config);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(skiff_log_collector::run(
        config,
        None,
        Metrics::default(),
        shutdown.clone(),
    ));
    Collector { shutdown, task }
}

impl Collector {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn log_file(pods: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    let dir = pods.join(format!("{ns}_{pod}_uid-{pod}")).join(container);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("0.log")
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%9fZ")
        .to_string()
}

/// Append CRI records of whole lines.
fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{} stdout F {l}", now()).unwrap();
    }
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_shipped_with_metadata_and_partials_joined() {
    let s = search().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let a = log_file(&pods, "shop", "web-1", "app");
    let b = log_file(&pods, "shop", "web-2", "sidecar");
    write_lines(&a, &lines("a", 0..10));
    let c = start_collector(&pods, &tmp.path().join("data"), &s.url());
    write_lines(&b, &lines("b", 0..5));
    // A long line written as pieces, a stderr line and a Docker json-file line.
    let mut f = std::fs::OpenOptions::new().append(true).open(&a).unwrap();
    writeln!(f, "{} stdout P first half, ", now()).unwrap();
    writeln!(f, "{} stderr F an error", now()).unwrap();
    writeln!(f, "{} stdout F second half", now()).unwrap();
    writeln!(
        f,
        r#"{{"log":"docker style\n","stream":"stdout","time":"{}"}}"#,
        now()
    )
    .unwrap();
    writeln!(f, "garbage \u{1} that is no record").unwrap();
    drop(f);
    let mut expected = lines("a", 0..10);
    expected.extend(lines("b", 0..5));
    expected.extend(
        [
            "an error",
            "first half, second half",
            "docker style",
            "garbage \u{1} that is no record",
        ]
        .map(String::from),
    );
    s.expect(&expected).await;
    let records = s.records();
    let r = records.iter().find(|r| r.message == "b line 3").unwrap();
    assert_eq!(r.namespace.as_deref(), Some("shop"));
    assert_eq!(r.pod.as_deref(), Some("web-2"));
    assert_eq!(r.container.as_deref(), Some("sidecar"));
    assert_eq!(r.pod_uid.as_deref(), Some("uid-web-2"));
    assert_eq!(r.node.as_deref(), Some("node-a"));
    let e = records.iter().find(|r| r.message == "an error").unwrap();
    assert_eq!(e.stream.as_deref(), Some("stderr"));
    c.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_truncation_deletion_and_restarts_lose_nothing() {
    let s = search().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let data = tmp.path().join("data");
    let f = log_file(&pods, "ns", "rot", "c");
    let mut expected = Vec::new();
    fn write(expected: &mut Vec<String>, path: &Path, l: Vec<String>) {
        write_lines(path, &l);
        expected.extend(l);
    }

    write(&mut expected, &f, lines("before-rotation", 0..20));
    let c = start_collector(&pods, &data, &s.url());
    s.expect(&lines("before-rotation", 0..20)).await;

    // Rename rotation: lines written to the old file just before the rename still arrive.
    write(&mut expected, &f, lines("just-before-rename", 0..5));
    std::fs::rename(&f, f.with_extension("log.20261127-000000")).unwrap();
    write(&mut expected, &f, lines("after-rotation", 0..20));
    s.expect(&expected).await;

    // Copytruncate: the file is copied away and emptied in place, then written again. Lines
    // written just before are read from the copy, once.
    write(&mut expected, &f, lines("just-before-copy", 0..5));
    std::fs::copy(&f, f.with_extension("log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(0)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    write(&mut expected, &f, lines("after-truncate", 0..10));
    s.expect(&expected).await;

    // A clean restart resumes at the checkpoints.
    c.stop().await;
    write(&mut expected, &f, lines("while-stopped", 0..10));
    let saved = std::fs::read(data.join("checkpoints.json")).unwrap();
    let c = start_collector(&pods, &data, &s.url());
    s.expect(&expected).await;

    // A crash that lost the checkpoints saved since `saved` (as kill -9 right before a save
    // would): the lines since are read and sent again, and the sink drops them.
    c.stop().await;
    std::fs::write(data.join("checkpoints.json"), &saved).unwrap();
    write(&mut expected, &f, lines("after-crash", 0..10));
    let c = start_collector(&pods, &data, &s.url());
    s.expect(&expected).await;

    // A pod deleted while its last lines are unread: the open handle is read to the end.
    let gone = log_file(&pods, "ns", "gone", "c");
    write(&mut expected, &gone, lines("gone-first", 0..3));
    s.expect(&expected).await;
    write(&mut expected, &gone, lines("gone-last", 0..50));
    std::fs::remove_dir_all(pods.join("ns_gone_uid-gone")).unwrap();
    s.expect(&expected).await;

    c.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_sink_ships_through_the_push_api() {
    let s = search().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let f = log_file(&pods, "shop", "cart-1", "app");
    write_lines(&f, &lines("loki", 0..30));
    let c = start_collector_to(&pods, &tmp.path().join("data"), &s.url(), SinkKind::Loki);
    s.expect(&lines("loki", 0..30)).await;
    let r = s.records().pop().unwrap();
    assert_eq!(r.namespace.as_deref(), Some("shop"));
    assert_eq!(r.pod.as_deref(), Some("cart-1"));
    assert_eq!(r.container.as_deref(), Some("app"));
    assert_eq!(r.node.as_deref(), Some("node-a"));
    c.stop().await;
    s.stop().await;
}

/// A stand-in for Elasticsearch's `_bulk`: documents by `_id` per index; the first request is
/// answered 429, a document saying "reject me" gets a per-item 400, a known `_id` a 409.
#[derive(Default)]
struct Bulk {
    requests: usize,
    docs: HashMap<String, (String, serde_json::Value)>,
}

async fn bulk_server() -> (String, std::sync::Arc<std::sync::Mutex<Bulk>>) {
    use axum::http::StatusCode;
    let state = std::sync::Arc::new(std::sync::Mutex::new(Bulk::default()));
    let st = state.clone();
    let app = axum::Router::new().route(
        "/_bulk",
        axum::routing::post(move |body: String| {
            let st = st.clone();
            async move {
                let mut b = st.lock().unwrap();
                b.requests += 1;
                if b.requests == 1 {
                    return (StatusCode::TOO_MANY_REQUESTS, "{}".to_owned());
                }
                let mut items = Vec::new();
                let mut errors = false;
                let mut lines = body.lines();
                while let Some(action) = lines.next() {
                    let action: serde_json::Value = serde_json::from_str(action).unwrap();
                    let doc: serde_json::Value =
                        serde_json::from_str(lines.next().unwrap()).unwrap();
                    let index = action["create"]["_index"].as_str().unwrap().to_owned();
                    let id = action["create"]["_id"].as_str().unwrap().to_owned();
                    let status = if doc["log"].as_str().unwrap().contains("reject me") {
                        400
                    } else if b.docs.contains_key(&id) {
                        409
                    } else {
                        b.docs.insert(id.clone(), (index.clone(), doc));
                        201
                    };
                    errors |= status != 201;
                    items.push(serde_json::json!({"create": {"_index": index, "_id": id, "status": status}}));
                }
                (
                    StatusCode::OK,
                    serde_json::json!({"took": 1, "errors": errors, "items": items}).to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_sink_creates_each_line_once_in_daily_indexes() {
    let (url, state) = bulk_server().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let f = log_file(&pods, "shop", "web-1", "app");
    let mut sent = lines("es", 0..20);
    sent.insert(5, "please reject me".into());
    write_lines(&f, &sent);
    let stored = |state: &std::sync::Arc<std::sync::Mutex<Bulk>>| {
        let b = state.lock().unwrap();
        let mut logs: Vec<String> = b
            .docs
            .values()
            .map(|(_, d)| d["log"].as_str().unwrap().to_owned())
            .collect();
        logs.sort();
        logs
    };
    let mut want = lines("es", 0..20);
    want.sort();
    let wait = |state| {
        let want = want.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while stored(state) != want {
                assert!(Instant::now() < deadline, "stored {:?}", stored(state));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let c = start_collector_to(
        &pods,
        &tmp.path().join("data"),
        &url,
        SinkKind::Elasticsearch,
    );
    wait(&state).await;
    c.stop().await;
    {
        let b = state.lock().unwrap();
        assert!(b.requests >= 2, "the 429 was retried");
        let (index, doc) = b.docs.values().next().unwrap();
        assert!(index.starts_with("logstash-20"), "{index}");
        assert_eq!(index.len(), "logstash-2026.11.26".len());
        assert_eq!(doc["kubernetes"]["namespace_name"], "shop");
        assert_eq!(doc["kubernetes"]["pod_name"], "web-1");
        assert_eq!(doc["kubernetes"]["container_name"], "app");
        assert_eq!(doc["kubernetes"]["host"], "node-a");
        assert!(doc["@timestamp"].as_str().unwrap().ends_with('Z'));
    }
    // Checkpoints lost (a fresh data directory): everything is sent again, and the ids make
    // every line a conflict instead of a copy.
    let before = state.lock().unwrap().requests;
    let c = start_collector_to(
        &pods,
        &tmp.path().join("data2"),
        &url,
        SinkKind::Elasticsearch,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while state.lock().unwrap().requests < before + 3 {
        assert!(Instant::now() < deadline, "nothing re-sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
    assert_eq!(stored(&state), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_traces_arrive_as_one_record_across_a_restart() {
    let s = search().await;
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let data = tmp.path().join("data");
    let f = log_file(&pods, "shop", "java-1", "app");
    let rule = || skiff_log_collector::parse::Multiline {
        continue_pattern: regex::Regex::new(r"^\s+at |^Caused by:").unwrap(),
        timeout: Duration::from_millis(200),
    };
    let trace = |n: usize| {
        vec![
            format!("Exception {n}: boom"),
            "\tat com.shop.Cart.add(Cart.java:10)".to_owned(),
            "Caused by: java.io.IOException".to_owned(),
            "\tat com.shop.Disk.write(Disk.java:3)".to_owned(),
        ]
    };
    let joined = |n: usize| trace(n).join("\n");
    let mut written = vec!["before".to_owned()];
    written.extend(trace(1));
    written.push("between".into());
    write_lines(&f, &written);
    let c = start_collector_with(&pods, &data, &s.url(), |cfg| cfg.multiline = Some(rule()));
    let mut expected = vec!["before".to_owned(), joined(1), "between".to_owned()];
    s.expect(&expected).await;
    c.stop().await;
    // Written while stopped, the second trace is read after the restart, still whole.
    let mut more = trace(2);
    more.push("after".into());
    write_lines(&f, &more);
    let c = start_collector_with(&pods, &data, &s.url(), |cfg| cfg.multiline = Some(rule()));
    expected.extend([joined(2), "after".to_owned()]);
    s.expect(&expected).await;
    c.stop().await;
    s.stop().await;
}
