//! New executions: a dispatch (idempotent by key, answered from the cache when it can, claimed
//! at once for an idle worker) and the execution and root task it writes.

use super::*;

impl<R: Records> Batch<'_, R> {
    pub(super) fn dispatch(&mut self, mut new: NewExecution) -> OpRes<OpOutput> {
        if let Some(key) = &new.idempotency_key {
            if let Some(existing) = self.r.idempotent(key)? {
                return Ok(Ok(OpOutput::Dispatched { execution_id: existing, created: false, claimed: None }));
            }
        }
        if let Some(flow) = new.flow.take() {
            if let Some(existing) = reject!(self.fold(&flow, &mut new)?) {
                return Ok(Ok(OpOutput::Dispatched { execution_id: existing, created: false, claimed: None }));
            }
        }
        let claim = new.claim.clone();
        let hit = if new.delay_ms == 0 { self.cached(new.cache, &new.function, &new.input)? } else { None };
        let flow_key = new.keys.flow.clone();
        let (exec, task) = self.create_execution(new, None)?;
        let (execution_id, task_id) = (exec.id, task.id);
        if let Some(key) = flow_key {
            self.r.put_flow_key(&key, execution_id, self.now)?;
        }
        if let Some(output) = hit {
            // A cached function's fresh result: the execution is done as it is created.
            self.finish_from_cache(task, exec, output)?;
            return Ok(Ok(OpOutput::Dispatched { execution_id, created: true, claimed: None }));
        }
        let claimed = match claim {
            Some(eager) if task.due_ms.is_none() => {
                let claimed = self.take_lease(task, exec, &eager.worker, eager.lease_ms)?;
                self.effects.push(Effect::Claimed { serial: eager.serial, task_id, token: claimed.token });
                Some(claimed)
            }
            _ => {
                self.effects.push(pending_effect(&task));
                None
            }
        };
        Ok(Ok(OpOutput::Dispatched { execution_id, created: true, claimed }))
    }

    pub(super) fn finish_from_cache(
        &mut self,
        mut task: TaskRecord,
        mut exec: ExecutionRecord,
        output: Vec<u8>,
    ) -> Result<(), StorageError> {
        let old = TaskIndex::of(&task);
        task.state = TaskState::Completed;
        self.r.put_task(&task, &old)?;
        let old = ExecutionIndex::of(&exec);
        exec.state = ExecutionState::Completed;
        exec.started_ms = Some(self.now);
        exec.finished_ms = Some(self.now);
        exec.output = Some(output);
        self.r.put_execution(&exec, Some(old))?;
        self.ended(&exec)?;
        Ok(())
    }

    /// Writes a new execution and its root task (pending; the caller queues or claims it).
    pub(super) fn create_execution(
        &mut self,
        new: NewExecution,
        parent: Option<ParentStep>,
    ) -> Result<(ExecutionRecord, TaskRecord), StorageError> {
        let execution_id = self.ids.next_execution;
        let task_id = self.ids.next_task;
        self.ids.next_execution += 1;
        self.ids.next_task += 1;
        let now = self.now;
        let scheduled_ms = now.saturating_add(new.delay_ms);
        let deadline_ms = new.max_duration_ms.map(|d| scheduled_ms.saturating_add(d));
        let exec = ExecutionRecord {
            id: execution_id,
            function: new.function.clone(),
            queue: new.queue.clone(),
            priority: new.priority,
            tags: new.tags.clone(),
            state: ExecutionState::Pending,
            root_task: task_id,
            created_ms: now,
            scheduled_ms,
            started_ms: None,
            finished_ms: None,
            max_duration_ms: new.max_duration_ms,
            deadline_ms,
            output: None,
            error: None,
            idempotency_key: new.idempotency_key.clone(),
            parent,
            version: new.version,
            run: 1,
            cancel_requested_ms: None,
            schedule: new.schedule.as_deref().cloned(),
            keys: new.keys.clone(),
        };
        self.r.put_execution(&exec, None)?;
        if Faults::take(&self.faults.fail_between_execution_and_task) {
            return Err(StorageError::Injected("between execution and root task"));
        }
        let task = TaskRecord {
            id: task_id,
            execution_id,
            kind: new.kind,
            step: None,
            function: new.function,
            queue: new.queue,
            priority: new.priority,
            tags: new.tags,
            input: new.input,
            state: TaskState::Pending,
            due_ms: (new.delay_ms > 0).then_some(scheduled_ms),
            ready_ms: scheduled_ms,
            attempt: 0,
            round_start: 0,
            lease: None,
            retry: new.retry,
            timeout_ms: new.timeout_ms,
            cache: new.cache,
            history: Vec::new(),
            created_ms: now,
            version: new.version,
            rate_slot_ms: None,
        };
        self.r.insert_task(&task)?;
        if let Some(key) = &new.idempotency_key {
            self.r.put_idempotency_key(key, execution_id)?;
        }
        if let Some(deadline_ms) = deadline_ms {
            self.effects.push(Effect::Deadline { execution_id, deadline_ms });
        }
        Ok((exec, task))
    }
}
