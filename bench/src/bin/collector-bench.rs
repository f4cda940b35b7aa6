//! Log collector benchmark, on gen_logs.py's lines written as CRI log files (one file per
//! container, as the agent writes them):
//!
//! 1. the collector alone: files → batches → a sink that only reads and acknowledges (MiB/s of
//!    file bytes, lines/s, CPU seconds, RSS growth);
//! 2. end to end: files → collector → skiff-search in the same process, until every line is
//!    searchable.
//!
//! ```sh
//! python3 ../shared/tools/gen_logs.py --lines 1000000 --seed 1 > /tmp/logs.ndjson
//! cargo build --release -p skiff-bench --bin collector-bench
//! target/release/collector-bench --input /tmp/logs.ndjson
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::Value;
use skiff_log_collector::metrics::Metrics;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// gen_logs.py output.
    #[arg(long)]
    input: PathBuf,
    /// Skip the end-to-end run.
    #[arg(long)]
    no_search: bool,
}

fn rss_mb() -> f64 {
    proc_status("VmRSS:") / 1024.0
}

fn proc_status(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// CPU seconds this process used (user + system).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Write the input as CRI files under `pods`; returns lines and bytes written.
fn write_files(input: &Path, pods: &Path) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(input).context("reading the input")?;
    let mut files: HashMap<(String, String, String), std::io::BufWriter<std::fs::File>> =
        HashMap::new();
    let (mut lines, mut bytes) = (0u64, 0u64);
    for l in text.lines() {
        let v: Value = serde_json::from_str(l)?;
        let s = |k: &str| v[k].as_str().unwrap_or("x").to_owned();
        let key = (s("namespace"), s("pod"), s("container"));
        let f = match files.get_mut(&key) {
            Some(f) => f,
            None => {
                let dir = pods
                    .join(format!("{}_{}_uid-{}", key.0, key.1, key.1))
                    .join(&key.2);
                std::fs::create_dir_all(&dir)?;
                let f = std::io::BufWriter::new(std::fs::File::create(dir.join("0.log"))?);
                files.entry(key.clone()).or_insert(f)
            }
        };
        let msg = v["log"].as_str().unwrap_or("").trim_end_matches('\n');
        let record = format!("{} {} F {msg}\n", s("time"), s("stream"));
        bytes += record.len() as u64;
        lines += 1;
        f.write_all(record.as_bytes())?;
    }
    for f in files.values_mut() {
        f.flush()?;
    }
    Ok((lines, bytes))
}

/// A sink that reads each batch and says yes.
async fn null_sink(received: Arc<AtomicU64>) -> anyhow::Result<String> {
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let received = received.clone();
        async move {
            received.fetch_add(body.len() as u64, Ordering::Relaxed);
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Run the collector over `pods` into `url` until `done()`; returns the elapsed time.
async fn collect(
    pods: &Path,
    url: &str,
    mut done: impl FnMut(&Metrics) -> bool,
) -> anyhow::Result<Duration> {
    let data = tempfile::tempdir()?;
    let config = skiff_log_collector::Config::new(
        pods.to_owned(),
        data.path().to_owned(),
        "bench-node".into(),
        url.to_owned(),
    );
    let metrics = Metrics::default();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(skiff_log_collector::run(
        config,
        None,
        metrics.clone(),
        shutdown.clone(),
    ));
    while !done(&metrics) {
        anyhow::ensure!(!task.is_finished(), "the collector stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    task.await??;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let pods = tmp.path().join("pods");
    let (n, bytes) = write_files(&args.input, &pods)?;
    println!(
        "{n} lines in CRI files: {:.1} MiB",
        bytes as f64 / 1024.0 / 1024.0
    );

    let received = Arc::new(AtomicU64::new(0));
    let url = null_sink(received.clone()).await?;
    let rss_before = rss_mb();
    let cpu_before = cpu_secs();
    let mut peak = rss_before;
    let elapsed = collect(&pods, &url, |m| {
        peak = peak.max(rss_mb());
        m.lines_shipped.get() >= n
    })
    .await?;
    let secs = elapsed.as_secs_f64();
    println!(
        "collector alone → null sink: {secs:.2} s → {:.1} MiB/s of files, {:.0} lines/s, {:.2} CPU-s ({:.2} cores), RSS +{:.0} MB (peak {:.0} MB), {:.1} MiB of batches sent",
        bytes as f64 / 1024.0 / 1024.0 / secs,
        n as f64 / secs,
        cpu_secs() - cpu_before,
        (cpu_secs() - cpu_before) / secs,
        peak - rss_before,
        peak,
        received.load(Ordering::Relaxed) as f64 / 1024.0 / 1024.0
    );

    if args.no_search {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let config = skiff_search::Config::new(dir.path().to_owned(), "127.0.0.1:0".parse()?);
    let shutdown = CancellationToken::new();
    let server = skiff_search::start(config, Default::default(), shutdown.clone()).await?;
    let pipeline = server.pipeline.clone();
    let cpu_before = cpu_secs();
    let elapsed = collect(&pods, &format!("http://{}", server.addr), |_| {
        pipeline
            .store
            .days()
            .iter()
            .map(|d| d.searcher().num_docs())
            .sum::<u64>()
            >= n
    })
    .await?;
    let secs = elapsed.as_secs_f64();
    println!(
        "files → collector → skiff-search, until all searchable: {secs:.2} s → {:.0} lines/s, {:.1} MiB/s of files, {:.2} CPU-s",
        n as f64 / secs,
        bytes as f64 / 1024.0 / 1024.0 / secs,
        cpu_secs() - cpu_before
    );
    shutdown.cancel();
    server.wait().await;
    Ok(())
}
