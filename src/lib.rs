//! OCTP game backend.
//!
//! Requests flow one way: an adapter parses and authenticates, a domain service applies the rules,
//! SeaORM entities reach the database. Two adapters sit over the same services and never import
//! each other: the GraphQL schema (`graphql`, at `/graphql`) and the Nakama-compatible RPC aliases
//! (`rpc`, at `/v2/rpc/{id}`); each owns its router, and `http` only merges them and adds layers.
//! What both need lives below them: keys and roles (`auth`), the domain error and its one code table
//! (`error`), request bodies (`body`), and the `domain`, which knows nothing of HTTP or GraphQL and
//! holds every rule once (validated ids, the admin rule, caches and their invalidation). `app` wires
//! everything from a `config::Config`, so tests and `main` start the very same server.

pub mod app;
pub mod assets;
pub mod auth;
mod body;
pub mod config;
pub mod console;
pub mod db;
pub mod domain;
pub mod error;
pub mod graphql;
pub mod http;
pub mod playground;
pub mod rpc;
pub mod telemetry;

pub use app::{App, Routers, build_router};
pub use config::Config;
