//! skiff-control: the API server, its storage, the scheduler and the controllers.
//!
//! Layers, bottom up: [`store`] (etcd data model, SQLite and etcd backends) -> [`api`] (Kubernetes
//! REST machinery over a table of resources) -> [`controllers`] (clients of the API machinery)
//! -> [`server`] (TLS, auth, wiring).

pub mod api;
pub mod audit;
pub mod auth;
pub mod controllers;
#[doc(hidden)]
pub mod fuzzing;
pub mod patch;
pub mod scheduler;
pub mod server;
pub mod store;
