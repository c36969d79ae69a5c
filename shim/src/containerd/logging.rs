//! The shim's own log: the serving shim writes to the `log` fifo containerd reads in the bundle (it ends up
//! in containerd's log); the `start` and `delete` commands only report errors on stderr, since containerd
//! reads their output as the reply. `SKIFF_LOG` sets the filter (default `info`, `debug` with `-debug`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

use containerd_shim::Flags;
use nix::fcntl::OFlag;
use tracing_subscriber::EnvFilter;

/// Installs the process-wide subscriber for `flags.action`; logging stays off if the fifo cannot be opened.
pub fn init(flags: &Flags) {
    let serving = !matches!(flags.action.as_str(), "start" | "delete");
    let default = match (serving, flags.debug) {
        (false, _) => "error",
        (true, true) => "debug",
        (true, false) => "info",
    };
    let filter =
        EnvFilter::try_from_env("SKIFF_LOG").ok().filter(|_| serving).unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    if !serving {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return;
    }
    // Non-blocking: when containerd does not read (e.g. while it restarts), lines are dropped rather than
    // stalling the shim.
    let fifo = OpenOptions::new().write(true).custom_flags(OFlag::O_NONBLOCK.bits()).open("log");
    if let Ok(fifo) = fifo {
        let _ = builder.with_writer(std::sync::Mutex::new(fifo)).try_init();
    }
}
