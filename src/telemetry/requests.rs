//! The HTTP side of the metrics: the layer that counts and times every request by transport and
//! operation, and `GET /metrics`, which reads what the services count themselves.
//!
//! Label values come from fixed sets only: the adapters name their operation from what they
//! registered (GraphQL root fields of the schema, RPC ids), routes come from the router, and
//! anything else is `other`, so no request can add series.

use std::{
    collections::HashMap,
    sync::{OnceLock, RwLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    CACHE_ENTRIES, CACHE_HITS, CACHE_MISSES, DB_POOL, REQUEST_DURATION, REQUESTS, recorder,
};
use crate::domain::Services;

/// What a response answered, for the request metrics: the adapters attach it to their responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    pub transport: &'static str,
    pub name: &'static str,
}

impl Operation {
    /// The operation label of anything no adapter recognised.
    pub const OTHER: &'static str = "other";

    /// Attaches this operation to `response`.
    pub fn attach(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// `GET /metrics`: reads what the services count themselves, then renders every series.
pub async fn render(services: &Services) -> Response {
    let handle = recorder();
    let cache = services.config.cache_stats().await;
    metrics::counter!(CACHE_HITS).absolute(cache.hits);
    metrics::counter!(CACHE_MISSES).absolute(cache.misses);
    metrics::gauge!(CACHE_ENTRIES).set(cache.entries as f64);
    let pool = services.health.pool_connections();
    metrics::gauge!(DB_POOL, "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!(DB_POOL, "state" => "in_use").set(f64::from(pool.in_use));
    metrics_process::Collector::default().collect();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Counts and times every request; the operation is what the adapter attached to the response,
/// else the matched route.
pub async fn record(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Nothing below reads it, and taking it spares a shared reference count per request.
    let route = request.extensions_mut().remove::<MatchedPath>();
    let response = next.run(request).await;
    let operation = match response.extensions().get::<Operation>() {
        Some(operation) => *operation,
        None => Operation {
            transport: "http",
            name: route.map_or(Operation::OTHER, |route| interned_route(route.as_str())),
        },
    };
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    SERIES.with_borrow_mut(|series| {
        let (requests, duration) = series
            .entry((operation.transport.as_ptr(), operation.name.as_ptr(), status))
            .or_insert_with(|| {
                let (transport, name) = (operation.transport, operation.name);
                (
                    metrics::counter!(REQUESTS, "transport" => transport, "operation" => name, "status" => status_label(status)),
                    metrics::histogram!(REQUEST_DURATION, "transport" => transport, "operation" => name),
                )
            });
        requests.increment(1);
        duration.record(elapsed);
    });
    response
}

/// Series key: the label strings (static, so their addresses identify them) and the status.
type SeriesKey = (*const u8, *const u8, u16);

thread_local! {
    /// The request series' handles, per worker thread: looking a series up in the recorder's
    /// shared registry (hashing its labels, under its locks) cost a fifth of a cached config
    /// read's throughput; a handle is one atomic add. Label sets are fixed, so this stays small.
    static SERIES: std::cell::RefCell<HashMap<SeriesKey, (metrics::Counter, metrics::Histogram), ahash::RandomState>> =
        std::cell::RefCell::new(HashMap::with_hasher(ahash::RandomState::new()));
}

/// Routes are the router's own paths, a fixed set: each is leaked once to serve as a label.
fn interned_route(route: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashMap<String, &'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(interned) = routes
        .read()
        .ok()
        .and_then(|routes| routes.get(route).copied())
    {
        return interned;
    }
    let mut routes = match routes.write() {
        Ok(routes) => routes,
        Err(_) => return Operation::OTHER,
    };
    routes
        .entry(route.to_owned())
        .or_insert_with(|| Box::leak(route.to_owned().into_boxed_str()))
}

/// Status codes as static labels (100 to 599; anything else is `other`).
fn status_label(status: u16) -> &'static str {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        (100..600u16)
            .map(|code| &*Box::leak(code.to_string().into_boxed_str()))
            .collect()
    });
    status
        .checked_sub(100)
        .and_then(|index| labels.get(usize::from(index)))
        .copied()
        .unwrap_or(Operation::OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_cover_every_code_and_nothing_else() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(599), "599");
        assert_eq!(status_label(100), "100");
        assert_eq!(status_label(99), "other");
        assert_eq!(status_label(600), "other");
    }
}
