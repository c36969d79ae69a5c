//! The agent's image garbage collection loop: every period, the images named by the pods bound to
//! this node (in any state: a pod on the node may run its containers again) are in use, and the
//! image store collects the others when its filesystem is fuller than the high mark
//! (`image/gc.rs` decides, `ImageStore::collect` removes).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;

use crate::config::AgentConfig;
use crate::image::ImageStore;
use crate::runtime::oci::LazyOci;

/// Collects images every `config.image_gc_period` until the task is aborted; the Linux images
/// collected are deleted from the node's containerd too (when it runs).
pub async fn run(client: kube::Client, config: AgentConfig, images: Arc<ImageStore>, oci: Option<Arc<LazyOci>>) {
    let mut tick = tokio::time::interval(config.image_gc_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let in_use = match images_in_use(&client, &config.node_name).await {
            Ok(in_use) => in_use,
            Err(e) => {
                tracing::warn!(error = %e, "image garbage collection: listing this node's pods");
                continue;
            }
        };
        match images.collect(&in_use, &config.image_gc).await {
            Ok(collected) => {
                if let Some(runtime) = oci.as_ref().and_then(|o| o.started()) {
                    runtime.remove_images(&collected.removed).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "image garbage collection"),
        }
    }
}

/// The images of every container (init, app, ephemeral) of the pods bound to `node`.
async fn images_in_use(client: &kube::Client, node: &str) -> Result<Vec<String>, kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?;
    Ok(list.items.iter().flat_map(pod_images).collect())
}

fn pod_images(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    let containers =
        spec.containers.iter().chain(spec.init_containers.iter().flatten()).filter_map(|c| c.image.clone());
    let ephemeral = spec.ephemeral_containers.iter().flatten().filter_map(|c| c.image.clone());
    containers.chain(ephemeral).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_of_a_pod_names_an_image_in_use() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "image": "init:1"}],
                "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "reg:5000/wasm:2"}],
                "ephemeralContainers": [{"name": "d", "image": "debug"}],
            },
        }))
        .expect("pod");
        let mut images = pod_images(&pod);
        images.sort();
        assert_eq!(images, ["busybox", "debug", "init:1", "reg:5000/wasm:2"]);
        assert!(pod_images(&Pod::default()).is_empty());
    }
}
