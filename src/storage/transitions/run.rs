//! A workflow's run ending in `Ctx::continue_as_new`: in one transaction the run's journal
//! becomes a past run (`archive_run`), what the run left live is cancelled and its step tasks
//! removed, and the execution's root task starts the next run (pending again, or claimed for
//! the same worker) with the new input, under the version of the code that continued it.
//! The execution keeps its id, mailbox, counters, state, parent link and deadline.

use super::*;

/// What the next run starts with.
pub(super) struct NextRun {
    pub input: Vec<u8>,
    pub version: u32,
    /// Past runs to keep: older ones are removed in this transaction.
    pub runs_kept: u32,
}

impl<R: Records> Batch<'_, R> {
    pub(super) fn continue_as_new(
        &mut self,
        task_id: u64,
        token: u32,
        next_run: NextRun,
        local: Local,
        next: Option<Continuation>,
    ) -> OpRes<OpOutput> {
        let (mut task, mut exec) = reject!(self.load_pair(task_id)?);
        if task.kind != TaskKind::Workflow || task.step.is_some() {
            let key = format!("{task_id} (continue-as-new from a task that is not a workflow's root)");
            return Ok(Err(Rejection::Storage(corrupted(TASKS_NAME, key))));
        }
        let old_index = TaskIndex::of(&task);
        reject!(Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease }.release(token));
        // The run's local steps since its last suspension belong to its journal.
        for s in local.steps {
            if self.r.step(exec.id, s.step)?.is_some() {
                continue;
            }
            let Some(outcome) = self.local_outcome(exec.id, s.body)? else { continue };
            self.r.put_step(exec.id, &JournalEntry { step: s.step, kind: s.kind, outcome, recorded_ms: self.now })?;
        }
        let journal = self.r.journal(exec.id)?;
        self.cancel_steps(&journal)?;
        // Every task but the root belongs to the run's steps, all ended now.
        for id in self.r.tasks_of(exec.id)? {
            if id == task_id {
                continue;
            }
            match soft(self.r.task(id))? {
                Ok(Some(step_task)) => self.r.remove_task(&step_task)?,
                Ok(None) => {}
                // Left to `check`, which reports it; the run still ends.
                Err(e) => tracing::error!(task_id = id, error = %e, "an unreadable step task is left behind"),
            }
        }
        let started_ms = match exec.run {
            1 => exec.started_ms.unwrap_or(exec.created_ms),
            _ => match self.r.run(exec.id, exec.run - 1) {
                Ok(previous) => previous.map_or(exec.created_ms, |previous| previous.ended_ms),
                // Only this run's start time depends on it: not a reason to refuse the op.
                Err(StorageError::Corrupted { .. }) => exec.created_ms,
                Err(e) => return Err(e),
            },
        };
        let past = RunRecord {
            run: exec.run,
            version: exec.version,
            input: std::mem::take(&mut task.input),
            started_ms,
            ended_ms: self.now,
            steps: journal.len() as u32,
        };
        self.r.archive_run(exec.id, &past)?;
        let new_run = exec.run.saturating_add(1);
        let keep_from = new_run.saturating_sub(next_run.runs_kept);
        if keep_from > 1 {
            self.r.remove_runs_before(exec.id, keep_from)?;
        }

        let old = ExecutionIndex::of(&exec);
        exec.run = new_run;
        exec.version = next_run.version;
        self.r.put_execution(&exec, Some(old))?;
        task.input = next_run.input;
        task.version = next_run.version;
        task.state = TaskState::Pending;
        task.due_ms = None;
        task.ready_ms = self.now;
        task.history.clear();
        // A new run has the whole retry budget of lost attempts again.
        task.round_start = task.attempt;
        // Stored as pending first: a claim moves its index entry on from there.
        self.r.put_task(&task, &old_index)?;
        if let Some(next) = next.as_ref().filter(|n| n.accepts(&task)) {
            let claimed = self.claim_for(task, exec, next)?;
            return Ok(Ok(OpOutput::Next(claimed)));
        }
        self.effects.push(pending_effect(&task));
        Ok(Ok(OpOutput::Done))
    }
}
