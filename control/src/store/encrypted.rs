//! Secrets at rest: a [`Store`] decorator that encrypts the values of Secrets
//! (`/registry/core/secrets/...`) with AES-256-GCM before they reach SQLite or etcd, and decrypts
//! them on every read, list and watch event, as kube-apiserver's `aesgcm` provider does. A stored
//! value is `k8s:enc:aesgcm:v1:<key name>:<12-byte nonce><ciphertext + tag>`; the key name is bound
//! in as associated data, with the store key, so a value moved to another key does not decrypt.
//! Values stored before encryption (plain JSON) are read as they are and encrypted on their next
//! write. The keys live in one 0600 file in the data directory; [`rotate`] switches to a new
//! write key once no Secret write is between sealing and storing, re-encrypts every Secret with it,
//! and only then retires the old keys (one rotation at a time).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::RwLock;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::{Event, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream};

/// The keys whose values are encrypted.
pub const SECRETS_PREFIX: &str = "/registry/core/secrets/";
const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";
/// The key file, in the server's data directory.
pub const KEY_FILE: &str = "secrets-encryption.json";

/// Why the keyring could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

#[derive(Serialize, Deserialize, Clone)]
struct KeyEntry {
    name: String,
    /// 32 bytes, base64.
    secret: String,
}

#[derive(Serialize, Deserialize, Clone, Default)]
struct KeyFile {
    /// The first key encrypts; all decrypt.
    keys: Vec<KeyEntry>,
}

/// The encryption keys, shared by the store decorator and rotation.
pub struct Keyring {
    path: PathBuf,
    keys: RwLock<Vec<(String, LessSafeKey)>>,
    file: RwLock<KeyFile>,
    /// Held shared by a Secret write from sealing to stored, and exclusively while the write key
    /// changes: once a rotation has switched keys, no value sealed with an old key is in flight.
    writes: tokio::sync::RwLock<()>,
    /// One rotation at a time (two would retire each other's keys under their rewrites).
    rotating: tokio::sync::Mutex<()>,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| StoreError::Backend("no randomness for encryption".into()))?;
    Ok(out)
}

fn unbound(entry: &KeyEntry, path: &Path) -> Result<LessSafeKey, KeyError> {
    use base64::Engine;
    let invalid = |detail: String| KeyError::Invalid { path: path.to_path_buf(), detail };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&entry.secret)
        .map_err(|e| invalid(format!("key {}: {e}", entry.name)))?;
    let key =
        UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| invalid(format!("key {}: not 32 bytes", entry.name)))?;
    Ok(LessSafeKey::new(key))
}

impl Keyring {
    /// The keyring kept at `dir/`[`KEY_FILE`], made with one fresh key when missing.
    pub fn load_or_create(dir: &Path) -> Result<Arc<Self>, KeyError> {
        let path = dir.join(KEY_FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<KeyFile>(&bytes)
                .map_err(|e| KeyError::Invalid { path: path.clone(), detail: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile::default(),
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        let ring = Arc::new(Self {
            path,
            keys: RwLock::new(Vec::new()),
            file: RwLock::new(file),
            writes: tokio::sync::RwLock::new(()),
            rotating: tokio::sync::Mutex::new(()),
        });
        if ring.file.read().keys.is_empty() {
            ring.add_first()?;
        } else {
            ring.rebuild()?;
        }
        Ok(ring)
    }

    fn rebuild(&self) -> Result<(), KeyError> {
        let file = self.file.read().clone();
        let keys = file.keys.iter().map(|k| Ok((k.name.clone(), unbound(k, &self.path)?))).collect::<Result<_, _>>()?;
        *self.keys.write() = keys;
        Ok(())
    }

    /// Adds a fresh key in front (the write key from now on) and saves the file.
    fn add_first(&self) -> Result<String, KeyError> {
        use base64::Engine;
        let bytes: [u8; 32] =
            random_bytes().map_err(|e| KeyError::Invalid { path: self.path.clone(), detail: e.to_string() })?;
        let stamp = jiff::Timestamp::now().as_second();
        let name = format!("key-{stamp}-{}", hex(&random_bytes::<3>().unwrap_or_default()));
        let entry = KeyEntry { name: name.clone(), secret: base64::engine::general_purpose::STANDARD.encode(bytes) };
        self.file.write().keys.insert(0, entry);
        self.save()?;
        self.rebuild()?;
        Ok(name)
    }

    fn save(&self) -> Result<(), KeyError> {
        let text = serde_json::to_vec_pretty(&*self.file.read())
            .map_err(|e| KeyError::Invalid { path: self.path.clone(), detail: e.to_string() })?;
        crate::server::files::write_private(&self.path, &text)
            .map_err(|e| KeyError::Invalid { path: self.path.clone(), detail: e.to_string() })
    }

    /// Starts a rotation: a new write key (after the Secret writes in flight are stored); old keys
    /// still decrypt. Returns its name.
    async fn rotate(&self) -> Result<String, KeyError> {
        let _no_writes = self.writes.write().await;
        self.add_first()
    }

    /// Ends a rotation: only the write key is kept.
    fn retire_old_keys(&self) -> Result<(), KeyError> {
        self.file.write().keys.truncate(1);
        self.save()?;
        self.rebuild()
    }

    /// The name of the key new values are encrypted with.
    pub fn write_key_name(&self) -> String {
        self.keys.read().first().map(|(n, _)| n.clone()).unwrap_or_default()
    }

    fn encrypt(&self, store_key: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let keys = self.keys.read();
        let (name, key) = keys.first().ok_or_else(|| StoreError::Backend("no encryption key".into()))?;
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes()?;
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), aad(store_key, name), &mut sealed)
            .map_err(|_| StoreError::Backend(format!("encrypting {store_key}")))?;
        let mut out = Vec::with_capacity(PREFIX.len() + name.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn decrypt(&self, store_key: &str, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_vec()) };
        let corrupt =
            |why: &str| StoreError::Backend(format!("the encrypted value of {store_key} cannot be read: {why}"));
        let colon = rest.iter().position(|b| *b == b':').ok_or_else(|| corrupt("no key name"))?;
        let name = std::str::from_utf8(&rest[..colon]).map_err(|_| corrupt("bad key name"))?;
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err(corrupt("truncated"));
        }
        let keys = self.keys.read();
        let (_, key) = keys.iter().find(|(n, _)| n == name).ok_or_else(|| corrupt(&format!("unknown key {name}")))?;
        let nonce = Nonce::try_assume_unique_for_key(&body[..NONCE_LEN]).map_err(|_| corrupt("bad nonce"))?;
        let mut sealed = body[NONCE_LEN..].to_vec();
        let plain = key
            .open_in_place(nonce, aad(store_key, name), &mut sealed)
            .map_err(|_| corrupt("authentication failed"))?;
        Ok(plain.to_vec())
    }

    /// Whether a stored value is sealed with the current write key.
    fn is_current(&self, stored: &[u8]) -> bool {
        let name = self.write_key_name();
        stored
            .strip_prefix(PREFIX)
            .is_some_and(|rest| rest.starts_with(name.as_bytes()) && rest.get(name.len()) == Some(&b':'))
    }
}

fn aad(store_key: &str, key_name: &str) -> Aad<Vec<u8>> {
    let mut bytes = Vec::with_capacity(store_key.len() + key_name.len() + 1);
    bytes.extend_from_slice(store_key.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key_name.as_bytes());
    Aad::from(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encrypted(key: &str) -> bool {
    key.starts_with(SECRETS_PREFIX)
}

/// The decorator.
pub struct Encrypted {
    inner: Arc<dyn Store>,
    keys: Arc<Keyring>,
}

impl Encrypted {
    pub fn new(inner: Arc<dyn Store>, keys: Arc<Keyring>) -> Self {
        Self { inner, keys }
    }

    fn seal(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if encrypted(key) {
            self.keys.encrypt(key, &value)
        } else {
            Ok(value)
        }
    }

    fn open(&self, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
        if encrypted(&kv.key) {
            kv.value = self.keys.decrypt(&kv.key, &kv.value)?;
        }
        Ok(kv)
    }

    fn open_error(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Conflict { key, expected, current } => match self.open(*current) {
                Ok(current) => StoreError::Conflict { key, expected, current: Box::new(current) },
                Err(e) => e,
            },
            e => e,
        }
    }
}

#[async_trait::async_trait]
impl Store for Encrypted {
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let _writing = self.keys.writes.read().await;
        let sealed = self.seal(key, value.clone())?;
        let mut kv = self.inner.create(key, sealed).await.map_err(|e| self.open_error(e))?;
        kv.value = value;
        Ok(kv)
    }
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        let _writing = self.keys.writes.read().await;
        let sealed = self.seal(key, value.clone())?;
        let mut kv = self.inner.update(key, sealed, expected).await.map_err(|e| self.open_error(e))?;
        kv.value = value;
        Ok(kv)
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let kv = self.inner.delete(key, expected).await.map_err(|e| self.open_error(e))?;
        self.open(kv)
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await?.map(|kv| self.open(kv)).transpose()
    }
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        let mut result = self.inner.list(prefix, opts).await?;
        result.items = result.items.into_iter().map(|kv| self.open(kv)).collect::<Result<_, _>>()?;
        Ok(result)
    }
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        self.inner.count(prefix).await
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.inner.compacted_revision().await
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let keys = Arc::clone(&self.keys);
        let stream = self.inner.watch(prefix, after).await?;
        Ok(stream
            .map(move |item| {
                let open = |mut kv: KeyValue| -> Result<KeyValue, StoreError> {
                    if encrypted(&kv.key) {
                        kv.value = keys.decrypt(&kv.key, &kv.value)?;
                    }
                    Ok(kv)
                };
                let event = item?;
                Ok(Event { kind: event.kind, kv: open(event.kv)?, prev: event.prev.map(open).transpose()? })
            })
            .boxed())
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

/// Why a rotation failed (nothing is retired then: every value stays readable).
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rotates the write key: a new key, every Secret re-sealed with it through `raw` (the store below
/// the decorator), then the old keys retired. One rotation runs at a time. Returns the new key's
/// name and how many Secrets were rewritten.
pub async fn rotate(raw: &dyn Store, keys: &Keyring) -> Result<(String, usize), RotateError> {
    let _one_at_a_time = keys.rotating.lock().await;
    let name = keys.rotate().await?;
    let rewritten = rewrite_all(raw, keys).await?;
    keys.retire_old_keys()?;
    Ok((name, rewritten))
}

/// Re-encrypts every Secret not yet sealed with the write key (after [`Keyring::rotate`]), through
/// `raw` (the store below the decorator, so values are read as stored); a Secret written meanwhile is
/// already sealed with the new key. Returns how many were rewritten.
async fn rewrite_all(raw: &dyn Store, keys: &Keyring) -> Result<usize, StoreError> {
    let mut rewritten = 0;
    let mut start_after = None;
    loop {
        let page = raw
            .list(SECRETS_PREFIX, ListOptions { start_after: start_after.clone(), limit: Some(500), revision: None })
            .await?;
        for kv in &page.items {
            if keys.is_current(&kv.value) {
                continue;
            }
            let plain = keys.decrypt(&kv.key, &kv.value)?;
            let sealed = keys.encrypt(&kv.key, &plain)?;
            match raw.update(&kv.key, sealed, kv.mod_revision).await {
                Ok(_) => rewritten += 1,
                // Written meanwhile (with the new key) or deleted: nothing left to do.
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if !page.more {
            return Ok(rewritten);
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    async fn setup() -> (tempfile::TempDir, Arc<dyn Store>, Arc<Keyring>, Encrypted) {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("state.db")).expect("sqlite"));
        let keys = Keyring::load_or_create(dir.path()).expect("keys");
        let store = Encrypted::new(Arc::clone(&raw), Arc::clone(&keys));
        (dir, raw, keys, store)
    }

    const KEY: &str = "/registry/core/secrets/default/s";

    #[tokio::test]
    async fn secrets_are_sealed_below_and_plain_above() {
        let (dir, raw, _keys, store) = setup().await;
        let value = br#"{"data":{"password":"aHVudGVyMg=="}}"#.to_vec();
        let kv = store.create(KEY, value.clone()).await.expect("create");
        assert_eq!(kv.value, value);
        let stored = raw.get(KEY).await.expect("get").expect("present").value;
        assert!(stored.starts_with(PREFIX), "sealed: {}", String::from_utf8_lossy(&stored));
        assert!(!stored.windows(8).any(|w| w == b"aHVudGVy"));
        assert_eq!(store.get(KEY).await.expect("get").expect("present").value, value);
        assert_eq!(store.list(SECRETS_PREFIX, ListOptions::default()).await.expect("list").items[0].value, value);
        // Other kinds are left alone.
        store.create("/registry/core/configmaps/default/c", b"{}".to_vec()).await.expect("cm");
        assert_eq!(raw.get("/registry/core/configmaps/default/c").await.expect("get").expect("cm").value, b"{}");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).expect("key file");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_corrupted_value_is_an_error_not_garbage() {
        let (_dir, raw, _keys, store) = setup().await;
        store.create(KEY, b"{\"a\":1}".to_vec()).await.expect("create");
        let mut stored = raw.get(KEY).await.expect("get").expect("present");
        let last = stored.value.len() - 1;
        stored.value[last] ^= 1;
        raw.update(KEY, stored.value, stored.mod_revision).await.expect("tamper");
        let err = store.get(KEY).await.expect_err("corrupt");
        assert!(err.to_string().contains("cannot be read: authentication failed"), "{err}");
        // A value moved under another key does not open either.
        let sealed = raw.get(KEY).await.expect("get").expect("present").value;
        raw.create("/registry/core/secrets/default/other", sealed).await.expect("copy");
        assert!(store.get("/registry/core/secrets/default/other").await.is_err());
    }

    #[tokio::test]
    async fn rotation_reencrypts_and_retires_the_old_key() {
        let (dir, raw, keys, store) = setup().await;
        for i in 0..3 {
            store.create(&format!("{KEY}{i}"), format!("{{\"n\":{i}}}").into_bytes()).await.expect("create");
        }
        let old = keys.write_key_name();
        let (new, rewritten) = rotate(raw.as_ref(), &keys).await.expect("rotate");
        assert_ne!(old, new);
        assert_eq!(rewritten, 3);
        for i in 0..3 {
            let kv = store.get(&format!("{KEY}{i}")).await.expect("get").expect("present");
            assert_eq!(kv.value, format!("{{\"n\":{i}}}").into_bytes());
        }
        let reloaded = Keyring::load_or_create(dir.path()).expect("reload");
        assert_eq!(reloaded.write_key_name(), new);
        assert_eq!(reloaded.keys.read().len(), 1);
    }
}
