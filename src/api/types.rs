use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A typed name for a registered function. The name is what is stored; the types make a wrong
/// input a compile error at `dispatch`.
pub trait FunctionHandle: Copy + Send + Sync + 'static {
    type Input: Serialize + DeserializeOwned + Send + 'static;
    type Output: Serialize + DeserializeOwned + Send + 'static;
    fn name(&self) -> &'static str;
}

/// Defines a typed function handle: a name, and the input and output types as phantom data.
macro_rules! function_handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<I, O> {
            name: &'static str,
            _types: PhantomData<fn(I) -> O>,
        }

        impl<I, O> $name<I, O> {
            pub const fn new(name: &'static str) -> Self {
                $name { name, _types: PhantomData }
            }
        }

        impl<I, O> Clone for $name<I, O> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<I, O> Copy for $name<I, O> {}

        impl<I, O> fmt::Debug for $name<I, O> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.name)
            }
        }

        impl<I, O> FunctionHandle for $name<I, O>
        where
            I: Serialize + DeserializeOwned + Send + 'static,
            O: Serialize + DeserializeOwned + Send + 'static,
        {
            type Input = I;
            type Output = O;
            fn name(&self) -> &'static str {
                self.name
            }
        }
    };
}

function_handle! {
    /// Handle of an activity: `async fn(Input) -> Result<Output, ActivityError>`.
    ///
    /// ```
    /// # use stent::Activity;
    /// const CHARGE: Activity<u64, String> = Activity::new("charge_card");
    /// ```
    Activity
}

function_handle! {
    /// Handle of a workflow: `async fn(Ctx, Input) -> stent::Result<Output>`, re-run over its
    /// journal after a crash or a suspension.
    ///
    /// ```
    /// # use stent::Workflow;
    /// const CHECKOUT: Workflow<u64, String> = Workflow::new("checkout");
    /// ```
    Workflow
}

/// Identifies an execution; numbers grow with dispatch order and are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecutionId(pub u64);

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies a task (a unit of claimable work inside an execution); never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies a dead letter; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetterId(pub u64);

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether an activity's error may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Retryable,
    Permanent,
}

/// What an activity returns when it fails: a message, whether it may be retried, an optional
/// code a retry policy can select on, and optional JSON details kept with the dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityError {
    pub message: String,
    pub kind: ErrorKind,
    pub code: Option<String>,
    /// JSON text (kept as text so records stay in a self-describing-free binary format).
    pub details: Option<String>,
}

impl ActivityError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ActivityError { message: message.into(), kind: ErrorKind::Retryable, code: None, details: None }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ActivityError { message: message.into(), kind: ErrorKind::Permanent, code: None, details: None }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_details(mut self, details: &serde_json::Value) -> Self {
        self.details = Some(details.to_string());
        self
    }

    pub fn details(&self) -> Option<serde_json::Value> {
        self.details.as_deref().and_then(|d| serde_json::from_str(d).ok())
    }
}

impl fmt::Display for ActivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Retryable => "retryable",
            ErrorKind::Permanent => "permanent",
        };
        write!(f, "{kind} error")?;
        if let Some(code) = &self.code {
            write!(f, " [{code}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ActivityError {}

impl From<std::io::Error> for ActivityError {
    fn from(e: std::io::Error) -> Self {
        ActivityError::retryable(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    Pending,
    Running,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

impl ExecutionState {
    pub const ALL: [ExecutionState; 6] = [
        ExecutionState::Pending,
        ExecutionState::Running,
        ExecutionState::Completed,
        ExecutionState::Failed,
        ExecutionState::TimedOut,
        ExecutionState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionState::Pending | ExecutionState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Pending => "pending",
            ExecutionState::Running => "running",
            ExecutionState::Completed => "completed",
            ExecutionState::Failed => "failed",
            ExecutionState::TimedOut => "timed_out",
            ExecutionState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Running,
    /// A workflow task suspended until one of the steps it awaits has an outcome.
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

/// One failed or abandoned attempt, kept (bounded) with the task and its dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub worker: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub error: ActivityError,
}

/// What `state_of` shows of an execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionInfo {
    pub id: ExecutionId,
    pub function: String,
    pub state: ExecutionState,
    pub queue: String,
    pub priority: i32,
    pub tags: Vec<String>,
    pub input: serde_json::Value,
    pub output: Option<serde_json::Value>,
    pub error: Option<ActivityError>,
    pub created_ms: u64,
    /// When it is due to start (creation plus delay); `max_duration` counts from here.
    pub scheduled_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    /// Claims of the root task so far (the current fencing token).
    pub attempts: u32,
    pub history: Vec<AttemptRecord>,
    pub idempotency_key: Option<String>,
    /// The execution that started this one as a child workflow.
    pub parent: Option<ExecutionId>,
    /// The version of the function's code its current run started under
    /// (`FunctionOptions::version`); an engine with older code leaves it pending.
    pub version: u32,
    /// Its run: 1, plus one per `Ctx::continue_as_new`.
    pub run: u32,
    /// The schedule fire that started it (`Engine::schedules`).
    pub schedule: Option<super::ScheduledBy>,
    /// Execution counters (filled by `state_of`).
    pub counters: std::collections::BTreeMap<String, i64>,
    /// Custom state values (filled by `state_of`).
    pub custom_state: std::collections::BTreeMap<String, serde_json::Value>,
    /// Journal steps recorded so far (workflows). Filled by `state_of`; 0 in listings.
    pub steps: u32,
    /// The last steps, one line each ("step 3: call \"charge\" completed"), at most
    /// `PROGRESS_LINES_MAX`.
    pub progress: Vec<String>,
}

/// A past run of an execution that continued as new (`Engine::runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run: u32,
    /// The code version it ran under.
    pub version: u32,
    /// The input it started with.
    pub input: serde_json::Value,
    pub started_ms: u64,
    /// When it continued as new.
    pub ended_ms: u64,
    /// Journal steps it recorded (`Engine::run_steps` lists them).
    pub steps: u32,
}

/// A task as `Engine::task` shows it: the unit of claimable work (an execution's root task,
/// or the task of one of its workflow's steps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: TaskId,
    pub execution_id: ExecutionId,
    /// `activity` or `workflow`.
    pub kind: String,
    /// The journal step it serves; `None` for the execution's root task.
    pub step: Option<u32>,
    pub function: String,
    pub queue: String,
    pub priority: i32,
    pub tags: Vec<String>,
    pub input: serde_json::Value,
    pub state: TaskState,
    /// When a pending task waiting on a timer (delay, backoff) becomes ready.
    pub due_ms: Option<u64>,
    /// Claims so far (the current fencing token).
    pub attempt: u32,
    /// The worker holding its lease while running, and when the lease expires.
    pub worker: Option<String>,
    pub lease_expires_ms: Option<u64>,
    pub history: Vec<AttemptRecord>,
    pub created_ms: u64,
    /// The version of its function's code it needs (an engine with older code leaves it).
    pub version: u32,
}

/// One journal step of a workflow execution (`Engine::steps`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepInfo {
    pub step: u32,
    /// What the step does: `call "charge"`, `sleep until ...`, `signal "go"`, `now`, ...
    pub kind: String,
    /// `running`, `waiting`, `completed` or `failed`.
    pub outcome: String,
    /// The step's task (running) or child execution, if any.
    pub task_id: Option<TaskId>,
    pub child: Option<ExecutionId>,
    pub output: Option<serde_json::Value>,
    pub error: Option<ActivityError>,
    pub recorded_ms: u64,
}

/// Lines of progress `state_of` shows at most (the most recent steps).
pub const PROGRESS_LINES_MAX: usize = 50;

/// What a retention cleanup removed (or, for a preview, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Finished executions, each with all its records (tasks, journal, signals, counters,
    /// state, idempotency key).
    pub executions: u64,
    pub dead_letters: u64,
    /// Expired entries of the function result cache.
    pub cache_entries: u64,
    /// Rate-limit budgets (with `cache`) that are full again, so holding them changes nothing:
    /// a per-key limit keeps one per key it has seen until then.
    #[serde(default)]
    pub rate_budgets: u64,
}

impl std::ops::AddAssign for CleanupReport {
    fn add_assign(&mut self, other: Self) {
        self.executions += other.executions;
        self.dead_letters += other.dead_letters;
        self.cache_entries += other.cache_entries;
        self.rate_budgets += other.rate_budgets;
    }
}

/// Which kinds of record a cleanup removes. Removing executions removes the dead letters from
/// before the cutoff too (they refer to the executions), whatever `dead_letters` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupParts {
    pub executions: bool,
    pub dead_letters: bool,
    pub cache: bool,
}

impl CleanupParts {
    pub const ALL: CleanupParts = CleanupParts { executions: true, dead_letters: true, cache: true };
}

/// Filter for `list_executions`; `None` fields match everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecutionFilter {
    pub state: Option<ExecutionState>,
    pub function: Option<String>,
    pub queue: Option<String>,
}

/// Newest-first paging: pass the previous page's `next` as `before` to continue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub limit: u32,
    pub before: Option<ExecutionId>,
}

impl Default for Page {
    fn default() -> Self {
        Page { limit: 50, before: None }
    }
}

/// A task that exhausted its retries or failed permanently, with everything needed to inspect
/// or replay it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: DeadLetterId,
    pub execution_id: ExecutionId,
    pub task_id: TaskId,
    pub function: String,
    pub queue: String,
    pub input: serde_json::Value,
    pub error: ActivityError,
    pub attempts: u32,
    pub history: Vec<AttemptRecord>,
    pub failed_ms: u64,
}

/// Ready work that no worker pool of this process can take (see `Engine::unserved_work`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnservedWork {
    pub queue: String,
    /// The work's tags, sorted (empty: untagged work whose queue no pool serves).
    pub tags: Vec<String>,
    /// Tasks ready now in this group.
    pub pending: u64,
    /// When the longest-waiting of them became ready (ms since the epoch, engine clock).
    pub oldest_ready_ms: u64,
    /// Of `pending`, tasks that need newer code: their function is registered here, but at an
    /// older version than the one they started under (a rolled-back deploy).
    pub newer_version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningTask {
    pub task_id: TaskId,
    pub execution_id: ExecutionId,
    pub function: String,
    pub worker: String,
    pub attempt: u32,
    pub lease_expires_ms: u64,
}

/// What `Engine::open` verifies before it runs anything (`EngineBuilder::verify_on_open`).
/// See docs/design.md, "Recovery at open" and "What is assumed of the disk".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyOnOpen {
    /// Decode and check what recovery and the work to come depend on: every pending and running
    /// execution, all of their tasks, the ready, timer, lease and deadline indexes both ways,
    /// the counts of those two states, and that the id counters are past every id in use. The
    /// cost follows the live work, not the history. If any of it is damaged, redb's check of
    /// every page runs too: a damaged file is refused (`CorruptFile`); a record that is damaged
    /// on sound pages is logged and, as with any damaged record, rejects the operations that
    /// read it. Finished executions are not read: damage there is met when they are read.
    #[default]
    Live,
    /// `Live`'s guarantees for the whole file: redb verifies the checksum of every page (and
    /// rebuilds its allocator state from the trees), then every record and index is checked as
    /// `Engine::check` does. Any problem refuses the open (`CorruptFile`). Reads the whole file.
    Full,
}

/// Options for a pool of workers in this process.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub worker_id: String,
    /// Queues served; empty means `["default"]`.
    pub queues: Vec<String>,
    /// A worker with tags takes tasks sharing one of them, plus untagged tasks.
    pub tags: Vec<String>,
    /// Attempts this pool runs at once; at least 1.
    pub max_concurrency: u32,
    /// How long a claim holds a task without a heartbeat; more than zero.
    pub lease_duration: Duration,
    /// How often leases are renewed; more than zero. Make it well shorter than
    /// `lease_duration` (`serve` warns otherwise): a lease that lapses between beats lets
    /// another worker take the task while this one still runs it.
    pub heartbeat_interval: Duration,
    pub shutdown_grace: Duration,
}

impl WorkerOptions {
    /// The first reason these options cannot run a pool, if any.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrency == 0 {
            return Err("max_concurrency must be at least 1".into());
        }
        if self.lease_duration.is_zero() {
            return Err("lease_duration must be more than zero".into());
        }
        if self.heartbeat_interval.is_zero() {
            return Err("heartbeat_interval must be more than zero".into());
        }
        Ok(())
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            worker_id: format!("worker-{}", std::process::id()),
            queues: Vec::new(),
            tags: Vec::new(),
            max_concurrency: 64,
            lease_duration: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Lifecycle of a worker pool: `starting → ready → draining → stopped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Starting,
    Ready,
    Draining,
    Stopped,
}
