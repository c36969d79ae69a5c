//! skiff node agent
pub mod kubelet_server;
pub mod logs;
