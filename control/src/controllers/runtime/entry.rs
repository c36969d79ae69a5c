//! How an informer holds one object: a [`Summary`] of the fields lookups filter on, and the
//! object itself, either decoded or *packed* (its JSON compressed with zstd).
//!
//! A decoded pod is about 18 KB (`serde_json::Value` keeps each of a pod's ~25 small objects in
//! a 630-byte B-tree node); packed it is about 0.2-0.3 KB. Kinds that can number in the hundreds
//! of thousands (pods) are packed and decoded on read; reads that filter (by labels, owner, node)
//! test the summary first and decode only what they return.
//!
//! Packing uses a zstd dictionary: a typical pod as skiff stores it (`pod_dictionary.json`: the
//! service-account volume, default tolerations, a running status), so what every pod repeats
//! costs a few bytes of back-reference. Alone a pod packs to about half its JSON (0.8 KB); with
//! the dictionary to about an eighth.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::Value;

use crate::api::object;
use crate::api::selector::{LabelSelector, Labels};
use crate::controllers::podutil::PodState;

/// zstd's fastest level: a pod packs in a few microseconds.
const PACK_LEVEL: i32 = 1;

/// The dictionary's source: a typical pod, keys sorted as `serde_json` writes them.
const DICTIONARY_SOURCE: &str = include_str!("pod_dictionary.json");

/// The dictionary as packed JSON is written (compact, the same key order), made once.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICTIONARY.get_or_init(|| {
        serde_json::from_str::<Value>(DICTIONARY_SOURCE)
            .and_then(|v| serde_json::to_vec(&v))
            .unwrap_or_else(|_| DICTIONARY_SOURCE.as_bytes().to_vec())
    })
}

/// What an informer's lookups filter on, taken from the object once when it is cached.
#[derive(Debug, Default)]
pub struct Summary {
    resource_version: Box<str>,
    labels: Labels,
    /// The uids `metadata.ownerReferences` name.
    owners: Box<[Box<str>]>,
    /// The uid of the owner reference with `controller: true`.
    controller: Option<Box<str>>,
    /// `spec.nodeName` (pods).
    node_name: Option<Box<str>>,
    /// What workload controllers count (pods; meaningless for other kinds).
    pod: PodState,
}

impl Summary {
    /// The summary of `obj`.
    pub fn of(obj: &Value) -> Self {
        let meta = object::meta(obj);
        let refs = meta.get("ownerReferences").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let uid = |r: &Value| r.get("uid").and_then(Value::as_str).map(Box::<str>::from);
        Self {
            resource_version: object::resource_version(obj).unwrap_or_default().into(),
            labels: Labels::of(obj),
            owners: refs.iter().filter_map(uid).collect(),
            controller: refs.iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true)).and_then(uid),
            node_name: object::str_at(obj, &["spec", "nodeName"]).filter(|n| !n.is_empty()).map(Box::from),
            pod: PodState::of(obj),
        }
    }

    /// `metadata.resourceVersion` ("" when unset).
    pub fn resource_version(&self) -> &str {
        &self.resource_version
    }

    /// One label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }

    /// Whether the object's labels satisfy `selector`.
    pub fn matches(&self, selector: &LabelSelector) -> bool {
        self.labels.matched_by(selector)
    }

    /// The uids of the object's owners.
    pub fn owner_uids(&self) -> impl Iterator<Item = &str> {
        self.owners.iter().map(AsRef::as_ref)
    }

    /// The uid of the object's controller (the owner reference with `controller: true`).
    pub fn controller_uid(&self) -> Option<&str> {
        self.controller.as_deref()
    }

    /// `spec.nodeName`, when set.
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    /// A pod's state as workload controllers count it.
    pub fn pod_state(&self) -> PodState {
        self.pod
    }
}

/// The object as the cache holds it. Cloning is cheap (reference counted either way), so
/// readers clone under the cache's lock and decode after releasing it.
#[derive(Clone, Debug)]
pub enum Repr {
    /// Kept decoded.
    Decoded(Arc<Value>),
    /// The JSON, zstd-compressed, and its length.
    Packed { json_len: usize, bytes: Arc<[u8]> },
}

impl Repr {
    /// `obj` held decoded, or packed when `pack` (decoded if it cannot be packed).
    pub fn new(obj: Arc<Value>, pack: bool) -> Self {
        if !pack {
            return Repr::Decoded(obj);
        }
        let packed = serde_json::to_vec(obj.as_ref())
            .map_err(|e| e.to_string())
            .and_then(|json| compress(&json).map(|b| (json.len(), b)).map_err(|e| e.to_string()));
        match packed {
            Ok((json_len, bytes)) => Repr::Packed { json_len, bytes: bytes.into() },
            Err(error) => {
                tracing::warn!(%error, "packing a cached object failed; keeping it decoded");
                Repr::Decoded(obj)
            }
        }
    }

    /// The object (decoded again when packed). `None` only if packed bytes fail to decode,
    /// which the cache's own bytes never should (logged).
    pub fn object(&self) -> Option<Arc<Value>> {
        match self {
            Repr::Decoded(obj) => Some(Arc::clone(obj)),
            Repr::Packed { json_len, bytes } => {
                let decoded = decompress(bytes, *json_len)
                    .map_err(|e| e.to_string())
                    .and_then(|json| serde_json::from_slice::<Value>(&json).map_err(|e| e.to_string()));
                match decoded {
                    Ok(obj) => Some(Arc::new(obj)),
                    Err(error) => {
                        tracing::error!(%error, "a packed cached object does not decode");
                        None
                    }
                }
            }
        }
    }
}

thread_local! {
    /// This thread's zstd contexts, made on first use and kept: a context per call (tables of
    /// about 100 KB to allocate and zero) cost more than packing or unpacking a pod.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `json` packed at [`PACK_LEVEL`] with this thread's context.
fn compress(json: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(compressor) => compressor,
            None => slot.insert(zstd::bulk::Compressor::with_dictionary(PACK_LEVEL, dictionary())?),
        };
        compressor.compress(json)
    })
}

/// Packed `bytes` unpacked (into at most `json_len` bytes) with this thread's context.
fn decompress(bytes: &[u8], json_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(decompressor) => decompressor,
            None => slot.insert(zstd::bulk::Decompressor::with_dictionary(dictionary())?),
        };
        decompressor.decompress(bytes, json_len)
    })
}

/// One cached object.
#[derive(Debug)]
pub struct Entry {
    pub summary: Arc<Summary>,
    pub repr: Repr,
}

impl Entry {
    /// The entry of `obj`, packed when `pack`.
    pub fn new(obj: Arc<Value>, pack: bool) -> Self {
        Self { summary: Arc::new(Summary::of(&obj)), repr: Repr::new(obj, pack) }
    }
}

/// A cached object as a reader takes it without decoding it: its summary, and the object
/// itself on demand (a controller counting pods reads their summaries only).
#[derive(Clone, Debug)]
pub struct Cached {
    pub summary: Arc<Summary>,
    repr: Repr,
}

impl Cached {
    /// The cached form of `entry`.
    pub fn new(entry: &Entry) -> Self {
        Self { summary: Arc::clone(&entry.summary), repr: entry.repr.clone() }
    }

    /// An object a reader has decoded already (one it just wrote).
    pub fn decoded(obj: Arc<Value>) -> Self {
        Self { summary: Arc::new(Summary::of(&obj)), repr: Repr::Decoded(obj) }
    }

    /// The object (decoded now when packed); `None` only if its packed bytes fail to decode.
    pub fn object(&self) -> Option<Arc<Value>> {
        self.repr.object()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "default", "resourceVersion": "42",
                "labels": {"tier": "front", "app": "web"},
                "ownerReferences": [
                    {"uid": "u-other", "kind": "Thing", "name": "t"},
                    {"uid": "u-rs", "kind": "ReplicaSet", "name": "web", "controller": true},
                ],
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "x"}]},
            "status": {"phase": "Running"},
        })
    }

    #[test]
    fn the_summary_holds_what_lookups_filter_on() {
        let s = Summary::of(&pod());
        assert_eq!(s.resource_version(), "42");
        assert_eq!(s.label("app"), Some("web"));
        assert_eq!(s.label("tier"), Some("front"));
        assert_eq!(s.label("zone"), None);
        assert_eq!(s.owner_uids().collect::<Vec<_>>(), vec!["u-other", "u-rs"]);
        assert_eq!(s.controller_uid(), Some("u-rs"));
        assert_eq!(s.node_name(), Some("n1"));
        assert_eq!(s.pod_state(), PodState { active: true, deleting: false, ready: false, ready_since: None });
        let sel = |s: &str| LabelSelector::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.matches(&sel("app=web,tier in (front,back)")));
        assert!(s.matches(&sel("!zone")));
        assert!(!s.matches(&sel("app=db")));
        assert!(!s.matches(&LabelSelector::nothing()));
        assert!(s.matches(&LabelSelector::everything()));
    }

    #[test]
    fn an_object_without_metadata_has_an_empty_summary() {
        let s = Summary::of(&json!({}));
        assert_eq!(s.resource_version(), "");
        assert_eq!(s.label("app"), None);
        assert_eq!(s.controller_uid(), None);
        assert_eq!(s.node_name(), None);
    }

    #[test]
    fn a_packed_object_decodes_to_the_same_value_and_is_smaller() {
        let obj = Arc::new(pod());
        let packed = Repr::new(Arc::clone(&obj), true);
        let Repr::Packed { bytes, json_len } = &packed else { panic!("not packed") };
        assert!(bytes.len() < *json_len, "{} >= {json_len}", bytes.len());
        assert_eq!(packed.object().as_deref(), Some(obj.as_ref()));
        let decoded = Repr::new(Arc::clone(&obj), false);
        assert!(matches!(&decoded, Repr::Decoded(o) if Arc::ptr_eq(o, &obj)));
    }

    #[test]
    fn a_typical_pod_packs_to_an_eighth_of_its_json() {
        let stored: Value = serde_json::from_str(DICTIONARY_SOURCE).unwrap_or_default();
        assert!(stored.get("spec").is_some(), "the dictionary is a pod");
        let mut pod = stored.clone();
        pod["metadata"]["name"] = json!("api-7f9c6d5b8-x2kq9");
        pod["metadata"]["uid"] = json!("3b1f0c2e-9a47-4d1e-8c55-0f2b7a9e6d13");
        pod["metadata"]["labels"] = json!({"app": "api", "pod-template-hash": "7f9c6d5b8"});
        pod["spec"]["containers"][0]["image"] = json!("127.0.0.1:5000/api:2");
        pod["status"]["podIP"] = json!("10.42.3.77");
        let json_len = serde_json::to_vec(&pod).map(|v| v.len()).unwrap_or_default();
        let packed = Repr::new(Arc::new(pod.clone()), true);
        let Repr::Packed { bytes, .. } = &packed else { panic!("not packed") };
        assert!(bytes.len() * 8 < json_len, "{} bytes packed of {json_len}", bytes.len());
        assert_eq!(packed.object().as_deref(), Some(&pod));
    }

    #[test]
    fn corrupt_packed_bytes_read_as_missing_not_garbage() {
        let corrupt = Repr::Packed { json_len: 10, bytes: Arc::from(&b"not zstd"[..]) };
        assert!(corrupt.object().is_none());
    }

    /// The thread's reused contexts carry nothing from one object to the next, not even a failure.
    #[test]
    fn reused_contexts_pack_and_unpack_each_object_alone() {
        let objects: Vec<Arc<Value>> = (0..50)
            .map(|i| {
                let mut obj = pod();
                obj["metadata"]["name"] = format!("p{i}").into();
                obj["spec"]["extra"] = "x".repeat(i * 37).into();
                Arc::new(obj)
            })
            .collect();
        let packed: Vec<Repr> = objects.iter().map(|o| Repr::new(Arc::clone(o), true)).collect();
        let corrupt = Repr::Packed { json_len: 10, bytes: Arc::from(&b"not zstd"[..]) };
        for (i, (obj, repr)) in objects.iter().zip(&packed).enumerate().rev() {
            if i % 7 == 0 {
                assert!(corrupt.object().is_none());
            }
            assert_eq!(repr.object().as_deref(), Some(obj.as_ref()), "object {i}");
        }
    }
}
