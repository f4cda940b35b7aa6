//! Container log lines as runtimes write them, back into whole lines:
//!
//! - CRI: `<RFC3339Nano> <stdout|stderr> <P|F> <message>`; `P` pieces join the next `F`.
//! - Docker json-file: `{"log":"…\n","stream":"stdout","time":"…"}`; a `log` without a
//!   trailing newline is a piece of a longer line (Docker splits at 16 KiB).
//!
//! Anything else (garbage, a truncated record) is kept as a whole line of its own with the time
//! it was read, never dropped: a log collector that loses lines it does not understand hides
//! exactly the lines someone needs.

use serde::Deserialize;

/// One record of a file, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Unix ns, when the record states it.
    pub ts: Option<i64>,
    pub stream: Stream,
    /// Whether the line continues in the next record.
    pub partial: bool,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Deserialize)]
struct DockerLine {
    log: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

fn parse_ts(text: &str) -> Option<i64> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    i64::try_from(ts.as_nanosecond()).ok()
}

fn stream_of(word: &str) -> Option<Stream> {
    match word {
        "stdout" => Some(Stream::Stdout),
        "stderr" => Some(Stream::Stderr),
        _ => None,
    }
}

/// Parse one record (without its newline). Invalid UTF-8 is replaced, not refused.
pub fn parse(record: &[u8]) -> Piece {
    let text = String::from_utf8_lossy(record);
    if text.starts_with('{')
        && let Ok(d) = serde_json::from_str::<DockerLine>(&text)
    {
        let partial = !d.log.ends_with('\n');
        let message = d.log.strip_suffix('\n').unwrap_or(&d.log).to_owned();
        return Piece {
            ts: d.time.as_deref().and_then(parse_ts),
            stream: d
                .stream
                .as_deref()
                .and_then(stream_of)
                .unwrap_or(Stream::Stdout),
            partial,
            message,
        };
    }
    let mut parts = text.splitn(4, ' ');
    if let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        && let (Some(ts), Some(stream), true) =
            (parse_ts(ts), stream_of(stream), tag == "P" || tag == "F")
    {
        return Piece {
            ts: Some(ts),
            stream,
            partial: tag == "P",
            message: parts.next().unwrap_or("").to_owned(),
        };
    }
    Piece {
        ts: None,
        stream: Stream::Stdout,
        partial: false,
        message: text.into_owned(),
    }
}

/// A whole line, with the file offsets of its first record and past its last one.
///
/// `end` is the idempotency key: lines complete in the order of their last records, so `end`
/// grows with every line of a file, even when a stdout line assembled from pieces completes
/// after a stderr line that started later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub offset: u64,
    /// Offset just past its last record.
    pub end: u64,
    pub ts: Option<i64>,
    pub stream: Stream,
    pub message: String,
}

/// Longest line assembled from pieces; the rest of an endless partial run starts a new line.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Joins pieces into lines, per stream (stdout and stderr pieces interleave in one file).
#[derive(Default)]
pub struct Assembler {
    pending: [Option<Line>; 2],
}

impl Assembler {
    /// Add the record at `offset..end`; returns a line when one is complete.
    pub fn push(&mut self, piece: Piece, offset: u64, end: u64) -> Option<Line> {
        let slot = &mut self.pending[piece.stream as usize];
        let line = match slot.take() {
            Some(mut line) => {
                line.message.push_str(&piece.message);
                line.end = end;
                line.ts = piece.ts.or(line.ts);
                line
            }
            None => Line {
                offset,
                end,
                ts: piece.ts,
                stream: piece.stream,
                message: piece.message,
            },
        };
        if piece.partial && line.message.len() < MAX_LINE_BYTES {
            *slot = Some(line);
            None
        } else {
            Some(line)
        }
    }

    /// Lines still being assembled, as they are (their file ended).
    pub fn flush(&mut self) -> Vec<Line> {
        self.pending.iter_mut().filter_map(Option::take).collect()
    }

    /// The offset of the oldest line still being assembled (the checkpoint may not pass it).
    pub fn pending_offset(&self) -> Option<u64> {
        self.pending.iter().flatten().map(|l| l.offset).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_records_are_parsed_and_partials_joined() {
        let mut a = Assembler::default();
        let p = parse(b"2026-11-27T10:00:00.000000001Z stdout P hello ");
        assert!(p.partial);
        assert_eq!(a.push(p, 0, 48), None);
        // A stderr line in between does not disturb the stdout one.
        let e = a
            .push(parse(b"2026-11-27T10:00:00.5Z stderr F oops"), 48, 90)
            .unwrap();
        assert_eq!((e.message.as_str(), e.stream), ("oops", Stream::Stderr));
        assert_eq!(a.pending_offset(), Some(0));
        let line = a
            .push(parse(b"2026-11-27T10:00:01Z stdout F world"), 90, 130)
            .unwrap();
        assert_eq!(line.message, "hello world");
        assert_eq!((line.offset, line.end), (0, 130));
        assert_eq!(line.ts, Some(1_795_773_601_000_000_000));
        assert_eq!(a.pending_offset(), None);
        // An empty message is a line too.
        let l = a
            .push(parse(b"2026-11-27T10:00:01Z stdout F"), 130, 160)
            .unwrap();
        assert_eq!(l.message, "");
    }

    #[test]
    fn docker_json_lines_are_parsed_and_partials_joined() {
        let mut a = Assembler::default();
        let p = parse(br#"{"log":"part one ","stream":"stderr","time":"2026-11-27T10:00:00Z"}"#);
        assert!(p.partial);
        assert_eq!(a.push(p, 0, 10), None);
        let l = a
            .push(
                parse(br#"{"log":"part two\n","stream":"stderr","time":"2026-11-27T10:00:00.1Z"}"#),
                10,
                20,
            )
            .unwrap();
        assert_eq!(l.message, "part one part two");
        assert_eq!(l.stream, Stream::Stderr);
    }

    #[test]
    fn garbage_is_kept_as_a_line() {
        for raw in [
            &b"not a log record"[..],
            b"\xff\xfe binary",
            b"{\"log\": 5}",
            b"2026 stdout F x",
        ] {
            let p = parse(raw);
            assert!(!p.partial);
            assert_eq!(p.ts, None);
            assert_eq!(p.message, String::from_utf8_lossy(raw));
        }
    }
}
