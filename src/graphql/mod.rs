//! The GraphQL adapter: types and resolvers over the domain services. Resolvers parse, call one
//! service method and map the result; rules live in `crate::domain`.

mod error;
mod health;

use async_graphql::{EmptyMutation, EmptySubscription, MergedObject, Schema, SchemaBuilder};

pub use self::error::{AdminGuard, Role};
use crate::state::Services;

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(health::HealthQuery);

pub type AppSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

/// The schema without any data attached: enough to export the SDL.
pub fn schema() -> SchemaBuilder<QueryRoot, EmptyMutation, EmptySubscription> {
    Schema::build(QueryRoot::default(), EmptyMutation, EmptySubscription)
}

/// The executable schema, with the services resolvers call.
pub fn build(services: Services) -> AppSchema {
    schema().data(services).finish()
}

/// The SDL that `schema.graphql` must match.
pub fn sdl() -> String {
    schema().finish().sdl()
}
