//! `skiff`: one binary for the control plane and the node agents.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skiff_control::server::{self, Datastore, ServerConfig};

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
        /// `sqlite` (embedded, the default) or `etcd://host:port[,host:port...]`.
        #[arg(long, default_value = "sqlite")]
        datastore: Datastore,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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
        Command::Server { data_dir, listen, datastore } => {
            let running = server::start(ServerConfig { data_dir, listen, datastore, kubelet_token: None })
                .await
                .context("starting the API server")?;
            println!("skiff API server ready at {}; export KUBECONFIG={}", running.url(), running.kubeconfig.display());
            shutdown_signal().await;
            running.shutdown();
        }
    }
    Ok(())
}
