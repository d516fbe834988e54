use sea_orm::entity::prelude::*;

/// One published version of a config variant, kept for history and rollback.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "config_versions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub experiment_id: String,
    pub cohort: String,
    pub version: i32,
    #[sea_orm(column_type = "JsonBinary")]
    pub config_data: Json,
    pub created_at: DateTimeUtc,
    /// The name of the admin key that wrote it (`migration` for versions found at upgrade).
    pub actor: String,
    pub note: Option<String>,
    /// Set when this version republished an older one.
    pub rolled_back_from: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
