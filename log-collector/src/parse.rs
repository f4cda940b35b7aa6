//! Container log lines as runtimes write them, back into whole lines:
//!
//! - CRI: `<RFC3339Nano> <stdout|stderr> <P|F> <message>`; `P` pieces join the next `F`.
//! - Docker json-file: `{"log":"…\n","stream":"stdout","time":"…"}`; a `log` without a
//!   trailing newline is a piece of a longer line (Docker splits at 16 KiB).
//!
//! Anything else (garbage, a truncated record) is kept as a whole line of its own with the time
//! it was read, never dropped: a log collector that loses lines it does not understand hides
//! exactly the lines someone needs.

use std::time::{Duration, Instant};

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

/// Joins pieces into lines, per stream (stdout and stderr pieces interleave in one file), and,
/// with a multi-line rule, lines into records: a line matching `continue_pattern` (a stack
/// frame, say) is appended to the line before it.
///
/// Lines leave in the order of their `end` offsets (the idempotency key must grow): a line
/// that completes while the other stream holds an earlier record waits for that record.
#[derive(Default)]
pub struct Assembler {
    pending: [Option<Line>; 2],
    multiline: Option<Multiline>,
    /// Per stream, the last whole line, held while continuation lines may follow.
    held: [Option<(Line, Instant)>; 2],
    /// Complete lines waiting for an earlier held record, by `end`.
    ready: Vec<Line>,
}

/// The multi-line rule.
#[derive(Clone, Debug)]
pub struct Multiline {
    pub continue_pattern: regex::Regex,
    /// A held record is shipped when nothing follows it for this long.
    pub timeout: Duration,
}

impl Assembler {
    pub fn new(multiline: Option<Multiline>) -> Assembler {
        Assembler {
            multiline,
            ..Assembler::default()
        }
    }

    /// Add the record at `offset..end`; returns the lines now complete, in `end` order.
    pub fn push(&mut self, piece: Piece, offset: u64, end: u64) -> Vec<Line> {
        let Some(line) = self.assemble(piece, offset, end) else {
            return Vec::new();
        };
        let Some(rule) = &self.multiline else {
            return vec![line];
        };
        let slot = &mut self.held[line.stream as usize];
        match slot.take() {
            Some((mut held, _))
                if rule.continue_pattern.is_match(&line.message)
                    && held.message.len() + line.message.len() < MAX_LINE_BYTES =>
            {
                held.message.push('\n');
                held.message.push_str(&line.message);
                held.end = line.end;
                *slot = Some((held, Instant::now()));
            }
            previous => {
                *slot = Some((line, Instant::now()));
                if let Some((l, _)) = previous {
                    self.enqueue(l);
                }
            }
        }
        self.release()
    }

    fn enqueue(&mut self, line: Line) {
        let at = self.ready.partition_point(|l| l.end < line.end);
        self.ready.insert(at, line);
    }

    /// Ready lines that no held record precedes.
    fn release(&mut self) -> Vec<Line> {
        let floor = self
            .held
            .iter()
            .flatten()
            .map(|(l, _)| l.end)
            .min()
            .unwrap_or(u64::MAX);
        let n = self.ready.partition_point(|l| l.end < floor);
        self.ready.drain(..n).collect()
    }

    /// Lines complete now that held records nothing followed for the rule's timeout are.
    pub fn expired(&mut self) -> Vec<Line> {
        let Some(rule) = &self.multiline else {
            return Vec::new();
        };
        let timeout = rule.timeout;
        let mut done = Vec::new();
        for h in &mut self.held {
            if h.as_ref().is_some_and(|(_, at)| at.elapsed() >= timeout)
                && let Some((l, _)) = h.take()
            {
                done.push(l);
            }
        }
        for l in done {
            self.enqueue(l);
        }
        self.release()
    }

    fn assemble(&mut self, piece: Piece, offset: u64, end: u64) -> Option<Line> {
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

    /// Every line not yet returned, as it is (its file ended), in `end` order.
    pub fn flush(&mut self) -> Vec<Line> {
        let mut out: Vec<Line> = std::mem::take(&mut self.ready);
        out.extend(
            self.held
                .iter_mut()
                .filter_map(|h| h.take().map(|(l, _)| l)),
        );
        out.extend(self.pending.iter_mut().filter_map(Option::take));
        out.sort_by_key(|l| l.end);
        out
    }

    /// The offset of the oldest line not yet returned (the checkpoint may not pass it).
    pub fn pending_offset(&self) -> Option<u64> {
        self.pending
            .iter()
            .flatten()
            .chain(self.held.iter().flatten().map(|(l, _)| l))
            .chain(&self.ready)
            .map(|l| l.offset)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_traces_join_into_one_record() {
        let mut a = Assembler::new(Some(Multiline {
            continue_pattern: regex::Regex::new(r"^\s+at |^Caused by:").unwrap(),
            timeout: Duration::from_millis(50),
        }));
        let mut out = Vec::new();
        let mut at = 0;
        for l in [
            "stderr F java.lang.IllegalStateException: boom",
            "stderr F \tat com.shop.Cart.add(Cart.java:10)",
            "stdout F an unrelated stdout line",
            "stderr F Caused by: java.io.IOException: disk",
            "stderr F \tat com.shop.Disk.write(Disk.java:3)",
            "stderr F next record",
        ] {
            let raw = format!("2026-11-27T10:00:00Z {l}");
            let end = at + raw.len() as u64 + 1;
            out.extend(a.push(parse(raw.as_bytes()), at, end));
            at = end;
        }
        // The stack trace is complete, but the stdout line held before its end keeps it
        // waiting: lines leave in the order of their ends.
        assert_eq!(out, vec![]);
        assert_eq!(a.pending_offset(), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        let done = a.expired();
        let messages: Vec<&str> = done.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "an unrelated stdout line",
                "java.lang.IllegalStateException: boom\n\tat com.shop.Cart.add(Cart.java:10)\nCaused by: java.io.IOException: disk\n\tat com.shop.Disk.write(Disk.java:3)",
                "next record",
            ]
        );
        assert!(done.windows(2).all(|w| w[0].end < w[1].end));
        assert_eq!(done[1].offset, 0);
        assert_eq!(a.pending_offset(), None);
    }

    #[test]
    fn cri_records_are_parsed_and_partials_joined() {
        let mut a = Assembler::default();
        let p = parse(b"2026-11-27T10:00:00.000000001Z stdout P hello ");
        assert!(p.partial);
        assert_eq!(a.push(p, 0, 48), vec![]);
        // A stderr line in between does not disturb the stdout one.
        let e = a
            .push(parse(b"2026-11-27T10:00:00.5Z stderr F oops"), 48, 90)
            .remove(0);
        assert_eq!((e.message.as_str(), e.stream), ("oops", Stream::Stderr));
        assert_eq!(a.pending_offset(), Some(0));
        let line = a
            .push(parse(b"2026-11-27T10:00:01Z stdout F world"), 90, 130)
            .remove(0);
        assert_eq!(line.message, "hello world");
        assert_eq!((line.offset, line.end), (0, 130));
        assert_eq!(line.ts, Some(1_795_773_601_000_000_000));
        assert_eq!(a.pending_offset(), None);
        // An empty message is a line too.
        let l = a
            .push(parse(b"2026-11-27T10:00:01Z stdout F"), 130, 160)
            .remove(0);
        assert_eq!(l.message, "");
    }

    #[test]
    fn docker_json_lines_are_parsed_and_partials_joined() {
        let mut a = Assembler::default();
        let p = parse(br#"{"log":"part one ","stream":"stderr","time":"2026-11-27T10:00:00Z"}"#);
        assert!(p.partial);
        assert_eq!(a.push(p, 0, 10), vec![]);
        let l = a
            .push(
                parse(br#"{"log":"part two\n","stream":"stderr","time":"2026-11-27T10:00:00.1Z"}"#),
                10,
                20,
            )
            .remove(0);
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
