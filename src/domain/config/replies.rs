//! Whole replies of config reads, kept as the bytes sent. A cached `remoteConfig` already costs
//! no database work, yet running an adapter around it (the GraphQL executor: validation, resolver
//! futures, building and serialising the response) was most of the request; game clients repeat
//! the same request, so its reply is kept (from the second time it is computed, see [`Doorkeeper`])
//! as long as the fetches it holds could be served from cache.
//!
//! The adapters decide which requests are plain config reads (GraphQL documents reading nothing but
//! `remoteConfig` scalars, `FetchRemoteConfig` RPC payloads); this module keeps their replies, keyed
//! by adapter, the caller's role and the exact request bytes. An entry is served only while the
//! experiments/configs generation it was computed under is current (any write on this instance
//! moves it) and no longer than the configured TTL after the oldest fetch it holds was assembled,
//! so it is never staler than the fetch cache would be.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{
    auth::Role,
    domain::{cache::BoundedCache, experiments::ENTRY_OVERHEAD_BYTES},
};

/// Request bodies above this size are not cached (a config read is a few hundred bytes).
const MAX_CACHED_REQUEST_BYTES: usize = 4 * 1024;
/// Slots of the doorkeeper that remembers requests seen once (8 bytes each: 1 MiB).
const DOORKEEPER_SLOTS: usize = 1 << 17;

/// Which adapter a reply was built by, so equal request bytes of the two never share an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyScope {
    /// A GraphQL request body; the entry holds the response body.
    GraphQL,
    /// The payload text of the `FetchRemoteConfig` RPC; the entry holds the reply payload text.
    FetchRemoteConfigRpc,
}

/// The request a reply answers.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    scope: ReplyScope,
    role: Role,
    request: Bytes,
}

impl ReplyKey {
    /// The key of a request, or `None` when the request is too large to be worth keeping.
    pub fn new(scope: ReplyScope, role: Role, request: &[u8]) -> Option<Self> {
        (request.len() <= MAX_CACHED_REQUEST_BYTES).then(|| ReplyKey {
            scope,
            role,
            request: Bytes::copy_from_slice(request),
        })
    }
}

struct Entry {
    generation: u64,
    /// Fetches the reply holds, counted as cache hits when it is served again.
    fetches: u64,
    expires_at: Instant,
    body: Bytes,
}

pub(super) struct ReplyCache {
    /// Kept until pushed out by the budget; served only before `expires_at`.
    entries: BoundedCache<ReplyKey, Arc<Entry>>,
    ttl: Duration,
    doorkeeper: Doorkeeper,
}

/// A reply found in the cache, and how many fetches it answers.
pub(super) struct CachedReply {
    pub body: Bytes,
    pub fetches: u64,
}

impl ReplyCache {
    /// Replies kept at most `bytes` of memory (keys, bodies and per-entry overhead).
    pub fn new(ttl: Duration, bytes: u64) -> Self {
        ReplyCache {
            entries: BoundedCache::new(
                bytes,
                ENTRY_OVERHEAD_BYTES + 512,
                |key: &ReplyKey, entry: &Arc<Entry>| {
                    ENTRY_OVERHEAD_BYTES + key.request.len() + entry.body.len()
                },
            ),
            ttl,
            doorkeeper: Doorkeeper::new(DOORKEEPER_SLOTS),
        }
    }

    /// The stored reply to this exact request, if it is still current for `generation`.
    pub fn get(&self, key: &ReplyKey, generation: u64) -> Option<CachedReply> {
        let entry = self.entries.get(key)?;
        if entry.generation != generation || entry.expires_at <= Instant::now() {
            return None;
        }
        Some(CachedReply {
            body: entry.body.clone(),
            fetches: entry.fetches,
        })
    }

    /// Keeps a successful reply computed under `generation` from what `freshness` observed.
    pub fn insert(&self, key: ReplyKey, generation: u64, freshness: &Freshness, body: Bytes) {
        let Some((oldest, fetches)) = freshness.observed() else {
            return;
        };
        let expires_at = oldest + self.ttl;
        if expires_at <= Instant::now() || self.doorkeeper.first_sighting(&key) {
            return;
        }
        self.entries.insert(
            key,
            Arc::new(Entry {
                generation,
                fetches,
                expires_at,
                body,
            }),
        );
    }
}

/// Admits a request's reply from its second computation on. At a launch most requests name a new
/// player and are never repeated; kept at once, their replies would cost an allocation and a cache
/// insertion each and push out the replies of players who do come back. Each slot remembers the
/// hash of the last request that landed on it: a collision can only admit a reply early or make a
/// request wait for one more sighting, never serve a wrong reply.
struct Doorkeeper {
    slots: Box<[AtomicU64]>,
    hasher: ahash::RandomState,
}

impl Doorkeeper {
    fn new(slots: usize) -> Self {
        Doorkeeper {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// True the first time `key` is seen (and remembers it); false when it was seen last on its slot.
    fn first_sighting(&self, key: &ReplyKey) -> bool {
        let hash = self.hasher.hash_one(key);
        let slot = &self.slots[(hash as usize) % self.slots.len()];
        slot.swap(hash, Ordering::Relaxed) != hash
    }
}

tokio::task_local! {
    /// The fetches of the reply being computed on this task, so config reads deep inside an
    /// adapter (a GraphQL resolver, an RPC arm) report their age without the adapter's help.
    static OBSERVED: Arc<Freshness>;
}

/// Runs `compute` while recording the config fetches it makes into `freshness`.
pub(super) async fn observing<T>(freshness: Arc<Freshness>, compute: impl Future<Output = T>) -> T {
    OBSERVED.scope(freshness, compute).await
}

/// Records a fetch assembled at `fetched_at` into the reply being computed, if any.
pub(super) fn observe(fetched_at: Instant) {
    let _ = OBSERVED.try_with(|freshness| freshness.observe(fetched_at));
}

/// Collected while a reply is computed: how old the oldest config fetch it used is, and how many.
#[derive(Default)]
pub(super) struct Freshness {
    observed: Mutex<Option<(Instant, u64)>>,
}

impl Freshness {
    fn observe(&self, fetched_at: Instant) {
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

    #[tokio::test]
    async fn a_reply_lives_until_its_oldest_fetch_expires_and_only_in_its_generation() {
        let cache = ReplyCache::new(Duration::from_secs(60), 1024 * 1024);
        let key = ReplyKey::new(ReplyScope::GraphQL, Role::Client, b"{}").unwrap();
        let freshness = Arc::new(Freshness::default());
        observing(freshness.clone(), async {
            observe(Instant::now());
            observe(Instant::now());
        })
        .await;
        cache.insert(key.clone(), 7, &freshness, Bytes::from_static(b"reply"));
        assert!(
            cache.get(&key, 7).is_none(),
            "a reply is kept from its second computation on"
        );
        cache.insert(key.clone(), 7, &freshness, Bytes::from_static(b"reply"));

        let hit = cache.get(&key, 7).expect("a hit in the same generation");
        assert_eq!((hit.body.as_ref(), hit.fetches), (&b"reply"[..], 2));
        assert!(cache.get(&key, 8).is_none(), "a later generation misses");
        let other_role = ReplyKey::new(
            ReplyScope::GraphQL,
            Role::Admin(crate::auth::KeyName::ADMIN),
            b"{}",
        )
        .unwrap();
        assert!(cache.get(&other_role, 7).is_none());

        let unobserved = Freshness::default();
        let other = ReplyKey::new(ReplyScope::FetchRemoteConfigRpc, Role::Client, b"{}").unwrap();
        cache.insert(other.clone(), 7, &unobserved, Bytes::from_static(b"x"));
        assert!(
            cache.get(&other, 7).is_none(),
            "a reply without fetches is not kept"
        );
        assert!(ReplyKey::new(ReplyScope::GraphQL, Role::Client, &[b' '; 4097]).is_none());
    }
}
