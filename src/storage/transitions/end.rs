//! Cancel and time out: the execution ends, with its live tasks and children.

use super::*;
use crate::storage::records::EXECUTION_CANCELLED;

impl<R: Records> Batch<'_, R> {
    /// Cancel, or time out: the execution ends and its live task with it.
    pub(super) fn end_execution(&mut self, execution_id: u64, state: ExecutionState) -> OpRes<OpOutput> {
        let Some(mut exec) = reject!(soft(self.r.execution(execution_id))?) else {
            return Ok(Err(Rejection::UnknownExecution(execution_id)));
        };
        if exec.state.is_terminal() {
            return Ok(Ok(OpOutput::State(exec.state)));
        }
        if state == ExecutionState::TimedOut && exec.deadline_ms.is_none_or(|d| d > self.now) {
            return Ok(Ok(OpOutput::State(exec.state)));
        }
        // A cancel's grace ran out: it ends cancelled, as asked.
        let state = if exec.cancel_requested_ms.is_some() { ExecutionState::Cancelled } else { state };
        let children = reject!(soft(self.r.journal(exec.id))?);
        // Read (and so validated) before the first write.
        reject!(soft(self.r.task(exec.root_task))?);
        self.cancel_task(exec.root_task)?;
        self.cancel_steps(&children)?;
        let old = ExecutionIndex::of(&exec);
        exec.state = state;
        exec.finished_ms = Some(self.now);
        self.r.put_execution(&exec, Some(old))?;
        self.ended(&exec)?;
        if let Some(parent) = exec.parent {
            let error = ActivityError::permanent(format!("child execution {execution_id} ended {state}"))
                .with_code(if state == ExecutionState::TimedOut { "child_timed_out" } else { "child_cancelled" });
            self.settle_parent(parent, StepOutcome::Failed { error })?;
        }
        Ok(Ok(OpOutput::State(state)))
    }

    /// A graceful cancel (see `Op::RequestCancel`).
    pub(super) fn request_cancel(&mut self, execution_id: u64, grace_ms: u64) -> OpRes<OpOutput> {
        let Some(mut exec) = reject!(soft(self.r.execution(execution_id))?) else {
            return Ok(Err(Rejection::UnknownExecution(execution_id)));
        };
        if exec.state.is_terminal() {
            return Ok(Ok(OpOutput::State(exec.state)));
        }
        let Some(root) = reject!(soft(self.r.task(exec.root_task))?) else {
            return Ok(Err(Rejection::Storage(corrupted(
                TASKS_NAME,
                format!("{} (root task missing)", exec.root_task),
            ))));
        };
        if root.kind != TaskKind::Workflow || exec.cancel_requested_ms.is_some() {
            return self.end_execution(execution_id, ExecutionState::Cancelled);
        }
        let journal = reject!(soft(self.r.journal(exec.id))?);
        let open: Vec<u32> = journal.iter().filter(|e| !e.outcome.is_final()).map(|e| e.step).collect();
        let error = ActivityError::permanent("cancelled: the execution was cancelled").with_code(EXECUTION_CANCELLED);
        self.cancel_open_steps(exec.id, &open, &error)?;
        let old = ExecutionIndex::of(&exec);
        exec.cancel_requested_ms = Some(self.now);
        let end_by = self.now.saturating_add(grace_ms);
        exec.deadline_ms = Some(exec.deadline_ms.map_or(end_by, |d| d.min(end_by)));
        self.r.put_execution(&exec, Some(old))?;
        if let Some(deadline_ms) = exec.deadline_ms {
            self.effects.push(Effect::Deadline { execution_id, deadline_ms });
        }
        // A step it waits for is cancelled: it runs next, to compensate.
        self.wake_workflow(&exec, None)?;
        Ok(Ok(OpOutput::State(exec.state)))
    }
}
