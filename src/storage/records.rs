//! Records as stored. Values shared with the API are serialized through storage's own types
//! (`wire.rs`), so the API cannot change the layout by itself. Changing a field here changes
//! the file format: bump
//! `codec::FORMAT_VERSION` or the schema version and write the migration (docs/design.md).

use serde::{Deserialize, Serialize};

use crate::api::{
    ActivityError, AttemptRecord, CatchUp, ExecutionState, Overlap, RetryPolicy, ScheduleSpec, TaskState,
};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: u64,
    pub function: String,
    pub queue: String,
    pub priority: i32,
    pub tags: Vec<String>,
    #[serde(with = "super::wire::execution_state")]
    pub state: ExecutionState,
    pub root_task: u64,
    pub created_ms: u64,
    pub scheduled_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub max_duration_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub output: Option<Vec<u8>>,
    #[serde(with = "super::wire::opt_error")]
    pub error: Option<ActivityError>,
    pub idempotency_key: Option<String>,
    /// For a child workflow: the parent's execution and the step waiting for this one.
    pub parent: Option<ParentStep>,
    // Appended in schema 5 (`SCHEMA5_EXECUTION_DEFAULTS` for older records):
    /// The version of the registered code the current run started under (`FunctionOptions::
    /// version`, default 1). An engine whose code is older does not run it.
    pub version: u32,
    /// The run number: 1, plus one per `Ctx::continue_as_new`.
    pub run: u32,
    /// When a graceful cancel was asked for (`Engine::cancel` of a workflow registered with
    /// `FunctionOptions::cancel_grace`): the workflow is compensating until it ends or its
    /// grace (in `deadline_ms`) runs out.
    pub cancel_requested_ms: Option<u64>,
    // Appended in schema 6 (`SCHEMA6_EXECUTION_DEFAULTS` for older records):
    /// The schedule fire that started it.
    pub schedule: Option<ScheduleOrigin>,
    /// The flow-control keys it was dispatched with.
    pub keys: ExecutionKeys,
}

/// The keys a dispatch gave an execution for flow control.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionKeys {
    /// Executions of its function with this key run at most `max_concurrent_per_key` at once;
    /// it holds a slot (`key_slots`) from its start to its end.
    pub concurrency: Option<String>,
    /// Its attempts count against its function's per-key rate limit under this key.
    pub rate: Option<String>,
    /// The debounce or throttle key (`flow_keys`) that names it, while it does.
    pub flow: Option<String>,
}

impl ExecutionKeys {
    pub const NONE: ExecutionKeys = ExecutionKeys { concurrency: None, rate: None, flow: None };
}

/// The encoding of the fields schema 5 appended to an `ExecutionRecord` (version 1, run 1, no
/// cancel asked for), appended to the records of an older file by its migration.
pub const SCHEMA5_EXECUTION_DEFAULTS: (u32, u32, Option<u64>) = (1, 1, None);
/// The fields schema 6 appended to an `ExecutionRecord` (no schedule started it, no keys).
pub const SCHEMA6_EXECUTION_DEFAULTS: (Option<ScheduleOrigin>, ExecutionKeys) = (None, ExecutionKeys::NONE);
/// The field schema 6 appended to a `TaskRecord` (no reserved rate-limit slot).
pub const SCHEMA6_TASK_DEFAULTS: (Option<u64>,) = (None,);
/// The field schema 5 appended to a `TaskRecord` (version 1).
pub const SCHEMA5_TASK_DEFAULTS: (u32,) = (1,);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentStep {
    pub execution_id: u64,
    pub step: u32,
}

/// A running task's lease, stored in its `TaskRecord`. Defined by the lease protocol, which
/// imports nothing from storage; its layout is part of the file format all the same
/// (`tests/file_format.rs`).
pub use crate::lease::LeaseRecord;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryRecord {
    pub max_attempts: u32,
    pub initial_delay_ms: u64,
    pub backoff_factor: f64,
    pub max_delay_ms: u64,
    pub jitter: f64,
    pub retry_codes: Vec<String>,
    pub permanent_codes: Vec<String>,
}

impl From<&RetryPolicy> for RetryRecord {
    fn from(p: &RetryPolicy) -> Self {
        RetryRecord {
            max_attempts: p.max_attempts,
            initial_delay_ms: duration_ms(p.initial_delay),
            backoff_factor: p.backoff_factor,
            max_delay_ms: duration_ms(p.max_delay),
            jitter: p.jitter,
            retry_codes: p.retry_codes.clone(),
            permanent_codes: p.permanent_codes.clone(),
        }
    }
}

impl From<&RetryRecord> for RetryPolicy {
    fn from(r: &RetryRecord) -> Self {
        RetryPolicy {
            max_attempts: r.max_attempts,
            initial_delay: Duration::from_millis(r.initial_delay_ms),
            backoff_factor: r.backoff_factor,
            max_delay: Duration::from_millis(r.max_delay_ms),
            jitter: r.jitter,
            retry_codes: r.retry_codes.clone(),
            permanent_codes: r.permanent_codes.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachePolicy {
    pub version: u32,
    pub ttl_ms: u64,
}

/// A cached result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub output: Vec<u8>,
    pub expires_ms: u64,
}

/// Milliseconds of a duration, saturating; stored times are `u64` milliseconds.
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Failed attempts kept per task; older ones are dropped (the count stays in `attempt`).
pub const HISTORY_ENTRIES_MAX: usize = 16;

/// What a task runs: an activity (side effects, retried) or a workflow (re-run over its journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    Activity,
    Workflow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: u64,
    pub execution_id: u64,
    pub kind: TaskKind,
    /// `None` for an execution's root task; the journal step it serves otherwise.
    pub step: Option<u32>,
    pub function: String,
    pub queue: String,
    pub priority: i32,
    pub tags: Vec<String>,
    pub input: Vec<u8>,
    #[serde(with = "super::wire::task_state")]
    pub state: TaskState,
    /// For a pending task: `Some(due)` while it waits in `idx_timers`, `None` once in
    /// `idx_ready`.
    pub due_ms: Option<u64>,
    /// Age for ordering among equal priorities: when it became (or becomes) due.
    pub ready_ms: u64,
    /// Claims ever made; the current claim's fencing token. Strictly increasing.
    pub attempt: u32,
    /// `attempt` when the current retry budget started (a DLQ replay starts a new one).
    pub round_start: u32,
    pub lease: Option<LeaseRecord>,
    pub retry: RetryRecord,
    pub timeout_ms: Option<u64>,
    /// A cached function's result is stored under (function, version, input) for `ttl_ms`.
    pub cache: Option<CachePolicy>,
    #[serde(with = "super::wire::attempts")]
    pub history: Vec<AttemptRecord>,
    pub created_ms: u64,
    // Appended in schema 5 (`SCHEMA5_TASK_DEFAULTS` for older records):
    /// The version of its function's code it needs: an engine whose registration of
    /// `function` is older does not claim it (a workflow's root task has its execution's).
    pub version: u32,
    // Appended in schema 6 (`SCHEMA6_TASK_DEFAULTS` for older records):
    /// A rate-limit slot reserved for its next claim: it was deferred to this time, which its
    /// function's budget already counts, so the claim at or after it takes no more.
    pub rate_slot_ms: Option<u64>,
}

impl TaskRecord {
    pub fn attempts_in_round(&self) -> u32 {
        self.attempt.saturating_sub(self.round_start)
    }

    pub fn push_history(&mut self, entry: AttemptRecord) {
        if self.history.len() >= HISTORY_ENTRIES_MAX {
            self.history.remove(0);
        }
        self.history.push(entry);
    }
}

/// What a workflow asked for at a step. A re-run asking for something else at the same step
/// is non-deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepKind {
    Call {
        function: String,
    },
    Sleep {
        until_ms: u64,
    },
    Now,
    Random,
    /// `timed`: the wait has a timeout, and its outcome is a JSON array of zero (timed out) or
    /// one (the signal's payload) elements.
    Signal {
        name: String,
        timed: bool,
    },
    Child {
        function: String,
    },
    Counter {
        name: String,
    },
    SetState {
        key: String,
    },
    GetState {
        key: String,
    },
    Local {
        name: String,
    },
    /// `Ctx::patched(id)` reached under code that has the patch: a marker with no outcome of
    /// its own (recorded as completed), telling replays to take the patched branch.
    Patch {
        id: String,
    },
    /// `Ctx::start_child`: a detached child execution; the outcome is its id.
    StartChild {
        function: String,
    },
    /// `Ctx::race` / `Ctx::select` over these steps: the outcome is the winner's index in the
    /// list (as JSON); the losers were cancelled by the same record.
    Race {
        steps: Vec<u32>,
    },
    /// `Ctx::cancel` of an earlier step (an activity, timer, signal wait or child).
    Cancel {
        step: u32,
    },
}

impl StepKind {
    /// Whether a re-run asking for `requested` at this step matches what was recorded. A
    /// sleep's end is computed from the clock, so only the kind is compared.
    pub fn matches(&self, requested: &StepKind) -> bool {
        match (self, requested) {
            (StepKind::Sleep { .. }, StepKind::Sleep { .. }) => true,
            (a, b) => a == b,
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepKind::Call { function } => write!(f, "call {function:?}"),
            StepKind::Sleep { until_ms } => write!(f, "sleep until {until_ms}"),
            StepKind::Now => write!(f, "now"),
            StepKind::Random => write!(f, "random"),
            StepKind::Signal { name, timed: false } => write!(f, "wait for signal {name:?}"),
            StepKind::Signal { name, timed: true } => write!(f, "wait for signal {name:?} with a timeout"),
            StepKind::Child { function } => write!(f, "child workflow {function:?}"),
            StepKind::Counter { name } => write!(f, "counter {name:?}"),
            StepKind::SetState { key } => write!(f, "set state {key:?}"),
            StepKind::GetState { key } => write!(f, "read state {key:?}"),
            StepKind::Local { name } => write!(f, "local step {name:?}"),
            StepKind::Patch { id } => write!(f, "patch {id:?}"),
            StepKind::StartChild { function } => write!(f, "detached child {function:?}"),
            StepKind::Race { steps } => write!(f, "race of steps {steps:?}"),
            StepKind::Cancel { step } => write!(f, "cancel step {step}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// The step's task exists and has no outcome yet.
    Scheduled {
        task_id: u64,
    },
    /// Waiting for a signal; `Op::Signal` settles it, or, with a timeout, the completion of
    /// the `timer` task (whichever commits first; the other is then refused or cancelled).
    AwaitingSignal {
        timer: Option<u64>,
    },
    /// A child execution runs the step; its end settles it.
    Child {
        execution_id: u64,
    },
    Completed {
        output: Vec<u8>,
    },
    Failed {
        #[serde(with = "super::wire::error")]
        error: ActivityError,
    },
}

impl StepOutcome {
    /// Whether the step has its outcome (nothing changes it afterwards, short of an operator's
    /// DLQ replay re-running a failed step).
    pub fn is_final(&self) -> bool {
        matches!(self, StepOutcome::Completed { .. } | StepOutcome::Failed { .. })
    }
}

/// One journal entry: key (execution id, step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub step: u32,
    pub kind: StepKind,
    pub outcome: StepOutcome,
    pub recorded_ms: u64,
}

/// Steps recorded per execution at most (bounded like everything that grows).
pub const JOURNAL_STEPS_MAX: u32 = 100_000;

/// The error code of a step cancelled with its execution (`Op::RequestCancel`): awaiting it
/// gives the workflow `Error::Cancelled`, and a workflow that returns that error ends
/// cancelled.
pub const EXECUTION_CANCELLED: &str = "execution_cancelled";

/// The mailbox name an update named `name` travels under (`Engine::update`): a signal whose
/// payload is `{"update": id, "payload": ...}`.
pub fn update_signal(name: &str) -> String {
    format!("stent.update/{name}")
}

/// The custom state key holding the reply to update `update` (`Ctx::reply`).
pub fn reply_key(update: u64) -> String {
    format!("stent.reply/{update}")
}

/// The update a custom state key answers, if it is a reply key.
pub fn reply_of(key: &str) -> Option<u64> {
    key.strip_prefix("stent.reply/")?.parse().ok()
}

/// A run an execution ended with `Ctx::continue_as_new`: key (execution id, run). Its journal
/// moved, entry by entry, to `run_steps` under (execution id, run, step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: u32,
    /// The code version it ran under.
    pub version: u32,
    /// The input it started with.
    pub input: Vec<u8>,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Journal steps it recorded.
    pub steps: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    pub id: u64,
    pub execution_id: u64,
    pub task_id: u64,
    pub function: String,
    pub queue: String,
    pub input: Vec<u8>,
    #[serde(with = "super::wire::error")]
    pub error: ActivityError,
    pub attempts: u32,
    #[serde(with = "super::wire::attempts")]
    pub history: Vec<AttemptRecord>,
    pub failed_ms: u64,
}

/// Order-preserving map of a priority to an index key component: higher priority sorts first.
pub fn priority_key(priority: i32) -> u32 {
    !((priority as u32) ^ 0x8000_0000)
}

pub fn state_code(state: ExecutionState) -> u8 {
    match state {
        ExecutionState::Pending => 0,
        ExecutionState::Running => 1,
        ExecutionState::Completed => 2,
        ExecutionState::Failed => 3,
        ExecutionState::TimedOut => 4,
        ExecutionState::Cancelled => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_sorts_first() {
        let ps = [i32::MIN, -5, 0, 1, 7, i32::MAX];
        for w in ps.windows(2) {
            assert!(priority_key(w[1]) < priority_key(w[0]), "{w:?}");
        }
    }
}

/// Which schedule fire started an execution: the schedule's name and the fire's nominal time
/// (for a `trigger`, when it was triggered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleOrigin {
    pub name: String,
    pub nominal_ms: u64,
    pub triggered: bool,
}

/// How a schedule starts its executions: the dispatch options of its function, taken from the
/// registration when the schedule was written (and from this engine's registration at each
/// fire, when it has the function).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionTemplate {
    pub function: String,
    pub kind: TaskKind,
    pub queue: String,
    pub priority: i32,
    pub retry: RetryRecord,
    pub timeout_ms: Option<u64>,
    pub cache: Option<CachePolicy>,
    pub version: u32,
}

/// A schedule (table `schedules`, by name). Every nominal time up to `after_ms` is done: fired,
/// skipped or missed; `next_ms` is the first one after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub name: String,
    pub template: ExecutionTemplate,
    /// The JSON input of every execution it starts.
    pub input: Vec<u8>,
    #[serde(with = "super::wire::schedule_spec")]
    pub spec: ScheduleSpec,
    #[serde(with = "super::wire::catch_up")]
    pub catch_up: CatchUp,
    #[serde(with = "super::wire::overlap")]
    pub overlap: Overlap,
    pub jitter_ms: u64,
    pub paused: bool,
    pub after_ms: u64,
    pub next_ms: Option<u64>,
    /// A fire held by `Overlap::BufferOne` until `last_execution` ends.
    pub buffered: Option<u64>,
    pub last_execution: Option<u64>,
    pub last_fire_ms: Option<u64>,
    pub fires: u64,
    pub skipped: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

impl ScheduleRecord {
    /// When the schedule's timer should go off: at once for a buffered fire whose wait is over
    /// (`running`: the last execution has not ended), at the next fire's jittered time, or
    /// never (paused, or no time left).
    pub fn wake_ms(&self, now: u64, running: bool) -> Option<u64> {
        if self.paused {
            return None;
        }
        if self.buffered.is_some() && !running {
            return Some(now);
        }
        self.due_ms()
    }

    /// When its next fire is due (its jittered time), unless paused: the `idx_schedule_due`
    /// entry the record implies.
    pub fn due_ms(&self) -> Option<u64> {
        match self.paused {
            true => None,
            false => self.next_ms.map(|n| crate::api::jittered(&self.name, n, self.jitter_ms)),
        }
    }
}
