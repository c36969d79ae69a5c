//! The built-in commands `kubectl exec` runs in a Wasm container (which has no shell or coreutils of
//! its own): a small set run by the kubelet natively against the container's own view of its files
//! ([`fs::View`]: its volume mounts and its copy of the image's files, every path resolved beneath its
//! volume) and its environment. `tar` in the forms `kubectl cp` runs makes `kubectl cp` work.
//! `sh -c` runs simple `;`/`&&`/`||` lists of these commands; it is not a shell.
//!
//! Commands are synchronous (run on a blocking thread): stdin is a [`std::io::Read`], stdout and
//! stderr [`std::io::Write`]s, and a [`CancellationToken`] ends long ones (`sleep`, `cat` of stdin).

mod commands;
pub mod fs;
mod sh;
mod tar;
#[cfg(test)]
mod tests;

use std::io::{Read, Write};

use tokio_util::sync::CancellationToken;

pub use fs::{Dir, View};

/// The commands the toolbox runs itself (anything else runs the container's module).
pub const COMMANDS: &[&str] =
    &["ls", "cat", "env", "echo", "pwd", "mkdir", "rm", "true", "false", "sleep", "test", "sh", "tar", "exit"];

/// Whether `command` is a toolbox command (by its name or its path, e.g. `/bin/ls`).
pub fn is_builtin(command: &str) -> bool {
    COMMANDS.contains(&name(command))
}

/// A command's name without its directory (`/bin/ls` -> `ls`).
fn name(command: &str) -> &str {
    command.rsplit('/').next().unwrap_or(command)
}

/// What a command runs against.
pub struct World {
    pub view: View,
    /// The container's environment (its image's, overridden by its own).
    pub env: Vec<(String, String)>,
}

/// A command's streams and its stop.
pub struct Io<'a> {
    pub stdin: &'a mut dyn Read,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    pub cancel: &'a CancellationToken,
    /// Whether the client has a terminal (interactive `sh` echoes and prompts).
    pub tty: bool,
}

impl Io<'_> {
    /// Writes one line to stderr (a lost stderr is not an error of the command).
    fn warn(&mut self, line: &str) {
        let _ = writeln!(self.stderr, "{line}");
    }
}

/// The exit code a shell gives for a command it cannot find.
pub const NOT_FOUND: i32 = 127;

/// Runs `argv` (`argv[0]` a toolbox command) to its exit code.
pub fn run(world: &World, argv: &[String], io: &mut Io<'_>) -> i32 {
    let Some((first, args)) = argv.split_first() else { return 0 };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match name(first) {
        "sh" => sh::run(world, &args, io),
        "tar" => tar::run(world, &args, io),
        "exit" => args.first().map_or(0, |c| c.parse::<i32>().unwrap_or(2)),
        other => commands::run(world, other, &args, io),
    };
    let _ = io.stdout.flush();
    let _ = io.stderr.flush();
    code
}
