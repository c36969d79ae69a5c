//! `skiff`: one binary for the control plane and the node agents.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skiff_control::server::{self, Datastore, ServerConfig};
use skiff_node::image::{push_wasm, ImageConfig, RegistryAuth};
use skiff_node::kubelet_tls::ServingCert;
use skiff_node::Agent;

/// mimalloc instead of glibc's malloc: the API server's create path spent about a fifth of its
/// CPU in malloc and free, and glibc's per-thread arenas keep freed memory of request bursts.
/// Built with `no_thp`: mimalloc no longer asks for transparent huge pages on its arenas
/// (`MADV_HUGEPAGE`); with them each thread's first pages faulted in zeroed 2 MiB pages, about a
/// third of the server's CPU and 2 MiB of RSS per pod thread on a node running 400 pods.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit_args;
mod node_args;
use node_args::NodeArgs;

#[derive(Parser)]
#[command(name = "skiff", version, about = "A small, fast Kubernetes: Wasm and OCI pods side by side")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane: the Kubernetes API server on an embedded store, and its controllers.
    Server {
        /// Where the store, certificates, token and kubeconfig live.
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to serve HTTPS on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        /// Another host name or IP address for the serving certificate, as k3s's `--tls-san`
        /// (repeatable): how joining nodes reach a server that listens on 0.0.0.0.
        #[arg(long = "tls-san", value_parser = parse_tls_san)]
        tls_sans: Vec<String>,
        /// `sqlite` (embedded, the default) or `etcd://host:port[,host:port...]`.
        #[arg(long, default_value = "sqlite")]
        datastore: Datastore,
        /// Run only the control plane, without the in-process node agent.
        #[arg(long)]
        no_agent: bool,
        /// Do not run the scheduler (as k3s): pods stay Pending unless something else binds them.
        #[arg(long)]
        disable_scheduler: bool,
        /// Do not run the controllers kube-controller-manager would (as k3s): workloads, garbage
        /// collection, namespaces, service accounts, node lifecycle, endpoints.
        #[arg(long)]
        disable_controller_manager: bool,
        /// Run the scheduler and the controller manager only while this server holds their Leases
        /// in kube-system (several servers on one etcd then never both act); `false` runs them
        /// unconditionally.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        leader_elect: bool,
        /// How long a leader's Lease is valid without renewal: how long the others wait for a
        /// leader that stopped.
        #[arg(long, default_value = "15s", value_parser = parse_seconds)]
        leader_elect_lease_duration: std::time::Duration,
        /// How long a leader tries to renew before it stops leading.
        #[arg(long, default_value = "10s", value_parser = parse_seconds)]
        leader_elect_renew_deadline: std::time::Duration,
        /// How often a leader renews.
        #[arg(long, default_value = "2s", value_parser = parse_seconds)]
        leader_elect_retry_period: std::time::Duration,
        /// How long a node may go without renewing its Lease before it turns Unknown and is
        /// tainted unreachable (e.g. `20s`, `1m`).
        #[arg(long, default_value = "20s", value_parser = parse_seconds)]
        node_monitor_grace_period: std::time::Duration,
        /// How often the HorizontalPodAutoscaler controller evaluates each HPA (as kube's).
        #[arg(long, default_value = "15s", value_parser = parse_seconds)]
        horizontal_pod_autoscaler_sync_period: std::time::Duration,
        /// The usage-to-target ratio within which an HPA does not scale (as kube's).
        #[arg(long, default_value_t = 0.1, value_parser = parse_tolerance)]
        horizontal_pod_autoscaler_tolerance: f64,
        /// The scale-down stabilization window of HPAs without `behavior` (as kube's).
        #[arg(long, default_value = "5m", value_parser = parse_seconds)]
        horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
        /// The least time between two writes of one Service's EndpointSlices and Endpoints (the
        /// first change after a quiet spell is written at once; `0s` writes every change).
        #[arg(long, default_value = "500ms", value_parser = parse_duration_ms)]
        endpoint_updates_batch_period: std::time::Duration,
        /// The `tolerationSeconds` every pod gets for the not-ready and unreachable NoExecute taints.
        #[arg(long, default_value_t = 30)]
        default_unreachable_toleration_seconds: i64,
        /// The IPv4 range Services' ClusterIPs are allocated from.
        #[arg(long, default_value = "10.43.0.0/16")]
        service_cidr: ipnet::Ipv4Net,
        /// The range NodePorts are allocated from (`LOW-HIGH`).
        #[arg(long, default_value = "30000-32767")]
        service_node_port_range: skiff_control::api::service_network::PortRange,
        /// Give every node without a pod CIDR (an agent started without `--pod-cidr`) a block of
        /// `--cluster-cidr`, and route between the nodes' pod networks.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        allocate_node_cidrs: bool,
        /// The IPv4 range the nodes' pod CIDRs are allocated from.
        #[arg(long, default_value = "10.42.0.0/16")]
        cluster_cidr: ipnet::Ipv4Net,
        /// The prefix length of each node's pod CIDR (24: 254 addresses per node).
        #[arg(long, default_value_t = 24)]
        node_cidr_mask_size: u8,
        #[command(flatten)]
        audit: audit_args::AuditArgs,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Runs a node agent that joins the cluster at `--server` and runs the pods bound to its node.
    Agent {
        /// The API server's URL, e.g. https://10.0.0.1:6443.
        #[arg(long)]
        server: String,
        /// A join token from `skiff token create` (`K10<CA hash>::<id>.<secret>`): the agent checks
        /// the server's CA against it and gets its own client certificate, kept in `--data-dir`.
        #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding a bearer token to authenticate with (with `ca.crt` beside it or `--ca-file`).
        #[arg(long, required_unless_present = "token")]
        token_file: Option<PathBuf>,
        /// The cluster CA certificate (default: `ca.crt` beside the token file).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Where sandboxes, volumes, logs, images and compiled code live.
        #[arg(long, required_unless_present = "hollow")]
        data_dir: Option<PathBuf>,
        /// The cluster's service CIDR (the server's `--service-cidr`), routed from pods to this node.
        #[arg(long, default_value = "10.43.0.0/16")]
        service_cidr: ipnet::Ipv4Net,
        /// Instead of a real node, registers this many hollow nodes (kubemark): they keep their
        /// Leases and report their pods Running with a fake IP, executing nothing.
        #[arg(long)]
        hollow: Option<usize>,
        /// The hollow nodes' names are `<prefix>-<i>`.
        #[arg(long, default_value = "hollow", requires = "hollow")]
        hollow_prefix: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Secrets at rest.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Join tokens for new nodes.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Puts skiff's Wasm engine into an existing containerd (`containerd-shim-skiff-v1`).
    Shim {
        #[command(subcommand)]
        command: ShimCommand,
    },
    /// Works with Wasm images in OCI registries.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Rotates the key Secrets are encrypted with, online: a new key, every Secret re-encrypted,
    /// the old key retired (through the running server, with its admin kubeconfig).
    Rotate {
        /// The server's data directory (its `kubeconfig`).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a join token (a bootstrap token pinned to the cluster CA) with the server's admin
    /// kubeconfig; prints it as the last line, for `skiff agent --server URL --token TOKEN`.
    Create {
        /// The server's data directory (its `kubeconfig` and `ca.crt`).
        #[arg(long)]
        data_dir: PathBuf,
        /// How long the token may be used to join (e.g. `30m`, `24h`).
        #[arg(long, default_value = "24h", value_parser = parse_seconds)]
        ttl: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Pushes a .wasm module or component as a Wasm OCI artifact; prints the manifest digest.
    Push {
        /// The .wasm file.
        file: PathBuf,
        /// Where to push it, e.g. 127.0.0.1:5000/hello:1.
        reference: String,
        /// Registry username (basic auth).
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// Registry password.
        #[arg(long, env = "SKIFF_REGISTRY_PASSWORD", hide_env_values = true, requires = "username")]
        password: Option<String>,
        /// A `host:port` to reach over plain HTTP (loopback registries always are). Repeatable.
        #[arg(long = "insecure-registry")]
        insecure_registries: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ShimCommand {
    /// Installs the shim binary on containerd's PATH and adds the runtime handler `skiff` to containerd's config
    /// (comments and other runtimes kept, the old file backed up; idempotent); prints the RuntimeClass.
    Install {
        /// The containerd config to edit.
        #[arg(long, default_value = skiff_shim::install::DEFAULT_CONFIG)]
        containerd_config: PathBuf,
        /// Where to put `containerd-shim-skiff-v1` (a directory on containerd's PATH).
        #[arg(long, default_value = skiff_shim::install::DEFAULT_BIN_DIR)]
        bin_dir: PathBuf,
        /// The shim binary to install (default: `containerd-shim-skiff-v1` beside this executable).
        #[arg(long)]
        shim_binary: Option<PathBuf>,
        /// Remove what install added instead.
        #[arg(long)]
        uninstall: bool,
    },
}

/// Runs `skiff shim install [--uninstall]` and tells what changed.
fn shim_install(options: skiff_shim::install::InstallOptions, uninstall: bool) -> anyhow::Result<()> {
    use skiff_shim::install;
    let config = options.containerd_config.display().to_string();
    let report = if uninstall {
        install::uninstall(&options).context("uninstalling the shim")?
    } else {
        install::install(&options).context("installing the shim")?
    };
    let (binary, handler) = match (uninstall, report.binary_changed, report.config_changed) {
        (true, b, c) => (
            if b { "removed" } else { "not present" },
            if c { "removed the runtime `skiff`" } else { "no runtime `skiff`" },
        ),
        (false, b, c) => (
            if b { "installed" } else { "up to date" },
            if c { "added the runtime `skiff`" } else { "runtime `skiff` already there" },
        ),
    };
    println!("{}: {binary}", report.binary.display());
    println!("{config}: {handler}");
    if let Some(backup) = &report.backup {
        println!("previous config saved as {}", backup.display());
    }
    println!("restart containerd to apply (e.g. systemctl restart containerd)");
    if !uninstall {
        println!("then apply this RuntimeClass and set `runtimeClassName: skiff` in pods:\n");
        print!("{}", install::RUNTIME_CLASS_YAML);
    }
    Ok(())
}

/// A duration flag: seconds with an optional `s`, `m` or `h` unit (`20s`, `1m`, `90`).
/// A tolerance: a finite ratio from 0 up.
fn parse_tolerance(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(t) if t.is_finite() && t >= 0.0 => Ok(t),
        _ => Err(format!("`{text}` is not a tolerance such as 0.1")),
    }
}

/// A `--tls-san`: an IP address, or a DNS name of letters, digits and hyphens in dot-separated
/// labels (a leading `*.` for a wildcard), as a certificate may carry it.
fn parse_tls_san(text: &str) -> Result<String, String> {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok(text.to_string());
    }
    let name = text.strip_prefix("*.").unwrap_or(text);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if text.len() <= 253 && name.split('.').all(label_ok) {
        Ok(text.to_string())
    } else {
        Err(format!("`{text}` is neither an IP address nor a DNS name"))
    }
}

fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let (digits, unit) = match text.strip_suffix('s') {
        Some(d) => (d, 1),
        None => match text.strip_suffix('m') {
            Some(d) => (d, 60),
            None => match text.strip_suffix('h') {
                Some(d) => (d, 3600),
                None => (text, 1),
            },
        },
    };
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a duration such as 20s, 1m or 1h"))?;
    n.checked_mul(unit).map(std::time::Duration::from_secs).ok_or_else(|| format!("`{text}` is too long"))
}

/// A duration as [`parse_seconds`] reads it, or in milliseconds (`500ms`).
fn parse_duration_ms(text: &str) -> Result<std::time::Duration, String> {
    match text.strip_suffix("ms") {
        Some(digits) => digits
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("`{text}` is not a duration such as 500ms, 1s or 1m")),
        None => parse_seconds(text),
    }
}

/// Bytes in KiB/MiB for progress lines.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    match Cli::parse().command {
        Command::Server {
            data_dir,
            listen,
            tls_sans,
            datastore,
            no_agent,
            disable_scheduler,
            disable_controller_manager,
            leader_elect,
            leader_elect_lease_duration,
            leader_elect_renew_deadline,
            leader_elect_retry_period,
            node_monitor_grace_period,
            horizontal_pod_autoscaler_sync_period,
            horizontal_pod_autoscaler_tolerance,
            horizontal_pod_autoscaler_downscale_stabilization,
            endpoint_updates_batch_period,
            default_unreachable_toleration_seconds,
            service_cidr,
            service_node_port_range,
            allocate_node_cidrs,
            cluster_cidr,
            node_cidr_mask_size,
            audit,
            node,
        } => {
            let node_ipam = skiff_control::controllers::node_ipam::Config::new(cluster_cidr, node_cidr_mask_size)?;
            let node_lifecycle = skiff_control::controllers::node_lifecycle::Config {
                node_monitor_grace_period,
                default_unreachable_toleration_seconds,
            };
            let service_network = skiff_control::api::service_network::ServiceNetwork {
                cidr: service_cidr,
                node_ports: service_node_port_range.0,
            };
            let timing = skiff_control::controllers::leader_election::Timing {
                lease_duration: leader_elect_lease_duration,
                renew_deadline: leader_elect_renew_deadline,
                retry_period: leader_elect_retry_period,
            };
            timing.validate().map_err(anyhow::Error::msg)?;
            let config = ServerConfig {
                data_dir: data_dir.clone(),
                listen,
                tls_sans,
                datastore,
                node_lifecycle,
                service_network,
                audit: audit.config(),
                components: skiff_control::controllers::Components {
                    scheduler: !disable_scheduler,
                    controller_manager: !disable_controller_manager,
                    election: None,
                    autoscaler: skiff_control::controllers::hpa::Config {
                        settings: skiff_control::controllers::hpa::decide::Settings {
                            sync_period: horizontal_pod_autoscaler_sync_period,
                            tolerance: horizontal_pod_autoscaler_tolerance,
                            downscale_stabilization: horizontal_pod_autoscaler_downscale_stabilization,
                        },
                        metrics: None,
                    },
                    node_ipam: allocate_node_cidrs.then_some(node_ipam),
                    endpoint_updates_batch_period,
                },
                leader_elect: leader_elect.then_some(timing),
            };
            let running = server::start(config).await.context("starting the API server")?;
            println!("skiff API server ready at {}; export KUBECONFIG={}", running.url(), running.kubeconfig.display());
            let agent = if no_agent {
                None
            } else {
                let mut config =
                    node.config(&running.url(), &running.ca_pem, &running.admin_token, data_dir.join("node"));
                config.service_cidr = Some(service_cidr.to_string());
                // The in-process kubelet gets its serving certificate from its own server's CA.
                let ca = skiff_control::server::kubelet_certs::CertAuthority::load(&data_dir)
                    .context("loading the cluster CA")?;
                let serving = ca
                    .kubelet_serving(&config.node_name, &[config.node_ip], std::slice::from_ref(&config.node_name))
                    .context("issuing the kubelet serving certificate")?;
                config.kubelet_serving = Some(ServingCert { cert_pem: serving.cert_pem, key_pem: serving.key_pem });
                let agent = Agent::start(config).await.context("starting the node agent")?;
                println!("skiff node agent ready; kubelet endpoint on {}", agent.kubelet_addr);
                Some(agent)
            };
            shutdown_signal().await;
            if let Some(agent) = agent {
                agent.shutdown().await;
            }
            running.shutdown();
        }
        Command::Image { command } => match command {
            ImageCommand::Push { file, reference, username, password, insecure_registries } => {
                let auth = username.zip(password).map(|(username, password)| RegistryAuth { username, password });
                let cfg = ImageConfig { insecure_registries, ..ImageConfig::default() };
                let name = file.display().to_string();
                let progress = |sent: u64, total: u64| eprint!("\rpushing {name}: {} / {}", human(sent), human(total));
                let digest = push_wasm(&file, &reference, &cfg, auth.as_ref(), &progress).await;
                eprintln!();
                let digest = digest.with_context(|| format!("pushing {name} to {reference}"))?;
                eprintln!("pushed {reference}@{digest}");
                println!("{digest}");
            }
        },
        Command::Shim { command: ShimCommand::Install { containerd_config, bin_dir, shim_binary, uninstall } } => {
            let options = skiff_shim::install::InstallOptions { containerd_config, bin_dir, shim_binary };
            shim_install(options, uninstall)?;
        }
        Command::Secrets { command: SecretsCommand::Rotate { data_dir } } => {
            let answer = skiff_node::client::post(&data_dir.join("kubeconfig"), "/skiff/v1/secrets/rotate")
                .await
                .context("rotating the secrets encryption key")?;
            println!("{answer}");
        }
        Command::Token { command: TokenCommand::Create { data_dir, ttl } } => {
            let ca_pem = std::fs::read_to_string(data_dir.join("ca.crt"))
                .with_context(|| format!("reading the cluster CA in {}", data_dir.display()))?;
            let token = skiff_node::join::create_token(&data_dir.join("kubeconfig"), &ca_pem, ttl)
                .await
                .context("creating a join token")?;
            eprintln!("join a node with: skiff agent --server https://<this host>:6443 --token <the token below> ...");
            println!("{token}");
        }
        Command::Agent { server, token, token_file, ca_file, data_dir, service_cidr, hollow, hollow_prefix, node } => {
            let data_dir = data_dir.unwrap_or_default();
            let mut config = match (token, token_file) {
                (Some(token), _) => {
                    let token: skiff_node::join::JoinToken = token.parse()?;
                    let name = node.node_name();
                    let identity_dir = data_dir.join("identity");
                    let identity = match skiff_node::join::Identity::load(&identity_dir) {
                        Some(kept) => kept,
                        None => skiff_node::join::join(&server, &token, &name, &identity_dir).await?,
                    };
                    let mut config = node.config(&server, &identity.ca_pem, "", data_dir);
                    config.client_cert = Some((identity.cert_pem, identity.key_pem));
                    config
                }
                (None, Some(token_file)) => {
                    let token = std::fs::read_to_string(&token_file)
                        .with_context(|| format!("reading the token file {}", token_file.display()))?;
                    let ca_file = ca_file.unwrap_or_else(|| token_file.with_file_name("ca.crt"));
                    let ca_pem = std::fs::read_to_string(&ca_file)
                        .with_context(|| format!("reading the cluster CA {}", ca_file.display()))?;
                    node.config(&server, &ca_pem, token.trim(), data_dir)
                }
                (None, None) => anyhow::bail!("--token or --token-file is required"),
            };
            if let Some(count) = hollow {
                let client = skiff_node::client::connect(&config).await.context("connecting to the API server")?;
                let cfg = skiff_node::hollow::HollowConfig { count, prefix: hollow_prefix, ..Default::default() };
                println!("skiff hollow agent: {count} nodes");
                tokio::select! {
                    r = skiff_node::hollow::run(client, cfg) => r.context("running hollow nodes")?,
                    () = shutdown_signal() => {}
                }
                return Ok(());
            }
            config.service_cidr = Some(service_cidr.to_string());
            let agent = Agent::start(config).await.context("starting the node agent")?;
            println!("skiff node agent ready; kubelet endpoint on {}", agent.kubelet_addr);
            shutdown_signal().await;
            agent.shutdown().await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_as_the_flags_document_them() {
        assert_eq!(parse_seconds("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_seconds("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration_ms("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration_ms("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_ms("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration_ms("fastms").is_err());
        assert!(parse_duration_ms("18446744073709551615h").is_err(), "an overflow is an error, not a panic");
    }
}
