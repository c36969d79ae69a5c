//! Collects the Kubernetes protobuf file descriptors that `k8s-rs-pb` generated from the upstream
//! `generated.proto` files, for protobuf request bodies (`src/api/http/protobuf.rs`).
//!
//! The crate's own reflection cannot be used (its generated descriptors list themselves as their
//! dependencies, so the first reflective access deadlocks), but every generated file embeds its
//! serialized `FileDescriptorProto`. This script finds the crate's sources through `cargo metadata`,
//! reads those byte strings and writes them, length-prefixed, to `$OUT_DIR/k8s_descriptors.bin`;
//! the server builds dynamic descriptors from them.
//!
//! It also compiles `proto/openapi_v2.proto` (the OpenAPI v2 document messages `/openapi/v2`
//! sends, `src/api/openapi/v2_proto.rs`) to Rust with protobuf-codegen's pure-Rust parser.

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION_DIR: &str = "v1_33";
const MARKER: &str = "static file_descriptor_proto_data: &'static [u8] = b\"";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/openapi_v2.proto");
    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/openapi_v2.proto")
        .cargo_out_dir("openapi_v2")
        .run_from_script();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("k8s_descriptors.bin");
    let crate_dir = k8s_rs_pb_dir();
    let mut files = Vec::new();
    collect(&crate_dir.join("src").join(VERSION_DIR), &mut files);
    files.sort();
    let mut blob = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("reading a k8s-rs-pb source");
        let Some(start) = text.find(MARKER) else { continue };
        let bytes = unescape(&text[start + MARKER.len()..]);
        blob.extend_from_slice(&u32::try_from(bytes.len()).expect("descriptor size").to_le_bytes());
        blob.extend_from_slice(&bytes);
    }
    assert!(!blob.is_empty(), "no descriptors found under {}", crate_dir.display());
    std::fs::write(&out, blob).expect("writing k8s_descriptors.bin");
}

/// The source directory of the `k8s-rs-pb` package this build uses.
fn k8s_rs_pb_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // Only this platform's packages (others, e.g. Windows-only ones, need not be downloaded).
    let target = std::env::var("TARGET").unwrap_or_default();
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &target, "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    if !output.status.success() {
        // The package is unpacked in cargo's registry before this script runs: look there.
        return registry_dir().unwrap_or_else(|| {
            panic!("cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
        });
    }
    let json = String::from_utf8_lossy(&output.stdout);
    let key = "\"manifest_path\":\"";
    json.match_indices(key)
        .filter_map(|(at, _)| {
            let rest = &json[at + key.len()..];
            let path = &rest[..rest.find('"')?];
            let dir = Path::new(path).parent()?;
            dir.file_name()?.to_str()?.starts_with("k8s-rs-pb-").then(|| dir.to_path_buf())
        })
        .next()
        .expect("k8s-rs-pb in cargo metadata")
}

/// `k8s-rs-pb-*` under `$CARGO_HOME/registry/src/*/` (the newest name, if several).
fn registry_dir() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(home.join("registry").join("src"))
        .ok()?
        .flatten()
        .filter_map(|index| std::fs::read_dir(index.path()).ok())
        .flat_map(|dir| dir.flatten().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("k8s-rs-pb-")))
        .collect();
    found.sort();
    found.pop()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading k8s-rs-pb sources").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.file_name().is_some_and(|n| n == "mod.rs") {
            out.push(path);
        }
    }
}

/// The bytes of a Rust byte-string literal body, up to its closing quote.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('x') => {
                    let hex: String = [chars.next(), chars.next()].into_iter().flatten().collect();
                    out.push(u8::from_str_radix(&hex, 16).expect("a \\x escape"));
                }
                Some('n') => out.push(b'\n'),
                Some('r') => out.push(b'\r'),
                Some('t') => out.push(b'\t'),
                Some('0') => out.push(0),
                Some('\n') => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                Some(other) => out.push(other as u8),
                None => break,
            },
            other => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}
