//! SeaORM entities for the tables. Storage shapes only: validation lives in the domain and
//! GraphQL types live in the adapter.

pub mod analytics_event;
pub mod audit_entry;
pub mod config_variant;
pub mod config_version;
pub mod experiment_change;
pub mod experiment_metadata;
pub mod user_experiment_assignment;
