//! Assembly: connect, migrate, build the services and the router, bind, serve until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::{auth::Keys, config::Config, db, domain::Services, http};

pub struct App {
    listener: TcpListener,
    router: Router,
}

impl App {
    /// Connects to the database, applies pending migrations and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let router = build_router(&config).await?;
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.bind))?;
        Ok(App { listener, router })
    }

    /// The bound address; with port 0 in the config, the port the OS picked.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The complete router for a configuration: connects, migrates and wires the services.
pub async fn build_router(config: &Config) -> anyhow::Result<Router> {
    let backend = db::Backend::from_url(&config.database.url)?;
    let connect = || async {
        db::connect(&config.database)
            .await
            .with_context(|| format!("cannot connect to the {} database", backend.name()))
    };
    // Migrate through a pool of its own and serve from a fresh one: an SQLite connection opened
    // while the schema was still changing can prepare statements against the old schema (seen as
    // "ON CONFLICT clause does not match any … UNIQUE constraint" right after startup).
    let migrating = connect().await?;
    let applied = db::migrate(&migrating)
        .await
        .context("cannot apply database migrations")?;
    migrating.close().await.ok();
    if applied > 0 {
        tracing::info!(applied, "applied database migrations");
    }
    let connection = connect().await?;
    let ttl = config.cache.config_ttl();
    let history = db::connect_history(&config.database, &connection)
        .await
        .context("cannot open the event-history connections")?;
    Ok(http::router(
        Services::new(connection, history, ttl),
        Arc::new(Keys::new(&config.keys)),
        !config.server.disable_introspection,
        Duration::from_secs(config.server.request_timeout_secs.max(1)),
    ))
}
