//! Test images built offline: a busybox-static image (Linux, this machine's architecture) as an OCI layout
//! made with umoci, pushed to a loopback registry with skopeo. Needs umoci, skopeo and busybox-static.

use std::path::Path;
use std::process::Command;

/// The static busybox copied into the image.
pub const BUSYBOX: &str = "/usr/bin/busybox";
/// busybox applets linked in the image's `/bin`.
pub const BUSYBOX_APPLETS: &[&str] =
    &["sh", "echo", "sleep", "cat", "ls", "wget", "id", "hostname", "true", "false", "env", "printf", "test"];

fn run(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Builds a busybox image (busybox in `/bin` with its applets, `/etc/passwd` with root and `nobody`,
/// `PATH=/bin`, Cmd `sh`) as an OCI layout under `work`; returns its `oci:` reference for skopeo.
pub fn build_busybox_layout(work: &Path) -> Result<String, String> {
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let tag = format!("{}:busybox", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &tag]))?;
    run(Command::new("umoci").args(["unpack", "--rootless", "--image", &tag]).arg(&bundle))?;
    let rootfs = bundle.join("rootfs");
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(rootfs.join("bin")).map_err(io)?;
    std::fs::create_dir_all(rootfs.join("etc")).map_err(io)?;
    std::fs::create_dir_all(rootfs.join("tmp")).map_err(io)?;
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).map_err(|e| format!("{BUSYBOX} (busybox-static): {e}"))?;
    for applet in BUSYBOX_APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).map_err(io)?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
        .map_err(io)?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").map_err(io)?;
    run(Command::new("umoci").args(["repack", "--image", &tag]).arg(&bundle))?;
    run(Command::new("umoci").args(["config", "--image", &tag, "--config.cmd", "sh", "--config.env", "PATH=/bin"]))?;
    Ok(format!("oci:{tag}"))
}

/// Copies an image (`oci:...` reference) to `registry` (`host:port`, plain HTTP) as `name` (`repo:tag`).
pub fn push_to_registry(source: &str, registry: &str, name: &str) -> Result<String, String> {
    let destination = format!("{registry}/{name}");
    run(Command::new("skopeo").args(["copy", "--dest-tls-verify=false", source, &format!("docker://{destination}")]))?;
    Ok(destination)
}
