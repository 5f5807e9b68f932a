//! Every state transition, written once over [`Records`], for any backend.
//!
//! An op is applied by [`Batch::apply`] inside the backend's transaction. Each transition first
//! reads and validates what it needs (a refusal writes nothing: `Ok(Err(rejection))`), then
//! writes through `Records`. A record that fails to decode surfaces as
//! `StorageError::Corrupted`; the backend's commit loop then drops the transaction and runs it
//! again without the op (`redb/commit.rs`), and `quarantine.rs` stops the op's execution, so a
//! damaged record rejects the op that read it by construction, whatever a transition wrote
//! before it met the record. Any other `StorageError` aborts the batch.
//!
//! Files by transition: `dispatch` (new executions), `claim` (leases), `outcome` (complete,
//! fail, expire, abandon: retry or bury), `journal` (workflow steps, suspension, waking),
//! `run` (continue as new), `signal`, `cache`, `end` (cancel, time out), `dead_letter`
//! (replay, discard), `retention`,
//! `quarantine`, `recover` (attempts left running by a stopped process).

mod cache;
mod claim;
mod dead_letter;
mod dispatch;
mod end;
mod flow;
mod journal;
mod outcome;
mod quarantine;
mod recover;
mod retention;
mod run;
mod schedule;
mod signal;

pub use retention::{retention, Retention};
use run::NextRun;

// The names the transition files share (they `use super::*`).
use super::effect::Effect;
use super::faults::Faults;
use super::index::{pending_effect, ExecutionIndex, TaskIndex};
use super::op::{
    ClaimLimits, ClaimedTask, Continuation, Flow, Local, NewExecution, NewStep, Op, OpOutput, StepBody, StepTask,
};
use super::records::{
    CacheRecord, DeadLetterRecord, ExecutionRecord, JournalEntry, ParentStep, RunRecord, ScheduleOrigin,
    ScheduleRecord, StepKind, StepOutcome, TaskKind, TaskRecord, JOURNAL_STEPS_MAX,
};
use super::tables::{EXECUTIONS_NAME, JOURNAL_NAME, TASKS_NAME};
use super::{Rejection, StorageError};
use crate::api::{ActivityError, AttemptRecord, ExecutionState, RetryPolicy, TaskState};
use crate::lease::Fence;

/// The records of one write transaction, one at a time: what a transition may read and write.
///
/// Reads return `Err(StorageError::Corrupted)` for a record that fails to decode. Writes keep
/// every index the backend has in step with the records: `put_task` moves the task's index entry
/// from `old` to what the new record implies (`TaskIndex::of`), `put_execution` its state and
/// deadline entries (and the per-state counts), `put_dead_letter` / `put_cache_entry` their
/// time indexes. Nothing else writes an index.
pub trait Records {
    fn task(&self, id: u64) -> Result<Option<TaskRecord>, StorageError>;
    /// Writes a new task with its index entries, including the one that ties it to its execution.
    fn insert_task(&mut self, task: &TaskRecord) -> Result<(), StorageError>;
    /// Writes a changed task; `old` is the index entry the record implied before the change.
    fn put_task(&mut self, task: &TaskRecord, old: &TaskIndex) -> Result<(), StorageError>;
    /// Every task id of an execution, ascending.
    fn tasks_of(&self, execution_id: u64) -> Result<Vec<u64>, StorageError>;
    /// The execution a task belongs to, from the index alone (for a task whose record is
    /// unreadable; may scan).
    fn execution_of_task(&self, task_id: u64) -> Result<Option<u64>, StorageError>;
    /// Every task holding a lease.
    fn leased_tasks(&self) -> Result<Vec<u64>, StorageError>;

    fn execution(&self, id: u64) -> Result<Option<ExecutionRecord>, StorageError>;
    /// Writes an execution; `old` is the index the record implied before (`None`: it is new).
    fn put_execution(&mut self, exec: &ExecutionRecord, old: Option<ExecutionIndex>) -> Result<(), StorageError>;
    /// Removes a finished execution and every record of it (tasks, journal, mailbox, counters,
    /// state, edited step inputs) with their index entries, and frees its idempotency key.
    fn remove_execution(&mut self, exec: &ExecutionRecord) -> Result<(), StorageError>;
    /// Up to `limit` ids of executions in `state` above `after`, ascending.
    fn executions_in_state(&self, state: ExecutionState, after: u64, limit: usize) -> Result<Vec<u64>, StorageError>;
    fn idempotent(&self, key: &str) -> Result<Option<u64>, StorageError>;
    fn put_idempotency_key(&mut self, key: &str, execution_id: u64) -> Result<(), StorageError>;

    fn step(&self, execution_id: u64, step: u32) -> Result<Option<JournalEntry>, StorageError>;
    fn put_step(&mut self, execution_id: u64, entry: &JournalEntry) -> Result<(), StorageError>;
    fn remove_step(&mut self, execution_id: u64, step: u32) -> Result<(), StorageError>;
    /// An execution's journal, in step order.
    fn journal(&self, execution_id: u64) -> Result<Vec<JournalEntry>, StorageError>;
    /// Removes and returns an operator's edited input for a step (a DLQ replay).
    fn take_step_input(&mut self, execution_id: u64, step: u32) -> Result<Option<Vec<u8>>, StorageError>;
    fn put_step_input(&mut self, execution_id: u64, step: u32, input: &[u8]) -> Result<(), StorageError>;
    /// Removes a task (an ended step of a run that continued as new) with its index entries
    /// and its heartbeat details.
    fn remove_task(&mut self, task: &TaskRecord) -> Result<(), StorageError>;
    /// Ends the execution's current run: its journal moves to the past run's steps, its
    /// edited step inputs go, and `run` is written beside them.
    fn archive_run(&mut self, execution_id: u64, run: &RunRecord) -> Result<(), StorageError>;
    /// A past run of the execution.
    fn run(&mut self, execution_id: u64, run: u32) -> Result<Option<RunRecord>, StorageError>;
    /// Removes the execution's past runs numbered below `run`, with their steps.
    fn remove_runs_before(&mut self, execution_id: u64, run: u32) -> Result<(), StorageError>;
    /// Replaces the progress details a task's attempt recorded (`stent::activity::heartbeat`);
    /// removed with the execution.
    fn put_heartbeat(&mut self, execution_id: u64, task_id: u64, details: &[u8]) -> Result<(), StorageError>;

    /// Appends to the execution's FIFO mailbox of signals named `name`.
    fn push_signal(&mut self, execution_id: u64, name: &str, payload: &[u8]) -> Result<(), StorageError>;
    /// Removes and returns the oldest signal `name` in the execution's mailbox.
    fn take_signal(&mut self, execution_id: u64, name: &str) -> Result<Option<Vec<u8>>, StorageError>;

    fn counter(&self, execution_id: u64, name: &str) -> Result<i64, StorageError>;
    fn put_counter(&mut self, execution_id: u64, name: &str, value: i64) -> Result<(), StorageError>;
    fn state(&self, execution_id: u64, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    fn put_state(&mut self, execution_id: u64, key: &str, value: &[u8]) -> Result<(), StorageError>;

    fn cache_entry(&self, key: &CacheKey<'_>) -> Result<Option<CacheRecord>, StorageError>;
    /// Writes a cache entry; its expiry index entry moves from `old`'s to the new record's.
    fn put_cache_entry(
        &mut self,
        key: &CacheKey<'_>,
        record: &CacheRecord,
        old: Option<&CacheRecord>,
    ) -> Result<(), StorageError>;
    fn remove_cache_entry(&mut self, entry: &CacheExpiry) -> Result<(), StorageError>;
    fn cache_len(&self) -> Result<u64, StorageError>;
    /// Cache entries soonest to expire first, those expiring before `before` (all when `None`),
    /// at most `limit`.
    fn cache_by_expiry(&self, before: Option<u64>, limit: usize) -> Result<Vec<CacheExpiry>, StorageError>;

    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetterRecord>, StorageError>;
    fn put_dead_letter(&mut self, letter: &DeadLetterRecord) -> Result<(), StorageError>;
    fn remove_dead_letter(&mut self, id: u64, failed_ms: u64) -> Result<(), StorageError>;
    /// Up to `limit` dead letters that failed before `cutoff_ms`, oldest first: (failed_ms, id).
    fn dead_letters_before(&self, cutoff_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, StorageError>;

    fn schedule(&mut self, name: &str) -> Result<Option<ScheduleRecord>, StorageError>;
    /// Writes a schedule; its due index entry moves from `old`'s (`None`: it is new) to the
    /// record's (`ScheduleRecord::due_ms`).
    fn put_schedule(&mut self, rec: &ScheduleRecord, old: Option<&ScheduleRecord>) -> Result<(), StorageError>;
    /// Removes a schedule with its due entry (the executions it started keep their origin,
    /// and their entries in the fires index).
    fn remove_schedule(&mut self, rec: &ScheduleRecord) -> Result<(), StorageError>;

    /// A rate limit's state: the theoretical arrival time of (`function`, `key`).
    fn rate_tat(&mut self, function: &str, key: &str) -> Result<Option<u64>, StorageError>;
    fn put_rate_tat(&mut self, function: &str, key: &str, tat_ms: u64) -> Result<(), StorageError>;
    /// Removes up to `limit` rate budgets whose time is at or before `now_ms`; how many.
    fn prune_rate_budgets(&mut self, now_ms: u64, limit: usize) -> Result<u64, StorageError>;
    /// How many running executions of `function` hold a slot of concurrency key `key`
    /// (counted up to `at_most`). The slots move with `put_execution`.
    fn key_slots_held(&mut self, function: &str, key: &str, at_most: u64) -> Result<u64, StorageError>;
    /// A debounce or throttle key: (the execution it names, when its window opened).
    fn flow_key(&mut self, key: &str) -> Result<Option<(u64, u64)>, StorageError>;
    /// Points a flow key at an execution (which records the key, so removing it frees it).
    fn put_flow_key(&mut self, key: &str, execution_id: u64, opened_ms: u64) -> Result<(), StorageError>;

    /// Runs a local step's closure (`Ctx::local`) on this transaction. The closure is the
    /// backend's own type; one it does not know is refused as a permanent error.
    fn run_local(&mut self, body: super::op::LocalClosure) -> Result<Vec<u8>, ActivityError>;
}

/// A cache entry's key: (function, version, input).
#[derive(Debug, Clone, Copy)]
pub struct CacheKey<'a> {
    pub function: &'a str,
    pub version: u32,
    pub input: &'a [u8],
}

/// A cache entry as its expiry index names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExpiry {
    pub expires_ms: u64,
    pub function: String,
    pub version: u32,
    pub input: Vec<u8>,
}

/// The next ids to hand out; the backend persists them with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub next_execution: u64,
    pub next_task: u64,
    pub next_dead_letter: u64,
}

/// Outer error: the batch must abort (I/O, injected fault, or a corrupted record: the commit
/// loop redoes the batch without the op). Inner: this op is rejected and wrote nothing.
pub type OpRes<T> = Result<Result<T, Rejection>, StorageError>;

pub(super) fn corrupted(table: &'static str, key: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupted { table, key: key.to_string() }
}

/// Returns the rejection from the transition.
macro_rules! reject {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(rejection) => return Ok(Err(rejection.into())),
        }
    };
}
pub(crate) use reject;

/// Splits a read's error: a record that fails to decode rejects only the op that read it (the
/// batch goes on, the engine stays writable); an I/O error aborts the batch.
pub(super) fn soft<T>(r: Result<T, StorageError>) -> OpRes<T> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e @ StorageError::Corrupted { .. }) => {
            tracing::error!(error = %e, "corrupted record; the operation that read it is rejected");
            Ok(Err(Rejection::Storage(e)))
        }
        Err(e) => Err(e),
    }
}

/// One batch of ops in one transaction of the backend.
pub struct Batch<'a, R: Records> {
    pub r: R,
    pub ids: &'a mut Ids,
    pub faults: &'a Faults,
    pub cache_entries_max: u64,
    pub now: u64,
    pub effects: Vec<Effect>,
}

impl<R: Records> Batch<'_, R> {
    pub fn apply(&mut self, op: Op) -> OpRes<OpOutput> {
        match op {
            Op::Dispatch(new) => self.dispatch(new),
            Op::Claim { task_id, worker, lease_ms, version, limits } => {
                self.claim(task_id, &worker, lease_ms, version, limits)
            }
            Op::Renew { leases, lease_ms, details } => self.renew(&leases, lease_ms, details),
            Op::Complete { task_id, token, output, local, next } => self.complete(task_id, token, output, local, next),
            Op::ContinueAsNew { task_id, token, input, local, version, runs_kept, next } => {
                self.continue_as_new(task_id, token, NextRun { input, version, runs_kept }, local, next)
            }
            Op::Fail { task_id, token, error, jitter_unit } => self.fail(task_id, token, error, jitter_unit),
            Op::Expire { task_id, token } => self.expire(task_id, token),
            Op::Abandon { task_id, token, reason } => self.abandon(task_id, token, reason),
            Op::Suspend { task_id, token, steps, awaiting, next } => {
                self.suspend(task_id, token, steps, &awaiting, next)
            }
            Op::Cancel { execution_id } => self.end_execution(execution_id, ExecutionState::Cancelled),
            Op::RequestCancel { execution_id, grace_ms } => self.request_cancel(execution_id, grace_ms),
            Op::Signal { execution_id, name, payload } => self.signal(execution_id, &name, payload),
            Op::TimeOut { execution_id } => self.end_execution(execution_id, ExecutionState::TimedOut),
            Op::SignalWithStart { key, new, name, payload } => self.signal_with_start(key, new, name, payload),
            Op::ReplayDeadLetter { id, input } => self.replay(id, input),
            Op::DiscardDeadLetter { id } => self.discard(id),
            Op::ReplayDeadLetterStep { id, step, input } => self.replay_step(id, step, input),
            Op::Cleanup { cutoff_ms, budget, from, parts } => self.cleanup(cutoff_ms, budget, from, parts),
            Op::PutSchedule(draft) => self.put_schedule(draft),
            Op::ControlSchedule { name, action } => self.control_schedule(&name, action),
            Op::FireSchedule { name, template, trigger } => self.fire_schedule(&name, template, trigger),
        }
    }

    /// An execution ended (its record written): memory is told, and a schedule that buffered a
    /// fire behind it starts that fire.
    fn ended(&mut self, exec: &ExecutionRecord) -> Result<(), StorageError> {
        self.effects.push(Effect::Finished { execution_id: exec.id });
        if let Some(key) = &exec.keys.concurrency {
            self.effects.push(Effect::KeyFreed { function: exec.function.clone(), key: key.clone() });
        }
        self.after_end(exec)
    }

    /// Reads a task and its execution for a transition; a missing or corrupt one rejects the op.
    fn load_pair(&self, task_id: u64) -> OpRes<(TaskRecord, ExecutionRecord)> {
        let Some(task) = reject!(soft(self.r.task(task_id))?) else {
            return Ok(Err(Rejection::UnknownTask(task_id)));
        };
        let Some(exec) = reject!(soft(self.r.execution(task.execution_id))?) else {
            let key = format!("{} (missing)", task.execution_id);
            return Ok(Err(Rejection::Storage(corrupted(EXECUTIONS_NAME, key))));
        };
        Ok(Ok((task, exec)))
    }
}

/// `[payload]`: the outcome of a timed signal wait that got its signal, or of a state read.
fn wrap_one(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.push(b'[');
    out.extend_from_slice(payload);
    out.push(b']');
    out
}
