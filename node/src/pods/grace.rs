//! How long a container gets to stop, as the kubelet computes it: the pod's deletion grace period when it
//! is being deleted, else the container's probe override (a liveness or startup kill) or the pod's
//! `terminationGracePeriodSeconds`, else 30 s. A preStop hook and SIGTERM share that budget: the hook runs
//! for at most the whole period, and what is left (never less than [`MIN_AFTER_HOOK`]) is the time
//! between SIGTERM and SIGKILL. All arithmetic is on client values: checked and saturating.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// The grace period when the pod names none (the API server's default).
pub const DEFAULT_SECONDS: i64 = 30;
/// What a container always gets between SIGTERM and SIGKILL after a preStop hook (the kubelet's
/// `minimumGracePeriodInSeconds`).
pub const MIN_AFTER_HOOK: Duration = Duration::from_secs(2);

/// The pod's grace period in seconds (never negative): `deletionGracePeriodSeconds` while deleting,
/// else `probe_override` (a probe's `terminationGracePeriodSeconds`), else the spec's
/// `terminationGracePeriodSeconds`, else 30.
pub fn seconds(pod: &Pod, probe_override: Option<i64>) -> i64 {
    let spec = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds);
    pod.metadata
        .deletion_grace_period_seconds
        .filter(|_| pod.metadata.deletion_timestamp.is_some())
        .or(probe_override)
        .or(spec)
        .unwrap_or(DEFAULT_SECONDS)
        .max(0)
}

/// A grace period of `seconds` as a duration (negative values are zero).
pub fn duration(seconds: i64) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The time between SIGTERM and SIGKILL when a preStop hook used `used` of a `grace` period: the rest
/// of the period, at least [`MIN_AFTER_HOOK`]. Without a hook (`used` is `None`) the whole period,
/// however short.
pub fn after_hook(grace: Duration, used: Option<Duration>) -> Duration {
    match used {
        None => grace,
        Some(used) => grace.saturating_sub(used).max(MIN_AFTER_HOOK),
    }
}

/// How long the pod worker waits for its containers to end after asking them to stop with `grace`:
/// the hook's share and SIGTERM's share, the minimum after a hook, and `slack` for SIGKILL to land.
pub fn wait_bound(grace: Duration, slack: Duration) -> Duration {
    grace.saturating_add(MIN_AFTER_HOOK).saturating_add(slack)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn pod(spec: Option<i64>, deletion: Option<i64>) -> Pod {
        let mut pod = Pod {
            spec: Some(PodSpec { termination_grace_period_seconds: spec, ..PodSpec::default() }),
            ..Pod::default()
        };
        if let Some(d) = deletion {
            pod.metadata.deletion_grace_period_seconds = Some(d);
            pod.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        }
        pod
    }

    #[test]
    fn the_period_comes_from_deletion_then_probe_then_spec_then_default() {
        assert_eq!(seconds(&Pod::default(), None), 30);
        assert_eq!(seconds(&pod(Some(7), None), None), 7);
        assert_eq!(seconds(&pod(Some(7), None), Some(3)), 3);
        assert_eq!(seconds(&pod(Some(7), Some(2)), Some(3)), 2);
        assert_eq!(seconds(&pod(Some(7), Some(0)), None), 0);
        assert_eq!(seconds(&pod(Some(-5), None), None), 0);
        // A deletion grace without a deletion timestamp is not a deletion.
        let mut p = pod(Some(7), None);
        p.metadata.deletion_grace_period_seconds = Some(1);
        assert_eq!(seconds(&p, None), 7);
    }

    #[test]
    fn a_prestop_hook_and_sigterm_share_the_budget() {
        let s = Duration::from_secs;
        assert_eq!(after_hook(s(30), None), s(30));
        assert_eq!(after_hook(s(0), None), s(0));
        assert_eq!(after_hook(s(30), Some(s(10))), s(20));
        assert_eq!(after_hook(s(30), Some(s(29))), MIN_AFTER_HOOK);
        assert_eq!(after_hook(s(30), Some(s(300))), MIN_AFTER_HOOK);
        assert_eq!(after_hook(s(1), Some(Duration::ZERO)), MIN_AFTER_HOOK);
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(duration(i64::MAX), Duration::from_secs(i64::MAX as u64));
        assert_eq!(duration(-1), Duration::ZERO);
        assert_eq!(wait_bound(Duration::MAX, Duration::from_secs(5)), Duration::MAX);
        assert_eq!(after_hook(Duration::MAX, Some(Duration::from_secs(1))), Duration::MAX - Duration::from_secs(1));
        assert_eq!(seconds(&pod(Some(i64::MAX), Some(i64::MIN)), None), 0);
        assert_eq!(seconds(&pod(Some(i64::MAX), None), None), i64::MAX);
    }
}
