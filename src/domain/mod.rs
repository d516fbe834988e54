//! Domain services: the rules of the product, free of HTTP and GraphQL. Both adapters call these.

pub mod assignment;
pub mod config;
pub mod events;
pub mod experiments;
pub mod health;
pub mod validate;
