//! `skiff_shim::install` on a real containerd config (`containerd config default`): install twice (the
//! second changes nothing), containerd itself reads the `skiff` handler back, and uninstall restores the
//! original file.

use std::path::Path;
use std::process::Command;

use skiff_shim::install::{install, uninstall, InstallOptions, SHIM_BINARY};

fn config_dump(config: &Path) -> String {
    let out =
        Command::new("containerd").arg("--config").arg(config).args(["config", "dump"]).output().expect("containerd");
    assert!(out.status.success(), "containerd config dump: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_twice_then_uninstall_on_a_real_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("etc/containerd/config.toml");
    std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
    let default = Command::new("containerd").args(["config", "default"]).output().expect("containerd config default");
    assert!(default.status.success());
    let original = format!("# kept comment\n{}", String::from_utf8_lossy(&default.stdout));
    std::fs::write(&config, &original).expect("write config");
    let before = config_dump(&config);

    let opts = InstallOptions {
        containerd_config: config.clone(),
        bin_dir: dir.path().join("bin"),
        shim_binary: Some(env!("CARGO_BIN_EXE_containerd-shim-skiff-v1").into()),
    };
    let first = install(&opts).expect("install");
    assert!(first.binary_changed && first.config_changed, "{first:?}");
    assert_eq!(first.binary, dir.path().join("bin").join(SHIM_BINARY));
    let backup = first.backup.clone().expect("a backup");
    assert_eq!(std::fs::read_to_string(&backup).expect("backup"), original);
    let installed = std::fs::read_to_string(&config).expect("config");
    assert!(installed.starts_with("# kept comment\n"));
    assert!(installed.contains("runtime_type = \"io.containerd.runc.v2\""), "other runtimes stay");

    // containerd reads the handler back.
    let dump = config_dump(&config);
    let skiff = dump.split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.skiff]").nth(1);
    let skiff = skiff.unwrap_or_else(|| panic!("no skiff runtime in containerd's view: {dump}"));
    let section = skiff.split("\n\n").next().unwrap_or_default();
    assert!(section.contains("runtime_type = \"io.containerd.skiff.v1\""), "{section}");

    let second = install(&opts).expect("install again");
    assert!(!second.binary_changed && !second.config_changed && second.backup.is_none(), "{second:?}");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), installed);

    let removed = uninstall(&opts).expect("uninstall");
    assert!(removed.binary_changed && removed.config_changed, "{removed:?}");
    assert!(!opts.bin_dir.join(SHIM_BINARY).exists());
    assert_eq!(std::fs::read_to_string(&config).expect("config"), original);
    assert_eq!(config_dump(&config), before);
    let again = uninstall(&opts).expect("uninstall again");
    assert!(!again.binary_changed && !again.config_changed, "{again:?}");
}
