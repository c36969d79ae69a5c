//! The CronJob controller (batch/v1): starts a Job for each scheduled time
//! ([`cron_schedule::due`]), honours `concurrencyPolicy`, `startingDeadlineSeconds`, `suspend`
//! and the history limits, reports `active`, `lastScheduleTime` and `lastSuccessfulTime`, and
//! requeues itself for the next scheduled time (it never polls).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

use super::cron_schedule::{self, Schedule};
use super::podutil::{opts, uid};
use super::runtime::{controller_ref, Action, Controller, Error, Informer, Informers, ObjectKey};
use crate::api::error::ApiError;
use crate::api::object;
use crate::api::registry::{DeleteOptions, Registry};

const TASK: &str = "controller-cronjob";
/// The annotation a scheduled Job carries with its scheduled time.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

struct Ctx {
    registry: Arc<Registry>,
    cronjobs: Arc<Informer>,
    jobs: Arc<Informer>,
}

/// Starts the CronJob controller under the informers' supervisor.
pub fn start(informers: &Arc<Informers>) {
    let cronjobs = informers.get("batch", "CronJob");
    let jobs = informers.get("batch", "Job");
    let ctx = Arc::new(Ctx {
        registry: Arc::clone(informers.registry()),
        cronjobs: Arc::clone(&cronjobs),
        jobs: Arc::clone(&jobs),
    });
    let supervisor = informers.supervisor();
    let probe = supervisor.probe(TASK);
    supervisor.spawn(TASK, move || {
        Controller::new(TASK, Arc::clone(&cronjobs)).owns(Arc::clone(&jobs), "CronJob").run(
            Arc::clone(&ctx),
            probe.clone(),
            reconcile,
        )
    });
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn finished_condition(job: &Value) -> Option<&str> {
    job.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")?
        .get("type")?
        .as_str()
}

/// The Job a CronJob starts for `scheduled`: its `jobTemplate`, named
/// `<cronjob>-<minutes since the epoch>`, owned by the CronJob.
pub fn job_for(cronjob: &Value, scheduled: Timestamp) -> Value {
    let template = cronjob.pointer("/spec/jobTemplate").cloned().unwrap_or_else(|| json!({}));
    let mut meta = template.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    meta["name"] = json!(cron_schedule::job_name(object::name(cronjob), scheduled));
    if let Some(ns) = object::namespace(cronjob) {
        meta["namespace"] = json!(ns);
    }
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][SCHEDULED_AT] = json!(rfc3339(scheduled));
    meta["ownerReferences"] = json!([{
        "apiVersion": "batch/v1", "kind": "CronJob", "name": object::name(cronjob), "uid": uid(cronjob),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
           "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))})
}

/// The finished Jobs beyond the history limits, oldest first (defaults: 3 successful, 1 failed).
pub fn beyond_history(cronjob: &Value, jobs: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, field, default) in
        [("Complete", "successfulJobsHistoryLimit", 3), ("Failed", "failedJobsHistoryLimit", 1)]
    {
        let limit = cronjob.pointer(&format!("/spec/{field}")).and_then(Value::as_i64).unwrap_or(default).max(0);
        let mut done: Vec<&&Value> = jobs.iter().filter(|j| finished_condition(j) == Some(kind)).collect();
        done.sort_by_key(|j| {
            (
                object::str_at(j, &["status", "startTime"]).map(str::to_string),
                object::str_at(j, &["metadata", "creationTimestamp"]).map(str::to_string),
                object::name(j).to_string(),
            )
        });
        let extra = done.len().saturating_sub(usize::try_from(limit).unwrap_or(usize::MAX));
        out.extend(done.into_iter().take(extra).map(|j| object::name(j).to_string()));
    }
    out
}

async fn reconcile(key: ObjectKey, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(cj) = ctx.cronjobs.get(&key) else { return Ok(Action::Done) };
    if object::deletion_timestamp(&cj).is_some() {
        return Ok(Action::Done);
    }
    let ns = key.ns();
    let jobs_ri = ctx.registry.resource("batch", "Job")?;
    let owned: Vec<Arc<Value>> = ctx
        .jobs
        .dependents(uid(&cj))
        .into_iter()
        .filter(|j| controller_ref(j).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(uid(&cj)))
        .collect();
    let jobs: Vec<&Value> = owned.iter().map(|j| j.as_ref()).collect();
    let mut active: Vec<&Value> = jobs
        .iter()
        .copied()
        .filter(|j| finished_condition(j).is_none() && object::deletion_timestamp(j).is_none())
        .collect();
    let mut status = cj.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let last_success = jobs
        .iter()
        .filter(|j| finished_condition(j) == Some("Complete"))
        .filter_map(|j| object::str_at(j, &["status", "completionTime"]))
        .max();
    if let Some(t) = last_success {
        status["lastSuccessfulTime"] = json!(t);
    }

    // History.
    let background = DeleteOptions { propagation_policy: Some("Background".into()), ..Default::default() };
    for name in beyond_history(&cj, &jobs) {
        match ctx.registry.delete(jobs_ri, ns, &name, &background).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => tracing::info!(cronjob = %key, job = name, "deleted old job"),
            Err(e) => return Err(e.into()),
        }
    }

    let now = Timestamp::now();
    let mut requeue = None;
    let suspended = cj.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false);
    let schedule = Schedule::new(
        object::str_at(&cj, &["spec", "schedule"]).unwrap_or(""),
        object::str_at(&cj, &["spec", "timeZone"]),
    );
    match (&schedule, suspended) {
        (Err(e), _) => tracing::warn!(cronjob = %key, error = %e, "unparseable schedule"),
        (Ok(_), true) => {}
        (Ok(schedule), false) => {
            let created =
                object::str_at(&cj, &["metadata", "creationTimestamp"]).and_then(|s| s.parse().ok()).unwrap_or(now);
            let last = status["lastScheduleTime"].as_str().and_then(|s| s.parse().ok());
            let deadline = cj.pointer("/spec/startingDeadlineSeconds").and_then(Value::as_i64);
            let due = cron_schedule::due(schedule, created, last, deadline, now);
            if due.missed > cron_schedule::MAX_MISSED {
                tracing::warn!(cronjob = %key, missed = due.missed, "too many missed start times");
            }
            if let Some(t) = due.scheduled.filter(|t| !cron_schedule::past_deadline(*t, deadline, now)) {
                let policy = cj.pointer("/spec/concurrencyPolicy").and_then(Value::as_str).unwrap_or("Allow");
                let start = match policy {
                    "Forbid" if !active.is_empty() => false,
                    "Replace" => {
                        for job in &active {
                            match ctx.registry.delete(jobs_ri, ns, object::name(job), &background).await {
                                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                        active.clear();
                        true
                    }
                    _ => true,
                };
                if start {
                    let job = job_for(&cj, t);
                    let created = match ctx.registry.create(jobs_ri, ns, job, &opts()).await {
                        Ok(w) => Some(w.object),
                        Err(ApiError::AlreadyExists { .. }) => None,
                        Err(e) => return Err(e.into()),
                    };
                    tracing::info!(cronjob = %key, scheduled = %t, "started job");
                    status["lastScheduleTime"] = json!(rfc3339(t));
                    if let Some(job) = created {
                        status_active(&mut status, &active, Some(&job));
                        write_status(&ctx, &key, &cj, status).await?;
                        return Ok(next(due.next, now));
                    }
                }
            }
            requeue = due.next;
        }
    }
    status_active(&mut status, &active, None);
    write_status(&ctx, &key, &cj, status).await?;
    Ok(next(requeue, now))
}

fn next(at: Option<Timestamp>, now: Timestamp) -> Action {
    match at {
        Some(at) => {
            let left = now.duration_until(at);
            let d = if left.is_negative() { Duration::ZERO } else { left.unsigned_abs() };
            Action::RequeueAfter(d + Duration::from_millis(100))
        }
        None => Action::Done,
    }
}

fn status_active(status: &mut Value, active: &[&Value], new: Option<&Value>) {
    let refs: Vec<Value> = active
        .iter()
        .copied()
        .chain(new)
        .map(|j| {
            json!({"apiVersion": "batch/v1", "kind": "Job", "name": object::name(j),
                   "namespace": object::namespace(j).unwrap_or(""), "uid": uid(j),
                   "resourceVersion": object::resource_version(j).unwrap_or("")})
        })
        .collect();
    if refs.is_empty() {
        if let Some(map) = status.as_object_mut() {
            map.remove("active");
        }
    } else {
        status["active"] = json!(refs);
    }
}

async fn write_status(ctx: &Ctx, key: &ObjectKey, cj: &Value, status: Value) -> Result<(), Error> {
    if cj.get("status") == Some(&status) {
        return Ok(());
    }
    let ri = ctx.registry.resource("batch", "CronJob")?;
    // The status is the controller's memory (lastScheduleTime), so it is written only over the
    // version it was computed from: a stale cache must not erase a newer status.
    let seen = object::resource_version(cj).map(str::to_string);
    let result = ctx
        .registry
        .update_with(ri, key.ns(), &key.name, Some("status"), &opts(), |cur| {
            let mut cur = cur.clone();
            cur["status"] = status.clone();
            if let Some(rv) = &seen {
                cur["metadata"]["resourceVersion"] = json!(rv);
            }
            Ok(cur)
        })
        .await;
    match result {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        // The newer version's watch event queues this CronJob again.
        Err(ApiError::Conflict { .. }) => {
            tracing::debug!(cronjob = %key, "status computed from a stale cache; waiting for the newer version");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::WriteOptions;

    #[test]
    fn jobs_are_named_by_scheduled_minute_and_owned() {
        let cj = json!({"metadata": {"name": "tick", "namespace": "ns", "uid": "u"},
            "spec": {"jobTemplate": {"metadata": {"labels": {"a": "b"}}, "spec": {"backoffLimit": 2}}}});
        let t: Timestamp = "2026-12-05T10:01:00Z".parse().expect("ts");
        let job = job_for(&cj, t);
        assert_eq!(job["metadata"]["name"], format!("tick-{}", t.as_second() / 60));
        assert_eq!(job["metadata"]["labels"]["a"], "b");
        assert_eq!(job["metadata"]["annotations"][SCHEDULED_AT], "2026-12-05T10:01:00Z");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(job["spec"]["backoffLimit"], 2);
    }

    #[test]
    fn history_keeps_the_newest() {
        let job = |name: &str, kind: &str, start: &str| {
            json!({"metadata": {"name": name}, "status": {"startTime": start,
                "conditions": [{"type": kind, "status": "True"}]}})
        };
        let jobs = [
            job("s1", "Complete", "2026-01-01T00:01:00Z"),
            job("s2", "Complete", "2026-01-01T00:02:00Z"),
            job("f1", "Failed", "2026-01-01T00:03:00Z"),
            job("f2", "Failed", "2026-01-01T00:04:00Z"),
            json!({"metadata": {"name": "running"}, "status": {}}),
        ];
        let refs: Vec<&Value> = jobs.iter().collect();
        let cj = json!({"spec": {"successfulJobsHistoryLimit": 1}});
        assert_eq!(beyond_history(&cj, &refs), vec!["s1", "f1"]);
        let keep_all = json!({"spec": {"successfulJobsHistoryLimit": 5, "failedJobsHistoryLimit": 5}});
        assert!(beyond_history(&keep_all, &refs).is_empty());
    }

    /// The controller on a real registry: a missed start time under `Forbid` while a Job runs
    /// starts nothing; under `Replace` the running Job goes and the scheduled one starts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forbid_waits_for_the_running_job_and_replace_replaces_it() {
        use crate::controllers::runtime::{testing, Supervisor};
        let (_dir, registry) = testing::registry().await;
        let supervisor = Supervisor::new();
        let informers = Informers::new(Arc::clone(&registry), Arc::clone(&supervisor));
        start(&informers);
        let cj_ri = registry.resource("batch", "CronJob").unwrap_or_else(|e| panic!("{e}"));
        let jobs_ri = registry.resource("batch", "Job").unwrap_or_else(|e| panic!("{e}"));
        let template = json!({"spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "i:1"}]}}}});
        let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
            "spec": {"schedule": "* * * * *", "suspend": true, "concurrencyPolicy": "Forbid", "jobTemplate": template}});
        let cj = registry
            .create(cj_ri, Some("default"), cj, &WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Last started three minutes ago: a start time was missed since.
        let three_ago = rfc3339(Timestamp::now() - jiff::SignedDuration::from_secs(180));
        registry
            .update_with(cj_ri, Some("default"), "tick", Some("status"), &WriteOptions::default(), |cur| {
                let mut next = cur.clone();
                next["status"] = json!({"lastScheduleTime": three_ago});
                Ok(next)
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut running = job_for(&cj.object, "2026-01-01T00:00:00Z".parse().unwrap_or_else(|e| panic!("{e}")));
        running["metadata"]["name"] = json!("tick-running");
        registry
            .create(jobs_ri, Some("default"), running, &WriteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let set = |field: &'static str, value: Value| {
            let registry = Arc::clone(&registry);
            async move {
                registry
                    .update_with(cj_ri, Some("default"), "tick", None, &WriteOptions::default(), |cur| {
                        let mut next = cur.clone();
                        next["spec"][field] = value.clone();
                        Ok(next)
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        };
        let cronjobs = informers.get("batch", "CronJob");
        let jobs = informers.get("batch", "Job");
        let key = ObjectKey::namespaced("default", "tick");
        // The controller decides from its caches: the running Job must be in them before the
        // CronJob is resumed, or Forbid would rightly see nothing running.
        testing::eventually("the running job in the cache", || {
            jobs.get(&ObjectKey::namespaced("default", "tick-running")).is_some()
        })
        .await;
        set("suspend", json!(false)).await;
        // The status lists the running Job once the Forbid decision is made.
        testing::eventually("the running job listed as active", || {
            cronjobs.get(&key).is_some_and(|c| c.pointer("/status/active/0/name") == Some(&json!("tick-running")))
        })
        .await;
        let names = |jobs: &Informer| {
            let mut n: Vec<String> = jobs.list_all().iter().map(|j| object::name(j).to_string()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&jobs), ["tick-running"], "Forbid starts nothing while a job runs");
        assert_eq!(
            cronjobs.get(&key).and_then(|c| c.pointer("/status/lastScheduleTime").cloned()),
            Some(json!(three_ago))
        );

        set("concurrencyPolicy", json!("Replace")).await;
        testing::eventually("the running job replaced by a scheduled one", || {
            let n = names(&jobs);
            n.len() == 1 && n[0] != "tick-running" && n[0].starts_with("tick-")
        })
        .await;
        let started = jobs.list_all().pop().unwrap_or_else(|| panic!("a job"));
        assert!(started.pointer(&format!("/metadata/annotations/{}", SCHEDULED_AT.replace('/', "~1"))).is_some());
        assert_eq!(controller_ref(&started).and_then(|r| r.get("uid")), cj.object.pointer("/metadata/uid"));
        assert!(supervisor.readyz().1.contains("[+]controller-cronjob ok"));
    }
}
