//! [`Store`]: the engine-facing storage boundary, in engine operations.

use super::effect::Effect;
use super::op::{Op, OpResult};
use super::records::{DeadLetterRecord, ExecutionRecord, JournalEntry, RunRecord, ScheduleRecord, TaskRecord};
use super::StorageError;
use crate::api::{ExecutionFilter, ExecutionState, Page};

/// An execution's counters and custom state (JSON), by name.
pub type ExecutionContext = (Vec<(String, i64)>, Vec<(String, Vec<u8>)>);

/// The storage boundary, in engine operations.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` in one transaction and one fsync. `Ok` carries one result per op (a
    /// rejected op wrote nothing); `Err` means the commit failed and nothing was written.
    fn apply_batch(&self, now_ms: u64, ops: Vec<Op>) -> Result<(Vec<OpResult>, Vec<Effect>), StorageError>;
    /// Crash recovery at open: re-queues every task left running (counting the attempt) and
    /// returns the effects that rebuild the in-memory queues and timers.
    fn recover(&self, now_ms: u64) -> Result<Vec<Effect>, StorageError>;
    fn execution(&self, id: u64) -> Result<Option<(ExecutionRecord, TaskRecord)>, StorageError>;
    fn list_executions(&self, filter: &ExecutionFilter, page: &Page) -> Result<Vec<ExecutionRecord>, StorageError>;
    /// Executions in each state, every state listed; reads the counts kept with each state
    /// change, so it costs O(states), not O(executions).
    fn count_by_state(&self) -> Result<Vec<(ExecutionState, u64)>, StorageError>;
    fn queue_depth(&self, queue: &str) -> Result<u64, StorageError>;
    fn running_tasks(&self) -> Result<Vec<TaskRecord>, StorageError>;
    fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRecord>, StorageError>;
    /// How many dead letters there are, without reading them (O(1) on redb).
    fn task(&self, id: u64) -> Result<Option<TaskRecord>, StorageError>;
    fn dead_letter_count(&self) -> Result<u64, StorageError>;
    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetterRecord>, StorageError>;
    /// A workflow execution's journal, in step order (empty for an activity execution).
    fn journal(&self, execution_id: u64) -> Result<Vec<JournalEntry>, StorageError>;
    /// An execution's kept past runs (`Ctx::continue_as_new`), oldest first.
    fn runs(&self, execution_id: u64) -> Result<Vec<RunRecord>, StorageError>;
    /// The journal of one past run, in step order (empty if it is not kept).
    fn run_journal(&self, execution_id: u64, run: u32) -> Result<Vec<JournalEntry>, StorageError>;
    /// What `Op::Cleanup` from the start would remove now, without removing anything.
    fn cleanup_preview(&self, now_ms: u64, cutoff_ms: u64) -> Result<crate::api::CleanupReport, StorageError>;
    /// The entries of `steps` that exist, in step order (a parked workflow's unsettled steps).
    fn journal_steps(&self, execution_id: u64, steps: &[u32]) -> Result<Vec<JournalEntry>, StorageError>;
    /// The progress details (JSON) last made durable for a task (`stent::activity::heartbeat`).
    fn heartbeat(&self, execution_id: u64, task_id: u64) -> Result<Option<Vec<u8>>, StorageError>;
    /// An execution's counters and custom state (JSON), by name.
    fn context(&self, execution_id: u64) -> Result<ExecutionContext, StorageError>;
    /// Work that can proceed at `now_ms` without outside help: (tasks ready, tasks running,
    /// timers and schedules due). All zero means idle until the clock moves or a signal arrives.
    fn pending_work(&self, now_ms: u64) -> Result<(u64, u64, u64), StorageError>;
    /// Every schedule, by name.
    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StorageError>;
    fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, StorageError>;
    /// The latest `limit` executions schedule `name` started, (nominal time, execution id),
    /// oldest first.
    fn schedule_fires(&self, name: &str, limit: usize) -> Result<Vec<(u64, u64)>, StorageError>;
    /// The concurrency keys in use: (function, key, running executions), by function and key.
    fn key_slots(&self) -> Result<Vec<(String, String, u64)>, StorageError>;
    /// The backend itself, for what only it offers (the redb backend: `Engine::read` and
    /// `Ctx::local`, see `storage::redb::as_redb`).
    fn as_any(&self) -> &dyn std::any::Any;
    /// Verifies every record's checksum and every index against the records. Returns the
    /// problems found (empty when consistent).
    fn check(&self) -> Result<Vec<String>, StorageError>;
    /// The file's random seed for trace ids (the `otel` feature's trace per execution).
    fn trace_seed(&self) -> u64;
}
