//! The single writer. One OS thread owns the only writing connection; requests arrive on a
//! channel, and everything queued is committed in one transaction (one fsync), so throughput
//! grows with load while each write still gets its own revision. After the commit, each caller
//! gets its answer and watchers get the events through the in-process broadcast.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::schema::store_meta;
use crate::{Error, Event, EventKind, KeyValue, Result, Revision};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Revisions examined per compaction step, so writes are never held up for long.
const COMPACTION_WINDOW: i64 = 2000;

pub(super) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// A committed batch as watchers see it.
#[derive(Debug)]
pub(super) struct CommittedBatch {
    pub(super) events: Vec<Event>,
    pub(super) revision: Revision,
}

struct Compaction {
    target: Revision,
    floor: Revision,
    reply: oneshot::Sender<Result<()>>,
}

pub(super) fn run(mut conn: Connection, mut rx: mpsc::Receiver<WriteOp>, shared: Arc<Shared>) {
    let span = tracing::info_span!("store_writer");
    let _entered = span.enter();
    let mut compaction: Option<Compaction> = None;
    loop {
        let first = if compaction.is_some() {
            match rx.try_recv() {
                Ok(op) => Some(op),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.blocking_recv() {
                Some(op) => Some(op),
                None => break,
            }
        };
        let Some(first) = first else {
            if let Some(c) = compaction.take() {
                compaction = compaction_step(&mut conn, &shared, c);
            }
            continue;
        };
        let mut writes = Vec::new();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                WriteOp::Compact { revision, reply } => {
                    let current = shared.current.load(Ordering::SeqCst);
                    let compacted = shared.compacted.load(Ordering::SeqCst);
                    if revision > current {
                        let _ = reply.send(Err(Error::FutureRevision {
                            requested: revision,
                            current,
                        }));
                    } else if revision <= compacted {
                        let _ = reply.send(Ok(()));
                    } else {
                        // Reads below the target are refused from now on, before any history
                        // goes, so no reader sees a half-compacted past.
                        let persisted = store_meta(&conn, "compacted_revision", revision)
                            .and_then(|()| store_meta(&conn, "current_revision", current));
                        if let Err(e) = persisted {
                            let _ = reply.send(Err(backend(e)));
                        } else {
                            shared.compacted.store(revision, Ordering::SeqCst);
                            shared.metrics.compacted_revision.set(revision);
                            let floor = compaction.as_ref().map_or(compacted, |c| c.floor);
                            if let Some(previous) = compaction.replace(Compaction {
                                target: revision,
                                floor,
                                reply,
                            }) {
                                let _ = previous.reply.send(Ok(()));
                            }
                        }
                    }
                }
                WriteOp::Checkpoint { reply } => {
                    let result = conn
                        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                        .map_err(backend);
                    let _ = reply.send(result);
                }
                write => writes.push(write),
            }
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            commit_batch(&mut conn, &shared, writes);
        }
    }
    tracing::debug!("store writer stopped");
}

fn backend(e: rusqlite::Error) -> Error {
    Error::Backend(e.to_string())
}

fn commit_batch(conn: &mut Connection, shared: &Shared, writes: Vec<WriteOp>) {
    let started = Instant::now();
    let before = shared.current.load(Ordering::SeqCst);
    let mut revision = before;
    let mut outcomes: Vec<Result<KeyValue>> = Vec::with_capacity(writes.len());
    let mut events = Vec::new();
    let result = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for op in &writes {
            let outcome = apply(&tx, op, &mut revision, &mut events)?;
            outcomes.push(outcome);
        }
        tx.commit()
    })();
    let count = writes.len();
    if let Err(e) = result {
        tracing::error!(error = %e, writes = count, "store commit failed");
        let message = e.to_string();
        for op in writes {
            reply(op, Err(Error::Backend(message.clone())));
        }
        return;
    }
    shared.current.store(revision, Ordering::SeqCst);
    shared.metrics.current_revision.set(revision);
    shared
        .metrics
        .commit_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    shared.metrics.write_batch_size.observe(count as f64);
    for (op, outcome) in writes.into_iter().zip(outcomes) {
        reply(op, outcome);
    }
    if !events.is_empty() {
        // No receivers is fine: nobody is watching.
        let _ = shared
            .broadcast
            .send(Arc::new(CommittedBatch { events, revision }));
    }
}

fn reply(op: WriteOp, outcome: Result<KeyValue>) {
    match op {
        WriteOp::Create { reply, .. }
        | WriteOp::Update { reply, .. }
        | WriteOp::Delete { reply, .. } => {
            let _ = reply.send(outcome);
        }
        WriteOp::Compact { .. } | WriteOp::Checkpoint { .. } => {}
    }
}

/// The current version of a key inside the transaction.
fn current(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.query_row(
        "SELECT l.value, c.create_revision, c.revision FROM kv_current c
         JOIN kv_log l ON l.revision = c.revision WHERE c.key = ?1",
        [key.as_bytes()],
        |r| {
            Ok(KeyValue {
                key: key.to_owned(),
                value: Bytes::from(r.get::<_, Vec<u8>>(0)?),
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        },
    )
    .optional()
}

/// Apply one write. SQL errors abort the batch; precondition failures are per-write outcomes.
fn apply(
    conn: &Connection,
    op: &WriteOp,
    revision: &mut Revision,
    events: &mut Vec<Event>,
) -> rusqlite::Result<Result<KeyValue>> {
    fn insert(
        conn: &Connection,
        revision: &mut Revision,
        row: (&str, Revision, Revision, bool, &Bytes),
    ) -> rusqlite::Result<Revision> {
        let (key, create_rev, prev_rev, deleted, value) = row;
        *revision += 1;
        conn.execute(
            "INSERT INTO kv_log(revision, key, create_revision, prev_revision, deleted, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                *revision,
                key.as_bytes(),
                create_rev,
                prev_rev,
                deleted,
                value.as_ref()
            ],
        )?;
        Ok(*revision)
    }
    Ok(match op {
        WriteOp::Create { key, value, .. } => {
            if current(conn, key)?.is_some() {
                return Ok(Err(Error::AlreadyExists { key: key.clone() }));
            }
            let next = *revision + 1;
            let rev = insert(conn, revision, (key, next, 0, false, value))?;
            conn.execute(
                "INSERT INTO kv_current(key, revision, create_revision) VALUES (?1, ?2, ?2)",
                params![key.as_bytes(), rev],
            )?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: rev,
                mod_revision: rev,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: None,
            });
            Ok(kv)
        }
        WriteOp::Update {
            key,
            value,
            expected,
            ..
        } => {
            let Some(old) = current(conn, key)? else {
                return Ok(Err(Error::NotFound { key: key.clone() }));
            };
            if old.mod_revision != *expected {
                return Ok(Err(Error::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    actual: old.mod_revision,
                }));
            }
            let rev = insert(
                conn,
                revision,
                (key, old.create_revision, old.mod_revision, false, value),
            )?;
            conn.execute(
                "UPDATE kv_current SET revision = ?2 WHERE key = ?1",
                params![key.as_bytes(), rev],
            )?;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: old.create_revision,
                mod_revision: rev,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: Some(old),
            });
            Ok(kv)
        }
        WriteOp::Delete { key, expected, .. } => {
            let Some(old) = current(conn, key)? else {
                return Ok(Err(Error::NotFound { key: key.clone() }));
            };
            if let Some(expected) = expected
                && old.mod_revision != *expected
            {
                return Ok(Err(Error::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    actual: old.mod_revision,
                }));
            }
            let rev = insert(
                conn,
                revision,
                (key, old.create_revision, old.mod_revision, true, &old.value),
            )?;
            conn.execute("DELETE FROM kv_current WHERE key = ?1", [key.as_bytes()])?;
            let kv = KeyValue {
                key: key.clone(),
                value: old.value.clone(),
                create_revision: old.create_revision,
                mod_revision: rev,
            };
            events.push(Event {
                kind: EventKind::Delete,
                kv: kv.clone(),
                prev: Some(old),
            });
            Ok(kv)
        }
        WriteOp::Compact { .. } | WriteOp::Checkpoint { .. } => {
            unreachable!("maintenance ops are not batched")
        }
    })
}

/// One bounded step of compaction over a window of revisions `(floor, floor + window]` below the
/// target: remove the versions that rows in the window supersede, and the window's tombstones.
/// The newest row is never removed, so `MAX(revision)` stays the current revision.
fn compaction_step(
    conn: &mut Connection,
    shared: &Shared,
    mut c: Compaction,
) -> Option<Compaction> {
    let upper = (c.floor + COMPACTION_WINDOW).min(c.target);
    let result = (|| -> rusqlite::Result<usize> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Every superseded version has exactly one successor; it goes when its successor falls
        // inside a compaction window. Tombstones inside the window go too.
        let removed = tx.execute(
            "DELETE FROM kv_log WHERE revision IN (
                 SELECT prev_revision FROM kv_log
                 WHERE revision > ?1 AND revision <= ?2 AND prev_revision > 0
                 UNION ALL
                 SELECT revision FROM kv_log
                 WHERE revision > ?1 AND revision <= ?2 AND deleted = 1
                   AND revision < (SELECT MAX(revision) FROM kv_log))",
            params![c.floor, upper],
        )?;
        tx.commit()?;
        Ok(removed)
    })();
    match result {
        Err(e) => {
            tracing::warn!(error = %e, "compaction step failed");
            shared.metrics.maintenance_errors_total.inc();
            let _ = c.reply.send(Err(backend(e)));
            None
        }
        Ok(removed) => {
            shared.metrics.compacted_rows_total.inc_by(removed as u64);
            if upper == c.target {
                tracing::debug!(revision = c.target, "compacted");
                let _ = c.reply.send(Ok(()));
                None
            } else {
                c.floor = upper;
                Some(c)
            }
        }
    }
}
