//! [`SqliteStore`]: the embedded backend (rusqlite with bundled SQLite, WAL mode).
//!
//! * `writer` — one thread, batched transactions, revisions, the broadcast to watchers;
//! * `reader` — a pool of read-only connections for gets, ranges and history;
//! * `watch` — per-watch tasks: history replay, then live events;
//! * `schema` — tables and pragmas;
//! * the maintenance loop below — compaction, passive WAL checkpoints on their own connection,
//!   the size metric.

mod reader;
mod schema;
mod watch;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, KeyValue, RangeRequest, RangeResult, Result, Revision, Store, StoreMetrics, WatchStream,
};
use reader::ReadPool;
use writer::{CommittedBatch, WriteOp};

/// Settings of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteStoreConfig {
    /// The database file.
    pub path: PathBuf,
    /// Read connections.
    pub read_connections: usize,
    /// How often the maintenance loop runs.
    pub maintenance_interval: Duration,
    /// Compaction always keeps at least this many revisions.
    pub min_retained_revisions: i64,
    /// …and every revision younger than this.
    pub retention_window: Duration,
    /// How often the WAL is copied into the database file.
    pub checkpoint_interval: Duration,
}

impl SqliteStoreConfig {
    /// Defaults for a database at `path`: compaction every minute, keeping 1000 revisions and
    /// five minutes of history (kine's figures).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteStoreConfig {
            path: path.into(),
            read_connections: 4,
            maintenance_interval: Duration::from_secs(60),
            min_retained_revisions: 1000,
            retention_window: Duration::from_secs(300),
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

pub(crate) struct Shared {
    current: AtomicI64,
    compacted: AtomicI64,
    broadcast: broadcast::Sender<Arc<CommittedBatch>>,
    metrics: StoreMetrics,
    reads: ReadPool,
}

/// The embedded SQLite store.
pub struct SqliteStore {
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteOp>,
    path: PathBuf,
    stop_maintenance: CancellationToken,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop_maintenance.cancel();
    }
}

impl SqliteStore {
    /// Open (or create) the database and start the writer thread and maintenance loop. Must be
    /// called inside a Tokio runtime.
    pub fn open(config: SqliteStoreConfig, metrics: StoreMetrics) -> Result<Arc<Self>> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(&config.path).map_err(|e| Error::Backend(e.to_string()))?;
        schema::init_writer(&conn).map_err(|e| Error::Backend(e.to_string()))?;
        let current =
            schema::load_current_revision(&conn).map_err(|e| Error::Backend(e.to_string()))?;
        let compacted = schema::load_meta(&conn, "compacted_revision")
            .map_err(|e| Error::Backend(e.to_string()))?;
        metrics.current_revision.set(current);
        metrics.compacted_revision.set(compacted);
        let (broadcast, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            broadcast,
            metrics,
            reads: ReadPool::new(config.path.clone(), config.read_connections.max(1)),
        });
        let (writes, rx) = mpsc::channel(4096);
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer::run(conn, rx, writer_shared))
            .map_err(|e| Error::Backend(format!("starting writer: {e}")))?;
        let store = Arc::new(SqliteStore {
            shared,
            writes,
            path: config.path.clone(),
            stop_maintenance: CancellationToken::new(),
        });
        tracing::info!(path = %config.path.display(), revision = current, compacted, "store opened");
        let checkpointer =
            schema::open_checkpointer(&config.path).map_err(|e| Error::Backend(e.to_string()))?;
        tokio::spawn(maintenance_loop(
            Arc::downgrade(&store),
            config,
            checkpointer,
            store.stop_maintenance.clone(),
        ));
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the database and WAL in bytes.
    pub async fn db_size(&self) -> Result<i64> {
        let path = self.path.clone();
        self.shared
            .reads
            .run(move |c| reader::db_size(c, &path))
            .await
    }

    /// Copy the whole WAL into the main file and truncate it (blocks writes while it runs; the
    /// maintenance loop uses passive checkpoints instead).
    pub async fn checkpoint(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteOp::Checkpoint { reply }).await?;
        rx.await.map_err(|_| closed())?
    }

    async fn send(&self, op: WriteOp) -> Result<()> {
        self.writes.send(op).await.map_err(|_| closed())
    }

    async fn write(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<KeyValue>>) -> WriteOp,
    ) -> Result<KeyValue> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await.map_err(|_| closed())?
    }
}

fn closed() -> Error {
    Error::Backend("store writer has stopped".into())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn current_revision(&self) -> Revision {
        self.shared.current.load(Ordering::SeqCst)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }

    #[tracing::instrument(name = "store.get", level = "info", skip_all, fields(db.system = "sqlite", key = %key))]
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.shared.reads.run(move |c| reader::get(c, &key)).await
    }

    #[tracing::instrument(name = "store.range", level = "info", skip_all, fields(db.system = "sqlite", prefix = %request.prefix))]
    async fn range(&self, request: RangeRequest) -> Result<RangeResult> {
        let compacted = self.compacted_revision();
        self.shared
            .reads
            .run(move |c| reader::range(c, &request, compacted))
            .await
    }

    #[tracing::instrument(name = "store.create", level = "info", skip_all, fields(db.system = "sqlite", key = %key))]
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let key = key.to_owned();
        self.write(|reply| WriteOp::Create { key, value, reply })
            .await
    }

    #[tracing::instrument(name = "store.update", level = "info", skip_all, fields(db.system = "sqlite", key = %key, expected))]
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let key = key.to_owned();
        self.write(|reply| WriteOp::Update {
            key,
            value,
            expected,
            reply,
        })
        .await
    }

    #[tracing::instrument(name = "store.delete", level = "info", skip_all, fields(db.system = "sqlite", key = %key))]
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let key = key.to_owned();
        self.write(|reply| WriteOp::Delete {
            key,
            expected,
            reply,
        })
        .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let current = self.current_revision();
        if from > current {
            // Like etcd, a watch may start in the future; it simply waits. Only history is refused.
            tracing::trace!(from, current, "watch from a future revision");
        }
        watch::start(self.shared.clone(), prefix.to_owned(), from)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteOp::Compact { revision, reply }).await?;
        rx.await.map_err(|_| closed())?
    }
}

/// Compaction and the size gauge every `maintenance_interval`, passive WAL checkpoints every
/// `checkpoint_interval`, until cancelled. Holding only a weak reference lets the store close
/// when its users drop it.
async fn maintenance_loop(
    store: std::sync::Weak<SqliteStore>,
    config: SqliteStoreConfig,
    checkpointer: Connection,
    stop: CancellationToken,
) {
    let span = tracing::info_span!("store_maintenance");
    let _ = tracing::Instrument::instrument(
        async move {
            let checkpointer = Arc::new(std::sync::Mutex::new(checkpointer));
            // (revision, when) samples: the oldest sample older than the window bounds compaction.
            let mut samples: VecDeque<(Revision, Instant)> = VecDeque::new();
            let mut ticker = tokio::time::interval(config.maintenance_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut checkpoint_ticker = tokio::time::interval(config.checkpoint_interval);
            checkpoint_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut checkpointed_revision = 0;
            loop {
                let compaction_due = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => true,
                    _ = checkpoint_ticker.tick() => false,
                };
                let Some(store) = store.upgrade() else { break };
                if !compaction_due {
                    let current = store.current_revision();
                    if current == checkpointed_revision {
                        continue;
                    }
                    let conn = checkpointer.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        schema::passive_checkpoint(&conn.lock().expect("checkpointer lock"))
                    })
                    .await;
                    match result {
                        Ok(Ok(_)) => checkpointed_revision = current,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "wal checkpoint failed");
                            store.shared.metrics.maintenance_errors_total.inc();
                        }
                        Err(e) => tracing::warn!(error = %e, "wal checkpoint task failed"),
                    }
                    continue;
                }
                let now = Instant::now();
                let current = store.current_revision();
                samples.push_back((current, now));
                let mut window_bound = None;
                while let Some(&(rev, at)) = samples.front() {
                    if now.duration_since(at) >= config.retention_window {
                        window_bound = Some(rev);
                        samples.pop_front();
                    } else {
                        break;
                    }
                }
                if let Some(bound) = window_bound {
                    let target = bound.min(current - config.min_retained_revisions);
                    if target > store.compacted_revision()
                        && let Err(e) = store.compact(target).await
                    {
                        tracing::warn!(error = %e, target, "compaction failed");
                        store.shared.metrics.maintenance_errors_total.inc();
                    }
                }
                match store.db_size().await {
                    Ok(size) => {
                        store.shared.metrics.db_size_bytes.set(size);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading database size failed");
                    }
                }
            }
        },
        span,
    )
    .await;
}
