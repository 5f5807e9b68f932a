//! An attempt's end: completed, failed (retried or buried in the DLQ), or lost (lease expired,
//! abandoned by a draining worker), each under the fencing token of its lease.

use super::*;

impl<R: Records> Batch<'_, R> {
    pub(super) fn complete(
        &mut self,
        task_id: u64,
        token: u32,
        output: Vec<u8>,
        local: Local,
        next: Option<Continuation>,
    ) -> OpRes<OpOutput> {
        let (mut task, mut exec) = reject!(self.load_pair(task_id)?);
        let old = TaskIndex::of(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        reject!(fence.release(token));
        task.state = TaskState::Completed;
        if let Some(policy) = task.cache {
            self.cache_put(policy, &task.function, &task.input, &output)?;
        }
        // What the attempt recorded counts only with its accepted outcome: exactly once.
        for (name, delta) in &local.counters {
            self.add_counter(exec.id, name, *delta)?;
        }
        for (key, value) in &local.state {
            self.r.put_state(exec.id, key, value)?;
        }
        if task.kind == TaskKind::Workflow && task.step.is_none() {
            for s in local.steps {
                if self.r.step(exec.id, s.step)?.is_some() {
                    continue;
                }
                let Some(outcome) = self.local_outcome(exec.id, s.body)? else { continue };
                self.r
                    .put_step(exec.id, &JournalEntry { step: s.step, kind: s.kind, outcome, recorded_ms: self.now })?;
            }
        }
        if let Some(step) = task.step {
            self.r.put_task(&task, &old)?;
            // The timer of a signal wait fired first: the wait timed out (an empty array).
            let timed_out = matches!(
                self.r.step(exec.id, step)?,
                Some(JournalEntry { outcome: StepOutcome::AwaitingSignal { timer: Some(t) }, .. }) if t == task_id
            );
            let output = if timed_out { b"[]".to_vec() } else { output };
            let claimed = self.settle_step_for(&exec, step, StepOutcome::Completed { output }, next.as_ref())?;
            return Ok(Ok(claimed.map_or(OpOutput::Done, OpOutput::Next)));
        }
        self.r.put_task(&task, &old)?;
        if task.kind == TaskKind::Workflow {
            let journal = self.r.journal(exec.id)?;
            self.cancel_steps(&journal)?;
        }
        let old = ExecutionIndex::of(&exec);
        exec.state = ExecutionState::Completed;
        exec.output = Some(output);
        exec.finished_ms = Some(self.now);
        self.r.put_execution(&exec, Some(old))?;
        self.ended(&exec)?;
        if let (Some(parent), Some(output)) = (exec.parent, exec.output) {
            self.settle_parent(parent, StepOutcome::Completed { output })?;
        }
        Ok(Ok(OpOutput::Done))
    }

    pub(super) fn fail(&mut self, task_id: u64, token: u32, error: ActivityError, jitter_unit: f64) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(self.load_pair(task_id)?);
        let old = TaskIndex::of(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        let lease = reject!(fence.release(token));
        task.push_history(AttemptRecord {
            attempt: token,
            worker: lease.worker,
            started_ms: lease.started_ms,
            ended_ms: self.now,
            error: error.clone(),
        });
        let policy = RetryPolicy::from(&task.retry);
        let attempts = task.attempts_in_round();
        let buried = !(policy.retries(&error) && attempts < policy.max_attempts);
        if buried {
            self.bury(task, &old, exec, error)?;
        } else {
            let delay_ms = crate::storage::records::duration_ms(policy.delay_after(attempts, jitter_unit));
            self.requeue(task, &old, delay_ms)?;
        }
        Ok(Ok(OpOutput::Failed { buried }))
    }

    pub(super) fn expire(&mut self, task_id: u64, token: u32) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(self.load_pair(task_id)?);
        let old = TaskIndex::of(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        let Some(lease) = fence.expire(token, self.now) else {
            return Ok(Ok(OpOutput::Expired(false)));
        };
        let error = ActivityError::retryable(format!(
            "lease of worker {:?} expired at {} ms without a heartbeat",
            lease.worker, lease.expires_ms
        ))
        .with_code("lease_expired");
        self.effects.push(Effect::Abort { task_id, token: Some(token) });
        self.after_lost_attempt(task, &old, exec, lease, error)?;
        Ok(Ok(OpOutput::Expired(true)))
    }

    pub(super) fn abandon(&mut self, task_id: u64, token: u32, reason: String) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(self.load_pair(task_id)?);
        let old = TaskIndex::of(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        let lease = reject!(fence.release(token));
        let error = ActivityError::retryable(reason).with_code("abandoned");
        self.after_lost_attempt(task, &old, exec, lease, error)?;
        Ok(Ok(OpOutput::Done))
    }

    /// An attempt ended without an outcome (lease expired, worker drained, process died): it
    /// counts, and the task runs again at once unless its budget is spent.
    pub(super) fn after_lost_attempt(
        &mut self,
        mut task: TaskRecord,
        old: &TaskIndex,
        exec: ExecutionRecord,
        lease: crate::storage::records::LeaseRecord,
        error: ActivityError,
    ) -> Result<(), StorageError> {
        task.push_history(AttemptRecord {
            attempt: lease.token,
            worker: lease.worker,
            started_ms: lease.started_ms,
            ended_ms: self.now,
            error: error.clone(),
        });
        if task.attempts_in_round() < task.retry.max_attempts {
            self.requeue(task, old, 0)
        } else {
            self.bury(task, old, exec, error)
        }
    }

    pub(super) fn requeue(&mut self, mut task: TaskRecord, old: &TaskIndex, delay_ms: u64) -> Result<(), StorageError> {
        task.state = TaskState::Pending;
        task.lease = None;
        task.ready_ms = self.now.saturating_add(delay_ms);
        task.due_ms = (delay_ms > 0).then_some(task.ready_ms);
        self.r.put_task(&task, old)?;
        self.effects.push(pending_effect(&task));
        Ok(())
    }

    /// Retries exhausted or the error is permanent: the task fails, its execution fails, and
    /// the dead letter is written, all in this transaction.
    pub(super) fn bury(
        &mut self,
        mut task: TaskRecord,
        old: &TaskIndex,
        exec: ExecutionRecord,
        error: ActivityError,
    ) -> Result<(), StorageError> {
        task.state = TaskState::Failed;
        task.lease = None;
        task.due_ms = None;
        self.r.put_task(&task, old)?;
        if let Some(step) = task.step {
            // A step's failure is the workflow's to handle: record it and wake the workflow.
            return self.settle_step(&exec, step, StepOutcome::Failed { error });
        }
        if task.kind == TaskKind::Workflow {
            let journal = self.r.journal(exec.id)?;
            self.cancel_steps(&journal)?;
        }
        let parent = exec.parent;
        let burial = Burial {
            task_id: task.id,
            function: task.function,
            queue: task.queue,
            input: task.input,
            attempts: task.attempt,
            history: task.history,
        };
        let letter = self.fail_execution(exec, error, burial)?;
        if let Some(parent) = parent {
            self.settle_parent(parent, StepOutcome::Failed { error: letter.error })?;
        }
        Ok(())
    }

    /// The execution fails with `error`, and its dead letter (from `burial`) is written.
    pub(super) fn fail_execution(
        &mut self,
        mut exec: ExecutionRecord,
        error: ActivityError,
        burial: Burial,
    ) -> Result<DeadLetterRecord, StorageError> {
        let old = ExecutionIndex::of(&exec);
        exec.state = ExecutionState::Failed;
        exec.error = Some(error.clone());
        exec.finished_ms = Some(self.now);
        self.r.put_execution(&exec, Some(old))?;
        let id = self.ids.next_dead_letter;
        self.ids.next_dead_letter += 1;
        let Burial { task_id, function, queue, input, attempts, history } = burial;
        let letter = DeadLetterRecord {
            id,
            execution_id: exec.id,
            task_id,
            function,
            queue,
            input,
            error,
            attempts,
            history,
            failed_ms: self.now,
        };
        self.r.put_dead_letter(&letter)?;
        self.ended(&exec)?;
        self.effects.push(Effect::DeadLettered { execution_id: exec.id, function: letter.function.clone() });
        Ok(letter)
    }
}

/// What a dead letter keeps of the task that failed.
pub(super) struct Burial {
    pub task_id: u64,
    pub function: String,
    pub queue: String,
    pub input: Vec<u8>,
    pub attempts: u32,
    pub history: Vec<AttemptRecord>,
}
