//! The GraphQL adapter: types and resolvers over the domain services, and its HTTP transport
//! (`router`). Resolvers parse, call one service method and map the result; rules live in
//! `crate::domain`.

mod audit;
mod budget;
mod cacheable;
mod complete;
mod config;
mod error;
mod events;
mod experiments;
mod guard;
mod health;
mod loaders;
mod operations;
mod results;
mod scalars;
mod subscriptions;
mod transport;
mod ws;

pub use self::ws::{MAX_SUBSCRIPTIONS, Sockets};

use std::{sync::Arc, time::Duration};

use async_graphql::{Context, MergedObject, Schema, SchemaBuilder, dataloader::DataLoader};
use axum::{Router, routing::get};

use crate::{
    auth::{Keys, Role},
    domain::Services,
};

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(
    health::HealthQuery,
    events::EventsQuery,
    config::ConfigQuery,
    experiments::ExperimentsQuery,
    audit::AuditQuery,
    results::ResultsQuery,
);

#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(
    events::EventsMutation,
    config::ConfigMutation,
    experiments::ExperimentsMutation,
);

pub type AppSchema = Schema<QueryRoot, MutationRoot, subscriptions::SubscriptionRoot>;

/// The schema without any data attached: enough to export the SDL.
pub fn schema() -> SchemaBuilder<QueryRoot, MutationRoot, subscriptions::SubscriptionRoot> {
    Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        subscriptions::SubscriptionRoot,
    )
}

/// Most work one operation may ask for, in the units below (a plain field costs 1; lists cost
/// their length times their children). A full `userEvents` page of 500 events with every field,
/// through both `nodes` and `edges`, costs about 35,000; two pages of 500 events' properties
/// fit, three do not (each page is loaded whole before anything is sent).
pub const MAX_COMPLEXITY: usize = 40_000;
/// A database query (or a fetch that may need one).
const QUERY: usize = 10;
/// Reading one stored event, whatever is selected of it.
const ROW: usize = 10;
/// A batched or cached lookup.
const LOOKUP: usize = 3;
/// A JSON value of up to 16–64 KiB (event properties, a config).
const HEAVY_JSON: usize = 20;
/// Length assumed for lists whose length the query does not set (experiments, cohorts, variants).
const LIST: usize = 20;

/// The page size `userEvents` serves for its `first` argument.
fn page_size(first: Option<i32>) -> usize {
    listing_page_size(
        first,
        crate::domain::events::DEFAULT_PAGE,
        crate::domain::events::MAX_PAGE,
    )
}

/// At most how many rows a listing serves for its `first` argument, for complexity estimates.
fn listing_page_size(first: Option<i32>, default: u64, max: u64) -> usize {
    first.map_or(default, |first| first.max(0) as u64).min(max) as usize
}

/// The executable schema, with the services and loaders resolvers call; checked documents are
/// kept in `documents`.
fn build(services: Services, introspection: bool, documents: guard::Documents) -> AppSchema {
    // Depth is limited by the guard, which tells data from introspection (the standard
    // introspection query nests deeper than any data query may).
    let builder = schema()
        .limit_complexity(MAX_COMPLEXITY)
        .limit_directives(16);
    let builder = if introspection {
        builder
    } else {
        // "Did you mean …?" would hand the schema out name by name.
        builder.disable_introspection().disable_suggestions()
    };
    builder
        .extension(guard::DocumentGuard::new(introspection, documents))
        .data(DataLoader::new(
            loaders::ExperimentLoader(services.clone()),
            tokio::spawn,
        ))
        .data(DataLoader::new(
            loaders::VariantLoader(services.clone()),
            tokio::spawn,
        ))
        .data(services)
        .finish()
}

/// `/graphql` (GET and POST; a request running past `request_timeout` gets a 408 GraphQL error)
/// and `/graphql/ws` (subscriptions, over the connections `sockets` keeps).
pub fn router(
    services: Services,
    keys: Arc<Keys>,
    introspection: bool,
    request_timeout: Duration,
    sockets: Sockets,
) -> Router {
    let documents = guard::documents();
    let transport = transport::Transport::new(transport::Shared {
        schema: build(services.clone(), introspection, documents.clone()),
        documents,
        shapes: tokio::sync::OnceCell::new(),
        services,
        keys,
        plain_config_reads: cacheable::CacheableDocuments::new(),
        introspection,
        sockets,
    });
    // A subscription lives as long as its client wants: the request timeout is for `/graphql`.
    let subscriptions = Router::new().route("/graphql/ws", get(ws::upgrade));
    Router::new()
        .route("/graphql", get(transport::graphql).post(transport::graphql))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            transport::timeout,
        ))
        .merge(subscriptions)
        .with_state(transport)
}

/// The SDL that `schema.graphql` must match.
pub fn sdl() -> String {
    schema().finish().sdl()
}

fn services<'a>(ctx: &Context<'a>) -> &'a Services {
    ctx.data_unchecked::<Services>()
}

/// The caller's role; the transport attaches it to every request it runs.
fn role(ctx: &Context<'_>) -> Role {
    ctx.data_opt::<Role>().copied().unwrap_or(Role::Client)
}
