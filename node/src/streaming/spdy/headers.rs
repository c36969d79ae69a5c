//! Header blocks (draft 3.1, section 2.6.10): a count, then length-prefixed names and values
//! (several values of one name joined by NUL), compressed by one zlib stream per direction that
//! starts with SPDY's preset [`super::dictionary`] and is sync-flushed after every block. A block that
//! does not inflate, inflates past [`MAX_BLOCK`] or does not parse is an error for the connection.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::dictionary;

/// The largest inflated header block accepted.
pub const MAX_BLOCK: usize = 64 * 1024;
/// The most name/value pairs accepted in one block.
pub const MAX_PAIRS: usize = 256;

/// A stream's headers, names lower-case as SPDY sends them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The (first) value of `name`, compared without case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.split('\0').next().unwrap_or(v))
    }
}

/// Why a header block cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("header block does not inflate: {0}")]
    Inflate(String),
    #[error("header block inflates to more than {MAX_BLOCK} bytes")]
    TooLarge,
    #[error("header block is malformed")]
    Malformed,
    #[error("header block cannot be compressed: {0}")]
    Deflate(String),
}

fn progress(before: u64, after: u64) -> usize {
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}

/// The inflating side (blocks the peer sent).
pub struct Inflater {
    z: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Self { z: Decompress::new(true) }
    }
}

impl Inflater {
    /// Inflates and parses one header block.
    pub fn read(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        parse(&self.inflate(block)?)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut used = 0usize;
        loop {
            let rest = block.get(used..).unwrap_or_default();
            let (in_before, out_before) = (self.z.total_in(), out.len());
            let result = self.z.decompress_vec(rest, &mut out, FlushDecompress::Sync);
            used = used.saturating_add(progress(in_before, self.z.total_in()));
            match result {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(Status::Ok | Status::BufError) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(dictionary()).map_err(|e| HeaderError::Inflate(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Inflate(e.to_string())),
            }
            let room = out.len() < out.capacity();
            if used >= block.len() && room {
                return Ok(out);
            }
            if room && out.len() == out_before && used < block.len() && progress(in_before, self.z.total_in()) == 0 {
                return Err(HeaderError::Inflate("no progress".into()));
            }
            if !room {
                if out.len() >= MAX_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve(out.len().min(MAX_BLOCK.saturating_sub(out.len())).max(1024));
            }
        }
    }
}

fn take_u32(buf: &mut &[u8]) -> Result<usize, HeaderError> {
    let (head, rest) = buf.split_first_chunk::<4>().ok_or(HeaderError::Malformed)?;
    *buf = rest;
    usize::try_from(u32::from_be_bytes(*head)).map_err(|_| HeaderError::Malformed)
}

fn take_str(buf: &mut &[u8]) -> Result<String, HeaderError> {
    let len = take_u32(buf)?;
    if len > buf.len() {
        return Err(HeaderError::Malformed);
    }
    let (s, rest) = buf.split_at(len);
    *buf = rest;
    String::from_utf8(s.to_vec()).map_err(|_| HeaderError::Malformed)
}

/// Parses an inflated name/value block.
pub fn parse(mut block: &[u8]) -> Result<Headers, HeaderError> {
    let count = take_u32(&mut block)?;
    if count > MAX_PAIRS {
        return Err(HeaderError::Malformed);
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take_str(&mut block)?;
        let value = take_str(&mut block)?;
        pairs.push((name, value));
    }
    Ok(Headers(pairs))
}

/// Serializes a name/value block (names lower-cased, as SPDY requires).
pub fn serialize(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len(headers.0.len()));
    for (name, value) in &headers.0 {
        let name = name.to_ascii_lowercase();
        out.extend_from_slice(&len(name.len()));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&len(value.len()));
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The deflating side (blocks this side sends).
pub struct Deflater {
    z: Compress,
}

impl Deflater {
    /// A stream primed with the dictionary, as Go's `zlib.NewWriterLevelDict` starts one.
    pub fn new() -> Result<Self, HeaderError> {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary()).map_err(|e| HeaderError::Deflate(e.to_string()))?;
        Ok(Self { z })
    }

    /// Compresses one header block, sync-flushed so the peer can read it whole.
    pub fn write(&mut self, headers: &Headers) -> Result<Vec<u8>, HeaderError> {
        let input = serialize(headers);
        let mut out = Vec::with_capacity(input.len().saturating_add(64));
        let mut used = 0usize;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            let before = self.z.total_in();
            self.z
                .compress_vec(rest, &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Deflate(e.to_string()))?;
            used = used.saturating_add(progress(before, self.z.total_in()));
            if used >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(256);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect())
    }

    #[test]
    fn blocks_round_trip_through_one_stream_per_direction() {
        let mut out = Deflater::new().expect("deflater");
        let mut inp = Inflater::default();
        let first = headers(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]);
        let second = headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        let a = out.write(&first).expect("deflate");
        let b = out.write(&second).expect("deflate");
        // zlib header with FDICT and the dictionary's id, as Go writes it.
        assert_eq!(a.get(2..6), Some(&0xe3c6_a7c2u32.to_be_bytes()[..]));
        assert_eq!(inp.read(&a).expect("inflate"), first);
        assert_eq!(inp.read(&b).expect("inflate"), second);
        assert_eq!(inp.read(&out.write(&Headers::default()).expect("deflate")).expect("inflate"), Headers::default());
        assert_eq!(second.get("StreamType"), Some("data"));
    }

    #[test]
    fn a_stream_without_the_dictionary_or_garbage_is_refused() {
        let mut plain = Compress::new(Compression::best(), true);
        let mut block = Vec::with_capacity(256);
        plain.compress_vec(&serialize(&headers(&[("a", "b")])), &mut block, FlushCompress::Sync).expect("compress");
        // Plain zlib (no dictionary) is fine to inflate; a wrong dictionary id is not.
        assert!(Inflater::default().read(&block).is_ok());
        let mut wrong = vec![0x78, 0xbb, 0, 0, 0, 1];
        wrong.extend_from_slice(&block[2..]);
        assert!(Inflater::default().read(&wrong).is_err());
        assert!(Inflater::default().read(b"not zlib at all").is_err());
    }

    #[test]
    fn malformed_name_value_blocks_are_errors() {
        assert!(parse(b"\x00\x00\x00\x01\x00\x00\x00\x05ab").is_err());
        assert!(parse(b"\xff\xff\xff\xff").is_err());
        assert!(parse(b"\x00\x00").is_err());
        assert_eq!(parse(b"\x00\x00\x00\x00").expect("empty"), Headers::default());
    }

    #[test]
    fn a_bomb_stops_at_the_bound() {
        let mut out = Deflater::new().expect("deflater");
        let big = "x".repeat(MAX_BLOCK * 2);
        let block = out.write(&headers(&[("a", &big)])).expect("deflate");
        assert!(matches!(Inflater::default().read(&block), Err(HeaderError::TooLarge)));
    }

    proptest! {
        #[test]
        fn arbitrary_blocks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = Inflater::default().read(&bytes);
            let _ = parse(&bytes);
        }

        #[test]
        fn arbitrary_headers_round_trip(pairs in proptest::collection::vec(("[a-z-]{1,12}", "[ -~]{0,40}"), 0..8)) {
            let h = Headers(pairs);
            let mut out = Deflater::new().expect("deflater");
            prop_assert_eq!(Inflater::default().read(&out.write(&h).expect("deflate")).expect("inflate"), h);
        }
    }
}
