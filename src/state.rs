//! Shared state: the domain services (cheap to clone) and what the HTTP layer needs beside them.

use std::sync::Arc;

use crate::{
    auth::Keys,
    domain::{
        config::ConfigService, events::EventService, experiments::ExperimentService,
        health::HealthService,
    },
    graphql::AppSchema,
    response_cache::ResponseCache,
};

/// The domain services, handed to both adapters.
#[derive(Clone)]
pub struct Services {
    pub health: HealthService,
    pub events: EventService,
    pub experiments: ExperimentService,
    pub config: ConfigService,
}

/// Router state. Axum clones it for every request, so it is one shared pointer rather than a
/// bundle of them (the clones and drops showed up in profiles of cached reads).
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl AppState {
    pub fn new(shared: SharedState) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

pub struct SharedState {
    pub services: Services,
    pub schema: AppSchema,
    pub keys: Arc<Keys>,
    pub responses: Arc<ResponseCache>,
    /// Whether the schema may be introspected (and published for the playground).
    pub introspection: bool,
}
