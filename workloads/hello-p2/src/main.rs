//! `hello-p2` (wasm32-wasip2 command component): like `hello` but as a WASI preview 2 component
//! exporting `wasi:cli/run`. Prints `hello from a component`, its arguments and `HELLO_NAME`,
//! then exits 0. Tests grep these lines to check that components run as containers.

fn main() {
    println!("hello from a component");
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args: {}", args.join(" "));
    if let Ok(name) = std::env::var("HELLO_NAME") {
        println!("HELLO_NAME={name}");
    }
}
