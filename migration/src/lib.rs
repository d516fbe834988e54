//! Schema migrations for the OCTP backend, written as plain SQL per backend so that PostgreSQL gets
//! JSONB and descending composite indexes while SQLite gets the closest equivalents.

pub use sea_orm_migration::{MigrationStatus, prelude::*};

mod m20261124_000001_create_experiment_metadata;
mod m20261124_000002_create_analytics_events;
mod m20261124_000003_create_config_variants;
mod m20261124_000004_create_user_experiment_assignments;
mod m20261130_000005_create_config_versions;
mod m20261130_000006_create_experiment_changes_and_audit_log;
mod m20261130_000007_add_experiment_metrics;
mod m20261201_000008_assignments_without_parent_lock;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_experiment_metadata::Migration),
            Box::new(m20261124_000002_create_analytics_events::Migration),
            Box::new(m20261124_000003_create_config_variants::Migration),
            Box::new(m20261124_000004_create_user_experiment_assignments::Migration),
            Box::new(m20261130_000005_create_config_versions::Migration),
            Box::new(m20261130_000006_create_experiment_changes_and_audit_log::Migration),
            Box::new(m20261130_000007_add_experiment_metrics::Migration),
            Box::new(m20261201_000008_assignments_without_parent_lock::Migration),
        ]
    }
}

/// Runs each statement of the script for the connected backend, in order.
async fn run_script(
    manager: &SchemaManager<'_>,
    postgres: &[&str],
    sqlite: &[&str],
) -> Result<(), DbErr> {
    let statements = match manager.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => postgres,
        sea_orm::DatabaseBackend::Sqlite => sqlite,
        other => {
            return Err(DbErr::Migration(format!(
                "unsupported database backend {other:?}: use PostgreSQL or SQLite"
            )));
        }
    };
    let connection = manager.get_connection();
    for statement in statements {
        connection.execute_unprepared(statement).await?;
    }
    Ok(())
}
