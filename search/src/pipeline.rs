//! The ingest path: deduplicate, append to the write-ahead log and fsync (then the batch is
//! acknowledged), hand to the indexer thread, publish to live tails. The indexer adds documents
//! to the day indexes and commits every `commit_interval`, after which the log is trimmed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::dedup::Marks;
use crate::metrics::Metrics;
use crate::record::{LogRecord, RecordError};
use crate::store::{self, Day, Store};
use crate::wal::{Batch, Wal};

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("record {index}: {source}")]
    Invalid { index: usize, source: RecordError },
    #[error("the indexer is {0} batches behind; retry later")]
    Busy(usize),
    #[error("the write-ahead log could not be written: {0}")]
    Io(#[from] std::io::Error),
}

/// What happened to an accepted batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ingested {
    pub accepted: usize,
    pub duplicates: usize,
    pub truncated: usize,
}

/// Records published to live tails, with their sequence numbers.
pub type TailBatch = Arc<Vec<(u64, LogRecord)>>;

pub struct PipelineConfig {
    pub commit_interval: Duration,
    pub max_line_bytes: usize,
    /// Batches acknowledged but not yet indexed before ingest answers "busy".
    pub max_queued_batches: usize,
}

struct State {
    wal: Wal,
    marks: Marks,
}

pub struct Pipeline {
    state: Mutex<State>,
    /// Batches with the time they were acknowledged (for time-to-searchable).
    to_indexer: Mutex<Option<SyncSender<(Batch, Instant)>>>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    max_line_bytes: usize,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    tail: broadcast::Sender<TailBatch>,
    indexer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The rollup builder, and the sender whose drop stops it.
    rollups: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
}

impl Pipeline {
    /// Open the log and the marks under `data_dir`, bring the indexes up to date with the log,
    /// and start the indexer thread.
    pub fn start(
        data_dir: &std::path::Path,
        store: Arc<Store>,
        config: PipelineConfig,
        metrics: Metrics,
    ) -> anyhow::Result<Arc<Pipeline>> {
        let (mut wal, batches) = Wal::open(&data_dir.join("wal"))?;
        let mut marks = Marks::load(&data_dir.join("dedup.json"))?;
        recover(&store, &mut wal, &mut marks, batches)?;
        let (tx, rx) = mpsc::sync_channel(config.max_queued_batches + 1);
        let queued = Arc::new(AtomicUsize::new(0));
        let (tail, _) = broadcast::channel(1024);
        let pipeline = Arc::new(Pipeline {
            state: Mutex::new(State { wal, marks }),
            to_indexer: Mutex::new(Some(tx)),
            queued: queued.clone(),
            max_queued: config.max_queued_batches,
            max_line_bytes: config.max_line_bytes,
            store: store.clone(),
            metrics: metrics.clone(),
            tail,
            indexer: Mutex::new(None),
            rollups: Mutex::new(None),
        });
        let weak = Arc::downgrade(&pipeline);
        let interval = config.commit_interval;
        let handle = std::thread::Builder::new()
            .name("search-indexer".into())
            .spawn(move || indexer(rx, store, queued, metrics, interval, weak))?;
        *pipeline.indexer.lock().expect("indexer lock") = Some(handle);
        let (stop, stopped) = mpsc::channel();
        let (rollup_store, rollup_metrics) = (pipeline.store.clone(), pipeline.metrics.clone());
        let handle = std::thread::Builder::new()
            .name("search-rollups".into())
            .spawn(move || crate::rollup::run(rollup_store, rollup_metrics, stopped))?;
        *pipeline.rollups.lock().expect("rollups lock") = Some((stop, handle));
        Ok(pipeline)
    }

    /// Store `records`: acknowledged (durable in the log) when this returns `Ok`.
    pub fn ingest(&self, mut records: Vec<LogRecord>) -> Result<Ingested, IngestError> {
        let mut out = Ingested::default();
        for (index, r) in records.iter_mut().enumerate() {
            match r.prepare(self.max_line_bytes) {
                Ok(true) => out.truncated += 1,
                Ok(false) => {}
                Err(source) => {
                    self.metrics.reject("invalid");
                    return Err(IngestError::Invalid { index, source });
                }
            }
        }
        let mut state = self.state.lock().expect("ingest lock");
        // Checked under the lock, so the send below never waits for a full channel (the
        // indexer takes this lock after a commit).
        let queued = self.queued.load(Ordering::Acquire);
        if queued >= self.max_queued {
            self.metrics.reject("busy");
            return Err(IngestError::Busy(queued));
        }
        let (kept, duplicates, undo) = state.marks.admit(records);
        out.duplicates = duplicates;
        self.metrics.duplicates.inc_by(duplicates as u64);
        if kept.is_empty() {
            return Ok(out);
        }
        let batch = Batch {
            first_seq: state.wal.next_seq(),
            records: kept,
        };
        if let Err(e) = state.wal.append(&batch) {
            state.marks.undo(undo);
            self.metrics.reject("io");
            return Err(e.into());
        }
        out.accepted = batch.records.len();
        self.metrics.lines.inc_by(out.accepted as u64);
        self.metrics
            .bytes
            .inc_by(batch.records.iter().map(|r| r.message.len() as u64).sum());
        self.metrics.truncated.inc_by(out.truncated as u64);
        if self.tail.receiver_count() > 0 {
            let published = batch
                .records
                .iter()
                .enumerate()
                .map(|(i, r)| (batch.first_seq + i as u64, r.clone()))
                .collect();
            let _ = self.tail.send(Arc::new(published));
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let sender = self.to_indexer.lock().expect("sender lock").clone();
        match sender {
            Some(tx) if tx.send((batch, Instant::now())).is_ok() => {}
            // Shutting down: the batch is in the log and is indexed on the next start.
            _ => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
        drop(state);
        Ok(out)
    }

    /// Follow newly ingested records.
    pub fn subscribe(&self) -> broadcast::Receiver<TailBatch> {
        self.tail.subscribe()
    }

    /// Called by the indexer after a commit: trim the log and save the marks.
    fn committed(&self, seq: u64) {
        let mut state = self.state.lock().expect("ingest lock");
        if let Err(e) = state.wal.release(seq) {
            tracing::warn!(error = %e, "trimming the write-ahead log");
        }
        if let Err(e) = state
            .marks
            .save(jiff::Timestamp::now().as_nanosecond() as i64)
        {
            tracing::warn!(error = %e, "saving the dedup marks");
        }
        self.metrics.wal_bytes.set(state.wal.size() as i64);
    }

    /// Stop the indexer after it has indexed and committed everything acknowledged.
    pub fn shutdown(&self) {
        if let Some((stop, handle)) = self.rollups.lock().expect("rollups lock").take() {
            drop(stop);
            let _ = handle.join();
        }
        self.to_indexer.lock().expect("sender lock").take();
        if let Some(h) = self.indexer.lock().expect("indexer lock").take() {
            let _ = h.join();
        }
    }
}

/// Index what the log holds beyond each day's last commit, then commit and trim the log.
fn recover(
    store: &Store,
    wal: &mut Wal,
    marks: &mut Marks,
    batches: Vec<Batch>,
) -> anyhow::Result<()> {
    let mut committed: std::collections::HashMap<Day, u64> = store
        .days()
        .iter()
        .map(|d| (d.day, d.committed_seq()))
        .collect();
    let mut dirty = Vec::new();
    let mut replayed = 0usize;
    for batch in &batches {
        for (i, r) in batch.records.iter().enumerate() {
            marks.replay(r);
            let seq = batch.first_seq + i as u64;
            let day = store::day_of(r.ts);
            if seq >= *committed.entry(day).or_insert(0) {
                store.add(day, store.fields.document(r, seq))?;
                if !dirty.contains(&day) {
                    dirty.push(day);
                }
                replayed += 1;
            }
        }
    }
    if replayed > 0 {
        tracing::info!(
            lines = replayed,
            "indexed lines recovered from the write-ahead log"
        );
    }
    store.commit(wal.next_seq(), &dirty)?;
    wal.release(wal.next_seq())?;
    Ok(())
}

/// The indexer thread: add documents as batches arrive, commit every `interval`.
fn indexer(
    rx: Receiver<(Batch, Instant)>,
    store: Arc<Store>,
    queued: Arc<AtomicUsize>,
    metrics: Metrics,
    interval: Duration,
    pipeline: std::sync::Weak<Pipeline>,
) {
    let span = tracing::info_span!("search_indexer");
    let _enter = span.enter();
    let mut dirty: Vec<Day> = Vec::new();
    let mut end_seq = None;
    let mut deadline = Instant::now() + interval;
    let mut failures = 0u32;
    // When each uncommitted batch was acknowledged, and its lines.
    let mut waiting: Vec<(Instant, usize)> = Vec::new();
    loop {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let disconnected = match rx.recv_timeout(timeout) {
            Ok((batch, acknowledged)) => {
                waiting.push((acknowledged, batch.records.len()));
                for (i, r) in batch.records.iter().enumerate() {
                    let day = store::day_of(r.ts);
                    if let Err(e) =
                        store.add(day, store.fields.document(r, batch.first_seq + i as u64))
                    {
                        // The batch stays in the log: the next start indexes it again.
                        tracing::error!(error = %e, "indexing a line failed");
                    }
                    if !dirty.contains(&day) {
                        dirty.push(day);
                    }
                }
                end_seq = Some(batch.end_seq());
                queued.fetch_sub(1, Ordering::AcqRel);
                metrics
                    .queued_batches
                    .set(queued.load(Ordering::Acquire) as i64);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if Instant::now() >= deadline || disconnected {
            if let Some(seq) = end_seq {
                let started = Instant::now();
                match store.commit(seq, &dirty) {
                    Ok(_) => {
                        failures = 0;
                        metrics
                            .commit_duration
                            .observe(started.elapsed().as_secs_f64());
                        dirty.clear();
                        end_seq = None;
                        // Every line of the batches is searchable from now on.
                        let now = Instant::now();
                        for (acknowledged, lines) in waiting.drain(..) {
                            let secs = now.duration_since(acknowledged).as_secs_f64();
                            for _ in 0..lines {
                                metrics.time_to_searchable.observe(secs);
                            }
                        }
                        if let Some(p) = pipeline.upgrade() {
                            p.committed(seq);
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::error!(error = %e, failures, "commit failed; retrying");
                    }
                }
            }
            // Back off after failures (disk full, …): the log keeps everything meanwhile.
            deadline = Instant::now() + interval * 2u32.saturating_pow(failures.min(6));
        }
        if disconnected {
            break;
        }
    }
    store.close_idle_writers(Duration::ZERO);
}
