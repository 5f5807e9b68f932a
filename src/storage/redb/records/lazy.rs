//! The tables of a batch that most batches never touch (past runs, schedules, flow control),
//! opened by the first transition that needs each, and the concurrency-key slots that move
//! with an execution's state.

use ::redb::Table;

use super::{RedbRecords, RunStepsTable};
use crate::api::ExecutionState;
use crate::storage::records::ExecutionRecord;
use crate::storage::tables::*;
use crate::storage::StorageError;

impl<'t> RedbRecords<'t> {
    pub(super) fn runs(&mut self) -> Result<&mut Table<'t, (u64, u32), &'static [u8]>, StorageError> {
        match &mut self.runs {
            Some(table) => Ok(table),
            none => Ok(none.insert(self.txn.open_table(RUNS)?)),
        }
    }

    pub(super) fn run_steps(&mut self) -> Result<&mut RunStepsTable<'t>, StorageError> {
        match &mut self.run_steps {
            Some(table) => Ok(table),
            none => Ok(none.insert(self.txn.open_table(RUN_STEPS)?)),
        }
    }

    pub(super) fn schedules(&mut self) -> Result<&mut Table<'t, &'static str, &'static [u8]>, StorageError> {
        match &mut self.schedules {
            Some(table) => Ok(table),
            none => Ok(none.insert(self.txn.open_table(SCHEDULES)?)),
        }
    }

    pub(super) fn schedule_due(&mut self) -> Result<&mut Table<'t, (u64, &'static str), ()>, StorageError> {
        match &mut self.schedule_due {
            Some(table) => Ok(table),
            none => Ok(none.insert(self.txn.open_table(SCHEDULE_DUE)?)),
        }
    }

    pub(super) fn schedule_fires(&mut self) -> Result<&mut Table<'t, (&'static str, u64, u64), ()>, StorageError> {
        match &mut self.schedule_fires {
            Some(table) => Ok(table),
            none => Ok(none.insert(self.txn.open_table(SCHEDULE_FIRES)?)),
        }
    }

    pub(super) fn rate_table(&mut self) -> Result<&mut Table<'t, (&'static str, &'static str), u64>, StorageError> {
        match &mut self.rate_state {
            Some(table) => Ok(table),
            none => Ok(none.insert(self.txn.open_table(RATE_STATE)?)),
        }
    }

    pub(super) fn key_slots(&mut self) -> Result<&mut Table<'t, (&'static str, &'static str, u64), ()>, StorageError> {
        match &mut self.key_slots {
            Some(table) => Ok(table),
            none => Ok(none.insert(self.txn.open_table(KEY_SLOTS)?)),
        }
    }

    pub(super) fn flow_table(&mut self) -> Result<&mut Table<'t, &'static str, (u64, u64)>, StorageError> {
        match &mut self.flow_keys {
            Some(table) => Ok(table),
            none => Ok(none.insert(self.txn.open_table(FLOW_KEYS)?)),
        }
    }

    /// Moves the execution's concurrency-key slot with its state: held while it runs.
    pub(super) fn move_key_slot(&mut self, exec: &ExecutionRecord, was_running: bool) -> Result<(), StorageError> {
        let Some(key) = &exec.keys.concurrency else { return Ok(()) };
        let running = exec.state == ExecutionState::Running;
        let entry = (exec.function.as_str(), key.as_str(), exec.id);
        match (was_running, running) {
            (false, true) => drop(self.key_slots()?.insert(entry, ())?),
            (true, false) => drop(self.key_slots()?.remove(entry)?),
            _ => {}
        }
        Ok(())
    }
}
