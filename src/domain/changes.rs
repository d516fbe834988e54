//! The record of writes to experiments and configs. Every cache derived from them (definitions,
//! config fetches, whole replies) remembers the generation it was computed under and is stale once
//! the generation moves; the services that write move it, the services that cache read it, and
//! `remoteConfigChanged` subscribers wait for it to move.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::watch;

#[derive(Clone)]
pub struct Changes(Arc<Inner>);

struct Inner {
    /// This instance among those sharing a database: its change notifications carry it, and its
    /// listener skips them (the write already forgot what it changed, after its commit).
    origin: String,
    generation: AtomicU64,
    /// Wakes waiters; the atomic stays the source of truth so that reads on the hot path take no
    /// lock.
    moved: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes(Arc::new(Inner {
            origin: uuid::Uuid::new_v4().simple().to_string(),
            generation: AtomicU64::new(0),
            moved: watch::Sender::new(0),
        }))
    }
}

impl Changes {
    /// Moves whenever an experiment or a config is written, on this instance or (through
    /// `db::notify`) on another one.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Who this instance is in the change notifications between instances.
    pub fn origin(&self) -> &str {
        &self.0.origin
    }

    /// Marks everything computed so far as stale. Callers forget their caches first, so a waiter
    /// woken here never reads what was forgotten.
    pub fn record(&self) {
        let generation = self.0.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.0.moved.send_replace(generation);
    }

    /// A receiver that sees every later move (several moves in a row may show as one).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.0.moved.subscribe()
    }
}
