use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "experiment_metadata")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub experiment_id: String,
    pub name: String,
    pub description: Option<String>,
    /// Cohort name → weight, as a JSON object.
    #[sea_orm(column_type = "JsonBinary")]
    pub cohorts: Json,
    pub salt: String,
    pub is_active: bool,
    pub start_at: Option<DateTimeUtc>,
    pub end_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The metrics results analyse by default, as a JSON array.
    #[sea_orm(column_type = "JsonBinary")]
    pub metrics: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::user_experiment_assignment::Entity")]
    Assignments,
}

impl Related<super::user_experiment_assignment::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Assignments.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
