//! `securityContext.seccompProfile` of a Linux container (its own, else the pod's), as the kubelet and
//! containerd's CRI apply it: `RuntimeDefault` is an allowlist of the system calls ordinary programs
//! make, everything else failing with EPERM (namespaces, mounts, kernel modules, clocks, reboot...
//! allowed only where the container holds the capability that governs them, as containerd's default
//! profile does); `Unconfined` (and no profile at all, the kubelet's default) is none; `Localhost` is a
//! profile file in the Docker/OCI JSON format under `<data-dir>/seccomp/`. A privileged container runs
//! without a profile, as under containerd.

use std::collections::HashSet;
use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{PodSecurityContext, SeccompProfile, SecurityContext};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::spec::SpecError;

/// EPERM: what a refused system call returns.
const EPERM: u32 = 1;
/// ENOSYS: what `clone3` returns, so that libc falls back to `clone`, whose flags can be checked.
const ENOSYS: u32 = 38;
/// The `clone` flags that make namespaces (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID
/// | NEWNET): a container without CAP_SYS_ADMIN may not pass any of them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// System calls every container may make under `RuntimeDefault`.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kcmp",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_madvise",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// System calls only x86 has (allowed there).
const ALLOWED_X86: &[&str] = &["arch_prctl", "modify_ldt"];

/// `personality` domains a container may switch to (PER_LINUX, PER_LINUX32 and their UNAME26 forms, and
/// the query).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// System calls allowed only with a capability, by that capability.
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (Capability::SysModule, &["delete_module", "init_module", "finit_module"]),
    (Capability::SysPacct, &["acct"]),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (Capability::SysTime, &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    (Capability::SysTtyConfig, &["vhangup"]),
    (Capability::SysNice, &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// The profile that applies to a container: its own, else its pod's.
pub fn profile_of<'a>(
    container: Option<&'a SecurityContext>,
    pod: Option<&'a PodSecurityContext>,
) -> Option<&'a SeccompProfile> {
    container.and_then(|s| s.seccomp_profile.as_ref()).or_else(|| pod.and_then(|s| s.seccomp_profile.as_ref()))
}

/// The seccomp section of a container's spec: `None` for no filter. `caps` are the container's bounding
/// capabilities; `dir` is where `Localhost` profiles are (`<data-dir>/seccomp`).
pub fn resolve(
    profile: Option<&SeccompProfile>,
    privileged: bool,
    caps: &HashSet<Capability>,
    dir: &Path,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let Some(profile) = profile.filter(|_| !privileged) else { return Ok(None) };
    match profile.type_.as_str() {
        "Unconfined" => Ok(None),
        "RuntimeDefault" => runtime_default(caps).map(Some),
        "Localhost" => {
            let name = profile.localhost_profile.as_deref().unwrap_or_default();
            localhost(dir, name).map(Some)
        }
        other => Err(SpecError::Config(format!("seccomp profile type {other:?} is not supported"))),
    }
}

/// The architectures a filter names on this machine (the native one and what it also runs).
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn invalid(e: oci_spec::OciSpecError) -> SpecError {
    SpecError::Invalid(format!("the container's seccomp profile: {e}"))
}

fn allow(names: Vec<String>) -> Result<LinuxSyscall, SpecError> {
    LinuxSyscallBuilder::default().names(names).action(LinuxSeccompAction::ScmpActAllow).build().map_err(invalid)
}

/// The `RuntimeDefault` profile for a container holding `caps`.
pub fn runtime_default(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, SpecError> {
    let mut names: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        names.extend(ALLOWED_X86.iter().map(|s| s.to_string()));
    }
    let admin = caps.contains(&Capability::SysAdmin);
    for (cap, calls) in BY_CAPABILITY {
        if caps.contains(cap) {
            names.extend(calls.iter().map(|s| s.to_string()));
        }
    }
    names.sort();
    names.dedup();
    let mut syscalls = vec![allow(names)?];
    for persona in PERSONALITIES {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(*persona)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .map_err(invalid)?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["personality".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![arg])
                .build()
                .map_err(invalid)?,
        );
    }
    if !admin {
        // `clone` without namespace flags; `clone3` (whose flags a filter cannot see) says it does not
        // exist, so that libc uses `clone`.
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(0u64)
            .value_two(CLONE_NAMESPACE_FLAGS)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(invalid)?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![arg])
                .build()
                .map_err(invalid)?,
        );
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(ENOSYS)
                .build()
                .map_err(invalid)?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()
        .map_err(invalid)
}

/// The `Localhost` profile `name` (a path relative to `dir`), read as Docker/containerd read one: the
/// OCI fields, `name` beside `names`, and the architectures of `archMap` when `architectures` is absent.
pub fn localhost(dir: &Path, name: &str) -> Result<LinuxSeccomp, SpecError> {
    let relative = Path::new(name);
    let safe = !name.is_empty() && relative.components().all(|c| matches!(c, Component::Normal(_)));
    let path = dir.join(relative);
    let cannot = |why: String| {
        SpecError::Invalid(format!(
            "failed to generate seccomp spec opts: cannot load seccomp profile {:?}: {why}",
            path.display().to_string()
        ))
    };
    if !safe {
        return Err(cannot("localhostProfile must be a relative path below the node's seccomp directory".into()));
    }
    let bytes = std::fs::read(&path).map_err(|e| cannot(e.to_string()))?;
    let mut raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| cannot(e.to_string()))?;
    let docker = raw.as_object_mut().ok_or_else(|| cannot("not a JSON object".into()))?;
    if !docker.contains_key("architectures") {
        let native = architectures();
        let mut arches = Vec::new();
        for entry in docker.get("archMap").and_then(|m| m.as_array()).into_iter().flatten() {
            let main = entry.get("architecture").cloned().unwrap_or_default();
            let parsed: Option<Arch> = serde_json::from_value(main.clone()).ok();
            if parsed.is_some_and(|a| native.first() == Some(&a)) {
                arches.push(main);
                arches.extend(entry.get("subArchitectures").and_then(|s| s.as_array()).cloned().unwrap_or_default());
            }
        }
        if !arches.is_empty() {
            docker.insert("architectures".into(), serde_json::Value::Array(arches));
        }
    }
    docker.remove("archMap");
    for syscall in docker.get_mut("syscalls").and_then(|s| s.as_array_mut()).into_iter().flatten() {
        let Some(rule) = syscall.as_object_mut() else { continue };
        if let Some(one) = rule.remove("name") {
            let names = rule.entry("names").or_insert_with(|| serde_json::json!([]));
            if let Some(list) = names.as_array_mut() {
                list.push(one);
            }
        }
        for docker_only in ["comment", "includes", "excludes"] {
            rule.remove(docker_only);
        }
    }
    serde_json::from_value(raw).map_err(|e| cannot(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(profile: &LinuxSeccomp) -> HashSet<String> {
        profile
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn runtime_default_denies_namespaces_and_mounts_unless_sys_admin() {
        let plain = runtime_default(&HashSet::from([Capability::Chown, Capability::SysChroot])).expect("profile");
        assert_eq!(plain.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(plain.default_errno_ret(), Some(EPERM));
        let allowed = names(&plain);
        for call in ["read", "execve", "openat", "chroot", "exit_group"] {
            assert!(allowed.contains(call), "{call}");
        }
        for call in ["unshare", "mount", "setns", "reboot", "init_module", "clone"] {
            assert!(!allowed.contains(call), "{call}");
        }
        let admin = runtime_default(&HashSet::from([Capability::SysAdmin])).expect("profile");
        let allowed = names(&admin);
        assert!(allowed.contains("unshare") && allowed.contains("mount") && allowed.contains("clone"));
        assert!(!allowed.contains("chroot"));
        // Serializes with the OCI names runc reads.
        let json = serde_json::to_value(&plain).expect("json");
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn the_profile_type_decides() {
        let dir = tempfile::tempdir().expect("dir");
        let caps = HashSet::new();
        let of = |t: &str, local: Option<&str>| SeccompProfile {
            type_: t.to_string(),
            localhost_profile: local.map(String::from),
        };
        assert!(resolve(None, false, &caps, dir.path()).expect("none").is_none());
        assert!(resolve(Some(&of("Unconfined", None)), false, &caps, dir.path()).expect("u").is_none());
        assert!(resolve(Some(&of("RuntimeDefault", None)), false, &caps, dir.path()).expect("rd").is_some());
        assert!(resolve(Some(&of("RuntimeDefault", None)), true, &caps, dir.path()).expect("priv").is_none());
        let missing = resolve(Some(&of("Localhost", Some("nope.json"))), false, &caps, dir.path());
        let message = missing.expect_err("missing").to_string();
        assert!(message.contains("cannot load seccomp profile") && message.contains("nope.json"), "{message}");
        let escape = resolve(Some(&of("Localhost", Some("../etc/x.json"))), false, &caps, dir.path());
        assert!(escape.is_err());
        assert!(resolve(Some(&of("Bogus", None)), false, &caps, dir.path()).is_err());
    }

    #[test]
    fn localhost_profiles_read_the_docker_format() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("audit.json"),
            br#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[{"architecture":"SCMP_ARCH_X86_64",
                "subArchitectures":["SCMP_ARCH_X86"]}],
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"comment":"x"},
                            {"name":"unshare","action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .expect("write");
        let p = localhost(dir.path(), "audit.json").expect("profile");
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        let calls = p.syscalls().clone().unwrap_or_default();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].names(), &vec!["unshare".to_string()]);
        std::fs::write(dir.path().join("bad.json"), b"[1]").expect("write");
        assert!(localhost(dir.path(), "bad.json").is_err());
    }
}
