//! Log search service benchmark: ingest over HTTP (native NDJSON, as the collector sends it)
//! until every line is searchable, then query latencies, memory and index size.
//!
//! ```sh
//! python3 ../shared/tools/gen_logs.py --lines 1000000 --seed 1 > /tmp/logs.ndjson
//! cargo build --release -p skiff-bench && target/release/search-bench --input /tmp/logs.ndjson
//! ```
//!
//! The input is gen_logs.py's Docker envelope plus metadata; each line becomes one record.
//!
//! Two peers run on the same data in the same process: bare tantivy bulk indexing (the
//! reference's fixed schema, no write-ahead log, no HTTP, one commit at the end) and grep over
//! zstd-compressed `ts + message` text (Loki's model: no content index, chunks scanned).

use std::path::PathBuf;
use std::sync::Arc;
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
    /// gen_logs.py output.
    #[arg(long)]
    input: PathBuf,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.input).context("reading the input")?;
    let envelope_bytes = text.len() as u64;
    let lines: Vec<&str> = text.lines().collect();
    let mut bodies = Vec::new();
    let mut message_bytes = 0u64;
    let mut records = Vec::with_capacity(lines.len());
    for l in &lines {
        let r = record(l).context("an input line is not gen_logs.py output")?;
        message_bytes += r["message"].as_str().map(str::len).unwrap_or(0) as u64;
        records.push(r);
    }
    for chunk in records.chunks(args.batch) {
        let mut body = Vec::new();
        for r in chunk {
            serde_json::to_writer(&mut body, r)?;
            body.push(b'\n');
        }
        bodies.push(Bytes::from(body));
    }
    let n = lines.len() as u64;
    drop(lines);
    drop(text);
    if !args.no_peers {
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
    }
    drop(records);

    let dir = tempfile::tempdir()?;
    let config = skiff_search::Config::new(dir.path().to_owned(), "127.0.0.1:0".parse()?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let rss_before = rss_mb();
    let server = skiff_search::start(config, Default::default(), shutdown.clone()).await?;
    let url = format!("http://{}", server.addr);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let started = Instant::now();
    let total_bodies = bodies.len();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    // With --rate, request k leaves at k × batch / rate seconds.
    let pace = args
        .rate
        .map(|r| Duration::from_secs_f64(args.batch as f64 / r.max(1.0)));
    let mut tasks = Vec::new();
    for _ in 0..args.senders {
        let (queue, client, url) = (queue.clone(), client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((k, body)) = ({
                    let mut q = queue.lock().unwrap();
                    let left = q.len();
                    q.pop().map(|b| (total_bodies - left, b))
                }) else {
                    return anyhow::Ok(());
                };
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
    let acked = started.elapsed();
    let pipeline = server.pipeline.clone();
    while pipeline
        .store
        .days()
        .iter()
        .map(|d| d.searcher().num_docs())
        .sum::<u64>()
        < n
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let searchable = started.elapsed();
    let peak_rss = rss_mb();
    let secs = searchable.as_secs_f64();
    println!(
        "lines: {n}, envelope {:.1} MB, messages {:.1} MB",
        envelope_bytes as f64 / 1e6,
        message_bytes as f64 / 1e6
    );
    println!(
        "ingest over HTTP until searchable: {:.2} s → {:.0} lines/s, {:.1} MB/s of envelope (all acknowledged after {:.2} s)",
        secs,
        n as f64 / secs,
        envelope_bytes as f64 / 1e6 / secs,
        acked.as_secs_f64()
    );
    println!(
        "RSS of the process (service + bench client) {:.0} MB (before start {:.0} MB)",
        peak_rss, rss_before
    );
    // Time to searchable per line, from the service's own histogram (acknowledged → the commit
    // that makes the line searchable), at bucket resolution.
    let req = http::Request::get(format!("{url}/metrics")).body(Full::new(Bytes::new()))?;
    let metrics = client
        .request(req)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
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

    // Let merges settle, then measure queries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let index = dir_size(&dir.path().join("indexes"));
    let mut by_kind: std::collections::BTreeMap<String, u64> = Default::default();
    extension_sizes(&dir.path().join("indexes"), &mut by_kind);
    let parts: Vec<String> = by_kind
        .iter()
        .filter(|(_, b)| **b > 100_000)
        .map(|(k, b)| format!("{k} {:.1} MB", *b as f64 / 1e6))
        .collect();
    println!("index files by kind: {}", parts.join(", "));
    println!(
        "index size {:.1} MB = {:.2} of the envelope, {:.2} of the message bytes",
        index as f64 / 1e6,
        index as f64 / envelope_bytes as f64,
        index as f64 / message_bytes as f64
    );
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
    for (name, path) in queries {
        let mut times = Vec::new();
        let mut last = Bytes::new();
        for _ in 0..args.queries {
            let t = Instant::now();
            let req = http::Request::get(format!("{url}{path}")).body(Full::new(Bytes::new()))?;
            let resp = client.request(req).await?;
            anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
            last = resp.into_body().collect().await?.to_bytes();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        if std::env::var_os("SEARCH_BENCH_SHOW").is_some() {
            println!(
                "  {}",
                String::from_utf8_lossy(&last[..last.len().min(300)])
            );
        }
        println!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms",
            percentile(times.clone(), 0.5),
            percentile(times, 0.99)
        );
    }
    shutdown.cancel();
    server.wait().await;
    Ok(())
}
