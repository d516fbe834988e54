//! Whole answers of config reads, kept as the bytes sent. A cached `remoteConfig` already costs
//! no database work, yet running the GraphQL executor around it (validation, resolver futures,
//! building and serialising the response) was most of the request; game clients repeat the same
//! request, so its answer is kept as long as the fetches it holds could be served from cache.
//!
//! Only GraphQL documents that read nothing but `remoteConfig` scalars, and `FetchRemoteConfig`
//! RPC payloads, are cached, keyed by the caller's role and the exact request body (payload). An entry is served only while the experiments/configs
//! generation it was computed under is current (any write on this instance moves it) and no
//! longer than the configured TTL after the oldest fetch it holds was assembled, so it is never
//! staler than the fetch cache would be.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_graphql::parser::{
    parse_query,
    types::{DocumentOperations, OperationType, Selection, SelectionSet},
};
use bytes::Bytes;
use moka::{Expiry, sync::Cache};

use crate::graphql::Role;

/// Request bodies above this size are not cached (a config read is a few hundred bytes).
pub const MAX_CACHED_REQUEST_BYTES: usize = 4 * 1024;
/// Bytes of keys and responses held at most.
const MAX_CACHED_BYTES: u64 = 32 * 1024 * 1024;
/// Longer query texts are not examined (nor cached).
const MAX_EXAMINED_QUERY_BYTES: usize = 4 * 1024;

/// `RemoteConfig` fields that are plain values of the fetch (no nested resolvers).
const CACHEABLE_CONFIG_FIELDS: [&str; 7] = [
    "userId",
    "experimentId",
    "cohort",
    "source",
    "version",
    "config",
    "__typename",
];

/// Which adapter an answer was built by, so equal request bytes of the two never share an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A GraphQL request body.
    GraphQL,
    /// The payload text of the `FetchRemoteConfig` RPC; the entry holds the reply payload text.
    FetchRemoteConfigRpc,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    scope: Scope,
    role: Role,
    body: Bytes,
}

struct Entry {
    generation: u64,
    /// Fetches the response holds, counted as cache hits when it is served again.
    fetches: u64,
    expires_at: Instant,
    body: Bytes,
}

struct UntilStale;

impl Expiry<Key, Arc<Entry>> for UntilStale {
    fn expire_after_create(
        &self,
        _key: &Key,
        entry: &Arc<Entry>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(created_at))
    }
}

pub struct ResponseCache {
    entries: Cache<Key, Arc<Entry>>,
    /// Whether a query text reads only cacheable fields, by query text.
    verdicts: Cache<String, bool>,
    ttl: Duration,
}

/// What a cached answer gives back.
pub struct CachedResponse {
    pub body: Bytes,
    pub fetches: u64,
}

impl ResponseCache {
    pub fn new(ttl: Duration) -> Self {
        ResponseCache {
            entries: Cache::builder()
                .max_capacity(MAX_CACHED_BYTES)
                .weigher(|key: &Key, entry: &Arc<Entry>| {
                    u32::try_from(key.body.len() + entry.body.len()).unwrap_or(u32::MAX)
                })
                .expire_after(UntilStale)
                .build(),
            verdicts: Cache::new(1_000),
            ttl,
        }
    }

    /// The stored answer to this exact request, if it is still current for `generation`.
    pub fn get(
        &self,
        scope: Scope,
        role: Role,
        body: &Bytes,
        generation: u64,
    ) -> Option<CachedResponse> {
        let key = Key {
            scope,
            role,
            body: body.clone(),
        };
        let entry = self.entries.get(&key)?;
        if entry.generation != generation || entry.expires_at <= Instant::now() {
            return None;
        }
        Some(CachedResponse {
            body: entry.body.clone(),
            fetches: entry.fetches,
        })
    }

    /// Whether a document's answer may be cached: one query operation whose root fields are
    /// `remoteConfig` (selecting only plain fields) or `__typename`.
    pub fn is_cacheable(&self, query: &str) -> bool {
        if query.len() > MAX_EXAMINED_QUERY_BYTES {
            return false;
        }
        if let Some(verdict) = self.verdicts.get(query) {
            return verdict;
        }
        let verdict = reads_only_config(query);
        self.verdicts.insert(query.to_owned(), verdict);
        verdict
    }

    /// Keeps a successful answer computed under `generation` from what `freshness` observed.
    pub fn insert(
        &self,
        scope: Scope,
        role: Role,
        request: Bytes,
        generation: u64,
        freshness: &Freshness,
        response: Bytes,
    ) {
        let Some((oldest, fetches)) = freshness.observed() else {
            return;
        };
        let expires_at = oldest + self.ttl;
        if expires_at <= Instant::now() {
            return;
        }
        self.entries.insert(
            Key {
                scope,
                role,
                body: request,
            },
            Arc::new(Entry {
                generation,
                fetches,
                expires_at,
                body: response,
            }),
        );
    }
}

fn reads_only_config(query: &str) -> bool {
    let Ok(document) = parse_query(query) else {
        return false;
    };
    if !document.fragments.is_empty() {
        return false;
    }
    // A named operation is parsed into the map even when it is the only one.
    let operation = match &document.operations {
        DocumentOperations::Single(operation) => operation,
        DocumentOperations::Multiple(operations) if operations.len() == 1 => {
            match operations.values().next() {
                Some(operation) => operation,
                None => return false,
            }
        }
        DocumentOperations::Multiple(_) => return false,
    };
    let operation = &operation.node;
    operation.ty == OperationType::Query
        && only_fields(
            &operation.selection_set.node,
            |name, selection_set| match name {
                "__typename" => true,
                "remoteConfig" => only_fields(selection_set, |field, nested| {
                    CACHEABLE_CONFIG_FIELDS.contains(&field) && nested.items.is_empty()
                }),
                _ => false,
            },
        )
}

/// True when every selection is a plain field (no fragments) accepted by `accept`.
fn only_fields(selection_set: &SelectionSet, accept: impl Fn(&str, &SelectionSet) -> bool) -> bool {
    selection_set
        .items
        .iter()
        .all(|selection| match &selection.node {
            Selection::Field(field) => accept(
                field.node.name.node.as_str(),
                &field.node.selection_set.node,
            ),
            Selection::FragmentSpread(_) | Selection::InlineFragment(_) => false,
        })
}

/// Collected while a request runs: how old the oldest config fetch it used is, and how many.
#[derive(Default)]
pub struct Freshness {
    observed: Mutex<Option<(Instant, u64)>>,
}

impl Freshness {
    pub fn observe(&self, fetched_at: Instant) {
        let mut observed = self
            .observed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *observed = Some(match *observed {
            Some((oldest, count)) => (oldest.min(fetched_at), count + 1),
            None => (fetched_at, 1),
        });
    }

    fn observed(&self) -> Option<(Instant, u64)> {
        *self
            .observed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_config_reads_are_cacheable() {
        let cache = ResponseCache::new(Duration::from_secs(60));
        for query in [
            "{ remoteConfig(userId: \"u\") { config } }",
            "query($u: String!) { remoteConfig(userId: $u) { source version config } }",
            "query Q($u: String!) { a: remoteConfig(userId: $u) { config } b: remoteConfig(userId: $u, experimentId: \"e\") { cohort } __typename }",
        ] {
            assert!(cache.is_cacheable(query), "{query}");
        }
        for query in [
            "{ remoteConfig(userId: \"u\") { assignments { cohort } } }",
            "{ remoteConfig(userId: \"u\") { config } health { status } }",
            "{ remoteConfig(userId: \"u\") { ...F } } fragment F on RemoteConfig { config }",
            "{ remoteConfig(userId: \"u\") { ... on RemoteConfig { config } } }",
            "mutation { updateRemoteConfig(config: {}) { version } }",
            "query A { remoteConfig(userId: \"u\") { config } } query B { remoteConfig(userId: \"v\") { config } }",
            "{ remoteConfig(userId: ",
        ] {
            assert!(!cache.is_cacheable(query), "{query}");
        }
    }
}
