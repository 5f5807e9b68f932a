//! Leases: a claim takes one (a fencing token), a renewal extends it.

use super::*;

impl<R: Records> Batch<'_, R> {
    pub(super) fn claim(
        &mut self,
        task_id: u64,
        worker: &str,
        lease_ms: u64,
        version: u32,
        limits: ClaimLimits,
    ) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(self.load_pair(task_id)?);
        let due = task.due_ms.is_none_or(|d| d <= self.now);
        if task.state != TaskState::Pending || !due || exec.state.is_terminal() || task.version > version {
            return Ok(Err(Rejection::TaskNotClaimable(task_id)));
        }
        if task.lease.is_some() {
            return Ok(Err(Rejection::TaskNotClaimable(task_id)));
        }
        if task.attempt == u32::MAX {
            return Ok(Err(Rejection::TokensExhausted(task_id)));
        }
        if !limits.is_none() {
            if !self.key_room(&task, &exec, &limits)? {
                return Ok(Ok(OpOutput::KeyBusy));
            }
            if let Some(until_ms) = self.rate_admit(&mut task, &exec, &limits)? {
                return Ok(Ok(OpOutput::Deferred { until_ms }));
            }
        }
        Ok(Ok(OpOutput::Claimed(self.take_lease(task, exec, worker, lease_ms)?)))
    }

    /// The claim itself, on a pending task of a live execution without a lease.
    pub(super) fn take_lease(
        &mut self,
        mut task: TaskRecord,
        mut exec: ExecutionRecord,
        worker: &str,
        lease_ms: u64,
    ) -> Result<ClaimedTask, StorageError> {
        let task_id = task.id;
        let old = TaskIndex::of(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        let token = fence
            .claim(worker, self.now, lease_ms)
            .map_err(|_| corrupted(TASKS_NAME, format!("{task_id} (claimed while leased)")))?;
        task.state = TaskState::Running;
        task.due_ms = None;
        self.r.put_task(&task, &old)?;
        if exec.state == ExecutionState::Pending {
            let old = ExecutionIndex::of(&exec);
            exec.state = ExecutionState::Running;
            exec.started_ms.get_or_insert(self.now);
            self.r.put_execution(&exec, Some(old))?;
        }
        let lease_expires_ms = self.now.saturating_add(lease_ms);
        self.effects.push(Effect::Lease { task_id, token, expires_ms: lease_expires_ms });
        Ok(ClaimedTask {
            task_id,
            execution_id: task.execution_id,
            kind: task.kind,
            wakes: task.step.map(|_| exec.function.clone()),
            queue: task.queue,
            function: task.function,
            input: task.input,
            token,
            lease_expires_ms,
            timeout_ms: task.timeout_ms,
        })
    }

    pub(super) fn renew(
        &mut self,
        leases: &[(u64, u32)],
        lease_ms: u64,
        mut details: Vec<(u64, Vec<u8>)>,
    ) -> OpRes<OpOutput> {
        let mut results = Vec::with_capacity(leases.len());
        for &(task_id, token) in leases {
            let mut task = match soft(self.r.task(task_id))? {
                Ok(Some(task)) => task,
                Ok(None) => {
                    results.push(Err(crate::lease::LeaseError::LeaseLost { task_id, token }.into()));
                    continue;
                }
                Err(corrupt) => {
                    results.push(Err(corrupt));
                    continue;
                }
            };
            let old = TaskIndex::of(&task);
            let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
            match fence.renew(token, self.now, lease_ms) {
                Ok(expires_ms) => {
                    self.r.put_task(&task, &old)?;
                    if let Some(i) = details.iter().position(|(id, _)| *id == task_id) {
                        let (_, bytes) = details.swap_remove(i);
                        self.r.put_heartbeat(task.execution_id, task_id, &bytes)?;
                    }
                    self.effects.push(Effect::Lease { task_id, token, expires_ms });
                    results.push(Ok(expires_ms));
                }
                Err(lost) => results.push(Err(lost.into())),
            }
        }
        Ok(Ok(OpOutput::Renewed(results)))
    }

    pub(super) fn claim_for(
        &mut self,
        task: TaskRecord,
        exec: ExecutionRecord,
        next: &Continuation,
    ) -> Result<ClaimedTask, StorageError> {
        let task_id = task.id;
        let claimed = self.take_lease(task, exec, &next.worker, next.lease_ms)?;
        self.effects.push(Effect::Claimed { serial: next.serial, task_id, token: claimed.token });
        Ok(claimed)
    }
}
