//! Ephemeral containers (`kubectl debug`) as the pod worker runs them: each is a container like the
//! others (same runtime choice by image, the pod's network namespace and volumes, stdin/tty), started
//! once when it appears in `spec.ephemeralContainers` and never restarted. `targetContainerName`
//! joins the target's process namespace when the target is a running Linux container; a Wasm target
//! has no processes to share, and the debug container gets its own.

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

/// The pod's ephemeral containers as containers the worker can start, by name, in spec order.
pub fn specs(pod: &Pod) -> Vec<(String, Container)> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .map(|e| (e.name.clone(), as_container(e)))
        .collect()
}

/// The `targetContainerName` of the pod's ephemeral container `name`, if it is one and has one.
pub fn target_of(pod: &Pod, name: &str) -> Option<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .find(|e| e.name == name)
        .and_then(|e| e.target_container_name.clone())
        .filter(|t| !t.is_empty())
}

/// The container an ephemeral container runs as: its common fields; the fields the API server
/// refuses on ephemeral containers (ports, probes, lifecycle, resources) are left out.
pub fn as_container(e: &EphemeralContainer) -> Container {
    Container {
        name: e.name.clone(),
        image: e.image.clone(),
        image_pull_policy: e.image_pull_policy.clone(),
        command: e.command.clone(),
        args: e.args.clone(),
        working_dir: e.working_dir.clone(),
        env: e.env.clone(),
        env_from: e.env_from.clone(),
        volume_mounts: e.volume_mounts.clone(),
        volume_devices: e.volume_devices.clone(),
        security_context: e.security_context.clone(),
        stdin: e.stdin,
        stdin_once: e.stdin_once,
        tty: e.tty,
        termination_message_path: e.termination_message_path.clone(),
        termination_message_policy: e.termination_message_policy.clone(),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_containers_become_containers_without_workload_fields() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "api", "image": "app.wasm"}],
                     "ephemeralContainers": [{"name": "dbg", "image": "busybox", "stdin": true, "tty": true,
                         "targetContainerName": "api", "command": ["sh"],
                         "ports": [{"containerPort": 80}],
                         "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}]}
        }))
        .expect("pod");
        let specs = specs(&pod);
        assert_eq!(specs.len(), 1);
        let (name, c) = &specs[0];
        assert_eq!(name, "dbg");
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!((c.stdin, c.tty), (Some(true), Some(true)));
        assert_eq!(c.command.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(c.volume_mounts.as_ref().map(Vec::len), Some(1));
        assert!(c.ports.is_none());
        let none: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).expect("pod");
        assert!(super::specs(&none).is_empty());
    }
}
