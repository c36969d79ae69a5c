//! `tool` (wasm32-wasip1): a multi-tool for volume, env and lifecycle tests. Parses the
//! subcommand and dispatches to `commands`; errors go to stderr with exit 1, an unknown or
//! malformed subcommand prints usage to stderr with exit 2.

mod commands;

use std::process::ExitCode;

const USAGE: &str = "usage: tool <command> [args]
commands:
  env                     print every env var K=V, sorted
  cat FILE                print FILE
  write FILE TEXT         write TEXT to FILE (creates parent dirs)
  append FILE TEXT        append TEXT and a newline to FILE
  wait-cat FILE [SECS]    wait up to SECS (default 30) for FILE, then print it
  ls DIR                  print the names in DIR, sorted
  sleep SECS              sleep SECS seconds
  exit N                  exit with code N
  pwd                     print the current directory
  forever                 print `running`, then sleep forever
  echo-stdin              print `got: LINE` for each line of stdin until it ends";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match argv.as_slice() {
        ["env"] => commands::env(),
        ["cat", file] => commands::cat(file),
        ["write", file, text] => commands::write(file, text),
        ["append", file, text] => commands::append(file, text),
        ["wait-cat", file] => commands::wait_cat(file, None),
        ["wait-cat", file, secs] => commands::wait_cat(file, Some(secs)),
        ["ls", dir] => commands::ls(dir),
        ["sleep", secs] => commands::sleep(secs),
        ["exit", code] => commands::exit(code),
        ["pwd"] => commands::pwd(),
        ["forever"] => commands::forever(),
        ["echo-stdin"] => commands::echo_stdin(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("tool: {msg}");
            ExitCode::FAILURE
        }
    }
}
