//! Crash recovery at open: every task a stopped process left running loses its lease, and the
//! attempt counts as a lost one (run again, or buried once the budget is spent).

use super::*;
use crate::lease::Fence;

impl<R: Records> Batch<'_, R> {
    /// Revokes every lease in the file (no attempt of a previous process can still run).
    pub fn revoke_leases(&mut self) -> Result<(), StorageError> {
        for task_id in self.r.leased_tasks()? {
            // A damaged record must not keep the rest of the file from opening: it is skipped
            // here and reported by `check`.
            let (mut task, exec) = match self.load_pair(task_id)? {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!(task_id, error = %e, "cannot recover leased task; left as is");
                    continue;
                }
            };
            let old = TaskIndex::of(&task);
            let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
            let Some(lease) = fence.revoke() else {
                continue;
            };
            tracing::warn!(task_id, attempt = lease.token, worker = %lease.worker, "re-queueing task left running by a stopped process");
            let error = ActivityError::retryable(format!(
                "the process stopped while attempt {} was running (worker {:?})",
                lease.token, lease.worker
            ))
            .with_code("process_stopped");
            self.after_lost_attempt(task, &old, exec, lease, error)?;
        }
        Ok(())
    }
}
