//! Harness for Wasm OCI artifacts in a real containerd: an artifact built by hand as an OCI layout, imported
//! without unpacking (containerd 1.6 cannot unpack it), and containers and tasks made through containerd's
//! gRPC API the way a CRI plugin does it (empty overlayfs snapshot as the rootfs), since `ctr run` insists on
//! unpacking.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest, KillRequest,
    StartRequest, WaitRequest,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Status};
use sha2::{Digest, Sha256};

use super::{unique, Containerd, NS, RUNTIME};

/// The config media type of a Wasm OCI artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";

/// One layer of a hand-built artifact.
pub struct Layer {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
    pub title: Option<&'static str>,
}

/// Writes `bytes` as a blob of the layout at `layout`: its `sha256:` digest.
fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = hex::encode(Sha256::digest(bytes));
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).expect("write blob");
    format!("sha256:{hex}")
}

impl Containerd {
    /// Imports an artifact as image `repo:tag` without unpacking: config of `config_type`, `layers`. Returns
    /// the layers' digests.
    pub fn import_artifact(&self, repo: &str, tag: &str, config_type: &str, layers: &[Layer]) -> Vec<String> {
        let work = self.dir.path().join(unique("artifact"));
        let layout = work.join("layout");
        std::fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir");
        let mut descriptors = Vec::new();
        let mut digests = Vec::new();
        for layer in layers {
            let digest = put_blob(&layout, &layer.bytes);
            let mut d = serde_json::json!({"mediaType": layer.media_type, "digest": digest, "size": layer.bytes.len()});
            if let Some(title) = layer.title {
                d["annotations"] = serde_json::json!({"org.opencontainers.image.title": title});
            }
            descriptors.push(d);
            digests.push(digest);
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "created": "2026-01-01T00:00:00Z", "architecture": "wasm", "os": "wasip1", "layerDigests": digests
        }))
        .expect("config");
        let config_digest = put_blob(&layout, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": descriptors
        }))
        .expect("manifest");
        let manifest_digest = put_blob(&layout, &manifest);
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}
        }]});
        std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
        std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let archive = work.join("artifact.tar");
        let tar = Command::new("tar").arg("-C").arg(&layout).arg("-cf").arg(&archive).arg(".").status();
        assert!(tar.expect("tar").success(), "tar of the layout");
        let archive = archive.to_str().expect("utf-8");
        let out = self.ctr(&["images", "import", "--no-unpack", "--base-name", repo, archive]);
        assert!(out.status.success(), "ctr images import: {}", String::from_utf8_lossy(&out.stderr));
        digests
    }
}

/// What a gRPC-made container runs.
pub struct TaskSpec<'a> {
    pub image: &'a str,
    pub args: &'a [&'a str],
    pub env: &'a [&'a str],
}

/// containerd's gRPC API in the test namespace, on a runtime of its own.
pub struct Grpc {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

/// A container (and its snapshot and task) made through gRPC; all removed on drop.
pub struct GrpcTask<'g> {
    grpc: &'g Grpc,
    pub id: String,
    snapshot: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    task: bool,
}

fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("containerd-namespace", NS.parse().expect("namespace"));
    request
}

impl Grpc {
    pub fn connect(ctd: &Containerd) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let channel = rt.block_on(containerd_client::connect(ctd.socket())).expect("connect to containerd");
        Grpc { rt, channel }
    }

    /// Creates container `id` of `spec` on an empty overlayfs snapshot, then its task (stdout and stderr to
    /// files in `dir`): the container, also when the task cannot be created (the error).
    pub fn create<'g>(&'g self, dir: &Path, spec: &TaskSpec) -> (GrpcTask<'g>, Result<(), Status>) {
        let id = unique("art");
        let snapshot = format!("{id}-snapshot");
        let mut task = GrpcTask {
            grpc: self,
            id: id.clone(),
            snapshot: snapshot.clone(),
            stdout: dir.join(format!("{id}.out")),
            stderr: dir.join(format!("{id}.err")),
            task: false,
        };
        let result = self.rt.block_on(async {
            // The container first: its record references the snapshot key, so containerd's garbage collector
            // (run after any deletion, e.g. by an import) does not take the new snapshot away.
            let container = Container {
                id: id.clone(),
                image: spec.image.into(),
                runtime: Some(ContainerRuntime { name: RUNTIME.into(), options: None }),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: oci_spec(spec).to_string().into_bytes(),
                }),
                snapshotter: "overlayfs".into(),
                snapshot_key: snapshot.clone(),
                ..Default::default()
            };
            let create = CreateContainerRequest { container: Some(container) };
            ContainersClient::new(self.channel.clone()).create(request(create)).await?;
            let prepare = PrepareSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: snapshot.clone(),
                parent: String::new(),
                labels: Default::default(),
            };
            let mounts =
                SnapshotsClient::new(self.channel.clone()).prepare(request(prepare)).await?.into_inner().mounts;
            let create = CreateTaskRequest {
                container_id: id.clone(),
                rootfs: mounts,
                stdout: format!("file://{}", task.stdout.display()),
                stderr: format!("file://{}", task.stderr.display()),
                ..Default::default()
            };
            TasksClient::new(self.channel.clone()).create(request(create)).await?;
            Ok(())
        });
        task.task = result.is_ok();
        (task, result)
    }
}

impl GrpcTask<'_> {
    /// Starts the task and waits for its exit code (a stopped task's Wait answers at once).
    pub fn run(&self) -> u32 {
        let mut tasks = TasksClient::new(self.grpc.channel.clone());
        self.grpc.rt.block_on(async {
            let start = StartRequest { container_id: self.id.clone(), exec_id: String::new() };
            tasks.start(request(start)).await.expect("start the task");
            let wait = WaitRequest { container_id: self.id.clone(), exec_id: String::new() };
            tasks.wait(request(wait)).await.expect("wait for the task").into_inner().exit_status
        })
    }

    pub fn output(&self) -> (String, String) {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (read(&self.stdout), read(&self.stderr))
    }

    /// Deletes the task, the snapshot and the container; each step's outcome (task, container, snapshot).
    pub fn delete(&mut self) -> [Result<(), Status>; 3] {
        let channel = self.grpc.channel.clone();
        let (id, snapshot, task) =
            (self.id.clone(), std::mem::take(&mut self.snapshot), std::mem::take(&mut self.task));
        self.grpc.rt.block_on(async move {
            let mut tasks = TasksClient::new(channel.clone());
            let deleted_task = if task {
                let kill = KillRequest { container_id: id.clone(), signal: 9, ..Default::default() };
                let _ = tasks.kill(request(kill)).await;
                tasks.delete(request(DeleteTaskRequest { container_id: id.clone() })).await.map(|_| ())
            } else {
                Ok(())
            };
            // The snapshot before the container: once the container (which references it) is gone, containerd's
            // garbage collector may take the snapshot first.
            let remove = RemoveSnapshotRequest { snapshotter: "overlayfs".into(), key: snapshot };
            let removed_snapshot = SnapshotsClient::new(channel.clone()).remove(request(remove)).await.map(|_| ());
            let deleted_container = ContainersClient::new(channel)
                .delete(request(DeleteContainerRequest { id: id.clone() }))
                .await
                .map(|_| ());
            [deleted_task, deleted_container, removed_snapshot]
        })
    }
}

impl Drop for GrpcTask<'_> {
    fn drop(&mut self) {
        if !self.snapshot.is_empty() {
            let _ = self.delete();
        }
    }
}

/// The runtime spec of a container: `spec`'s process, rootfs `rootfs`, its own mount/pid/ipc/uts namespaces.
fn oci_spec(spec: &TaskSpec) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": spec.args, "env": spec.env, "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    })
}

/// `ctr events` of a containerd, read in the background; the child is killed on drop.
pub struct EventStream {
    child: Child,
    lines: Arc<Mutex<String>>,
}

impl EventStream {
    /// Subscribes and returns once the subscription sees events (a marker namespace made and removed).
    pub fn subscribe(ctd: &Containerd) -> Self {
        let mut child =
            ctd.ctr_cmd(&["events"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("ctr events");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut all = sink.lock().expect("lines");
                all.push_str(&line);
                all.push('\n');
            }
        });
        let stream = EventStream { child, lines };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let marker = unique("events-ready");
            let _ = ctd.ctr(&["namespaces", "create", &marker]);
            let _ = ctd.ctr(&["namespaces", "remove", &marker]);
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                if stream.seen().contains(&marker) {
                    return stream;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Instant::now() < deadline, "ctr events saw nothing");
        }
    }

    /// Waits (bounded) for an event line containing every one of `needles`; whether one came.
    pub fn wait_for(&self, needles: &[&str]) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.seen().lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Every event line so far.
    pub fn seen(&self) -> String {
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
