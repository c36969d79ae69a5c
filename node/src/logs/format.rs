//! The CRI log line format: encoding one entry, parsing one line, and the timestamp style.

use jiff::Timestamp;

use super::Stream;

/// The longest content of one CRI line; a longer output line is split into partial (`P`) entries.
pub const MAX_LINE: usize = 16 * 1024;

/// A timestamp as RFC3339 with nine fractional digits in UTC (Go's `RFC3339NanoFixed`), the way the
/// kubelet prints it with `--timestamps`.
pub fn timestamp(ts: Timestamp) -> String {
    format!("{ts:.9}")
}

/// Appends one CRI line (`<ts> <stream> <F|P> <content>\n`) to `out`.
pub fn encode(out: &mut Vec<u8>, ts: &str, stream: Stream, partial: bool, content: &[u8]) {
    out.reserve(ts.len() + content.len() + 12);
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Appends one output line as CRI lines: full lines of at most [`MAX_LINE`] bytes as `F`, longer ones
/// as `P` chunks ending with an `F`.
pub fn encode_line(out: &mut Vec<u8>, ts: &str, stream: Stream, content: &[u8]) {
    let mut rest = content;
    while rest.len() > MAX_LINE {
        let (chunk, tail) = rest.split_at(MAX_LINE);
        encode(out, ts, stream, true, chunk);
        rest = tail;
    }
    encode(out, ts, stream, false, rest);
}

/// One parsed CRI line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub ts: Timestamp,
    pub stream: Stream,
    /// `P`: the output line continues in the next entry.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one CRI line (without its trailing newline); `None` if it is not one.
pub fn parse(line: &[u8]) -> Option<Entry<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(fields.next()?).ok()?.parse::<Timestamp>().ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    // The tag may carry more flags after a colon; the first is the partial/full marker.
    let tag = fields.next()?;
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    Some(Entry { ts, stream, partial, content: fields.next().unwrap_or(b"") })
}
