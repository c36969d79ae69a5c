//! `hello` (wasm32-wasip1): the smallest guest. Prints a greeting, its arguments and `HELLO_NAME`
//! to stdout and one line to stderr, then exits 0. Tests grep these lines to check that args, env
//! and both output streams reach the container's logs.

fn main() {
    println!("hello from skiff");
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args: {}", args.join(" "));
    if let Ok(name) = std::env::var("HELLO_NAME") {
        println!("HELLO_NAME={name}");
    }
    eprintln!("hello on stderr");
}
