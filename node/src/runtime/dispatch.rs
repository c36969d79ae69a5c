//! The runtime the pod worker holds: each container goes to the runtime its image needs. Wasm artifacts
//! and `wasi/wasm` images run on the node's Wasm runtime (in-process or through the shim); Linux images on
//! the OCI runtime (runc through containerd), when the node has containerd. A pod's context holds one per
//! runtime over the same sandbox, so a pod can mix both: one network namespace and IP, the same volumes.

use std::sync::Arc;
use std::time::Duration;

use super::oci::image_import::ImportError;
use super::oci::{LazyOci, OciPod, OciRuntime};
use super::{ContainerRuntime, ExecOutput, ImageReady, Launch, PodContext, RuntimeError, Started};
use crate::image::{ImageError, ImageKind, ImageStore, PullPolicy, RegistryAuth};
use crate::sandbox::Sandbox;

/// Wasm runtime + optional OCI runtime, over one image store.
pub struct Dispatch {
    wasm: Arc<dyn ContainerRuntime>,
    oci: Option<Arc<LazyOci>>,
    images: Arc<ImageStore>,
}

/// A pod's contexts in both runtimes.
struct MixedPod {
    wasm: Arc<dyn PodContext>,
    oci: Option<Arc<dyn PodContext>>,
}

impl PodContext for MixedPod {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Dispatch {
    /// `oci` is `None` on a node without containerd: Linux images are then refused.
    pub fn new(wasm: Arc<dyn ContainerRuntime>, oci: Option<Arc<LazyOci>>, images: Arc<ImageStore>) -> Self {
        Self { wasm, oci, images }
    }

    /// Whether this node runs Linux containers.
    pub fn runs_linux(&self) -> bool {
        self.oci.is_some()
    }

    fn kind(&self, reference: &str) -> ImageKind {
        self.images.cached(reference).map_or(ImageKind::Wasm, |i| i.kind)
    }

    /// The OCI runtime (connected, containerd started if it is the agent's own) and the pod's context in it.
    async fn linux<'a>(
        &'a self,
        pod: &'a MixedPod,
        image: &str,
    ) -> Result<(&'a Arc<OciRuntime>, &'a Arc<dyn PodContext>), RuntimeError> {
        match (&self.oci, &pod.oci) {
            (Some(lazy), Some(ctx)) => Ok((lazy.get().await?, ctx)),
            _ => Err(no_linux(image)),
        }
    }
}

fn no_linux(reference: &str) -> RuntimeError {
    RuntimeError::Image(ImageError::NotWasm {
        reference: reference.to_string(),
        detail: "it is a Linux image, and this node runs Linux containers only with containerd (none was found)"
            .to_string(),
    })
}

fn mixed(pod: &Arc<dyn PodContext>) -> Result<&MixedPod, RuntimeError> {
    pod.as_any().downcast_ref::<MixedPod>().ok_or_else(|| RuntimeError::Other("not a pod context of this node".into()))
}

#[async_trait::async_trait]
impl ContainerRuntime for Dispatch {
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        auths: &[RegistryAuth],
    ) -> Result<ImageReady, RuntimeError> {
        let pulled = self.images.ensure(image, policy, auths.first()).await?;
        let ready = ImageReady { image_id: pulled.image.image_id.clone(), pulled: pulled.pulled };
        if pulled.image.kind == ImageKind::Linux {
            // Starting the node's containerd (first Linux container) overlaps nothing else: do it here.
            let Some(lazy) = &self.oci else { return Err(no_linux(image)) };
            let oci = lazy.get().await?;
            return match oci.import(&pulled.image).await {
                Ok(_) => Ok(ready),
                // containerd lost a blob the node's cache no longer keeps: pull the image again.
                Err(ImportError::MissingBlob { .. }) => {
                    tracing::info!(image, "containerd lacks layers of the image: pulling it again");
                    self.images.forget(image).await?;
                    let again = self.images.ensure(image, policy, auths.first()).await?;
                    oci.import(&again.image).await?;
                    Ok(ImageReady { image_id: again.image.image_id.clone(), pulled: true })
                }
                Err(e) => Err(e.into()),
            };
        }
        // The Wasm runtime prepares the program (compiles it); the image is on the node by now.
        self.wasm.ensure_image(image, PullPolicy::IfNotPresent, auths).await?;
        Ok(ready)
    }

    async fn pod_context(&self, pod_uid: &str, sandbox: &Sandbox) -> Result<Arc<dyn PodContext>, RuntimeError> {
        let wasm = self.wasm.pod_context(pod_uid, sandbox).await?;
        let oci = self.oci.as_ref().map(|_| Arc::new(OciPod::new(pod_uid, sandbox)) as Arc<dyn PodContext>);
        Ok(Arc::new(MixedPod { wasm, oci }))
    }

    async fn start(&self, pod: &Arc<dyn PodContext>, launch: Launch) -> Result<Started, RuntimeError> {
        let pod = mixed(pod)?;
        match self.kind(&launch.image) {
            ImageKind::Linux => {
                let (rt, ctx) = self.linux(pod, &launch.image).await?;
                rt.start(ctx, launch).await
            }
            ImageKind::Wasm => self.wasm.start(&pod.wasm, launch).await,
        }
    }

    async fn exec(
        &self,
        pod: &Arc<dyn PodContext>,
        launch: &Launch,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let pod = mixed(pod)?;
        match self.kind(&launch.image) {
            ImageKind::Linux => {
                let (rt, ctx) = self.linux(pod, &launch.image).await?;
                rt.exec(ctx, launch, command, timeout).await
            }
            ImageKind::Wasm => self.wasm.exec(&pod.wasm, launch, command, timeout).await,
        }
    }

    fn guest_world(&self, launch: &Launch) -> Option<super::GuestWorld> {
        match self.kind(&launch.image) {
            ImageKind::Wasm => self.wasm.guest_world(launch),
            ImageKind::Linux => None,
        }
    }

    fn attach_stdin(&self, launch: &Launch) -> Option<super::GuestStdin> {
        match self.kind(&launch.image) {
            ImageKind::Wasm => self.wasm.attach_stdin(launch),
            ImageKind::Linux => None,
        }
    }

    async fn exec_streaming(
        &self,
        pod: &Arc<dyn PodContext>,
        launch: &Launch,
        command: &[String],
        io: super::StreamIo,
    ) -> Result<tokio::sync::oneshot::Receiver<i32>, RuntimeError> {
        match self.kind(&launch.image) {
            ImageKind::Wasm => self.wasm.exec_streaming(&mixed(pod)?.wasm, launch, command, io).await,
            ImageKind::Linux => Err(RuntimeError::Other("a Linux container's exec goes through containerd".into())),
        }
    }

    fn runs_exec_hooks(&self, image: &str) -> bool {
        self.kind(image) == ImageKind::Linux && self.oci.is_some()
    }

    fn compiles(&self) -> u64 {
        self.wasm.compiles()
    }

    fn guests(&self) -> Vec<super::GuestUsage> {
        self.wasm.guests()
    }
}
