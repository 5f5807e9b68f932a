//! Cancel and time out: the execution ends, with its live tasks and children.

use super::*;

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
        let children = reject!(soft(self.r.journal(exec.id))?);
        // Read (and so validated) before the first write.
        reject!(soft(self.r.task(exec.root_task))?);
        self.cancel_task(exec.root_task)?;
        self.cancel_steps(&children)?;
        let old = ExecutionIndex::of(&exec);
        exec.state = state;
        exec.finished_ms = Some(self.now);
        self.r.put_execution(&exec, Some(old))?;
        self.effects.push(Effect::Finished { execution_id });
        if let Some(parent) = exec.parent {
            let error = ActivityError::permanent(format!("child execution {execution_id} ended {state}"))
                .with_code(if state == ExecutionState::TimedOut { "child_timed_out" } else { "child_cancelled" });
            self.settle_parent(parent, StepOutcome::Failed { error })?;
        }
        Ok(Ok(OpOutput::State(state)))
    }
}
