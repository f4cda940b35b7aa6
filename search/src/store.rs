//! The indexes: one tantivy index per UTC day (`logs-YYYY.MM.DD`), as EFK's daily indices, so
//! retention drops whole directories and a time-bounded query opens only the days it covers.
//!
//! Each commit records in its payload the sequence number up to which the index holds every
//! record of its day; on start the write-ahead log is replayed from there.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use jiff::civil::Date;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument};

use crate::schema::{self, Fields};

/// A UTC day.
pub type Day = Date;

/// The UTC day of a Unix-nanosecond timestamp.
pub fn day_of(ts_ns: i64) -> Day {
    jiff::Timestamp::from_nanosecond(i128::from(ts_ns))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

/// Unix nanoseconds at the start of `day`.
pub fn day_start(day: Day) -> i64 {
    day.to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| z.timestamp().as_nanosecond() as i64)
        .unwrap_or(0)
}

/// `logs-YYYY.MM.DD`.
pub fn index_name(day: Day) -> String {
    format!("logs-{}", day.strftime("%Y.%m.%d"))
}

fn parse_index_name(name: &str) -> Option<Day> {
    Date::strptime("%Y.%m.%d", name.strip_prefix("logs-")?).ok()
}

/// One day's index.
pub struct DayIndex {
    pub day: Day,
    pub name: String,
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<Option<IndexWriter>>,
    /// When a document was last added (for closing idle writers).
    last_write: Mutex<Instant>,
}

impl DayIndex {
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    /// The sequence number up to which this index holds all its records (commit payload).
    pub fn committed_seq(&self) -> u64 {
        self.index
            .load_metas()
            .ok()
            .and_then(|m| m.payload)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        dir_size(&self.dir)
    }
}

/// Settings of the writers.
#[derive(Clone, Copy, Debug)]
pub struct WriterSettings {
    /// Indexing threads per writer.
    pub threads: usize,
    /// Memory budget per writer, in bytes (tantivy needs ≥ 15 MB per thread).
    pub memory_bytes: usize,
}

/// Every day's index.
/// Per segment and partial word (`infix:timeout`), the whole words that contain it.
pub type Expansions =
    std::collections::HashMap<(tantivy::index::SegmentId, String), Arc<Vec<String>>>;

pub struct Store {
    root: PathBuf,
    pub fields: Fields,
    writer_settings: WriterSettings,
    days: RwLock<BTreeMap<Day, Arc<DayIndex>>>,
    /// Partial words resolved per segment (segments never change, so neither do these):
    /// repeated queries, as dashboards make, walk only the segments that are new since.
    pub expansions: std::sync::Mutex<Expansions>,
    /// Threads that scan a day's segments side by side for counts (a 24 h histogram reads
    /// every line's timestamp; one thread per core halves it on two).
    executor: tantivy::Executor,
    /// Per-segment counts per minute, for histograms over big days (see `rollup`).
    pub rollups: crate::rollup::Rollups,
}

impl Store {
    /// Open every `logs-*` index under `root`.
    pub fn open(root: &Path, writer_settings: WriterSettings) -> anyhow::Result<Store> {
        fs::create_dir_all(root)?;
        let fields = Fields::new();
        let mut days = BTreeMap::new();
        for entry in fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(day) = parse_index_name(&name) else {
                continue;
            };
            if !entry.path().join("meta.json").exists() {
                // Created but never committed: nothing was acknowledged only here.
                fs::remove_dir_all(entry.path())?;
                continue;
            }
            days.insert(day, Arc::new(open_day(&entry.path(), day, None)?));
        }
        Ok(Store {
            root: root.to_owned(),
            fields,
            writer_settings,
            days: RwLock::new(days),
            expansions: Default::default(),
            rollups: Default::default(),
            executor: tantivy::Executor::multi_thread(
                std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
                "skiff-count-",
            )?,
        })
    }

    /// The threads that count segments side by side.
    pub fn executor(&self) -> &tantivy::Executor {
        &self.executor
    }

    /// The indexes, oldest first.
    pub fn days(&self) -> Vec<Arc<DayIndex>> {
        self.days
            .read()
            .expect("days lock")
            .values()
            .cloned()
            .collect()
    }

    /// The indexes covering `[start, end)` (Unix ns), oldest first.
    pub fn days_between(&self, start: i64, end: i64) -> Vec<Arc<DayIndex>> {
        let (first, last) = (day_of(start), day_of(end.saturating_sub(1)));
        self.days
            .read()
            .expect("days lock")
            .range(first..=last)
            .map(|(_, d)| d.clone())
            .collect()
    }

    fn day(&self, day: Day) -> anyhow::Result<Arc<DayIndex>> {
        if let Some(d) = self.days.read().expect("days lock").get(&day) {
            return Ok(d.clone());
        }
        let mut days = self.days.write().expect("days lock");
        if let Some(d) = days.get(&day) {
            return Ok(d.clone());
        }
        let dir = self.root.join(index_name(day));
        fs::create_dir_all(&dir)?;
        let d = Arc::new(open_day(&dir, day, Some(&self.fields))?);
        days.insert(day, d.clone());
        Ok(d)
    }

    /// Add a document to the index of `day`.
    pub fn add(&self, day: Day, doc: TantivyDocument) -> anyhow::Result<()> {
        let d = self.day(day)?;
        let mut writer = d.writer.lock().expect("writer lock");
        if writer.is_none() {
            *writer = Some(d.index.writer_with_num_threads(
                self.writer_settings.threads,
                self.writer_settings.memory_bytes,
            )?);
        }
        writer.as_ref().expect("writer open").add_document(doc)?;
        *d.last_write.lock().expect("last write lock") = Instant::now();
        Ok(())
    }

    /// Commit every index with added documents, recording `seq` (everything below it is in),
    /// and make the documents searchable. Returns how many indexes were committed.
    pub fn commit(&self, seq: u64, dirty: &[Day]) -> anyhow::Result<usize> {
        let mut n = 0;
        for day in dirty {
            let Some(d) = self.days.read().expect("days lock").get(day).cloned() else {
                continue;
            };
            let mut writer = d.writer.lock().expect("writer lock");
            if let Some(w) = writer.as_mut() {
                let mut prepared = w.prepare_commit()?;
                prepared.set_payload(&seq.to_string());
                prepared.commit()?;
                d.reader.reload()?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Close writers that have had nothing to add for `idle` (after a commit), so a day that
    /// is over gives its memory back.
    pub fn close_idle_writers(&self, idle: std::time::Duration) {
        for d in self.days() {
            if d.last_write.lock().expect("last write lock").elapsed() < idle {
                continue;
            }
            let mut writer = d.writer.lock().expect("writer lock");
            if let Some(w) = writer.take()
                && let Err(e) = w.wait_merging_threads()
            {
                tracing::warn!(index = %d.name, error = %e, "closing an idle writer");
            }
        }
    }

    /// Delete whole days: those before `oldest_kept`, then the oldest ones while the total
    /// exceeds `max_bytes` (never `today`). Returns the names deleted.
    pub fn apply_retention(
        &self,
        oldest_kept: Day,
        max_bytes: Option<u64>,
        today: Day,
    ) -> anyhow::Result<Vec<String>> {
        let mut deleted = Vec::new();
        let mut sizes: Vec<(Day, u64)> = self.days().iter().map(|d| (d.day, d.size())).collect();
        let mut total: u64 = sizes.iter().map(|s| s.1).sum();
        sizes.sort();
        for (day, size) in sizes {
            let too_old = day < oldest_kept;
            let too_big = max_bytes.is_some_and(|max| total > max) && day < today;
            if !too_old && !too_big {
                continue;
            }
            let Some(d) = self.days.write().expect("days lock").remove(&day) else {
                continue;
            };
            if let Some(w) = d.writer.lock().expect("writer lock").take() {
                let _ = w.wait_merging_threads();
            }
            fs::remove_dir_all(&d.dir)?;
            total = total.saturating_sub(size);
            deleted.push(d.name.clone());
        }
        Ok(deleted)
    }
}

fn open_day(dir: &Path, day: Day, create: Option<&Fields>) -> anyhow::Result<DayIndex> {
    let index = match create {
        Some(fields) if !dir.join("meta.json").exists() => Index::builder()
            .schema(fields.schema.clone())
            .settings(schema::settings())
            .create_in_dir(dir)?,
        _ => Index::open_in_dir(dir)?,
    };
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    Ok(DayIndex {
        day,
        name: index_name(day),
        dir: dir.to_owned(),
        index,
        reader,
        writer: Mutex::new(None),
        last_write: Mutex::new(Instant::now()),
    })
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LogRecord;

    const SETTINGS: WriterSettings = WriterSettings {
        threads: 1,
        memory_bytes: 15_000_000,
    };

    #[test]
    fn days_are_named_and_bounded_in_utc() {
        let ts = 1_795_651_200_500_000_000; // 2026-11-26T00:00:00.5Z
        let day = day_of(ts);
        assert_eq!(index_name(day), "logs-2026.11.26");
        assert_eq!(parse_index_name("logs-2026.11.26"), Some(day));
        assert_eq!(day_start(day), 1_795_651_200_000_000_000);
        assert_eq!(day_of(ts - 600_000_000), day.yesterday().unwrap());
    }

    #[test]
    fn commits_are_searchable_and_reopen_with_their_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), SETTINGS).unwrap();
        let r = LogRecord {
            ts: 1_795_651_200_500_000_000,
            message: "hello".into(),
            ..LogRecord::default()
        };
        let day = day_of(r.ts);
        store.add(day, store.fields.document(&r, 0)).unwrap();
        assert_eq!(store.days()[0].searcher().num_docs(), 0);
        assert_eq!(store.commit(1, &[day]).unwrap(), 1);
        assert_eq!(store.days()[0].searcher().num_docs(), 1);
        drop(store);
        let store = Store::open(dir.path(), SETTINGS).unwrap();
        assert_eq!(store.days()[0].committed_seq(), 1);
        assert_eq!(store.days()[0].searcher().num_docs(), 1);
        let deleted = store
            .apply_retention(day.tomorrow().unwrap(), None, day.tomorrow().unwrap())
            .unwrap();
        assert_eq!(deleted, vec!["logs-2026.11.26".to_owned()]);
        assert!(store.days().is_empty());
    }
}
