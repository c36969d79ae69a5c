//! The Job controller's decision, a pure function of the Job, its pods and the time: which pods
//! to create (and with which completion index), which to delete, which finished pods to stop
//! tracking (their `batch.kubernetes.io/job-tracking` finalizer), the new status and conditions,
//! and when to look again. Counting follows kube-controller-manager: a finished pod is counted
//! once, while it still carries the tracking finalizer, and added to the counts in status.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use crate::api::object;

/// The finalizer that keeps a Job's pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation and label with an Indexed Job pod's index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// Kubernetes' default `backoffLimit`.
const DEFAULT_BACKOFF_LIMIT: i64 = 6;
/// Pod re-creation back-off after failures: 10 s doubling, at most 6 minutes.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// Why a Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// `Complete` or `Failed`.
    pub condition: &'static str,
    pub reason: String,
    pub message: String,
}

/// What the controller does for one Job now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Pods to create: `Some(index)` for an Indexed Job.
    pub create: Vec<Option<i64>>,
    /// Names of pods to delete (extra, or the Job ended or was suspended).
    pub delete: Vec<String>,
    /// Names of finished pods whose tracking finalizer comes off (after the status is written).
    pub untrack: Vec<String>,
    /// The Job's status as it should be.
    pub status: Value,
    /// Delete the Job itself (`ttlSecondsAfterFinished` passed).
    pub delete_job: bool,
    /// Look again after this long (back-off, deadline, TTL).
    pub requeue_after: Option<Duration>,
}

/// A pod as the Job sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodState {
    Active {
        ready: bool,
    },
    Succeeded,
    Failed,
    /// Being deleted before it finished (the Job removed it): neither active nor counted.
    Terminating,
}

fn state(pod: &Value) -> PodState {
    match object::str_at(pod, &["status", "phase"]) {
        Some("Succeeded") => PodState::Succeeded,
        Some("Failed") => PodState::Failed,
        _ if object::deletion_timestamp(pod).is_some() => PodState::Terminating,
        _ => PodState::Active { ready: is_ready(pod) },
    }
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn tracked(pod: &Value) -> bool {
    object::finalizers(pod).iter().any(|f| f == TRACKING_FINALIZER)
}

/// An Indexed Job pod's index.
pub fn pod_index(pod: &Value) -> Option<i64> {
    object::meta(pod)
        .pointer("/annotations/batch.kubernetes.io~1job-completion-index")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn int(job: &Value, ptr: &str) -> Option<i64> {
    job.pointer(ptr).and_then(Value::as_i64)
}

fn has_condition(status: &Value, kind: &str) -> bool {
    status["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

/// Sets condition `kind` in `status`, keeping its transition time when the status is unchanged.
fn set_condition(status: &mut Value, kind: &str, value: &str, reason: &str, message: &str, now: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(list) = status["conditions"].as_array_mut() else { return };
    let new = json!({"type": kind, "status": value, "reason": reason, "message": message,
                     "lastProbeTime": now, "lastTransitionTime": now});
    match list.iter_mut().find(|c| c["type"] == kind) {
        Some(c) if c["status"] == value => {
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        Some(c) => *c = new,
        None => list.push(new),
    }
}

/// Parses Kubernetes' compressed index list (`1,3-5,7`).
pub fn parse_indexes(s: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    // Bounded: a client cannot make us walk a huge range.
                    out.extend((a..=b).take(100_000));
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// Formats indexes as Kubernetes does (`1,3-5,7`).
pub fn format_indexes(set: &BTreeSet<i64>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    parts.join(",")
}

/// What a `podFailurePolicy` rule decides for a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FailureAction {
    FailJob(String),
    Ignore,
    Count,
}

/// The exit codes of a failed pod's terminated containers: `(container name, code)`.
fn exit_codes(pod: &Value) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for list in ["initContainerStatuses", "containerStatuses"] {
        for cs in pod.pointer(&format!("/status/{list}")).and_then(Value::as_array).into_iter().flatten() {
            let term = cs.pointer("/state/terminated").or_else(|| cs.pointer("/lastState/terminated"));
            if let Some(code) = term.and_then(|t| t.get("exitCode")).and_then(Value::as_i64) {
                out.push((cs["name"].as_str().unwrap_or("").to_string(), code));
            }
        }
    }
    out
}

/// Applies `spec.podFailurePolicy` (rules in order; no rule matching counts the failure).
fn failure_action(job: &Value, pod: &Value) -> FailureAction {
    let Some(rules) = job.pointer("/spec/podFailurePolicy/rules").and_then(Value::as_array) else {
        return FailureAction::Count;
    };
    for (i, rule) in rules.iter().enumerate() {
        let matched = if let Some(on) = rule.get("onExitCodes") {
            let container = on.get("containerName").and_then(Value::as_str);
            let values: Vec<i64> = on["values"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
            let within = on["operator"] == "In";
            exit_codes(pod)
                .into_iter()
                .filter(|(name, code)| container.is_none_or(|c| c == name) && *code != 0)
                .find(|(_, code)| values.contains(code) == within)
                .map(|(name, code)| {
                    format!(
                        "Container {name} for pod {}/{} failed with exit code {code} matching {} rule at index {i}",
                        object::namespace(pod).unwrap_or(""),
                        object::name(pod),
                        rule["action"].as_str().unwrap_or("")
                    )
                })
        } else if let Some(on) = rule.get("onPodConditions").and_then(Value::as_array) {
            let conds = pod.pointer("/status/conditions").and_then(Value::as_array);
            on.iter()
                .any(|want| {
                    conds.into_iter().flatten().any(|c| {
                        c["type"] == want["type"] && c["status"] == *want.get("status").unwrap_or(&json!("True"))
                    })
                })
                .then(|| {
                    format!(
                        "Pod {}/{} has condition {} matching {} rule at index {i}",
                        object::namespace(pod).unwrap_or(""),
                        object::name(pod),
                        on.first().and_then(|c| c["type"].as_str()).unwrap_or(""),
                        rule["action"].as_str().unwrap_or("")
                    )
                })
        } else {
            None
        };
        if let Some(message) = matched {
            return match rule["action"].as_str() {
                Some("FailJob") => FailureAction::FailJob(message),
                Some("Ignore") => FailureAction::Ignore,
                _ => FailureAction::Count,
            };
        }
    }
    FailureAction::Count
}

/// The latest time a failed pod's container finished, for the re-creation back-off.
fn last_failure(pods: &[&Value]) -> Option<Timestamp> {
    pods.iter()
        .filter(|p| state(p) == PodState::Failed)
        .flat_map(|p| {
            p.pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.pointer("/state/terminated/finishedAt").and_then(Value::as_str))
                .filter_map(|t| t.parse::<Timestamp>().ok())
                .collect::<Vec<_>>()
        })
        .max()
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let left = now.duration_until(at);
    if left.is_negative() {
        Duration::ZERO
    } else {
        left.unsigned_abs()
    }
}

fn min_requeue(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Decides what to do for `job` given its pods (those it controls) at `now`.
pub fn plan(job: &Value, pods: &[&Value], now: Timestamp) -> Plan {
    let now_s = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut plan = Plan { status: job.get("status").cloned().unwrap_or_else(|| json!({})), ..Default::default() };
    if !plan.status.is_object() {
        plan.status = json!({});
    }
    let indexed = job.pointer("/spec/completionMode").and_then(Value::as_str) == Some("Indexed");
    let completions = int(job, "/spec/completions");
    let parallelism = int(job, "/spec/parallelism").unwrap_or(1).max(0);
    let backoff_limit = int(job, "/spec/backoffLimit").unwrap_or(DEFAULT_BACKOFF_LIMIT);
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false);

    // Count finished pods exactly once (Kubernetes' scheme): a finished pod that still carries
    // the tracking finalizer is first recorded by uid in `uncountedTerminatedPods`, then its
    // finalizer comes off, and once the pod shows no finalizer (or is gone) the uid moves into
    // the counts. A stale view of a pod can then never count it twice.
    let mut succeeded = int(&plan.status, "/succeeded").unwrap_or(0);
    let mut failed = int(&plan.status, "/failed").unwrap_or(0);
    let uids = |kind: &str| -> BTreeSet<String> {
        plan.status
            .pointer(&format!("/uncountedTerminatedPods/{kind}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect()
    };
    let (mut unc_succeeded, mut unc_failed) = (uids("succeeded"), uids("failed"));
    let by_uid = |uid: &str| pods.iter().find(|p| object::str_at(p, &["metadata", "uid"]) == Some(uid));
    for uid in unc_succeeded.clone() {
        if by_uid(&uid).is_none_or(|p| !tracked(p)) {
            unc_succeeded.remove(&uid);
            succeeded = succeeded.saturating_add(1);
        }
    }
    for uid in unc_failed.clone() {
        if by_uid(&uid).is_none_or(|p| !tracked(p)) {
            unc_failed.remove(&uid);
            failed = failed.saturating_add(1);
        }
    }
    let mut completed: BTreeSet<i64> =
        plan.status.get("completedIndexes").and_then(Value::as_str).map(parse_indexes).unwrap_or_default();
    let mut fail_job: Option<String> = None;
    for pod in pods {
        let st = state(pod);
        if st == PodState::Succeeded && indexed {
            if let Some(i) = pod_index(pod) {
                completed.insert(i);
            }
        }
        if !tracked(pod) || matches!(st, PodState::Active { .. }) {
            continue;
        }
        let uid = object::str_at(pod, &["metadata", "uid"]).unwrap_or("").to_string();
        if !unc_succeeded.contains(&uid) && !unc_failed.contains(&uid) {
            match st {
                PodState::Succeeded => _ = unc_succeeded.insert(uid),
                PodState::Failed => match failure_action(job, pod) {
                    FailureAction::Ignore => {}
                    FailureAction::Count => _ = unc_failed.insert(uid),
                    FailureAction::FailJob(msg) => {
                        unc_failed.insert(uid);
                        fail_job.get_or_insert(msg);
                    }
                },
                PodState::Active { .. } | PodState::Terminating => {}
            }
        }
        plan.untrack.push(object::name(pod).to_string());
    }
    let uncounted = unc_succeeded.len() + unc_failed.len();
    let total_succeeded = succeeded.saturating_add(i64::try_from(unc_succeeded.len()).unwrap_or(0));
    let total_failed = failed.saturating_add(i64::try_from(unc_failed.len()).unwrap_or(0));
    let active: Vec<&Value> = pods.iter().copied().filter(|p| matches!(state(p), PodState::Active { .. })).collect();
    let ready = active.iter().filter(|p| state(p) == PodState::Active { ready: true }).count();
    plan.status["succeeded"] = json!(succeeded);
    plan.status["failed"] = json!(failed);
    plan.status["ready"] = json!(ready);
    plan.status["uncountedTerminatedPods"] =
        if uncounted == 0 { json!({}) } else { json!({"succeeded": unc_succeeded, "failed": unc_failed}) };
    if let Some(m) = plan.status["uncountedTerminatedPods"].as_object_mut() {
        m.retain(|_, v| v.as_array().is_some_and(|a| !a.is_empty()));
    }
    if indexed {
        plan.status["completedIndexes"] = json!(format_indexes(&completed));
    }

    let already_finished = has_condition(&plan.status, "Complete") || has_condition(&plan.status, "Failed");
    if already_finished {
        plan.delete = active.iter().map(|p| object::name(p).to_string()).collect();
        plan.status["active"] = json!(0);
        ttl(job, &mut plan, now);
        return plan;
    }

    // Start (or restart after a resume).
    if !suspended && plan.status.get("startTime").is_none_or(Value::is_null) {
        plan.status["startTime"] = json!(now_s);
    }
    let start: Option<Timestamp> = plan.status["startTime"].as_str().and_then(|s| s.parse().ok());

    // Did it end?
    let done = match (indexed, completions) {
        (true, Some(n)) => (0..n.max(0)).all(|i| completed.contains(&i)),
        (false, Some(n)) => total_succeeded >= n,
        (_, None) => total_succeeded > 0 && active.is_empty(),
    };
    let target = |kind: &str| {
        plan.status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind && c["status"] == "True"))
            .map(|c| (c["reason"].as_str().unwrap_or("").to_string(), c["message"].as_str().unwrap_or("").to_string()))
    };
    let finish = if let Some((reason, message)) = target("FailureTarget") {
        Some(Finish { condition: "Failed", reason, message })
    } else if let Some((reason, message)) = target("SuccessCriteriaMet") {
        Some(Finish { condition: "Complete", reason, message })
    } else if let Some(message) = fail_job {
        Some(Finish { condition: "Failed", reason: "PodFailurePolicy".into(), message })
    } else if total_failed > backoff_limit {
        Some(Finish {
            condition: "Failed",
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        })
    } else if done {
        Some(Finish {
            condition: "Complete",
            reason: "CompletionsReached".into(),
            message: "Reached expected number of succeeded pods".into(),
        })
    } else {
        let deadline = int(job, "/spec/activeDeadlineSeconds");
        match (deadline, start, suspended) {
            (Some(secs), Some(start), false) => {
                let end = start.checked_add(SignedDuration::from_secs(secs.max(0))).unwrap_or(start);
                if end <= now {
                    Some(Finish {
                        condition: "Failed",
                        reason: "DeadlineExceeded".into(),
                        message: "Job was active longer than specified deadline".into(),
                    })
                } else {
                    plan.requeue_after = min_requeue(plan.requeue_after, until(now, end));
                    None
                }
            }
            _ => None,
        }
    };
    if let Some(f) = finish {
        let interim = if f.condition == "Failed" { "FailureTarget" } else { "SuccessCriteriaMet" };
        set_condition(&mut plan.status, interim, "True", &f.reason, &f.message, &now_s);
        // The final condition once every finished pod is counted.
        if uncounted == 0 {
            if f.condition == "Complete" {
                plan.status["completionTime"] = json!(now_s);
            }
            set_condition(&mut plan.status, f.condition, "True", &f.reason, &f.message, &now_s);
        }
        plan.delete = active.iter().map(|p| object::name(p).to_string()).collect();
        plan.status["active"] = json!(0);
        plan.status["ready"] = json!(0);
        if uncounted == 0 {
            ttl(job, &mut plan, now);
        }
        return plan;
    }

    if suspended {
        plan.delete = active.iter().map(|p| object::name(p).to_string()).collect();
        plan.status["active"] = json!(0);
        plan.status["ready"] = json!(0);
        plan.status["startTime"] = Value::Null;
        set_condition(&mut plan.status, "Suspended", "True", "JobSuspended", "Job suspended", &now_s);
        return plan;
    }
    if has_condition(&plan.status, "Suspended") {
        set_condition(&mut plan.status, "Suspended", "False", "JobResumed", "Job resumed", &now_s);
    }

    // Pods to have running now.
    plan.status["active"] = json!(active.len());
    let active_n = i64::try_from(active.len()).unwrap_or(i64::MAX);
    let wanted = if indexed {
        parallelism.min(completions.unwrap_or(0).saturating_sub(i64::try_from(completed.len()).unwrap_or(0)))
    } else {
        match completions {
            Some(n) => parallelism.min(n.saturating_sub(total_succeeded)),
            None if total_succeeded > 0 => 0,
            None => parallelism,
        }
    }
    .max(0);
    if active_n > wanted {
        let mut extra: Vec<&Value> = active.clone();
        // Newest, not ready, highest index first.
        extra.sort_by_key(|p| {
            (
                is_ready(p),
                std::cmp::Reverse(pod_index(p)),
                std::cmp::Reverse(object::str_at(p, &["metadata", "creationTimestamp"]).map(str::to_string)),
            )
        });
        let n = usize::try_from(active_n - wanted).unwrap_or(0);
        plan.delete = extra.into_iter().take(n).map(|p| object::name(p).to_string()).collect();
        return plan;
    }
    let missing = usize::try_from(wanted - active_n).unwrap_or(0);
    if missing == 0 {
        return plan;
    }
    // Back off before replacing failed pods: 10 s doubling per failure.
    let failed = total_failed;
    if failed > 0 {
        if let Some(last) = last_failure(pods) {
            let exp = u32::try_from((failed - 1).clamp(0, 16)).unwrap_or(16);
            let delay = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(exp)).min(BACKOFF_MAX);
            let at = last.checked_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::ZERO)).unwrap_or(last);
            if at > now {
                plan.requeue_after = min_requeue(plan.requeue_after, until(now, at));
                return plan;
            }
        }
    }
    if indexed {
        let taken: BTreeSet<i64> = active.iter().filter_map(|p| pod_index(p)).collect();
        plan.create = (0..completions.unwrap_or(0))
            .filter(|i| !completed.contains(i) && !taken.contains(i))
            .take(missing)
            .map(Some)
            .collect();
    } else {
        plan.create = vec![None; missing];
    }
    plan.status["active"] = json!(active.len().saturating_add(plan.create.len()));
    plan
}

/// After a Job finished: delete it once `ttlSecondsAfterFinished` passed, else look again then.
fn ttl(job: &Value, plan: &mut Plan, now: Timestamp) {
    let Some(secs) = int(job, "/spec/ttlSecondsAfterFinished") else { return };
    let finished = plan.status["completionTime"]
        .as_str()
        .or_else(|| {
            plan.status["conditions"].as_array().and_then(|cs| {
                cs.iter().find(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
            })?["lastTransitionTime"]
                .as_str()
        })
        .and_then(|s| s.parse::<Timestamp>().ok())
        .unwrap_or(now);
    let at = finished.checked_add(SignedDuration::from_secs(secs.max(0))).unwrap_or(finished);
    if at <= now {
        plan.delete_job = true;
    } else {
        plan.requeue_after = min_requeue(plan.requeue_after, until(now, at));
    }
}

/// The pod a Job creates: its template with the Job's labels, the tracking finalizer, a
/// controller ownerReference, and for an Indexed Job the index (annotation, label, hostname,
/// `JOB_COMPLETION_INDEX`).
pub fn pod_for(job: &Value, index: Option<i64>) -> Value {
    let name = object::name(job);
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": job.pointer("/spec/template/metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": job.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
    });
    let meta = &mut pod["metadata"];
    meta["namespace"] = json!(object::namespace(job).unwrap_or("default"));
    meta["generateName"] = json!(match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    });
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
    }
    meta["finalizers"] = json!([TRACKING_FINALIZER]);
    meta["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "Job", "name": name,
        "uid": object::str_at(job, &["metadata", "uid"]).unwrap_or(""),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    if let Some(i) = index {
        if !meta["annotations"].is_object() {
            meta["annotations"] = json!({});
        }
        meta["annotations"][INDEX_KEY] = json!(i.to_string());
        if !meta["labels"].is_object() {
            meta["labels"] = json!({});
        }
        meta["labels"][INDEX_KEY] = json!(i.to_string());
        pod["spec"]["hostname"] = json!(format!("{name}-{i}"));
        let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": format!("metadata.annotations['{INDEX_KEY}']")}}});
        for list in ["initContainers", "containers"] {
            for c in pod["spec"][list].as_array_mut().into_iter().flatten() {
                if !c["env"].is_array() {
                    c["env"] = json!([]);
                }
                if let Some(e) = c["env"].as_array_mut() {
                    e.push(env.clone());
                }
            }
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn job(spec: Value) -> Value {
        let mut spec = spec;
        if spec.get("template").is_none() {
            spec["template"] = json!({"metadata": {"labels": {"job-name": "j"}},
                                      "spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}});
        }
        json!({"metadata": {"name": "j", "namespace": "ns", "uid": "u1"}, "spec": spec, "status": {}})
    }

    fn pod(name: &str, phase: &str, tracked: bool) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
                           "status": {"phase": phase}});
        if tracked {
            p["metadata"]["finalizers"] = json!([TRACKING_FINALIZER]);
        }
        p
    }

    fn failed_with(name: &str, code: i64, finished: &str) -> Value {
        let mut p = pod(name, "Failed", true);
        p["status"]["containerStatuses"] =
            json!([{"name": "c", "state": {"terminated": {"exitCode": code, "finishedAt": finished}}}]);
        p
    }

    fn with_status(j: &Value, status: &Value) -> Value {
        let mut j = j.clone();
        j["status"] = status.clone();
        j
    }

    fn untracked(p: &Value) -> Value {
        let mut p = p.clone();
        p["metadata"]["finalizers"] = json!([]);
        p
    }

    const NOW: &str = "2026-12-05T12:00:00Z";

    #[test]
    fn starts_parallelism_pods_then_completes() {
        let j = job(json!({"completions": 3, "parallelism": 2}));
        let p = plan(&j, &[], ts(NOW));
        assert_eq!(p.create, vec![None, None]);
        assert_eq!(p.status["startTime"], NOW);

        // One succeeded (tracked): recorded as uncounted, untracked, one more started.
        let j = with_status(&j, &p.status);
        let (a, b) = (pod("a", "Succeeded", true), pod("b", "Running", true));
        let p = plan(&j, &[&a, &b], ts(NOW));
        assert_eq!(p.status["uncountedTerminatedPods"]["succeeded"], json!(["uid-a"]));
        assert_eq!(p.status["succeeded"], 0);
        assert_eq!(p.untrack, vec!["a"]);
        assert_eq!(p.create, vec![None], "2 more needed, 1 active");
        // A stale view of `a` (finalizer still on) does not count it twice.
        let again = plan(&with_status(&j, &p.status), &[&a, &b], ts(NOW));
        assert_eq!(again.status["uncountedTerminatedPods"]["succeeded"], json!(["uid-a"]));
        assert_eq!(again.status["succeeded"], 0);

        // Once `a` shows no finalizer it moves into the count.
        let j = with_status(&j, &p.status);
        let a = untracked(&a);
        let (b, c) = (pod("b", "Succeeded", true), pod("c", "Succeeded", true));
        let p = plan(&j, &[&a, &b, &c], ts(NOW));
        assert_eq!(p.status["succeeded"], 1);
        assert!(has_condition(&p.status, "SuccessCriteriaMet"));
        assert!(!has_condition(&p.status, "Complete"), "not before every pod is counted");
        let j = with_status(&j, &p.status);
        let p = plan(&j, &[&a, &untracked(&b), &untracked(&c)], ts(NOW));
        assert_eq!(p.status["succeeded"], 3);
        assert!(has_condition(&p.status, "Complete"));
        assert_eq!(p.status["completionTime"], NOW);
        assert!(p.create.is_empty());
        assert_eq!(p.status["uncountedTerminatedPods"], json!({}));
    }

    #[test]
    fn failures_back_off_and_stop_at_the_limit() {
        let j = job(json!({"completions": 1, "parallelism": 1, "backoffLimit": 1}));
        let f1 = failed_with("f1", 1, "2026-12-05T11:59:55Z");
        let p = plan(&j, &[&f1], ts(NOW));
        assert_eq!(p.status["uncountedTerminatedPods"]["failed"], json!(["uid-f1"]));
        assert!(p.create.is_empty(), "back-off: 10 s after the failure");
        assert_eq!(p.requeue_after, Some(Duration::from_secs(5)));
        let p = plan(&with_status(&j, &p.status), &[&untracked(&f1)], ts("2026-12-05T12:00:06Z"));
        assert_eq!(p.status["failed"], 1);
        assert_eq!(p.create, vec![None]);

        let j = with_status(&j, &p.status);
        let f2 = failed_with("f2", 1, NOW);
        let p = plan(&j, &[&untracked(&f1), &f2], ts(NOW));
        assert!(has_condition(&p.status, "FailureTarget"));
        let p = plan(&with_status(&j, &p.status), &[&untracked(&f1), &untracked(&f2)], ts(NOW));
        assert_eq!(p.status["failed"], 2);
        assert!(has_condition(&p.status, "Failed"));
        let c = p.status["conditions"].as_array().expect("conditions").iter().find(|c| c["type"] == "Failed").cloned();
        assert_eq!(c.expect("failed")["reason"], "BackoffLimitExceeded");
        assert!(p.create.is_empty());
    }

    #[test]
    fn pod_failure_policy_fails_ignores_or_counts() {
        let policy = json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
        ]});
        let j = job(json!({"completions": 1, "backoffLimit": 6, "podFailurePolicy": policy}));
        let p = plan(&j, &[&failed_with("x", 3, NOW)], ts(NOW));
        assert_eq!(p.status["uncountedTerminatedPods"], json!({}), "Ignore does not count");
        assert_eq!(p.untrack, vec!["x"]);
        let x = failed_with("x", 42, NOW);
        let p = plan(&j, &[&x], ts(NOW));
        assert!(has_condition(&p.status, "FailureTarget"));
        assert!(p.status.to_string().contains("PodFailurePolicy"));
        assert!(p.status.to_string().contains("exit code 42 matching FailJob rule at index 0"));
        let p = plan(&with_status(&j, &p.status), &[&untracked(&x)], ts(NOW));
        assert!(has_condition(&p.status, "Failed"), "the FailJob decision survives the next reconcile");
        let p = plan(&j, &[&failed_with("x", 7, NOW)], ts(NOW));
        assert_eq!(p.status["uncountedTerminatedPods"]["failed"], json!(["uid-x"]));
        assert!(!has_condition(&p.status, "FailureTarget"));
    }

    #[test]
    fn deadline_suspend_and_ttl() {
        let mut j = job(json!({"completions": 1, "activeDeadlineSeconds": 30}));
        j["status"] = json!({"startTime": "2026-12-05T11:59:00Z"});
        let running = pod("r", "Running", true);
        let p = plan(&j, &[&running], ts(NOW));
        assert!(p.status.to_string().contains("DeadlineExceeded"));
        assert_eq!(p.delete, vec!["r"]);

        j["status"] = json!({"startTime": "2026-12-05T11:59:50Z"});
        let p = plan(&j, &[&running], ts(NOW));
        assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));

        let s = job(json!({"completions": 1, "suspend": true}));
        let p = plan(&s, &[&running], ts(NOW));
        assert_eq!(p.delete, vec!["r"]);
        assert!(has_condition(&p.status, "Suspended"));
        assert!(p.create.is_empty());

        let mut done = job(json!({"completions": 1, "ttlSecondsAfterFinished": 60}));
        done["status"] = json!({"completionTime": "2026-12-05T11:59:30Z",
            "conditions": [{"type": "Complete", "status": "True"}]});
        let p = plan(&done, &[], ts(NOW));
        assert!(!p.delete_job);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));
        assert!(plan(&done, &[], ts("2026-12-05T12:00:31Z")).delete_job);
    }

    #[test]
    fn indexed_jobs_fill_missing_indexes() {
        let j = job(json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed"}));
        let p = plan(&j, &[], ts(NOW));
        assert_eq!(p.create, vec![Some(0), Some(1)]);
        let mut done0 = pod("j-0-x", "Succeeded", true);
        done0["metadata"]["annotations"] = json!({INDEX_KEY: "0"});
        let mut run1 = pod("j-1-x", "Running", true);
        run1["metadata"]["annotations"] = json!({INDEX_KEY: "1"});
        let p = plan(&j, &[&done0, &run1], ts(NOW));
        assert_eq!(p.status["completedIndexes"], "0");
        assert_eq!(p.create, vec![Some(2)]);

        let pod = pod_for(&j, Some(2));
        assert_eq!(pod["metadata"]["generateName"], "j-2-");
        assert_eq!(pod["metadata"]["annotations"][INDEX_KEY], "2");
        assert_eq!(pod["metadata"]["labels"][INDEX_KEY], "2");
        assert_eq!(pod["metadata"]["labels"]["job-name"], "j");
        assert_eq!(pod["spec"]["hostname"], "j-2");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(pod["metadata"]["finalizers"][0], TRACKING_FINALIZER);
        assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "JOB_COMPLETION_INDEX");
    }

    #[test]
    fn index_lists_round_trip() {
        let set = parse_indexes("0,2-4,7");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(parse_indexes("0-999999999").len(), 100_000, "bounded");
    }
}
