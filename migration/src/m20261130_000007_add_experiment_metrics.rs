use sea_orm_migration::prelude::*;

use crate::run_script;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The metrics `experimentResults` analyses when a query names none: a JSON array of
        // {key, eventName, kind, property?, windowHours?}. Existing experiments start with none.
        run_script(
            manager,
            &["ALTER TABLE experiment_metadata ADD COLUMN metrics JSONB NOT NULL DEFAULT '[]'::jsonb"],
            &["ALTER TABLE experiment_metadata ADD COLUMN metrics TEXT NOT NULL DEFAULT '[]'"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let drop = ["ALTER TABLE experiment_metadata DROP COLUMN metrics"];
        run_script(manager, &drop, &drop).await
    }
}
