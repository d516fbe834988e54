//! The record of writes to experiments and configs. Every cache derived from them (definitions,
//! config fetches, whole replies) remembers the generation it was computed under and is stale once
//! the generation moves; the services that write move it, the services that cache read it.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

#[derive(Clone, Default)]
pub struct Changes(Arc<AtomicU64>);

impl Changes {
    /// Moves whenever an experiment or a config is written on this instance.
    pub fn generation(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Marks everything computed so far as stale.
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}
