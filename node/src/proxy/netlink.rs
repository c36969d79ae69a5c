//! Set element changes sent to the kernel as one nf_tables netlink batch, without `nft`.
//!
//! `nft -f` costs a process start and a dump of the whole table into its cache on every run
//! (tens of milliseconds with thousands of services); a batch of `NFT_MSG_NEWSETELEM` /
//! `NFT_MSG_DELSETELEM` messages between `NFNL_MSG_BATCH_BEGIN` and `NFNL_MSG_BATCH_END` is one
//! transaction like an `nft -f` script: the kernel applies all of it or nothing. Only element
//! changes go this way (chains, rules and sets stay with `nft`); the few message types are
//! written out here (the netlink crates on crates.io that know nf_tables are GPL or link
//! libnftnl).

use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::nft::{ElementChange, Value};

const NETLINK_NETFILTER: i32 = 12;
const AF_NETLINK: i32 = 16;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFPROTO_IPV4: u8 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// `NF_DROP`.
const VERDICT_DROP: i32 = 0;
/// `NFT_GOTO`.
const VERDICT_GOTO: i32 = -4;
/// Larger batches go through `nft -f` (a netlink message must fit the socket's send buffer).
pub const MAX_BATCH_BYTES: usize = 128 * 1024;
/// How long to wait for the kernel's answer to a batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed batch.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened, written or read.
    #[error("nf_tables netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused a message (nothing of the batch was applied).
    #[error("the kernel refused set element changes: {0}")]
    Refused(std::io::Error),
    /// The batch is too large for one message.
    #[error("{0} bytes of set element changes: too many for one netlink batch")]
    TooLarge(usize),
    /// The kernel's answer made no sense or did not come.
    #[error("nf_tables netlink: {0}")]
    Protocol(&'static str),
}

/// The sequence number of the next message: unique across batches, so an answer left over from
/// an earlier batch is never taken for one of this batch.
static SEQ: AtomicU32 = AtomicU32::new(1);

/// The socket, kept open: closing a netlink socket waits for an RCU grace period (about 15 ms
/// here), more than the whole change costs. Kept with the network namespace it was opened in
/// (`/proc/thread-self/ns/net`): a caller in another namespace gets a socket of its own.
static SOCKET: Mutex<Option<(String, Socket)>> = Mutex::new(None);

/// The calling thread's network namespace (`net:[<inode>]`).
fn current_netns() -> std::io::Result<String> {
    Ok(std::fs::read_link("/proc/thread-self/ns/net")?.to_string_lossy().into_owned())
}

/// One batch being built.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// Sequence numbers of the messages the kernel acknowledges.
    acked: Vec<u32>,
}

impl Batch {
    fn new() -> Self {
        let mut b = Batch { buf: Vec::with_capacity(4096), seq: 0, acked: Vec::new() };
        // res_id of a batch message: the subsystem, in network order.
        b.message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, |_| {});
        b
    }

    /// Appends one message; `body` writes its attributes.
    fn message(&mut self, ty: u16, flags: u16, family: u8, res_id: u16, body: impl FnOnce(&mut Vec<u8>)) {
        self.seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]); // length, set below
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        body(&mut self.buf);
        let len = u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX);
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        if flags & NLM_F_ACK != 0 {
            self.acked.push(self.seq);
        }
    }

    fn finish(mut self) -> (Vec<u8>, Vec<u32>) {
        self.message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES, |_| {});
        (self.buf, self.acked)
    }
}

/// Appends an attribute.
fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    pad(buf);
}

/// A NUL-terminated string attribute.
fn attr_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut payload = s.as_bytes().to_vec();
    payload.push(0);
    attr(buf, ty, &payload);
}

/// A nested attribute; `body` writes what it holds.
fn nested(buf: &mut Vec<u8>, ty: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 2]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    body(buf);
    let len = u16::try_from(buf.len() - start).unwrap_or(u16::MAX);
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// An encoded batch: its bytes and the sequence numbers the kernel acknowledges.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The messages.
    pub bytes: Vec<u8>,
    /// Sequence numbers of the messages flagged `NLM_F_ACK`.
    acks: Vec<u32>,
}

/// The batch applying `changes` to table `ip <table>`, in order: one message per run of changes
/// of the same set and kind.
pub fn encode(table: &str, changes: &[ElementChange]) -> Encoded {
    let mut batch = Batch::new();
    let mut i = 0;
    while i < changes.len() {
        let first = changes[i];
        let add = first.value.is_some();
        let run = changes[i..].iter().take_while(|c| c.map == first.map && c.value.is_some() == add).count();
        let (ty, flags) = if add { (NFT_MSG_NEWSETELEM, NLM_F_CREATE) } else { (NFT_MSG_DELSETELEM, 0) };
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | ty;
        batch.message(ty, NLM_F_REQUEST | NLM_F_ACK | flags, NFPROTO_IPV4, 0, |buf| {
            attr_str(buf, NFTA_SET_ELEM_LIST_TABLE, table);
            attr_str(buf, NFTA_SET_ELEM_LIST_SET, &first.map.name());
            nested(buf, NFTA_SET_ELEM_LIST_ELEMENTS, |buf| {
                for c in &changes[i..i + run] {
                    nested(buf, NFTA_LIST_ELEM, |buf| {
                        nested(buf, NFTA_SET_ELEM_KEY, |buf| attr(buf, NFTA_DATA_VALUE, &c.key.bytes()));
                        match c.value {
                            None | Some(Value::None) => {}
                            Some(Value::Data(d)) => {
                                nested(buf, NFTA_SET_ELEM_DATA, |buf| attr(buf, NFTA_DATA_VALUE, &d.bytes()));
                            }
                            Some(Value::Drop) => nested(buf, NFTA_SET_ELEM_DATA, |buf| {
                                nested(buf, NFTA_DATA_VERDICT, |buf| {
                                    attr(buf, NFTA_VERDICT_CODE, &VERDICT_DROP.to_be_bytes());
                                });
                            }),
                            Some(Value::Goto(chain)) => nested(buf, NFTA_SET_ELEM_DATA, |buf| {
                                nested(buf, NFTA_DATA_VERDICT, |buf| {
                                    attr(buf, NFTA_VERDICT_CODE, &VERDICT_GOTO.to_be_bytes());
                                    attr_str(buf, NFTA_VERDICT_CHAIN, chain);
                                });
                            }),
                        }
                    });
                }
            });
        });
        i += run;
    }
    let (bytes, acks) = batch.finish();
    Encoded { bytes, acks }
}

/// Applies `changes` to table `ip <table>` in one transaction (blocking; about a millisecond).
pub fn apply(table: &str, changes: &[ElementChange]) -> Result<(), NetlinkError> {
    if changes.is_empty() {
        return Ok(());
    }
    send(&encode(table, changes))
}

/// Sends an encoded batch and waits for the kernel's verdict (blocking; about a millisecond).
pub fn send(encoded: &Encoded) -> Result<(), NetlinkError> {
    let (batch, mut waiting) = (&encoded.bytes, encoded.acks.clone());
    if batch.len() > MAX_BATCH_BYTES {
        return Err(NetlinkError::TooLarge(batch.len()));
    }
    let netns = current_netns()?;
    let mut guard = SOCKET.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let socket = match guard.take() {
        Some((ns, socket)) if ns == netns => socket,
        other => {
            // Another namespace's socket stays for its namespace.
            *guard = other;
            let socket = Socket::new(Domain::from(AF_NETLINK), Type::RAW, Some(Protocol::from(NETLINK_NETFILTER)))?;
            socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            socket
        }
    };
    let result = exchange(&socket, batch, &mut waiting);
    // Kept after a clean exchange (a refusal is one); after an IO error a fresh socket is opened.
    if guard.is_none() && !matches!(result, Err(NetlinkError::Io(_) | NetlinkError::Protocol(_))) {
        *guard = Some((netns, socket));
    }
    result
}

/// Sends `batch` on `socket` and reads answers until every message in `waiting` is answered or
/// one is refused.
fn exchange(socket: &Socket, batch: &[u8], waiting: &mut Vec<u32>) -> Result<(), NetlinkError> {
    // An unbound netlink socket sends to the kernel (port 0) and is bound on first use.
    let sent = socket.send(batch)?;
    if sent != batch.len() {
        return Err(NetlinkError::Protocol("the batch was sent in part"));
    }
    // The kernel answers every message flagged NLM_F_ACK once the batch is processed: an
    // NLMSG_ERROR with 0 on success, the errno of the refused message otherwise.
    let mut refused = None;
    // Large enough for a refusal, which echoes the refused message.
    let mut buf = vec![0u8; MAX_BATCH_BYTES + 4096];
    let mut reader = socket;
    while !waiting.is_empty() {
        let n = reader.read(&mut buf)?;
        let mut rest = buf.get(..n).ok_or(NetlinkError::Protocol("read past the buffer"))?;
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let ty = u16::from_ne_bytes([rest[4], rest[5]]);
            let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
            if len < 16 || len > rest.len() {
                return Err(NetlinkError::Protocol("a truncated answer"));
            }
            if ty == NLMSG_ERROR {
                let code = rest
                    .get(16..20)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or(NetlinkError::Protocol("an error message without its code"))?;
                waiting.retain(|s| *s != seq);
                if code != 0 && refused.is_none() {
                    refused = Some(std::io::Error::from_raw_os_error(code.saturating_neg()));
                }
            }
            // Messages are 4-byte aligned.
            let next = len.checked_add(3).map(|l| l & !3).unwrap_or(len).min(rest.len());
            rest = &rest[next..];
        }
        if refused.is_some() {
            // A refused batch is aborted whole; what the other messages got does not matter.
            break;
        }
    }
    match refused {
        Some(e) => Err(NetlinkError::Refused(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::super::nft::tests::port;
    use super::super::nft::{self, element_changes, Family, Map, Plan, Table};
    use super::super::runner::Nft;
    use super::*;

    fn listing(table: &str) -> String {
        let out = Command::new("nft").args(["list", "table", "ip", table]).output().expect("nft list");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn batches_are_framed_with_begin_and_end_and_acked_per_message() {
        let t =
            Table { name: "skiff-n1".into(), comment: String::new(), pod_cidr: "10.88.0.0/24".into(), egress: None };
        let new = nft::plan(&t, &[port(&["10.88.0.2"])]);
        let empty = Plan::default();
        let changes = element_changes(&empty, &new);
        let encoded = encode("skiff-n1", &changes);
        let types: Vec<u16> = {
            let (mut at, mut out) = (0, Vec::new());
            while at < encoded.bytes.len() {
                let b = &encoded.bytes[at..];
                out.push(u16::from_ne_bytes([b[4], b[5]]));
                at += u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            }
            out
        };
        let newsetelem = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
        // Begin, one message per set (ip-cluster, nodeport-cluster, the two counts, the two
        // endpoint maps, the two hairpin sets), end.
        assert_eq!(types.first(), Some(&NFNL_MSG_BATCH_BEGIN));
        assert_eq!(types.last(), Some(&NFNL_MSG_BATCH_END));
        assert_eq!(types[1..types.len() - 1], vec![newsetelem; 8]);
        assert_eq!(encoded.acks.len(), 8, "one ack per set message");
        assert!(encoded.acks.windows(2).all(|w| w[0] < w[1]), "sequence numbers never repeat");
    }

    /// In a network namespace of its own (needs root and nft, as the proxy itself): the table
    /// written by `nft -f`, then endpoint changes by netlink, checked against `nft list`.
    #[test]
    fn element_batches_apply_whole_or_not_at_all_in_a_private_netns() {
        let nft = Nft::find().expect("nft is installed (apt-get install nftables)");
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): run as root");
            let t = Table {
                name: "skiff-nltest".into(),
                comment: "test".into(),
                pod_cidr: "10.88.0.0/24".into(),
                egress: None,
            };
            let three = nft::plan(&t, &[port(&["10.88.0.2", "10.88.0.3", "10.88.0.4"])]);
            nft.apply_blocking(&nft::full(&t, [&three])).expect("the full sync");
            let before = listing(&t.name);
            assert!(before.contains("10.43.0.10 . tcp . 80 . 2 : 10.88.0.4 . 8080"), "{before}");

            // One endpoint replaced.
            let replaced = nft::plan(&t, &[port(&["10.88.0.2", "10.88.0.3", "10.88.0.9"])]);
            apply(&t.name, &element_changes(&three, &replaced)).expect("the endpoint replaced");
            let after = listing(&t.name);
            assert!(after.contains("10.43.0.10 . tcp . 80 . 2 : 10.88.0.9 . 8080"), "{after}");
            assert!(after.contains("tcp . 30080 . 2 : 10.88.0.9 . 8080"), "{after}");
            assert!(after.contains("10.88.0.9 . 10.43.0.10 . tcp . 80"), "hairpin: {after}");
            assert!(!after.contains("10.88.0.4"), "{after}");

            // The last endpoint gone: a rejection (a goto verdict) instead.
            let none = nft::plan(&t, &[port(&[])]);
            apply(&t.name, &element_changes(&replaced, &none)).expect("the endpoints removed");
            let empty = listing(&t.name);
            assert!(empty.contains("10.43.0.10 . tcp . 80 : goto reject-chain"), "{empty}");
            assert!(!empty.contains("10.88.0.2 .") && !empty.contains("10.88.0.9"), "{empty}");
            assert!(
                !empty.contains("ip-count-3 {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\telements"),
                "{empty}"
            );

            // A batch the kernel refuses (a set that does not exist) changes nothing.
            let back = nft::plan(&t, &[port(&["10.88.0.2"])]);
            let mut changes = element_changes(&none, &back);
            let key = changes[0].key;
            changes.push(ElementChange { map: Map::Count(Family::Ip, 200), key, value: Some(&Value::None) });
            let refused = apply(&t.name, &changes);
            assert!(matches!(refused, Err(NetlinkError::Refused(_))), "{refused:?}");
            assert_eq!(listing(&t.name), empty, "a refused batch left changes behind");

            changes.pop();
            apply(&t.name, &changes).expect("the endpoint back");
            let one = listing(&t.name);
            assert!(one.contains("10.43.0.10 . tcp . 80 . 0 : 10.88.0.2 . 8080"), "{one}");
            assert!(!one.contains("reject-chain }") || !one.contains("10.43.0.10 . tcp . 80 : goto"), "{one}");
        })
        .join()
        .expect("the netns test thread");
    }
}
