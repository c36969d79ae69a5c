//! The server side of one SPDY/3.1 connection, as kubectl's `spdystream` client uses it: the
//! client opens streams (odd ids, each SYN_STREAM answered at once with an empty SYN_REPLY), sends
//! data and half-closes with FIN or aborts with RST_STREAM; PINGs are echoed; GOAWAY or the end of
//! the transport ends the connection. One task reads frames, one writes them; handlers get an
//! [`Incoming`] per stream. Flow control is not enforced in either direction, as `spdystream`
//! does not (WINDOW_UPDATE and SETTINGS are read and ignored).

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::frame::{self, status, Frame, FLAG_FIN, WRITE_CHUNK};
use super::headers::{Deflater, Headers, Inflater};

/// Streams open from the client's side at once; more are refused.
pub const MAX_STREAMS: usize = 1024;
/// Data frames buffered per stream before reading the connection waits for its handler.
const STREAM_BUFFER: usize = 16;

/// A stream the client opened.
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends; ends at its FIN, RST_STREAM or the connection's end.
    pub data: mpsc::Receiver<Bytes>,
    /// Cancelled when the client resets the stream or the connection ends.
    pub reset: CancellationToken,
    /// This side's half.
    pub out: StreamOut,
}

enum Out {
    Reply(u32),
    Data { id: u32, data: Bytes, fin: bool },
    Reset { id: u32, status: u32 },
    Pong(u32),
    GoAway { last_good: u32, status: u32 },
}

/// Writes to one stream.
#[derive(Clone)]
pub struct StreamOut {
    id: u32,
    tx: mpsc::Sender<Out>,
}

/// The connection is gone.
#[derive(Debug, thiserror::Error)]
#[error("the SPDY connection is closed")]
pub struct Closed;

impl StreamOut {
    /// Sends `data` (in frames of at most [`WRITE_CHUNK`] bytes).
    pub async fn write(&self, data: &[u8]) -> Result<(), Closed> {
        for chunk in data.chunks(WRITE_CHUNK) {
            let out = Out::Data { id: self.id, data: Bytes::copy_from_slice(chunk), fin: false };
            self.tx.send(out).await.map_err(|_| Closed)?;
        }
        Ok(())
    }

    /// Half-closes this side (an empty DATA frame with FIN).
    pub async fn finish(&self) {
        let _ = self.tx.send(Out::Data { id: self.id, data: Bytes::new(), fin: true }).await;
    }

    /// Aborts the stream (RST_STREAM CANCEL).
    pub async fn reset(&self) {
        let _ = self.tx.send(Out::Reset { id: self.id, status: status::CANCEL }).await;
    }
}

/// One served connection.
pub struct Connection {
    /// Streams as the client opens them; ends with the connection.
    pub streams: mpsc::Receiver<Incoming>,
    /// Cancelled when the connection ends (read side done or failed).
    pub closed: CancellationToken,
    tx: mpsc::Sender<Out>,
}

impl Connection {
    /// Serves SPDY on `io` (already upgraded); the tasks end with the transport.
    pub fn serve<IO>(io: IO) -> Self
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel::<Out>(64);
        let (streams_tx, streams) = mpsc::channel(16);
        let closed = CancellationToken::new();
        let span = tracing::Span::current();
        tokio::spawn(writer(write, rx, closed.clone()).instrument(span.clone()));
        tokio::spawn(reader(read, tx.clone(), streams_tx, closed.clone()).instrument(span));
        Self { streams, closed, tx }
    }

    /// Ends the connection: GOAWAY after what is queued, then the transport is shut down.
    pub async fn close(&self) {
        let _ = self.tx.send(Out::GoAway { last_good: 0, status: 0 }).await;
    }
}

async fn writer<W: AsyncWrite + Unpin>(mut write: W, mut rx: mpsc::Receiver<Out>, closed: CancellationToken) {
    let mut deflater = match Deflater::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "SPDY header compression");
            closed.cancel();
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut done = false;
    loop {
        let first = tokio::select! {
            out = rx.recv() => out,
            () = closed.cancelled() => rx.try_recv().ok(),
        };
        let Some(first) = first else { break };
        let mut next = Some(first);
        // Everything queued goes out in one write.
        while let Some(out) = next.take() {
            let frame = match out {
                Out::Reply(id) => match deflater.write(&Headers::default()) {
                    Ok(block) => Frame::SynReply { stream_id: id, flags: 0, headers: block.into() },
                    Err(e) => {
                        tracing::warn!(error = %e, "SPDY header compression");
                        done = true;
                        break;
                    }
                },
                Out::Data { id, data, fin } => {
                    Frame::Data { stream_id: id, flags: if fin { FLAG_FIN } else { 0 }, data }
                }
                Out::Reset { id, status } => Frame::RstStream { stream_id: id, status },
                Out::Pong(id) => Frame::Ping { id },
                Out::GoAway { last_good, status } => {
                    done = true;
                    Frame::GoAway { last_good, status }
                }
            };
            frame::encode(&frame, &mut buf);
            if done || buf.len() >= 256 * 1024 {
                break;
            }
            next = rx.try_recv().ok();
        }
        if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
            break;
        }
        buf.clear();
        if done {
            break;
        }
    }
    let _ = write.shutdown().await;
    closed.cancel();
}

struct Open {
    data: Option<mpsc::Sender<Bytes>>,
    reset: CancellationToken,
}

async fn reader<R: AsyncRead + Unpin>(
    mut read: R,
    tx: mpsc::Sender<Out>,
    streams: mpsc::Sender<Incoming>,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut inflater = Inflater::default();
    let mut open: HashMap<u32, Open> = HashMap::new();
    let mut last_id = 0u32;
    'read: loop {
        loop {
            let frame = match frame::decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(error = %e, "closing a SPDY connection on a bad frame");
                    let _ = tx.send(Out::GoAway { last_good: last_id, status: 1 }).await;
                    break 'read;
                }
            };
            match frame {
                Frame::SynStream { stream_id, flags, headers, .. } => {
                    let headers = match inflater.read(&headers) {
                        Ok(h) => h,
                        Err(e) => {
                            // The compression state is lost with a bad block: the connection cannot go on.
                            tracing::info!(error = %e, "closing a SPDY connection on a bad header block");
                            let _ = tx.send(Out::GoAway { last_good: last_id, status: 1 }).await;
                            break 'read;
                        }
                    };
                    if stream_id % 2 == 0 || stream_id <= last_id {
                        let _ = tx.send(Out::Reset { id: stream_id, status: status::PROTOCOL_ERROR }).await;
                        continue;
                    }
                    last_id = stream_id;
                    if open.len() >= MAX_STREAMS {
                        let _ = tx.send(Out::Reset { id: stream_id, status: status::REFUSED_STREAM }).await;
                        continue;
                    }
                    if tx.send(Out::Reply(stream_id)).await.is_err() {
                        break 'read;
                    }
                    let (data_tx, data) = mpsc::channel(STREAM_BUFFER);
                    let reset = closed.child_token();
                    if flags & FLAG_FIN == 0 {
                        open.insert(stream_id, Open { data: Some(data_tx), reset: reset.clone() });
                    }
                    let out = StreamOut { id: stream_id, tx: tx.clone() };
                    let incoming = Incoming { id: stream_id, headers, data, reset, out };
                    let _ = streams.send(incoming).await;
                }
                Frame::Data { stream_id, flags, data } => {
                    let Some(entry) = open.get_mut(&stream_id) else {
                        continue;
                    };
                    if !data.is_empty() {
                        if let Some(sender) = &entry.data {
                            if sender.send(data).await.is_err() {
                                entry.data = None;
                            }
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    if let Some(entry) = open.remove(&stream_id) {
                        entry.reset.cancel();
                    }
                }
                Frame::Ping { id } => {
                    // Answer the client's (odd) pings; this side sends none.
                    if id % 2 == 1 && tx.send(Out::Pong(id)).await.is_err() {
                        break 'read;
                    }
                }
                Frame::GoAway { .. } => break 'read,
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
        tokio::select! {
            read = read.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            () = closed.cancelled() => break,
        }
    }
    drop(open);
    closed.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal client: frames written and read over an in-memory pipe.
    struct Client {
        io: tokio::io::DuplexStream,
        deflater: Deflater,
        buf: BytesMut,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            frame::encode(&frame, &mut out);
            self.io.write_all(&out).await.expect("write");
        }
        async fn open(&mut self, id: u32, pairs: &[(&str, &str)], flags: u8) {
            let h = Headers(pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
            let block = self.deflater.write(&h).expect("deflate");
            self.send(Frame::SynStream { stream_id: id, associated: 0, priority: 0, flags, headers: block.into() })
                .await;
        }
        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = frame::decode(&mut self.buf).expect("valid frame") {
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.expect("read") == 0 {
                    return None;
                }
            }
        }
    }

    fn client() -> (Client, Connection) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let client = Client { io: a, deflater: Deflater::new().expect("deflater"), buf: BytesMut::new() };
        (client, Connection::serve(b))
    }

    #[tokio::test]
    async fn streams_are_replied_and_carry_data_both_ways() {
        let (mut c, mut conn) = client();
        c.open(1, &[("streamtype", "data"), ("port", "80")], 0).await;
        assert!(matches!(c.next().await, Some(Frame::SynReply { stream_id: 1, .. })));
        let mut s = conn.streams.recv().await.expect("stream");
        assert_eq!((s.id, s.headers.get("port")), (1, Some("80")));
        c.send(Frame::Data { stream_id: 1, flags: 0, data: Bytes::from_static(b"ping") }).await;
        assert_eq!(s.data.recv().await.as_deref(), Some(&b"ping"[..]));
        c.send(Frame::Data { stream_id: 1, flags: FLAG_FIN, data: Bytes::new() }).await;
        assert!(s.data.recv().await.is_none());
        s.out.write(&vec![7u8; WRITE_CHUNK + 1]).await.expect("write");
        s.out.finish().await;
        let mut got = Vec::new();
        loop {
            match c.next().await {
                Some(Frame::Data { stream_id: 1, flags, data }) => {
                    got.extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        break;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got.len(), WRITE_CHUNK + 1);
        c.send(Frame::Ping { id: 3 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 3 }));
        conn.close().await;
        assert!(matches!(c.next().await, Some(Frame::GoAway { .. })));
        assert_eq!(c.next().await, None);
    }

    #[tokio::test]
    async fn resets_bad_ids_and_garbage_end_the_connection() {
        let (mut c, mut conn) = client();
        c.open(3, &[("a", "b")], 0).await;
        assert!(matches!(c.next().await, Some(Frame::SynReply { stream_id: 3, .. })));
        let s = conn.streams.recv().await.expect("stream");
        c.open(1, &[("a", "b")], 0).await;
        assert_eq!(c.next().await, Some(Frame::RstStream { stream_id: 1, status: status::PROTOCOL_ERROR }));
        c.send(Frame::RstStream { stream_id: 3, status: status::CANCEL }).await;
        s.reset.cancelled().await;
        c.io.write_all(b"\x00\x00\x00\x05\x00\xff\xff\xffgarbage").await.expect("write");
        assert!(matches!(c.next().await, Some(Frame::GoAway { status: 1, .. })));
        assert_eq!(c.next().await, None);
        conn.closed.cancelled().await;
    }
}
