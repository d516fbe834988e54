//! `remoteConfigChanged` and `liveEvents` (docs/api.md §11), served over `/graphql/ws` (`ws`).

use async_graphql::{Context, Result, Subscription};
use futures_util::{Stream, StreamExt};

use crate::{
    domain::{
        events::live::LiveFilter,
        ids::{Slug, UserId},
    },
    error::FieldErrors,
    graphql::{config::RemoteConfig, error::Extend, events::Event, role, services},
};

#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The config `remoteConfig` gives for these arguments: at once, then again each time a
    /// write on any instance changes it (its version, config, source or cohort); other writes
    /// send nothing.
    async fn remote_config_changed(
        &self,
        ctx: &Context<'_>,
        user_id: String,
        experiment_id: Option<String>,
    ) -> Result<impl Stream<Item = Result<RemoteConfig>> + use<>> {
        let user_id = UserId::parse("userId", user_id).extended()?;
        let experiment_id = Slug::parse_optional("experimentId", experiment_id).extended()?;
        Ok(services(ctx)
            .config
            .watch(user_id, experiment_id)
            .map(|answer| answer.map(RemoteConfig).extended()))
    }

    /// Every event stored from now on, by any instance, that matches every given filter, in
    /// storage order (admin key). A subscriber that falls 4,096 events behind gets a
    /// `LIMIT_EXCEEDED` error and its subscription completes.
    async fn live_events(
        &self,
        ctx: &Context<'_>,
        user_id: Option<String>,
        event_name: Option<String>,
        experiment_id: Option<String>,
    ) -> Result<impl Stream<Item = Result<Event>> + use<>> {
        let mut errors = FieldErrors::default();
        let filter = LiveFilter {
            user_id: user_id.and_then(|user_id| errors.take(UserId::parse("userId", user_id))),
            event_name: errors
                .take(Slug::parse_optional("eventName", event_name))
                .flatten(),
            experiment_id: errors
                .take(Slug::parse_optional("experimentId", experiment_id))
                .flatten(),
        };
        errors.into_result().extended()?;
        let events = services(ctx)
            .events
            .live(role(ctx), filter)
            .await
            .extended()?;
        // Each subscriber resolves fields from its own copy of the shared event.
        Ok(events.map(|event| event.map(|event| Event((*event).clone())).extended()))
    }
}
