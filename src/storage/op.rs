//! The engine's requests to storage: one [`Op`] per state transition, its result, and the
//! values ops carry (a new execution, a new workflow step, a continuation).

use super::records::{
    CachePolicy, ExecutionKeys, ExecutionTemplate, RetryRecord, ScheduleOrigin, ScheduleRecord, StepKind, TaskKind,
    TaskRecord,
};
use super::Rejection;
use crate::api::{ActivityError, CatchUp, ExecutionState, Overlap, ScheduleSpec};

/// A new execution and its root task.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub function: String,
    pub kind: TaskKind,
    pub queue: String,
    pub priority: i32,
    pub tags: Vec<String>,
    pub input: Vec<u8>,
    pub delay_ms: u64,
    pub max_duration_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    pub retry: RetryRecord,
    pub timeout_ms: Option<u64>,
    pub cache: Option<CachePolicy>,
    /// The version of the code it starts under (its function's registration).
    pub version: u32,
    /// Claim the new task in the same transaction, for an idle worker reserved by the engine
    /// (saves a commit on the path from dispatch to completion). Ignored for delayed tasks.
    pub claim: Option<EagerClaim>,
    /// The schedule fire that starts it (set only by a schedule's own transition).
    /// (Boxed, as `flow`: rare, and every op in flight carries the space.)
    pub schedule: Option<Box<ScheduleOrigin>>,
    /// Its flow-control keys (concurrency, rate; the flow key is set by `flow`).
    pub keys: ExecutionKeys,
    /// Debounce or throttle: a dispatch that may fold into an earlier one.
    pub flow: Option<Box<Flow>>,
}

/// How a dispatch folds into an earlier one with the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Inside `window_ms` of the last dispatch with `key`, while the execution it started has
    /// not started running, the input is replaced and the start moved to `window_ms` from now,
    /// but no later than `max_wait_ms` after the first dispatch of the window.
    Debounce { key: String, window_ms: u64, max_wait_ms: Option<u64> },
    /// Inside `window_ms` of the dispatch that started an execution with `key`, later
    /// dispatches get that execution.
    Throttle { key: String, window_ms: u64 },
}

/// A rate limit: `per` starts in any `period_ms`, with bursts of up to `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per: u32,
    pub period_ms: u64,
}

/// The flow control a claim enforces, from the function's registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimLimits {
    /// The function's own rate limit: every attempt of its tasks counts.
    pub rate: Option<Rate>,
    /// Per rate key (an execution dispatched with one): the attempts of its root task.
    pub key_rate: Option<Rate>,
    /// Running executions per concurrency key at most (0: no limit).
    pub key_max: u32,
}

impl ClaimLimits {
    pub fn is_none(&self) -> bool {
        self.rate.is_none() && self.key_rate.is_none() && self.key_max == 0
    }
}

/// A schedule's definition, checked by the engine (`Op::PutSchedule`).
#[derive(Debug, Clone)]
pub struct ScheduleDraft {
    pub name: String,
    pub template: ExecutionTemplate,
    pub input: Vec<u8>,
    pub spec: ScheduleSpec,
    pub catch_up: CatchUp,
    pub overlap: Overlap,
    pub jitter_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleAction {
    Pause,
    Resume,
    Delete,
}

/// Asks an outcome op to claim the task it makes ready (the first new step of a suspension,
/// or the workflow a step's completion wakes) for the same worker, in the same transaction:
/// one commit fewer per workflow step. Claimed only if it is `function` and the worker serves
/// its queue and tags.
#[derive(Debug, Clone)]
pub struct Continuation {
    pub worker: String,
    pub lease_ms: u64,
    /// The engine's number for the next attempt (bound by `Effect::Claimed`).
    pub serial: u64,
    pub function: String,
    /// The worker's version of `function`: a task needing newer code is left to the normal
    /// claim (which an engine with that code makes).
    pub version: u32,
    pub queues: Vec<String>,
    pub tags: Vec<String>,
    /// For a suspension: the new step whose task to claim.
    pub step: Option<u32>,
}

impl Continuation {
    pub(super) fn accepts(&self, task: &TaskRecord) -> bool {
        // A task out of fencing tokens is left to the normal claim, which refuses it.
        task.attempt < u32::MAX
            && task.function == self.function
            && task.version <= self.version
            && self.queues.contains(&task.queue)
            && (task.tags.is_empty() || task.tags.iter().any(|t| self.tags.contains(t)))
    }
}

#[derive(Debug, Clone)]
pub struct EagerClaim {
    pub worker: String,
    pub lease_ms: u64,
    /// The engine's number for the attempt, bound to the task by `Effect::Claimed`.
    pub serial: u64,
}

/// The body of a local step (`Ctx::local`), opaque here: each backend defines the closure type
/// it runs inside its transaction (the redb backend's is `storage::redb::RedbLocal`) and
/// refuses any other. Run at most once.
pub type LocalClosure = Box<dyn std::any::Any + Send>;

#[derive(Clone)]
pub struct LocalFn(pub std::sync::Arc<std::sync::Mutex<Option<LocalClosure>>>);

impl LocalFn {
    pub fn new(f: LocalClosure) -> Self {
        LocalFn(std::sync::Arc::new(std::sync::Mutex::new(Some(f))))
    }

    pub(super) fn take(&self) -> Option<LocalClosure> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for LocalFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalFn(..)")
    }
}

impl Op {
    /// Whether the op runs application code that may write and then fail: it then gets a
    /// transaction of its own.
    pub fn is_exclusive(&self) -> bool {
        match self {
            Op::Suspend { steps, .. } => steps.iter().any(|s| matches!(s.body, StepBody::Local(_))),
            _ => false,
        }
    }
}

/// What an attempt recorded besides its outcome, applied only if the outcome is accepted.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Counter increments for the task's execution (from an activity).
    pub counters: Vec<(String, i64)>,
    /// State values (JSON) for the task's execution (from an activity).
    pub state: Vec<(String, Vec<u8>)>,
    /// A workflow's local steps taken after its last suspension (clock reads, counters, state).
    pub steps: Vec<NewStep>,
}

/// A step a workflow attempt asks for that its journal does not have yet: a task to create.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub step: u32,
    pub kind: StepKind,
    pub body: StepBody,
}

/// What recording a new step does.
#[derive(Debug, Clone)]
pub enum StepBody {
    /// Create a task for the step (an activity call, or a timer when `due_ms` is set).
    Task(StepTask),
    /// The outcome is known now (clock reads, random draws): record it.
    Recorded(Vec<u8>),
    /// Take the oldest signal of this name from the mailbox, or wait for one (until
    /// `timer.due_ms` when a timer task is given).
    Signal { name: String, timer: Option<StepTask> },
    /// Start a child execution; its end is the step's outcome. A `detached` child has no
    /// parent link (ending the parent leaves it running) and the step's outcome is its id, at
    /// once. A child with an idempotency key held by an execution: a detached start gets that
    /// execution's id, an attached child's step fails (code `duplicate_key`).
    Child { new: Box<NewExecution>, detached: bool },
    /// Add to an execution counter; the outcome is the new total.
    Counter { name: String, delta: i64 },
    /// Set a custom state value (JSON).
    SetState { key: String, value: Vec<u8> },
    /// Read a custom state value; the outcome is `[value]` or `[]`.
    GetState { key: String },
    /// Run the application's closure on the recording transaction (`Ctx::local`). An op that
    /// carries one runs in a transaction of its own, so a failing closure leaves no writes.
    Local(LocalFn),
    /// A local step whose closure failed: recorded as failed.
    Failed(ActivityError),
    /// A race decided (`Ctx::race`): `output` is the winner's index; the `losers` (steps of
    /// the journal) are cancelled, each failing with code `cancelled` unless it has an outcome.
    Race { output: Vec<u8>, losers: Vec<u32> },
    /// `Ctx::cancel`: the step is cancelled as a race's loser is, unless it has an outcome.
    Cancel { step: u32 },
}

#[derive(Debug, Clone)]
pub struct StepTask {
    pub function: String,
    pub queue: String,
    pub priority: i32,
    pub input: Vec<u8>,
    pub retry: RetryRecord,
    pub timeout_ms: Option<u64>,
    pub due_ms: Option<u64>,
    pub cache: Option<CachePolicy>,
    /// The version of the function's code the task needs.
    pub version: u32,
}

/// One engine-level state transition.
// An op is built once and moved into the writer's batch; boxing the large variant would add
// an allocation to every dispatch for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Op {
    Dispatch(NewExecution),
    /// `version`: the claiming engine's version of the task's function; a task that needs
    /// newer code is refused (`TaskNotClaimable`).
    /// `limits`: the function's flow control. A claim over a rate limit defers the task to
    /// its reserved slot (`OpOutput::Deferred`); one whose execution would pass its
    /// concurrency key's limit waits for a slot (`OpOutput::KeyBusy`).
    Claim {
        task_id: u64,
        worker: String,
        lease_ms: u64,
        version: u32,
        limits: ClaimLimits,
    },
    /// Renews each `(task id, token)` lease; `details` are progress an attempt recorded since
    /// the last renewal (`stent::activity::heartbeat`), by task id, written only where that
    /// task's renewal is accepted.
    Renew {
        leases: Vec<(u64, u32)>,
        lease_ms: u64,
        details: Vec<(u64, Vec<u8>)>,
    },
    /// The attempt's outcome; `local` carries what it recorded beside it (activity counters
    /// and state, a workflow's last local steps), committed in the same transaction.
    Complete {
        task_id: u64,
        token: u32,
        output: Vec<u8>,
        local: Local,
        next: Option<Continuation>,
    },
    /// A graceful cancel of a workflow execution: its open steps are cancelled (each fails
    /// with code `execution_cancelled`), it is woken to compensate, and it is ended as
    /// cancelled `grace_ms` from now if it has not ended by then. Anything else, or a second
    /// request, is cancelled at once.
    RequestCancel {
        execution_id: u64,
        grace_ms: u64,
    },
    /// A workflow attempt ended its run with `Ctx::continue_as_new`: the run's journal is
    /// archived (the latest `runs_kept` past runs kept), its live steps cancelled and their
    /// tasks removed, and the root task made pending again with `input` under `version` (or
    /// claimed for `next`).
    ContinueAsNew {
        task_id: u64,
        token: u32,
        input: Vec<u8>,
        local: Local,
        version: u32,
        runs_kept: u32,
        next: Option<Continuation>,
    },
    /// `jitter_unit` is a uniform draw in `[0, 1)` from the engine's seeded RNG.
    Fail {
        task_id: u64,
        token: u32,
        error: ActivityError,
        jitter_unit: f64,
    },
    /// The reaper found the lease with `token` past its expiry.
    Expire {
        task_id: u64,
        token: u32,
    },
    /// A workflow attempt is blocked: record its new steps (creating their tasks) and suspend
    /// it until one of the `awaiting` steps has an outcome (at once if one already has).
    Suspend {
        task_id: u64,
        token: u32,
        steps: Vec<NewStep>,
        awaiting: Vec<u32>,
        next: Option<Continuation>,
    },
    /// A draining worker gives a running attempt back (counted as an attempt).
    Abandon {
        task_id: u64,
        token: u32,
        reason: String,
    },
    Cancel {
        execution_id: u64,
    },
    /// Delivers a signal: to the oldest step waiting for it, else into the FIFO mailbox.
    Signal {
        execution_id: u64,
        name: String,
        payload: Vec<u8>,
    },
    TimeOut {
        execution_id: u64,
    },
    /// Delivers signal `name` to the execution that holds idempotency key `key`, creating it
    /// from `new` (with that key) first if none does: both in one transaction.
    SignalWithStart {
        key: String,
        new: NewExecution,
        name: String,
        payload: Vec<u8>,
    },
    ReplayDeadLetter {
        id: u64,
        input: Option<Vec<u8>>,
    },
    DiscardDeadLetter {
        id: u64,
    },
    /// Replays a failed workflow execution, running failed step `step` again with `input`.
    ReplayDeadLetterStep {
        id: u64,
        step: u32,
        input: Vec<u8>,
    },
    /// Creates schedule `name` or updates its definition (keeping its cursor and pause).
    PutSchedule(ScheduleDraft),
    ControlSchedule {
        name: String,
        action: ScheduleAction,
    },
    /// The schedule's timer went off: the fires due now are started, in this transaction,
    /// with the cursor moved past them. `trigger`: one fire now, whatever the time.
    /// `template`: the engine's registration of the function, when it has one.
    FireSchedule {
        name: String,
        template: Option<ExecutionTemplate>,
        trigger: bool,
    },
    /// Retention: removes dead letters and finished executions (with all their records) from
    /// before `cutoff_ms`, and expired cache entries; at most `budget` of them per op (so the
    /// writer is never held long), going on from `from`.
    Cleanup {
        cutoff_ms: u64,
        budget: u32,
        from: CleanupCursor,
        parts: CleanupParts,
    },
}

pub use crate::api::CleanupParts;

/// Where a retention cleanup goes on: dead letters, then the cache, then finished executions
/// by terminal state (an index into `TERMINAL_STATES`) and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupCursor {
    DeadLetters,
    Cache,
    Executions { state: usize, after: u64 },
}

/// The states an execution can be removed in, in the order a cleanup visits them.
pub const TERMINAL_STATES: [crate::api::ExecutionState; 4] = [
    crate::api::ExecutionState::Completed,
    crate::api::ExecutionState::Failed,
    crate::api::ExecutionState::TimedOut,
    crate::api::ExecutionState::Cancelled,
];

#[derive(Debug, Clone)]
pub struct ClaimedTask {
    pub task_id: u64,
    pub execution_id: u64,
    pub kind: TaskKind,
    /// For a workflow step's task: the workflow function its completion wakes.
    pub wakes: Option<String>,
    pub queue: String,
    pub function: String,
    pub input: Vec<u8>,
    pub token: u32,
    pub lease_expires_ms: u64,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug)]
pub enum OpOutput {
    /// `claimed` is set when the dispatch also claimed the task (`NewExecution::claim`).
    Dispatched {
        execution_id: u64,
        created: bool,
        claimed: Option<ClaimedTask>,
    },
    Claimed(ClaimedTask),
    /// A claim over a rate limit: the task waits (a timer) for the slot reserved for it.
    Deferred {
        until_ms: u64,
    },
    /// A claim that would start an execution beside `max_concurrent_per_key` running ones with
    /// its concurrency key: it waits (`Effect::KeyWait`) for one of them to end.
    KeyBusy,
    Renewed(Vec<Result<u64, Rejection>>),
    Done,
    /// A failed attempt was recorded: its task was re-queued for a retry (`buried: false`) or
    /// its execution failed into the dead-letter queue (`buried: true`).
    Failed {
        buried: bool,
    },
    /// Whether the lease was in fact expired and the task re-queued or buried.
    Expired(bool),
    /// The execution's state after the request.
    State(ExecutionState),
    Replayed {
        execution_id: u64,
    },
    /// The op was accepted and, as asked (`Continuation`), claimed the next task for the
    /// same worker in its transaction.
    Next(ClaimedTask),
    /// A schedule after the op (`None`: deleted), and the execution a trigger started (`None`
    /// when its overlap policy started none).
    Schedule {
        record: Option<Box<ScheduleRecord>>,
        fired: Option<u64>,
    },
    /// A cleanup step: what it removed, and where to go on (`None`: nothing is left).
    Cleaned {
        removed: crate::api::CleanupReport,
        next: Option<CleanupCursor>,
    },
}

pub type OpResult = Result<OpOutput, Rejection>;
