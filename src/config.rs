//! Runtime configuration: one clap tree, every setting a `--flag` with an `OCTP_*` environment
//! fallback. Nothing else in the crate reads the environment.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// The http key Nakama ships with; kept as our default so legacy clients work out of the box.
pub const DEFAULT_HTTP_KEY: &str = "defaulthttpkey";
pub const DEFAULT_ADMIN_KEY: &str = "defaultadminkey";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/octp.db";
/// Nakama's HTTP port, so game builds pointed at Nakama need no change.
pub const DEFAULT_BIND: &str = "127.0.0.1:7350";
/// The contract's limit on any request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "octp-backend",
    version,
    about = "OCTP game backend: analytics, remote config and A/B experiments"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations and serve HTTP (the default).
    Serve,
    /// Show or change the database schema version.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Exit 0 if the server answers `/readyz` with 200 (for a Docker HEALTHCHECK), else 1.
    Healthcheck {
        /// The readiness URL; by default `/readyz` on the port of `--bind`, on 127.0.0.1.
        // An id of its own: `url` is already the database URL's.
        #[arg(long = "url", id = "readiness_url")]
        url: Option<String>,
    },
    /// Work on the events store named by --events-url.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Print the GraphQL schema (SDL) that clients are generated from.
    ExportSchema {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum EventsAction {
    /// Copy every assignment of the main database to ClickHouse, for results computed there
    /// (assignments made while ClickHouse was unreachable, or before --events-url was set).
    /// Safe to run again: copies of one assignment fold into one.
    Backfill,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// List every migration and whether it is applied.
    Status,
    /// Apply pending migrations (all of them unless --steps is given).
    Up {
        #[arg(long)]
        steps: Option<u32>,
    },
    /// Roll back applied migrations, newest first.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub server: ServerConfig,
    #[command(flatten)]
    pub keys: KeyConfig,
    #[command(flatten)]
    pub cache: CacheConfig,
    #[command(flatten)]
    pub history: HistoryConfig,
    #[command(flatten)]
    pub log: LogConfig,
}

#[derive(Clone, Args)]
pub struct DatabaseConfig {
    /// Database URL: `sqlite://path/to/file.db` (created when missing) or `postgres://user@host/db`.
    #[arg(long = "database-url", env = "OCTP_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    pub url: String,
    /// Largest number of pooled database connections (default: 16 on PostgreSQL, 8 on SQLite).
    #[arg(
        long = "db-max-connections",
        env = "OCTP_DB_MAX_CONNECTIONS",
        global = true
    )]
    pub max_connections: Option<u32>,
    /// Seconds to wait for a database connection before a request fails with SERVICE_UNAVAILABLE.
    #[arg(
        long = "db-acquire-timeout-secs",
        env = "OCTP_DB_ACQUIRE_TIMEOUT_SECS",
        default_value_t = 3,
        global = true
    )]
    pub acquire_timeout_secs: u64,
    /// PostgreSQL parallel workers per experiment-results query (default: the server's own
    /// `max_parallel_workers_per_gather`). Where PostgreSQL has few cores, fewer workers than
    /// PostgreSQL's default of 2 finish sooner: on 2 cores, 1 was about 25 % faster.
    #[arg(
        long = "analysis-parallel-workers",
        env = "OCTP_ANALYSIS_PARALLEL_WORKERS",
        global = true
    )]
    pub analysis_parallel_workers: Option<u32>,
    /// Where analytics events are stored: `clickhouse://[user[:password]@]host:port/database`
    /// (ClickHouse's HTTP interface; the database and table are created when missing). Unset:
    /// events stay in the main database.
    #[arg(
        long = "events-url",
        env = "OCTP_EVENTS_URL",
        global = true,
        hide_env_values = true
    )]
    pub events_url: Option<String>,
    /// The ClickHouse cluster (a name from the servers' `remote_servers`) to spread events over:
    /// tables are made on every shard with `ON CLUSTER` DDL (ZooKeeper), behind `Distributed`
    /// tables sharded by user. Unset: one ClickHouse server.
    #[arg(
        long = "events-cluster",
        env = "OCTP_EVENTS_CLUSTER",
        global = true,
        requires = "events_url"
    )]
    pub events_cluster: Option<String>,
}

/// The URL's password never reaches logs, even through `{:?}`.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .field("analysis_parallel_workers", &self.analysis_parallel_workers)
            .field(
                "events_url",
                &self.events_url.as_deref().map(redact_password),
            )
            .field("events_cluster", &self.events_cluster)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:<redacted>@host/db`; other URLs unchanged.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:<redacted>@{host}{path}"),
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Refuse GraphQL introspection (and do not publish /playground/schema.json).
    #[arg(
        long = "disable-introspection",
        env = "OCTP_DISABLE_INTROSPECTION",
        global = true
    )]
    pub disable_introspection: bool,
    /// Address and port to listen on.
    #[arg(long, env = "OCTP_BIND", default_value = DEFAULT_BIND, global = true)]
    pub bind: SocketAddr,
    /// Seconds a request may take before it is answered with 408.
    #[arg(
        long = "request-timeout-secs",
        env = "OCTP_REQUEST_TIMEOUT_SECS",
        default_value_t = 30,
        global = true
    )]
    pub request_timeout_secs: u64,
    /// Seconds a client may take to send a request's headers (and an idle connection may stay
    /// open) before the connection is closed; slow or stalled clients cannot pile up.
    #[arg(
        long = "header-read-timeout-secs",
        env = "OCTP_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub header_read_timeout_secs: u64,
    /// Most client connections open at once; further clients wait to be accepted.
    #[arg(
        long = "max-client-connections",
        env = "OCTP_MAX_CLIENT_CONNECTIONS",
        default_value_t = 10_000,
        global = true
    )]
    pub max_client_connections: usize,
    /// Serve `/metrics` on this address only (e.g. `127.0.0.1:9464`, reachable by Prometheus but
    /// not by players); unset, `/metrics` is served on `--bind` with the API.
    #[arg(long = "metrics-bind", env = "OCTP_METRICS_BIND", global = true)]
    pub metrics_bind: Option<SocketAddr>,
}

#[derive(Clone, Args)]
pub struct KeyConfig {
    /// Keys for game clients and services (`Authorization: Bearer` or `?http_key=`): comma-separated
    /// `name:secret` or bare secrets (named `http`); any listed key is accepted, so listing the old
    /// and the new key together rotates without downtime.
    #[arg(long = "http-key", env = "OCTP_HTTP_KEY", default_value = DEFAULT_HTTP_KEY, global = true, hide_env_values = true)]
    pub http_key: String,
    /// Keys for config and experiment changes, listed like `--http-key` (a bare secret is named
    /// `admin`); the name is the `actor` in history. An admin key may also do everything an http
    /// key does.
    #[arg(long = "admin-key", env = "OCTP_ADMIN_KEY", default_value = DEFAULT_ADMIN_KEY, global = true, hide_env_values = true)]
    pub admin_key: String,
}

/// Keys never reach logs, even through `{:?}`.
impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("http_key", &"<redacted>")
            .field("admin_key", &"<redacted>")
            .finish()
    }
}

impl KeyConfig {
    /// Names of the keys still at their public defaults.
    pub fn defaults_in_use(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if crate::auth::lists_secret(&self.http_key, DEFAULT_HTTP_KEY) {
            names.push("http key");
        }
        if crate::auth::lists_secret(&self.admin_key, DEFAULT_ADMIN_KEY) {
            names.push("admin key");
        }
        names
    }
}

#[derive(Debug, Clone, Args)]
pub struct CacheConfig {
    /// Seconds a fetched remote config stays cached.
    #[arg(
        long = "config-cache-ttl-secs",
        env = "OCTP_CONFIG_CACHE_TTL_SECS",
        default_value_t = 60,
        global = true
    )]
    pub config_ttl_secs: u64,
    /// Memory for every cache of assignments, config fetches and whole replies together, in MiB;
    /// entries are weighed by their size, so a launch of new players cannot grow them past it.
    #[arg(
        long = "cache-memory-mb",
        env = "OCTP_CACHE_MEMORY_MB",
        default_value_t = 64,
        global = true
    )]
    pub memory_mb: u64,
}

impl CacheConfig {
    pub fn config_ttl(&self) -> Duration {
        Duration::from_secs(self.config_ttl_secs)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb.max(1).saturating_mul(1024 * 1024)
    }
}

#[derive(Debug, Clone, Args)]
pub struct HistoryConfig {
    /// Versions kept per config variant for `configHistory` and rollback; older ones are pruned.
    #[arg(
        long = "config-history-keep",
        env = "OCTP_CONFIG_HISTORY_KEEP",
        default_value_t = 300,
        value_parser = clap::value_parser!(u32).range(1..),
        global = true
    )]
    pub config_versions_kept: u32,
}

#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log filter, e.g. `info` or `octp_backend=debug,tower_http=debug` (RUST_LOG syntax).
    #[arg(
        long = "log-level",
        env = "OCTP_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub level: String,
    /// Write logs as JSON lines instead of human-readable text.
    #[arg(long = "log-json", env = "OCTP_LOG_JSON", global = true)]
    pub json: bool,
}

impl Config {
    /// A configuration with every default except the database URL and bind address; for tests and
    /// embedding, where the environment must not leak in.
    pub fn with_database(url: impl Into<String>, bind: SocketAddr) -> Self {
        Config {
            database: DatabaseConfig {
                url: url.into(),
                max_connections: None,
                acquire_timeout_secs: 3,
                analysis_parallel_workers: None,
                events_url: None,
                events_cluster: None,
            },
            server: ServerConfig {
                disable_introspection: false,
                bind,
                request_timeout_secs: 30,
                header_read_timeout_secs: 10,
                max_client_connections: 10_000,
                metrics_bind: None,
            },
            keys: KeyConfig {
                http_key: DEFAULT_HTTP_KEY.to_owned(),
                admin_key: DEFAULT_ADMIN_KEY.to_owned(),
            },
            cache: CacheConfig {
                config_ttl_secs: 60,
                memory_mb: 64,
            },
            history: HistoryConfig {
                config_versions_kept: 300,
            },
            log: LogConfig {
                level: "info".to_owned(),
                json: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted_from_debug_output() {
        let cases = [
            (
                "postgres://octp:s3cr%40t@db:5432/octp?sslmode=require",
                "postgres://octp:<redacted>@db:5432/octp?sslmode=require",
            ),
            (
                "postgres://octp:p@ss@db/octp",
                "postgres://octp:<redacted>@db/octp",
            ),
            (
                "postgres://postgres@127.0.0.1/octp",
                "postgres://postgres@127.0.0.1/octp",
            ),
            ("sqlite://data/octp.db", "sqlite://data/octp.db"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_password(url), shown, "{url}");
        }
        let config = Config::with_database(
            "postgres://octp:hunter2@db/octp",
            "127.0.0.1:0".parse().unwrap(),
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
