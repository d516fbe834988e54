use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &[
                r#"CREATE TABLE experiment_metadata (
                    experiment_id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    description TEXT,
                    cohorts JSONB NOT NULL,
                    salt TEXT NOT NULL,
                    is_active BOOLEAN NOT NULL DEFAULT TRUE,
                    start_at TIMESTAMPTZ,
                    end_at TIMESTAMPTZ,
                    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )"#,
                // Only active experiments are ever listed, so index just those rows.
                "CREATE INDEX idx_experiment_metadata_active ON experiment_metadata (experiment_id) WHERE is_active",
            ],
            &[
                r#"CREATE TABLE experiment_metadata (
                    experiment_id TEXT PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL,
                    description TEXT,
                    cohorts TEXT NOT NULL,
                    salt TEXT NOT NULL,
                    is_active BOOLEAN NOT NULL DEFAULT 1,
                    start_at TEXT,
                    end_at TEXT,
                    created_at TEXT NOT NULL,
                    updated_at TEXT NOT NULL
                )"#,
                "CREATE INDEX idx_experiment_metadata_active ON experiment_metadata (experiment_id) WHERE is_active",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let drop = ["DROP TABLE experiment_metadata"];
        run_script(manager, &drop, &drop).await
    }
}
