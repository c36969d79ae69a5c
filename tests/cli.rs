//! The `skiff` subcommands besides server/agent, run as a user would: `skiff shim install` on a copy of
//! a real containerd config (twice, then `--uninstall`).

use std::process::Command;

fn skiff(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff")).args(args).output().expect("run skiff");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn shim_install_twice_then_uninstall_keeps_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let default = Command::new("containerd").args(["config", "default"]).output().expect("containerd config default");
    assert!(default.status.success(), "containerd config default failed (apt-get install containerd)");
    let original = format!("# the operator's own comment\n{}", String::from_utf8_lossy(&default.stdout));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &original).expect("write config");
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    let args = [
        "shim",
        "install",
        "--containerd-config",
        config.to_str().expect("utf-8"),
        "--bin-dir",
        bin_dir.to_str().expect("utf-8"),
        // The binary's content does not matter to the config edit; any file stands in for it.
        "--shim-binary",
        env!("CARGO_BIN_EXE_skiff"),
    ];
    let (ok, first) = skiff(&args);
    assert!(ok, "{first}");
    assert!(first.contains("added the runtime `skiff`") && first.contains("handler: skiff"), "{first}");
    let edited = std::fs::read_to_string(&config).expect("config");
    assert!(edited.contains("# the operator's own comment"), "comments are kept");
    assert!(edited.contains("runtime_type = \"io.containerd.skiff.v1\""), "{edited}");
    assert!(edited.contains("io.containerd.runc.v2"), "other runtimes are kept");
    assert!(bin_dir.join("containerd-shim-skiff-v1").is_file());

    let (ok, second) = skiff(&args);
    assert!(ok, "{second}");
    assert!(second.contains("already there"), "{second}");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), edited, "a second install changes nothing");

    let mut uninstall = args.to_vec();
    uninstall.push("--uninstall");
    let (ok, third) = skiff(&uninstall);
    assert!(ok, "{third}");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), original, "uninstall restores the config");
    assert!(!bin_dir.join("containerd-shim-skiff-v1").exists());

    // A config that is not TOML is refused and left as it was.
    std::fs::write(&config, "this is [not toml").expect("write");
    let (ok, bad) = skiff(&args);
    assert!(!ok, "a broken config must fail: {bad}");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), "this is [not toml");
}
