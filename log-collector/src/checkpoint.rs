//! Durable read positions: per file identity (device + inode, confirmed by a fingerprint of
//! its first line, since inodes are reused), the offset up to which every line is acknowledged
//! by the sink, and the truncation generation (so lines after a copytruncate get a new
//! idempotency source). Written atomically (temp file, fsync, rename) after every acknowledged
//! batch.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A file's identity on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: FileId,
    pub fingerprint: u64,
    pub generation: u32,
    pub offset: u64,
    /// Last known path (informational).
    pub path: PathBuf,
    /// For a copy of another file (copytruncate): the original's idempotency source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

pub struct Checkpoints {
    path: PathBuf,
    entries: HashMap<FileId, Checkpoint>,
}

impl Checkpoints {
    pub fn load(path: &Path) -> io::Result<Checkpoints> {
        let entries = match fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Checkpoint>>(&bytes) {
                Ok(list) => list.into_iter().map(|c| (c.id, c)).collect(),
                Err(e) => {
                    // Re-reading from the start is safe (the sink deduplicates); losing is not.
                    tracing::warn!(path = %path.display(), error = %e, "unreadable checkpoints; files are read from their start");
                    HashMap::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Checkpoints {
            path: path.to_owned(),
            entries,
        })
    }

    pub fn get(&self, id: FileId) -> Option<&Checkpoint> {
        self.entries.get(&id)
    }

    pub fn set(&mut self, c: Checkpoint) {
        self.entries.insert(c.id, c);
    }

    /// Forget files that are gone.
    pub fn retain(&mut self, keep: impl Fn(FileId) -> bool) {
        self.entries.retain(|id, _| keep(*id));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn save(&self) -> io::Result<()> {
        let mut list: Vec<&Checkpoint> = self.entries.values().collect();
        list.sort_by_key(|c| (c.id.dev, c.id.ino));
        let tmp = self.path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec(&list).map_err(io::Error::other)?)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_forget_gone_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        let mut c = Checkpoints::load(&path).unwrap();
        assert!(c.is_empty());
        let id = FileId { dev: 1, ino: 2 };
        c.set(Checkpoint {
            id,
            fingerprint: 7,
            generation: 1,
            offset: 42,
            path: "/x".into(),
            source: None,
        });
        c.save().unwrap();
        let mut c = Checkpoints::load(&path).unwrap();
        assert_eq!(c.get(id).unwrap().offset, 42);
        c.retain(|_| false);
        c.save().unwrap();
        assert!(Checkpoints::load(&path).unwrap().is_empty());
        fs::write(&path, b"garbage").unwrap();
        assert!(Checkpoints::load(&path).unwrap().is_empty());
    }
}
