//! skiff node agent
pub mod image;
pub mod kubelet_server;
pub mod logs;
pub mod sandbox;
