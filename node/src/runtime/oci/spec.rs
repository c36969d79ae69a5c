//! The OCI runtime spec of one Linux container, built with `oci-spec` from the pod spec and the image
//! config the way the kubelet and containerd's CRI do: argv from entrypoint/cmd and command/args, env,
//! working dir, user and groups (with the `runAsNonRoot` check), capabilities, privileged, no_new_privs,
//! masked and read-only /proc paths, the seccomp profile (`seccomp.rs`), a read-only root, /etc/hosts, /etc/resolv.conf, /etc/hostname, the
//! pod's volumes as bind mounts, memory and CPU limits, and the pod's network namespace.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use k8s_openapi::api::core::v1::SecurityContext;
use oci_spec::runtime::{
    get_default_maskedpaths, get_default_mounts, get_default_namespaces, get_default_readonly_paths, Capability,
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::image::WasmImage;
use crate::runtime::Launch;

/// Fewest and most CPU shares a container gets (the kernel's bounds, as the kubelet's).
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

/// The CPU shares of a container requesting `millis` millicores, as the kubelet computes them: 1024
/// per core, at least 2 (no request: 2, a BestEffort container's weight).
fn cpu_shares(millis: u32) -> u64 {
    (u64::from(millis) * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// CPU period of the spec's quota (the kernel's default, 100 ms).
const CPU_PERIOD: u64 = 100_000;
/// The PATH a container gets when its image names none (containerd's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// containerd's default capability set (what a Kubernetes container has without add/drop).
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];
/// Every capability a privileged container gets.
const ALL_CAPS: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Capability names by number (`linux/capability.h`): bit N of a capability mask is `CAP_BITS[N]`.
const CAP_BITS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability bounding set of this process (`CapBnd` of /proc/self/status), if readable.
fn own_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Keeps of `caps` those in the `bounding` mask: as containerd gives a privileged container all the
/// capabilities it holds itself, since runc cannot grant one the kubelet lacks (on a host whose
/// bounding set misses e.g. CAP_SYS_RESOURCE, asking for it fails the container).
fn within_bounding_set(caps: &mut HashSet<Capability>, bounding: u64) {
    let lacking: HashSet<Capability> = CAP_BITS
        .iter()
        .enumerate()
        .filter(|(bit, _)| u32::try_from(*bit).ok().and_then(|b| bounding.checked_shr(b)).is_some_and(|m| m & 1 == 0))
        .filter_map(|(_, name)| Capability::from_str(name).ok())
        .collect();
    caps.retain(|c| !lacking.contains(c));
}

/// Why the spec could not be built: a configuration Kubernetes refuses (`CreateContainerConfigError`), or
/// one that cannot run (`CreateContainerError`).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Invalid(String),
}

/// The files the kubelet writes for a container and binds over the image's.
#[derive(Debug, Clone)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// The container's process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// The container's argv the Kubernetes way: `command` replaces the image's Entrypoint (and drops its Cmd),
/// `args` replaces its Cmd.
pub fn argv(image: &WasmImage, command: Option<&[String]>, args: Option<&[String]>) -> Vec<String> {
    let mut argv: Vec<String> = match command {
        Some(c) => c.to_vec(),
        None => image.entrypoint.clone(),
    };
    match (command, args) {
        (_, Some(a)) => argv.extend(a.iter().cloned()),
        (None, None) => argv.extend(image.cmd.iter().cloned()),
        (Some(_), None) => {}
    }
    argv
}

/// The image's env, overridden by the container's, with a default PATH and the pod's HOSTNAME.
pub fn env(image: &WasmImage, launch: &Launch) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    if !image.env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.push(("HOSTNAME".into(), launch.linux.hostname.clone()));
    for (k, v) in image.env.iter().chain(launch.env.iter()) {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The uid, gid and supplementary groups: `runAsUser`/`runAsGroup` (container over pod), else the image's
/// User (numeric or looked up in the image's `/etc/passwd` and `/etc/group`); then `runAsNonRoot`.
pub fn identity(image: &WasmImage, launch: &Launch, files: &ImageFiles) -> Result<Identity, SpecError> {
    let (sc, psc) = (launch.linux.security.as_ref(), launch.linux.pod_security.as_ref());
    let run_as_user = sc.and_then(|s| s.run_as_user).or_else(|| psc.and_then(|p| p.run_as_user));
    let run_as_group = sc.and_then(|s| s.run_as_group).or_else(|| psc.and_then(|p| p.run_as_group));
    let non_root = sc.and_then(|s| s.run_as_non_root).or_else(|| psc.and_then(|p| p.run_as_non_root));
    let image_user = image.user.clone().unwrap_or_default();
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (image_user.clone(), None),
    };
    let pod_ref = &launch.linux.pod;
    let name = &launch.name;
    let id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| SpecError::Config(format!("{what} {v} is not a valid Linux id")))
    };
    let (uid, passwd_gid) = match run_as_user {
        Some(u) => (id(u, "runAsUser")?, lookup_passwd(files, &u.to_string()).map(|(_, g)| g)),
        None if user_part.is_empty() => (0, Some(0)),
        None => match user_part.parse::<u32>() {
            Ok(u) => (u, lookup_passwd(files, &user_part).map(|(_, g)| g)),
            Err(_) => {
                if non_root == Some(true) {
                    return Err(SpecError::Config(format!(
                        "container has runAsNonRoot and image has non-numeric user ({user_part}), cannot verify \
                         user is non-root (pod: \"{pod_ref}\", container: {name})"
                    )));
                }
                lookup_passwd(files, &user_part).map(|(u, g)| (u, Some(g))).ok_or_else(|| {
                    SpecError::Invalid(format!("unable to find user {user_part}: no matching entries in passwd file"))
                })?
            }
        },
    };
    if non_root == Some(true) && uid == 0 {
        return Err(SpecError::Config(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod_ref}\", container: {name})"
        )));
    }
    let gid = match (run_as_group, group_part) {
        (Some(g), _) => id(g, "runAsGroup")?,
        (None, Some(g)) => match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => lookup_group(files, &g).ok_or_else(|| {
                SpecError::Invalid(format!("unable to find group {g}: no matching entries in group file"))
            })?,
        },
        (None, None) => passwd_gid.unwrap_or(0),
    };
    let mut additional_gids = Vec::new();
    if let Some(p) = psc {
        for g in p.supplemental_groups.iter().flatten().chain(p.fs_group.iter()) {
            let g = id(*g, "supplementalGroups/fsGroup")?;
            if !additional_gids.contains(&g) {
                additional_gids.push(g);
            }
        }
    }
    Ok(Identity { uid, gid, additional_gids })
}

/// The files of the image the spec reads: `/etc/passwd` and `/etc/group` (`None`: the image has none).
#[derive(Debug, Default)]
pub struct ImageFiles {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

/// (uid, gid) of `user` (a name or a uid) in the image's `/etc/passwd`.
fn lookup_passwd(files: &ImageFiles, user: &str) -> Option<(u32, u32)> {
    let text = files.passwd.as_deref()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (f.first()?, f.get(2)?, f.get(3)?);
        (*name == user || *uid == user).then(|| Some((uid.parse().ok()?, gid.parse().ok()?))).flatten()
    })
}

/// The gid of group `name` in the image's `/etc/group`.
fn lookup_group(files: &ImageFiles, name: &str) -> Option<u32> {
    let text = files.group.as_deref()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok()).flatten()
    })
}

/// The capability set after `privileged` and `capabilities.add`/`drop` (names with or without `CAP_`).
pub fn capabilities(sc: Option<&SecurityContext>) -> HashSet<Capability> {
    let parse = |name: &str| {
        let upper = name.trim().to_ascii_uppercase();
        Capability::from_str(upper.strip_prefix("CAP_").unwrap_or(&upper)).ok()
    };
    if sc.and_then(|s| s.privileged) == Some(true) {
        return ALL_CAPS.iter().copied().filter_map(parse).collect();
    }
    let mut caps: HashSet<Capability> = DEFAULT_CAPS.iter().copied().filter_map(parse).collect();
    let wanted = sc.and_then(|s| s.capabilities.as_ref());
    for add in wanted.and_then(|c| c.add.as_ref()).into_iter().flatten() {
        if add.eq_ignore_ascii_case("ALL") {
            caps.extend(ALL_CAPS.iter().copied().filter_map(parse));
        } else if let Some(c) = parse(add.as_str()) {
            caps.insert(c);
        }
    }
    for drop in wanted.and_then(|c| c.drop.as_ref()).into_iter().flatten() {
        if drop.eq_ignore_ascii_case("ALL") {
            caps.clear();
        } else if let Some(c) = parse(drop.as_str()) {
            caps.remove(&c);
        }
    }
    caps
}

fn bind(source: &Path, destination: &str, read_only: bool) -> Result<Mount, SpecError> {
    let mode = if read_only { "ro" } else { "rw" };
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(vec!["rbind".to_string(), "rprivate".to_string(), mode.to_string()])
        .build()
        .map_err(invalid)
}

fn invalid(e: oci_spec::OciSpecError) -> SpecError {
    SpecError::Invalid(format!("the container's runtime spec: {e}"))
}

/// Everything [`build`] reads besides the image and the launch.
pub struct SpecInput<'a> {
    /// The root directory (relative: in the bundle, where the shim mounts the snapshot).
    pub rootfs: &'a Path,
    /// The image's files the user and groups are looked up in.
    pub image_files: &'a ImageFiles,
    pub netns: &'a Path,
    pub etc: &'a EtcFiles,
    pub cgroups_path: String,
    /// A process namespace to join (`/proc/<pid>/ns/pid` of the target of `kubectl debug --target`).
    pub pid_namespace: Option<PathBuf>,
    /// The pod's IPC and UTS namespaces, shared by its Linux containers; the UTS one carries the
    /// pod's hostname already (a container joining it sets none). `None`: a private one each.
    pub ipc_namespace: Option<&'a Path>,
    pub uts_namespace: Option<&'a Path>,
}

/// The runtime spec of `launch` on `input.rootfs`, in the pod's network namespace.
pub fn build(image: &WasmImage, launch: &Launch, input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let args = argv(image, launch.command.as_deref(), launch.args.as_deref());
    if args.is_empty() {
        return Err(SpecError::Invalid("no command specified".into()));
    }
    let sc = launch.linux.security.as_ref();
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    let who = identity(image, launch, input.image_files)?;
    let mut caps = capabilities(sc);
    if let Some(bounding) = own_bounding_set() {
        within_bounding_set(&mut caps, bounding);
    }
    let seccomp = super::seccomp::resolve(
        super::seccomp::profile_of(sc, launch.linux.pod_security.as_ref()),
        privileged,
        &caps,
        &launch.linux.seccomp_dir,
    )?;
    let cwd = launch.working_dir.clone().or_else(|| image.working_dir.clone()).filter(|d| d.starts_with('/'));
    let process = ProcessBuilder::default()
        .terminal(launch.linux.tty)
        .args(args)
        .env(env(image, launch))
        .cwd(cwd.unwrap_or_else(|| "/".into()))
        .user(
            UserBuilder::default()
                .uid(who.uid)
                .gid(who.gid)
                .additional_gids(who.additional_gids)
                .build()
                .map_err(invalid)?,
        )
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()
                .map_err(invalid)?,
        )
        .no_new_privileges(sc.and_then(|s| s.allow_privilege_escalation) == Some(false) && !privileged)
        .build()
        .map_err(invalid)?;
    let mut mounts = get_default_mounts();
    if privileged {
        // A privileged container's /sys is writable.
        for m in &mut mounts {
            if m.destination() == Path::new("/sys") {
                m.set_options(Some(vec!["nosuid".into(), "noexec".into(), "nodev".into(), "rw".into()]));
            }
        }
    }
    mounts.push(bind(&input.etc.hosts, "/etc/hosts", false)?);
    mounts.push(bind(&input.etc.resolv_conf, "/etc/resolv.conf", false)?);
    mounts.push(bind(&input.etc.hostname, "/etc/hostname", false)?);
    for m in &launch.mounts {
        mounts.push(bind(&m.host_path, &m.container_path, m.read_only)?);
    }
    let namespaces: Vec<LinuxNamespace> = get_default_namespaces()
        .into_iter()
        .map(|ns| {
            if ns.typ() == LinuxNamespaceType::Network {
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path(input.netns)
                    .build()
                    .map_err(invalid)
            } else if let (LinuxNamespaceType::Pid, Some(path)) = (ns.typ(), &input.pid_namespace) {
                LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid).path(path).build().map_err(invalid)
            } else if let (LinuxNamespaceType::Ipc, Some(path)) = (ns.typ(), input.ipc_namespace) {
                LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Ipc).path(path).build().map_err(invalid)
            } else if let (LinuxNamespaceType::Uts, Some(path)) = (ns.typ(), input.uts_namespace) {
                LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Uts).path(path).build().map_err(invalid)
            } else {
                Ok(ns)
            }
        })
        .collect::<Result<_, _>>()?;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
        .allow(privileged)
        .access("rwm")
        .build()
        .map_err(invalid)?]);
    if let Some(limit) = launch.memory_limit {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build().map_err(invalid)?);
    }
    let mut cpu = LinuxCpuBuilder::default();
    cpu = cpu.shares(cpu_shares(launch.linux.cpu_request_millis.unwrap_or(0)));
    if let Some(millis) = launch.cpu_millis.filter(|m| *m > 0) {
        let quota = i64::try_from(u64::from(millis) * CPU_PERIOD / 1000).unwrap_or(i64::MAX);
        cpu = cpu.quota(quota).period(CPU_PERIOD);
    }
    resources = resources.cpu(cpu.build().map_err(invalid)?);
    let (masked, readonly) =
        if privileged { (Vec::new(), Vec::new()) } else { (get_default_maskedpaths(), get_default_readonly_paths()) };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(invalid)?)
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .masked_paths(masked)
        .readonly_paths(readonly);
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }
    let linux = linux.build().map_err(invalid)?;
    let read_only_root = sc.and_then(|s| s.read_only_root_filesystem) == Some(true);
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(RootBuilder::default().path(input.rootfs).readonly(read_only_root).build().map_err(invalid)?)
        .mounts(mounts)
        .linux(linux);
    // Empty when the container joins the pod's UTS namespace (runc sets no hostname then; newer runc
    // refuses one for a namespace it does not own). Never left to the builder's default.
    let hostname = if input.uts_namespace.is_some() { String::new() } else { launch.linux.hostname.clone() };
    spec = spec.hostname(hostname);
    spec.build().map_err(invalid)
}

/// `/etc/hosts` of a pod: localhost, then the pod's IP with its hostname (as the kubelet writes it).
pub fn hosts_file(ip: std::net::IpAddr, hostname: &str) -> String {
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
         {ip}\t{hostname}\n"
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext};

    use super::*;
    use crate::image::ImageKind;
    use crate::logs::{LogWriter, Rotation};
    use crate::runtime::{LinuxExtras, Mount as VolumeMount};

    fn image() -> WasmImage {
        WasmImage {
            reference: "docker.io/library/busybox:latest".into(),
            image_id: "docker.io/library/busybox@sha256:1".into(),
            wasm_path: PathBuf::new(),
            wasm_digest: String::new(),
            rootfs: None,
            entrypoint: vec!["/bin/sh".into()],
            env: vec![("PATH".into(), "/bin".into()), ("A".into(), "image".into())],
            working_dir: Some("/home".into()),
            kind: ImageKind::Linux,
            cmd: vec!["-c".into(), "echo hi".into()],
            user: None,
            stop_signal: None,
            linux: None,
        }
    }

    fn launch(dir: &Path) -> Launch {
        Launch {
            name: "c".into(),
            image: "busybox".into(),
            command: None,
            args: None,
            env: vec![("A".into(), "pod".into())],
            working_dir: None,
            mounts: vec![VolumeMount { host_path: dir.join("vol"), container_path: "/data".into(), read_only: true }],
            memory_limit: Some(32 << 20),
            cpu_millis: Some(250),
            http_port: None,
            log: Arc::new(LogWriter::create(dir.join("log/0.log"), Rotation::default()).expect("log")),
            scratch_dir: dir.join("scratch"),
            linux: LinuxExtras { hostname: "p".into(), pod: "ns/p".into(), ..LinuxExtras::default() },
        }
    }

    #[test]
    fn command_and_args_merge_the_kubernetes_way() {
        let img = image();
        let (c, a) = (vec!["/bin/echo".to_string()], vec!["x".to_string()]);
        assert_eq!(argv(&img, None, None), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(argv(&img, Some(&c), None), ["/bin/echo"]);
        assert_eq!(argv(&img, None, Some(&a)), ["/bin/sh", "x"]);
        assert_eq!(argv(&img, Some(&c), Some(&a)), ["/bin/echo", "x"]);
    }

    #[test]
    fn the_spec_carries_the_pod() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = image();
        let l = launch(dir.path());
        let etc =
            EtcFiles { hosts: dir.path().join("h"), resolv_conf: dir.path().join("r"), hostname: dir.path().join("n") };
        let input = SpecInput {
            rootfs: dir.path(),
            image_files: &ImageFiles::default(),
            netns: Path::new("/var/run/netns/x"),
            etc: &etc,
            cgroups_path: "/skiff/c".into(),
            pid_namespace: None,
            ipc_namespace: None,
            uts_namespace: None,
        };
        let spec = build(&img, &l, &input).expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        assert_eq!(json["process"]["args"], serde_json::json!(["/bin/sh", "-c", "echo hi"]));
        let env = json["process"]["env"].as_array().expect("env");
        assert!(
            env.contains(&"A=pod".into()) && env.contains(&"PATH=/bin".into()) && env.contains(&"HOSTNAME=p".into())
        );
        assert!(!env.contains(&"A=image".into()));
        assert_eq!(json["process"]["cwd"], "/home");
        assert_eq!(json["process"]["user"]["uid"], 0);
        assert_eq!(json["hostname"], "p");
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 25_000);
        // No CPU request: the weight of a BestEffort container.
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 2);
        let requested = Launch { linux: LinuxExtras { cpu_request_millis: Some(250), ..l.linux.clone() }, ..l.clone() };
        let json = serde_json::to_value(build(&img, &requested, &input).expect("spec")).expect("json");
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 256);
        // The pod's shared IPC and UTS namespaces are joined by path; the UTS one has the hostname.
        let shared = SpecInput {
            ipc_namespace: Some(Path::new("/pods/u/ipc")),
            uts_namespace: Some(Path::new("/pods/u/uts")),
            ..input
        };
        let json = serde_json::to_value(build(&img, &l, &shared).expect("spec")).expect("json");
        let ns = json["linux"]["namespaces"].as_array().expect("ns");
        let path_of = |typ: &str| ns.iter().find(|n| n["type"] == typ).map(|n| n["path"].clone());
        assert_eq!(path_of("ipc"), Some("/pods/u/ipc".into()));
        assert_eq!(path_of("uts"), Some("/pods/u/uts".into()));
        assert_eq!(json["hostname"], "", "{json}");
        let netns =
            json["linux"]["namespaces"].as_array().expect("ns").iter().find(|n| n["type"] == "network").cloned();
        assert_eq!(netns.expect("network")["path"], "/var/run/netns/x");
        let mounts = json["mounts"].as_array().expect("mounts");
        let data = mounts.iter().find(|m| m["destination"] == "/data").expect("volume");
        assert!(data["options"].as_array().expect("opts").contains(&"ro".into()));
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/hosts"));
        assert!(json["process"]["capabilities"]["bounding"].as_array().expect("caps").contains(&"CAP_CHOWN".into()));
        assert!(!json["linux"]["maskedPaths"].as_array().expect("masked").is_empty());
    }

    #[test]
    fn users_and_capabilities_follow_the_security_context() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/:/bin/sh\n")
            .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        let files = ImageFiles {
            passwd: std::fs::read_to_string(dir.path().join("etc/passwd")).ok(),
            group: std::fs::read_to_string(dir.path().join("etc/group")).ok(),
        };
        let mut img = image();
        let mut l = launch(dir.path());
        l.linux.security = Some(SecurityContext { run_as_non_root: Some(true), ..SecurityContext::default() });
        let err = identity(&img, &l, &files).expect_err("root refused");
        assert_eq!(
            err.to_string(),
            "container has runAsNonRoot and image will run as root (pod: \"ns/p\", container: c)"
        );
        img.user = Some("www".into());
        let err = identity(&img, &l, &files).expect_err("non-numeric refused");
        assert!(err.to_string().contains("image has non-numeric user (www), cannot verify user is non-root"), "{err}");
        l.linux.security = None;
        assert_eq!(identity(&img, &l, &files).expect("www"), Identity { uid: 33, gid: 34, additional_gids: vec![] });
        img.user = Some("1000:staff".into());
        l.linux.pod_security = Some(PodSecurityContext { fs_group: Some(7), ..PodSecurityContext::default() });
        assert_eq!(
            identity(&img, &l, &files).expect("1000"),
            Identity { uid: 1000, gid: 50, additional_gids: vec![7] }
        );
        l.linux.security =
            Some(SecurityContext { run_as_user: Some(5), run_as_group: Some(6), ..SecurityContext::default() });
        assert_eq!(identity(&img, &l, &files).expect("5").uid, 5);

        let sc = SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                drop: Some(vec!["CAP_CHOWN".into()]),
            }),
            ..SecurityContext::default()
        };
        let caps = capabilities(Some(&sc));
        assert!(caps.contains(&Capability::NetAdmin) && !caps.contains(&Capability::Chown));
        let drop_all = SecurityContext {
            capabilities: Some(Capabilities { add: None, drop: Some(vec!["ALL".into()]) }),
            ..SecurityContext::default()
        };
        assert!(capabilities(Some(&drop_all)).is_empty());
        let privileged = SecurityContext { privileged: Some(true), ..SecurityContext::default() };
        assert!(capabilities(Some(&privileged)).contains(&Capability::SysAdmin));
        // Only what the kubelet holds: bit 24 (CAP_SYS_RESOURCE) missing from the bounding set.
        let mut all = capabilities(Some(&privileged));
        within_bounding_set(&mut all, 0x1ff_feff_ffff);
        assert!(!all.contains(&Capability::SysResource) && all.contains(&Capability::SysAdmin));
        assert!(all.contains(&Capability::CheckpointRestore) && all.contains(&Capability::Chown));
    }

    #[test]
    fn cpu_shares_are_the_kubelets() {
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_shares(100), 102);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(u32::MAX), 262_144);
    }
}
