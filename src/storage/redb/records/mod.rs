//! [`Records`] over the tables of one redb write transaction. The only code that writes an
//! `idx_*` table or `exec_counts`: each index entry is moved here, by the put or remove of the
//! record it is derived from (`storage/index.rs`), in the same transaction. `lazy.rs`: the tables
//! few batches touch, opened on first use, and the concurrency-key slots.

mod lazy;

use ::redb::{ReadableTable, ReadableTableMetadata, Table};

use super::RedbLocal;
use crate::api::{ActivityError, ExecutionState};
use crate::storage::codec::{decode, encode_checked};
use crate::storage::index::{ExecutionIndex, TaskIndex};
use crate::storage::op::LocalClosure;
use crate::storage::records::{
    state_code, CacheRecord, DeadLetterRecord, ExecutionRecord, JournalEntry, RunRecord, ScheduleRecord, TaskRecord,
};
use crate::storage::tables::*;
use crate::storage::transitions::{CacheExpiry, CacheKey, Ids, Records};
use crate::storage::StorageError;

/// `run_steps`, open in a write transaction.
type RunStepsTable<'t> = Table<'t, (u64, u32, u32), &'static [u8]>;

/// The tables of one write transaction, opened once per batch.
pub(super) struct RedbRecords<'t> {
    txn: &'t ::redb::WriteTransaction,
    meta: Table<'t, &'static str, u64>,
    executions: Table<'t, u64, &'static [u8]>,
    tasks: Table<'t, u64, &'static [u8]>,
    ready: Table<'t, (&'static str, u32, u64, u64), ()>,
    timers: Table<'t, (u64, u64), ()>,
    leases: Table<'t, (u64, u64), ()>,
    by_state: Table<'t, (u8, u64), ()>,
    deadlines: Table<'t, (u64, u64), ()>,
    idempotency: Table<'t, &'static str, u64>,
    dead_letters: Table<'t, u64, &'static [u8]>,
    dlq_by_time: Table<'t, (u64, u64), ()>,
    journal: Table<'t, (u64, u32), &'static [u8]>,
    signals: Table<'t, (u64, &'static str, u64), &'static [u8]>,
    counters: Table<'t, (u64, &'static str), i64>,
    state: Table<'t, (u64, &'static str), &'static [u8]>,
    cache: Table<'t, (&'static str, u32, &'static [u8]), &'static [u8]>,
    cache_by_expiry: Table<'t, (u64, &'static str, u32, &'static [u8]), ()>,
    step_inputs: Table<'t, (u64, u32), &'static [u8]>,
    exec_tasks: Table<'t, (u64, u64), ()>,
    exec_counts: Table<'t, u8, u64>,
    heartbeats: Table<'t, (u64, u64), &'static [u8]>,
    /// Opened by the first transition that needs them (a continue-as-new, a removal): most
    /// batches never touch past runs.
    runs: Option<Table<'t, (u64, u32), &'static [u8]>>,
    run_steps: Option<RunStepsTable<'t>>,
    /// Likewise the schedule tables: only schedule ops and scheduled executions touch them.
    schedules: Option<Table<'t, &'static str, &'static [u8]>>,
    schedule_due: Option<Table<'t, (u64, &'static str), ()>>,
    schedule_fires: Option<Table<'t, (&'static str, u64, u64), ()>>,
    rate_state: Option<Table<'t, (&'static str, &'static str), u64>>,
    key_slots: Option<Table<'t, (&'static str, &'static str, u64), ()>>,
    flow_keys: Option<Table<'t, &'static str, (u64, u64)>>,
    /// Changes to `exec_counts` by state code, written once at the end of the batch
    /// (`finish`): a state change costs an array update instead of two B-tree writes.
    count_deltas: [i64; STATE_CODES],
}

/// State codes are 0..6 (`records::state_code`).
const STATE_CODES: usize = 6;

impl<'t> RedbRecords<'t> {
    pub(super) fn open(txn: &'t ::redb::WriteTransaction) -> Result<Self, StorageError> {
        Ok(RedbRecords {
            txn,
            meta: txn.open_table(META)?,
            executions: txn.open_table(EXECUTIONS)?,
            tasks: txn.open_table(TASKS)?,
            ready: txn.open_table(READY)?,
            timers: txn.open_table(TIMERS)?,
            leases: txn.open_table(LEASES)?,
            by_state: txn.open_table(EXEC_BY_STATE)?,
            deadlines: txn.open_table(DEADLINES)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            dead_letters: txn.open_table(DEAD_LETTERS)?,
            dlq_by_time: txn.open_table(DLQ_BY_TIME)?,
            journal: txn.open_table(JOURNAL)?,
            signals: txn.open_table(SIGNALS)?,
            counters: txn.open_table(COUNTERS)?,
            state: txn.open_table(STATE)?,
            cache: txn.open_table(CACHE)?,
            cache_by_expiry: txn.open_table(CACHE_BY_EXPIRY)?,
            step_inputs: txn.open_table(STEP_INPUTS)?,
            exec_tasks: txn.open_table(EXEC_TASKS)?,
            exec_counts: txn.open_table(EXEC_COUNTS)?,
            heartbeats: txn.open_table(HEARTBEATS)?,
            runs: None,
            run_steps: None,
            schedules: None,
            schedule_due: None,
            schedule_fires: None,
            rate_state: None,
            key_slots: None,
            flow_keys: None,
            count_deltas: [0; STATE_CODES],
        })
    }

    /// Ends the batch's writes: the per-state counts moved by it, and the id counters.
    pub(super) fn finish(&mut self, ids: &Ids) -> Result<(), StorageError> {
        for (code, delta) in (0u8..).zip(self.count_deltas) {
            if delta == 0 {
                continue;
            }
            let n = self.exec_counts.get(code)?.map_or(0, |v| v.value());
            let moved = n.checked_add_signed(delta).unwrap_or_else(|| {
                // The stored count is already wrong (damaged, or a bug); failing the batch
                // would stop unrelated work, so keep going and leave the mismatch to `check`.
                tracing::error!(state = code, "execution count would go below zero; `check` reports the mismatch");
                0
            });
            self.exec_counts.insert(code, moved)?;
        }
        self.count_deltas = [0; STATE_CODES];
        self.meta.insert("next_execution_id", ids.next_execution)?;
        self.meta.insert("next_task_id", ids.next_task)?;
        self.meta.insert("next_dead_letter_id", ids.next_dead_letter)?;
        Ok(())
    }

    fn remove_task_index(&mut self, id: u64, index: &TaskIndex) -> Result<(), StorageError> {
        match index {
            TaskIndex::None => {}
            TaskIndex::Ready { queue, pk, ready_ms } => {
                self.ready.remove((queue.as_str(), *pk, *ready_ms, id))?;
            }
            TaskIndex::Timer { due_ms } => {
                self.timers.remove((*due_ms, id))?;
            }
            TaskIndex::Lease { expires_ms } => {
                self.leases.remove((*expires_ms, id))?;
            }
        }
        Ok(())
    }

    /// Moves one execution between the per-state counts (`None`: created, or removed). The only
    /// writer of `exec_counts` (through `finish`, in the same transaction), called by
    /// `put_execution` and `remove_execution` beside the state index entry they move, so the
    /// counts change in the transaction of the states they count.
    fn move_count(&mut self, from: Option<u8>, to: Option<u8>) -> Result<(), StorageError> {
        for (code, delta) in [(from, -1), (to, 1)] {
            let Some(code) = code else { continue };
            match self.count_deltas.get_mut(usize::from(code)) {
                Some(d) => *d += delta,
                None => return Err(StorageError::Other(format!("state code {code} out of range"))),
            }
        }
        Ok(())
    }
}

/// An execution's journal from any journal table (the write transaction's or a read's).
pub(super) fn journal_of(
    journal: &impl ReadableTable<(u64, u32), &'static [u8]>,
    execution_id: u64,
) -> Result<Vec<JournalEntry>, StorageError> {
    let mut out = Vec::new();
    for entry in journal.range((execution_id, 0)..=(execution_id, u32::MAX))? {
        let (k, v) = entry?;
        let step = k.value().1;
        out.push(decode(JOURNAL_NAME, &format_args!("({execution_id}, {step})"), v.value())?);
    }
    Ok(out)
}

impl Records for RedbRecords<'_> {
    fn task(&self, id: u64) -> Result<Option<TaskRecord>, StorageError> {
        match self.tasks.get(id)? {
            Some(v) => Ok(Some(decode(TASKS_NAME, &id, v.value())?)),
            None => Ok(None),
        }
    }

    fn insert_task(&mut self, task: &TaskRecord) -> Result<(), StorageError> {
        self.exec_tasks.insert((task.execution_id, task.id), ())?;
        self.put_task(task, &TaskIndex::None)
    }

    fn put_task(&mut self, task: &TaskRecord, old: &TaskIndex) -> Result<(), StorageError> {
        let new = TaskIndex::of(task);
        if *old != new {
            self.remove_task_index(task.id, old)?;
            match &new {
                TaskIndex::None => {}
                TaskIndex::Ready { queue, pk, ready_ms } => {
                    self.ready.insert((queue.as_str(), *pk, *ready_ms, task.id), ())?;
                }
                TaskIndex::Timer { due_ms } => {
                    self.timers.insert((*due_ms, task.id), ())?;
                }
                TaskIndex::Lease { expires_ms } => {
                    self.leases.insert((*expires_ms, task.id), ())?;
                }
            }
        }
        self.tasks.insert(task.id, encode_checked(TASKS_NAME, task).as_slice())?;
        Ok(())
    }

    fn tasks_of(&self, execution_id: u64) -> Result<Vec<u64>, StorageError> {
        let mut out = Vec::new();
        for entry in self.exec_tasks.range((execution_id, 0)..=(execution_id, u64::MAX))? {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    fn execution_of_task(&self, task_id: u64) -> Result<Option<u64>, StorageError> {
        // The index is keyed by execution: a scan, on the rare path of an unreadable task only.
        for entry in self.exec_tasks.iter()? {
            let (execution_id, id) = entry?.0.value();
            if id == task_id {
                return Ok(Some(execution_id));
            }
        }
        Ok(None)
    }

    fn leased_tasks(&self) -> Result<Vec<u64>, StorageError> {
        let mut out = Vec::new();
        for entry in self.leases.iter()? {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    fn execution(&self, id: u64) -> Result<Option<ExecutionRecord>, StorageError> {
        match self.executions.get(id)? {
            Some(v) => Ok(Some(decode(EXECUTIONS_NAME, &id, v.value())?)),
            None => Ok(None),
        }
    }

    fn put_execution(&mut self, exec: &ExecutionRecord, old: Option<ExecutionIndex>) -> Result<(), StorageError> {
        let new = ExecutionIndex::of(exec);
        let old_state = old.map(|o| o.state);
        let old_deadline = old.and_then(|o| o.deadline_ms);
        if old_state != Some(new.state) {
            if let Some(s) = old_state {
                self.by_state.remove((s, exec.id))?;
            }
            self.by_state.insert((new.state, exec.id), ())?;
            self.move_count(old_state, Some(new.state))?;
        }
        if old_deadline != new.deadline_ms {
            if let Some(d) = old_deadline {
                self.deadlines.remove((d, exec.id))?;
            }
            if let Some(d) = new.deadline_ms {
                self.deadlines.insert((d, exec.id), ())?;
            }
        }
        self.move_key_slot(exec, old_state == Some(state_code(ExecutionState::Running)))?;
        if let (None, Some(origin)) = (old, &exec.schedule) {
            self.schedule_fires()?.insert((origin.name.as_str(), origin.nominal_ms, exec.id), ())?;
        }
        self.executions.insert(exec.id, encode_checked(EXECUTIONS_NAME, exec).as_slice())?;
        Ok(())
    }

    fn remove_execution(&mut self, exec: &ExecutionRecord) -> Result<(), StorageError> {
        let id = exec.id;
        for task_id in self.tasks_of(id)? {
            // An unreadable task's index entry cannot be known; `check` reports it if left.
            match self.task(task_id) {
                Ok(Some(task)) => self.remove_task_index(task_id, &TaskIndex::of(&task))?,
                Ok(None) => {}
                Err(e @ StorageError::Corrupted { .. }) => {
                    tracing::error!(task_id, error = %e, "removing an unreadable task");
                }
                Err(e) => return Err(e),
            }
            self.tasks.remove(task_id)?;
        }
        self.exec_tasks.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        self.journal.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
        self.signals.retain_in((id, "", 0)..(id.saturating_add(1), "", 0), |_, _| false)?;
        self.counters.retain_in((id, "")..(id.saturating_add(1), ""), |_, _| false)?;
        self.state.retain_in((id, "")..(id.saturating_add(1), ""), |_, _| false)?;
        self.step_inputs.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
        self.heartbeats.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        if exec.run > 1 {
            self.remove_runs_before(id, u32::MAX)?;
        }
        if let Some(key) = &exec.idempotency_key {
            // The key is free again: a later dispatch with it starts a new execution.
            if self.idempotency.get(key.as_str())?.is_some_and(|v| v.value() == id) {
                self.idempotency.remove(key.as_str())?;
            }
        }
        if let Some(origin) = &exec.schedule {
            self.schedule_fires()?.remove((origin.name.as_str(), origin.nominal_ms, id))?;
        }
        if let Some(key) = &exec.keys.concurrency {
            self.key_slots()?.remove((exec.function.as_str(), key.as_str(), id))?;
        }
        if let Some(key) = &exec.keys.flow {
            if self.flow_table()?.get(key.as_str())?.is_some_and(|v| v.value().0 == id) {
                self.flow_table()?.remove(key.as_str())?;
            }
        }
        let index = ExecutionIndex::of(exec);
        self.by_state.remove((index.state, id))?;
        self.move_count(Some(index.state), None)?;
        if let Some(d) = index.deadline_ms {
            self.deadlines.remove((d, id))?;
        }
        self.executions.remove(id)?;
        Ok(())
    }

    fn remove_task(&mut self, task: &TaskRecord) -> Result<(), StorageError> {
        self.remove_task_index(task.id, &TaskIndex::of(task))?;
        self.tasks.remove(task.id)?;
        self.exec_tasks.remove((task.execution_id, task.id))?;
        self.heartbeats.remove((task.execution_id, task.id))?;
        Ok(())
    }

    fn archive_run(&mut self, execution_id: u64, run: &RunRecord) -> Result<(), StorageError> {
        let id = execution_id;
        let steps: Vec<(u32, Vec<u8>)> = self
            .journal
            .range((id, 0)..=(id, u32::MAX))?
            .map(|e| e.map(|(k, v)| (k.value().1, v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        let table = self.run_steps()?;
        for (step, bytes) in &steps {
            table.insert((id, run.run, *step), bytes.as_slice())?;
        }
        self.journal.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
        self.step_inputs.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
        let bytes = encode_checked(RUNS_NAME, run);
        self.runs()?.insert((id, run.run), bytes.as_slice())?;
        Ok(())
    }

    fn run(&mut self, execution_id: u64, run: u32) -> Result<Option<RunRecord>, StorageError> {
        let key = (execution_id, run);
        match self.runs()?.get(key)? {
            Some(v) => Ok(Some(decode(RUNS_NAME, &format!("{key:?}"), v.value())?)),
            None => Ok(None),
        }
    }

    fn remove_runs_before(&mut self, execution_id: u64, run: u32) -> Result<(), StorageError> {
        let id = execution_id;
        self.runs()?.retain_in((id, 0)..(id, run), |_, _| false)?;
        self.run_steps()?.retain_in((id, 0, 0)..(id, run, 0), |_, _| false)?;
        Ok(())
    }

    fn put_heartbeat(&mut self, execution_id: u64, task_id: u64, details: &[u8]) -> Result<(), StorageError> {
        self.heartbeats.insert((execution_id, task_id), details)?;
        Ok(())
    }

    fn executions_in_state(&self, state: ExecutionState, after: u64, limit: usize) -> Result<Vec<u64>, StorageError> {
        let code = state_code(state);
        let mut out = Vec::new();
        for entry in self.by_state.range((code, after.saturating_add(1))..=(code, u64::MAX))?.take(limit) {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    fn idempotent(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.idempotency.get(key)?.map(|v| v.value()))
    }

    fn put_idempotency_key(&mut self, key: &str, execution_id: u64) -> Result<(), StorageError> {
        self.idempotency.insert(key, execution_id)?;
        Ok(())
    }

    fn step(&self, execution_id: u64, step: u32) -> Result<Option<JournalEntry>, StorageError> {
        match self.journal.get((execution_id, step))? {
            Some(v) => Ok(Some(decode(JOURNAL_NAME, &format_args!("({execution_id}, {step})"), v.value())?)),
            None => Ok(None),
        }
    }

    fn put_step(&mut self, execution_id: u64, entry: &JournalEntry) -> Result<(), StorageError> {
        self.journal.insert((execution_id, entry.step), encode_checked(JOURNAL_NAME, entry).as_slice())?;
        Ok(())
    }

    fn remove_step(&mut self, execution_id: u64, step: u32) -> Result<(), StorageError> {
        self.journal.remove((execution_id, step))?;
        Ok(())
    }

    fn journal(&self, execution_id: u64) -> Result<Vec<JournalEntry>, StorageError> {
        journal_of(&self.journal, execution_id)
    }

    fn take_step_input(&mut self, execution_id: u64, step: u32) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.step_inputs.remove((execution_id, step))?.map(|v| v.value().to_vec()))
    }

    fn put_step_input(&mut self, execution_id: u64, step: u32, input: &[u8]) -> Result<(), StorageError> {
        self.step_inputs.insert((execution_id, step), input)?;
        Ok(())
    }

    fn push_signal(&mut self, execution_id: u64, name: &str, payload: &[u8]) -> Result<(), StorageError> {
        let next = {
            let mut range = self.signals.range((execution_id, name, 0)..=(execution_id, name, u64::MAX))?;
            match range.next_back() {
                Some(entry) => entry?.0.value().2 + 1,
                None => 0,
            }
        };
        self.signals.insert((execution_id, name, next), payload)?;
        Ok(())
    }

    fn take_signal(&mut self, execution_id: u64, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let first = {
            let mut range = self.signals.range((execution_id, name, 0)..=(execution_id, name, u64::MAX))?;
            match range.next() {
                Some(entry) => {
                    let (k, v) = entry?;
                    Some((k.value().2, v.value().to_vec()))
                }
                None => None,
            }
        };
        let Some((seq, payload)) = first else { return Ok(None) };
        self.signals.remove((execution_id, name, seq))?;
        Ok(Some(payload))
    }

    fn counter(&self, execution_id: u64, name: &str) -> Result<i64, StorageError> {
        Ok(self.counters.get((execution_id, name))?.map_or(0, |v| v.value()))
    }

    fn put_counter(&mut self, execution_id: u64, name: &str, value: i64) -> Result<(), StorageError> {
        self.counters.insert((execution_id, name), value)?;
        Ok(())
    }

    fn state(&self, execution_id: u64, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.state.get((execution_id, key))?.map(|v| v.value().to_vec()))
    }

    fn put_state(&mut self, execution_id: u64, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.state.insert((execution_id, key), value)?;
        Ok(())
    }

    fn cache_entry(&self, key: &CacheKey<'_>) -> Result<Option<CacheRecord>, StorageError> {
        match self.cache.get((key.function, key.version, key.input))? {
            Some(v) => Ok(Some(decode(CACHE_NAME, &key.function, v.value())?)),
            None => Ok(None),
        }
    }

    fn put_cache_entry(
        &mut self,
        key: &CacheKey<'_>,
        record: &CacheRecord,
        old: Option<&CacheRecord>,
    ) -> Result<(), StorageError> {
        let CacheKey { function, version, input } = *key;
        if let Some(old) = old {
            self.cache_by_expiry.remove((old.expires_ms, function, version, input))?;
        }
        self.cache.insert((function, version, input), encode_checked(CACHE_NAME, record).as_slice())?;
        self.cache_by_expiry.insert((record.expires_ms, function, version, input), ())?;
        Ok(())
    }

    fn remove_cache_entry(&mut self, entry: &CacheExpiry) -> Result<(), StorageError> {
        let (function, input) = (entry.function.as_str(), entry.input.as_slice());
        self.cache_by_expiry.remove((entry.expires_ms, function, entry.version, input))?;
        self.cache.remove((function, entry.version, input))?;
        Ok(())
    }

    fn cache_len(&self) -> Result<u64, StorageError> {
        Ok(self.cache.len()?)
    }

    fn cache_by_expiry(&self, before: Option<u64>, limit: usize) -> Result<Vec<CacheExpiry>, StorageError> {
        let end = before.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for entry in self.cache_by_expiry.range((0, "", 0, &[][..])..)?.take(limit) {
            let (k, _) = entry?;
            let (expires_ms, function, version, input) = k.value();
            if before.is_some() && expires_ms >= end {
                break;
            }
            out.push(CacheExpiry { expires_ms, function: function.to_string(), version, input: input.to_vec() });
        }
        Ok(out)
    }

    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetterRecord>, StorageError> {
        match self.dead_letters.get(id)? {
            Some(v) => Ok(Some(decode(DEAD_LETTERS_NAME, &id, v.value())?)),
            None => Ok(None),
        }
    }

    fn put_dead_letter(&mut self, letter: &DeadLetterRecord) -> Result<(), StorageError> {
        self.dead_letters.insert(letter.id, encode_checked(DEAD_LETTERS_NAME, letter).as_slice())?;
        self.dlq_by_time.insert((letter.failed_ms, letter.id), ())?;
        Ok(())
    }

    fn remove_dead_letter(&mut self, id: u64, failed_ms: u64) -> Result<(), StorageError> {
        self.dead_letters.remove(id)?;
        self.dlq_by_time.remove((failed_ms, id))?;
        Ok(())
    }

    fn dead_letters_before(&self, cutoff_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, StorageError> {
        let mut out = Vec::new();
        for entry in self.dlq_by_time.range((0, 0)..(cutoff_ms, 0))?.take(limit) {
            out.push(entry?.0.value());
        }
        Ok(out)
    }

    fn schedule(&mut self, name: &str) -> Result<Option<ScheduleRecord>, StorageError> {
        match self.schedules()?.get(name)? {
            Some(v) => decode(SCHEDULES_NAME, &name, v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put_schedule(&mut self, rec: &ScheduleRecord, old: Option<&ScheduleRecord>) -> Result<(), StorageError> {
        let (was, now) = (old.and_then(ScheduleRecord::due_ms), rec.due_ms());
        if was != now || old.is_none() {
            if let Some(at) = was {
                self.schedule_due()?.remove((at, rec.name.as_str()))?;
            }
            if let Some(at) = now {
                self.schedule_due()?.insert((at, rec.name.as_str()), ())?;
            }
        }
        let bytes = encode_checked(SCHEDULES_NAME, rec);
        self.schedules()?.insert(rec.name.as_str(), bytes.as_slice())?;
        Ok(())
    }

    fn remove_schedule(&mut self, rec: &ScheduleRecord) -> Result<(), StorageError> {
        if let Some(at) = rec.due_ms() {
            self.schedule_due()?.remove((at, rec.name.as_str()))?;
        }
        // Its fires stay indexed with their executions (which keep its name), until retention
        // removes them.
        self.schedules()?.remove(rec.name.as_str())?;
        Ok(())
    }

    fn rate_tat(&mut self, function: &str, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.rate_table()?.get((function, key))?.map(|v| v.value()))
    }

    fn put_rate_tat(&mut self, function: &str, key: &str, tat_ms: u64) -> Result<(), StorageError> {
        self.rate_table()?.insert((function, key), tat_ms)?;
        Ok(())
    }

    fn prune_rate_budgets(&mut self, now_ms: u64, limit: usize) -> Result<u64, StorageError> {
        let mut full = Vec::new();
        if limit == 0 {
            return Ok(0);
        }
        for entry in self.rate_table()?.iter()? {
            let (k, v) = entry?;
            if v.value() <= now_ms {
                let (function, key) = k.value();
                full.push((function.to_string(), key.to_string()));
                if full.len() >= limit {
                    break;
                }
            }
        }
        for (function, key) in &full {
            self.rate_table()?.remove((function.as_str(), key.as_str()))?;
        }
        Ok(full.len() as u64)
    }

    fn key_slots_held(&mut self, function: &str, key: &str, at_most: u64) -> Result<u64, StorageError> {
        let range = (function, key, 0)..=(function, key, u64::MAX);
        let mut n = 0;
        for entry in self.key_slots()?.range(range)?.take(usize::try_from(at_most).unwrap_or(usize::MAX)) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    fn flow_key(&mut self, key: &str) -> Result<Option<(u64, u64)>, StorageError> {
        Ok(self.flow_table()?.get(key)?.map(|v| v.value()))
    }

    fn put_flow_key(&mut self, key: &str, execution_id: u64, opened_ms: u64) -> Result<(), StorageError> {
        self.flow_table()?.insert(key, (execution_id, opened_ms))?;
        Ok(())
    }

    fn run_local(&mut self, body: LocalClosure) -> Result<Vec<u8>, ActivityError> {
        match body.downcast::<RedbLocal>() {
            Ok(f) => f(self.txn),
            Err(_) => Err(ActivityError::permanent("this local step was not written for the redb backend")),
        }
    }
}
