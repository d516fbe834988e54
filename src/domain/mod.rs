//! Domain services: the rules of the product, free of HTTP and GraphQL. Both adapters call these.

pub mod config;
pub mod health;
