//! The etcd v3 backend: the [`Store`] model is etcd's own, so every operation is one etcd call.
//!
//! Conditional writes are transactions comparing `create_revision` (create) or `mod_revision`
//! (update, delete) and reading the key back when the comparison fails, so a `Conflict` carries
//! the current value without a second round trip.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions,
};
use futures::StreamExt;

use super::{Event, EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream};

/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive, so a dead connection (and the watches on it) is noticed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// A key used only for reads that need no data (revision probes); etcd keys cannot be empty.
const PROBE_KEY: &[u8] = b"\0";

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("etcd: {err}"))
}

/// etcd errors that the [`Store`] model names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Compacted,
    FutureRevision,
}

/// Recognises etcd's "required revision has been compacted" and "... is a future revision".
fn refusal(err: &etcd_client::Error) -> Option<Refusal> {
    let etcd_client::Error::GRpcStatus(status) = err else {
        return None;
    };
    let message = status.message();
    if message.contains("required revision has been compacted") {
        Some(Refusal::Compacted)
    } else if message.contains("future revision") {
        Some(Refusal::FutureRevision)
    } else {
        None
    }
}

/// The end of the key range of `prefix` (etcd's `"\0"` means "to the last key").
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv.key_str().map_err(backend)?.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// A watch event in the [`Store`] model: a delete carries the deleted value (from `prev_kv`) at
/// the revision of the delete.
fn to_event(event: &etcd_client::Event) -> Result<Event, StoreError> {
    let kv = event.kv().ok_or_else(|| backend("watch event without a key"))?;
    let prev = event.prev_kv().map(to_kv).transpose()?;
    match event.event_type() {
        etcd_client::EventType::Put => Ok(Event { kind: EventKind::Put, kv: to_kv(kv)?, prev }),
        etcd_client::EventType::Delete => {
            let key = kv.key_str().map_err(backend)?.to_string();
            let kv = match &prev {
                Some(prev) => KeyValue { mod_revision: kv.mod_revision(), ..prev.clone() },
                // The previous value was compacted away: all that is left is the key.
                None => KeyValue { key, value: Vec::new(), create_revision: 0, mod_revision: kv.mod_revision() },
            };
            Ok(Event { kind: EventKind::Delete, kv, prev })
        }
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header.map(|h| h.revision()).ok_or_else(|| backend("response without a header"))
}

/// The key read back by the `or_else` branch of a failed transaction.
fn failed_txn_current(resp: &TxnResponse) -> Result<Option<KeyValue>, StoreError> {
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return get.kvs().first().map(to_kv).transpose();
        }
    }
    Err(backend("transaction answered without the key's current value"))
}

/// `NotFound` or `Conflict` for a compare-and-swap on `key` that did not match `expected`.
fn cas_failure(key: &str, expected: Revision, resp: &TxnResponse) -> StoreError {
    match failed_txn_current(resp) {
        Ok(Some(current)) => StoreError::Conflict { key: key.to_string(), expected, current: Box::new(current) },
        Ok(None) => StoreError::NotFound(key.to_string()),
        Err(err) => err,
    }
}

/// Compares that hold when `key` exists with `mod_revision == expected`.
fn exists_at(key: &str, expected: Revision) -> [Compare; 2] {
    [Compare::create_revision(key, CompareOp::Greater, 0), Compare::mod_revision(key, CompareOp::Equal, expected)]
}

/// The etcd [`Store`].
pub struct EtcdStore {
    client: Client,
    /// The newest compacted revision seen; compaction only moves forward.
    compacted: AtomicI64,
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`) and checks that it answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT);
        let client = Client::connect(endpoints, Some(options)).await.map_err(backend)?;
        let store = Self { client, compacted: AtomicI64::new(0) };
        let revision = store.current_revision().await?;
        tracing::info!(?endpoints, revision, "connected to etcd");
        Ok(store)
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client()
    }

    /// Maps a failed read at `requested` to `Compacted` / `FutureRevision` when it is one.
    async fn read_error(&self, err: etcd_client::Error, requested: Revision) -> StoreError {
        match refusal(&err) {
            Some(Refusal::Compacted) => match self.compacted_revision().await {
                Ok(compacted) => StoreError::Compacted { requested, compacted },
                Err(err) => err,
            },
            Some(Refusal::FutureRevision) => match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(err) => err,
            },
            None => backend(err),
        }
    }

    /// Whether the store can still be read at `revision`.
    async fn readable(&self, revision: Revision) -> Result<bool, StoreError> {
        let options = GetOptions::new().with_revision(revision).with_count_only();
        match self.kv().get(PROBE_KEY, Some(options)).await {
            Ok(_) => Ok(true),
            Err(err) if refusal(&err) == Some(Refusal::Compacted) => Ok(false),
            Err(err) => Err(backend(err)),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.kv().txn(txn).await.map_err(backend)
    }

    async fn delete_any(&self, key: &str) -> Result<KeyValue, StoreError> {
        let resp = self.kv().delete(key, Some(DeleteOptions::new().with_prev_key())).await.map_err(backend)?;
        let revision = header_revision(resp.header())?;
        let prev = resp.prev_kvs().first().ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        Ok(KeyValue { mod_revision: revision, ..to_kv(prev)? })
    }

    async fn delete_at(&self, key: &str, expected: Revision) -> Result<KeyValue, StoreError> {
        let txn = Txn::new()
            .when(exists_at(key, expected))
            .and_then([TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(cas_failure(key, expected, &resp));
        }
        let revision = header_revision(resp.header())?;
        let prev = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
            _ => None,
        });
        let prev = prev.ok_or_else(|| backend("delete answered without the deleted value"))?;
        Ok(KeyValue { mod_revision: revision, ..to_kv(&prev)? })
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let txn = Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key,
            value.clone(),
            None,
        )]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue { key: key.to_string(), value, create_revision: revision, mod_revision: revision })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        let txn = Txn::new()
            .when(exists_at(key, expected))
            .and_then([TxnOp::put(key, value.clone(), Some(PutOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(cas_failure(key, expected, &resp));
        }
        let revision = header_revision(resp.header())?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(put) => put.prev_key().map(|prev| prev.create_revision()),
                _ => None,
            })
            .ok_or_else(|| backend("update answered without the previous value"))?;
        Ok(KeyValue { key: key.to_string(), value, create_revision, mod_revision: revision })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        match expected {
            Some(expected) => self.delete_at(key, expected).await,
            None => self.delete_any(key).await,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self.kv().get(key, None).await.map_err(backend)?;
        resp.kvs().first().map(to_kv).transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        if opts.limit.is_some_and(|l| l > 0) {
            return self.list_page(prefix, opts).await;
        }
        // An unlimited list is read in pages at one revision: one etcd response must stay under
        // the gRPC message limit (4 MiB), which 10,000 pods exceed.
        let mut page = self.list_page(prefix, ListOptions { limit: Some(UNLIMITED_PAGE), ..opts }).await?;
        let mut items = std::mem::take(&mut page.items);
        while page.more {
            let start_after = items.last().map(|kv| kv.key.clone());
            page = self
                .list_page(
                    prefix,
                    ListOptions { start_after, limit: Some(UNLIMITED_PAGE), revision: Some(page.revision) },
                )
                .await?;
            items.append(&mut page.items);
        }
        Ok(ListResult { items, revision: page.revision, more: false })
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let options = GetOptions::new().with_prefix().with_count_only();
        let resp = self.kv().get(prefix, Some(options)).await.map_err(backend)?;
        u64::try_from(resp.count()).map_err(backend)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let resp = self.kv().get(PROBE_KEY, Some(GetOptions::new().with_count_only())).await.map_err(backend)?;
        header_revision(resp.header())
    }

    /// etcd does not report its compacted revision, so this finds the oldest readable revision
    /// by probing (one read when nothing moved since the last call, a binary search otherwise).
    /// Never compacted gives 0.
    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        let known = self.compacted.load(Ordering::Relaxed);
        let mut unreadable = known.max(1);
        if self.readable(unreadable).await? {
            return Ok(known);
        }
        let mut readable = self.current_revision().await?;
        while readable - unreadable > 1 {
            let mid = unreadable + (readable - unreadable) / 2;
            if self.readable(mid).await? {
                readable = mid;
            } else {
                unreadable = mid;
            }
        }
        self.compacted.fetch_max(readable, Ordering::Relaxed);
        Ok(readable)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Revision 0 is the first (an empty etcd is at revision 1, so this replays everything).
        let after = after.max(0);
        let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(after + 1);
        let (watcher, mut events) = self.client.watch_client().watch(prefix, Some(options)).await.map_err(backend)?;
        let stream = async_stream::stream! {
            // Dropping the watcher closes the request side, and etcd then ends the watch.
            let _watcher = watcher;
            loop {
                let resp = match events.message().await {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        yield Err(backend("watch stream ended"));
                        return;
                    }
                    Err(err) => {
                        yield Err(backend(err));
                        return;
                    }
                };
                if resp.compact_revision() > 0 {
                    yield Err(StoreError::Compacted { requested: after, compacted: resp.compact_revision() });
                    return;
                }
                if resp.canceled() {
                    yield Err(backend(format!("watch canceled: {}", resp.cancel_reason())));
                    return;
                }
                for event in resp.events() {
                    match to_event(event) {
                        Ok(event) => yield Ok(event),
                        Err(err) => {
                            yield Err(err);
                            return;
                        }
                    }
                }
            }
        };
        Ok(stream.boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.kv().compact(revision, None).await {
            Ok(_) => {}
            // Already compacted at or past `revision`: nothing to do.
            Err(err) if refusal(&err) == Some(Refusal::Compacted) => return Ok(()),
            Err(err) => return Err(self.read_error(err, revision).await),
        }
        self.compacted.fetch_max(revision, Ordering::Relaxed);
        tracing::debug!(revision, "compacted etcd");
        Ok(())
    }
}

/// Keys per etcd request when the caller asked for all of them.
const UNLIMITED_PAGE: usize = 1000;

impl EtcdStore {
    /// One etcd range request (`limit` honoured as given).
    async fn list_page(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        if let Some(after) = &opts.start_after {
            let mut above = after.as_bytes().to_vec();
            above.push(0);
            start = start.max(above);
        }
        if start.is_empty() {
            start = PROBE_KEY.to_vec();
        }
        let limit = opts.limit.filter(|&l| l > 0);
        let revision = opts.revision.filter(|&r| r > 0);
        let mut options = GetOptions::new().with_range(end);
        if let Some(limit) = limit {
            // One more than asked tells whether more keys follow.
            options = options.with_limit(i64::try_from(limit).unwrap_or(i64::MAX - 1).saturating_add(1));
        }
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let resp = match self.kv().get(start, Some(options)).await {
            Ok(resp) => resp,
            Err(err) => return Err(self.read_error(err, revision.unwrap_or(0)).await),
        };
        let mut items = resp.kvs().iter().map(to_kv).collect::<Result<Vec<_>, _>>()?;
        let more = limit.is_some_and(|l| items.len() > l);
        if let Some(limit) = limit {
            items.truncate(limit);
        }
        let revision = match revision {
            Some(revision) => revision,
            None => header_revision(resp.header())?,
        };
        Ok(ListResult { items, revision, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
