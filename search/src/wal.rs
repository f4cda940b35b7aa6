//! The write-ahead log: an ingest batch is acknowledged once it is here and fsynced; the index
//! catches up from it after a crash.
//!
//! Segment files `wal/<first-seq>.wal` hold frames `[len u32 LE][crc32 u32 LE][payload]`, the
//! payload being a JSON [`Batch`]. Replay stops at the first torn or corrupt frame (a crash in
//! the middle of an append) and cuts the file there: that batch was never acknowledged. A
//! segment is deleted once every record in it is committed to the index.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::LogRecord;

/// Start a new segment past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Largest frame accepted on replay (larger means corruption).
const MAX_FRAME: u32 = 512 * 1024 * 1024;

/// Records with consecutive sequence numbers starting at `first_seq`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Batch {
    pub first_seq: u64,
    pub records: Vec<LogRecord>,
}

impl Batch {
    /// The sequence number after the last record.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }
}

pub struct Wal {
    dir: PathBuf,
    /// The open segment, its first sequence number and size.
    current: Option<(File, u64, u64)>,
    /// Closed segments: (first seq, end seq, path).
    closed: Vec<(u64, u64, PathBuf)>,
    /// End sequence number of what the open segment holds.
    current_end: u64,
}

impl Wal {
    /// Open the log in `dir`, returning it and every intact batch in it, in order.
    pub fn open(dir: &Path) -> io::Result<(Wal, Vec<Batch>)> {
        fs::create_dir_all(dir)?;
        let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                let seq = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".wal")?
                    .parse()
                    .ok()?;
                Some((seq, path))
            })
            .collect();
        segments.sort();
        let mut batches = Vec::new();
        let mut closed = Vec::new();
        for (first, path) in segments {
            let (found, good_len) = read_segment(&path)?;
            if fs::metadata(&path)?.len() != good_len {
                tracing::warn!(path = %path.display(), keep = good_len, "cutting a torn write-ahead log tail");
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(good_len)?;
            }
            let end = found.last().map(Batch::end_seq).unwrap_or(first);
            closed.push((first, end, path));
            batches.extend(found);
        }
        sync_dir(dir)?;
        let current_end = closed.last().map(|c| c.1).unwrap_or(0);
        Ok((
            Wal {
                dir: dir.to_owned(),
                current: None,
                closed,
                current_end,
            },
            batches,
        ))
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.current_end
    }

    /// Append `batch` and fsync it. Its `first_seq` must be [`Wal::next_seq`].
    pub fn append(&mut self, batch: &Batch) -> io::Result<()> {
        debug_assert_eq!(batch.first_seq, self.current_end);
        let payload = serde_json::to_vec(batch).map_err(io::Error::other)?;
        let needs_new = match &self.current {
            Some((_, _, size)) => *size >= SEGMENT_BYTES,
            None => true,
        };
        if needs_new {
            self.roll(batch.first_seq)?;
        }
        let (file, _, size) = self.current.as_mut().expect("segment open");
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        if let Err(e) = file.write_all(&frame).and_then(|_| file.sync_data()) {
            // A partial frame would hide later appends from replay: cut it off.
            let _ = file.set_len(*size);
            return Err(e);
        }
        *size += frame.len() as u64;
        self.current_end = batch.end_seq();
        Ok(())
    }

    fn roll(&mut self, first_seq: u64) -> io::Result<()> {
        if let Some((file, first, _)) = self.current.take() {
            file.sync_all()?;
            self.closed
                .push((first, first_seq, self.segment_path(first)));
        }
        let path = self.segment_path(first_seq);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        sync_dir(&self.dir)?;
        self.current = Some((file, first_seq, size));
        Ok(())
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(format!("{first_seq:020}.wal"))
    }

    /// Delete closed segments whose every record is below `committed` (durable in the index).
    pub fn release(&mut self, committed: u64) -> io::Result<()> {
        let mut kept = Vec::new();
        for (first, end, path) in self.closed.drain(..) {
            if end <= committed {
                fs::remove_file(&path)?;
            } else {
                kept.push((first, end, path));
            }
        }
        self.closed = kept;
        // The open segment too, once it is full and committed: the next append starts another.
        if let Some((_, first, size)) = &self.current
            && *size >= SEGMENT_BYTES
            && self.current_end <= committed
        {
            let path = self.segment_path(*first);
            self.current = None;
            fs::remove_file(path)?;
        }
        Ok(())
    }

    /// Bytes the log holds on disk.
    pub fn size(&self) -> u64 {
        self.closed
            .iter()
            .filter_map(|(_, _, p)| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum::<u64>()
            + self.current.as_ref().map(|c| c.2).unwrap_or(0)
    }
}

/// Every intact batch of a segment and the length of the intact prefix.
fn read_segment(path: &Path) -> io::Result<(Vec<Batch>, u64)> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut batches = Vec::new();
    let mut good = 0u64;
    loop {
        let mut header = [0u8; 8];
        if read_full(&mut reader, &mut header)? < 8 {
            break;
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        if read_full(&mut reader, &mut payload)? < payload.len() || crc32fast::hash(&payload) != crc
        {
            break;
        }
        let Ok(batch) = serde_json::from_slice::<Batch>(&payload) else {
            break;
        };
        batches.push(batch);
        good += 8 + u64::from(len);
    }
    Ok((batches, good))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Make a directory's entries (a created or removed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_seq: u64, n: usize) -> Batch {
        Batch {
            first_seq,
            records: (0..n)
                .map(|i| LogRecord {
                    ts: i as i64,
                    message: format!("line {}", first_seq + i as u64),
                    ..LogRecord::default()
                })
                .collect(),
        }
    }

    #[test]
    fn appended_batches_are_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, found) = Wal::open(dir.path()).unwrap();
        assert!(found.is_empty());
        wal.append(&batch(0, 3)).unwrap();
        wal.append(&batch(3, 2)).unwrap();
        drop(wal);
        let (wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found, vec![batch(0, 3), batch(3, 2)]);
        assert_eq!(wal.next_seq(), 5);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&batch(0, 2)).unwrap();
        wal.append(&batch(2, 2)).unwrap();
        drop(wal);
        let path = dir.path().join(format!("{:020}.wal", 0));
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (mut wal, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found, vec![batch(0, 2)]);
        assert_eq!(wal.next_seq(), 2);
        wal.append(&batch(2, 1)).unwrap();
        drop(wal);
        let (_, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found, vec![batch(0, 2), batch(2, 1)]);
    }

    #[test]
    fn garbage_in_a_segment_ends_replay_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&batch(0, 1)).unwrap();
        drop(wal);
        let path = dir.path().join(format!("{:020}.wal", 0));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0xff; 20]).unwrap();
        let (_, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found, vec![batch(0, 1)]);
    }

    #[test]
    fn committed_segments_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&batch(0, 2)).unwrap();
        drop(wal);
        // A reopened log appends to a new segment; the old one goes once committed.
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(&batch(2, 2)).unwrap();
        wal.release(1).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        wal.release(2).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(wal);
        let (_, found) = Wal::open(dir.path()).unwrap();
        assert_eq!(found, vec![batch(2, 2)]);
    }
}
