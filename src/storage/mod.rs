//! Durable state: records, indexes and every state transition that writes them.
//!
//! The engine sees [`Store`] (`store.rs`): engine-level operations ([`Op`], `op.rs`) applied
//! as one batch in one transaction, plus the reads the engine and the CLI need. Under it the
//! layer has two halves:
//!
//! - `transitions/`: every state transition, written once, backend-neutral, over the narrow
//!   per-record trait `Records` (get/put a task or an execution, journal, mailbox, counters,
//!   state, cache, dead letters, scans). The policy lives here: retry or bury, the lost-attempt
//!   budget, cache eviction, retention order, dead-letter replay, parent settlement.
//! - `redb/`: the redb backend. It implements `Records` over its tables (and maintains every
//!   `idx_*` table inside its own put and remove functions), runs batches in transactions
//!   (`commit.rs`), recovers at open, answers reads and checks the file.
//!
//! A second backend implements `Records` and the read side, and reuses every transition.
//!
//! Architecture invariants:
//! - every transition is all-or-nothing: an [`Op`] either validates (reads only) and then
//!   writes, or is rejected having written nothing, so a rejected op never taints its batch;
//! - index entries are derived from records (`index.rs`) and written only by the backend's
//!   `put_*`/`remove_*` in the same transaction, so indexes cannot drift from records;
//! - only `codec` knows byte layouts; only `tables` names tables.

pub mod codec;
mod effect;
mod error;
pub mod export;
mod faults;
mod guard;
mod index;
mod op;
pub mod records;
mod redb;
mod store;
pub mod tables;
mod transitions;
mod wire;

pub use self::redb::{as_redb, ImportError, OpenOptions, RedbLocal, RedbStore, TransferReport, FILE_MODE_DEFAULT};
pub use effect::{Effect, ReadyItem};
pub use error::{Rejection, StorageError};
pub use faults::Faults;
pub use guard::Guarded;
pub use op::{
    ClaimLimits, ClaimedTask, CleanupCursor, CleanupParts, Continuation, EagerClaim, Flow, Local, LocalClosure,
    LocalFn, NewExecution, NewStep, Op, OpOutput, OpResult, Rate, ScheduleAction, ScheduleDraft, StepBody, StepTask,
    TERMINAL_STATES,
};
pub use store::{ExecutionContext, Store};
