//! Cache coherence between instances on one PostgreSQL database: every write to experiments or
//! configs sends a `NOTIFY` inside its transaction (delivered on commit, dropped on rollback) naming
//! the writing instance, and every other instance `LISTEN`s and drops what it cached. SQLite serves one instance; there the local
//! invalidation of each write is all there is.

use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DbErr, RuntimeErr, Statement, sqlx::postgres::PgListener,
};
use tokio::sync::oneshot;

/// The notification channel of experiment and config writes.
const CHANNEL: &str = "octp_changes";
/// While the listener is away an instance may have missed writes: it forgets its caches at least
/// this often until it listens again.
const BLIND_CACHE_LIMIT: Duration = Duration::from_secs(1);
const FIRST_RETRY: Duration = Duration::from_millis(50);

/// Inside a write's transaction: tells every other listening instance that experiments or configs
/// changed. `origin` names the writing instance, whose own listener skips the notification.
pub async fn announce_change(db: &impl ConnectionTrait, origin: &str) -> Result<(), DbErr> {
    if db.get_database_backend() == DatabaseBackend::Postgres {
        db.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), origin.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Listens on `url` (PostgreSQL) for changes made by any instance and calls `on_change` for each,
/// and after each reconnection (writes may have been missed meanwhile). While the listener cannot
/// listen although the database answers (e.g. it refuses the connection), it calls `on_change`
/// every second: caches live at most that long. While the database cannot be reached at all,
/// nothing can be written to it either, so caches stay and keep serving through the outage.
/// Returns once the first `LISTEN` is in place or has failed, so that an instance that starts
/// serving has not missed a write since.
pub async fn listen_for_changes(
    url: &str,
    origin: String,
    on_change: impl Fn() + Send + Sync + 'static,
) {
    let url = with_application_name(url);
    let (ready, listening) = oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut retry = FIRST_RETRY;
        loop {
            match listen(&url).await {
                Ok(mut listener) => {
                    retry = FIRST_RETRY;
                    on_change();
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    tracing::info!(
                        "listening for experiment and config changes of other instances"
                    );
                    // sqlx would reconnect inside `try_recv`, but then nothing tells us when to
                    // forget what was missed; a fresh listener does.
                    loop {
                        match listener.try_recv().await {
                            // This instance's own writes forgot their caches when they
                            // committed; forgetting again would throw away what was read since.
                            Ok(Some(notification)) if notification.payload() == origin => {}
                            Ok(Some(_)) => on_change(),
                            Ok(None) => {
                                tracing::warn!(
                                    "the change listener lost its connection; reconnecting"
                                );
                                break;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "the change listener failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    if unreachable(error) {
                        tracing::warn!("cannot reach the database to listen for changes; retrying");
                    } else {
                        on_change();
                    }
                }
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(BLIND_CACHE_LIMIT);
        }
    });
    let _ = listening.await;
}

/// Whether the database could not be reached at all (rather than answering with a refusal).
fn unreachable(error: sea_orm::sqlx::Error) -> bool {
    let unreachable = crate::error::is_unavailable(&DbErr::Conn(RuntimeErr::SqlxError(
        std::sync::Arc::new(error),
    )));
    if !unreachable {
        tracing::warn!(
            "the database refuses the change listener; caching for at most 1 s until it listens"
        );
    }
    unreachable
}

async fn listen(url: &str) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The listener's connection shows as `octp-listener` in `pg_stat_activity`.
fn with_application_name(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name=octp-listener")
}
