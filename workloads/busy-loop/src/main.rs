//! `busy-loop` (wasm32-wasip1): prints `spinning`, then burns CPU forever without sleeping or
//! calling the host. Used to check that the CPU bound (epoch interruption or fuel) stops a
//! runaway guest and kills only that container.

use std::hint::black_box;

fn main() {
    println!("spinning");
    let mut x: u64 = black_box(1);
    loop {
        // A xorshift step: cheap arithmetic whose result is observed by black_box, so the
        // loop cannot be optimised away.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
}
