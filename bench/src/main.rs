//! `skiff-bench`: the benchmark harness behind docs/benchmarks.md.
//!
//! Each subcommand starts its own fresh `skiff server` (and etcd, for that backend) in a temporary
//! directory, drives it over HTTPS like any Kubernetes client, prints a Markdown table on stdout
//! (progress goes to stderr), and kills what it started when it finishes, fails or is interrupted.
//! Figures, never pass/fail assertions: the verdicts live in docs/benchmarks.md.

mod cluster;
mod containerd;
mod create;
mod list;
mod rss;
mod shim_mem;
mod shim_run;
mod stats;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use cluster::Backend;

#[derive(Parser)]
#[command(name = "skiff-bench", about = "Benchmarks of the skiff API server; prints Markdown tables")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::enum_variant_names)] // api-create, api-watch...: other components' benchmarks may follow
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
    },
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::ApiCreate { server_bin, datastore, clients, count, max_seconds } => {
            if clients.contains(&0) || count == 0 {
                bail!("--clients and --count must be positive");
            }
            create::run(&server_bin, datastore, &clients, count, Duration::from_secs(max_seconds)).await
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
        Command::ApiRss { server_bin, datastore, pods, watchers, max_seconds } => {
            rss::run(&server_bin, datastore, pods, watchers, Duration::from_secs(max_seconds)).await
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
