//! `slow-starter` (wasm32-wasip1): a guest that becomes ready late, for startup and readiness exec
//! probes. Without arguments it prints `starting`, sleeps `START_DELAY` seconds (default 3),
//! creates `READY_FILE` (default `/work/ready`), prints `ready` and sleeps forever. With first
//! argument `check` it exits 0 if `READY_FILE` exists, else prints `not ready` and exits 1.

use std::path::Path;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::Duration;

const DEFAULT_READY_FILE: &str = "/work/ready";
const DEFAULT_DELAY_SECS: f64 = 3.0;
/// Sleeps are cut into slices this long, so a host whose CPU bound (epoch or fuel) only fires
/// while guest code runs can still stop the guest soon after it is asked to.
const SLICE: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let ready_file = std::env::var("READY_FILE").unwrap_or_else(|_| DEFAULT_READY_FILE.to_string());
    if std::env::args().nth(1).as_deref() == Some("check") {
        return check(&ready_file);
    }
    let delay = std::env::var("START_DELAY")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .unwrap_or(Duration::from_secs_f64(DEFAULT_DELAY_SECS));
    println!("starting");
    sleep_sliced(delay);
    if let Some(parent) = Path::new(&ready_file).parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            eprintln!("cannot create {}: {e}", parent.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::write(&ready_file, b"ready\n") {
        eprintln!("cannot create {ready_file}: {e}");
        return ExitCode::FAILURE;
    }
    println!("ready");
    loop {
        sleep(SLICE);
    }
}

fn sleep_sliced(total: Duration) {
    let mut left = total;
    while !left.is_zero() {
        let step = left.min(SLICE);
        sleep(step);
        left -= step;
    }
}

fn check(ready_file: &str) -> ExitCode {
    if Path::new(ready_file).exists() {
        ExitCode::SUCCESS
    } else {
        println!("not ready");
        ExitCode::FAILURE
    }
}
