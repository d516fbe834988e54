use sea_orm::entity::prelude::*;

/// An experiment's state after a change that altered it.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "experiment_changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub experiment_id: String,
    pub at: DateTimeUtc,
    pub actor: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub cohorts: Json,
    pub salt: String,
    pub is_active: bool,
    pub start_at: Option<DateTimeUtc>,
    pub end_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
