//! Reads: a small pool of read-only connections used from blocking threads. Every read runs in
//! one transaction, so the revision it reports matches the rows it returns (WAL snapshots).

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::Semaphore;

use super::schema::init_reader;
use crate::{
    Error, Event, EventKind, KeyValue, RangeRequest, RangeResult, Result, Revision, prefix_end,
};

pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, size: usize) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        init_reader(&conn)?;
        Ok(conn)
    }

    /// Run `f` on a pooled connection on a blocking thread.
    pub(super) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Backend("store is closed".into()))?;
        let pooled = self.idle.lock().expect("pool lock").pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.open().map_err(|e| Error::Backend(e.to_string()))?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut conn);
            (conn, result)
        })
        .await
        .map_err(|e| Error::Backend(format!("read task failed: {e}")))?;
        self.idle.lock().expect("pool lock").push(conn);
        result
    }
}

fn backend(e: rusqlite::Error) -> Error {
    Error::Backend(e.to_string())
}

/// The newest revision in the current snapshot.
fn snapshot_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    conn.query_row("SELECT COALESCE(MAX(revision), 0) FROM kv_log", [], |r| {
        r.get(0)
    })
}

pub(super) fn get(conn: &mut Connection, key: &str) -> Result<Option<KeyValue>> {
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
    .map_err(backend)
}

fn row_to_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(0)?).into_owned(),
        value: Bytes::from(r.get::<_, Vec<u8>>(1)?),
        create_revision: r.get(2)?,
        mod_revision: r.get(3)?,
    })
}

pub(super) fn range(
    conn: &mut Connection,
    req: &RangeRequest,
    compacted: Revision,
) -> Result<RangeResult> {
    let tx = conn.transaction().map_err(backend)?;
    let current = snapshot_revision(&tx).map_err(backend)?;
    let at = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if at > current {
        return Err(Error::FutureRevision {
            requested: at,
            current,
        });
    }
    if at < compacted {
        return Err(Error::Compacted {
            requested: at,
            compacted,
        });
    }
    let start: Vec<u8> = match &req.start_after {
        // The smallest key after `start_after`.
        Some(k) => {
            let mut s = k.as_bytes().to_vec();
            s.push(0);
            s.max(req.prefix.as_bytes().to_vec())
        }
        None => req.prefix.as_bytes().to_vec(),
    };
    let end = prefix_end(req.prefix.as_bytes());
    let fetch = if req.limit == 0 {
        i64::MAX
    } else {
        req.limit as i64 + 1
    };
    let mut kvs: Vec<KeyValue> = if at == current {
        let mut stmt = tx
            .prepare_cached(
                "SELECT c.key, l.value, c.create_revision, c.revision FROM kv_current c
                 JOIN kv_log l ON l.revision = c.revision
                 WHERE c.key >= ?1 AND c.key < ?2 ORDER BY c.key LIMIT ?3",
            )
            .map_err(backend)?;
        stmt.query_map(params![start, end, fetch], row_to_kv)
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)?
    } else {
        let mut stmt = tx
            .prepare_cached(
                "SELECT l.key, l.value, l.create_revision, l.revision FROM kv_log l
                 WHERE l.key >= ?1 AND l.key < ?2 AND l.deleted = 0
                   AND l.revision = (SELECT MAX(n.revision) FROM kv_log n
                                     WHERE n.key = l.key AND n.revision <= ?3)
                 ORDER BY l.key LIMIT ?4",
            )
            .map_err(backend)?;
        stmt.query_map(params![start, end, at, fetch], row_to_kv)
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)?
    };
    let more = req.limit != 0 && kvs.len() > req.limit;
    kvs.truncate(if req.limit == 0 { kvs.len() } else { req.limit });
    Ok(RangeResult {
        kvs,
        revision: at,
        more,
    })
}

/// Events under `prefix` with revisions in `(after, …]`, at most `limit`, and the snapshot's
/// revision (all history up to it has been examined when fewer than `limit` events return).
pub(super) fn history(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<(Vec<Event>, Revision)> {
    let tx = conn.transaction().map_err(backend)?;
    let snapshot = snapshot_revision(&tx).map_err(backend)?;
    let end = prefix_end(prefix.as_bytes());
    let mut stmt = tx
        .prepare_cached(
            "SELECT l.key, l.value, l.create_revision, l.revision, l.deleted,
                    p.value, p.create_revision, p.revision
             FROM kv_log l LEFT JOIN kv_log p ON p.revision = l.prev_revision
             WHERE l.revision > ?1 AND l.key >= ?2 AND l.key < ?3
             ORDER BY l.revision LIMIT ?4",
        )
        .map_err(backend)?;
    let events = stmt
        .query_map(params![after, prefix.as_bytes(), end, limit as i64], |r| {
            let kv = row_to_kv(r)?;
            let deleted: bool = r.get(4)?;
            let prev_value: Option<Vec<u8>> = r.get(5)?;
            let prev = match prev_value {
                Some(v) => Some(KeyValue {
                    key: kv.key.clone(),
                    value: Bytes::from(v),
                    create_revision: r.get(6)?,
                    mod_revision: r.get(7)?,
                }),
                None => None,
            };
            Ok(Event {
                kind: if deleted {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                kv,
                prev,
            })
        })
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    Ok((events, snapshot))
}

/// Database size in bytes: pages plus the WAL file.
pub(super) fn db_size(conn: &mut Connection, path: &std::path::Path) -> Result<i64> {
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(backend)?;
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(backend)?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_size = std::fs::metadata(&wal).map(|m| m.len() as i64).unwrap_or(0);
    Ok(pages * page_size + wal_size)
}
