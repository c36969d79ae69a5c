//! End-to-end: the official Python client (PyPI `kubernetes`) against a real skiff server.
//! The checks live in tests/python/client_check.py; this test starts the server and runs it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{tail, Cluster};

#[test]
fn python_client_round_trip() {
    let probe = Command::new("python3").args(["-c", "import kubernetes"]).output().expect("run python3");
    assert!(
        probe.status.success(),
        "the Python `kubernetes` package is not installed (pip install kubernetes): {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let cluster = Cluster::start();
    let script = skiff_testkit::repo_root().join("tests/python/client_check.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(cluster.kubeconfig())
        .env("HOME", cluster.data_dir())
        // The dynamic client caches discovery in the temp dir: keep it inside the cluster's dir.
        .env("TMPDIR", cluster.data_dir())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 client_check.py");

    // Guard against a hung client (e.g. a watch the server never ends): kill it after 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut timed_out = false;
    while child.try_wait().expect("wait python").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("python output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "python client check {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- server log tail ---\n{}",
        if timed_out { "timed out after 60 s".to_string() } else { format!("exited with {}", out.status) },
        tail(&cluster.server_log())
    );
    assert!(!timed_out && out.status.success(), "{report}");
    assert_eq!(stdout.lines().last().map(str::trim), Some("OK"), "{report}");
}
