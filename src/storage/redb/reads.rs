//! The read side of the redb backend: each read in a read transaction of its own.

use ::redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::records::journal_of;
use super::{corrupted, RedbStore};
use crate::api::{CleanupReport, ExecutionFilter, ExecutionState, Page};
use crate::storage::codec::decode;
use crate::storage::op::TERMINAL_STATES;
use crate::storage::records::{state_code, DeadLetterRecord, ExecutionRecord, JournalEntry, RunRecord, TaskRecord};
use crate::storage::tables::*;
use crate::storage::transitions::{retention, Retention};
use crate::storage::StorageError;

impl RedbStore {
    pub(super) fn read_execution(&self, id: u64) -> Result<Option<(ExecutionRecord, TaskRecord)>, StorageError> {
        let read = self.db.begin_read()?;
        let executions = read.open_table(EXECUTIONS)?;
        let Some(v) = executions.get(id)? else {
            return Ok(None);
        };
        let exec: ExecutionRecord = decode(EXECUTIONS_NAME, &id, v.value())?;
        let tasks = read.open_table(TASKS)?;
        let task: TaskRecord = match tasks.get(exec.root_task)? {
            Some(v) => decode(TASKS_NAME, &exec.root_task, v.value())?,
            None => return Err(corrupted(TASKS_NAME, format!("{} (root task missing)", exec.root_task))),
        };
        Ok(Some((exec, task)))
    }

    pub(super) fn read_executions(
        &self,
        filter: &ExecutionFilter,
        page: &Page,
    ) -> Result<Vec<ExecutionRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let executions = read.open_table(EXECUTIONS)?;
        let before = page.before.map_or(u64::MAX, |id| id.0);
        let limit = page.limit.clamp(1, 10_000) as usize;
        let mut out = Vec::new();
        let mut consider = |id: u64, bytes: &[u8]| -> Result<bool, StorageError> {
            let exec: ExecutionRecord = decode(EXECUTIONS_NAME, &id, bytes)?;
            let keep = filter.state.is_none_or(|s| s == exec.state)
                && filter.function.as_ref().is_none_or(|f| *f == exec.function)
                && filter.queue.as_ref().is_none_or(|q| *q == exec.queue);
            if keep {
                out.push(exec);
            }
            Ok(out.len() >= limit)
        };
        if let Some(state) = filter.state {
            let code = state_code(state);
            let by_state = read.open_table(EXEC_BY_STATE)?;
            for entry in by_state.range((code, 0)..(code, before))?.rev() {
                let (key, _) = entry?;
                let id = key.value().1;
                let Some(v) = executions.get(id)? else {
                    return Err(corrupted(EXECUTIONS_NAME, format!("{id} (indexed but missing)")));
                };
                if consider(id, v.value())? {
                    break;
                }
            }
        } else {
            for entry in executions.range(..before)?.rev() {
                let (key, v) = entry?;
                if consider(key.value(), v.value())? {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub(super) fn read_counts(&self) -> Result<Vec<(ExecutionState, u64)>, StorageError> {
        let read = self.db.begin_read()?;
        let counts = read.open_table(EXEC_COUNTS)?;
        let mut out = Vec::with_capacity(ExecutionState::ALL.len());
        for state in ExecutionState::ALL {
            out.push((state, counts.get(state_code(state))?.map_or(0, |v| v.value())));
        }
        Ok(out)
    }

    pub(super) fn read_queue_depth(&self, queue: &str) -> Result<u64, StorageError> {
        let read = self.db.begin_read()?;
        let ready = read.open_table(READY)?;
        let mut n = 0;
        for entry in ready.range((queue, 0u32, 0u64, 0u64)..=(queue, u32::MAX, u64::MAX, u64::MAX))? {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    pub(super) fn read_running_tasks(&self) -> Result<Vec<TaskRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let leases = read.open_table(LEASES)?;
        let tasks = read.open_table(TASKS)?;
        let mut out = Vec::new();
        for entry in leases.iter()? {
            let (key, _) = entry?;
            let id = key.value().1;
            match tasks.get(id)? {
                Some(v) => out.push(decode(TASKS_NAME, &id, v.value())?),
                None => return Err(corrupted(TASKS_NAME, format!("{id} (leased but missing)"))),
            }
        }
        Ok(out)
    }

    pub(super) fn read_task(&self, id: u64) -> Result<Option<TaskRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let tasks = read.open_table(TASKS)?;
        let Some(v) = tasks.get(id)? else { return Ok(None) };
        Ok(Some(decode(TASKS_NAME, &id, v.value())?))
    }

    /// redb keeps each table's length in its root: one read, whatever the queue's size.
    pub(super) fn read_dead_letter_count(&self) -> Result<u64, StorageError> {
        let read = self.db.begin_read()?;
        Ok(read.open_table(DEAD_LETTERS)?.len()?)
    }

    pub(super) fn read_dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let by_time = read.open_table(DLQ_BY_TIME)?;
        let letters = read.open_table(DEAD_LETTERS)?;
        let mut out = Vec::new();
        for entry in by_time.iter()?.rev().take(limit as usize) {
            let (key, _) = entry?;
            let id = key.value().1;
            match letters.get(id)? {
                Some(v) => out.push(decode(DEAD_LETTERS_NAME, &id, v.value())?),
                None => return Err(corrupted(DEAD_LETTERS_NAME, format!("{id} (indexed but missing)"))),
            }
        }
        Ok(out)
    }

    pub(super) fn read_dead_letter(&self, id: u64) -> Result<Option<DeadLetterRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let letters = read.open_table(DEAD_LETTERS)?;
        match letters.get(id)? {
            Some(v) => Ok(Some(decode(DEAD_LETTERS_NAME, &id, v.value())?)),
            None => Ok(None),
        }
    }

    pub(super) fn read_journal(&self, execution_id: u64) -> Result<Vec<JournalEntry>, StorageError> {
        let read = self.db.begin_read()?;
        journal_of(&read.open_table(JOURNAL)?, execution_id)
    }

    /// An execution's past runs, oldest first, and (`Some(run)`) the journal of one of them.
    pub(super) fn read_runs(&self, execution_id: u64) -> Result<Vec<RunRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in read.open_table(RUNS)?.range((execution_id, 0)..=(execution_id, u32::MAX))? {
            let (k, v) = entry?;
            out.push(decode(RUNS_NAME, &format_args!("{:?}", k.value()), v.value())?);
        }
        Ok(out)
    }

    pub(super) fn read_run_journal(&self, execution_id: u64, run: u32) -> Result<Vec<JournalEntry>, StorageError> {
        let read = self.db.begin_read()?;
        let mut out = Vec::new();
        let table = read.open_table(RUN_STEPS)?;
        for entry in table.range((execution_id, run, 0)..=(execution_id, run, u32::MAX))? {
            let (k, v) = entry?;
            out.push(decode(RUN_STEPS_NAME, &format_args!("{:?}", k.value()), v.value())?);
        }
        Ok(out)
    }

    pub(super) fn read_cleanup_preview(&self, now_ms: u64, cutoff_ms: u64) -> Result<CleanupReport, StorageError> {
        let read = self.db.begin_read()?;
        let mut report = CleanupReport {
            dead_letters: read.open_table(DLQ_BY_TIME)?.range((0, 0)..(cutoff_ms, 0))?.count() as u64,
            cache_entries: read
                .open_table(CACHE_BY_EXPIRY)?
                .range((0, "", 0, &[][..])..(now_ms, "", 0, &[][..]))?
                .count() as u64,
            executions: 0,
            rate_budgets: read
                .open_table(RATE_STATE)?
                .iter()?
                .try_fold(0u64, |n, e| Ok::<_, StorageError>(n + u64::from(e?.1.value() <= now_ms)))?,
        };
        let executions = read.open_table(EXECUTIONS)?;
        for state in TERMINAL_STATES {
            let code = state_code(state);
            for entry in read.open_table(EXEC_BY_STATE)?.range((code, 0)..=(code, u64::MAX))? {
                let id = entry?.0.value().1;
                let Some(v) = executions.get(id)? else { continue };
                let Ok(exec) = decode::<ExecutionRecord>(EXECUTIONS_NAME, &id, v.value()) else { continue };
                match retention(&exec, cutoff_ms) {
                    Retention::Remove => report.executions += 1,
                    Retention::Keep => {}
                    Retention::NewerFromHere => break,
                }
            }
        }
        Ok(report)
    }

    pub(super) fn read_journal_steps(
        &self,
        execution_id: u64,
        steps: &[u32],
    ) -> Result<Vec<JournalEntry>, StorageError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(JOURNAL)?;
        let mut out = Vec::with_capacity(steps.len());
        for &step in steps {
            if let Some(v) = table.get((execution_id, step))? {
                out.push(decode(JOURNAL_NAME, &format_args!("({execution_id}, {step})"), v.value())?);
            }
        }
        Ok(out)
    }

    pub(super) fn read_context(&self, execution_id: u64) -> Result<super::ExecutionContext, StorageError> {
        let read = self.db.begin_read()?;
        let mut counters = Vec::new();
        for entry in read.open_table(COUNTERS)?.range((execution_id, "")..(execution_id + 1, ""))? {
            let (k, v) = entry?;
            counters.push((k.value().1.to_string(), v.value()));
        }
        let mut state = Vec::new();
        for entry in read.open_table(STATE)?.range((execution_id, "")..(execution_id + 1, ""))? {
            let (k, v) = entry?;
            state.push((k.value().1.to_string(), v.value().to_vec()));
        }
        Ok((counters, state))
    }

    pub(super) fn read_pending_work(&self, now_ms: u64) -> Result<(u64, u64, u64), StorageError> {
        let read = self.db.begin_read()?;
        let ready = read.open_table(READY)?.len()?;
        let running = read.open_table(LEASES)?.len()?;
        let mut due = 0;
        for entry in read.open_table(TIMERS)?.range((0, 0)..=(now_ms, u64::MAX))? {
            entry?;
            due += 1;
        }
        due += Self::schedules_due(&read, now_ms)?;
        Ok((ready, running, due))
    }
}
