//! SPDY/3.1 as Kubernetes streams use it (kubectl's `spdystream`): [`frame`] the wire format,
//! [`headers`] the zlib-compressed header blocks with SPDY's [`dictionary`], [`conn`] the server
//! side of one connection. Carried by a plain `Upgrade: SPDY/3.1` HTTP upgrade (kubectl before
//! 1.31, negotiated by `X-Stream-Protocol-Version`) or inside WebSocket binary messages (the
//! `SPDY/3.1+portforward.k8s.io` subprotocol of kubectl 1.31+ port-forward): see [`super::upgrade`].

pub mod conn;
pub mod dictionary;
pub mod frame;
pub mod headers;

pub use conn::{Connection, Incoming, StreamOut};
pub use headers::Headers;
