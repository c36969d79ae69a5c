//! End to end: Secrets are encrypted at rest. A Secret's value (and its base64) never appears in
//! the SQLite files; kubectl reads it back; `skiff secrets rotate` re-encrypts online with a new key
//! from the 0600 key file; a restarted server still reads everything.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::Cluster;

const CANARY: &str = "plain-text-canary-93ad";

/// Whether any of the store's files holds `needle`.
fn stored_anywhere(c: &Cluster, needle: &str) -> bool {
    ["state.db", "state.db-wal"].iter().any(|f| {
        std::fs::read(c.data_dir().join(f))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

fn password(c: &Cluster) -> String {
    let encoded = c.kubectl(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = out.expect("base64");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(encoded.as_bytes()).expect("write");
    String::from_utf8_lossy(&child.wait_with_output().expect("base64").stdout).into_owned()
}

fn key_file(c: &Cluster) -> String {
    std::fs::read_to_string(c.data_dir().join("secrets-encryption.json")).expect("key file")
}

#[test]
fn secrets_are_encrypted_at_rest_and_the_key_rotates_online() {
    let mut c = Cluster::start();
    c.kubectl(&["create", "secret", "generic", "db", &format!("--from-literal=password={CANARY}")]);
    c.kubectl(&["create", "configmap", "plain", "--from-literal=note=configmap-visible-value-71c"]);
    assert_eq!(password(&c), CANARY);
    let base64_of_canary = "cGxhaW4tdGV4dC1jYW5hcnktOTNhZA";
    assert!(!stored_anywhere(&c, CANARY), "the secret's value is in the store's files");
    assert!(!stored_anywhere(&c, base64_of_canary), "the secret's base64 is in the store's files");
    // ConfigMaps are not secrets: stored as they are (which shows the check can find a value).
    assert!(stored_anywhere(&c, "configmap-visible-value-71c"));
    let mode = std::fs::metadata(c.data_dir().join("secrets-encryption.json")).expect("key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Rotation: a new key, the secret rewritten with it, the old key gone.
    let before = key_file(&c);
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["secrets", "rotate", "--data-dir"])
        .arg(c.data_dir())
        .output()
        .expect("skiff secrets rotate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("rotate answer");
    assert!(answer["rewritten"].as_u64().is_some_and(|n| n >= 1), "{answer}");
    let after = key_file(&c);
    assert_ne!(before, after);
    let new_key = answer["key"].as_str().expect("key name");
    assert!(after.contains(new_key) && after.matches("\"name\"").count() == 1, "{after}");
    assert_eq!(password(&c), CANARY);
    assert!(!stored_anywhere(&c, CANARY));

    // A token without cluster-admin cannot rotate.
    c.kubectl(&["create", "serviceaccount", "someone"]);
    let token = c.kubectl(&["create", "token", "someone"]);
    let (code, _) = {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{}/skiff/v1/secrets/rotate", c.url()));
        let out = cmd.output().expect("curl");
        (String::from_utf8_lossy(&out.stdout).into_owned(), ())
    };
    assert_eq!(code, "403");

    // A restarted server reads with the kept key.
    c.kill9();
    c.spawn();
    assert_eq!(password(&c), CANARY);
    c.kubectl(&["delete", "secret", "db"]);
}
