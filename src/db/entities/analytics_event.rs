use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "analytics_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub event_id: String,
    pub user_id: String,
    pub session_id: Option<String>,
    pub event_name: String,
    pub event_timestamp: DateTimeUtc,
    pub received_at: DateTimeUtc,
    #[sea_orm(column_type = "JsonBinary")]
    pub properties: Json,
    pub experiment_id: Option<String>,
    pub cohort: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
