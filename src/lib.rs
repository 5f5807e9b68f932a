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

pub mod api;
pub use engine::activity;
pub mod engine;
mod error;
pub mod lease;
pub mod storage;
mod sync;
pub mod testing;

pub use api::{
    Activity, ActivityError, CleanupReport, DeadLetter, DurationArg, ErrorKind, ExecutionFilter, ExecutionId,
    ExecutionInfo, ExecutionState, FunctionHandle, Page, RetryPolicy, RunningTask, TaskState, VerifyOnOpen,
    WorkerOptions, WorkerStatus, Workflow,
};
pub use engine::{
    CallOptions, Clock, Ctx, DispatchBuilder, Engine, EngineBuilder, ManualClock, SystemClock, WorkerPool,
};
pub use error::{Error, Result};
