//! `memory-hog` (wasm32-wasip1): allocates 1 MiB chunks forever, writing every page and keeping
//! every chunk, and prints `allocated <N> MiB` every 16 MiB. Used to check that the memory limit
//! stops a memory bomb and kills only that container.

use std::hint::black_box;

const CHUNK: usize = 1024 * 1024;
const PAGE: usize = 4096;

fn main() {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut mib: u64 = 0;
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Zeroed memory may never be written by the allocator: write one byte per page so
        // the host really commits it.
        for i in (0..CHUNK).step_by(PAGE) {
            chunk[i] = (mib as u8).wrapping_add(1);
        }
        kept.push(black_box(chunk));
        mib += 1;
        if mib.is_multiple_of(16) {
            println!("allocated {mib} MiB");
        }
    }
}
