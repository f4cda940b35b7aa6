//! Log search service benchmark: ingest over HTTP (native NDJSON, as the collector sends it)
//! until every line is searchable, then query latencies, memory and index size.
//!
//! ```sh
//! python3 ../shared/tools/gen_logs.py --lines 1000000 --seed 1 > /tmp/logs.ndjson
//! cargo build --release -p skiff-bench && target/release/search-bench --input /tmp/logs.ndjson
//! ```
//!
//! The input is gen_logs.py's Docker envelope plus metadata; each line becomes one record. It
//! is streamed, so a set larger than memory can come from a pipe, and the index can be kept
//! to query again:
//!
//! ```sh
//! python3 ../shared/tools/gen_logs.py --lines 100000000 --rate 1160 --seed 1 |
//!   target/release/search-bench --input - --no-peers --data-dir /var/tmp/logs-100m
//! target/release/search-bench --data-dir /var/tmp/logs-100m   # the queries again, no ingest
//! ```
//!
//! Two peers run on the same data in the same process: bare tantivy bulk indexing (the
//! reference's fixed schema, no write-ahead log, no HTTP, one commit at the end) and grep over
//! zstd-compressed `ts + message` text (Loki's model: no content index, chunks scanned).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// gen_logs.py output; `-` reads standard input (then --no-peers). Repeatable. Without
    /// it only the queries run, over the index already in --data-dir.
    #[arg(long)]
    input: Vec<PathBuf>,
    /// Keep the service's data here instead of in a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Lines per ingest request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Queries of each kind.
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Skip the bare tantivy and grep peers.
    #[arg(long)]
    no_peers: bool,
    /// Send at this many lines/s instead of as fast as acknowledged (time-to-searchable below
    /// saturation).
    #[arg(long)]
    rate: Option<f64>,
}

/// Quantile `q` of a Prometheus histogram in `text` as the upper bound of the bucket that
/// reaches it (`+Inf` reads as infinity).
fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    (total > 0.0).then_some(())?;
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

/// Bare tantivy: the reference peer's schema, one writer thread with the service's budget,
/// documents added straight from the records and one commit. Returns docs/s and index bytes.
fn tantivy_peer(records: &[Value]) -> anyhow::Result<(f64, u64)> {
    use tantivy::schema::{FAST, STORED, STRING, Schema, TEXT};
    let dir = tempfile::tempdir()?;
    let mut b = Schema::builder();
    let ts = b.add_date_field(
        "ts",
        tantivy::schema::DateOptions::from(STORED)
            .set_fast()
            .set_precision(tantivy::schema::DateTimePrecision::Nanoseconds),
    );
    let labels: Vec<_> = ["namespace", "pod", "container", "node", "app", "stream"]
        .iter()
        .map(|n| (*n, b.add_text_field(n, STRING | FAST | STORED)))
        .collect();
    let message = b.add_text_field("message", TEXT | STORED);
    let index = tantivy::Index::create_in_dir(dir.path(), b.build())?;
    let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 64 * 1024 * 1024)?;
    let started = Instant::now();
    for r in records {
        let mut doc = tantivy::TantivyDocument::new();
        let ns = r["ts"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_nanosecond() as i64)
            .unwrap_or(0);
        doc.add_date(ts, tantivy::DateTime::from_timestamp_nanos(ns));
        for (name, field) in &labels {
            let v = if *name == "app" {
                &r["labels"]["app"]
            } else {
                &r[*name]
            };
            if let Some(v) = v.as_str() {
                doc.add_text(*field, v);
            }
        }
        doc.add_text(message, r["message"].as_str().unwrap_or(""));
        writer.add_document(doc)?;
    }
    writer.commit()?;
    let secs = started.elapsed().as_secs_f64();
    drop(writer);
    Ok((records.len() as f64 / secs, dir_size(dir.path())))
}

/// Grep over zstd chunks (1 MiB of `ts message` lines each, level 3): compression ratio and
/// the time to decompress everything and count lines containing `needle`.
fn grep_peer(records: &[Value], needle: &str) -> anyhow::Result<(u64, u64, f64, usize)> {
    let mut raw = 0u64;
    let mut chunks = Vec::new();
    let mut chunk = Vec::with_capacity(1 << 20);
    for r in records {
        chunk.extend_from_slice(r["ts"].as_str().unwrap_or("").as_bytes());
        chunk.push(b' ');
        chunk.extend_from_slice(r["message"].as_str().unwrap_or("").as_bytes());
        chunk.push(b'\n');
        if chunk.len() >= 1 << 20 {
            raw += chunk.len() as u64;
            chunks.push(zstd::encode_all(chunk.as_slice(), 3)?);
            chunk.clear();
        }
    }
    raw += chunk.len() as u64;
    chunks.push(zstd::encode_all(chunk.as_slice(), 3)?);
    let compressed: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let started = Instant::now();
    let mut hits = 0;
    for c in &chunks {
        let text = zstd::decode_all(c.as_slice())?;
        hits += text
            .split(|b| *b == b'\n')
            .filter(|l| l.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .count();
    }
    Ok((raw, compressed, started.elapsed().as_secs_f64(), hits))
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(p) {
        for e in entries.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// Bytes per file extension under `p` (tantivy: idx postings, pos positions, term dictionary,
/// store documents, fast columns, fieldnorm).
fn extension_sizes(p: &std::path::Path, out: &mut std::collections::BTreeMap<String, u64>) {
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        match e.metadata() {
            Ok(m) if m.is_dir() => extension_sizes(&path, out),
            Ok(m) => {
                let ext = path
                    .extension()
                    .map(|x| x.to_string_lossy().into_owned())
                    .unwrap_or_default();
                *out.entry(ext).or_default() += m.len();
            }
            Err(_) => {}
        }
    }
}

/// gen_logs.py's envelope → the native record.
fn record(line: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(line).ok()?;
    Some(json!({
        "ts": v["time"], "message": v["log"].as_str()?.trim_end_matches('\n'),
        "stream": v["stream"], "namespace": v["namespace"], "pod": v["pod"],
        "container": v["container"], "node": v["node"], "labels": {"app": v["app"]},
    }))
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The lines of every input in turn; `-` is standard input.
fn input_lines(paths: &[PathBuf]) -> impl Iterator<Item = std::io::Result<String>> + '_ {
    paths.iter().flat_map(|p| {
        let reader: Box<dyn BufRead> = if p == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            match std::fs::File::open(p) {
                Ok(f) => Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
                Err(e) => return Box::new(std::iter::once(Err(e))) as Box<dyn Iterator<Item = _>>,
            }
        };
        Box::new(reader.lines())
    })
}

/// What the input held, counted as it is read.
#[derive(Default)]
struct Totals {
    lines: AtomicU64,
    envelope_bytes: AtomicU64,
    message_bytes: AtomicU64,
}

fn run_peers(paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut records = Vec::new();
    let mut envelope_bytes = 0;
    for line in input_lines(paths) {
        let line = line?;
        envelope_bytes += line.len() as u64 + 1;
        records.push(record(&line).context("an input line is not gen_logs.py output")?);
    }
    let (rate, size) = tantivy_peer(&records)?;
    println!(
        "peer, bare tantivy (1 thread, 64 MB, one commit): {rate:.0} docs/s, index {:.1} MB = {:.2} of the envelope",
        size as f64 / 1e6,
        size as f64 / envelope_bytes as f64
    );
    let (raw, compressed, secs, hits) = grep_peer(&records, "timeout")?;
    println!(
        "peer, grep over zstd-3 chunks: {:.1} MB of text → {:.1} MB ({:.2} of the envelope); decompress + count \"timeout\" over all: {:.0} ms ({hits} lines, {:.0} MB/s of text)",
        raw as f64 / 1e6,
        compressed as f64 / 1e6,
        compressed as f64 / envelope_bytes as f64,
        secs * 1000.0,
        raw as f64 / 1e6 / secs
    );
    Ok(())
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Streams the input to the service in batches, `senders` requests in flight (paced with
/// --rate), and waits until every line is searchable. Returns what was sent.
async fn ingest(
    args: &Args,
    client: &HttpClient,
    url: &str,
    pipeline: &skiff_search::pipeline::Pipeline,
) -> anyhow::Result<Arc<Totals>> {
    let totals = Arc::new(Totals::default());
    let already: u64 = pipeline
        .store
        .days()
        .iter()
        .map(|d| d.searcher().num_docs())
        .sum();
    // A reader thread turns lines into request bodies a few batches ahead of the senders.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let reader = {
        let (paths, batch, totals) = (args.input.clone(), args.batch, totals.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut body = Vec::new();
            let mut in_body = 0;
            for line in input_lines(&paths) {
                let line = line?;
                let r = record(&line).context("an input line is not gen_logs.py output")?;
                totals.lines.fetch_add(1, Ordering::Relaxed);
                totals
                    .envelope_bytes
                    .fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                let message = r["message"].as_str().map(str::len).unwrap_or(0);
                totals
                    .message_bytes
                    .fetch_add(message as u64, Ordering::Relaxed);
                serde_json::to_writer(&mut body, &r)?;
                body.push(b'\n');
                in_body += 1;
                if in_body == batch {
                    in_body = 0;
                    if tx
                        .blocking_send(Bytes::from(std::mem::take(&mut body)))
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            if in_body > 0 {
                let _ = tx.blocking_send(Bytes::from(body));
            }
            Ok(())
        })
    };
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // With --rate, request k leaves at k × batch / rate seconds.
    let pace = args
        .rate
        .map(|r| Duration::from_secs_f64(args.batch as f64 / r.max(1.0)));
    let mut tasks = Vec::new();
    for _ in 0..args.senders {
        let (rx, sent, client, url) = (rx.clone(), sent.clone(), client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = rx.lock().await.recv().await else {
                    return anyhow::Ok(());
                };
                let k = sent.fetch_add(1, Ordering::Relaxed);
                if let Some(pace) = pace {
                    tokio::time::sleep_until((started + pace * k as u32).into()).await;
                }
                loop {
                    let req = http::Request::post(format!("{url}/api/v1/ingest"))
                        .body(Full::new(body.clone()))?;
                    let resp = client.request(req).await?;
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    if status.is_success() {
                        break;
                    }
                    anyhow::ensure!(status.as_u16() == 429, "ingest answered {status}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let acked = started.elapsed();
    let n = totals.lines.load(Ordering::Relaxed);
    while pipeline
        .store
        .days()
        .iter()
        .map(|d| d.searcher().num_docs())
        .sum::<u64>()
        < already + n
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let envelope = totals.envelope_bytes.load(Ordering::Relaxed) as f64;
    println!(
        "lines: {n}, envelope {:.1} MB, messages {:.1} MB",
        envelope / 1e6,
        totals.message_bytes.load(Ordering::Relaxed) as f64 / 1e6
    );
    println!(
        "ingest over HTTP until searchable: {secs:.2} s → {:.0} lines/s, {:.1} MB/s of envelope (all acknowledged after {:.2} s)",
        n as f64 / secs,
        envelope / 1e6 / secs,
        acked.as_secs_f64()
    );
    Ok(totals)
}

async fn get(client: &HttpClient, url: String) -> anyhow::Result<Bytes> {
    let req = http::Request::get(&url).body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await?;
    anyhow::ensure!(resp.status().is_success(), "{url}: {}", resp.status());
    Ok(resp.into_body().collect().await?.to_bytes())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.input.is_empty() || args.data_dir.is_some(),
        "give --input, or --data-dir holding an index to query"
    );
    if !args.no_peers && !args.input.is_empty() {
        anyhow::ensure!(
            args.input.iter().all(|p| p.is_file()),
            "the peers read the input before the service does: give files, or --no-peers"
        );
        run_peers(&args.input)?;
    }

    let temp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    let mut config = skiff_search::Config::new(dir.clone(), "127.0.0.1:0".parse()?);
    // gen_logs.py writes lines of a fixed past day, which the default retention (7 days)
    // deletes within a minute of a long run.
    config.retention_days = 36_500;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let rss_before = rss_mb();
    let server = skiff_search::start(config, Default::default(), shutdown.clone()).await?;
    let url = format!("http://{}", server.addr);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let totals = if args.input.is_empty() {
        None
    } else {
        let totals = ingest(&args, &client, &url, &server.pipeline).await?;
        println!(
            "RSS of the process (service + bench client) {:.0} MB (before start {:.0} MB)",
            rss_mb(),
            rss_before
        );
        // Time to searchable per line, from the service's own histogram (acknowledged → the
        // commit that makes the line searchable), at bucket resolution.
        let metrics = get(&client, format!("{url}/metrics")).await?;
        let metrics = String::from_utf8_lossy(&metrics);
        let name = "skiff_search_time_to_searchable_seconds";
        println!(
            "time to searchable per line (acknowledged → committed{}): p50 ≤ {} s, p99 ≤ {} s, max bucket ≤ {} s",
            args.rate
                .map(|r| format!(", sent at {r:.0} lines/s"))
                .unwrap_or_else(|| ", sent as fast as acknowledged".into()),
            histogram_quantile(&metrics, name, 0.5).unwrap_or(f64::NAN),
            histogram_quantile(&metrics, name, 0.99).unwrap_or(f64::NAN),
            histogram_quantile(&metrics, name, 1.0).unwrap_or(f64::NAN),
        );
        settle(&server.pipeline).await;
        Some(totals)
    };

    let index = dir_size(&dir.join("indexes"));
    let mut by_kind: std::collections::BTreeMap<String, u64> = Default::default();
    extension_sizes(&dir.join("indexes"), &mut by_kind);
    let parts: Vec<String> = by_kind
        .iter()
        .filter(|(_, b)| **b > 100_000)
        .map(|(k, b)| format!("{k} {:.1} MB", *b as f64 / 1e6))
        .collect();
    println!("index files by kind: {}", parts.join(", "));
    let docs: u64 = (server.pipeline.store.days().iter())
        .map(|d| d.searcher().num_docs())
        .sum();
    match &totals {
        Some(t) => {
            let envelope = t.envelope_bytes.load(Ordering::Relaxed) as f64;
            let messages = t.message_bytes.load(Ordering::Relaxed) as f64;
            println!(
                "index size {:.1} MB for {docs} lines = {:.3} of the envelope, {:.2} of the message bytes",
                index as f64 / 1e6,
                index as f64 / envelope,
                index as f64 / messages
            );
        }
        None => println!("index size {:.1} MB for {docs} lines", index as f64 / 1e6),
    }
    print_space_usage(&server.pipeline)?;
    let waited = rollups_built(&server.pipeline.store).await;
    println!(
        "rollups (per-minute counts of big segments) built after {waited:.1} s, {} entries",
        server.pipeline.store.rollups.entries()
    );
    run_queries(&args, &client, &url, &server.pipeline.store).await?;
    shutdown.cancel();
    server.wait().await;
    Ok(())
}

/// Waits until merges settle (the same segments for 5 s, at most 2 minutes), so the index is
/// measured and queried at rest.
async fn settle(pipeline: &skiff_search::pipeline::Pipeline) {
    let segments = || -> Vec<_> {
        (pipeline.store.days().iter())
            .flat_map(|d| {
                d.searcher()
                    .segment_readers()
                    .iter()
                    .map(|r| r.segment_id())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let started = Instant::now();
    let (mut last, mut since) = (segments(), Instant::now());
    while since.elapsed() < Duration::from_secs(5) && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = segments();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    println!(
        "merges settled after {:.1} s: {} segments",
        started.elapsed().as_secs_f64(),
        last.len()
    );
}

/// Bytes per field and part (term dictionary, postings, positions, column), over every day
/// and segment, biggest first: where the index size goes.
fn print_space_usage(pipeline: &skiff_search::pipeline::Pipeline) -> anyhow::Result<()> {
    let mut parts: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    let mut store = 0u64;
    for day in pipeline.store.days().iter() {
        let usage = day.searcher().space_usage()?;
        for segment in usage.segments() {
            store += segment.store().total().get_bytes();
            let kinds = [
                ("term", segment.termdict()),
                ("postings", segment.postings()),
                ("positions", segment.positions()),
                ("column", segment.fast_fields()),
            ];
            for (kind, per_field) in kinds {
                for f in per_field.fields() {
                    *parts.entry((f.field_name().to_owned(), kind)).or_default() +=
                        f.total().get_bytes();
                }
            }
        }
    }
    let mut parts: Vec<_> = parts.into_iter().filter(|(_, b)| *b >= 200_000).collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.1));
    let list: Vec<String> = std::iter::once(format!("store {:.1}", store as f64 / 1e6))
        .chain(
            (parts.iter())
                .map(|((field, kind), b)| format!("{field} {kind} {:.1}", *b as f64 / 1e6)),
        )
        .collect();
    println!("index MB by field and part: {}", list.join(", "));
    Ok(())
}

/// Waits (at most 10 minutes) until the service has built the rollups its queries asked for;
/// returns the seconds waited.
async fn rollups_built(store: &skiff_search::store::Store) -> f64 {
    let started = Instant::now();
    while store.rollups.pending(store) > 0 && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    started.elapsed().as_secs_f64()
}

/// Runs each query once, waits for the rollups that query asked for, then runs it
/// `args.queries` times: the first figure is what a new query costs, the others what a
/// dashboard repeating it sees.
async fn run_queries(
    args: &Args,
    client: &HttpClient,
    url: &str,
    store: &skiff_search::store::Store,
) -> anyhow::Result<()> {
    let range = "start=2026-11-25T00:00:00Z&end=2026-11-28T00:00:00Z";
    let queries = [
        (
            "newest 100 with term + namespace",
            format!("/api/v1/search?{range}&query=timeout&namespace=team-alpha&limit=100"),
        ),
        (
            "newest 100, namespace only",
            format!("/api/v1/search?{range}&namespace=team-alpha&limit=100"),
        ),
        (
            "phrase \"payment declined\", newest 100",
            format!("/api/v1/search?{range}&query=%22payment%20declined%22&limit=100"),
        ),
        (
            "histogram over the whole range, 1 m buckets, split by level",
            format!("/api/v1/histogram?{range}&interval=1m&split=level"),
        ),
        (
            "24 h histogram, ends not on a minute (as since=24h), default interval, by level",
            "/api/v1/histogram?start=2026-11-26T00:00:07.5Z&end=2026-11-27T00:00:03.25Z&split=level".to_owned(),
        ),
        (
            "label values (pod)",
            format!("/api/v1/labels/pod/values?{range}"),
        ),
        (
            "Loki label values (pod)",
            format!("/loki/api/v1/label/pod/values?{range}"),
        ),
        (
            "LogQL newest 100 {namespace=\"team-alpha\"} |= \"timeout\"",
            format!(
                "/loki/api/v1/query_range?{range}&limit=100&query=%7Bnamespace%3D%22team-alpha%22%7D%20%7C%3D%20%22timeout%22"
            ),
        ),
        (
            "LogQL sum by (level) (count_over_time({namespace=~\".+\"}[1m])), whole range",
            format!(
                "/loki/api/v1/query_range?{range}&step=60&query=sum%20by%20(level)%20(count_over_time(%7Bnamespace%3D~%22.%2B%22%7D%5B1m%5D))"
            ),
        ),
        (
            "LogQL sum(count_over_time({namespace=\"team-alpha\"} |= \"timeout\" [1h])), instant",
            "/loki/api/v1/query?time=2026-11-28T00:00:00Z&query=sum(count_over_time(%7Bnamespace%3D%22team-alpha%22%7D%20%7C%3D%20%22timeout%22%5B72h%5D))".to_owned(),
        ),
    ];
    'query: for (name, path) in queries {
        let mut times = Vec::new();
        let mut last = Bytes::new();
        let mut first = None;
        for _ in 0..=args.queries {
            let t = Instant::now();
            last = match get(client, format!("{url}{path}")).await {
                Ok(body) => body,
                // A refused query (say, over the line limit at 100 M lines) is a finding, not
                // the end of the run.
                Err(e) => {
                    println!("{name}: failed: {e:#}");
                    continue 'query;
                }
            };
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if first.is_none() {
                first = Some((ms, rollups_built(store).await));
            } else {
                times.push(ms);
            }
        }
        if std::env::var_os("SEARCH_BENCH_SHOW").is_some() {
            println!(
                "  {}",
                String::from_utf8_lossy(&last[..last.len().min(300)])
            );
        }
        let (first, waited) = first.unwrap_or_default();
        println!(
            "{name}: first {first:.2} ms, then (rollups waited for {waited:.1} s) p50 {:.2} ms, p99 {:.2} ms",
            percentile(times.clone(), 0.5),
            percentile(times, 0.99)
        );
    }
    Ok(())
}
