//! The subcommands of `tool`. Each returns `Err(message)` on failure; `main` prints it to stderr
//! and exits 1.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

type Result = std::result::Result<(), String>;

const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// Long sleeps are cut into slices this long, so a host whose CPU bound (epoch or fuel) only
/// fires while guest code runs can still stop the guest soon after it is asked to.
const SLICE: Duration = Duration::from_millis(250);

/// Prints every environment variable as `K=V`, sorted by name.
pub fn env() -> Result {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    let mut out = std::io::stdout().lock();
    for (k, v) in vars {
        writeln!(out, "{k}={v}").map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}

/// Prints the contents of `file` unchanged.
pub fn cat(file: &str) -> Result {
    let data = std::fs::read(file).map_err(|e| format!("cat {file}: {e}"))?;
    print_bytes(&data)
}

/// Writes `text` to `file`, creating its parent directories.
pub fn write(file: &str, text: &str) -> Result {
    create_parent(file)?;
    // Beside it, then renamed over it: a reader polling for `file` (wait-cat) never sees it empty.
    let partial = format!("{file}.partial");
    std::fs::write(&partial, text).map_err(|e| format!("write {file}: {e}"))?;
    std::fs::rename(&partial, file).map_err(|e| format!("write {file}: {e}"))
}

/// Appends `text` and a newline to `file`, creating it (and its parent directories) if needed.
pub fn append(file: &str, text: &str) -> Result {
    create_parent(file)?;
    let mut f = OpenOptions::new().create(true).append(true).open(file).map_err(|e| format!("append {file}: {e}"))?;
    writeln!(f, "{text}").map_err(|e| format!("append {file}: {e}"))
}

/// Polls every 100 ms until `file` exists (up to `secs`, default 30), then prints it.
pub fn wait_cat(file: &str, secs: Option<&str>) -> Result {
    let secs = match secs {
        Some(s) => parse_secs(s)?,
        None => DEFAULT_WAIT,
    };
    // `None`: a deadline too far away to represent, i.e. wait forever.
    let deadline = Instant::now().checked_add(secs);
    loop {
        match std::fs::read(file) {
            Ok(data) => return print_bytes(&data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("wait-cat {file}: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(format!("wait-cat {file}: timed out after {} s", secs.as_secs_f64()));
        }
        thread::sleep(POLL);
    }
}

/// Prints the names of the entries of `dir`, sorted, one a line.
pub fn ls(dir: &str) -> Result {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("ls {dir}: {e}"))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("ls {dir}: {e}"))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut out = std::io::stdout().lock();
    for name in names {
        writeln!(out, "{name}").map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}

/// Sleeps `secs` seconds (fractions allowed).
pub fn sleep(secs: &str) -> Result {
    sleep_sliced(parse_secs(secs)?);
    Ok(())
}

/// Exits with code `code`.
pub fn exit(code: &str) -> Result {
    let code: i32 = code.trim().parse().map_err(|_| format!("exit: bad code {code:?}"))?;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Prints the current directory.
pub fn pwd() -> Result {
    let dir = std::env::current_dir().map_err(|e| format!("pwd: {e}"))?;
    println!("{}", dir.display());
    Ok(())
}

/// Prints `running`, then sleeps forever.
/// Prints `got: <line>` for every line of stdin, as it arrives, until stdin ends.
pub fn echo_stdin() -> Result {
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        writeln!(out, "got: {line}").map_err(|e| format!("stdout: {e}"))?;
        out.flush().map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(())
}

pub fn forever() -> Result {
    println!("running");
    loop {
        thread::sleep(SLICE);
    }
}

fn create_parent(file: &str) -> Result {
    match Path::new(file).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))
        }
        _ => Ok(()),
    }
}

/// Parses a non-negative number of seconds (fractions allowed).
fn parse_secs(s: &str) -> std::result::Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("bad number of seconds {s:?}"))
}

fn sleep_sliced(total: Duration) {
    let mut left = total;
    while !left.is_zero() {
        let step = left.min(SLICE);
        thread::sleep(step);
        left -= step;
    }
}

fn print_bytes(data: &[u8]) -> Result {
    let mut out = std::io::stdout().lock();
    out.write_all(data).and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
}
