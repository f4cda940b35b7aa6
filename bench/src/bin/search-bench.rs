//! Log search service benchmark: ingest over HTTP (native NDJSON, as the collector sends it)
//! until every line is searchable, then query latencies, memory and index size.
//!
//! ```sh
//! python3 ../shared/tools/gen_logs.py --lines 1000000 --seed 1 > /tmp/logs.ndjson
//! cargo build --release -p skiff-bench && target/release/search-bench --input /tmp/logs.ndjson
//! ```
//!
//! The input is gen_logs.py's Docker envelope plus metadata; each line becomes one record.

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
    for chunk in lines.chunks(args.batch) {
        let mut body = Vec::new();
        for l in chunk {
            let r = record(l).context("an input line is not gen_logs.py output")?;
            message_bytes += r["message"].as_str().map(str::len).unwrap_or(0) as u64;
            serde_json::to_writer(&mut body, &r)?;
            body.push(b'\n');
        }
        bodies.push(Bytes::from(body));
    }
    let n = lines.len() as u64;
    drop(lines);
    drop(text);

    let dir = tempfile::tempdir()?;
    let config = skiff_search::Config::new(dir.path().to_owned(), "127.0.0.1:0".parse()?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let rss_before = rss_mb();
    let server = skiff_search::start(config, Default::default(), shutdown.clone()).await?;
    let url = format!("http://{}", server.addr);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let started = Instant::now();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let mut tasks = Vec::new();
    for _ in 0..args.senders {
        let (queue, client, url) = (queue.clone(), client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    return anyhow::Ok(());
                };
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

    // Let merges settle, then measure queries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let index = dir_size(&dir.path().join("indexes"));
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
    ];
    for (name, path) in queries {
        let mut times = Vec::new();
        for _ in 0..args.queries {
            let t = Instant::now();
            let req = http::Request::get(format!("{url}{path}")).body(Full::new(Bytes::new()))?;
            let resp = client.request(req).await?;
            anyhow::ensure!(resp.status().is_success(), "{path}: {}", resp.status());
            let _ = resp.into_body().collect().await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
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
