use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use migration::{Migrator, MigratorTrait};
use octp_backend::{
    App,
    config::{Cli, Command, Config, EventsAction, LogConfig, MigrateAction},
    db, graphql,
};
use tracing_subscriber::EnvFilter;

// glibc's allocator spent about a third of the server's CPU on ingest (GraphQL variables are many
// small maps); mimalloc's thread-local free lists make those allocations cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.config.log);
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Migrate { action } => migrate(&cli.config, action).await,
        Command::Events {
            action: EventsAction::Backfill,
        } => backfill_events(&cli.config).await,
        Command::ExportSchema { output } => export_schema(output),
        Command::Healthcheck { url } => healthcheck(&cli.config, url).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(log: &LogConfig) {
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|error| {
        eprintln!(
            "invalid --log-level {:?} ({error}); using \"info\"",
            log.level
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    for key in config.keys.defaults_in_use() {
        tracing::warn!(
            "THE {} IS THE PUBLIC DEFAULT: anyone can use it. Set a secret one before exposing this server.",
            key.to_uppercase()
        );
    }
    let app = App::build(config).await?;
    tracing::info!(address = %app.local_addr(), "listening; GraphQL at /graphql, playground at /playground, console at /console");
    app.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn backfill_events(config: &Config) -> anyhow::Result<()> {
    let Some(url) = &config.database.events_url else {
        anyhow::bail!(
            "events backfill copies to the store --events-url (OCTP_EVENTS_URL) names; it is not set"
        );
    };
    let store =
        db::clickhouse::ClickHouseEvents::open(url, config.database.events_cluster.as_deref())
            .await?;
    let database = db::connect(&config.database)
        .await
        .context("cannot connect to the main database")?;
    let copied = db::assignments::backfill(&database, &store).await?;
    println!(
        "copied {copied} assignments to ClickHouse (database {})",
        store.database()
    );
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn migrate(config: &Config, action: MigrateAction) -> anyhow::Result<()> {
    let connection = db::connect(&config.database)
        .await
        .context("cannot connect to the database")?;
    match action {
        MigrateAction::Status => {
            for migration in Migrator::get_migration_with_status(&connection).await? {
                println!("{:<8} {}", migration.status(), migration.name());
            }
        }
        MigrateAction::Up { steps } => {
            Migrator::up(&connection, steps).await?;
            let (applied, pending) = db::migration_counts(&connection).await?;
            println!("applied: {applied}, pending: {pending}");
        }
        MigrateAction::Down { steps } => {
            Migrator::down(&connection, Some(steps)).await?;
            let (applied, pending) = db::migration_counts(&connection).await?;
            println!("applied: {applied}, pending: {pending}");
        }
    }
    Ok(())
}

/// A GET of the readiness URL with a few lines of HTTP/1.1 rather than an HTTP client crate: the
/// server has no other use for one, and the probe only needs the status line.
async fn healthcheck(config: &Config, url: Option<String>) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url =
        url.unwrap_or_else(|| format!("http://127.0.0.1:{}/readyz", config.server.bind.port()));
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut head = [0u8; 32];
        let mut read = 0;
        while read < head.len() {
            match stream.read(&mut head[read..]).await? {
                0 => break,
                more => read += more,
            }
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..read]).into_owned())
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .with_context(|| format!("{url} did not answer within 5 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status == "200", "{url} answered {status:?}, not 200");
    Ok(())
}

fn export_schema(output: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let sdl = graphql::sdl();
    match output {
        Some(path) => std::fs::write(&path, sdl)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{sdl}"),
    }
    Ok(())
}
