//! `skiff-bench`: the benchmark harness behind docs/benchmarks.md.
//!
//! Each subcommand starts its own fresh `skiff server` (and etcd, for that backend; for the node
//! benchmarks a loopback registry and the server's in-process node agent on a private bridge) in a temporary
//! directory, drives it over HTTPS like any Kubernetes client, prints a Markdown table on stdout
//! (progress goes to stderr), and kills what it started when it finishes, fails or is interrupted.
//! Figures, never pass/fail assertions: the verdicts live in docs/benchmarks.md.

mod agent_node;
mod authz;
mod cluster;
mod containerd;
mod crd;
mod create;
mod ctrl_rss;
mod deploy_scale;
mod dns;
mod exec;
mod exec_ws;
mod list;
mod node_burst;
mod node_cluster;
mod node_death;
mod node_http;
mod node_pods;
mod node_start;
mod pod_mem;
mod pod_start;
mod port_forward;
mod proxy_sync;
mod rss;
mod sched;
mod shim_mem;
mod shim_run;
mod stats;
mod svc_ready;
mod top;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use cluster::Backend;
use node_cluster::NodeOpts;

#[derive(Parser)]
#[command(name = "skiff-bench", about = "Benchmarks of the skiff API server and node agent; prints Markdown tables")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pod creates/s and latency at several levels of concurrent clients.
    ApiCreate {
        #[arg(long)]
        server_bin: PathBuf,
        #[arg(long, value_enum, default_value = "sqlite")]
        datastore: Backend,
        /// Concurrent clients per level, each with its own connection.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Pods created per level.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Time cap per level, in seconds.
        #[arg(long, default_value_t = 60)]
        max_seconds: u64,
        /// Create as a service account bound to `edit` (RBAC enforced) instead of the admin.
        #[arg(long)]
        as_service_account: bool,
        /// Run the server with its audit log on (`--audit-log-path`, default policy: Metadata).
        #[arg(long)]
        audit: bool,
        /// More flags for `skiff server`, e.g. `--server-arg=--disable-scheduler`.
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// CustomResourceDefinitions: create to `Established` and served, and custom-object creates/s
    /// (schema + two CEL rules) beside ConfigMap creates in the same run.
    ApiCrd {
        #[arg(long)]
        server_bin: PathBuf,
        #[arg(long, value_enum, default_value = "sqlite")]
        datastore: Backend,
        /// CRDs created one at a time for the `Established` timing.
        #[arg(long, default_value_t = 50)]
        definitions: usize,
        /// Objects created per round and kind.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Rounds of (ConfigMaps, then custom objects).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Time cap per batch, in seconds.
        #[arg(long, default_value_t = 60)]
        max_seconds: u64,
        /// More flags for `skiff server`.
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// Watch delivery latency with many concurrent watchers.
    ApiWatch {
        #[arg(long)]
        server_bin: PathBuf,
        #[arg(long, value_enum, default_value = "sqlite")]
        datastore: Backend,
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Pods created (one at a time) while the watchers watch.
        #[arg(long, default_value_t = 200)]
        events: usize,
        /// Milliseconds between the starts of two creates.
        #[arg(long, default_value_t = 20)]
        spacing_ms: u64,
    },
    /// containerd with skiff's shim against runc: `ctr run --rm` latency, tasks/s, memory per container.
    ShimRun {
        /// The `containerd-shim-skiff-v1` binary to put on containerd's PATH.
        #[arg(long)]
        shim_bin: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long, default_value_t = 200)]
        tasks: usize,
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Long-running containers per runtime for the memory figures.
        #[arg(long, default_value_t = 10)]
        containers: usize,
        #[arg(long, default_value = "workloads/out")]
        workloads: PathBuf,
    },
    /// Full and paginated list times with N pods stored.
    ApiList {
        #[arg(long)]
        server_bin: PathBuf,
        #[arg(long, value_enum, default_value = "sqlite")]
        datastore: Backend,
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Server resident memory with N small pods stored.
    ApiRss {
        #[arg(long)]
        server_bin: PathBuf,
        #[arg(long, value_enum, default_value = "sqlite")]
        datastore: Backend,
        #[arg(long, default_value_t = 100_000)]
        pods: usize,
        /// Pod watches held open (and read) while the pods are created, as controllers would.
        #[arg(long, default_value_t = 0)]
        watchers: usize,
        /// Time cap for creating the pods, in seconds.
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
        /// More flags for `skiff server`, e.g. `--server-arg=--disable-scheduler`.
        #[arg(long = "server-arg", allow_hyphen_values = true)]
        server_args: Vec<String>,
    },
    /// Pod start latency (create → Running, → Ready) on a warm node, pods created one at a time.
    NodeStart {
        #[command(flatten)]
        node: NodeFlags,
        #[arg(long, default_value_t = 200)]
        pods: usize,
    },
    /// Pod start latency for Linux (OCI, busybox), Wasm and mixed pods in one run (one at a time, then a
    /// burst), and memory per idle pod (skiff + containerd + shims + containers). Needs containerd and runc.
    PodStart {
        #[command(flatten)]
        node: NodeFlags,
        /// Pods of each kind created one after the other.
        #[arg(long, default_value_t = 50)]
        pods: usize,
        /// Pods of each kind created at once.
        #[arg(long, default_value_t = 20)]
        burst: usize,
        /// Idle pods of each kind for the memory figures.
        #[arg(long, default_value_t = 20)]
        idle_pods: usize,
        /// Seconds the node idles before each memory reading.
        #[arg(long, default_value_t = 5)]
        idle_seconds: u64,
    },
    /// Scheduler throughput: pods bound per second with hollow nodes (`skiff agent --hollow`).
    SchedThroughput {
        #[arg(long)]
        server_bin: PathBuf,
        /// Hollow node counts, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 30000)]
        pods: usize,
        /// Concurrent create clients, each with its own connection.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Time cap per run, in seconds.
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
        /// Create the pods while every node is cordoned, then uncordon them all and time the
        /// binds alone (the scheduler's rate, not the create rate).
        #[arg(long)]
        prefill: bool,
    },
    /// Many pods created at once: time until all are Ready, and server RSS per idle pod.
    NodeBurst {
        #[command(flatten)]
        node: NodeFlags,
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// Concurrent create clients, each with its own connection.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds after the first create by which the pods must be Ready (the rest are counted).
        #[arg(long, default_value_t = 120)]
        cap_seconds: u64,
        /// Seconds of idling before the second RSS reading.
        #[arg(long, default_value_t = 5)]
        idle_seconds: u64,
    },
    /// A Deployment of N Wasm replicas on one real node, for `hello-http` and for `tcp-echo` (a p2 TCP
    /// server): create → all Ready, and the server's peak RSS. The pod CIDR is a /21 (2,043 addresses).
    DeployScale {
        #[command(flatten)]
        node: NodeFlags,
        /// Where `hello-http.wasm` and `tcp-echo.wasm` are (scripts/build-workloads.sh).
        #[arg(long, default_value = "workloads/out")]
        workloads: PathBuf,
        #[arg(long, default_value_t = 1000)]
        replicas: usize,
        /// Seconds after the create by which the replicas must be Ready (the rest are counted).
        #[arg(long, default_value_t = 180)]
        cap_seconds: u64,
        /// Also a ClusterIP Service selecting the replicas (its endpoints are kept up through the burst).
        #[arg(long)]
        service: bool,
        /// Only one guest: `hello-http` or `tcp-echo`.
        #[arg(long)]
        only: Option<String>,
    },
    /// A second real node (`skiff agent`) killed with SIGKILL under default lifecycle settings: kill →
    /// node Unknown, → its pods evicted, → replacements Ready on the first node.
    NodeDeath {
        #[command(flatten)]
        node: NodeFlags,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 10)]
        replicas: usize,
        /// Seconds after the kill by which the replacements must be Ready.
        #[arg(long, default_value_t = 180)]
        cap_seconds: u64,
    },
    /// Server RSS with hollow nodes and many pods under the controllers (created through Deployments).
    CtrlRss {
        #[arg(long)]
        server_bin: PathBuf,
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// The pods are split evenly among this many Deployments.
        #[arg(long, default_value_t = 10)]
        deployments: usize,
        /// Seconds after the first create by which the pods must be Running.
        #[arg(long, default_value_t = 600)]
        cap_seconds: u64,
        /// Seconds of idling after convergence before the last reading.
        #[arg(long, default_value_t = 30)]
        settle_seconds: u64,
    },
    /// Service proxy rule sync for one changed endpoint with many Services (nft in a private netns).
    ProxySync {
        /// Numbers of Services.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        services: Vec<usize>,
        /// Changed endpoints measured per size.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
    },
    /// Cluster DNS queries per second and latency for service names against the node's server.
    Dns {
        /// ClusterIP Services in the zone.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Concurrent closed-loop UDP clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Authorization decision latency (RBAC index and Node authorizer graph), in process.
    Authz {
        /// Roles and as many RoleBindings (and pods for the node graph).
        #[arg(long, default_value_t = 1000)]
        roles: usize,
        #[arg(long, default_value_t = 200_000)]
        decisions: usize,
    },
    /// `kubectl port-forward` to a hello-http pod against its IP: download MB/s and new-connection latency.
    PortForward {
        #[command(flatten)]
        node: NodeFlags,
        /// The kubectl to run (1.32 tunnels SPDY in WebSocket; 1.29 upgrades to SPDY).
        #[arg(long, default_value = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32")]
        kubectl: PathBuf,
        /// Size of the downloaded file, in MiB.
        #[arg(long, default_value_t = 64)]
        mib: usize,
        #[arg(long, default_value_t = 5)]
        downloads: usize,
        /// New connections timed per path.
        #[arg(long, default_value_t = 200)]
        connections: usize,
    },
    /// How old `kubectl top`'s figures are when they arrive (the metrics API asked at a steady pace).
    Top {
        #[command(flatten)]
        node: NodeFlags,
        /// Requests for the pod's and for the node's metrics, each.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Time between two requests, in milliseconds.
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
    },
    /// `kubectl exec` into a Wasm container: `-- true` wall time and `-- echo x` first byte, p50/p99.
    Exec {
        #[command(flatten)]
        node: NodeFlags,
        /// The kubectl to run (1.32 speaks WebSocket; 1.29 SPDY).
        #[arg(long, default_value = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32")]
        kubectl: PathBuf,
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
    /// HTTP throughput of one hello-http pod with wrk from the host, in one run: at its pod IP,
    /// through its Service's ClusterIP and NodePort, and through the node's Ingress.
    NodeHttp {
        #[command(flatten)]
        node: NodeFlags,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// wrk threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Time from a pod turning Ready to the first request reaching it through its Service
    /// (ClusterIP and NodePort), a new pod per round.
    SvcReady {
        #[command(flatten)]
        node: NodeFlags,
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Time between two connection attempts of a prober, in milliseconds.
        #[arg(long, default_value_t = 1)]
        interval_ms: u64,
    },
}

/// What every node benchmark takes: the server (with its in-process node agent) and the guest.
#[derive(clap::Args)]
struct NodeFlags {
    #[arg(long)]
    server_bin: PathBuf,
    /// The hello-http guest (built by scripts/build-workloads.sh).
    #[arg(long, default_value = "workloads/out/hello-http.wasm")]
    workload: PathBuf,
    /// The node's `--sandbox-pool`.
    #[arg(long, default_value_t = 4)]
    sandbox_pool: usize,
    /// Copy the server log (SKIFF_LOG, default info) here when the server stops.
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// More flags for `skiff server`, e.g. `--server-arg=--max-pods=400`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

impl NodeFlags {
    fn opts(&self, cidr_prefix: u8) -> NodeOpts {
        NodeOpts {
            sandbox_pool: self.sandbox_pool,
            cidr_prefix,
            keep_log: self.server_log.clone(),
            extra_args: self.server_args.clone(),
        }
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::ApiCreate {
            server_bin,
            datastore,
            clients,
            count,
            max_seconds,
            as_service_account,
            audit,
            server_args,
        } => {
            if clients.contains(&0) || count == 0 {
                bail!("--clients and --count must be positive");
            }
            let limit = Duration::from_secs(max_seconds);
            create::run(&server_bin, datastore, &clients, count, limit, as_service_account, audit, &server_args).await
        }
        Command::ApiCrd { server_bin, datastore, definitions, count, clients, rounds, max_seconds, server_args } => {
            if definitions == 0 || count == 0 || clients == 0 || rounds == 0 {
                bail!("--definitions, --count, --clients and --rounds must be positive");
            }
            let args = crd::CrdArgs { definitions, count, clients, rounds, limit: Duration::from_secs(max_seconds) };
            crd::run(&server_bin, datastore, &args, &server_args).await
        }
        Command::ApiWatch { server_bin, datastore, watchers, events, spacing_ms } => {
            if watchers == 0 || events == 0 {
                bail!("--watchers and --events must be positive");
            }
            watch::run(&server_bin, datastore, watchers, events, Duration::from_millis(spacing_ms)).await
        }
        Command::ShimRun { shim_bin, runs, tasks, parallel, containers, workloads } => {
            shim_run::run(&shim_bin, &shim_run::ShimRunArgs { runs, tasks, parallel, containers, workloads }).await
        }
        Command::ApiList { server_bin, datastore, pods, runs } => {
            if pods == 0 || runs == 0 {
                bail!("--pods and --runs must be positive");
            }
            list::run(&server_bin, datastore, pods, runs).await
        }
        Command::ApiRss { server_bin, datastore, pods, watchers, max_seconds, server_args } => {
            rss::run(&server_bin, datastore, pods, watchers, Duration::from_secs(max_seconds), &server_args).await
        }
        Command::NodeStart { node, pods } => {
            if pods == 0 {
                bail!("--pods must be positive");
            }
            node_start::run(&node.server_bin, &node.workload, pods, &node.opts(22)).await
        }
        Command::PodStart { node, pods, burst, idle_pods, idle_seconds } => {
            if pods == 0 || burst == 0 || idle_pods == 0 || burst > 500 || idle_pods > 500 {
                bail!("--pods, --burst and --idle-pods must be positive (--burst and --idle-pods at most 500)");
            }
            let args = pod_start::PodStartArgs { pods, burst, idle_pods, idle: Duration::from_secs(idle_seconds) };
            pod_start::run(&node.server_bin, &node.workload, &args, node.opts(22)).await
        }
        Command::NodeBurst { node, pods, clients, cap_seconds, idle_seconds } => {
            if pods == 0 || clients == 0 || pods > 4000 {
                bail!("--pods (at most 4,000) and --clients must be positive");
            }
            let args = node_burst::BurstArgs {
                pods,
                clients,
                cap: Duration::from_secs(cap_seconds),
                idle: Duration::from_secs(idle_seconds),
            };
            node_burst::run(&node.server_bin, &node.workload, &args, &node.opts(20)).await
        }
        Command::SchedThroughput { server_bin, nodes, pods, clients, max_seconds, prefill } => {
            sched::run(&server_bin, &nodes, pods, clients, Duration::from_secs(max_seconds), prefill).await
        }
        Command::DeployScale { node, workloads, replicas, cap_seconds, service, only } => {
            if replicas == 0 || replicas > 2000 {
                bail!("--replicas must be positive (at most 2,000: the /21 pod CIDR)");
            }
            if only.as_deref().is_some_and(|o| o != "hello-http" && o != "tcp-echo") {
                bail!("--only takes hello-http or tcp-echo");
            }
            let args = deploy_scale::ScaleArgs { replicas, cap: Duration::from_secs(cap_seconds), service, only };
            deploy_scale::run(&node.server_bin, &workloads, &args, &node.opts(21)).await
        }
        Command::NodeDeath { node, runs, replicas, cap_seconds } => {
            if runs == 0 || replicas == 0 {
                bail!("--runs and --replicas must be positive");
            }
            let args = node_death::DeathArgs { runs, replicas, cap: Duration::from_secs(cap_seconds) };
            node_death::run(&node.server_bin, &node.workload, &args, &node.opts(24)).await
        }
        Command::CtrlRss { server_bin, nodes, pods, deployments, cap_seconds, settle_seconds } => {
            if nodes == 0 || pods == 0 {
                bail!("--nodes and --pods must be positive");
            }
            let args = ctrl_rss::CtrlArgs {
                nodes,
                pods,
                deployments,
                cap: Duration::from_secs(cap_seconds),
                settle: Duration::from_secs(settle_seconds),
            };
            ctrl_rss::run(&server_bin, &args).await
        }
        Command::ProxySync { services, rounds } => proxy_sync::run(&services, rounds),
        Command::Dns { services, clients, seconds } => {
            if services == 0 || clients == 0 || seconds == 0 {
                bail!("--services, --clients and --seconds must be positive");
            }
            dns::run(services, clients, seconds).await
        }
        Command::Authz { roles, decisions } => authz::run(roles, decisions),
        Command::PortForward { node, kubectl, mib, downloads, connections } => {
            if mib == 0 || downloads == 0 || connections == 0 {
                bail!("--mib, --downloads and --connections must be positive");
            }
            let args = port_forward::ForwardArgs { kubectl, mib, downloads, connections };
            port_forward::run(&node.server_bin, &node.workload, &args, &node.opts(24)).await
        }
        Command::Top { node, requests, interval_ms } => {
            if requests == 0 || interval_ms == 0 {
                bail!("--requests and --interval-ms must be positive");
            }
            let args = top::TopArgs { requests, interval: Duration::from_millis(interval_ms) };
            top::run(&node.server_bin, &node.workload, &args, &node.opts(24)).await
        }
        Command::Exec { node, kubectl, runs } => {
            if runs == 0 {
                bail!("--runs must be positive");
            }
            exec::run(&node.server_bin, &node.workload, &exec::ExecArgs { kubectl, runs }, &node.opts(24)).await
        }
        Command::NodeHttp { node, seconds, connections, threads } => {
            if seconds == 0 || connections == 0 || threads == 0 {
                bail!("--seconds, --connections and --threads must be positive");
            }
            let args = node_http::HttpArgs { seconds, connections, threads };
            node_http::run(&node.server_bin, &node.workload, &args, &node.opts(24)).await
        }
        Command::SvcReady { node, rounds, interval_ms } => {
            if rounds == 0 || interval_ms == 0 {
                bail!("--rounds and --interval-ms must be positive");
            }
            let args = svc_ready::ReadyArgs { rounds, interval: Duration::from_millis(interval_ms) };
            svc_ready::run(&node.server_bin, &node.workload, &args, &node.opts(24)).await
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // reqwest is built without a TLS provider of its own; even plain-HTTP clients need one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // On Ctrl-C or SIGTERM the benchmark future is dropped, and with it the process guards.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = run(cli.command) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}
