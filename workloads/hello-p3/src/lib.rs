//! A WASI 0.3 command component: `run` is an async export, and it calls async host functions (a clock
//! wait, a stream written to stdout). See `wit/`: only the parts of WASI 0.3 it uses are declared.
//!
//! No argument: prints `hello from p3, <HELLO_NAME or world>; args: <args>`, exit 0.
//! `sleep MS`: waits MS milliseconds on the monotonic clock, prints `slept <N> ms`, exit 0.
//! `fail`: prints `failing`, `run` returns an error (exit 1).
//! `spin`: prints `spinning`, then loops forever without yielding (the host must stop it).
//! `grow MB`: allocates and touches MB MiB, prints `grew <MB> MiB`, exit 0.

wit_bindgen::generate!({ world: "hello-p3", path: "wit", generate_all });

use exports::wasi::cli::run::Guest;
use wasi::cli::{environment, stdout};
use wasi::clocks::monotonic_clock;

struct HelloP3;
export!(HelloP3);

/// Writes `text` to stdout through a WASI 0.3 stream.
async fn print(text: String) -> Result<(), ()> {
    let (mut tx, rx) = wit_stream::new::<u8>();
    let done = stdout::write_via_stream(rx);
    let unwritten = tx.write_all(text.into_bytes()).await;
    drop(tx);
    if !unwritten.is_empty() {
        return Err(());
    }
    done.await.map_err(|_| ())
}

impl Guest for HelloP3 {
    async fn run() -> Result<(), ()> {
        let args = environment::get_arguments();
        match args.get(1).map(String::as_str) {
            Some("sleep") => {
                let ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
                let start = monotonic_clock::now();
                monotonic_clock::wait_for(ms.saturating_mul(1_000_000)).await;
                let slept = monotonic_clock::now().saturating_sub(start) / 1_000_000;
                print(format!("slept {slept} ms\n")).await
            }
            Some("spin") => {
                print("spinning\n".into()).await?;
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("grow") => {
                let mb: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
                let held = vec![1u8; mb.saturating_mul(1 << 20)];
                print(format!("grew {} MiB\n", std::hint::black_box(held).len() >> 20)).await
            }
            Some("fail") => {
                print("failing\n".into()).await?;
                Err(())
            }
            _ => {
                let env = environment::get_environment();
                let name = env.iter().find(|(k, _)| k == "HELLO_NAME").map_or("world", |(_, v)| v.as_str());
                let rest = args.get(1..).unwrap_or_default().join(" ");
                print(format!("hello from p3, {name}; args: {rest}\n")).await
            }
        }
    }
}
