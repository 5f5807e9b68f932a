//! The engine: registry, group-commit writer, in-memory ready queue, timers, workers and the
//! public [`Engine`] API.
//!
//! Architecture invariants:
//! - `engine` never names a redb type: it talks to `storage::Store` in engine operations;
//! - memory follows the disk: the ready queue, timers and waiters change only through the
//!   `Effect`s of a committed batch (or the recovery scan at open);
//! - a user future is started only after its claim is durable, and its outcome is written only
//!   with the claim's fencing token.

pub mod activity;
mod clock;
mod ctx;
mod parked;
mod ready;
mod registry;
mod timers;
mod unserved;
mod updates;
mod verify;
mod worker;
mod writer;

mod backup;
mod builder;
mod control;
#[cfg(all(unix, not(loom)))]
#[doc(hidden)]
pub mod control_socket;
mod dead_letters;
mod dispatch;
mod holder;
mod metrics;
mod otel;
mod queries;
mod redb_ext;
mod retention;
mod schedules;
mod shared;
mod spans;
mod stats;

use std::sync::Arc;
use std::time::Duration;

pub use builder::EngineBuilder;
pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use ctx::{CallOptions, ChildOptions, CounterRef, Ctx, Either, Race, Select, StateRef, Step, Update};
pub use dispatch::DispatchBuilder;
pub use schedules::Schedules;
use stats::Counters;
pub use stats::Stats;
pub use verify::{ReplayCheck, ReplayOutcome};
pub use worker::WorkerPool;

pub(crate) use shared::Inner;
use shared::*;

use crate::error::Error;
use crate::storage::OpOutput;

/// Past runs kept per execution that continues as new, by default (`EngineBuilder::runs_kept`).
pub const RUNS_KEPT_DEFAULT: u32 = 10;
/// Default limit on one payload (input, output) in bytes.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// Commands applied per transaction at most.
pub const BATCH_OPS_MAX_DEFAULT: usize = 2048;
/// How long a blocked workflow's future stays in memory by default.
pub const EVICT_AFTER_DEFAULT: Duration = Duration::from_secs(10);
/// Blocked workflow futures kept in memory at most by default.
pub const PARKED_WORKFLOWS_MAX_DEFAULT: usize = 1_000;
/// Records a retention cleanup removes per write transaction at most, so other work
/// interleaves with a large cleanup.
const CLEANUP_BUDGET: u32 = 256;
/// Commands waiting for the writer at most (back-pressure beyond that).
const COMMAND_QUEUE_MAX: usize = 16 * 1024;

/// A durable execution engine over one database file. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("seed", &self.inner.seed).finish_non_exhaustive()
    }
}

impl Engine {
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }
}

fn unexpected(output: OpOutput) -> Error {
    // The writer answers each op with its own output kind; anything else is a bug.
    debug_assert!(false, "unexpected op output {output:?}");
    Error::Internal(format!("unexpected op output {output:?}"))
}

fn json_value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}
