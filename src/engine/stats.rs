//! Counters of what the engine did.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the engine did, for tests, benches and dashboards.
#[derive(Debug, Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub ops: AtomicU64,
    pub claims: AtomicU64,
    pub completions: AtomicU64,
    pub failures: AtomicU64,
    /// Workflow attempts that ended blocked on steps (not failures).
    pub suspensions: AtomicU64,
    /// Workflow attempts that resumed a parked future instead of replaying the journal.
    pub resumes: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub leases_lost: AtomicU64,
    /// Warnings logged about ready work no pool of this process serves.
    pub unserved_warnings: AtomicU64,
}

impl Stats {
    pub(super) fn record_batch(&self, ops: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(ops as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
