//! `crasher` (wasm32-wasip1): exits with a chosen non-zero code, or traps. Prints
//! `crashing with <code>` and exits with `CRASH_CODE` (default 3); with first argument `trap`
//! it executes a Wasm `unreachable` instead, so tests see a trap rather than an exit.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("trap") {
        println!("trapping");
        core::arch::wasm32::unreachable();
    }
    let code = std::env::var("CRASH_CODE").ok().and_then(|v| v.trim().parse::<i32>().ok()).unwrap_or(3);
    println!("crashing with {code}");
    std::process::exit(code);
}
