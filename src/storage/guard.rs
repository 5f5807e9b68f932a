//! Panics from redb become errors at the storage boundary.
//!
//! redb checks page checksums only when it verifies the whole file (`VerifyOnOpen::Full`, and
//! the repair it runs by itself after an unclean shutdown). Otherwise it trusts the pages it
//! reads, and a page damaged on disk can make it panic (a slice index out of range, an
//! `unreachable!`) instead of returning an error. The default open (`VerifyOnOpen::Live`) reads
//! only the live part of the file, so such a page can be met later, by any read or write. The
//! rule is that nothing read from disk takes the process down: [`Guarded`] runs every [`Store`]
//! call under [`unpanic`], which turns a panic into `StorageError::CorruptFile`. From the
//! writer, that error poisons the engine like a failed commit (the transaction was dropped
//! half-applied); a read just fails. Unwinding is needed: under `panic = "abort"` the process
//! still aborts (and a stack overflow always does; redb bounds its tree descents against it).

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::records::{DeadLetterRecord, ExecutionRecord, JournalEntry, RunRecord, ScheduleRecord, TaskRecord};
use super::{Effect, ExecutionContext, Op, OpResult, StorageError, Store};
use crate::api::{CleanupReport, ExecutionFilter, ExecutionState, Page};

/// Runs `f`; a panic inside it is returned as `CorruptFile`, naming `what` was being done and
/// the panic's message.
pub fn unpanic<T>(what: &str, f: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
    // Unwind safety: after a caught panic the caller either drops what `f` touched (the open)
    // or reports the error (a write poisons the engine); the store's own mutex tolerates
    // poisoning.
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            tracing::error!(what, message, "panic in the storage layer; reported as a corrupt file");
            Err(StorageError::CorruptFile(format!(
                "the storage layer panicked while {what} ({message}); a page of the file may be damaged \
                 (open it with VerifyOnOpen::Full to check every page)"
            )))
        }
    }
}

/// A [`Store`] whose every call runs under [`unpanic`]. The engine holds its store this way.
pub struct Guarded<S>(pub S);

impl<S: Store> Store for Guarded<S> {
    fn apply_batch(&self, now_ms: u64, ops: Vec<Op>) -> Result<(Vec<OpResult>, Vec<Effect>), StorageError> {
        unpanic("applying a batch", || self.0.apply_batch(now_ms, ops))
    }
    fn recover(&self, now_ms: u64) -> Result<Vec<Effect>, StorageError> {
        unpanic("recovering at open", || self.0.recover(now_ms))
    }
    fn execution(&self, id: u64) -> Result<Option<(ExecutionRecord, TaskRecord)>, StorageError> {
        unpanic("reading an execution", || self.0.execution(id))
    }
    fn list_executions(&self, filter: &ExecutionFilter, page: &Page) -> Result<Vec<ExecutionRecord>, StorageError> {
        unpanic("listing executions", || self.0.list_executions(filter, page))
    }
    fn count_by_state(&self) -> Result<Vec<(ExecutionState, u64)>, StorageError> {
        unpanic("counting executions", || self.0.count_by_state())
    }
    fn queue_depth(&self, queue: &str) -> Result<u64, StorageError> {
        unpanic("reading a queue depth", || self.0.queue_depth(queue))
    }
    fn running_tasks(&self) -> Result<Vec<TaskRecord>, StorageError> {
        unpanic("listing running tasks", || self.0.running_tasks())
    }
    fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRecord>, StorageError> {
        unpanic("listing dead letters", || self.0.dead_letters(limit))
    }
    fn task(&self, id: u64) -> Result<Option<TaskRecord>, StorageError> {
        unpanic("reading a task", || self.0.task(id))
    }
    fn dead_letter_count(&self) -> Result<u64, StorageError> {
        unpanic("counting dead letters", || self.0.dead_letter_count())
    }
    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetterRecord>, StorageError> {
        unpanic("reading a dead letter", || self.0.dead_letter(id))
    }
    fn journal(&self, execution_id: u64) -> Result<Vec<JournalEntry>, StorageError> {
        unpanic("reading a journal", || self.0.journal(execution_id))
    }
    fn runs(&self, execution_id: u64) -> Result<Vec<RunRecord>, StorageError> {
        unpanic("reading past runs", || self.0.runs(execution_id))
    }
    fn run_journal(&self, execution_id: u64, run: u32) -> Result<Vec<JournalEntry>, StorageError> {
        unpanic("reading a past run's journal", || self.0.run_journal(execution_id, run))
    }
    fn cleanup_preview(&self, now_ms: u64, cutoff_ms: u64) -> Result<CleanupReport, StorageError> {
        unpanic("previewing a cleanup", || self.0.cleanup_preview(now_ms, cutoff_ms))
    }
    fn journal_steps(&self, execution_id: u64, steps: &[u32]) -> Result<Vec<JournalEntry>, StorageError> {
        unpanic("reading journal steps", || self.0.journal_steps(execution_id, steps))
    }
    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StorageError> {
        unpanic("reading schedules", || self.0.schedules())
    }
    fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, StorageError> {
        unpanic("reading a schedule", || self.0.schedule(name))
    }
    fn schedule_fires(&self, name: &str, limit: usize) -> Result<Vec<(u64, u64)>, StorageError> {
        unpanic("reading a schedule's fires", || self.0.schedule_fires(name, limit))
    }
    fn key_slots(&self) -> Result<Vec<(String, String, u64)>, StorageError> {
        unpanic("reading the concurrency keys", || self.0.key_slots())
    }
    fn heartbeat(&self, execution_id: u64, task_id: u64) -> Result<Option<Vec<u8>>, StorageError> {
        unpanic("reading a heartbeat", || self.0.heartbeat(execution_id, task_id))
    }
    fn context(&self, execution_id: u64) -> Result<ExecutionContext, StorageError> {
        unpanic("reading an execution's counters and state", || self.0.context(execution_id))
    }
    fn pending_work(&self, now_ms: u64) -> Result<(u64, u64, u64), StorageError> {
        unpanic("reading the pending work", || self.0.pending_work(now_ms))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self.0.as_any()
    }
    fn check(&self) -> Result<Vec<String>, StorageError> {
        unpanic("checking the file", || self.0.check())
    }
    fn trace_seed(&self) -> u64 {
        self.0.trace_seed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_corrupt_file_naming_what_and_why() {
        let err = unpanic::<()>("reading a page", || panic!("range end index 99 out of range")).unwrap_err();
        match err {
            StorageError::CorruptFile(msg) => {
                assert!(msg.contains("while reading a page"), "{msg}");
                assert!(msg.contains("range end index 99 out of range"), "{msg}");
            }
            other => panic!("expected CorruptFile, got {other:?}"),
        }
        let formatted = unpanic::<()>("x", || panic!("{} apples", 3)).unwrap_err();
        assert!(formatted.to_string().contains("3 apples"), "{formatted}");
        assert_eq!(unpanic("y", || Ok(5)).unwrap(), 5);
    }
}
