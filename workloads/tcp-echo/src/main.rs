//! `tcp-echo` (wasm32-wasip2 command component): a long-running TCP server through Rust std's
//! `TcpListener` (WASI preview 2 sockets). Listens on `0.0.0.0:$PORT` (default 7000), prints
//! `listening on <addr>`, and echoes every line a client sends back to it, one thread-less
//! connection at a time (std has no threads on wasip2). A client that sends `quit` closes its
//! connection; the server never exits on its own.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn serve(stream: TcpStream) -> std::io::Result<()> {
    // Reads and writes through `&TcpStream` (`try_clone` is not supported on wasip2).
    let mut out = &stream;
    for line in BufReader::new(&stream).lines() {
        let line = line?;
        if line == "quit" {
            break;
        }
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn main() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(7000);
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on 0.0.0.0:{port}");
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if let Err(e) = serve(s) {
                    eprintln!("connection: {e}");
                }
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}
