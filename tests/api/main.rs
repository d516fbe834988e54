//! Integration tests: each spawns the real server on an ephemeral port with a fresh database and
//! talks HTTP to it. The backend is SQLite unless TEST_DATABASE_URL names a PostgreSQL server.

mod helpers;

mod audit;
mod browser;
mod cluster;
mod config;
mod console;
mod db_faults;
mod deploy;
mod durability;
mod events;
mod experiments;
mod foundation;
mod graphql_http;
mod graphql_ws;
mod health;
mod history;
mod hostile;
mod instances;
mod limits;
mod metrics;
mod nakama_js;
mod results;
mod rpc;
mod schema;
mod subscriptions;
mod ws_client;
