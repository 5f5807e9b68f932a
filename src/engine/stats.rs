//! Counters of what the engine did: kept as atomics inside the engine (`Counters`), handed to
//! callers as a plain snapshot (`Stats`), so nobody outside can change them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Declares the counters once: the engine's atomics and the public snapshot.
macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// The engine's live counters.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
        }

        /// What the engine did since it was opened (`Engine::stats`): a snapshot, for tests,
        /// benches and dashboards.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        #[non_exhaustive]
        pub struct Stats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                Stats { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Write transactions committed.
    batches,
    /// Operations applied in them.
    ops,
    /// Attempts started.
    claims,
    /// Attempts whose outcome was committed as a success.
    completions,
    /// Attempts that failed.
    failures,
    /// Workflow attempts that ended blocked on steps (not failures).
    suspensions,
    /// Workflow runs ended by `Ctx::continue_as_new` (each started the next run).
    runs_continued,
    /// Workflow attempts that resumed a parked future instead of replaying the journal.
    resumes,
    lease_renewals,
    leases_lost,
    /// Warnings logged about ready work no pool of this process serves.
    unserved_warnings,
    /// Claims over a rate limit: each deferred its task to the slot it reserved.
    rate_limited,
    /// Claims that found their concurrency key full: each task waits for a slot.
    key_waits,
}

impl Counters {
    pub(super) fn record_batch(&self, ops: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(ops as u64, Ordering::Relaxed);
    }
}
