//! The dead-letter queue: replay (failed and cancelled steps run again, completed ones are
//! kept), replay with an edited step input, and discard.

use super::*;
use crate::api::TaskState;
use crate::storage::index::pending_effect;
use crate::storage::records::{StepKind, StepOutcome, TaskKind};

impl<R: Records> Batch<'_, R> {
    pub(super) fn replay(&mut self, id: u64, input: Option<Vec<u8>>) -> OpRes<OpOutput> {
        let Some(letter) = reject!(soft(self.r.dead_letter(id))?) else {
            return Ok(Err(Rejection::UnknownDeadLetter(id)));
        };
        let (mut task, mut exec) = reject!(self.load_pair(letter.task_id)?);
        if exec.state != ExecutionState::Failed || task.state != TaskState::Failed {
            return Ok(Err(Rejection::NotReplayable {
                id,
                reason: format!("execution {} is {}, not failed", exec.id, exec.state),
            }));
        }
        let journal = match task.kind {
            TaskKind::Workflow => reject!(soft(self.r.journal(exec.id))?),
            TaskKind::Activity => Vec::new(),
        };
        // Failed and cancelled steps run again; completed ones are kept and not redone.
        for entry in &journal {
            let rerun = match entry.outcome {
                StepOutcome::Failed { .. } => true,
                StepOutcome::Scheduled { task_id } => {
                    self.r.task(task_id)?.is_none_or(|t| matches!(t.state, TaskState::Cancelled | TaskState::Failed))
                }
                StepOutcome::Child { execution_id } => self.r.execution(execution_id)?.is_none_or(|c| {
                    matches!(c.state, ExecutionState::Cancelled | ExecutionState::Failed | ExecutionState::TimedOut)
                }),
                StepOutcome::Completed { .. } | StepOutcome::AwaitingSignal { .. } => false,
            };
            if rerun {
                self.r.remove_step(exec.id, entry.step)?;
            }
        }
        let old = TaskIndex::of(&task);
        task.state = TaskState::Pending;
        task.round_start = task.attempt;
        task.due_ms = None;
        task.ready_ms = self.now;
        if let Some(input) = input {
            task.input = input;
        }
        self.r.put_task(&task, &old)?;
        let old_exec = ExecutionIndex::of(&exec);
        exec.state = ExecutionState::Pending;
        exec.error = None;
        exec.finished_ms = None;
        exec.deadline_ms = exec.max_duration_ms.map(|d| self.now.saturating_add(d));
        self.r.put_execution(&exec, Some(old_exec))?;
        self.r.remove_dead_letter(id, letter.failed_ms)?;
        self.effects.push(pending_effect(&task));
        if let Some(deadline_ms) = exec.deadline_ms {
            self.effects.push(Effect::Deadline { execution_id: exec.id, deadline_ms });
        }
        Ok(Ok(OpOutput::Replayed { execution_id: exec.id }))
    }

    pub(super) fn replay_step(&mut self, id: u64, step: u32, input: Vec<u8>) -> OpRes<OpOutput> {
        let Some(letter) = reject!(soft(self.r.dead_letter(id))?) else {
            return Ok(Err(Rejection::UnknownDeadLetter(id)));
        };
        let entry = reject!(soft(self.r.step(letter.execution_id, step))?);
        if !matches!(
            &entry,
            Some(JournalEntry { kind: StepKind::Call { .. }, outcome: StepOutcome::Failed { .. }, .. })
        ) {
            return Ok(Err(Rejection::NotReplayable {
                id,
                reason: format!("step {step} of execution {} is not a failed call", letter.execution_id),
            }));
        }
        let replayed = reject!(self.replay(id, None)?);
        self.r.put_step_input(letter.execution_id, step, &input)?;
        Ok(Ok(replayed))
    }

    pub(super) fn discard(&mut self, id: u64) -> OpRes<OpOutput> {
        let Some(letter) = reject!(soft(self.r.dead_letter(id))?) else {
            return Ok(Err(Rejection::UnknownDeadLetter(id)));
        };
        self.r.remove_dead_letter(id, letter.failed_ms)?;
        Ok(Ok(OpOutput::Done))
    }
}
