//! A pod's status from the worker's view of its containers: container states, phase and conditions,
//! by the kubelet's rules.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

/// How a container's run ended (for `state.terminated` and `lastState.terminated`).
#[derive(Clone, Debug, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: String,
}

impl Terminated {
    /// The `terminated` member of a container state as the API has it (after an agent restart).
    pub fn from_status(state: &Value) -> Option<Self> {
        let t = state.get("terminated")?;
        let text = |key: &str| t[key].as_str().unwrap_or_default().to_string();
        Some(Self {
            exit_code: t["exitCode"].as_i64().and_then(|c| i32::try_from(c).ok()).unwrap_or(0),
            reason: text("reason"),
            message: t["message"].as_str().map(str::to_string),
            started_at: text("startedAt"),
            finished_at: text("finishedAt"),
            container_id: text("containerID"),
        })
    }

    fn to_json(&self) -> Value {
        let mut t = json!({"exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started_at,
                           "finishedAt": self.finished_at, "containerID": self.container_id});
        if let Some(m) = &self.message {
            t["message"] = json!(m);
        }
        json!({"terminated": t})
    }
}

/// A container's state now.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: String },
    Terminated(Terminated),
}

/// One entry of `containerStatuses` / `initContainerStatuses`.
#[derive(Clone, Debug)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    /// `stopSignal`: the signal the runtime stops the container with, when one was chosen.
    pub stop_signal: Option<String>,
}

impl ContainerView {
    pub fn to_json(&self) -> Value {
        let state = match &self.state {
            State::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(t) => t.to_json(),
        };
        let mut v = json!({
            "name": self.name, "image": self.image, "imageID": self.image_id, "state": state,
            "lastState": self.last.as_ref().map(Terminated::to_json).unwrap_or_else(|| json!({})),
            "ready": self.ready, "restartCount": self.restart_count, "started": self.started,
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        if let Some(signal) = &self.stop_signal {
            v["stopSignal"] = json!(signal);
        }
        v
    }
}

/// The pod phase from its containers (kubelet's `getPhase`).
pub fn phase(
    restart_policy: &str,
    init: &[ContainerView],
    containers: &[ContainerView],
    init_done: bool,
) -> &'static str {
    if !init_done {
        let failed_for_good = restart_policy == "Never"
            && init.iter().any(|c| matches!(&c.state, State::Terminated(t) if t.exit_code != 0));
        return if failed_for_good { "Failed" } else { "Pending" };
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

/// `status.qosClass` from the containers' requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else { return "BestEffort" };
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    let (mut any, mut guaranteed) = (false, true);
    for c in all {
        let res = c.resources.as_ref();
        let limits = res.and_then(|r| r.limits.clone()).unwrap_or_default();
        let requests = res.and_then(|r| r.requests.clone()).unwrap_or_default();
        any |= !limits.is_empty() || !requests.is_empty();
        for name in ["cpu", "memory"] {
            match (limits.get(name), requests.get(name)) {
                (Some(l), Some(r)) if l != r => guaranteed = false,
                (None, _) => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A pod condition with a stable transition time (kept from the previous status when unchanged).
pub fn condition(previous: Option<&Value>, kind: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = previous
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
    let since = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].as_str().unwrap_or(now).to_string(),
        _ => now.to_string(),
    };
    let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: State, last: Option<Terminated>) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "i".into(),
            image_id: String::new(),
            container_id: None,
            state,
            last,
            restart_count: 0,
            ready: false,
            started: false,
            stop_signal: None,
        }
    }

    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed".into() } else { "Error".into() },
            message: None,
            started_at: "t".into(),
            finished_at: "t".into(),
            container_id: "x".into(),
        }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let waiting = || State::Waiting { reason: "ContainerCreating".into(), message: None };
        let running = State::Running { started_at: "t".into() };
        assert_eq!(phase("Always", &[], &[view(waiting(), None)], true), "Pending");
        assert_eq!(phase("Always", &[], &[view(running.clone(), None)], true), "Running");
        assert_eq!(phase("Never", &[], &[view(State::Terminated(term(0)), None)], true), "Succeeded");
        assert_eq!(phase("Never", &[], &[view(State::Terminated(term(2)), None)], true), "Failed");
        assert_eq!(phase("OnFailure", &[], &[view(State::Terminated(term(0)), None)], true), "Succeeded");
        let backoff = view(State::Waiting { reason: "CrashLoopBackOff".into(), message: None }, Some(term(1)));
        assert_eq!(phase("Always", &[], &[backoff], true), "Running");
        assert_eq!(phase("Never", &[view(State::Terminated(term(1)), None)], &[], false), "Failed");
        assert_eq!(phase("Always", &[view(running, None)], &[], false), "Pending");
    }
}
