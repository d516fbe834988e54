//! OCTP game backend.
//!
//! Requests flow one way: an adapter parses and authenticates, a domain service applies the rules,
//! SeaORM entities reach the database. There are two adapters over the same services: the GraphQL
//! schema (`graphql`, served at `/graphql`) and the Nakama-compatible RPC aliases. The domain
//! (`domain`) knows nothing of HTTP or GraphQL; `error` holds the one table mapping domain errors to
//! GraphQL codes, Nakama gRPC codes and HTTP statuses. `app` wires everything from a `config::Config`,
//! so tests and `main` start the very same server. SQLite is the embedded default, PostgreSQL the
//! production backend; migrations (the `migration` crate) run at startup on either.

pub mod app;
pub mod auth;
mod body;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod graphql;
pub mod http;
pub mod playground;
pub mod rpc;

pub use app::{App, build_router};
pub use config::Config;
