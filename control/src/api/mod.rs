//! Kubernetes REST machinery, generic over a table of resources.
//!
//! A request flows: [`http`] (routing, query, body) -> [`registry`] (the Kubernetes object rules:
//! admission, optimistic concurrency, finalizers, graceful deletion) -> [`crate::store`]. Watches
//! are served from the [`watch_cache`], never from the store per client.

pub mod admission;
pub mod aggregation;
pub mod conversion;
pub mod crd;
pub mod csr;
pub mod discovery;
pub mod ephemeral_containers;
pub mod error;
pub mod eviction;
pub mod flowcontrol;
pub mod http;
pub mod ingress_validation;
pub mod limit_range;
pub mod metrics;
pub mod names;
pub mod object;
pub mod openapi;
pub mod optimistic;
pub mod pod_security;
pub mod prefix_cache;
pub mod priority_admission;
pub mod quota;
pub mod registry;
pub mod resources;
pub mod selector;
pub mod service_account_admission;
pub mod service_alloc;
pub mod service_network;
pub mod storage_class_admission;
pub mod table;
pub mod watch_cache;
pub mod webhooks;
