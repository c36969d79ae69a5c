//! skiff node agent
pub mod sandbox;
