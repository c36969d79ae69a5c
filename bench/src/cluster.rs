//! The processes a benchmark runs against: a fresh `skiff server` (and, for the etcd backend, a
//! fresh single-member etcd) in a temporary directory, killed and reaped when dropped, also when
//! the benchmark fails or is interrupted.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Which store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Sqlite,
    Etcd,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Etcd => "etcd",
        })
    }
}

/// Makes the child get SIGKILL when the harness dies (`PR_SET_PDEATHSIG`), so a crashed or killed run
/// leaves no server or agent behind (their network leftovers are swept by the next run). The signal
/// follows the spawning thread: spawn from the runtime's worker threads, which live as long as the run.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
        })
    }
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process, SIGKILLed and reaped on drop.
pub struct Process {
    child: Option<Child>,
    what: &'static str,
}

impl Process {
    pub fn new(child: Child, what: &'static str) -> Self {
        Self { child: Some(child), what }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// An error if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited unexpectedly: {status}", self.what);
            }
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A single-member etcd on free loopback ports.
pub struct Etcd {
    pub process: Process,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start() -> Result<Self> {
        let bin = Path::new("/usr/bin/etcd");
        if !bin.exists() {
            bail!("/usr/bin/etcd is not installed (apt-get install etcd-server)");
        }
        let dir = tempfile::tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning etcd")?;
        let mut etcd =
            Etcd { process: Process::new(child, "etcd"), endpoint: format!("127.0.0.1:{client}"), _dir: dir };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            etcd.process.check_alive()?;
            if let Ok(resp) = http.get(format!("http://{}/health", etcd.endpoint)).send().await {
                if resp.text().await.unwrap_or_default().contains("true") {
                    return Ok(etcd);
                }
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A running `skiff server` and what a client needs to talk to it.
pub struct Server {
    // Drop order matters: the server first, then etcd, then the directories.
    pub process: Process,
    pub etcd: Option<Etcd>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    ca_pem: Vec<u8>,
}

impl Server {
    pub async fn start(bin: &Path, backend: Backend) -> Result<Self> {
        Self::start_with(bin, backend, false, &[]).await
    }

    /// As [`Server::start`]; with `audit`, the server writes an audit log (`--audit-log-path`,
    /// the default policy: Metadata for every request) to [`Server::audit_log`]; `extra` are
    /// more `skiff server` flags (e.g. `--disable-scheduler`).
    pub async fn start_with(bin: &Path, backend: Backend, audit: bool, extra: &[String]) -> Result<Self> {
        let etcd = match backend {
            Backend::Sqlite => None,
            Backend::Etcd => Some(Etcd::start().await?),
        };
        let datastore = match &etcd {
            None => "sqlite".to_string(),
            Some(e) => format!("etcd://{}", e.endpoint),
        };
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut command = Command::new(bin);
        command
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--datastore", &datastore])
            // The API benchmarks measure the control plane alone.
            .arg("--no-agent");
        if audit {
            command.arg("--audit-log-path").arg(dir.path().join("audit.log"));
        }
        command.args(extra);
        let child = die_with_parent(&mut command)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut server = Server {
            process: Process::new(child, "skiff server"),
            etcd,
            dir,
            url: format!("https://127.0.0.1:{port}"),
            token: String::new(),
            ca_pem: Vec::new(),
        };
        server.wait_ready().await.map_err(|e| anyhow!("{e:#}\nserver log tail:\n{}", server.log_tail(30)))?;
        Ok(server)
    }

    /// Where an audited server writes its audit log.
    pub fn audit_log(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.log")
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let (ca, token) = (self.dir.path().join("ca.crt"), self.dir.path().join("admin.token"));
        loop {
            self.process.check_alive()?;
            if self.dir.path().join("kubeconfig").exists() && ca.exists() && token.exists() {
                self.ca_pem = std::fs::read(&ca)?;
                self.token = std::fs::read_to_string(&token)?.trim().to_string();
                let client = self.client()?;
                if let Ok(resp) = client.get(format!("{}/readyz", self.url)).send().await {
                    if resp.text().await.unwrap_or_default().trim() == "ok" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("skiff server did not become ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// From now on clients act as the service account `default/<name>`, bound to `cluster_role`
    /// in `default` (its token from the TokenRequest API): every request is then authorized by
    /// RBAC, where the admin token is a `system:masters` member that skips it.
    pub async fn act_as_service_account(&mut self, name: &str, cluster_role: &str) -> Result<()> {
        let admin = self.client()?;
        let base = format!("{}/api/v1/namespaces/default", self.url);
        let post = |url: String, body: serde_json::Value| {
            let admin = admin.clone();
            async move {
                let resp = admin.post(&url).json(&body).send().await?;
                let status = resp.status();
                let text = resp.text().await?;
                if !status.is_success() {
                    bail!("POST {url}: {status}: {text}");
                }
                Ok::<serde_json::Value, anyhow::Error>(serde_json::from_str(&text)?)
            }
        };
        post(format!("{base}/serviceaccounts"), serde_json::json!({"metadata": {"name": name}})).await?;
        post(
            format!("{}/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", self.url),
            serde_json::json!({
                "metadata": {"name": format!("{name}-{cluster_role}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]
            }),
        )
        .await?;
        let review = post(
            format!("{base}/serviceaccounts/{name}/token"),
            serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}),
        )
        .await?;
        self.token = review["status"]["token"].as_str().context("no token in the TokenRequest answer")?.to_string();
        Ok(())
    }

    /// A new HTTPS client (its own connection pool) trusting the cluster CA, sending the bearer
    /// token. HTTP/1.1: the workspace's reqwest is built without HTTP/2.
    pub fn client(&self) -> Result<reqwest::Client> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(cert.context("parsing ca.crt")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", self.token).parse()?);
        Ok(reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .default_headers(headers)
            .pool_idle_timeout(None)
            .tcp_nodelay(true)
            .build()?)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive().map_err(|e| anyhow!("{e:#}\nserver log tail:\n{}", self.log_tail(30)))?;
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.process.check_alive()?;
        }
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Warnings and errors the server logged, for the report (at most `max`, and the count).
    pub fn log_problems(&self, max: usize) -> (usize, Vec<String>) {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let bad: Vec<String> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
            .map(str::to_string)
            .collect();
        (bad.len(), bad.into_iter().take(max).collect())
    }

    /// Prints the server's warnings and errors to stderr (not part of the Markdown).
    pub fn report_log(&self) {
        let (n, first) = self.log_problems(10);
        if n > 0 {
            eprintln!("note: the server logged {n} warning/error lines; first ones:");
            for l in first {
                eprintln!("  {l}");
            }
        }
    }
}

/// Resident set size and its peak, in bytes, from /proc/PID/status.
pub fn rss(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line =
            status.lines().find(|l| l.starts_with(name)).ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line.split_whitespace().nth(1).ok_or_else(|| anyhow!("bad {name} line"))?.parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A process's highest resident set size seen by sampling `/proc/PID/status` (between the
/// samples, `VmHWM` has the true peak); stops sampling when dropped.
pub struct PeakRss {
    peak: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling `pid` every `every`, from `start` bytes.
    pub fn start(pid: u32, start: u64, every: Duration) -> Self {
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(start));
        let seen = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            loop {
                if let Ok((now, _)) = rss(pid) {
                    seen.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(every).await;
            }
        });
        Self { peak, task }
    }

    /// The highest sample so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// User + system CPU time a process has used, in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let Ok(stat) = std::fs::read_to_string(path) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds used by the server, etcd (if any) and this harness.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub server: f64,
    pub etcd: f64,
    pub bench: f64,
}

impl Cpu {
    pub fn now(server: &Server) -> Self {
        Cpu {
            server: cpu_seconds(Some(server.pid())),
            etcd: server.etcd.as_ref().map_or(0.0, |e| cpu_seconds(Some(e.process.pid()))),
            bench: cpu_seconds(None),
        }
    }

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu { server: self.server - before.server, etcd: self.etcd - before.etcd, bench: self.bench - before.bench }
    }
}
