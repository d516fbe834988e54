//! `auditLog`.

use async_graphql::{
    Context, ID, Json, Object, Result,
    connection::{Connection, Edge},
};

use crate::{
    domain::audit::{self, AuditQuery as DomainAuditQuery, DEFAULT_PAGE, MAX_PAGE},
    graphql::{
        HEAVY_JSON, QUERY, ROW, budget::json_output, error::Extend, listing_page_size, role,
        scalars::DateTime, services,
    },
};

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Every admin write, newest first (admin key): who changed what, when, from what to what.
    /// `entityType` is `experiment` or `config`; `entityId` the experiment id, or
    /// `experiment/cohort` for a config (`global/default` for the global default). `first` is
    /// capped at 500.
    #[graphql(
        complexity = "QUERY + listing_page_size(first, DEFAULT_PAGE, MAX_PAGE) * (ROW + child_complexity)"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(DEFAULT_PAGE as i32)")] first: Option<i32>,
        after: Option<String>,
        entity_type: Option<String>,
        entity_id: Option<String>,
    ) -> Result<Connection<String, AuditEntry>> {
        let query = DomainAuditQuery {
            first: first.map(i64::from),
            after: after.clone(),
            entity_type,
            entity_id,
        };
        let (entries, more) = services(ctx)
            .audit
            .list(role(ctx), query)
            .await
            .extended()?;
        let mut connection = Connection::new(after.is_some(), more);
        connection.edges.extend(
            entries
                .into_iter()
                .map(|entry| Edge::new(entry.cursor(), AuditEntry(entry))),
        );
        Ok(connection)
    }
}

/// One admin write.
pub struct AuditEntry(audit::AuditEntry);

#[Object]
impl AuditEntry {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn at(&self) -> DateTime {
        self.0.at.into()
    }
    /// The name of the admin key that made the write.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// The mutation or RPC that made the write, e.g. `updateRemoteConfig` or `UpdateRemoteConfig`.
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// `experiment` or `config`.
    async fn entity_type(&self) -> &str {
        &self.0.entity_type
    }
    /// The experiment id, or `experiment/cohort` for a config.
    async fn entity_id(&self) -> &str {
        &self.0.entity_id
    }
    /// The entity before the write; null when the write created it.
    #[graphql(complexity = "HEAVY_JSON")]
    async fn before(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> {
        self.0
            .before
            .as_ref()
            .map(|value| json_output(ctx, value))
            .transpose()
    }
    /// The entity after the write.
    #[graphql(complexity = "HEAVY_JSON")]
    async fn after(&self, ctx: &Context<'_>) -> Result<Option<Json<serde_json::Value>>> {
        self.0
            .after
            .as_ref()
            .map(|value| json_output(ctx, value))
            .transpose()
    }
}
