//! Shared state: the domain services (cheap to clone) and what the HTTP layer needs beside them.

use std::sync::Arc;

use crate::{
    auth::Keys,
    domain::{
        config::ConfigService, events::EventService, experiments::ExperimentService,
        health::HealthService,
    },
    graphql::{AppSchema, response_cache::ResponseCache},
};

/// The domain services, handed to both adapters.
#[derive(Clone)]
pub struct Services {
    pub health: HealthService,
    pub events: EventService,
    pub experiments: ExperimentService,
    pub config: ConfigService,
}

/// Router state.
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub schema: AppSchema,
    pub keys: Arc<Keys>,
    pub responses: Arc<ResponseCache>,
    /// Whether the schema may be introspected (and published for the playground).
    pub introspection: bool,
}
