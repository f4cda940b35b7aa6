//! Writing container output in the CRI log format, the contract with the log collector:
//!
//! ```text
//! 2026-11-26T15:04:05.123456789Z stdout F a complete line
//! 2026-11-26T15:04:05.123456790Z stderr P the first 16 KiB of a long line…
//! ```
//!
//! Lines longer than [`MAX_LINE_BYTES`] are split into `P` (partial) records ending with an `F`
//! record. Files rotate by size: the current file is renamed with a timestamp suffix and a bounded
//! number of rotated files is kept.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

/// Longest message in one record; longer lines become several `P` records and an `F`.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl StreamKind {
    /// The word in the log record.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// Rotation settings.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// Rotate when the file exceeds this size.
    pub max_bytes: u64,
    /// Keep at most this many files per container (the current one included).
    pub max_files: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 10 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// RFC 3339 with nanoseconds, as CRI runtimes write it.
pub fn format_timestamp(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// A CRI log file being written.
pub struct CriLogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl CriLogWriter {
    /// Open (append) the file at `path`, creating directories.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(CriLogWriter {
            path: path.to_owned(),
            file,
            size,
            rotation,
        })
    }

    /// Write one line (without its newline). `complete` is false for the middle of a line that
    /// was cut because it was too long or because the stream ended mid-line.
    pub fn write_line(
        &mut self,
        stream: StreamKind,
        at: Timestamp,
        line: &[u8],
        complete: bool,
    ) -> io::Result<()> {
        let stamp = format_timestamp(at);
        let mut chunks = line.chunks(MAX_LINE_BYTES).peekable();
        if line.is_empty() {
            return self.write_record(&stamp, stream, if complete { 'F' } else { 'P' }, b"");
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let tag = if last && complete { 'F' } else { 'P' };
            self.write_record(&stamp, stream, tag, chunk)?;
        }
        Ok(())
    }

    fn write_record(
        &mut self,
        stamp: &str,
        stream: StreamKind,
        tag: char,
        message: &[u8],
    ) -> io::Result<()> {
        if self.size >= self.rotation.max_bytes {
            self.rotate()?;
        }
        let mut record = Vec::with_capacity(stamp.len() + message.len() + 12);
        record.extend_from_slice(stamp.as_bytes());
        record.push(b' ');
        record.extend_from_slice(stream.as_str().as_bytes());
        record.push(b' ');
        record.push(tag as u8);
        record.push(b' ');
        record.extend_from_slice(message);
        record.push(b'\n');
        self.file.write_all(&record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    /// Rename the current file to `<name>.<UTC timestamp>` and start a new one; delete the
    /// oldest rotated files beyond the limit.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let suffix = Timestamp::now().strftime("%Y%m%d-%H%M%S%.9f").to_string();
        let rotated = PathBuf::from(format!("{}.{suffix}", self.path.display()));
        std::fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        let mut old = rotated_files(&self.path)?;
        old.sort();
        let keep = self.rotation.max_files.saturating_sub(1);
        if old.len() > keep {
            for p in &old[..old.len() - keep] {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }

    /// Flush buffered bytes to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Rotated siblings of a log file (`0.log.<timestamp>`), unsorted.
pub fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let Some(dir) = path.parent() else {
        return Ok(Vec::new());
    };
    let prefix = format!(
        "{}.",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    );
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix))
        {
            out.push(p);
        }
    }
    Ok(out)
}

/// Splits a byte stream into lines for [`CriLogWriter::write_line`], holding at most
/// [`MAX_LINE_BYTES`] of an unfinished line.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; `emit(line, complete)` is called for each complete line and for each full
    /// 16 KiB piece of a line still going.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&data[..pos]);
            let line = std::mem::take(&mut self.pending);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            emit(line, true);
            data = &data[pos + 1..];
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= MAX_LINE_BYTES {
            let rest = self.pending.split_off(MAX_LINE_BYTES);
            emit(&self.pending, false);
            self.pending = rest;
        }
    }

    /// The stream ended: whatever is left is the last line.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            emit(&line, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn records_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let mut w = CriLogWriter::open(&path, Rotation::default()).unwrap();
        let at: Timestamp = "2026-01-02T03:04:05.000000007Z".parse().unwrap();
        w.write_line(StreamKind::Stdout, at, b"hello", true)
            .unwrap();
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        w.write_line(StreamKind::Stderr, at, &long, true).unwrap();
        w.flush().unwrap();
        let got = lines(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(got[0], "2026-01-02T03:04:05.000000007Z stdout F hello");
        assert!(got[1].starts_with("2026-01-02T03:04:05.000000007Z stderr P xxx"));
        assert_eq!(got[1].len(), 31 + 9 + MAX_LINE_BYTES);
        assert_eq!(
            got[2],
            format!("2026-01-02T03:04:05.000000007Z stderr F {}", "x".repeat(10))
        );
    }

    #[test]
    fn splitter_handles_chunk_boundaries() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"ab", |l, c| {
            out.push((String::from_utf8_lossy(l).into_owned(), c))
        });
        s.feed(b"c\r\nd\ne", |l, c| {
            out.push((String::from_utf8_lossy(l).into_owned(), c))
        });
        s.finish(|l, c| out.push((String::from_utf8_lossy(l).into_owned(), c)));
        assert_eq!(
            out,
            vec![("abc".into(), true), ("d".into(), true), ("e".into(), true)]
        );
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::open(
            &path,
            Rotation {
                max_bytes: 200,
                max_files: 3,
            },
        )
        .unwrap();
        for i in 0..100 {
            w.write_line(
                StreamKind::Stdout,
                Timestamp::now(),
                format!("line {i}").as_bytes(),
                true,
            )
            .unwrap();
        }
        w.flush().unwrap();
        assert_eq!(rotated_files(&path).unwrap().len(), 2);
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.ends_with("stdout F line 99\n"));
    }
}
