//! `/metrics` in the Prometheus text format: request counts and latency per verb and resource,
//! open watches, and store latency.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub verb: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabel {
    pub operation: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The API server's metrics.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    pub watches: Family<ResourceLabel, Gauge>,
    pub store_latency: Family<StoreOpLabel, Histogram, fn() -> Histogram>,
    /// Audit events queued for the log (`apiserver_audit_event_total`).
    pub audit_events: Counter,
    /// Audit events lost: dropped while the writer was behind, or failed to write.
    pub audit_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let watches = Family::<ResourceLabel, Gauge>::default();
        registry.register("apiserver_request", "Requests by verb, resource and HTTP code", requests.clone());
        registry.register(
            "apiserver_request_duration_seconds",
            "Request latency by verb and resource",
            latency.clone(),
        );
        registry.register("apiserver_registered_watchers", "Open watches by resource", watches.clone());
        let store_latency = Family::<StoreOpLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "skiff_store_operation_duration_seconds",
            "Store latency by operation",
            store_latency.clone(),
        );
        let (audit_events, audit_errors) = (Counter::default(), Counter::default());
        registry.register("apiserver_audit_event", "Audit events generated and sent to the log", audit_events.clone());
        registry.register("apiserver_audit_error", "Audit events lost (dropped or not written)", audit_errors.clone());
        Self { registry, requests, latency, watches, store_latency, audit_events, audit_errors }
    }
}

impl Metrics {
    pub fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { verb: verb.into(), resource: resource.into(), code: code.to_string() })
            .inc();
        if verb != "WATCH" {
            self.latency
                .get_or_create(&LatencyLabels { verb: verb.into(), resource: resource.into() })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Adds `extra` (text exposition of other components) after the API server's own.
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out.push_str(extra);
        out.push_str("# EOF\n");
        out
    }
}
