//! The audit log: who did what, as kube-apiserver's log backend writes it. Every API request
//! gets an audit ID (returned as the `Audit-Id` header); with `--audit-log-path` the request is
//! matched against the audit policy ([`policy`]) and written as `audit.k8s.io/v1 Event` JSON
//! lines ([`event`]) by one writer task off the request path ([`writer`]). The HTTP layers that
//! observe requests are in [`layer`]; the authentication filter reports the user, impersonation
//! and authorization decision to it.
//!
//! Data flow: [`layer::audit`] (outermost: ID, source IPs, timestamps, response status) ->
//! `auth::filter` (calls [`layer::RequestAudit::authenticated`], `impersonated`, `authorized`;
//! the policy is evaluated on authentication and `RequestReceived` written) ->
//! [`layer::request_body`] (buffers the body only when the level needs it) -> handlers.
//! Events -> [`writer::Sink`] (bounded channel) -> [`writer::Writer`] (a supervised task).

pub mod event;
pub mod layer;
pub mod policy;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use policy::Policy;

/// The audit flags of `skiff server` (kube-apiserver's names). Off without `log_path`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// `--audit-log-path`: the log file, `-` for stdout.
    pub log_path: Option<PathBuf>,
    /// `--audit-policy-file`: an `audit.k8s.io/v1 Policy`; the built-in
    /// [`policy::DEFAULT_POLICY`] without it.
    pub policy_file: Option<PathBuf>,
    /// `--audit-log-maxsize`: megabytes before the file is rotated (0: 100).
    pub max_size_mb: u64,
    /// `--audit-log-maxbackup`: rotated files kept (0: all).
    pub max_backups: u64,
    /// `--audit-log-maxage`: days rotated files are kept (0: forever).
    pub max_age_days: u64,
}

/// Why the audit log could not be set up (the server does not start).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    Log(#[from] writer::WriteError),
}

/// An auditor and the writer task it feeds (see [`Auditor::from_config`]).
pub type Enabled = (Arc<Auditor>, Arc<writer::Writer>);

/// The policy and the sink events go to; shared by every request.
pub struct Auditor {
    policy: Policy,
    sink: writer::Sink,
}

impl Auditor {
    /// Loads the policy and opens the log as `config` says. `None` when auditing is off; the
    /// returned writer must be run (see [`writer::Writer::run`]). `events` and `errors` count
    /// queued and lost events for `/metrics`.
    pub fn from_config(config: &AuditConfig, events: Counter, errors: Counter) -> Result<Option<Enabled>, AuditError> {
        let Some(path) = &config.log_path else { return Ok(None) };
        let policy = match &config.policy_file {
            Some(file) => Policy::load(file)?,
            None => Policy::default_policy(),
        };
        let target = writer::Target {
            path: path.clone(),
            max_size_mb: config.max_size_mb,
            max_backups: config.max_backups,
            max_age_days: config.max_age_days,
        };
        let (sink, writer) = writer::channel(target, events, errors);
        writer.check()?;
        Ok(Some((Arc::new(Self { policy, sink }), writer)))
    }
}
