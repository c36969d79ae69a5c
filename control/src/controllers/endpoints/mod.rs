//! Service endpoints: the `kubernetes` Service's, pointing at the API server.

pub mod kubernetes;
