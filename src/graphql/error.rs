//! Domain errors as GraphQL errors: the message, `extensions.code` from the one table in
//! `crate::error`, and `extensions.errors` with every broken rule.

use async_graphql::{ErrorExtensions, ServerError};

use crate::error::Error;

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

/// Domain results in resolvers: `?` alone would drop `extensions.code` (async-graphql's blanket
/// `From<T: Display>`), so every resolver goes through this.
pub trait Extend<T> {
    fn extended(self) -> async_graphql::Result<T>;
}

impl<T, E: Into<Error>> Extend<T> for Result<T, E> {
    fn extended(self) -> async_graphql::Result<T> {
        self.map_err(|error| error.into().extend())
    }
}

/// A domain error found before execution, as a GraphQL error without a location: it belongs to
/// the request, not to a place in the document.
pub fn request_error(error: &Error) -> ServerError {
    let extended = error.extend();
    let mut server_error = ServerError::new(extended.message, None);
    server_error.extensions = extended.extensions;
    server_error
}
