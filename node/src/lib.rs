//! skiff node agent
