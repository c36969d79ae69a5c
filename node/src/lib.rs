//! skiff node agent
pub mod image;
