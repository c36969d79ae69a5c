//! Startup, liveness and readiness probes (httpGet, tcpSocket, exec) with every timing field.
//!
//! One task per container run: the startup probe first (if any), then liveness and readiness side by
//! side. Results go back to the pod worker as `ProbeEvent`s; the worker decides what they mean.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::runtime::{ContainerRuntime, Launch, PodContext};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe succeeded (or there is none): liveness and readiness begin.
    Started,
    Ready(bool),
    /// Unhealthy event text; the container must be restarted.
    LivenessFailed(String),
    StartupFailed(String),
    /// A failed attempt below the threshold (for the Unhealthy event).
    Failure {
        probe: &'static str,
        message: String,
    },
}

/// What a probe can reach.
#[derive(Clone)]
pub struct ProbeTarget {
    pub pod_ip: IpAddr,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub pod: Arc<dyn PodContext>,
    pub launch: Launch,
}

/// Runs the container's probes until the task is aborted.
pub async fn run(container: Container, target: ProbeTarget, report: impl Fn(ProbeEvent) + Send + Sync + 'static) {
    let http = match reqwest::Client::builder().danger_accept_invalid_certs(true).no_proxy().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "probe HTTP client");
            return;
        }
    };
    let prober = Prober { container: container.clone(), target, http };
    let report = Arc::new(report);
    if let Some(startup) = &container.startup_probe {
        let t = Timing::of(startup);
        tokio::time::sleep(t.initial_delay).await;
        let mut failures = 0;
        loop {
            match prober.once(startup, t.timeout).await {
                Ok(()) => break,
                Err(message) => {
                    failures += 1;
                    report(ProbeEvent::Failure { probe: "Startup", message: message.clone() });
                    if failures >= t.failure_threshold {
                        report(ProbeEvent::StartupFailed(message));
                        return;
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    }
    report(ProbeEvent::Started);
    let liveness = async {
        let Some(probe) = &container.liveness_probe else { return };
        let t = Timing::of(probe);
        tokio::time::sleep(t.initial_delay).await;
        let mut failures = 0;
        loop {
            match prober.once(probe, t.timeout).await {
                Ok(()) => failures = 0,
                Err(message) => {
                    failures += 1;
                    report(ProbeEvent::Failure { probe: "Liveness", message: message.clone() });
                    if failures >= t.failure_threshold {
                        report(ProbeEvent::LivenessFailed(message));
                        return;
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    };
    let readiness = async {
        let Some(probe) = &container.readiness_probe else {
            report(ProbeEvent::Ready(true));
            return;
        };
        let t = Timing::of(probe);
        tokio::time::sleep(t.initial_delay).await;
        let (mut ok, mut bad, mut ready) = (0, 0, None);
        loop {
            match prober.once(probe, t.timeout).await {
                Ok(()) => {
                    (ok, bad) = (ok + 1, 0);
                    if ok >= t.success_threshold && ready != Some(true) {
                        ready = Some(true);
                        report(ProbeEvent::Ready(true));
                    }
                }
                Err(message) => {
                    (ok, bad) = (0, bad + 1);
                    report(ProbeEvent::Failure { probe: "Readiness", message });
                    if bad >= t.failure_threshold && ready != Some(false) {
                        ready = Some(false);
                        report(ProbeEvent::Ready(false));
                    }
                }
            }
            tokio::time::sleep(t.period).await;
        }
    };
    tokio::join!(liveness, readiness);
    std::future::pending::<()>().await;
}

struct Timing {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: i32,
    failure_threshold: i32,
}

impl Timing {
    fn of(p: &Probe) -> Self {
        let secs = |v: Option<i32>, default: i32| Duration::from_secs(u64::try_from(v.unwrap_or(default)).unwrap_or(0));
        Self {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: p.success_threshold.unwrap_or(1).max(1),
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
        }
    }
}

struct Prober {
    container: Container,
    target: ProbeTarget,
    http: reqwest::Client,
}

impl Prober {
    /// One attempt; the error is the Unhealthy event's text.
    async fn once(&self, probe: &Probe, timeout: Duration) -> Result<(), String> {
        if let Some(h) = &probe.http_get {
            let port = self.port(&h.port)?;
            let host = h.host.clone().unwrap_or_else(|| self.target.pod_ip.to_string());
            let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
            let path = h.path.as_deref().unwrap_or("/");
            let url = format!("{scheme}://{host}:{port}{}{path}", if path.starts_with('/') { "" } else { "/" });
            let mut req = self.http.get(&url).timeout(timeout).header("User-Agent", "kube-probe/1.32");
            for header in h.http_headers.iter().flatten() {
                req = req.header(&header.name, &header.value);
            }
            let resp = req.send().await.map_err(|e| format!("Get \"{url}\": {}", short(&e)))?;
            let code = resp.status().as_u16();
            return if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        if let Some(t) = &probe.tcp_socket {
            let port = self.port(&t.port)?;
            let host = t.host.clone().unwrap_or_else(|| self.target.pod_ip.to_string());
            return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
                Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
            };
        }
        if let Some(e) = &probe.exec {
            let command = e.command.clone().unwrap_or_default();
            let out = self
                .target
                .runtime
                .exec(&self.target.pod, &self.target.launch, &command, timeout)
                .await
                .map_err(|e| e.to_string())?;
            return if out.exit_code == 0 {
                Ok(())
            } else {
                let text = out.output.trim();
                Err(if text.is_empty() {
                    format!("command {command:?} exited with {}", out.exit_code)
                } else {
                    format!("command {command:?} exited with {}: {text}", out.exit_code)
                })
            };
        }
        if probe.grpc.is_some() {
            return Err("grpc probes are not supported by this node".into());
        }
        Err("the probe names no handler (httpGet, tcpSocket or exec)".into())
    }

    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        container_port(&self.container, port)
    }
}

/// A probe's or hook's port: a number, or the name of one of the container's ports.
pub(super) fn container_port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("port {p} is out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no port named {name} in container {}", container.name)),
    }
}

fn short(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}
