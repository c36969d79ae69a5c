//! `containerd-shim-skiff-v1` driven by a real containerd 1.6 through `ctr`: output and exit codes, kill,
//! delete, the compile cache, memory limits with the OOM event, bad bundles, a guest serving HTTP on a
//! network namespace's address, and busybox (Linux) containers through runc, alone, in a pod with Wasm,
//! sharing the pod's IPC and UTS namespaces, and killed by the OOM killer.
//! Needs root, containerd, ctr, runc, umoci, skopeo, busybox-static and ip.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::artifact::EventStream;
use common::{http_get, unique, Containerd, CtrChild, NetNs, IMAGE, RUNTIME};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ctr tasks delete ID`: the exit status it reports (ctr only warns about a non-zero one).
fn delete_task(ctd: &Containerd, id: &str) -> u32 {
    let out = ctd.ctr(&["tasks", "delete", id]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "delete {id}: {stderr}");
    let code = stderr
        .split("exit with non-zero exit code ")
        .nth(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().expect("an exit code"));
    code.unwrap_or(0)
}

#[test]
fn runs_hello_with_args_env_and_exit_codes() {
    let ctd = Containerd::start();
    ctd.import_image();

    let out = ctd.run_rm(&unique("hello"), &[], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "hello failed: {stdout}{}\n{}", text(&out.stderr), ctd.log());
    assert!(stdout.contains("hello from skiff"), "{stdout}");
    assert!(text(&out.stderr).contains("hello on stderr"), "{}", text(&out.stderr));

    let out = ctd.run_rm(&unique("args"), &["--env", "HELLO_NAME=wasm"], &["/hello.wasm", "one", "two"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("args: one two") && stdout.contains("HELLO_NAME=wasm"), "{stdout}");

    let out = ctd.run_rm(&unique("crash"), &[], &["/crasher.wasm"]);
    assert_eq!(out.status.code(), Some(3), "crasher: {}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("crashing with 3"));

    let out = ctd.run_rm(&unique("trap"), &[], &["/crasher.wasm", "trap"]);
    assert_eq!(out.status.code(), Some(1), "trap: {}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("the guest trapped"), "{}", text(&out.stderr));

    // A WASI 0.3 component: its async `run`, and `run`'s error as exit code 1.
    let out = ctd.run_rm(&unique("p3"), &["--env", "HELLO_NAME=wasm"], &["/hello-p3.wasm", "one", "two"]);
    assert!(out.status.success(), "p3: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello from p3, wasm; args: one two\n");
    let out = ctd.run_rm(&unique("p3-fail"), &[], &["/hello-p3.wasm", "fail"]);
    assert_eq!(out.status.code(), Some(1), "p3 fail: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "failing\n");

    // The guest reads what the client writes on stdin, as it arrives, and its end (CloseIO).
    let id = unique("stdin");
    let mut child = ctd
        .ctr_cmd(&["run", "--rm", "--runtime", RUNTIME, IMAGE, &id, "/tool.wasm", "echo-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr run");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"one\ntwo\n").expect("write stdin");
    }
    let out = child.wait_with_output().expect("ctr run ends once stdin ends");
    assert!(out.status.success(), "echo-stdin: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "got: one\ngot: two\n");

    // The image's files are the guest's `/`.
    let out = ctd.run_rm(&unique("cat"), &[], &["/tool.wasm", "cat", "/data/in-image.txt"]);
    assert_eq!(text(&out.stdout), "from the image");

    // A bind mount is a preopened directory at its destination; read-only when the mount says so.
    let vol = tempfile::tempdir().expect("tempdir");
    std::fs::write(vol.path().join("v.txt"), "from the host").expect("write");
    let mount = format!("type=bind,src={},dst=/vol,options=rbind:ro", vol.path().display());
    let out = ctd.run_rm(&unique("vol"), &["--mount", &mount], &["/tool.wasm", "cat", "/vol/v.txt"]);
    assert_eq!(text(&out.stdout), "from the host", "{}", text(&out.stderr));
    let out = ctd.run_rm(&unique("ro"), &["--mount", &mount], &["/tool.wasm", "write", "/vol/new", "x"]);
    assert_eq!(out.status.code(), Some(1), "writing a read-only mount fails");
    assert!(!vol.path().join("new").exists());

    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

#[test]
fn second_run_hits_the_compile_cache() {
    let ctd = Containerd::start();
    ctd.import_image();
    for _ in 0..2 {
        let out = ctd.run_rm(&unique("cache"), &[], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let log = ctd.log();
    let loads: Vec<&str> = log.lines().filter(|l| l.contains("loaded program")).collect();
    assert_eq!(loads.len(), 2, "{log}");
    assert!(loads[0].contains("compiled=true"), "{}", loads[0]);
    assert!(loads[1].contains("cache_hit=true"), "the second shim compiled again: {}", loads[1]);
    let cached = std::fs::read_dir(ctd.cache_dir()).expect("cache dir").count();
    assert!(cached > 0, "nothing in the compile cache");
}

#[test]
fn kill_delete_and_events() {
    let ctd = Containerd::start();
    ctd.import_image();
    let mut events = CtrChild(Some(
        ctd.ctr_cmd(&["events"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("ctr events"),
    ));

    // `ctr task kill` (SIGTERM) of a running `tool forever`: the run ends with 128+15.
    let id = unique("forever");
    let mut run = CtrChild(Some(
        ctd.ctr_cmd(&["run", "--rm", "--runtime", RUNTIME, IMAGE, &id, "/tool.wasm", "forever"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctr run"),
    ));
    let child = run.0.as_mut().expect("child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("running"));
    let state = text(&ctd.ctr(&["tasks", "ls"]).stdout);
    assert!(state.lines().any(|l| l.contains(&id) && l.contains("RUNNING")), "{state}");
    let kill = ctd.ctr(&["tasks", "kill", &id]);
    assert!(kill.status.success(), "kill: {}", text(&kill.stderr));
    let status = child.wait().expect("wait ctr run");
    assert_eq!(status.code(), Some(143), "ctr run of a killed task");

    // Detached: SIGKILL, then `ctr task delete` reports 137 and removes the task.
    let id2 = unique("detached");
    let out = ctd.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, IMAGE, &id2, "/tool.wasm", "forever"]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    let kill = ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", &id2]);
    assert!(kill.status.success(), "kill: {}", text(&kill.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(&ctd.ctr(&["tasks", "ls"]).stdout).lines().any(|l| l.contains(&id2) && l.contains("STOPPED")) {
        assert!(Instant::now() < deadline, "the killed task did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delete_task(&ctd, &id2), 137);
    assert!(!text(&ctd.ctr(&["tasks", "ls"]).stdout).contains(&id2));
    assert!(ctd.ctr(&["containers", "delete", &id2]).status.success());

    // A memory bomb under a 32 MiB limit: 137 and an OOM event.
    let id3 = unique("oom");
    let out = ctd.run_rm(&id3, &["--memory-limit", "33554432"], &["/memory-hog.wasm"]);
    assert_eq!(out.status.code(), Some(137), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("ran out of memory"), "{}", text(&out.stderr));

    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
    let mut events_child = events.0.take().expect("events");
    let _ = events_child.kill();
    let mut seen = String::new();
    std::io::Read::read_to_string(&mut events_child.stdout.take().expect("stdout"), &mut seen).expect("events");
    let _ = events_child.wait();
    for topic in ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"] {
        assert!(seen.lines().any(|l| l.contains(topic) && l.contains(&id)), "no {topic} for {id}: {seen}");
    }
    assert!(seen.lines().any(|l| l.contains("/tasks/oom") && l.contains(&id3)), "no OOM event: {seen}");
}

#[test]
fn bad_bundles_fail_clearly() {
    let ctd = Containerd::start();
    ctd.import_image();
    let cases = [
        ("/nope.wasm", "no Wasm entry point"),
        ("/data/in-image.txt", "not a Wasm module"),
        ("/corrupt.wasm", "does not compile"),
    ];
    for (entry, expected) in cases {
        let out = ctd.run_rm(&unique("bad"), &[], &[entry]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{entry} ran");
        assert!(stderr.contains(expected), "{entry}: {stderr}");
    }
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

#[test]
fn serves_http_in_a_network_namespace() {
    let ctd = Containerd::start();
    ctd.import_image();
    let ns = NetNs::new();
    let id = unique("web");
    let with_ns = format!("network:{}", ns.path());
    let out = ctd.ctr(&[
        "run",
        "-d",
        "--null-io",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &with_ns,
        IMAGE,
        &id,
        "/hello-http.wasm",
    ]);
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    let response = http_get(&format!("{}:8080", ns.pod_ip), "/");
    let response = response.unwrap_or_else(|| panic!("no answer on the pod IP: {}", ctd.log()));
    assert!(response.starts_with("HTTP/1.") && response.contains(" 200 "), "{response}");
    assert!(response.ends_with("hello from skiff\n"), "{response}");
    assert!(ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(&ctd.ctr(&["tasks", "ls"]).stdout).lines().any(|l| l.contains(&id) && l.contains("STOPPED")) {
        assert!(Instant::now() < deadline, "the killed server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delete_task(&ctd, &id), 137);
    assert!(ctd.ctr(&["containers", "delete", &id]).status.success());
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

#[test]
fn a_pods_containers_share_one_shim_and_the_sandbox_holds_it() {
    let ctd = Containerd::start();
    ctd.import_image();
    let pod = unique("pod");
    let sandbox_id = format!("--annotation=io.kubernetes.cri.sandbox-id={pod}");
    let run_d = |id: &str, kind: &str, args: &[&str]| {
        let kind = format!("--annotation=io.kubernetes.cri.container-type={kind}");
        let mut all = vec!["run", "-d", "--null-io", "--runtime", RUNTIME, &kind, &sandbox_id, IMAGE, id];
        all.extend_from_slice(args);
        let out = ctd.ctr(&all);
        assert!(out.status.success(), "run {id}: {}", text(&out.stderr));
    };
    // The sandbox (pause) container runs nothing of its own: its /pause is not even Wasm.
    run_d(&pod, "sandbox", &["/pause"]);
    let app = unique("app");
    run_d(&app, "container", &["/tool.wasm", "forever"]);
    let tasks = text(&ctd.ctr(&["tasks", "ls"]).stdout);
    let pids: Vec<&str> = tasks
        .lines()
        .filter(|l| l.contains(&pod) || l.contains(&app))
        .map(|l| l.split_whitespace().nth(1).unwrap_or_default())
        .collect();
    assert_eq!(pids.len(), 2, "{tasks}");
    assert_eq!(pids[0], pids[1], "one shim for the pod: {tasks}");
    assert_eq!(ctd.shim_pids().len(), 1, "one shim process for the pod");

    // The app goes; the shim stays for the sandbox.
    assert!(ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", &app]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(&ctd.ctr(&["tasks", "ls"]).stdout).lines().any(|l| l.contains(&app) && l.contains("STOPPED")) {
        assert!(Instant::now() < deadline, "the app did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delete_task(&ctd, &app), 137);
    assert!(ctd.ctr(&["containers", "delete", &app]).status.success());
    let tasks = text(&ctd.ctr(&["tasks", "ls"]).stdout);
    assert!(tasks.lines().any(|l| l.contains(&pod) && l.contains("RUNNING")), "{tasks}");
    assert_eq!(ctd.shim_pids().len(), 1);

    // Stopping the sandbox ends the pod's shim.
    assert!(ctd.ctr(&["tasks", "kill", &pod]).status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(&ctd.ctr(&["tasks", "ls"]).stdout).lines().any(|l| l.contains(&pod) && l.contains("STOPPED")) {
        assert!(Instant::now() < deadline, "the sandbox did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(delete_task(&ctd, &pod), 143);
    assert!(ctd.ctr(&["containers", "delete", &pod]).status.success());
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

/// The pid `ctr tasks ls` shows for task `id`.
fn task_pid(ctd: &Containerd, id: &str) -> u32 {
    let tasks = text(&ctd.ctr(&["tasks", "ls"]).stdout);
    let line = tasks.lines().find(|l| l.split_whitespace().next() == Some(id));
    let pid = line.and_then(|l| l.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
    pid.unwrap_or_else(|| panic!("no pid for {id}: {tasks}"))
}

/// Waits (bounded) until task `id` is STOPPED.
fn wait_stopped(ctd: &Containerd, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text(&ctd.ctr(&["tasks", "ls"]).stdout).lines().any(|l| l.contains(id) && l.contains("STOPPED")) {
        assert!(Instant::now() < deadline, "{id} did not stop: {}", ctd.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` is gone (or only a zombie left to init).
fn process_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) => return true,
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

/// The parent pid of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

/// Whether anything is still mounted at a path naming `id`.
fn mounted(id: &str) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).any(|p| p.contains(id))
}

#[test]
fn runs_busybox_through_runc() {
    let ctd = Containerd::start();
    ctd.import_image();

    let out = ctd.run_rm(&unique("sh"), &[], &["/bin/sh", "-c", "echo hi; echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}{}\n{}", text(&out.stdout), text(&out.stderr), ctd.log());
    assert_eq!(text(&out.stdout), "hi\n");
    assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));

    // A bare name is found through PATH; env and args reach the process.
    let out = ctd.run_rm(&unique("env"), &["--env", "GREETING=from runc"], &["sh", "-c", "echo $GREETING $0", "x"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from runc x\n");

    // runc's own failure reaches ctr: /pause is an ELF header without the exec bit.
    let out = ctd.run_rm(&unique("noexec"), &[], &["/pause"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "/pause ran");
    assert!(stderr.contains("runc create") && stderr.contains("permission denied"), "{stderr}");

    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
    assert_eq!(ctd.runc_containers(), Vec::<String>::new(), "runc state left");
}

#[test]
fn a_linux_task_gets_signals_and_leaves_nothing_behind() {
    let ctd = Containerd::start();
    ctd.import_image();

    // SIGTERM reaches the process, which handles it.
    let id = unique("trap");
    let script = "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
    let mut run = CtrChild(Some(
        ctd.ctr_cmd(&["run", "--rm", "--runtime", RUNTIME, IMAGE, &id, "/bin/sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctr run"),
    ));
    let child = run.0.as_mut().expect("child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let kill = ctd.ctr(&["tasks", "kill", &id]);
    assert!(kill.status.success(), "kill: {}", text(&kill.stderr));
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("got TERM"));
    assert_eq!(child.wait().expect("wait ctr run").code(), Some(7));

    // A detached sleep: the task's pid is the real process, a child of the shim.
    let id = unique("sleep");
    let out = ctd.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, IMAGE, &id, "/bin/sleep", "300"]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    let pid = task_pid(&ctd, &id);
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    assert_ne!(pid, shims[0] as u32, "the task pid is the shim's");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the task's process");
    assert!(text(&cmdline).contains("sleep"), "{}", text(&cmdline));
    assert_eq!(parent_of(pid), Some(shims[0] as u32), "the shim reaps the container's init");
    assert_eq!(ctd.runc_containers(), vec![id.clone()]);

    assert!(ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]).status.success());
    wait_stopped(&ctd, &id);
    assert_eq!(delete_task(&ctd, &id), 137);
    assert!(ctd.ctr(&["containers", "delete", &id]).status.success());
    assert!(process_gone(pid), "the container's process is still running");
    assert_eq!(ctd.runc_containers(), Vec::<String>::new(), "runc state left");
    assert!(!mounted(&id), "the rootfs is still mounted");
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

#[test]
fn a_dead_shims_linux_containers_are_removed() {
    let ctd = Containerd::start();
    ctd.import_image();
    let id = unique("orphan");
    let out = ctd.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, IMAGE, &id, "/bin/sleep", "300"]);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    let pid = task_pid(&ctd, &id);
    let sockets = common::shim_sockets(&ctd.dir.path().join("state"));
    assert!(!sockets.is_empty(), "no shim socket found");
    for shim in ctd.shim_pids() {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::SIGKILL).expect("kill the shim");
    }
    // containerd sees the shim die and runs its `delete` command, which removes the runc container.
    assert!(process_gone(pid), "the container outlived its shim");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctd.runc_containers().is_empty() {
        assert!(Instant::now() < deadline, "runc state left: {:?}", ctd.runc_containers());
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ctd.ctr(&["tasks", "delete", &id]);
    assert!(ctd.ctr(&["containers", "delete", &id]).status.success());
    assert!(!mounted(&id), "the rootfs is still mounted");
    // The killed shim could not remove its socket; its `delete` command does.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sockets.iter().any(|s| s.exists()) {
        assert!(Instant::now() < deadline, "sockets of the dead shim left: {sockets:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pod_mixes_wasm_and_linux_containers_in_one_shim() {
    let ctd = Containerd::start();
    ctd.import_image();
    let pod = unique("mixpod");
    let sandbox_id = format!("--annotation=io.kubernetes.cri.sandbox-id={pod}");
    let app_kind = "--annotation=io.kubernetes.cri.container-type=container";
    let run_d = |id: &str, kind: &str, args: &[&str]| {
        let kind = format!("--annotation=io.kubernetes.cri.container-type={kind}");
        let mut all = vec!["run", "-d", "--null-io", "--runtime", RUNTIME, &kind, &sandbox_id, IMAGE, id];
        all.extend_from_slice(args);
        let out = ctd.ctr(&all);
        assert!(out.status.success(), "run {id}: {}", text(&out.stderr));
    };
    // The sandbox comes from a spec of its own (as CRI writes it): the pod's hostname and network.
    let net = NetNs::new();
    let sandbox_dir = tempfile::tempdir().expect("tempdir");
    let hostname = format!("host-{pod}");
    let sandbox_spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": sandbox_dir.path()},
        "hostname": hostname,
        "process": {"args": ["/pause"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "uts"}, {"type": "ipc"}, {"type": "network", "path": net.path()}]},
        "annotations": {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": pod}
    });
    let config = sandbox_dir.path().join("config.json");
    std::fs::write(&config, sandbox_spec.to_string()).expect("sandbox spec");
    let config = config.to_str().expect("utf-8");
    let out = ctd.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "--config", config, &pod]);
    assert!(out.status.success(), "sandbox: {}", text(&out.stderr));
    let wasm = unique("wasmapp");
    run_d(&wasm, "container", &["/tool.wasm", "forever"]);
    let linux = unique("linuxapp");
    run_d(&linux, "container", &["/bin/sleep", "300"]);

    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim process for the pod: {shims:?}");
    let shim = shims[0] as u32;
    assert_eq!((task_pid(&ctd, &pod), task_pid(&ctd, &wasm)), (shim, shim));
    let linux_pid = task_pid(&ctd, &linux);
    assert_ne!(linux_pid, shim);
    assert_eq!(parent_of(linux_pid), Some(shim));
    let tasks = text(&ctd.ctr(&["tasks", "ls"]).stdout);
    for id in [&pod, &wasm, &linux] {
        assert!(tasks.lines().any(|l| l.contains(id.as_str()) && l.contains("RUNNING")), "{id}: {tasks}");
    }

    // As CRI does, a container joins the sandbox's namespaces by /proc path: the sandbox's pid is the
    // shim's, so the Linux container gets the pod's network namespace, and the pod's IPC and UTS namespaces
    // (with its hostname) instead of the host's.
    let ipc = format!("ipc:/proc/{shim}/ns/ipc");
    let uts = format!("uts:/proc/{shim}/ns/uts");
    let network = format!("network:/proc/{shim}/ns/net");
    let flags = [app_kind, &sandbox_id, "--with-ns", &ipc, "--with-ns", &uts, "--with-ns", &network];
    let script = "hostname; readlink /proc/self/ns/ipc; ifconfig eth0";
    let out = ctd.run_rm(&unique("nsapp"), &flags, &["/bin/sh", "-c", script]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), ctd.log());
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let host_ipc = std::fs::read_link(format!("/proc/{shim}/ns/ipc")).expect("the shim's ipc namespace");
    assert!(lines.len() > 2, "{stdout}");
    assert!(stdout.contains(&format!("inet addr:{}", net.pod_ip)), "not on the pod's network: {stdout}");
    assert_eq!(lines[0], hostname, "the pod's hostname");
    assert!(lines[1].starts_with("ipc:["), "{stdout}");
    assert_ne!(lines[1], host_ipc.to_string_lossy(), "the container joined the host's IPC");
    assert_eq!(ctd.shim_pids(), shims, "the run joined the pod's shim");

    for id in [&wasm, &linux] {
        assert!(ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", id]).status.success());
        wait_stopped(&ctd, id);
        assert_eq!(delete_task(&ctd, id), 137);
        assert!(ctd.ctr(&["containers", "delete", id]).status.success());
    }
    assert!(process_gone(linux_pid));
    assert_eq!(ctd.runc_containers(), Vec::<String>::new(), "runc state left");
    assert!(ctd.ctr(&["tasks", "kill", &pod]).status.success());
    wait_stopped(&ctd, &pod);
    assert_eq!(delete_task(&ctd, &pod), 143);
    assert!(ctd.ctr(&["containers", "delete", &pod]).status.success());
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

#[test]
fn a_linux_container_joins_the_network_namespace() {
    let ctd = Containerd::start();
    ctd.import_image();
    let ns = NetNs::new();
    let with_ns = format!("network:{}", ns.path());
    let out = ctd.run_rm(
        &unique("netlinux"),
        &["--with-ns", &with_ns],
        &["/bin/sh", "-c", "cat /proc/net/dev; ifconfig eth0"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("eth0:")), "{stdout}");
    assert!(stdout.contains(&format!("inet addr:{}", ns.pod_ip)), "{stdout}");
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

#[test]
fn a_linux_container_killed_by_the_oom_killer_publishes_oom() {
    let ctd = Containerd::start();
    ctd.import_image();
    let events = EventStream::subscribe(&ctd);

    // busybox `tail` buffers the one endless line until the kernel kills it in its 32 MiB memory cgroup.
    let hog = unique("oomlinux");
    let out =
        ctd.run_rm(&hog, &["--memory-limit", "33554432"], &["/bin/sh", "-c", "head -c 300000000 /dev/zero | tail"]);
    assert_eq!(out.status.code(), Some(137), "{}{}\n{}", text(&out.stdout), text(&out.stderr), ctd.log());
    assert!(events.wait_for(&["/tasks/oom", &hog]), "no OOM event for {hog}: {}", events.seen());

    // A normal exit under the same limit: its exit event comes, and no OOM event.
    let fine = unique("fitslinux");
    let out =
        ctd.run_rm(&fine, &["--memory-limit", "33554432"], &["/bin/sh", "-c", "head -c 1000000 /dev/zero | wc -c"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1000000");
    assert!(events.wait_for(&["/tasks/delete", &fine]), "no delete event for {fine}: {}", events.seen());
    let seen = events.seen();
    assert!(!seen.lines().any(|l| l.contains("/tasks/oom") && l.contains(&fine)), "OOM event for {fine}: {seen}");
    // The OOM event came before the exit event.
    let position = |topic: &str, id: &str| seen.lines().position(|l| l.contains(topic) && l.contains(id));
    let (oom, exit) = (position("/tasks/oom", &hog), position("/tasks/exit", &hog));
    assert!(oom.is_some() && exit.is_some() && oom < exit, "OOM after the exit for {hog}: {seen}");
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}

/// The pids of namespace holders (the shim started with its hidden argument) for `hostname`.
fn holders(hostname: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(text).collect();
        if args.get(1).map(String::as_str) == Some(skiff_shim::containerd::HOLD_ARG)
            && args.get(2).map(String::as_str) == Some(hostname)
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_pods_linux_containers_share_its_ipc_and_uts_namespaces() {
    let ctd = Containerd::start();
    ctd.import_image();
    let pod = unique("ipcpod");
    let hostname = format!("host-{pod}");
    let sandbox_dir = tempfile::tempdir().expect("tempdir");
    let sandbox_spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": sandbox_dir.path()},
        "hostname": hostname,
        "process": {"args": ["/pause"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "uts"}, {"type": "ipc"}]},
        "annotations": {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": pod}
    });
    let config = sandbox_dir.path().join("config.json");
    std::fs::write(&config, sandbox_spec.to_string()).expect("sandbox spec");
    let config = config.to_str().expect("utf-8");
    let out = ctd.ctr(&["run", "-d", "--null-io", "--runtime", RUNTIME, "--config", config, &pod]);
    assert!(out.status.success(), "sandbox: {}", text(&out.stderr));
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let shim = shims[0] as u32;
    assert!(holders(&hostname).is_empty(), "a holder before the pod's first Linux container");

    // Two app containers join the sandbox's IPC and UTS namespaces as CRI does, by the sandbox's pid.
    let sandbox_id = format!("--annotation=io.kubernetes.cri.sandbox-id={pod}");
    let ipc = format!("ipc:/proc/{shim}/ns/ipc");
    let uts = format!("uts:/proc/{shim}/ns/uts");
    let flags =
        ["--annotation=io.kubernetes.cri.container-type=container", &sandbox_id, "--with-ns", &ipc, "--with-ns", &uts];
    let script = "hostname; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts";
    // The first keeps running while the second runs: a namespace number freed could be given again.
    let first = unique("first");
    let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
    args.extend_from_slice(&flags);
    let first_script = format!("{script}; sleep 300");
    args.extend_from_slice(&[IMAGE, &first, "/bin/sh", "-c", &first_script]);
    let mut run =
        CtrChild(Some(ctd.ctr_cmd(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("ctr run")));
    let child = run.0.as_mut().expect("child");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first_seen: Vec<String> = (0..3).map_while(|_| lines.next().and_then(Result::ok)).collect();
    assert_eq!(first_seen.len(), 3, "first: {first_seen:?}\n{}", ctd.log());
    let out = ctd.run_rm(&unique("second"), &flags, &["/bin/sh", "-c", script]);
    assert!(out.status.success(), "second: {}\n{}", text(&out.stderr), ctd.log());
    let stdout = text(&out.stdout);
    let second_seen: Vec<String> = stdout.lines().map(str::to_string).collect();
    let seen = [first_seen, second_seen];
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").expect("the host's ipc namespace");
    let host_uts = std::fs::read_link("/proc/self/ns/uts").expect("the host's uts namespace");
    assert_eq!(seen[0], seen[1], "the pod's containers do not share IPC and UTS");
    assert_eq!(seen[0][0], hostname, "the pod's hostname");
    assert!(seen[0][1].starts_with("ipc:[") && seen[0][2].starts_with("uts:["), "{:?}", seen[0]);
    assert_ne!(seen[0][1], host_ipc.to_string_lossy(), "the host's IPC namespace");
    assert_ne!(seen[0][2], host_uts.to_string_lossy(), "the host's UTS namespace");

    // One holder for the pod, a child of its shim, holding those namespaces.
    let held = holders(&hostname);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(parent_of(held[0]), Some(shim));
    let holder_ipc = std::fs::read_link(format!("/proc/{}/ns/ipc", held[0])).expect("the holder's ipc");
    assert_eq!(holder_ipc.to_string_lossy(), seen[0][1]);

    assert!(ctd.ctr(&["tasks", "kill", "-s", "SIGKILL", &first]).status.success());
    assert_eq!(child.wait().expect("wait ctr run").code(), Some(137));

    // Removing the sandbox ends the holder.
    assert!(ctd.ctr(&["tasks", "kill", &pod]).status.success());
    wait_stopped(&ctd, &pod);
    assert_eq!(delete_task(&ctd, &pod), 143);
    assert!(ctd.ctr(&["containers", "delete", &pod]).status.success());
    assert!(process_gone(held[0]), "the holder outlived its sandbox");
    assert!(holders(&hostname).is_empty(), "holders left: {:?}", holders(&hostname));
    assert!(ctd.shims_gone(), "shims left running: {:?}", ctd.shim_pids());
}
