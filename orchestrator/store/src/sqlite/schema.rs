//! The SQLite schema, kine-style: an append-only log of every version, plus an index of the
//! current version of each live key. Keys are BLOBs so ranges are plain byte comparisons
//! (`key >= start AND key < end`), which use the index instead of `LIKE` scans.

use rusqlite::Connection;

/// Create tables on a fresh database and set connection pragmas. `auto_vacuum` only takes effect
/// before the first table exists, so it is set first.
pub(super) fn init_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsynced at every commit, so an acknowledged write survives kill -9 and
    // power loss. Batching commits in the writer amortizes the fsync.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // Checkpoints run on their own connection (see the maintenance loop), never inside a commit
    // on the writer thread, so a large checkpoint cannot stall writes.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv_log (
             revision INTEGER PRIMARY KEY,
             key BLOB NOT NULL,
             create_revision INTEGER NOT NULL,
             prev_revision INTEGER NOT NULL,
             deleted INTEGER NOT NULL,
             value BLOB NOT NULL
         );
         CREATE INDEX IF NOT EXISTS kv_log_key_revision ON kv_log(key, revision);
         CREATE TABLE IF NOT EXISTS kv_current (
             key BLOB PRIMARY KEY,
             revision INTEGER NOT NULL,
             create_revision INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS kv_meta (
             name TEXT PRIMARY KEY,
             value INTEGER NOT NULL
         ) WITHOUT ROWID;",
    )?;
    Ok(())
}

/// The connection that copies the WAL into the database file in the background.
pub(super) fn open_checkpointer(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// Copy as much of the WAL into the database as possible without waiting for readers or the
/// writer; the writer restarts the WAL from its start once everything has been copied.
pub(super) fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

/// Pragmas of a read-only pool connection.
pub(super) fn init_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(())
}

/// The highest revision ever written (0 for an empty store). Compaction never removes the newest
/// row, and the meta table remembers it across compactions of everything else.
pub(super) fn load_current_revision(conn: &Connection) -> rusqlite::Result<i64> {
    let from_log: i64 =
        conn.query_row("SELECT COALESCE(MAX(revision), 0) FROM kv_log", [], |r| {
            r.get(0)
        })?;
    let from_meta = load_meta(conn, "current_revision")?;
    Ok(from_log.max(from_meta))
}

/// A named integer from `kv_meta`, 0 when absent.
pub(super) fn load_meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    match conn.query_row("SELECT value FROM kv_meta WHERE name = ?1", [name], |r| {
        r.get(0)
    }) {
        Ok(v) => Ok(v),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Store a named integer in `kv_meta`.
pub(super) fn store_meta(conn: &Connection, name: &str, value: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO kv_meta(name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        rusqlite::params![name, value],
    )?;
    Ok(())
}
