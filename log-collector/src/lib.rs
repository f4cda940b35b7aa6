//! Skiff's log collector (fluentd's role in the book's EFK chapter, run as a DaemonSet): it
//! follows the container log files of its node and ships every line, at least once, to a sink.
//!
//! A reader thread follows the files and cuts batches; the sender task posts them with retries
//! and backoff; only after the sink acknowledges a batch are the checkpoints it covers saved.
//! The channel between them is small, so a slow sink stops the reading (backpressure) instead
//! of dropping lines or growing memory. Every line carries its source (file identity) and
//! offset, so the sink can drop what a restart re-sends.

pub mod checkpoint;
pub mod metrics;
pub mod parse;
pub mod pods;
pub mod sink;
pub mod tail;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Checkpoint;
use crate::checkpoint::Checkpoints;
use crate::metrics::Metrics;
use crate::pods::PodCache;
use crate::pods::PodInfo;
use crate::sink::{Record, SendError, Sink, SinkKind};
use crate::tail::{TailedLine, Tailer};

#[derive(Debug, Clone)]
pub struct Config {
    /// The pod log directory (`/var/log/pods`).
    pub pods_dir: PathBuf,
    /// Where the checkpoints are kept.
    pub data_dir: PathBuf,
    /// This node's name (in every record and in the idempotency source).
    pub node: String,
    pub sink: SinkKind,
    pub sink_url: String,
    /// A bearer token for the sink.
    pub sink_token: Option<String>,
    pub batch_lines: usize,
    pub batch_bytes: usize,
    /// A batch with lines in it is sent after at most this long.
    pub flush_interval: Duration,
    /// How often files are checked for new bytes when idle.
    pub poll_interval: Duration,
    /// How often the directory is scanned for new, rotated, deleted files.
    pub scan_interval: Duration,
    /// Join lines matching this into the record before them (stack traces).
    pub multiline: Option<parse::Multiline>,
    /// Skiff's own component logs (`/var/log/skiff`), shipped with a `component` label.
    pub component_dir: Option<PathBuf>,
}

impl Config {
    pub fn new(pods_dir: PathBuf, data_dir: PathBuf, node: String, sink_url: String) -> Config {
        Config {
            pods_dir,
            data_dir,
            node,
            sink: SinkKind::Search,
            sink_url,
            sink_token: None,
            batch_lines: 2000,
            batch_bytes: 1024 * 1024,
            flush_interval: Duration::from_millis(200),
            poll_interval: Duration::from_millis(100),
            scan_interval: Duration::from_secs(1),
            multiline: None,
            component_dir: None,
        }
    }
}

/// A batch on its way: the encoded records and the checkpoints to save once it is acknowledged.
struct Batch {
    body: Bytes,
    lines: usize,
    bytes: usize,
    marks: Vec<Checkpoint>,
}

/// Follow and ship until `shutdown`. With a `client`, records get their pod's labels and
/// controller from a watch of this node's pods.
pub async fn run(
    config: Config,
    client: Option<kube::Client>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let checkpoints = Checkpoints::load(&config.data_dir.join("checkpoints.json"))?;
    tracing::info!(
        pods_dir = %config.pods_dir.display(),
        sink = %config.sink_url,
        files = checkpoints.len(),
        "log collector started"
    );
    let pods = PodCache::default();
    let watch = client.map(|client| {
        tokio::spawn(crate::pods::watch(
            client,
            config.node.clone(),
            pods.clone(),
            shutdown.clone(),
        ))
    });
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(2);
    let (ack_tx, ack_rx) = std_mpsc::channel::<Vec<Checkpoint>>();
    let reader = {
        let config = config.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("log-reader".into())
            .spawn(move || {
                reader(
                    config,
                    checkpoints,
                    pods,
                    batch_tx,
                    ack_rx,
                    metrics,
                    shutdown,
                )
            })?
    };
    sender(
        Sink::new(config.sink, &config.sink_url, config.sink_token.clone()),
        batch_rx,
        ack_tx,
        metrics,
        shutdown,
    )
    .await;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the log reader panicked"))??;
    if let Some(w) = watch {
        let _ = w.await;
    }
    tracing::info!("log collector stopped");
    Ok(())
}

/// The reader thread: scan, read, cut batches, save acknowledged checkpoints.
fn reader(
    config: Config,
    checkpoints: Checkpoints,
    pods: PodCache,
    batches: mpsc::Sender<Batch>,
    acks: std_mpsc::Receiver<Vec<Checkpoint>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let span = tracing::info_span!("log_reader");
    let _enter = span.enter();
    let mut tailer = Tailer::new(config.pods_dir.clone(), config.node.clone(), checkpoints);
    tailer.multiline = config.multiline.clone();
    tailer.component_dir = config.component_dir.clone();
    let mut last_scan: Option<Instant> = None;
    let mut pending: Vec<TailedLine> = Vec::new();
    let mut pending_since: Option<Instant> = None;
    let mut scan_failures = 0u32;
    loop {
        // Save what the sink acknowledged.
        let mut acked = false;
        while let Ok(marks) = acks.try_recv() {
            for c in marks {
                tailer.checkpoints.set(c);
            }
            acked = true;
        }
        if acked {
            match tailer.checkpoints.save() {
                Ok(()) => metrics.checkpoint_saved(),
                Err(e) => tracing::warn!(error = %e, "saving checkpoints"),
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        if last_scan.is_none_or(|t| t.elapsed() >= config.scan_interval) {
            match tailer.scan() {
                Ok(()) => scan_failures = 0,
                Err(e) => {
                    scan_failures += 1;
                    metrics.error("scan");
                    tracing::warn!(error = %e, failures = scan_failures, "scanning log files");
                }
            }
            last_scan = Some(Instant::now());
            metrics.files.set(tailer.files() as i64);
            metrics.set_lag(&tailer.lag());
        }
        let round = match tailer.read() {
            Ok(r) => r,
            Err(e) => {
                metrics.error("read");
                tracing::warn!(error = %e, "reading log files");
                std::thread::sleep(
                    config.poll_interval * 2u32.saturating_pow(scan_failures.min(5)),
                );
                continue;
            }
        };
        metrics.read_bytes.inc_by(round.bytes_read);
        metrics.lines_read.inc_by(round.lines.len() as u64);
        if !round.lines.is_empty() && pending.is_empty() {
            pending_since = Some(Instant::now());
        }
        pending.extend(round.lines);
        // Cut full batches; then a partial one when it has waited long enough.
        loop {
            let (n, bytes) = batch_extent(&pending, config.batch_lines, config.batch_bytes);
            let full = n < pending.len() || n >= config.batch_lines || bytes >= config.batch_bytes;
            let due = pending_since.is_some_and(|t| t.elapsed() >= config.flush_interval);
            if n == 0 || !(full || due) {
                break;
            }
            let rest = pending.split_off(n);
            let marks = tailer.marks(&rest);
            let batch = encode(config.sink, &pending, &config.node, &pods, marks);
            pending = rest;
            pending_since = (!pending.is_empty()).then(Instant::now);
            // Blocks while the sender is behind: backpressure, nothing more is read.
            if batches.blocking_send(batch).is_err() {
                return Ok(());
            }
        }
        if round.bytes_read == 0 {
            std::thread::sleep(config.poll_interval);
        }
    }
    Ok(())
}

/// How many of `lines` fit in one batch, and their message bytes.
fn batch_extent(lines: &[TailedLine], max_lines: usize, max_bytes: usize) -> (usize, usize) {
    let mut bytes = 0;
    for (i, l) in lines.iter().enumerate() {
        if i >= max_lines || (i > 0 && bytes + l.line.message.len() > max_bytes) {
            return (i, bytes);
        }
        bytes += l.line.message.len();
    }
    (lines.len(), bytes)
}

/// The records of `lines`, encoded for the sink.
fn encode(
    sink: SinkKind,
    lines: &[TailedLine],
    node: &str,
    pods: &PodCache,
    marks: Vec<Checkpoint>,
) -> Batch {
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    // One cache lookup per pod, not per line.
    let mut infos: HashMap<&str, Option<Arc<PodInfo>>> = HashMap::new();
    for l in lines {
        if l.meta.component.is_none() {
            infos
                .entry(l.meta.pod_uid.as_str())
                .or_insert_with(|| pods.get(&l.meta.pod_uid));
        }
    }
    let mut bytes = 0;
    let records: Vec<Record<'_>> = lines
        .iter()
        .map(|l| {
            bytes += l.line.message.len();
            let mut r = Record {
                ts: l.line.ts.unwrap_or(now),
                message: &l.line.message,
                stream: l.line.stream.as_str(),
                node,
                source: &l.source,
                offset: l.line.end,
                ..Record::default()
            };
            if let Some(component) = &l.meta.component {
                r.component = Some(component);
                return r;
            }
            r.namespace = Some(&l.meta.namespace);
            r.pod = Some(&l.meta.pod);
            r.pod_uid = Some(&l.meta.pod_uid);
            r.container = Some(&l.meta.container);
            if let Some(Some(pod)) = infos.get(l.meta.pod_uid.as_str()) {
                r.labels = Some(&pod.labels);
                if let (Some(kind), Some(name)) = (&pod.owner_kind, &pod.owner_name) {
                    r.owner_kind = Some(kind);
                    r.owner_name = Some(name);
                }
            }
            r
        })
        .collect();
    Batch {
        body: sink.encode(&records),
        lines: lines.len(),
        bytes,
        marks,
    }
}

/// Retry delays: 250 ms doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(1u32 << failures.min(7))
        .min(Duration::from_secs(30))
}

/// The sender task: post batches in order, retrying until acknowledged.
async fn sender(
    sink: Sink,
    mut batches: mpsc::Receiver<Batch>,
    acks: std_mpsc::Sender<Vec<Checkpoint>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    while let Some(batch) = batches.recv().await {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            match sink.send(batch.body.clone()).await {
                Ok(refused) => {
                    metrics
                        .send_duration
                        .observe(started.elapsed().as_secs_f64());
                    if refused > 0 {
                        metrics.error("refused");
                        metrics.dropped_lines.inc_by(refused as u64);
                    }
                    metrics
                        .lines_shipped
                        .inc_by(batch.lines.saturating_sub(refused) as u64);
                    metrics.shipped_bytes.inc_by(batch.bytes as u64);
                    let _ = acks.send(batch.marks);
                    break;
                }
                Err(SendError::Refused(msg)) => {
                    // Promtail's rule: a 4xx other than 429 is not retried.
                    metrics.error("refused");
                    metrics.dropped_lines.inc_by(batch.lines as u64);
                    tracing::error!(error = %msg, lines = batch.lines, "the sink refused a batch; skipping it");
                    let _ = acks.send(batch.marks);
                    break;
                }
                Err(SendError::Retry(msg)) => {
                    metrics.error("send");
                    let delay = backoff(failures);
                    failures += 1;
                    tracing::warn!(error = %msg, retry_in = ?delay, failures, "sending a batch failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // Unacknowledged lines are read again after a restart.
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}
