//! Wasm OCI artifacts read from a real containerd's content store (imported without unpacking, containers
//! and tasks made over gRPC as a CRI plugin does), bad artifacts, and containerd killed while tasks run.
//! Needs root, containerd, ctr, tar, umoci and skopeo.

mod common;

use std::time::{Duration, Instant};

use common::artifact::{EventStream, Grpc, Layer, TaskSpec, WASM_CONFIG};
use common::{shim_sockets, unique, workload, Containerd, IMAGE, RUNTIME};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hello_layer(media_type: &'static str, title: Option<&'static str>) -> Layer {
    Layer { media_type, bytes: std::fs::read(workload("hello")).expect("hello.wasm"), title }
}

#[test]
fn runs_wasm_artifacts_from_the_content_store() {
    let ctd = Containerd::start();
    let out_dir = tempfile::tempdir().expect("tempdir");
    ctd.import_artifact(
        "skiff.test/hello-art",
        "1",
        WASM_CONFIG,
        &[hello_layer("application/wasm", Some("hello.wasm"))],
    );
    let other = hello_layer("application/vnd.wasm.content.layer.v1+wasm", None);
    ctd.import_artifact("skiff.test/hello-vnd", "1", WASM_CONFIG, &[other]);
    let grpc = Grpc::connect(&ctd);

    // Args after argv[0] and the env reach the guest; its file name comes from the layer's title.
    let spec =
        TaskSpec { image: "skiff.test/hello-art:1", args: &["/hello.wasm", "one", "two"], env: &["HELLO_NAME=art"] };
    let (mut task, created) = grpc.create(out_dir.path(), &spec);
    created.unwrap_or_else(|e| panic!("create: {e}\n{}", ctd.log()));
    assert_eq!(task.run(), 0);
    let (stdout, stderr) = task.output();
    assert!(stdout.contains("hello from skiff") && stdout.contains("args: one two"), "{stdout}");
    assert!(stdout.contains("HELLO_NAME=art"), "{stdout}");
    assert!(stderr.contains("hello on stderr"), "{stderr}");
    for step in task.delete() {
        step.expect("task, container and snapshot deleted");
    }

    // The other layer type, no title and no args: `/module.wasm`; the same layer digest hits the cache.
    let spec = TaskSpec { image: "skiff.test/hello-vnd:1", args: &[], env: &[] };
    let (mut task, created) = grpc.create(out_dir.path(), &spec);
    created.unwrap_or_else(|e| panic!("create: {e}\n{}", ctd.log()));
    assert_eq!(task.run(), 0);
    assert!(task.output().0.contains("hello from skiff"), "{:?}", task.output());
    for step in task.delete() {
        step.expect("task, container and snapshot deleted");
    }
    let log = ctd.log();
    let loads: Vec<&str> = log.lines().filter(|l| l.contains("loaded program")).collect();
    assert_eq!(loads.len(), 2, "{log}");
    assert!(loads[0].contains("path=/hello.wasm") && loads[0].contains("compiled=true"), "{}", loads[0]);
    assert!(loads[1].contains("path=/module.wasm") && loads[1].contains("cache_hit=true"), "{}", loads[1]);
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

#[test]
fn bad_artifacts_fail_clearly() {
    let ctd = Containerd::start();
    let out_dir = tempfile::tempdir().expect("tempdir");
    let tar = Layer { media_type: "application/x-tar", bytes: b"not a tar either".to_vec(), title: None };
    ctd.import_artifact("skiff.test/tar-art", "1", WASM_CONFIG, &[tar]);
    let digests =
        ctd.import_artifact("skiff.test/gone-art", "1", WASM_CONFIG, &[hello_layer("application/wasm", None)]);
    let rm = ctd.ctr(&["content", "rm", &digests[0]]);
    assert!(rm.status.success(), "ctr content rm: {}", text(&rm.stderr));
    let not_wasm = Layer { media_type: "application/wasm", bytes: b"#!/bin/sh\necho hi\n".to_vec(), title: None };
    ctd.import_artifact("skiff.test/elf-art", "1", WASM_CONFIG, &[not_wasm]);
    let grpc = Grpc::connect(&ctd);

    let cases = [
        ("skiff.test/tar-art:1", "unsupported layer media type application/x-tar".to_string()),
        ("skiff.test/gone-art:1", format!("blob {} is missing from containerd's content store", digests[0])),
        ("skiff.test/elf-art:1", "layer is not a Wasm module or component".to_string()),
    ];
    for (image, expected) in cases {
        let (mut task, created) = grpc.create(out_dir.path(), &TaskSpec { image, args: &[], env: &[] });
        let err = created.expect_err(image);
        assert!(err.message().contains(&expected), "{image}: {err}");
        let [_, container, snapshot] = task.delete();
        container.expect("container deleted");
        snapshot.expect("snapshot removed");
    }
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

/// Polls `ctr tasks ls` until the task `id` is in `state`.
fn await_state(ctd: &Containerd, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tasks = text(&ctd.ctr(&["tasks", "ls"]).stdout);
        if tasks.lines().any(|l| l.contains(id) && l.contains(state)) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} is not {state}: {tasks}\n{}", ctd.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn containerd_killed_while_tasks_run() {
    let mut ctd = Containerd::start();
    ctd.import_image();
    let forever = unique("forever");
    let sleeper = unique("sleeper");
    for (id, args) in [(&forever, &["/tool.wasm", "forever"][..]), (&sleeper, &["/tool.wasm", "sleep", "2"][..])] {
        let mut all = vec!["run", "-d", "--null-io", "--runtime", RUNTIME, IMAGE, id];
        all.extend_from_slice(args);
        let out = ctd.ctr(&all);
        assert!(out.status.success(), "run -d {id}: {}", text(&out.stderr));
    }
    await_state(&ctd, &forever, "RUNNING");
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 2, "one shim per task");
    let sockets = shim_sockets(&ctd.dir.path().join("state"));
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    assert!(sockets.iter().all(|s| s.exists()), "{sockets:?}");

    // SIGKILL containerd; the sleeper exits while it is down (its exit event has no one to go to).
    ctd.restart_after(Duration::from_secs(3));
    let events = EventStream::subscribe(&ctd);
    assert_eq!(ctd.shim_pids(), shims, "the shims survive containerd");
    await_state(&ctd, &forever, "RUNNING");
    await_state(&ctd, &sleeper, "STOPPED");
    let delete = ctd.ctr(&["tasks", "rm", &sleeper]);
    assert!(delete.status.success(), "tasks rm {sleeper}: {}", text(&delete.stderr));
    assert!(!text(&delete.stderr).contains("non-zero"), "the sleeper exits 0: {}", text(&delete.stderr));

    // The reconnected shim still obeys: kill, delete, container rm.
    let kill = ctd.ctr(&["tasks", "kill", &forever]);
    assert!(kill.status.success(), "kill: {}", text(&kill.stderr));
    await_state(&ctd, &forever, "STOPPED");
    let delete = ctd.ctr(&["tasks", "rm", &forever]);
    assert!(delete.status.success(), "tasks rm {forever}: {}", text(&delete.stderr));
    assert!(text(&delete.stderr).contains("exit code 143"), "{}", text(&delete.stderr));
    for id in [&forever, &sleeper] {
        let rm = ctd.ctr(&["containers", "rm", id]);
        assert!(rm.status.success(), "containers rm {id}: {}", text(&rm.stderr));
    }
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
    let left: Vec<_> = sockets.iter().filter(|s| s.exists()).collect();
    assert!(left.is_empty(), "shim sockets left: {left:?}");

    // The events of the tasks reach the restarted containerd, although the shims' old connection is dead.
    // (The sleeper's exit, published while containerd was down, is retried too, but may arrive before
    // `ctr events` subscribed.)
    for topic in ["/tasks/exit", "/tasks/delete"] {
        assert!(events.wait_for(&[topic, &forever]), "no {topic} for {forever}: {}", events.seen());
    }
    assert!(events.wait_for(&["/tasks/delete", &sleeper]), "{}", events.seen());
}
