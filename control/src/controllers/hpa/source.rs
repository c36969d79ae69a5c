//! Where the HPA controller reads pod usage: the same in-process source `metrics.k8s.io/v1beta1`
//! serves from ([`Scraper`], two readings of each kubelet's `/stats/summary`), never HTTP to
//! the API server itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::decide::{ContainerUsage, PodUsage};
use crate::api::http::metrics_api::scrape::Scraper;
use crate::api::http::pod_logs::KubeletClient;
use crate::api::registry::Registry;

/// Pod usage of one namespace: pod name -> usage; `Err` with a message when unavailable.
#[async_trait::async_trait]
pub trait MetricsSource: Send + Sync {
    async fn pod_usage(&self, namespace: &str) -> Result<BTreeMap<String, PodUsage>, String>;
}

/// The resource metrics API's own scraper.
pub struct ScrapedMetrics {
    pub scraper: Arc<Scraper>,
    pub registry: Arc<Registry>,
    pub kubelet: Arc<KubeletClient>,
}

/// Nanocores as millicores, rounded up as a quantity's `MilliValue` is.
fn millicores(nano: u64) -> i128 {
    i128::from(nano).saturating_add(999_999) / 1_000_000
}

#[async_trait::async_trait]
impl MetricsSource for ScrapedMetrics {
    async fn pod_usage(&self, namespace: &str) -> Result<BTreeMap<String, PodUsage>, String> {
        let snapshot = self.scraper.snapshot(&self.registry, &self.kubelet).await.map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for ((ns, pod), containers) in snapshot.pods {
            if ns != namespace {
                continue;
            }
            let Some((_, first)) = containers.first() else { continue };
            let (timestamp, window) = (first.timestamp, first.window);
            let containers = containers
                .iter()
                .map(|(name, u)| ContainerUsage {
                    name: name.clone(),
                    cpu: millicores(u.cpu_nano_cores),
                    memory: i128::from(u.memory_bytes).saturating_mul(1000),
                })
                .collect();
            out.insert(pod, PodUsage { containers, timestamp, window });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nanocores_round_up_to_millicores() {
        assert_eq!((super::millicores(0), super::millicores(1), super::millicores(2_000_000)), (0, 1, 2));
    }
}
