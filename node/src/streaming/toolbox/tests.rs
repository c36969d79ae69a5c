//! The toolbox against real directories: each command, paths and links that try to leave a volume,
//! read-only volumes, a tar round trip, bad and huge archives.

use tokio_util::sync::CancellationToken;

use super::{run, Dir, Io, View, World};

struct Fixture {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    config: std::path::PathBuf,
    outside: std::path::PathBuf,
    world: World,
}

/// `/data` (writable), `/config` (read-only) and a directory outside both.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, config, outside) = (tmp.path().join("data"), tmp.path().join("config"), tmp.path().join("outside"));
    for d in [&data, &config, &outside] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(data.join("f"), "hello\n").expect("write");
    std::fs::write(config.join("key"), "value").expect("write");
    std::fs::write(outside.join("secret"), "do not read").expect("write");
    std::os::unix::fs::symlink("../outside/secret", data.join("escape")).expect("symlink");
    std::os::unix::fs::symlink("f", data.join("inside")).expect("symlink");
    let dirs = vec![
        Dir { container_path: "/data".into(), host_path: data.clone(), read_only: false },
        Dir { container_path: "/config".into(), host_path: config.clone(), read_only: true },
    ];
    let world = World {
        view: View::new(dirs, Some("/data")),
        env: vec![("A".into(), "1".into()), ("PATH".into(), "/bin".into())],
    };
    Fixture { _tmp: tmp, data, config, outside, world }
}

/// Runs `argv` with `stdin`: (exit code, stdout, stderr).
fn exec(world: &World, argv: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let cancel = CancellationToken::new();
    let (mut input, mut out, mut err) = (stdin, Vec::new(), Vec::new());
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_string()).collect();
    let mut io = Io { stdin: &mut input, stdout: &mut out, stderr: &mut err, cancel: &cancel, tty: false };
    let code = run(world, &argv, &mut io);
    (code, out, String::from_utf8_lossy(&err).into_owned())
}

fn text(world: &World, argv: &[&str]) -> (i32, String, String) {
    let (code, out, err) = exec(world, argv, b"");
    (code, String::from_utf8_lossy(&out).into_owned(), err)
}

#[test]
fn simple_commands_work_on_the_containers_view() {
    let f = fixture();
    let w = &f.world;
    assert_eq!(text(w, &["ls", "/data"]), (0, "escape\nf\ninside\n".into(), String::new()));
    assert_eq!(text(w, &["/bin/ls"]).1, "escape\nf\ninside\n", "the working directory is /data");
    assert_eq!(text(w, &["ls", "/"]).1, "config\ndata\n", "mount points show above the volumes");
    let long = text(w, &["ls", "-l", "/config"]).1;
    assert!(long.starts_with("-rw") && long.trim_end().ends_with(" key"), "{long}");
    assert!(text(w, &["ls", "-a", "/config"]).1.starts_with(".\n..\n"));
    assert_eq!(text(w, &["cat", "/data/f", "/config/key"]).1, "hello\nvalue");
    assert_eq!(text(w, &["cat", "inside"]).1, "hello\n", "links inside the volume are followed");
    assert_eq!(text(w, &["env"]).1, "A=1\nPATH=/bin\n");
    assert_eq!(text(w, &["echo", "a", "b"]).1, "a b\n");
    assert_eq!(text(w, &["echo", "-n", "a"]).1, "a");
    assert_eq!(text(w, &["pwd"]).1, "/data\n");
    assert_eq!(text(w, &["true"]).0, 0);
    assert_eq!(text(w, &["false"]).0, 1);
    assert_eq!(text(w, &["sleep", "0.01"]).0, 0);
    assert_eq!(text(w, &["sleep", "forever"]).0, 1);
    for (args, code) in [
        (&["test", "-d", "/data"][..], 0),
        (&["test", "-d", "/"], 0),
        (&["test", "-f", "/data/f"], 0),
        (&["test", "-d", "/data/f"], 1),
        (&["test", "-e", "/data/nope"], 1),
        (&["test", "-e", "/data/escape"], 1),
        (&["test", "-z", ""], 0),
        (&["test", "-q", "x", "y"], 2),
    ] {
        assert_eq!(text(w, args).0, code, "{args:?}");
    }
    let (code, _, err) = text(w, &["cat", "/data/missing"]);
    assert_eq!((code, err.as_str()), (1, "cat: /data/missing: No such file or directory\n"));
    let (code, _, err) = text(w, &["ls", "-z"]);
    assert!(code == 2 && err.contains("invalid option"), "{err}");
    assert_eq!(exec(w, &["cat"], b"from stdin").1, b"from stdin");
    assert_eq!(exec(w, &["cat", "-"], &[0u8; 300_000]).1.len(), 300_000);
}

#[test]
fn paths_and_links_never_leave_a_volume() {
    let f = fixture();
    let w = &f.world;
    for path in ["/data/escape", "/data/../outside/secret", "../../outside/secret", "/outside/secret"] {
        let (code, out, err) = text(w, &["cat", path]);
        assert!(code == 1 && !out.contains("do not read"), "{path}: {out} {err}");
    }
    assert!(text(w, &["cat", "/data/escape"]).2.contains("leads out of its volume"));
    // Removing the link removes the link, not what it points to.
    assert_eq!(text(w, &["rm", "/data/escape"]).0, 0);
    assert!(f.outside.join("secret").exists() && !f.data.join("escape").exists());
    // A directory link out of the volume is not followed by mkdir -p, rm -r or tar.
    std::os::unix::fs::symlink(&f.outside, f.data.join("out")).expect("symlink");
    let (code, _, err) = text(w, &["mkdir", "-p", "/data/out/new"]);
    assert!(code == 1 && !f.outside.join("new").exists(), "{err}");
    assert_eq!(text(w, &["rm", "-r", "/data/out"]).0, 0);
    assert!(f.outside.join("secret").exists());
}

#[test]
fn writes_follow_volume_rules() {
    let f = fixture();
    let w = &f.world;
    assert_eq!(text(w, &["mkdir", "/data/a"]).0, 0);
    assert_eq!(text(w, &["mkdir", "/data/a"]).2, "mkdir: cannot create directory '/data/a': File exists\n");
    assert_eq!(text(w, &["mkdir", "-p", "/data/a/b/c"]).0, 0);
    assert!(f.data.join("a/b/c").is_dir());
    let (code, _, err) = text(w, &["mkdir", "/config/x"]);
    assert_eq!((code, err.as_str()), (1, "mkdir: cannot create directory '/config/x': Read-only file system\n"));
    assert_eq!(text(w, &["rm", "/config/key"]).2, "rm: cannot remove '/config/key': Read-only file system\n");
    assert!(f.config.join("key").exists());
    assert_eq!(text(w, &["rm", "/data/a"]).2, "rm: cannot remove '/data/a': Is a directory\n");
    assert_eq!(text(w, &["rm", "-r", "/data/a"]).0, 0);
    assert!(!f.data.join("a").exists());
    assert_eq!(text(w, &["rm", "-f", "/data/nope"]).0, 0);
    assert_eq!(text(w, &["rm", "/data/nope"]).0, 1);
    assert!(text(w, &["rm", "-r", "/data"]).2.contains("mount point"), "a volume itself is not removed");
    assert_eq!(
        text(w, &["mkdir", "/elsewhere"]).2,
        "mkdir: cannot create directory '/elsewhere': No such file or directory\n"
    );
}

#[test]
fn sh_runs_command_lists() {
    let f = fixture();
    let w = &f.world;
    assert_eq!(text(w, &["sh", "-c", "echo a; echo b"]).1, "a\nb\n");
    assert_eq!(text(w, &["sh", "-c", "false && echo no || echo yes"]).1, "yes\n");
    assert_eq!(text(w, &["sh", "-c", "true && echo 'x  y'"]).1, "x  y\n");
    assert_eq!(text(w, &["sh", "-c", "exit 3; echo never"]), (3, String::new(), String::new()));
    assert_eq!(text(w, &["sh", "-c", "false"]).0, 1);
    let (code, _, err) = text(w, &["sh", "-c", "nosuch arg"]);
    assert_eq!((code, err.as_str()), (127, "sh: nosuch: not found\n"));
    let (code, _, err) = text(w, &["sh", "-c", "ls | wc -l"]);
    assert!(code == 2 && err.contains("not a full shell"), "{err}");
    assert_eq!(text(w, &["sh", "-c", "&& ls"]).0, 2);
    let (code, out, _) = exec(w, &["sh"], b"echo one\ncat /data/f\nexit 4\necho never\n");
    assert_eq!((code, String::from_utf8_lossy(&out).as_ref()), (4, "one\nhello\n"));
}

fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).expect("append");
    }
    b.into_inner().expect("finish")
}

#[test]
fn tar_round_trips_as_kubectl_cp_runs_it() {
    let f = fixture();
    let w = &f.world;
    std::fs::create_dir_all(f.data.join("dir/sub")).expect("mkdir");
    std::fs::write(f.data.join("dir/sub/deep"), vec![9u8; 100_000]).expect("write");
    std::fs::remove_file(f.data.join("escape")).expect("rm");
    // kubectl cp pod:/data/dir ./x runs `tar cf - /data/dir`.
    let (code, tarball, err) = exec(w, &["tar", "cf", "-", "/data/dir"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Removing leading"));
    let mut names: Vec<String> = tar::Archive::new(tarball.as_slice())
        .entries()
        .expect("entries")
        .map(|e| e.expect("entry").path().expect("path").to_string_lossy().trim_end_matches('/').to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["data/dir", "data/dir/sub", "data/dir/sub/deep"]);
    // kubectl cp ./x pod:/data/copy runs `tar -xmf - -C /data` with entries named `copy/...`.
    let (code, _, err) =
        exec(w, &["tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", "/data"], &tarball);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(f.data.join("data/dir/sub/deep")).expect("read back"), vec![9u8; 100_000]);
    let (code, _, err) = exec(w, &["tar", "-xmf", "-", "-C", "/data"], &archive(&[("copy/file", b"copied")]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(f.data.join("copy/file")).expect("read"), "copied");
    // Into a read-only volume: refused.
    let (code, _, err) = exec(w, &["tar", "-xmf", "-", "-C", "/config"], &archive(&[("x", b"no")]));
    assert!(code == 2 && err.contains("Read-only file system"), "{err}");
}

#[test]
fn tar_refuses_escapes_garbage_and_bad_arguments() {
    let f = fixture();
    let w = &f.world;
    // `..` in a name (hand-built: the tar crate refuses to write one).
    let mut evil = archive(&[("aaaaaaaaaaaaaaaaaaa", b"evil")]);
    let dotted = b"../../outside/pwned";
    evil.get_mut(..dotted.len()).expect("header").copy_from_slice(dotted);
    let mut header = tar::Header::from_byte_slice(evil.get(..512).expect("header")).clone();
    header.set_cksum();
    evil.get_mut(..512).expect("header").copy_from_slice(header.as_bytes());
    let (code, _, err) = exec(w, &["tar", "-xmf", "-", "-C", "/data"], &evil);
    assert!(code == 2 && err.contains("Member name contains '..'"), "{err}");
    assert!(!f.outside.join("pwned").exists());
    // A link out of the volume, then a file through it.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "link", "../outside").expect("link");
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "link/pwned", &b"bad"[..]).expect("data");
    let (code, _, err) = exec(w, &["tar", "-xmf", "-", "-C", "/data"], &b.into_inner().expect("tar"));
    assert_eq!(code, 2, "{err}");
    assert!(!f.outside.join("pwned").exists() && !f.data.join("link").is_symlink());
    // Garbage, a truncated archive, empty input, bad arguments: errors, never panics.
    for input in [&b"not a tar archive at all"[..], &[0xffu8; 4096][..], &archive(&[("big", &[1u8; 5000])])[..700]] {
        let (code, _, err) = exec(w, &["tar", "-xmf", "-", "-C", "/data"], input);
        assert_eq!(code, 2, "{err}");
    }
    assert_eq!(exec(w, &["tar", "-xmf", "-", "-C", "/data"], b"").0, 0, "an empty archive is empty");
    for args in [
        &["tar"][..],
        &["tar", "cf", "-"],
        &["tar", "czf", "-", "/data"],
        &["tar", "xf", "/etc/passwd"],
        &["tar", "--bogus"],
    ] {
        assert_eq!(exec(w, args, b"").0, 2, "{args:?}");
    }
    let (code, _, err) = exec(w, &["tar", "cf", "-", "/data/nope"], b"");
    assert!(code == 2 && err.contains("Cannot stat"), "{err}");
}

#[test]
fn a_stopped_command_ends() {
    let f = fixture();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (mut input, mut out, mut err) = (&b""[..], Vec::new(), Vec::new());
    let mut io = Io { stdin: &mut input, stdout: &mut out, stderr: &mut err, cancel: &cancel, tty: false };
    let began = std::time::Instant::now();
    run(&f.world, &["sleep".to_string(), "100".to_string()], &mut io);
    assert!(began.elapsed() < std::time::Duration::from_secs(5));
}
