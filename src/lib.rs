//! stent: durable execution embedded in a Rust program.
//!
//! Functions registered with an [`Engine`] run as tasks whose every state change is committed
//! to one local redb file before it is acted on: a dispatched execution survives crashes and
//! restarts, failed attempts are retried under a stored [`RetryPolicy`], exhausted ones land in
//! a dead-letter queue an operator can replay, and a worker that loses its lease can never
//! overwrite the work of the worker that took over (fencing tokens).
//!
//! Start with [`Engine::builder`]; `examples/quickstart.rs` is a complete program.
#![deny(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod api;
mod engine;
mod error;
mod lease;
mod sync;
pub mod testing;

// Internals reached by stent's own integration tests, benches and fuzzers (the store, its
// records and codec). Not part of the API: hidden from the docs, and free to change.
#[doc(hidden)]
pub mod storage;
#[doc(hidden)]
pub mod __internal {
    pub use crate::lease::{ClaimRefused, Fence, Limiter};
}

/// redb, whose types appear in the API (`EngineBuilder::backend`, `Ctx::local`,
/// `Engine::read`): use this one, and versions never disagree.
pub use redb;

pub use api::{
    Activity, ActivityError, AttemptRecord, CatchUp, CleanupParts, CleanupReport, DeadLetter, DeadLetterId,
    DurationArg, ErrorKind, ExecutionFilter, ExecutionId, ExecutionInfo, ExecutionState, FunctionHandle,
    FunctionOptions, KeyUsage, Overlap, Page, RetryPolicy, RunInfo, RunningTask, Schedule, ScheduleFire, ScheduleInfo,
    ScheduleSpec, ScheduledBy, StepInfo, TaskId, TaskInfo, TaskState, UnservedWork, VerifyOnOpen, WorkerOptions,
    WorkerStatus, Workflow, CATCH_UP_ALL_MAX_DEFAULT, MISFIRE_GRACE, PROGRESS_LINES_MAX,
};
pub use engine::activity;
#[cfg(all(unix, not(loom)))]
#[doc(hidden)]
pub use engine::control_socket;
pub use engine::{
    CallOptions, ChildOptions, Clock, CounterRef, Ctx, DispatchBuilder, Either, Engine, EngineBuilder, ManualClock,
    Race, ReplayCheck, ReplayOutcome, Schedules, Select, Sleep, StateRef, Stats, Step, SystemClock, Update, WorkerPool,
    BATCH_OPS_MAX_DEFAULT, EVICT_AFTER_DEFAULT, PARKED_WORKFLOWS_MAX_DEFAULT, PAYLOAD_BYTES_MAX_DEFAULT,
    RUNS_KEPT_DEFAULT,
};
pub use error::{Error, NextRun, Result};
pub use lease::LeaseError;
pub use storage::{ImportError, StorageError, TransferReport};

/// The README's code blocks, compiled as doctests so the first thing a user copies works.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
