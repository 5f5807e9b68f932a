//! The dead-letter queue: list, inspect, replay (optionally with a new input), discard.

use serde::Serialize;

use super::{json_value, unexpected, Engine};
use crate::api::{DeadLetter, DeadLetterId, ExecutionId, TaskId};
use crate::error::{Error, Result};
use crate::storage::records::DeadLetterRecord;
use crate::storage::{Op, OpOutput};

impl Engine {
    /// Dead letters, newest first.
    pub fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        Ok(self.inner.store()?.dead_letters(limit)?.into_iter().map(dead_letter_view).collect())
    }

    /// How many dead letters there are (cheap at any queue size: no record is read).
    pub fn dead_letter_count(&self) -> Result<u64> {
        Ok(self.inner.store()?.dead_letter_count()?)
    }

    pub fn dead_letter(&self, id: DeadLetterId) -> Result<DeadLetter> {
        self.inner.store()?.dead_letter(id.0)?.map(dead_letter_view).ok_or(Error::UnknownDeadLetter(id))
    }

    /// Re-opens the failed execution with a fresh retry budget and removes the dead letter.
    pub async fn replay_dead_letter(&self, id: DeadLetterId) -> Result<ExecutionId> {
        self.replay(id, None).await
    }

    /// Like `replay_dead_letter`, with an operator-edited input. The input must decode as the
    /// function's declared input type, checked here before anything changes: a wrong shape is
    /// refused with [`Error::Payload`] (serde's reason), and so is a function this engine does
    /// not register ([`Error::UnknownFunction`]), whose type it cannot know.
    pub async fn replay_dead_letter_with_input<I: Serialize>(
        &self,
        id: DeadLetterId,
        input: &I,
    ) -> Result<ExecutionId> {
        let letter = self.dead_letter(id)?;
        let bytes = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: letter.function.clone(), reason: e.to_string() })?;
        self.check_payload(&bytes)?;
        let function = self.inner.registry.require(&letter.function)?;
        (function.input_check)(&bytes).map_err(|reason| Error::Payload {
            function: letter.function.clone(),
            reason: format!("the new input does not decode as the function's input type: {reason}"),
        })?;
        self.replay(id, Some(bytes)).await
    }

    /// [`Engine::replay_dead_letter_with_input`] without the check of the input's type, for
    /// an engine that does not register the function (the CLI beside no running
    /// application): the input is then decoded only when an attempt runs.
    pub async fn replay_dead_letter_with_unchecked_input(
        &self,
        id: DeadLetterId,
        input: &serde_json::Value,
    ) -> Result<ExecutionId> {
        let bytes = serde_json::to_vec(input).map_err(|e| Error::Internal(e.to_string()))?;
        self.check_payload(&bytes)?;
        self.replay(id, Some(bytes)).await
    }

    /// Replays a failed workflow execution, running its failed call at `step` again with an
    /// operator-edited `input` (completed steps are kept and not redone).
    pub async fn replay_dead_letter_with_step_input<I: Serialize>(
        &self,
        id: DeadLetterId,
        step: u32,
        input: &I,
    ) -> Result<ExecutionId> {
        let letter = self.dead_letter(id)?;
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: letter.function.clone(), reason: e.to_string() })?;
        self.check_payload(&input)?;
        match self.inner.submit(Op::ReplayDeadLetterStep { id: id.0, step, input }).await? {
            OpOutput::Replayed { execution_id } => Ok(ExecutionId(execution_id)),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn replay(&self, id: DeadLetterId, input: Option<Vec<u8>>) -> Result<ExecutionId> {
        match self.inner.submit(Op::ReplayDeadLetter { id: id.0, input }).await? {
            OpOutput::Replayed { execution_id } => Ok(ExecutionId(execution_id)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn discard_dead_letter(&self, id: DeadLetterId) -> Result<()> {
        self.inner.submit(Op::DiscardDeadLetter { id: id.0 }).await.map(|_| ())
    }
}

fn dead_letter_view(r: DeadLetterRecord) -> DeadLetter {
    DeadLetter {
        id: DeadLetterId(r.id),
        execution_id: ExecutionId(r.execution_id),
        task_id: TaskId(r.task_id),
        function: r.function,
        queue: r.queue,
        input: json_value(&r.input),
        error: r.error,
        attempts: r.attempts,
        history: r.history,
        failed_ms: r.failed_ms,
    }
}
