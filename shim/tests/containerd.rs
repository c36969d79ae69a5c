//! `containerd-shim-skiff-v1` driven by a real containerd 1.6 through `ctr`: output and exit codes, kill,
//! delete, the compile cache, memory limits with the OOM event, bad bundles, and a guest serving HTTP on a
//! network namespace's address. Needs root, containerd, ctr, umoci, skopeo and ip.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

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
    let cases =
        [("/nope.wasm", "no Wasm entry point"), ("/pause", "not a Wasm module"), ("/corrupt.wasm", "does not compile")];
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
