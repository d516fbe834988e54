//! Domain errors as GraphQL errors, and the key-role guard for admin fields.

use async_graphql::{Context, ErrorExtensions, Guard};

use crate::error::Error;

/// What the caller's key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The http key: game clients and services.
    Client,
    /// The admin key: everything, including config and experiment changes.
    Admin,
}

impl ErrorExtensions for Error {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.to_string()).extend_with(|_, extensions| {
            extensions.set("code", self.code().as_str());
            let details = self.field_errors();
            if !details.is_empty() {
                let details: Vec<async_graphql::Value> = details
                    .iter()
                    .map(|detail| {
                        async_graphql::to_value(detail).unwrap_or(async_graphql::Value::Null)
                    })
                    .collect();
                extensions.set("errors", details);
            }
        })
    }
}

/// Lets admin-only fields refuse the http key with `FORBIDDEN`.
pub struct AdminGuard;

impl Guard for AdminGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Role>() {
            Some(Role::Admin) => Ok(()),
            _ => Err(Error::Forbidden("this operation needs the admin key".to_owned()).extend()),
        }
    }
}
