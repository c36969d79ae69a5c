//! `skiff server`'s audit log flags, named as kube-apiserver names them.

use std::path::PathBuf;

use clap::Args;

/// The audit log flags (off without `--audit-log-path`).
#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// Write an audit log (`audit.k8s.io/v1` Event JSON lines) to this file; `-` is stdout.
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// The audit policy (`audit.k8s.io/v1` Policy, YAML or JSON). Without it: Metadata for every
    /// request except health checks and node heartbeats (see the README).
    #[arg(long)]
    audit_policy_file: Option<PathBuf>,
    /// Megabytes the audit log may reach before it is rotated (0: 100).
    #[arg(long, default_value_t = 0)]
    audit_log_maxsize: u64,
    /// Rotated audit log files to keep (0: all).
    #[arg(long, default_value_t = 0)]
    audit_log_maxbackup: u64,
    /// Days to keep rotated audit log files (0: forever).
    #[arg(long, default_value_t = 0)]
    audit_log_maxage: u64,
}

impl AuditArgs {
    /// The server's audit configuration.
    pub fn config(&self) -> skiff_control::audit::AuditConfig {
        skiff_control::audit::AuditConfig {
            log_path: self.audit_log_path.clone(),
            policy_file: self.audit_policy_file.clone(),
            max_size_mb: self.audit_log_maxsize,
            max_backups: self.audit_log_maxbackup,
            max_age_days: self.audit_log_maxage,
        }
    }
}
