//! Images against a real registry (Debian's `docker-registry` on loopback): push, pull policies, cache,
//! single flight, artifacts vs `wasi/wasm` images, credentials.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;
use skiff_node::image::{
    auths_from_docker_config, push_wasm, ImageConfig, ImageError, ImageStore, PullPolicy, RegistryAuth,
};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A minimal valid core module, with a custom section so that versions differ in content.
fn module(tag: &[u8]) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    let name = b"skiff";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag);
    m.push(0);
    m.push(payload.len() as u8);
    m.extend(payload);
    m
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A `docker-registry serve` on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nhttp:\n  addr: {addr}\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            dir.path().join("data").display()
        );
        if let Some(line) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, format!("{line}\n"))?;
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n", path.display()));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        let registry = Registry { child, addr, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("docker-registry did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn store(dir: &Path) -> Result<ImageStore, ImageError> {
    ImageStore::new(ImageConfig { cache_dir: dir.to_path_buf(), ..ImageConfig::default() })
}

fn oci_client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig { protocol: ClientProtocol::Http, ..ClientConfig::default() })
}

async fn push_file(
    reg: &Registry,
    repo_tag: &str,
    bytes: &[u8],
    auth: Option<&RegistryAuth>,
) -> Result<String, ImageError> {
    let dir = tempfile::tempdir().map_err(|e| ImageError::BadCredentials { detail: e.to_string() })?;
    let file = dir.path().join("hello.wasm");
    std::fs::write(&file, bytes).map_err(|e| ImageError::BadCredentials { detail: e.to_string() })?;
    let cfg = ImageConfig::default();
    push_wasm(&file, &format!("{}/{repo_tag}", reg.host()), &cfg, auth, &|_, _| {}).await
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Result<Vec<u8>, std::io::Error> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written by hand so that a test can put `..` in a name (set_path refuses it).
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *data)?;
    }
    builder.into_inner()?.finish()
}

/// Pushes a regular image (one layer per entry list) with the given config JSON; returns the reference.
async fn push_image(
    reg: &Registry,
    repo_tag: &str,
    layers: &[Vec<u8>],
    config_media_type: &str,
    config: serde_json::Value,
) -> Result<Reference, Box<dyn std::error::Error + Send + Sync>> {
    let reference: Reference = format!("{}/{repo_tag}", reg.host()).parse()?;
    let layers: Vec<ImageLayer> =
        layers.iter().map(|l| ImageLayer::new(l.clone(), IMAGE_LAYER_GZIP_MEDIA_TYPE.to_string(), None)).collect();
    let config = Config::new(serde_json::to_vec(&config)?, config_media_type.to_string(), None);
    oci_client().push(&reference, &layers, config, &OciAuth::Anonymous, None).await?;
    Ok(reference)
}

fn wasi_config(entrypoint: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "architecture": "wasm", "os": "wasi",
        "config": {"Entrypoint": entrypoint, "Cmd": ["--flag"], "Env": ["GREETING=hi", "EMPTY"], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": []}
    })
}

#[tokio::test]
async fn push_pull_cache_hit_survives_registry_and_restart() -> TestResult {
    let reg = Registry::start(None)?;
    let cache = tempfile::tempdir()?;
    let wasm = module(b"v1");
    let file_dir = tempfile::tempdir()?;
    let file = file_dir.path().join("hello.wasm");
    std::fs::write(&file, &wasm)?;
    let reference = format!("{}/hello:1", reg.host());
    let seen = Mutex::new(Vec::new());
    let progress = |sent: u64, total: u64| seen.lock().map(|mut s| s.push((sent, total))).unwrap_or(());
    let digest = push_wasm(&file, &reference, &ImageConfig::default(), None, &progress).await?;
    assert!(digest.starts_with("sha256:"));
    let seen = seen.into_inner().map_err(|e| e.to_string())?;
    assert_eq!(seen.last(), Some(&(wasm.len() as u64, wasm.len() as u64)));

    let images = store(cache.path())?;
    let first = images.ensure(&reference, PullPolicy::IfNotPresent, None).await?;
    assert!(first.pulled);
    assert_eq!(first.image.reference, reference);
    assert_eq!(first.image.image_id, format!("{}/hello@{digest}", reg.host()));
    assert_eq!(first.image.wasm_digest, sha256(&wasm));
    assert_eq!(std::fs::read(&first.image.wasm_path)?, wasm);
    assert!(first.image.wasm_path.starts_with(cache.path().join("blobs/sha256")));
    assert!(first.image.rootfs.is_none() && first.image.entrypoint.is_empty());

    drop(reg); // no registry from here on
    let again = images.ensure(&reference, PullPolicy::IfNotPresent, None).await?;
    assert!(!again.pulled);
    assert!(Arc::ptr_eq(&again.image, &first.image));
    assert!(images.ensure(&reference, PullPolicy::Never, None).await.is_ok_and(|p| !p.pulled));
    let always = images.ensure(&reference, PullPolicy::Always, None).await;
    assert!(matches!(always, Err(ImageError::Registry { .. })), "{always:?}");
    assert_eq!(images.pulls(), 2);

    // A new store on the same directory (a kubelet restart) knows the image from index.json.
    let restarted = store(cache.path())?;
    assert_eq!(restarted.cached(&reference).as_deref(), Some(&*first.image));
    let hit = restarted.ensure(&reference, PullPolicy::IfNotPresent, None).await?;
    assert!(!hit.pulled);
    assert_eq!(restarted.pulls(), 0);
    Ok(())
}

#[tokio::test]
async fn always_re_resolves_the_tag() -> TestResult {
    let reg = Registry::start(None)?;
    let cache = tempfile::tempdir()?;
    let images = store(cache.path())?;
    let reference = format!("{}/app", reg.host());
    assert_eq!(PullPolicy::from_k8s(None, &reference)?, PullPolicy::Always);

    let d1 = push_file(&reg, "app", &module(b"one"), None).await?;
    let one = images.ensure(&reference, PullPolicy::Always, None).await?;
    assert!(one.image.image_id.ends_with(&d1));
    assert_eq!(one.image.reference, format!("{}/app:latest", reg.host()));

    let unchanged = images.ensure(&reference, PullPolicy::Always, None).await?;
    assert!(unchanged.pulled);
    assert_eq!(unchanged.image.image_id, one.image.image_id);
    assert_eq!(images.blob_downloads(), 1, "an unchanged image is not downloaded again");

    let d2 = push_file(&reg, "app:latest", &module(b"two"), None).await?;
    assert_ne!(d1, d2);
    let two = images.ensure(&reference, PullPolicy::Always, None).await?;
    assert!(two.image.image_id.ends_with(&d2));
    assert_eq!(two.image.wasm_digest, sha256(&module(b"two")));
    assert_eq!(images.pulls(), 3);
    // IfNotPresent now serves the newer copy.
    let cached = images.ensure(&reference, PullPolicy::IfNotPresent, None).await?;
    assert!(!cached.pulled && cached.image.image_id.ends_with(&d2));
    Ok(())
}

#[tokio::test]
async fn missing_images() -> TestResult {
    let reg = Registry::start(None)?;
    let cache = tempfile::tempdir()?;
    let images = store(cache.path())?;
    let never = images.ensure(&format!("{}/nothing:1", reg.host()), PullPolicy::Never, None).await;
    assert!(matches!(never, Err(ImageError::NotPresent { .. })), "{never:?}");
    assert_eq!(images.pulls(), 0);

    let no_repo = images.ensure(&format!("{}/nothing:1", reg.host()), PullPolicy::IfNotPresent, None).await;
    assert!(matches!(no_repo, Err(ImageError::NotFound { .. })), "{no_repo:?}");
    push_file(&reg, "there:1", &module(b"x"), None).await?;
    let no_tag = images.ensure(&format!("{}/there:2", reg.host()), PullPolicy::IfNotPresent, None).await;
    let Err(err) = no_tag else { return Err("expected NotFound".into()) };
    assert!(matches!(err, ImageError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("not found"), "{err}");
    let bad = images.ensure("Not A Reference", PullPolicy::IfNotPresent, None).await;
    assert!(matches!(bad, Err(ImageError::BadReference { .. })), "{bad:?}");
    Ok(())
}

#[tokio::test]
async fn images_neither_wasm_nor_linux_are_rejected() -> TestResult {
    let reg = Registry::start(None)?;
    let cache = tempfile::tempdir()?;
    let images = store(cache.path())?;
    let layer = tar_gz(&[("bin/sh", b"#!")])?;

    // A Wasm artifact config whose layer is a tarball.
    push_image(
        &reg,
        "tarball:1",
        std::slice::from_ref(&layer),
        "application/vnd.wasm.config.v0+json",
        serde_json::json!({}),
    )
    .await?;
    let err = images.ensure(&format!("{}/tarball:1", reg.host()), PullPolicy::IfNotPresent, None).await;
    let Err(ImageError::NotWasm { detail, .. }) = err else { return Err(format!("expected NotWasm: {err:?}").into()) };
    assert!(detail.contains("application/vnd.oci.image.layer.v1.tar+gzip is not application/wasm"), "{detail}");

    // A Linux image for this node's architecture is pulled as one (runc runs it); another platform is not.
    let diff_id = diff_id(&layer)?;
    let linux = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "User": "1000:1000"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
    push_image(&reg, "linux:1", std::slice::from_ref(&layer), IMAGE_CONFIG_MEDIA_TYPE, linux).await?;
    let pulled = images.ensure(&format!("{}/linux:1", reg.host()), PullPolicy::IfNotPresent, None).await?;
    assert_eq!(pulled.image.kind, skiff_node::image::ImageKind::Linux);
    assert_eq!(
        (pulled.image.entrypoint.clone(), pulled.image.cmd.clone()),
        (vec!["/bin/sh".to_string()], vec!["-c".to_string(), "true".to_string()])
    );
    assert_eq!(pulled.image.user.as_deref(), Some("1000:1000"));
    // Its blobs wait in the node's cache for containerd's content store; the kubelet unpacks nothing.
    let content = pulled.image.linux.as_ref().ok_or("no Linux content")?;
    assert_eq!(content.diff_ids, [diff_id.clone()]);
    assert!(pulled.image.rootfs.is_none());
    assert!(
        images.blob_file(&content.layers[0].digest).is_some() && images.blob_file(&content.manifest.digest).is_some()
    );
    // A config whose layer digests do not match its layers is refused.
    let no_diffs = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": []}});
    push_image(&reg, "nodiffs:1", std::slice::from_ref(&layer), IMAGE_CONFIG_MEDIA_TYPE, no_diffs).await?;
    let err = images.ensure(&format!("{}/nodiffs:1", reg.host()), PullPolicy::IfNotPresent, None).await;
    let Err(e @ ImageError::InvalidImage { .. }) = err else {
        return Err(format!("expected InvalidImage: {err:?}").into());
    };
    assert!(e.to_string().contains("lists 0 layer digests (rootfs.diff_ids) for 1 layers"), "{e}");
    let s390x = serde_json::json!({"architecture": "s390x", "os": "linux", "config": {"Entrypoint": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": []}});
    push_image(&reg, "s390x:1", std::slice::from_ref(&layer), IMAGE_CONFIG_MEDIA_TYPE, s390x).await?;
    let err = images.ensure(&format!("{}/s390x:1", reg.host()), PullPolicy::IfNotPresent, None).await;
    let Err(e @ ImageError::NotWasm { .. }) = err else { return Err(format!("expected NotWasm: {err:?}").into()) };
    assert!(e.to_string().contains("linux/s390x, neither wasi/wasm nor linux/amd64"), "{e}");

    // A wasi/wasm image whose entrypoint is not a .wasm file.
    push_image(&reg, "shell:1", &[layer], IMAGE_CONFIG_MEDIA_TYPE, wasi_config(&["/bin/sh"])).await?;
    let err = images.ensure(&format!("{}/shell:1", reg.host()), PullPolicy::IfNotPresent, None).await;
    assert!(matches!(err, Err(ImageError::NotWasm { .. })), "{err:?}");
    assert!(images.cached(&format!("{}/shell:1", reg.host())).is_none());
    Ok(())
}

/// The uncompressed digest (a config's `rootfs.diff_ids` entry) of a gzipped layer.
fn diff_id(gz: &[u8]) -> Result<String, std::io::Error> {
    use std::io::Read;
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut tar)?;
    Ok(sha256(&tar))
}

/// A stand-in for containerd's content store holding the given blobs.
struct Holds(Vec<String>);

impl skiff_node::image::LayerHolder for Holds {
    fn holds<'a>(&'a self, digest: &'a str) -> futures::future::BoxFuture<'a, bool> {
        Box::pin(async move { self.0.iter().any(|d| d == digest) })
    }
}

#[tokio::test]
async fn linux_layers_containerd_holds_already_are_not_downloaded() -> TestResult {
    let reg = Registry::start(None)?;
    let dir = tempfile::tempdir()?;
    let images = store(dir.path())?;
    let base = tar_gz(&[("bin/sh", b"#!base")])?;
    let app = tar_gz(&[("app/run", b"#!app")])?;
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/app/run"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id(&base)?, diff_id(&app)?]}});
    push_image(&reg, "app:1", &[base.clone(), app.clone()], IMAGE_CONFIG_MEDIA_TYPE, config).await?;
    images.set_layer_holder(Arc::new(Holds(vec![sha256(&base)])));

    let pulled = images.ensure(&format!("{}/app:1", reg.host()), PullPolicy::IfNotPresent, None).await?;
    let content = pulled.image.linux.as_ref().ok_or("no Linux content")?;
    // The image still names both layers (containerd is told about both); only the config and the
    // layer containerd lacks came from the registry.
    assert_eq!(content.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(), [sha256(&base), sha256(&app)]);
    assert_eq!(images.blob_downloads(), 2, "the config and the app layer");
    assert!(images.blob_file(&sha256(&base)).is_none(), "the held layer was downloaded");
    assert!(images.blob_file(&sha256(&app)).is_some());
    Ok(())
}

#[tokio::test]
async fn regular_wasi_image_is_unpacked() -> TestResult {
    let reg = Registry::start(None)?;
    let cache = tempfile::tempdir()?;
    let images = store(cache.path())?;
    let wasm = module(b"regular");
    let lower = tar_gz(&[("app/old.txt", b"old"), ("app/keep.txt", b"keep")])?;
    let upper = tar_gz(&[("app/.wh.old.txt", b""), ("./app/hello.wasm", &wasm)])?;
    push_image(&reg, "regular:1", &[lower, upper], IMAGE_CONFIG_MEDIA_TYPE, wasi_config(&["/app/hello.wasm"])).await?;

    let pulled = images.ensure(&format!("{}/regular:1", reg.host()), PullPolicy::IfNotPresent, None).await?;
    let img = &pulled.image;
    let rootfs = img.rootfs.clone().ok_or("no rootfs")?;
    assert!(rootfs.starts_with(cache.path().join("rootfs")));
    assert_eq!(img.wasm_path, rootfs.join("app/hello.wasm"));
    assert_eq!(std::fs::read(&img.wasm_path)?, wasm);
    assert_eq!(img.wasm_digest, sha256(&wasm));
    assert_eq!(std::fs::read(rootfs.join("app/keep.txt"))?, b"keep");
    assert!(!rootfs.join("app/old.txt").exists(), "whiteout removed the lower layer's file");
    assert!(!rootfs.join("app/.wh.old.txt").exists());
    assert_eq!(img.entrypoint, vec!["/app/hello.wasm".to_string(), "--flag".to_string()]);
    assert_eq!(img.env, vec![("GREETING".into(), "hi".into()), ("EMPTY".into(), String::new())]);
    assert_eq!(img.working_dir.as_deref(), Some("/app"));

    // The same image behind an index with a linux and a wasi/wasm entry: the wasi/wasm one is chosen.
    let linux =
        serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
    push_image(&reg, "regular:linux", &[tar_gz(&[("bin/sh", b"#!")])?], IMAGE_CONFIG_MEDIA_TYPE, linux).await?;
    let client = oci_client();
    let linux_ref: Reference = format!("{}/regular:linux", reg.host()).parse()?;
    let linux_digest = client.fetch_manifest_digest(&linux_ref, &OciAuth::Anonymous).await?;
    let platform_ref: Reference = format!("{}/regular:1", reg.host()).parse()?;
    let wasi_digest = client.fetch_manifest_digest(&platform_ref, &OciAuth::Anonymous).await?;
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": linux_digest,
             "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": wasi_digest, "size": 1,
             "platform": {"os": "wasi", "architecture": "wasm"}}
        ]
    });
    let index_ref: Reference = format!("{}/regular:multi", reg.host()).parse()?;
    let body = serde_json::to_vec(&index)?;
    let index_digest = sha256(&body);
    client.push_manifest_raw(&index_ref, body, http::HeaderValue::from_static(OCI_IMAGE_INDEX_MEDIA_TYPE)).await?;
    let multi = images.ensure(&format!("{}/regular:multi", reg.host()), PullPolicy::IfNotPresent, None).await?;
    assert_eq!(multi.image.image_id, format!("{}/regular@{index_digest}", reg.host()));
    assert_eq!(multi.image.rootfs, img.rootfs, "same platform manifest, same unpacked rootfs");
    assert_eq!(multi.image.wasm_digest, img.wasm_digest);
    Ok(())
}

#[tokio::test]
async fn layer_paths_cannot_escape_the_rootfs() -> TestResult {
    let reg = Registry::start(None)?;
    let cache = tempfile::tempdir()?;
    let images = store(cache.path())?;
    let evil = tar_gz(&[("app/hello.wasm", b"\0asm\x01\0\0\0"), ("../../escaped.txt", b"x")])?;
    push_image(&reg, "evil:1", &[evil], IMAGE_CONFIG_MEDIA_TYPE, wasi_config(&["/app/hello.wasm"])).await?;
    let err = images.ensure(&format!("{}/evil:1", reg.host()), PullPolicy::IfNotPresent, None).await;
    let Err(e @ ImageError::InvalidImage { .. }) = err else {
        return Err(format!("expected InvalidImage: {err:?}").into());
    };
    assert!(e.to_string().contains("escapes the image root"), "{e}");
    assert!(!cache.path().join("escaped.txt").exists());
    assert!(!cache.path().join("rootfs/escaped.txt").exists());
    // No half-unpacked rootfs is left behind.
    assert_eq!(std::fs::read_dir(cache.path().join("rootfs"))?.count(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_share_one_pull() -> TestResult {
    let reg = Registry::start(None)?;
    let cache = tempfile::tempdir()?;
    let images = store(cache.path())?;
    let reference = format!("{}/popular:1", reg.host());
    push_file(&reg, "popular:1", &module(b"popular"), None).await?;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let images = images.clone();
            let reference = reference.clone();
            tokio::spawn(async move { images.ensure(&reference, PullPolicy::IfNotPresent, None).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await??);
    }
    assert_eq!(images.pulls(), 1);
    assert_eq!(images.blob_downloads(), 1);
    assert!(results.iter().all(|r| Arc::ptr_eq(&r.image, &results[0].image)));
    Ok(())
}

#[tokio::test]
async fn basic_auth_registry() -> TestResult {
    let bcrypt = Command::new("python3")
        .args(["-W", "ignore", "-c", "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))"])
        .output()?;
    let hash = String::from_utf8(bcrypt.stdout)?.trim().to_string();
    assert!(hash.starts_with("$2"), "python3 crypt gave no bcrypt hash: {hash:?}");
    let reg = Registry::start(Some(&format!("alice:{hash}")))?;
    let config = format!(r#"{{"auths":{{"http://{}":{{"username":"alice","password":"s3cret"}}}}}}"#, reg.host());
    let auths = auths_from_docker_config(config.as_bytes())?;
    let good = auths.get(&reg.host()).ok_or("no credentials for the registry")?;
    let wrong = RegistryAuth { username: "alice".into(), password: "nope".into() };

    let denied = push_file(&reg, "private:1", &module(b"p"), None).await;
    assert!(matches!(denied, Err(ImageError::Unauthorized { .. })), "{denied:?}");
    push_file(&reg, "private:1", &module(b"p"), Some(good)).await?;

    let cache = tempfile::tempdir()?;
    let images = store(cache.path())?;
    let reference = format!("{}/private:1", reg.host());
    let anonymous = images.ensure(&reference, PullPolicy::IfNotPresent, None).await;
    let Err(e @ ImageError::Unauthorized { .. }) = anonymous else {
        return Err(format!("expected Unauthorized: {anonymous:?}").into());
    };
    assert!(e.to_string().contains("imagePullSecrets"), "{e}");
    let bad = images.ensure(&reference, PullPolicy::IfNotPresent, Some(&wrong)).await;
    assert!(matches!(bad, Err(ImageError::Unauthorized { .. })), "{bad:?}");
    let ok = images.ensure(&reference, PullPolicy::IfNotPresent, Some(good)).await?;
    assert!(ok.pulled);
    Ok(())
}
