//! Database access: connecting (backend picked by URL scheme, pool sizing, SQLite pragmas),
//! migrations, and the SeaORM entities.

pub mod assignments;
pub mod clickhouse;
pub mod entities;
pub mod ingest;
pub mod notify;
pub mod results;

use std::{path::Path, time::Duration};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr,
    sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous},
};

use crate::config::DatabaseConfig;

/// The backend a database URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, DbErr> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
        match scheme {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            _ => Err(DbErr::Custom(format!(
                "unsupported database URL scheme {scheme:?}: use sqlite://path/to/file.db or postgres://user@host/database"
            ))),
        }
    }

    /// The name reported by health checks.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    pub fn of(connection: &DatabaseConnection) -> Self {
        Self::of_backend(connection.get_database_backend())
    }

    pub fn of_backend(backend: DatabaseBackend) -> Self {
        match backend {
            DatabaseBackend::Sqlite => Backend::Sqlite,
            _ => Backend::Postgres,
        }
    }
}

/// A pooled connection idle this long is pinged before use: it may have been dropped by the
/// server, a proxy or a firewall meanwhile. Busy connections skip the ping, which was a round trip
/// before every statement (sqlx's default), so a first assignment's group write cost two; one that
/// broke while busy fails its statement, and the pool replaces it.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Connects to the configured database, creating a missing SQLite file and its directory.
pub async fn connect(config: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let backend = Backend::from_url(&config.url)?;
    if backend == Backend::Sqlite {
        create_sqlite_directory(&config.url)?;
    }
    let mut options = ConnectOptions::new(config.url.clone());
    let default_pool = match backend {
        Backend::Postgres => 16,
        // SQLite serialises writers; a few readers beside one writer is all WAL can use.
        Backend::Sqlite => 8,
    };
    let acquire_timeout = Duration::from_secs(config.acquire_timeout_secs.max(1));
    options
        .max_connections(config.max_connections.unwrap_or(default_pool))
        .min_connections(1)
        .acquire_timeout(acquire_timeout)
        .connect_timeout(acquire_timeout)
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|options: SqliteConnectOptions| {
            options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5))
        });
    Database::connect(options).await
}

fn create_sqlite_directory(url: &str) -> Result<(), DbErr> {
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    match Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|error| {
                DbErr::Custom(format!(
                    "cannot create the SQLite directory {}: {error}",
                    parent.display()
                ))
            })
        }
        _ => Ok(()),
    }
}

/// Planner settings of the connections that read event history. With sorting priced out, the only
/// plan left for a history page is the ordered walk of the user's slice of the
/// (user_id, event_timestamp DESC, id DESC) index; otherwise PostgreSQL may, for a heavy user or a
/// generic plan, scan the whole timestamp or event-name index and filter (seen under skew).
pub const HISTORY_PLANNER_SETTINGS: [(&str, &str); 2] =
    [("enable_sort", "off"), ("enable_incremental_sort", "off")];

/// The connections event history and experiment results are read through: on PostgreSQL a small
/// pool of its own with [`HISTORY_PLANNER_SETTINGS`], `--analysis-parallel-workers` and a statement
/// timeout just past the request timeout, so heavy reads never hold the hot path's connections nor
/// run on for nobody; on SQLite (one plan shape, no plan cache) the main connection.
pub async fn connect_history(
    config: &DatabaseConfig,
    main: &DatabaseConnection,
    request_timeout: Duration,
) -> Result<DatabaseConnection, DbErr> {
    if Backend::of(main) == Backend::Sqlite {
        return Ok(main.clone());
    }
    let mut options = ConnectOptions::new(config.url.clone());
    let acquire_timeout = Duration::from_secs(config.acquire_timeout_secs.max(1));
    let analysis_workers = config.analysis_parallel_workers;
    // A request that times out stops waiting, but its statement would run on: PostgreSQL cancels
    // it a second after the client got its timeout error.
    let statement_timeout = (request_timeout.as_millis() + 1_000).to_string();
    options
        .max_connections(config.max_connections.unwrap_or(16).div_ceil(2).max(2))
        .min_connections(1)
        .acquire_timeout(acquire_timeout)
        .connect_timeout(acquire_timeout)
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |options| {
            let options = options
                .options(HISTORY_PLANNER_SETTINGS)
                .options([("statement_timeout", statement_timeout.clone())]);
            match analysis_workers {
                Some(workers) => {
                    options.options([("max_parallel_workers_per_gather", workers.to_string())])
                }
                None => options,
            }
        });
    Database::connect(options).await
}

/// The PostgreSQL advisory lock instances take in turn to migrate (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x0C7B_0001;

/// Applies every pending migration; returns how many ran. On PostgreSQL, instances starting
/// together on a fresh database take turns (an advisory lock held by `connection`'s session, so
/// give it a pool of one connection): without it both create the migrations table at once and one
/// fails on a duplicate key.
/// Connections of a pool, by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConnections {
    pub idle: u32,
    pub in_use: u32,
}

/// How many of the pool's open connections are idle and in use right now.
pub fn pool_connections(connection: &DatabaseConnection) -> PoolConnections {
    let (size, idle) = match Backend::of(connection) {
        Backend::Postgres => {
            let pool = connection.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        Backend::Sqlite => {
            let pool = connection.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
    };
    let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
    PoolConnections {
        idle,
        in_use: size - idle,
    }
}

pub async fn migrate(connection: &DatabaseConnection) -> Result<usize, DbErr> {
    let postgres = Backend::of(connection) == Backend::Postgres;
    if postgres {
        connection
            .execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .await?;
    }
    let migrated = async {
        let pending = Migrator::get_pending_migrations(connection).await?.len();
        if pending > 0 {
            Migrator::up(connection, None).await?;
        }
        Ok(pending)
    }
    .await;
    if postgres {
        connection
            .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .await?;
    }
    migrated
}

/// (applied, pending) migration counts.
pub async fn migration_counts(connection: &DatabaseConnection) -> Result<(usize, usize), DbErr> {
    let all = Migrator::get_migration_with_status(connection).await?;
    let applied = all
        .iter()
        .filter(|migration| migration.status() == migration::MigrationStatus::Applied)
        .count();
    Ok((applied, all.len() - applied))
}

/// Serialises writes on SQLite, which allows one writer at a time: waiting in line here is far
/// cheaper than SQLite's busy-retry sleeps when several pooled connections try to write at once.
/// On PostgreSQL it lets everything through.
#[derive(Clone)]
pub struct WriteGate(Option<std::sync::Arc<tokio::sync::Mutex<()>>>);

impl WriteGate {
    pub fn for_connection(connection: &DatabaseConnection) -> Self {
        match Backend::of(connection) {
            Backend::Sqlite => WriteGate(Some(Default::default())),
            Backend::Postgres => WriteGate(None),
        }
    }

    /// Waits for the turn to write; the turn lasts as long as the returned guard.
    pub async fn enter(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.0 {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }
}
