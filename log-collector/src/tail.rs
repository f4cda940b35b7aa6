//! Following the container log files of a node.
//!
//! Files are found under the pods log directory (`<ns>_<pod>_<uid>/<container>/<n>.log`, and
//! rotated `<n>.log.<suffix>`), as Vector's kubernetes_logs does: the `/var/log/containers`
//! symlinks point at host paths that need not exist where the collector runs, so they are only
//! read for container ids. A file is followed by identity (device + inode) through an open
//! handle, so a rename (rotation) or an unlink (pod deleted) loses nothing: the old handle is
//! read to its end first. A file that shrinks was truncated in place (copytruncate): reading
//! restarts at 0 under a new generation.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::{Checkpoint, Checkpoints, FileId};
use crate::parse::{self, Assembler, Line, Multiline};

/// Bytes read from one file per round, so one busy file does not starve the others.
const READ_CHUNK: usize = 256 * 1024;
/// Most bytes read from all files in one round: what is read waits in memory for its batch, so
/// this bounds the collector's memory with many busy files.
const ROUND_BYTES: usize = 2 * 1024 * 1024;
/// A record longer than this without a newline is cut (a runaway writer must not exhaust memory).
const MAX_RECORD: usize = 2 * 1024 * 1024;

/// What the path of a pod log file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMeta {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// A Skiff component's own log (`<component dir>/<component>.log`), not a pod's.
    pub component: Option<String>,
}

/// `<pods dir>/<ns>_<pod>_<uid>/<container>/<n>.log[.<suffix>]` → metadata.
pub fn meta_of(pods_dir: &Path, path: &Path) -> Option<FileMeta> {
    let rel = path.strip_prefix(pods_dir).ok()?;
    let mut parts = rel.iter().map(|p| p.to_str());
    let pod_dir = parts.next()??;
    let container = parts.next()??;
    let file = parts.next()??;
    if parts.next().is_some() || !file.contains(".log") {
        return None;
    }
    // Namespaces and pod names cannot contain `_`; the uid is last.
    let mut it = pod_dir.splitn(3, '_');
    Some(FileMeta {
        namespace: it.next()?.to_owned(),
        pod: it.next()?.to_owned(),
        pod_uid: it.next()?.to_owned(),
        container: container.to_owned(),
        component: None,
    })
}

/// `<component dir>/<component>.log[.<suffix>]` → metadata.
fn component_meta(path: &Path) -> Option<FileMeta> {
    let name = path.file_name()?.to_str()?;
    let component = name.split(".log").next().filter(|c| !c.is_empty())?;
    Some(FileMeta {
        component: Some(component.to_owned()),
        ..FileMeta::default()
    })
}

fn is_log_file(name: &str) -> bool {
    // `0.log`, rotated `0.log.20261127-101500`; not compressed or temporary files.
    name.contains(".log") && !name.ends_with(".gz") && !name.ends_with(".tmp")
}

/// A line ready to ship, with where it came from.
#[derive(Debug, Clone)]
pub struct TailedLine {
    pub id: FileId,
    pub line: Line,
    pub meta: Arc<FileMeta>,
    /// The idempotency source: node, identity, fingerprint, generation.
    pub source: Arc<str>,
}

struct Tail {
    id: FileId,
    path: PathBuf,
    meta: Arc<FileMeta>,
    file: File,
    /// Bytes consumed (through the last complete record).
    offset: u64,
    fingerprint: Option<u64>,
    generation: u32,
    assembler: Assembler,
    /// Bytes after the last newline.
    partial: Vec<u8>,
    /// Its path now names another file (rotated) or nothing (deleted).
    detached: bool,
    /// When the handle last had nothing new.
    idle_since: Option<Instant>,
    /// Lines of a copy are shipped under the original's source and offsets, so the sink
    /// drops the ones the original already delivered.
    source_override: Option<String>,
    /// Fingerprint, source and read offset before the last truncation, to recognize the copy
    /// copytruncate made.
    before_truncation: Option<(u64, String, u64)>,
}

impl Tail {
    fn source(&self, node: &str) -> String {
        if let Some(s) = &self.source_override {
            return s.clone();
        }
        format!(
            "{node}:{}:{}:{:x}:{}",
            self.id.dev,
            self.id.ino,
            self.fingerprint.unwrap_or(0),
            self.generation
        )
    }

    /// Where a restart may resume: before any line still being assembled or cut short.
    fn safe_offset(&self) -> u64 {
        let mut safe = self.offset;
        if let Some(p) = self.assembler.pending_offset() {
            safe = safe.min(p);
        }
        safe
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            id: self.id,
            fingerprint: self.fingerprint.unwrap_or(0),
            generation: self.generation,
            offset: self.safe_offset(),
            path: self.path.clone(),
            source: self.source_override.clone(),
        }
    }
}

/// The fingerprint of a file: a hash of its first line (once that line is complete).
fn fingerprint(file: &mut File) -> std::io::Result<Option<u64>> {
    let mut buf = vec![0u8; 256];
    let n = file.read_at_start(&mut buf)?;
    let Some(end) = buf[..n].iter().position(|b| *b == b'\n') else {
        // No complete first line yet; 256 bytes of it are enough when it is that long.
        return Ok((n == buf.len()).then(|| hash(&buf)));
    };
    Ok(Some(hash(&buf[..end])))
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

trait ReadAtStart {
    fn read_at_start(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl ReadAtStart for File {
    fn read_at_start(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut n = 0;
        while n < buf.len() {
            match self.read_at(&mut buf[n..], n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

/// Every followed file of a node.
pub struct Tailer {
    pods_dir: PathBuf,
    node: String,
    tails: HashMap<FileId, Tail>,
    pub checkpoints: Checkpoints,
    /// Close a detached file this long after its last new byte (the writer has moved on).
    detached_grace: Duration,
    /// Join continuation lines (stack traces) into the record before them.
    pub multiline: Option<Multiline>,
    /// Skiff's component logs (`/var/log/skiff`), followed too.
    pub component_dir: Option<PathBuf>,
    /// Where the next round starts reading (round-robin over the files).
    next_first: usize,
    /// The read buffer, reused.
    buf: Vec<u8>,
}

/// What one round of reading produced.
#[derive(Default)]
pub struct Round {
    pub lines: Vec<TailedLine>,
    pub bytes_read: u64,
}

impl Tailer {
    pub fn new(pods_dir: PathBuf, node: String, checkpoints: Checkpoints) -> Tailer {
        Tailer {
            pods_dir,
            node,
            tails: HashMap::new(),
            checkpoints,
            detached_grace: Duration::from_secs(5),
            multiline: None,
            component_dir: None,
            next_first: 0,
            buf: Vec::new(),
        }
    }

    /// Files followed now.
    pub fn files(&self) -> usize {
        self.tails.len()
    }

    /// Per followed file: its path and bytes not yet read.
    pub fn lag(&self) -> Vec<(PathBuf, u64)> {
        self.tails
            .values()
            .map(|t| {
                let size = t.file.metadata().map(|m| m.len()).unwrap_or(0);
                (t.path.clone(), size.saturating_sub(t.offset))
            })
            .collect()
    }

    /// Find new files, notice renamed, deleted and truncated ones.
    pub fn scan(&mut self) -> std::io::Result<()> {
        let mut present: HashMap<FileId, PathBuf> = HashMap::new();
        let mut current_paths: HashMap<PathBuf, FileId> = HashMap::new();
        let component_files = self
            .component_dir
            .as_deref()
            .map(read_dir)
            .unwrap_or_default();
        let pod_files = read_dir(&self.pods_dir)
            .into_iter()
            .flat_map(|pod_dir| read_dir(&pod_dir))
            .flat_map(|container_dir| read_dir(&container_dir));
        for path in pod_files.chain(component_files) {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_log_file(name) {
                continue;
            }
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            if !m.is_file() {
                continue;
            }
            let id = FileId {
                dev: m.dev(),
                ino: m.ino(),
            };
            present.insert(id, path.clone());
            current_paths.insert(path, id);
        }
        // Followed files: new path (renamed), gone (deleted), truncated.
        for tail in self.tails.values_mut() {
            match present.get(&tail.id) {
                Some(path) => tail.path = path.clone(),
                None => tail.detached = true,
            }
            let size = tail.file.metadata()?.len();
            if size < tail.offset {
                tracing::info!(path = %tail.path.display(), size, offset = tail.offset, "file truncated; reading it again from the start");
                if let Some(fp) = tail.fingerprint {
                    tail.before_truncation =
                        Some((fp, tail.source(&self.node), tail.safe_offset()));
                }
                tail.generation += 1;
                tail.offset = 0;
                tail.partial.clear();
                tail.assembler = Assembler::new(self.multiline.clone());
                tail.fingerprint = None;
            }
        }
        // New files.
        for (id, path) in &present {
            if self.tails.contains_key(id) {
                continue;
            }
            let meta = match &self.component_dir {
                Some(dir) if path.parent() == Some(dir.as_path()) => component_meta(path),
                _ => meta_of(&self.pods_dir, path),
            };
            let Some(meta) = meta else {
                continue;
            };
            let Ok(mut file) = File::open(path) else {
                continue;
            };
            let fp = fingerprint(&mut file)?;
            if fp.is_none() {
                // No complete first line yet (or a copy still being written): look again at
                // the next scan, so the identity and the copy check below are sound.
                continue;
            }
            let (mut offset, mut generation, mut source_override) = match self.checkpoints.get(*id)
            {
                Some(c) if Some(c.fingerprint) == fp => (c.offset, c.generation, c.source.clone()),
                // Another file that had this inode before.
                _ => (0, 0, None),
            };
            // CRI lines start with a nanosecond timestamp, so a new file with the first line
            // of a followed one is a copy (copytruncate's): it continues where the original
            // was read to, under the original's source.
            if source_override.is_none() && offset == 0 {
                let original = self.tails.values().find_map(|t| {
                    if t.fingerprint == fp && t.id != *id {
                        Some((t.source(&self.node), t.safe_offset()))
                    } else {
                        t.before_truncation
                            .as_ref()
                            .filter(|b| Some(b.0) == fp)
                            .map(|b| (b.1.clone(), b.2))
                    }
                });
                if let Some((source, read_to)) = original {
                    tracing::debug!(path = %path.display(), read_to, "a copy of a followed file");
                    offset = read_to;
                    source_override = Some(source);
                    generation = 0;
                }
            }
            let size = file.metadata()?.len();
            let (offset, generation) = if offset > size {
                (0, generation + 1)
            } else {
                (offset, generation)
            };
            tracing::debug!(path = %path.display(), offset, "following");
            self.tails.insert(
                *id,
                Tail {
                    id: *id,
                    path: path.clone(),
                    meta: Arc::new(meta),
                    file,
                    offset,
                    fingerprint: fp,
                    generation,
                    assembler: Assembler::new(self.multiline.clone()),
                    partial: Vec::new(),
                    detached: false,
                    idle_since: None,
                    source_override,
                    before_truncation: None,
                },
            );
        }
        // Checkpoints of files that are gone and no longer followed are dropped.
        let tails = &self.tails;
        self.checkpoints
            .retain(|id| present.contains_key(&id) || tails.contains_key(&id));
        Ok(())
    }

    /// Read what is new from the files (a bounded chunk each, at most [`ROUND_BYTES`] in all,
    /// starting one file further each round so every file gets its turn), returning complete
    /// lines.
    pub fn read(&mut self) -> std::io::Result<Round> {
        let mut round = Round::default();
        let mut closed = Vec::new();
        let mut ids: Vec<FileId> = self.tails.keys().copied().collect();
        ids.sort_unstable_by_key(|id| (id.dev, id.ino));
        if !ids.is_empty() {
            let start = self.next_first % ids.len();
            ids.rotate_left(start);
            self.next_first = self.next_first.wrapping_add(1);
        }
        for id in ids {
            if round.bytes_read >= ROUND_BYTES as u64 {
                break;
            }
            let Some(tail) = self.tails.get_mut(&id) else {
                continue;
            };
            let n = read_tail(tail, &self.node, &mut self.buf, &mut round)?;
            // Multi-line records nothing followed for a while are complete.
            for line in tail.assembler.expired() {
                round.lines.push(TailedLine {
                    id: tail.id,
                    line,
                    meta: tail.meta.clone(),
                    source: tail.source(&self.node).into(),
                });
            }
            if n > 0 {
                tail.idle_since = None;
            } else {
                let since = *tail.idle_since.get_or_insert_with(Instant::now);
                if tail.detached && since.elapsed() >= self.detached_grace {
                    // Read to the end, nothing more will come: ship what is left.
                    if !tail.partial.is_empty() {
                        let rest = std::mem::take(&mut tail.partial);
                        let source: Arc<str> = tail.source(&self.node).into();
                        emit(tail, &source, &rest, tail.offset, &mut round);
                        tail.offset += rest.len() as u64;
                    }
                    for line in tail.assembler.flush() {
                        round.lines.push(TailedLine {
                            id: tail.id,
                            line,
                            meta: tail.meta.clone(),
                            source: tail.source(&self.node).into(),
                        });
                    }
                    closed.push(tail.id);
                }
            }
        }
        for id in closed {
            if let Some(t) = self.tails.remove(&id) {
                tracing::debug!(path = %t.path.display(), "finished a rotated or deleted file");
            }
        }
        Ok(round)
    }

    /// Checkpoints for everything handed out so far except `unsent` (lines read but not yet
    /// in a batch): taken when a batch is cut, saved once it is acknowledged.
    pub fn marks(&self, unsent: &[TailedLine]) -> Vec<Checkpoint> {
        let mut first_unsent: HashMap<FileId, u64> = HashMap::new();
        for l in unsent {
            let e = first_unsent.entry(l.id).or_insert(l.line.offset);
            *e = (*e).min(l.line.offset);
        }
        self.tails
            .values()
            .map(|t| {
                let mut checkpoint = t.checkpoint();
                if let Some(o) = first_unsent.get(&t.id) {
                    checkpoint.offset = checkpoint.offset.min(*o);
                }
                checkpoint
            })
            .collect()
    }
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|it| it.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Read one chunk of `tail` (through `buf`, reused); returns the bytes read.
fn read_tail(
    tail: &mut Tail,
    node: &str,
    buf: &mut Vec<u8>,
    round: &mut Round,
) -> std::io::Result<usize> {
    if tail.fingerprint.is_none() {
        tail.fingerprint = fingerprint(&mut tail.file)?;
        if tail.fingerprint.is_none() {
            // Not even a first line yet: wait, so the source id is stable from line one.
            return Ok(0);
        }
    }
    let start = tail.offset + tail.partial.len() as u64;
    tail.file.seek(SeekFrom::Start(start))?;
    buf.resize(READ_CHUNK, 0);
    let n = tail.file.read(buf)?;
    if n == 0 {
        return Ok(0);
    }
    let source: Arc<str> = tail.source(node).into();
    round.bytes_read += n as u64;
    let mut data = std::mem::take(&mut tail.partial);
    data.extend_from_slice(&buf[..n]);
    let mut consumed = 0;
    while let Some(nl) = data[consumed..].iter().position(|b| *b == b'\n') {
        let record_start = tail.offset + consumed as u64;
        let record = &data[consumed..consumed + nl];
        emit(tail, &source, record, record_start, round);
        consumed += nl + 1;
    }
    if data.len() - consumed > MAX_RECORD {
        let record_start = tail.offset + consumed as u64;
        let rest = data[consumed..].to_vec();
        emit(tail, &source, &rest, record_start, round);
        consumed = data.len();
    }
    tail.offset += consumed as u64;
    tail.partial = data[consumed..].to_vec();
    Ok(n)
}

fn emit(tail: &mut Tail, source: &Arc<str>, record: &[u8], offset: u64, round: &mut Round) {
    let end = offset + record.len() as u64 + 1;
    let piece = parse::parse(record);
    for line in tail.assembler.push(piece, offset, end) {
        round.lines.push(TailedLine {
            id: tail.id,
            line,
            meta: tail.meta.clone(),
            source: source.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_give_pod_metadata() {
        let pods = Path::new("/var/log/pods");
        let m = meta_of(
            pods,
            Path::new("/var/log/pods/shop_web-1_abc-123/app/0.log"),
        )
        .unwrap();
        assert_eq!(
            m,
            FileMeta {
                namespace: "shop".into(),
                pod: "web-1".into(),
                pod_uid: "abc-123".into(),
                container: "app".into(),
                component: None,
            }
        );
        assert_eq!(
            component_meta(Path::new("/var/log/skiff/scheduler.log.1"))
                .unwrap()
                .component
                .as_deref(),
            Some("scheduler")
        );
        assert!(
            meta_of(
                pods,
                Path::new("/var/log/pods/shop_web-1_abc/app/0.log.20261127-1")
            )
            .is_some()
        );
        assert!(meta_of(pods, Path::new("/var/log/pods/x/0.log")).is_none());
        assert!(meta_of(pods, Path::new("/elsewhere/a_b_c/d/0.log")).is_none());
    }
}
