use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "config_variants")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// `global` for the global default.
    pub experiment_id: String,
    /// `default` for an experiment's own default.
    pub cohort: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub config_data: Json,
    pub version: i32,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
