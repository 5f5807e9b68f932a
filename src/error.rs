//! The one public error type. Each layer has its own enum (`storage::StorageError`,
//! `lease::LeaseError`); they convert into [`Error`] at the API boundary.

use crate::api::{ActivityError, DeadLetterId, ExecutionId, TaskId};
use crate::lease::LeaseError;
use crate::storage::{Rejection, StorageError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The input of an execution's next run (see [`Error::ContinueAsNew`]).
#[derive(Debug, Clone)]
pub struct NextRun {
    pub(crate) input: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A name was dispatched or called that this engine does not have registered.
    #[error("function {name:?} is not registered; registered: [{}]", registered.join(", "))]
    UnknownFunction { name: String, registered: Vec<String> },
    /// The engine's configuration cannot work: a name registered twice, a reserved name, a
    /// bad duration among the builder's options, no tokio runtime.
    #[error("configuration error: {0}")]
    Config(String),
    /// A workflow asked for more steps than one journal holds (`JOURNAL_STEPS_MAX`).
    #[error(
        "execution {execution_id}: the journal is full ({steps_max} steps); a workflow that loops should \
         end each run with `ctx.continue_as_new(&state)`, which starts the next run with an empty journal"
    )]
    JournalFull { execution_id: ExecutionId, steps_max: u32 },
    /// `Engine::update`: the execution ended without answering the update.
    #[error("execution {id} ended without answering update {name:?}")]
    UpdateUnanswered { id: ExecutionId, name: String },
    /// Not a failure: what [`crate::Ctx::continue_as_new`] returns, for the workflow to return
    /// in turn; the engine then ends this run and starts the next one with the input it holds.
    #[error("the workflow continues as new (return this from the workflow: it ends the run, it is not a failure)")]
    ContinueAsNew(NextRun),
    /// A dead letter cannot be replayed as asked (its execution is no longer failed, or the
    /// step named is not a failed call).
    #[error("dead letter {id} cannot be replayed: {reason}")]
    NotReplayable { id: DeadLetterId, reason: String },
    /// `stent::testing::run_until_idle` gave up: the engine was still busy.
    #[error("the engine is still busy after {0:?}")]
    NotIdle(std::time::Duration),
    /// A bug in stent (an invariant did not hold); the message says which.
    #[error("internal error: {0}")]
    Internal(String),
    /// Options that cannot work, such as a worker pool with `max_concurrency: 0`.
    #[error("invalid {what}: {reason}")]
    InvalidOptions { what: &'static str, reason: String },
    #[error("execution {0} does not exist")]
    UnknownExecution(ExecutionId),
    #[error("task {task_id} does not exist")]
    UnknownTask { task_id: TaskId },
    #[error("dead letter {0} does not exist")]
    UnknownDeadLetter(DeadLetterId),
    /// A payload could not be turned into JSON, or JSON into the declared type.
    #[error("payload for {function:?}: {reason}")]
    Payload { function: String, reason: String },
    #[error("payload of {bytes} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge { bytes: u64, limit: u64 },
    /// A schedule's spec cannot work (a cron expression that does not parse, an unknown time
    /// zone, an interval under a second).
    #[error("invalid schedule {spec}: {reason}")]
    InvalidSchedule { spec: String, reason: String },
    #[error("schedule {0:?} does not exist")]
    UnknownSchedule(String),
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration { input: String, reason: String },
    /// A workflow asked for a different operation at a step than its journal recorded: its
    /// code changed under a running execution. Nothing is overwritten; fix the code and
    /// replay the dead letter.
    #[error("non-determinism at step {step}: journal has {recorded}, workflow asked for {requested}")]
    NonDeterminism { step: u32, recorded: String, requested: String },
    /// An activity called by a workflow failed (after its retries).
    #[error("step {step} ({function}) failed: {error}")]
    StepFailed { step: u32, function: String, error: ActivityError },
    /// A signal was sent to an execution that has finished.
    #[error("execution {id} is {state}; it takes no more signals")]
    ExecutionFinished { id: ExecutionId, state: crate::api::ExecutionState },
    /// A local step's closure failed; its writes were discarded (internal: the step is then
    /// recorded as failed).
    #[error("local step {step} failed: {error}")]
    LocalStepFailed { step: u32, error: ActivityError },
    #[error("execution {id} failed: {error}")]
    ExecutionFailed { id: ExecutionId, error: ActivityError },
    #[error("execution {0} was cancelled")]
    Cancelled(ExecutionId),
    #[error("execution {0} exceeded its max_duration")]
    TimedOut(ExecutionId),
    /// `wait_for` gave up before the execution finished; the execution goes on.
    #[error("gave up waiting for execution {0}; it has not finished")]
    WaitTimeout(ExecutionId),
    /// The task's attempt counter (its fencing token) reached `u32::MAX`: it cannot be
    /// claimed again without weakening fencing.
    #[error("task {task_id} has used every fencing token (u32::MAX attempts)")]
    TokensExhausted { task_id: TaskId },
    /// A claim lost a race (the task was cancelled, re-queued or already taken).
    #[error("task {task_id} is not claimable")]
    TaskNotClaimable { task_id: TaskId },
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An import was refused; nothing was written.
    #[error("import refused: {0}")]
    Import(#[from] crate::storage::ImportError),
    /// The engine was closed (or all its handles dropped) while the request was in flight.
    #[error("the engine is shut down")]
    Shutdown,
    /// The engine was opened with `EngineBuilder::read_only`.
    #[error("the database is open read-only; nothing was changed")]
    ReadOnly,
    /// Another process has the file open for writing (two engines never write one file).
    #[error("database file {path} is in use by pid {pid}")]
    InUseBy { path: String, pid: u32 },
    /// The engine reached through a control socket refused a request or could not be reached:
    /// `kind` is `not_found`, `bad_request`, `refused`, `failed` or `unreachable`, the message
    /// what the engine (or the connection) said.
    #[error("{message}")]
    Remote { kind: String, message: String },
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::UnknownExecution(id) => Error::UnknownExecution(ExecutionId(id)),
            Rejection::UnknownTask(id) => Error::UnknownTask { task_id: TaskId(id) },
            Rejection::UnknownDeadLetter(id) => Error::UnknownDeadLetter(DeadLetterId(id)),
            Rejection::TaskNotClaimable(id) => Error::TaskNotClaimable { task_id: TaskId(id) },
            Rejection::TokensExhausted(id) => Error::TokensExhausted { task_id: TaskId(id) },
            Rejection::JournalFull { execution_id, steps_max } => {
                Error::JournalFull { execution_id: ExecutionId(execution_id), steps_max }
            }
            Rejection::NonDeterminism { step, recorded, requested } => {
                Error::NonDeterminism { step, recorded, requested }
            }
            Rejection::ExecutionFinished { id, state } => Error::ExecutionFinished { id: ExecutionId(id), state },
            Rejection::NotReplayable { id, reason } => Error::NotReplayable { id: DeadLetterId(id), reason },
            Rejection::LocalStepFailed { step, error } => Error::LocalStepFailed { step, error },
            Rejection::UnknownSchedule(name) => Error::UnknownSchedule(name),
            Rejection::InvalidSchedule { spec, reason } => Error::InvalidSchedule { spec, reason },
            Rejection::Lease(e) => Error::Lease(e),
            Rejection::Storage(e) => Error::Storage(e),
            Rejection::Internal(message) => Error::Internal(message),
        }
    }
}

impl Error {
    /// Whether trying the same request again later can succeed. Corruption, poisoning and bad
    /// input never do; a full channel or a lost lease race might.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_retryable(),
            Error::WaitTimeout(_) => true,
            _ => false,
        }
    }
}
