//! SPDY/3.1 frames on the wire (draft 3.1, section 2.2): an 8-byte header, then the payload. A control
//! frame's header is the control bit, version 3 and type, flags and a 24-bit length; a data frame's
//! is the stream id (control bit clear), flags and length. Header blocks stay compressed here
//! ([`super::headers`] owns the zlib streams). Parsing never trusts a length: a frame longer than
//! [`MAX_CONTROL`] or [`MAX_DATA`], or one too short for its type, is an error and ends the
//! connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// The FIN flag (control frames with a stream and data frames).
pub const FLAG_FIN: u8 = 0x01;
/// The UNIDIRECTIONAL flag of SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest control frame payload accepted (header blocks of kubectl's streams are tiny).
pub const MAX_CONTROL: usize = 64 * 1024;
/// The largest data frame payload accepted (Go's `spdystream` writes what `io.Copy` read: 32 KiB).
pub const MAX_DATA: usize = 1024 * 1024;
/// The largest data frame payload written.
pub const WRITE_CHUNK: usize = 32 * 1024;

/// RST_STREAM status codes used here.
pub mod status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
}

/// One frame, header blocks still compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// (flags, id, value) per setting.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Bytes,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this side does not know (the specification says: ignore it).
    Unknown {
        kind: u16,
    },
}

/// Why bytes are not a valid frame; the connection cannot go on after any of these.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("frame of {len} bytes is larger than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("control frame type {kind} of {len} bytes is malformed")]
    Malformed { kind: u16, len: usize },
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const ID_MASK: u32 = 0x7fff_ffff;

/// Takes one frame from the front of `buf`: `Ok(None)` while it is incomplete (nothing consumed).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(header) = buf.get(..8) else { return Ok(None) };
    let first = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let flags = header[4];
    let len = usize::from(header[5]) << 16 | usize::from(header[6]) << 8 | usize::from(header[7]);
    let control = first & 0x8000_0000 != 0;
    let max = if control { MAX_CONTROL } else { MAX_DATA };
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let total = len.checked_add(8).ok_or(FrameError::TooLarge { len, max })?;
    if buf.len() < total {
        buf.reserve(total.saturating_sub(buf.len()));
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(8);
    if !control {
        return Ok(Some(Frame::Data { stream_id: first & ID_MASK, flags, data: frame }));
    }
    let version = u16::try_from((first >> 16) & 0x7fff).unwrap_or_default();
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = u16::try_from(first & 0xffff).unwrap_or_default();
    control_frame(kind, flags, frame).map(Some)
}

fn control_frame(kind: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
    let len = p.len();
    let malformed = FrameError::Malformed { kind, len };
    let need = |n: usize| if len < n { Err(FrameError::Malformed { kind, len }) } else { Ok(()) };
    Ok(match kind {
        SYN_STREAM => {
            need(10)?;
            let stream_id = p.get_u32() & ID_MASK;
            let associated = p.get_u32() & ID_MASK;
            let priority = p.get_u8() >> 5;
            p.advance(1);
            Frame::SynStream { stream_id, associated, priority, flags, headers: p }
        }
        SYN_REPLY | HEADERS => {
            need(4)?;
            let stream_id = p.get_u32() & ID_MASK;
            if kind == SYN_REPLY {
                Frame::SynReply { stream_id, flags, headers: p }
            } else {
                Frame::Headers { stream_id, flags, headers: p }
            }
        }
        RST_STREAM => {
            if len != 8 {
                return Err(malformed);
            }
            Frame::RstStream { stream_id: p.get_u32() & ID_MASK, status: p.get_u32() }
        }
        SETTINGS => {
            need(4)?;
            let count = usize::try_from(p.get_u32()).map_err(|_| FrameError::Malformed { kind, len })?;
            if count.checked_mul(8) != Some(p.len()) {
                return Err(malformed);
            }
            let entries = (0..count)
                .map(|_| {
                    let word = p.get_u32();
                    let flag = u8::try_from(word >> 24).unwrap_or_default();
                    (flag, word & 0x00ff_ffff, p.get_u32())
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        PING => {
            if len != 4 {
                return Err(malformed);
            }
            Frame::Ping { id: p.get_u32() }
        }
        GOAWAY => {
            // SPDY/3 added the status code; tolerate SPDY/2's shorter form.
            need(4)?;
            let last_good = p.get_u32() & ID_MASK;
            let status = if p.remaining() >= 4 { p.get_u32() } else { 0 };
            Frame::GoAway { last_good, status }
        }
        WINDOW_UPDATE => {
            if len != 8 {
                return Err(malformed);
            }
            Frame::WindowUpdate { stream_id: p.get_u32() & ID_MASK, delta: p.get_u32() & ID_MASK }
        }
        kind => Frame::Unknown { kind },
    })
}

fn control_header(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u8(flags);
    let len = u32::try_from(len).unwrap_or(u32::MAX).min(0x00ff_ffff);
    out.put_slice(&len.to_be_bytes()[1..]);
}

/// Appends `frame` to `out`. Payloads are bounded by the caller (data in [`WRITE_CHUNK`] pieces,
/// header blocks from [`super::headers`]).
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::SynStream { stream_id, associated, priority, flags, headers } => {
            control_header(out, SYN_STREAM, *flags, headers.len().saturating_add(10));
            out.put_u32(stream_id & ID_MASK);
            out.put_u32(associated & ID_MASK);
            out.put_u8(priority << 5);
            out.put_u8(0);
            out.put_slice(headers);
        }
        Frame::SynReply { stream_id, flags, headers } | Frame::Headers { stream_id, flags, headers } => {
            let kind = if matches!(frame, Frame::SynReply { .. }) { SYN_REPLY } else { HEADERS };
            control_header(out, kind, *flags, headers.len().saturating_add(4));
            out.put_u32(stream_id & ID_MASK);
            out.put_slice(headers);
        }
        Frame::RstStream { stream_id, status } => {
            control_header(out, RST_STREAM, 0, 8);
            out.put_u32(stream_id & ID_MASK);
            out.put_u32(*status);
        }
        Frame::Settings { flags, entries } => {
            control_header(out, SETTINGS, *flags, entries.len().saturating_mul(8).saturating_add(4));
            out.put_u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
            for (flag, id, value) in entries {
                out.put_u32(u32::from(*flag) << 24 | (id & 0x00ff_ffff));
                out.put_u32(*value);
            }
        }
        Frame::Ping { id } => {
            control_header(out, PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway { last_good, status } => {
            control_header(out, GOAWAY, 0, 8);
            out.put_u32(last_good & ID_MASK);
            out.put_u32(*status);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_header(out, WINDOW_UPDATE, 0, 8);
            out.put_u32(stream_id & ID_MASK);
            out.put_u32(delta & ID_MASK);
        }
        Frame::Data { stream_id, flags, data } => {
            out.put_u32(stream_id & ID_MASK);
            out.put_u8(*flags);
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX).min(0x00ff_ffff);
            out.put_slice(&len.to_be_bytes()[1..]);
            out.put_slice(data);
        }
        Frame::Unknown { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::new();
        encode(&frame, &mut buf);
        let whole = buf.len();
        // Every prefix is incomplete and consumes nothing.
        for cut in 0..whole {
            let mut part = BytesMut::from(&buf[..cut]);
            assert_eq!(decode(&mut part), Ok(None), "prefix {cut} of {frame:?}");
            assert_eq!(part.len(), cut);
        }
        buf.put_slice(b"next");
        assert_eq!(decode(&mut buf), Ok(Some(frame)));
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn every_frame_type_round_trips() {
        let h = Bytes::from_static(b"\x78\xbbcompressed");
        round_trip(Frame::SynStream { stream_id: 7, associated: 3, priority: 5, flags: FLAG_FIN, headers: h.clone() });
        round_trip(Frame::SynReply { stream_id: 1, flags: 0, headers: h.clone() });
        round_trip(Frame::Headers { stream_id: 9, flags: FLAG_FIN, headers: h });
        round_trip(Frame::RstStream { stream_id: 5, status: status::CANCEL });
        round_trip(Frame::Settings { flags: 1, entries: vec![(1, 7, 65536), (0, 4, 100)] });
        round_trip(Frame::Ping { id: 0x7fff_fff1 });
        round_trip(Frame::GoAway { last_good: 11, status: 0 });
        round_trip(Frame::WindowUpdate { stream_id: 3, delta: 1 << 20 });
        round_trip(Frame::Data { stream_id: 3, flags: FLAG_FIN, data: Bytes::from_static(b"hello") });
        round_trip(Frame::Data { stream_id: 3, flags: 0, data: Bytes::new() });
    }

    #[test]
    fn the_wire_layout_is_the_specified_one() {
        let mut buf = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut buf);
        assert_eq!(&buf[..], b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01");
        buf.clear();
        encode(&Frame::Data { stream_id: 1, flags: FLAG_FIN, data: Bytes::from_static(b"ab") }, &mut buf);
        assert_eq!(&buf[..], b"\x00\x00\x00\x01\x01\x00\x00\x02ab");
    }

    #[test]
    fn malformed_and_huge_frames_are_errors() {
        // A data frame announcing 16 MiB: refused from the header alone, nothing allocated for it.
        let mut huge = BytesMut::from(&b"\x00\x00\x00\x01\x00\xff\xff\xff"[..]);
        assert!(matches!(decode(&mut huge), Err(FrameError::TooLarge { .. })));
        let mut big_control = BytesMut::from(&b"\x80\x03\x00\x01\x00\x10\x00\x01"[..]);
        assert!(matches!(decode(&mut big_control), Err(FrameError::TooLarge { .. })));
        let mut version2 = BytesMut::from(&b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"[..]);
        assert_eq!(decode(&mut version2), Err(FrameError::Version(2)));
        let mut short_syn = BytesMut::from(&b"\x80\x03\x00\x01\x00\x00\x00\x04\x00\x00\x00\x01"[..]);
        assert!(matches!(decode(&mut short_syn), Err(FrameError::Malformed { kind: 1, .. })));
        let mut bad_settings = BytesMut::from(&b"\x80\x03\x00\x04\x00\x00\x00\x04\xff\xff\xff\xff"[..]);
        assert!(matches!(decode(&mut bad_settings), Err(FrameError::Malformed { kind: 4, .. })));
        let mut unknown = BytesMut::from(&b"\x80\x03\x00\x0a\x00\x00\x00\x01x"[..]);
        assert_eq!(decode(&mut unknown), Ok(Some(Frame::Unknown { kind: 10 })));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
        }

        #[test]
        fn data_frames_round_trip(id in 1u32..0x7fff_ffff, fin in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let flags = if fin { FLAG_FIN } else { 0 };
            let frame = Frame::Data { stream_id: id, flags, data: Bytes::from(data) };
            let mut buf = BytesMut::new();
            encode(&frame, &mut buf);
            prop_assert_eq!(decode(&mut buf), Ok(Some(frame)));
        }
    }
}
