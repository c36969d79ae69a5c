//! Volume binding, the part of kube-scheduler's VolumeBinding plugin skiff needs: a pod's
//! PersistentVolumeClaims must exist; a bound claim's volume pins the pod to the nodes its
//! `nodeAffinity` allows; an unbound claim of a `WaitForFirstConsumer` class is bound where the
//! pod goes (the scheduler marks it `volume.kubernetes.io/selected-node` before the bind, and the
//! provisioner makes its volume there); an unbound claim of any other class keeps the pod
//! Pending. Pure: the claims, volumes and classes come from the caller's informers.

use std::sync::Arc;

use k8s_openapi::api::core::v1::NodeSelectorTerm;
use serde_json::{json, Value};

use super::filters::term_matches;
use super::fit::NodeState;
use super::pod_info::PodInfo;
use crate::api::object;

/// The annotation that tells the provisioner which node a claim's first pod went to.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// What a pod's claims require of its node.
#[derive(Debug, Default)]
pub struct VolumePlan {
    /// Per bound (or already placed) claim, the node selector terms of which one must match.
    pub terms: Vec<Vec<NodeSelectorTerm>>,
    /// Unbound `WaitForFirstConsumer` claims to mark with the chosen node.
    pub to_select: Vec<String>,
}

impl VolumePlan {
    /// Whether every claim can be used on `node`.
    pub fn fits(&self, node: &NodeState) -> bool {
        self.terms.iter().all(|any| any.iter().any(|t| term_matches(t, node)))
    }
}

fn terms_of(affinity: Option<&Value>) -> Vec<NodeSelectorTerm> {
    affinity
        .and_then(|a| a.pointer("/required/nodeSelectorTerms"))
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default()
}

/// The plan for `pod`'s claims, or why no node can take it (kube-scheduler's wording).
pub fn plan(
    pod: &PodInfo,
    claim: impl Fn(&str) -> Option<Arc<Value>>,
    volume: impl Fn(&str) -> Option<Arc<Value>>,
    class: impl Fn(&str) -> Option<Arc<Value>>,
) -> Result<VolumePlan, String> {
    let mut out = VolumePlan::default();
    let mut unbound_immediate = false;
    for name in &pod.claims {
        let Some(c) = claim(name) else { return Err(format!("persistentvolumeclaim \"{name}\" not found")) };
        if object::deletion_timestamp(&c).is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        if let Some(bound_to) = object::str_at(&c, &["spec", "volumeName"]).filter(|v| !v.is_empty()) {
            let Some(pv) = volume(bound_to) else { return Err("pvc(s) bound to non-existent pv(s)".into()) };
            let terms = terms_of(pv.pointer("/spec/nodeAffinity"));
            if !terms.is_empty() {
                out.terms.push(terms);
            }
            continue;
        }
        let class_name = object::str_at(&c, &["spec", "storageClassName"]).unwrap_or_default();
        let waits = class(class_name)
            .is_some_and(|k| object::str_at(&k, &["volumeBindingMode"]) == Some("WaitForFirstConsumer"));
        if !waits {
            unbound_immediate = true;
            continue;
        }
        let selected = c.pointer("/metadata/annotations").and_then(|a| a.get(SELECTED_NODE)).and_then(Value::as_str);
        match selected {
            // Placed by an earlier attempt: its volume is (being) made there.
            Some(node) => out.terms.push(terms_of(Some(&json!({"required": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]}})))),
            None => out.to_select.push(name.clone()),
        }
    }
    if unbound_immediate {
        return Err("pod has unbound immediate PersistentVolumeClaims".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn pod(claims: &[&str]) -> PodInfo {
        PodInfo { claims: claims.iter().map(|c| c.to_string()).collect(), ..Default::default() }
    }

    fn node(name: &str) -> NodeState {
        let labels = json!({"kubernetes.io/hostname": name}).as_object().cloned().unwrap_or_default();
        NodeState { name: name.into(), labels, ..Default::default() }
    }

    struct World(HashMap<String, Arc<Value>>);

    impl World {
        fn new(objs: &[(&str, Value)]) -> Self {
            Self(objs.iter().map(|(k, v)| (k.to_string(), Arc::new(v.clone()))).collect())
        }
        fn plan(&self, p: &PodInfo) -> Result<VolumePlan, String> {
            plan(
                p,
                |n| self.0.get(&format!("pvc/{n}")).cloned(),
                |n| self.0.get(&format!("pv/{n}")).cloned(),
                |n| self.0.get(&format!("sc/{n}")).cloned(),
            )
        }
    }

    fn world() -> World {
        World::new(&[
            ("sc/local-path", json!({"volumeBindingMode": "WaitForFirstConsumer"})),
            ("sc/fast", json!({"volumeBindingMode": "Immediate"})),
            ("pvc/bound", json!({"spec": {"volumeName": "pv1"}})),
            (
                "pv/pv1",
                json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}),
            ),
            ("pvc/waiting", json!({"spec": {"storageClassName": "local-path"}})),
            (
                "pvc/placed",
                json!({"metadata": {"annotations": {SELECTED_NODE: "n1"}},
                                  "spec": {"storageClassName": "local-path"}}),
            ),
            ("pvc/immediate", json!({"spec": {"storageClassName": "fast"}})),
            ("pvc/dangling", json!({"spec": {"volumeName": "gone"}})),
        ])
    }

    #[test]
    fn bound_volumes_pin_the_pod_and_waiting_claims_follow_it() {
        let w = world();
        let p = w.plan(&pod(&["bound", "waiting"])).expect("schedulable");
        assert!(p.fits(&node("n2")) && !p.fits(&node("n1")));
        assert_eq!(p.to_select, ["waiting"]);
        let placed = w.plan(&pod(&["placed"])).expect("schedulable");
        assert!(placed.fits(&node("n1")) && !placed.fits(&node("n2")) && placed.to_select.is_empty());
        assert!(w.plan(&pod(&[])).expect("no claims").fits(&node("n3")));
    }

    #[test]
    fn claims_that_cannot_be_used_keep_the_pod_pending_with_the_reason() {
        let w = world();
        assert_eq!(w.plan(&pod(&["nope"])).err().as_deref(), Some("persistentvolumeclaim \"nope\" not found"));
        assert_eq!(
            w.plan(&pod(&["immediate"])).err().as_deref(),
            Some("pod has unbound immediate PersistentVolumeClaims")
        );
        assert_eq!(w.plan(&pod(&["dangling"])).err().as_deref(), Some("pvc(s) bound to non-existent pv(s)"));
    }
}
