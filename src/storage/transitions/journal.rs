//! A workflow's journal: a suspension records new steps (creating their tasks), a step's
//! outcome settles its entry and wakes the workflow, a child's end settles its parent's step.

use super::*;

impl<R: Records> Batch<'_, R> {
    pub(super) fn suspend(
        &mut self,
        task_id: u64,
        token: u32,
        steps: Vec<NewStep>,
        awaiting: &[u32],
        next: Option<Continuation>,
    ) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(self.load_pair(task_id)?);
        if task.kind != TaskKind::Workflow || task.step.is_some() || exec.state.is_terminal() {
            return Ok(Err(Rejection::TaskNotClaimable(task_id)));
        }
        reject!(Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease }.check(token));
        // Validate everything before the first write.
        for s in &steps {
            if s.step >= JOURNAL_STEPS_MAX {
                return Ok(Err(Rejection::JournalFull { execution_id: exec.id, steps_max: JOURNAL_STEPS_MAX }));
            }
            if let Some(existing) = reject!(soft(self.r.step(exec.id, s.step))?) {
                // Recorded before (a step this attempt did not know of): never overwrite.
                return Ok(Err(Rejection::NonDeterminism {
                    step: s.step,
                    recorded: existing.kind.to_string(),
                    requested: s.kind.to_string(),
                }));
            }
        }
        let old = TaskIndex::of(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        reject!(fence.release(token));
        // A suspension is progress: the retry budget (which guards against an attempt that
        // keeps killing its process) starts again with the next attempt.
        task.round_start = task.attempt;
        let mut continue_with = None;
        for s in steps {
            let outcome = match s.body {
                StepBody::Recorded(output) => StepOutcome::Completed { output },
                StepBody::Signal { name, timer } => match self.r.take_signal(exec.id, &name)? {
                    Some(payload) if timer.is_some() => StepOutcome::Completed { output: wrap_one(&payload) },
                    Some(payload) => StepOutcome::Completed { output: payload },
                    None => {
                        let timer = match timer {
                            Some(t) => Some(self.create_step_task(&exec, s.step, t, true)?),
                            None => None,
                        };
                        StepOutcome::AwaitingSignal { timer }
                    }
                },
                StepBody::Local(f) => {
                    let Some(f) = f.take() else {
                        return Ok(Err(Rejection::Internal(format!("local step {} ran twice", s.step))));
                    };
                    let records = &mut self.r;
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| records.run_local(f)));
                    match run {
                        Ok(Ok(output)) => StepOutcome::Completed { output },
                        Ok(Err(error)) => return Ok(Err(Rejection::LocalStepFailed { step: s.step, error })),
                        Err(_) => {
                            let error = ActivityError::permanent("the local step panicked").with_code("panic");
                            return Ok(Err(Rejection::LocalStepFailed { step: s.step, error }));
                        }
                    }
                }
                StepBody::Failed(error) => StepOutcome::Failed { error },
                body @ (StepBody::Counter { .. }
                | StepBody::SetState { .. }
                | StepBody::GetState { .. }
                | StepBody::Race { .. }
                | StepBody::Cancel { .. }) => match self.local_outcome(exec.id, body)? {
                    Some(outcome) => outcome,
                    None => continue,
                },
                StepBody::Child { new, detached } => self.start_child(&exec, s.step, *new, detached)?,
                StepBody::Task(mut t) => match self.cached(t.cache, &t.function, &t.input)? {
                    // A cached function's fresh result: the step is done without a task.
                    Some(output) => StepOutcome::Completed { output },
                    None => {
                        // An operator's edited input for this step (a DLQ replay) wins, once.
                        if let Some(input) = self.r.take_step_input(exec.id, s.step)? {
                            t.input = input;
                        }
                        let for_me = next.as_ref().is_some_and(|c| {
                            c.step == Some(s.step) && c.function == t.function && t.due_ms.is_none_or(|d| d <= self.now)
                        });
                        let task_id = self.create_step_task(&exec, s.step, t, !for_me)?;
                        if for_me {
                            continue_with = Some(task_id);
                        }
                        StepOutcome::Scheduled { task_id }
                    }
                },
            };
            let entry = JournalEntry { step: s.step, kind: s.kind, outcome, recorded_ms: self.now };
            self.r.put_step(exec.id, &entry)?;
        }
        // Read after the writes: a step recorded just now may already have its outcome.
        let mut settled = false;
        for &step in awaiting {
            let entry = self.r.step(exec.id, step)?;
            settled |= matches!(
                entry,
                Some(JournalEntry { outcome: StepOutcome::Completed { .. } | StepOutcome::Failed { .. }, .. })
            );
        }
        if settled {
            task.state = TaskState::Pending;
            task.due_ms = None;
            task.ready_ms = self.now;
        } else {
            task.state = TaskState::Waiting;
        }
        self.r.put_task(&task, &old)?;
        if settled {
            self.effects.push(pending_effect(&task));
        }
        // The first new step's task, claimed for the worker whose attempt just suspended.
        if let (Some(child_id), Some(c)) = (continue_with, next.as_ref()) {
            let child = self.r.task(child_id)?.ok_or_else(|| corrupted(TASKS_NAME, child_id))?;
            if c.accepts(&child) {
                let exec = self.r.execution(exec.id)?.ok_or_else(|| corrupted(EXECUTIONS_NAME, exec.id))?;
                return Ok(Ok(OpOutput::Next(self.claim_for(child, exec, c)?)));
            }
            self.effects.push(pending_effect(&child));
        }
        Ok(Ok(OpOutput::Done))
    }

    /// Creates the child execution of step `step` (see `StepBody::Child`) and gives the step's
    /// outcome.
    fn start_child(
        &mut self,
        exec: &ExecutionRecord,
        step: u32,
        new: NewExecution,
        detached: bool,
    ) -> Result<StepOutcome, StorageError> {
        let held = match &new.idempotency_key {
            Some(key) => self.r.idempotent(key)?.map(|id| (key.clone(), id)),
            None => None,
        };
        let child = match held {
            Some((_, holder)) if detached => holder,
            Some((key, holder)) => {
                let error = ActivityError::permanent(format!(
                    "idempotency key {key:?} is held by execution {holder}; a child with a key starts only once"
                ))
                .with_code("duplicate_key");
                return Ok(StepOutcome::Failed { error });
            }
            None => {
                let parent = (!detached).then_some(ParentStep { execution_id: exec.id, step });
                let (child, root) = self.create_execution(new, parent)?;
                self.effects.push(pending_effect(&root));
                child.id
            }
        };
        Ok(if detached {
            StepOutcome::Completed { output: child.to_string().into_bytes() }
        } else {
            StepOutcome::Child { execution_id: child }
        })
    }

    /// Cancels the live tasks of scheduled steps (the execution is ending).
    pub(super) fn cancel_steps(&mut self, journal: &[JournalEntry]) -> Result<(), StorageError> {
        for entry in journal {
            if let StepOutcome::Child { execution_id } = entry.outcome {
                // Cancels the child and, through it, its own children. A rejection (the child
                // record unreadable) leaves that child to `check`.
                if let Err(e) = self.end_execution(execution_id, ExecutionState::Cancelled)? {
                    tracing::error!(execution_id, error = %e, "child execution not cancelled");
                }
                continue;
            }
            if let StepOutcome::Scheduled { task_id } | StepOutcome::AwaitingSignal { timer: Some(task_id) } =
                entry.outcome
            {
                self.cancel_task(task_id)?;
            }
        }
        Ok(())
    }

    /// Creates the task of a step (pending, due now or at `due_ms`) and queues it.
    pub(super) fn create_step_task(
        &mut self,
        exec: &ExecutionRecord,
        step: u32,
        t: StepTask,
        queue_it: bool,
    ) -> Result<u64, StorageError> {
        let child_id = self.ids.next_task;
        self.ids.next_task += 1;
        let due_ms = t.due_ms.filter(|&d| d > self.now);
        let child = TaskRecord {
            id: child_id,
            execution_id: exec.id,
            kind: TaskKind::Activity,
            step: Some(step),
            function: t.function,
            queue: t.queue,
            priority: t.priority,
            tags: exec.tags.clone(),
            input: t.input,
            state: TaskState::Pending,
            due_ms,
            ready_ms: due_ms.unwrap_or(self.now),
            attempt: 0,
            round_start: 0,
            lease: None,
            retry: t.retry,
            timeout_ms: t.timeout_ms,
            cache: t.cache,
            history: Vec::new(),
            created_ms: self.now,
            version: t.version,
            rate_slot_ms: None,
        };
        self.r.insert_task(&child)?;
        if queue_it {
            self.effects.push(pending_effect(&child));
        }
        Ok(child_id)
    }

    /// Cancels the steps that lost a race: a task's (activity, timer) is cancelled, a signal
    /// wait ends (with its timer), a child is cancelled; each step fails with code
    /// `cancelled`. A step that already has its outcome keeps it.
    pub(super) fn cancel_losers(&mut self, execution_id: u64, losers: &[u32]) -> Result<(), StorageError> {
        let error = ActivityError::permanent("cancelled: another step won the race").with_code("cancelled");
        self.cancel_open_steps(execution_id, losers, &error)
    }

    /// Cancels steps without an outcome (see `cancel_losers`); each fails with `error`.
    pub(super) fn cancel_open_steps(
        &mut self,
        execution_id: u64,
        steps: &[u32],
        error: &ActivityError,
    ) -> Result<(), StorageError> {
        for &step in steps {
            let Some(mut entry) = self.r.step(execution_id, step)? else { continue };
            match entry.outcome {
                StepOutcome::Scheduled { task_id } | StepOutcome::AwaitingSignal { timer: Some(task_id) } => {
                    self.cancel_task(task_id)?
                }
                StepOutcome::AwaitingSignal { timer: None } => {}
                StepOutcome::Child { execution_id: child } => {
                    // Its end settles this step (and wakes the parent if it waits); the step
                    // then says why it was cancelled.
                    if let Err(e) = self.end_execution(child, ExecutionState::Cancelled)? {
                        tracing::error!(child, error = %e, "the cancelled step's child execution was not cancelled");
                    }
                    let Some(settled) = self.r.step(execution_id, step)? else { continue };
                    entry = settled;
                }
                StepOutcome::Completed { .. } | StepOutcome::Failed { .. } => continue,
            }
            entry.outcome = StepOutcome::Failed { error: error.clone() };
            entry.recorded_ms = self.now;
            self.r.put_step(execution_id, &entry)?;
        }
        Ok(())
    }

    /// Cancels one live task (its step no longer needs it).
    pub(super) fn cancel_task(&mut self, task_id: u64) -> Result<(), StorageError> {
        let Some(mut task) = self.r.task(task_id)? else { return Ok(()) };
        if matches!(task.state, TaskState::Pending | TaskState::Running | TaskState::Waiting) {
            let old = TaskIndex::of(&task);
            task.state = TaskState::Cancelled;
            task.lease = None;
            task.due_ms = None;
            self.r.put_task(&task, &old)?;
            self.effects.push(Effect::Abort { task_id, token: None });
        }
        Ok(())
    }

    pub(super) fn add_counter(&mut self, execution_id: u64, name: &str, delta: i64) -> Result<i64, StorageError> {
        let total = self.r.counter(execution_id, name)?.saturating_add(delta);
        self.r.put_counter(execution_id, name, total)?;
        Ok(total)
    }

    /// Applies a step whose outcome is decided inside the transaction (counters, state, values
    /// known to the attempt). Steps that need a task are not local: `None`.
    pub(super) fn local_outcome(
        &mut self,
        execution_id: u64,
        body: StepBody,
    ) -> Result<Option<StepOutcome>, StorageError> {
        let output = match body {
            StepBody::Recorded(output) => output,
            StepBody::Counter { name, delta } => {
                let total = self.add_counter(execution_id, &name, delta)?;
                total.to_string().into_bytes()
            }
            StepBody::SetState { key, value } => {
                self.r.put_state(execution_id, &key, &value)?;
                if let Some(update) = super::super::records::reply_of(&key) {
                    self.effects.push(Effect::Replied { execution_id, update });
                }
                b"null".to_vec()
            }
            StepBody::Race { output, losers } => {
                self.cancel_losers(execution_id, &losers)?;
                output
            }
            StepBody::Cancel { step } => {
                let error = ActivityError::permanent("cancelled by the workflow").with_code("cancelled");
                self.cancel_open_steps(execution_id, &[step], &error)?;
                b"null".to_vec()
            }
            StepBody::GetState { key } => match self.r.state(execution_id, &key)? {
                Some(v) => wrap_one(&v),
                None => b"[]".to_vec(),
            },
            StepBody::Task(_)
            | StepBody::Signal { .. }
            | StepBody::Child { .. }
            | StepBody::Local(_)
            | StepBody::Failed(_) => return Ok(None),
        };
        Ok(Some(StepOutcome::Completed { output }))
    }

    /// A child execution ended: its parent's step gets the outcome, unless the parent has
    /// itself ended (it cancels its children then, and wants nothing more).
    pub(super) fn settle_parent(&mut self, parent: ParentStep, outcome: StepOutcome) -> Result<(), StorageError> {
        let Some(exec) = self.r.execution(parent.execution_id)? else {
            // Removed by retention (it ended, and so cancelled this child, long ago).
            tracing::warn!(parent = parent.execution_id, "the parent of a finished child no longer exists");
            return Ok(());
        };
        if exec.state.is_terminal() {
            return Ok(());
        }
        self.settle_step(&exec, parent.step, outcome)
    }

    /// Records a step's outcome and wakes its workflow if it is suspended.
    pub(super) fn settle_step(
        &mut self,
        exec: &ExecutionRecord,
        step: u32,
        outcome: StepOutcome,
    ) -> Result<(), StorageError> {
        self.settle_step_for(exec, step, outcome, None).map(|_| ())
    }

    /// `settle_step`, claiming the woken workflow for `next`'s worker when it accepts it.
    pub(super) fn settle_step_for(
        &mut self,
        exec: &ExecutionRecord,
        step: u32,
        outcome: StepOutcome,
        next: Option<&Continuation>,
    ) -> Result<Option<ClaimedTask>, StorageError> {
        let Some(mut entry) = self.r.step(exec.id, step)? else {
            return Err(corrupted(JOURNAL_NAME, format!("({}, {step}) (step of a live task missing)", exec.id)));
        };
        entry.outcome = outcome;
        entry.recorded_ms = self.now;
        self.r.put_step(exec.id, &entry)?;
        self.wake_workflow(exec, next)
    }

    pub(super) fn wake_workflow(
        &mut self,
        exec: &ExecutionRecord,
        next: Option<&Continuation>,
    ) -> Result<Option<ClaimedTask>, StorageError> {
        let Some(mut root) = self.r.task(exec.root_task)? else {
            return Err(corrupted(TASKS_NAME, format!("{} (root task missing)", exec.root_task)));
        };
        if root.state != TaskState::Waiting {
            return Ok(None);
        }
        let old = TaskIndex::of(&root);
        root.state = TaskState::Pending;
        root.due_ms = None;
        root.ready_ms = self.now;
        self.r.put_task(&root, &old)?;
        match next.filter(|c| c.step.is_none() && c.accepts(&root)) {
            // Straight to the worker whose step just finished: no ready entry, no claim.
            Some(c) => Ok(Some(self.claim_for(root, exec.clone(), c)?)),
            None => {
                self.effects.push(pending_effect(&root));
                Ok(None)
            }
        }
    }
}
