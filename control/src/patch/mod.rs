//! Patch flavours the API server accepts, as pure functions on JSON values.

pub mod apply;
pub mod strategic;
