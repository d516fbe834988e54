use sea_orm_migration::prelude::*;

use crate::run_script;

/// PostgreSQL: the foreign key from assignments to their experiment becomes a delete trigger.
///
/// A foreign key makes every inserted assignment lock its experiment's row (`FOR KEY SHARE`), so
/// concurrent groups of first assignments for one experiment (every new player of a launch) queue
/// on one row and share its lock through multixacts: measured, it cost about a third of each
/// group's commit. Assignments are only ever made for an experiment the service has just read,
/// and experiments are never deleted through the API, so what the key still did was the cascade
/// of a delete made by hand: the trigger keeps that. An assignment stored at the very moment its
/// experiment is deleted by hand can outlive it (the row lock used to prevent that).
///
/// SQLite keeps its foreign key: one writer at a time takes no row locks.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &[
                "ALTER TABLE user_experiment_assignments \
                 DROP CONSTRAINT IF EXISTS user_experiment_assignments_experiment_id_fkey",
                r#"CREATE FUNCTION octp_forget_assignments() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    DELETE FROM user_experiment_assignments WHERE experiment_id = OLD.experiment_id;
                    RETURN OLD;
                END
                $$"#,
                "CREATE TRIGGER experiment_metadata_forget_assignments \
                 AFTER DELETE ON experiment_metadata \
                 FOR EACH ROW EXECUTE FUNCTION octp_forget_assignments()",
            ],
            &[],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            &[
                "DROP TRIGGER IF EXISTS experiment_metadata_forget_assignments ON experiment_metadata",
                "DROP FUNCTION IF EXISTS octp_forget_assignments()",
                "DELETE FROM user_experiment_assignments AS a WHERE NOT EXISTS \
                 (SELECT 1 FROM experiment_metadata AS e WHERE e.experiment_id = a.experiment_id)",
                "ALTER TABLE user_experiment_assignments \
                 ADD CONSTRAINT user_experiment_assignments_experiment_id_fkey \
                 FOREIGN KEY (experiment_id) REFERENCES experiment_metadata (experiment_id) ON DELETE CASCADE",
            ],
            &[],
        )
        .await
    }
}
