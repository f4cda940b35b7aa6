//! Deduplication of re-sent lines. A collector sends each line with its source (a file
//! identity) and byte offset, in offset order per source, and re-sends what it cannot prove
//! was acknowledged after a crash. So a line whose offset is below the end of what is already
//! stored for its source is a duplicate. The marks are rebuilt on start from a snapshot plus the
//! write-ahead log (taking the maximum is idempotent, so replaying records the snapshot already
//! reflects is harmless).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::LogRecord;

/// Sources not written for this long are forgotten (their files are long rotated away).
const FORGET_AFTER_NS: i64 = 7 * 24 * 3600 * 1_000_000_000;

#[derive(Default, Serialize, Deserialize)]
pub struct Marks {
    /// Per source: the offset just past the last stored line, and that line's timestamp.
    marks: HashMap<String, (u64, i64)>,
    #[serde(skip)]
    path: PathBuf,
}

impl Marks {
    /// Load the snapshot in `path` (none yet is an empty set).
    pub fn load(path: &Path) -> io::Result<Marks> {
        let mut marks = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Only a speed-up is lost: the log replay rebuilds what matters since the last
                // commit, and older lines were committed with their marks.
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable dedup snapshot");
                Marks::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Marks::default(),
            Err(e) => return Err(e),
        };
        marks.path = path.to_owned();
        Ok(marks)
    }

    /// Whether `record` was stored before; if not, remember it.
    pub fn is_duplicate(&mut self, record: &LogRecord) -> bool {
        let (Some(source), Some(offset)) = (&record.source, record.offset) else {
            return false;
        };
        match self.marks.get_mut(source.as_str()) {
            Some((end, _)) if offset < *end => true,
            Some(mark) => {
                *mark = (offset + 1, record.ts);
                false
            }
            None => {
                self.marks.insert(source.clone(), (offset + 1, record.ts));
                false
            }
        }
    }

    /// Note a record replayed from the log (already accepted once).
    pub fn replay(&mut self, record: &LogRecord) {
        let _ = self.is_duplicate(record);
    }

    /// Drop the duplicates of `records`, remembering the rest; the [`Undo`] restores the marks
    /// if the batch is not stored after all.
    pub fn admit(&mut self, records: Vec<LogRecord>) -> (Vec<LogRecord>, usize, Undo) {
        let mut undo = Undo::default();
        let mut kept = Vec::with_capacity(records.len());
        let mut duplicates = 0;
        for r in records {
            if let Some(source) = &r.source
                && !undo.0.iter().any(|(s, _)| s == source)
            {
                undo.0
                    .push((source.clone(), self.marks.get(source).copied()));
            }
            if self.is_duplicate(&r) {
                duplicates += 1;
            } else {
                kept.push(r);
            }
        }
        (kept, duplicates, undo)
    }

    /// Put the marks back as they were before [`Marks::admit`].
    pub fn undo(&mut self, undo: Undo) {
        for (source, mark) in undo.0 {
            match mark {
                Some(m) => self.marks.insert(source, m),
                None => self.marks.remove(&source),
            };
        }
    }

    /// Write the snapshot atomically, dropping sources idle for a week.
    pub fn save(&mut self, now_ns: i64) -> io::Result<()> {
        self.marks
            .retain(|_, (_, ts)| now_ns - *ts < FORGET_AFTER_NS);
        let tmp = self.path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec(&self).map_err(io::Error::other)?)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

/// The marks a batch changed, as they were.
#[derive(Default)]
pub struct Undo(Vec<(String, Option<(u64, i64)>)>);

#[cfg(test)]
mod tests {
    use super::*;

    fn line(source: &str, offset: u64) -> LogRecord {
        LogRecord {
            ts: 1,
            source: Some(source.into()),
            offset: Some(offset),
            ..LogRecord::default()
        }
    }

    #[test]
    fn lines_at_or_below_the_mark_are_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Marks::load(&dir.path().join("marks.json")).unwrap();
        assert!(!m.is_duplicate(&line("a", 0)));
        assert!(!m.is_duplicate(&line("a", 10)));
        assert!(m.is_duplicate(&line("a", 0)));
        assert!(m.is_duplicate(&line("a", 10)));
        assert!(!m.is_duplicate(&line("b", 0)));
        assert!(!m.is_duplicate(&line("a", 20)));
        // No key, no deduplication.
        assert!(!m.is_duplicate(&LogRecord::default()));
        assert!(!m.is_duplicate(&LogRecord::default()));
    }

    #[test]
    fn an_unstored_batch_leaves_the_marks_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Marks::load(&dir.path().join("marks.json")).unwrap();
        let (kept, dups, _) = m.admit(vec![line("a", 0)]);
        assert_eq!((kept.len(), dups), (1, 0));
        let (kept, dups, undo) = m.admit(vec![line("a", 0), line("a", 5), line("b", 0)]);
        assert_eq!((kept.len(), dups), (2, 1));
        m.undo(undo);
        let (kept, dups, _) = m.admit(vec![line("a", 5), line("b", 0)]);
        assert_eq!((kept.len(), dups), (2, 0));
    }

    #[test]
    fn marks_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marks.json");
        let mut m = Marks::load(&path).unwrap();
        m.is_duplicate(&line("a", 5));
        m.save(2).unwrap();
        let mut m = Marks::load(&path).unwrap();
        assert!(m.is_duplicate(&line("a", 5)));
        assert!(!m.is_duplicate(&line("a", 6)));
        // Idle sources are forgotten.
        m.save(FORGET_AFTER_NS + 10).unwrap();
        assert_eq!(Marks::load(&path).unwrap().len(), 0);
    }
}
