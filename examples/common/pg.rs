//! Shared by the PostgreSQL ceiling examples.

use tokio_postgres::{Client, NoTls};

/// A client whose connection runs on its own task. tokio-postgres sets TCP_NODELAY, so small
/// messages are not held back by the server's delayed ACK.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("connection error: {error}");
        }
    });
    Ok(client)
}
