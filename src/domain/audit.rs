//! The audit log (docs/api.md §10): one entry per admin write, appended in the transaction of the
//! write itself, so a failed write leaves no entry and a stored change always has one. Nothing in
//! the API changes or deletes entries.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::Value;

use crate::{
    auth::Role,
    db::entities::audit_entry::{self, Column, Entity},
    domain::paging,
    error::{FieldError, FieldErrors, Result},
};

/// Entries per `auditLog` page when the client does not say, and at most.
pub const DEFAULT_PAGE: u64 = 50;
pub const MAX_PAGE: u64 = 500;
const MAX_ENTITY_ID_CHARS: usize = 300;
const CURSOR_KIND: &str = "au1";

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityType {
    Experiment,
    Config,
}

impl EntityType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Experiment => "experiment",
            EntityType::Config => "config",
        }
    }

    fn parse(text: &str) -> std::result::Result<Self, FieldError> {
        match text {
            "experiment" => Ok(EntityType::Experiment),
            "config" => Ok(EntityType::Config),
            other => Err(FieldError::new(
                "entityType",
                format!("must be \"experiment\" or \"config\" (got {other:?})"),
            )),
        }
    }
}

/// An admin write to record.
pub struct AuditRecord<'a> {
    pub actor: &'a str,
    /// The mutation or RPC name that made the write.
    pub action: &'a str,
    pub entity_type: EntityType,
    /// The experiment id, or `experiment/cohort` for a config.
    pub entity_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Appends the entry inside the caller's transaction.
pub async fn record(
    db: &impl ConnectionTrait,
    at: DateTime<Utc>,
    record: AuditRecord<'_>,
) -> Result<()> {
    let row = audit_entry::ActiveModel {
        id: NotSet,
        at: Set(at),
        actor: Set(record.actor.to_owned()),
        action: Set(record.action.to_owned()),
        entity_type: Set(record.entity_type.as_str().to_owned()),
        entity_id: Set(record.entity_id),
        before_data: Set(record.before),
        after_data: Set(record.after),
    };
    Entity::insert(row).exec_without_returning(db).await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl AuditEntry {
    /// The opaque cursor of this entry in the newest-first listing.
    pub fn cursor(&self) -> String {
        paging::cursor(CURSOR_KIND, self.id)
    }
}

/// `auditLog` arguments as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub first: Option<i64>,
    pub after: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
}

#[derive(Clone)]
pub struct AuditService {
    db: DatabaseConnection,
}

impl AuditService {
    pub fn new(db: DatabaseConnection) -> Self {
        AuditService { db }
    }

    /// Entries newest first, optionally of one entity type and id (admin key); returns the page
    /// and whether older entries follow. Always read from the database.
    pub async fn list(&self, caller: Role, query: AuditQuery) -> Result<(Vec<AuditEntry>, bool)> {
        caller.require_admin()?;
        let mut errors = FieldErrors::default();
        let page = errors.take(paging::page_size(query.first, DEFAULT_PAGE, MAX_PAGE));
        let before = errors.take(
            query
                .after
                .as_deref()
                .map(|after| paging::decode_cursor(CURSOR_KIND, after))
                .transpose(),
        );
        let entity_type = errors
            .take(
                query
                    .entity_type
                    .as_deref()
                    .map(EntityType::parse)
                    .transpose(),
            )
            .flatten();
        if let Some(id) = &query.entity_id
            && (id.is_empty() || id.chars().count() > MAX_ENTITY_ID_CHARS)
        {
            errors.push(FieldError::new(
                "entityId",
                format!("must be 1 to {MAX_ENTITY_ID_CHARS} characters"),
            ));
        }
        errors.into_result()?;
        let (page, before) = (page.unwrap_or(DEFAULT_PAGE), before.flatten());

        let mut select = Entity::find();
        if let Some(entity_type) = entity_type {
            select = select.filter(Column::EntityType.eq(entity_type.as_str()));
        }
        if let Some(entity_id) = query.entity_id {
            select = select.filter(Column::EntityId.eq(entity_id));
        }
        if let Some(before) = before {
            select = select.filter(Column::Id.lt(before));
        }
        let mut rows = select
            .order_by_desc(Column::Id)
            .limit(page + 1)
            .all(&self.db)
            .await?;
        let more = rows.len() as u64 > page;
        rows.truncate(page as usize);
        Ok((
            rows.into_iter()
                .map(|row| AuditEntry {
                    id: row.id,
                    at: row.at,
                    actor: row.actor,
                    action: row.action,
                    entity_type: row.entity_type,
                    entity_id: row.entity_id,
                    before: row.before_data,
                    after: row.after_data,
                })
                .collect(),
            more,
        ))
    }
}
