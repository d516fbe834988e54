//! Assembly: connect, migrate, build the services and the router, bind, serve until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    auth::Keys,
    config::{Config, DatabaseConfig},
    db::{self, clickhouse::ClickHouseEvents},
    domain::{CacheBudget, Services, events::EventStore},
    graphql::Sockets,
    http,
};

pub struct App {
    listener: TcpListener,
    router: Router,
    sockets: Sockets,
    /// `--metrics-bind`'s listener and its router, when set.
    metrics: Option<(TcpListener, Router)>,
    /// How long a client may take to send a request's headers, or stay idle between requests.
    header_read_timeout: Duration,
    max_connections: usize,
}

impl App {
    /// Connects to the database, applies pending migrations and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let routers = build_router(&config).await?;
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.bind))?;
        let metrics = match config.server.metrics_bind {
            Some(address) => Some((
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address} for /metrics"))?,
                routers.metrics,
            )),
            None => None,
        };
        let (router, sockets) = (routers.api, routers.sockets);
        Ok(App {
            listener,
            router,
            sockets,
            metrics,
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs.max(1)),
            max_connections: config.server.max_client_connections.max(1),
        })
    }

    /// The address of `--metrics-bind`'s listener, when set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The bound address; with port 0 in the config, the port the OS picked.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    ///
    /// A loop of its own rather than `axum::serve`, which has no header-read timeout and no
    /// connection limit: 3,000 connections that never finished their headers stayed open for good.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let header_read_timeout = self.header_read_timeout;
        // Scrapes are few and quick: plain axum serving is enough, stopped with the server.
        let metrics = self.metrics.map(|(listener, router)| {
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "the /metrics listener failed");
                }
            })
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.header_read_timeout);
        let builder = Arc::new(builder);
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let connections = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    // Never closed; were it, no connection could be admitted any more.
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Replies are written whole; waiting to coalesce them only adds latency.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY could not be set");
            }
            let (builder, router, watcher) =
                (builder.clone(), self.router.clone(), connections.watcher());
            tokio::spawn(async move {
                // Telling HTTP/1 from HTTP/2 waits for the first bytes, before hyper's own
                // header timeout starts: a client that sends nothing is timed out here.
                let mut first = [0u8; 1];
                match tokio::time::timeout(header_read_timeout, stream.peek(&mut first)).await {
                    Ok(Ok(read)) if read > 0 => {}
                    // The slot goes with the task.
                    _ => return,
                }
                let connection = builder
                    .serve_connection_with_upgrades(
                        TokioIo::new(stream),
                        TowerToHyperService::new(router),
                    )
                    .into_owned();
                if let Err(error) = watcher.watch(connection).await {
                    tracing::debug!(error = %error, "connection ended with an error");
                }
                // Held for as long as the connection lives.
                drop(slot);
            });
        }
        drop(self.listener);
        // Upgraded connections left hyper's watch: they are closed (1001) and awaited apart.
        tokio::join!(connections.shutdown(), self.sockets.close());
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        Ok(())
    }
}

/// What a server serves: the API (with `/metrics` unless `--metrics-bind` moves it), `/metrics`
/// alone, and the API's WebSocket connections (to close on shutdown).
pub struct Routers {
    pub api: Router,
    pub metrics: Router,
    pub sockets: Sockets,
}

/// The routers for a configuration: connects, migrates and wires the services.
pub async fn build_router(config: &Config) -> anyhow::Result<Routers> {
    // Installed first, so that nothing counted during startup is lost.
    crate::telemetry::recorder();
    let keys = Keys::new(&config.keys).map_err(anyhow::Error::msg)?;
    let backend = db::Backend::from_url(&config.database.url)?;
    let connect = |database: DatabaseConfig| async move {
        db::connect(&database)
            .await
            .with_context(|| format!("cannot connect to the {} database", backend.name()))
    };
    // Migrate through a pool of its own and serve from a fresh one: an SQLite connection opened
    // while the schema was still changing can prepare statements against the old schema (seen as
    // "ON CONFLICT clause does not match any … UNIQUE constraint" right after startup).
    let migrating = connect(DatabaseConfig {
        max_connections: Some(1),
        ..config.database.clone()
    })
    .await?;
    let applied = db::migrate(&migrating)
        .await
        .context("cannot apply database migrations")?;
    migrating.close().await.ok();
    if applied > 0 {
        tracing::info!(applied, "applied database migrations");
    }
    let connection = connect(config.database.clone()).await?;
    let ttl = config.cache.config_ttl();
    let request_timeout = Duration::from_secs(config.server.request_timeout_secs.max(1));
    let history = db::connect_history(&config.database, &connection, request_timeout)
        .await
        .context("cannot open the event-history connections")?;
    let events = match &config.database.events_url {
        None => EventStore::Main,
        Some(url) => {
            let store =
                ClickHouseEvents::open(url, config.database.events_cluster.as_deref()).await?;
            tracing::info!(
                version = store.version(),
                database = store.database(),
                cluster = store.cluster(),
                "events are stored in ClickHouse"
            );
            EventStore::ClickHouse(Arc::new(store))
        }
    };
    let services = Services::new(
        connection,
        history,
        ttl,
        CacheBudget::of_total(config.cache.memory_bytes()),
        config.history.config_versions_kept,
        events,
    );
    if backend == db::Backend::Postgres {
        let listening = services.clone();
        db::notify::listen_for_changes(&config.database.url, services.origin(), move || {
            listening.forget_cached()
        })
        .await;
    }
    let sockets = Sockets::new(config.server.max_client_connections);
    let api = http::router(
        services.clone(),
        Arc::new(keys),
        !config.server.disable_introspection,
        request_timeout,
        sockets.clone(),
        config.server.metrics_bind.is_none(),
    );
    Ok(Routers {
        api,
        metrics: http::metrics_router(services),
        sockets,
    })
}
