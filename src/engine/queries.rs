//! Reading what executions did: state, results, waiting for a result, listings, counts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use super::clock::Sleep;

use super::{json_value, lock, Engine, Inner};
use crate::api::{
    ActivityError, ExecutionFilter, ExecutionId, ExecutionInfo, ExecutionState, FunctionHandle, Page, RunInfo,
    RunningTask, StepInfo, TaskId, TaskInfo, UnservedWork,
};
use crate::error::{Error, Result};
use crate::storage::records::{duration_ms, ExecutionRecord, TaskRecord};
use crate::storage::StorageError;

impl Engine {
    pub(super) fn load(&self, id: ExecutionId) -> Result<(ExecutionRecord, TaskRecord)> {
        self.inner.store()?.execution(id.0)?.ok_or(Error::UnknownExecution(id))
    }

    pub(super) fn outcome<F: FunctionHandle>(&self, function: F, exec: &ExecutionRecord) -> Result<Option<F::Output>> {
        if exec.function != function.name() {
            return Err(Error::Payload {
                function: function.name().to_string(),
                reason: format!("execution {} runs {:?}, not {:?}", exec.id, exec.function, function.name()),
            });
        }
        let id = ExecutionId(exec.id);
        match exec.state {
            ExecutionState::Pending | ExecutionState::Running => Ok(None),
            ExecutionState::Completed => {
                let bytes = exec.output.as_deref().unwrap_or(b"null");
                serde_json::from_slice(bytes).map(Some).map_err(|e| Error::Payload {
                    function: exec.function.clone(),
                    reason: format!("result does not decode: {e}"),
                })
            }
            ExecutionState::Failed => Err(Error::ExecutionFailed {
                id,
                error: exec.error.clone().unwrap_or_else(|| ActivityError::permanent("failed")),
            }),
            ExecutionState::Cancelled => Err(Error::Cancelled(id)),
            ExecutionState::TimedOut => Err(Error::TimedOut(id)),
        }
    }

    /// The result if finished (`Ok(None)` while pending or running); the failure, cancellation
    /// or timeout as an error.
    pub fn result_of<F: FunctionHandle>(&self, function: F, id: ExecutionId) -> Result<Option<F::Output>> {
        let (exec, _) = self.load(id)?;
        self.outcome(function, &exec)
    }

    /// Waits until the execution finishes (woken by its commit, no polling) and returns its
    /// result, or `WaitTimeout` after `timeout` (measured on the engine's clock).
    pub async fn wait_for<F: FunctionHandle>(
        &self,
        function: F,
        id: ExecutionId,
        timeout: Option<Duration>,
    ) -> Result<F::Output> {
        let deadline = timeout.map(|t| self.inner.clock.now_ms().saturating_add(duration_ms(t)));
        loop {
            // Registered before reading the state, so a commit in between still wakes us; the
            // guard removes the registration however this call ends (result, error, timeout,
            // or the future dropped).
            let (waiter, woken) = Waiter::register(&self.inner, id.0);
            let (exec, _) = self.load(id)?;
            if let Some(output) = self.outcome(function, &exec)? {
                return Ok(output);
            }
            let sleep: Sleep = match deadline {
                Some(at) => self.inner.clock.sleep_until(at),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                woke = woken => if woke.is_err() { return Err(Error::Shutdown) },
                _ = sleep => {
                    drop(waiter);
                    let (exec, _) = self.load(id)?;
                    return self.outcome(function, &exec)?.ok_or(Error::WaitTimeout(id));
                }
            }
        }
    }

    /// Ready work that no worker pool of this process can take, per queue and tags: the
    /// queue is not served, no pool has one of the work's tags, or its function is not
    /// registered here. Such work waits (tags are routing constraints) until a pool that
    /// accepts it starts; see [`EngineBuilder::unserved_warn_after`].
    pub fn unserved_work(&self) -> Vec<UnservedWork> {
        self.inner.unserved_work()
    }

    /// `wait_for` registrations held now (each is removed when its call returns).
    #[doc(hidden)]
    pub fn waiters(&self) -> usize {
        lock(&self.inner.waiters).values().map(Vec::len).sum()
    }

    /// One task: state, attempts, lease, history.
    pub fn task(&self, id: TaskId) -> Result<TaskInfo> {
        let t = self.inner.store()?.task(id.0)?.ok_or(Error::UnknownTask { task_id: id })?;
        Ok(TaskInfo {
            id,
            execution_id: ExecutionId(t.execution_id),
            kind: match t.kind {
                crate::storage::records::TaskKind::Activity => "activity",
                crate::storage::records::TaskKind::Workflow => "workflow",
            }
            .to_string(),
            step: t.step,
            function: t.function,
            queue: t.queue,
            priority: t.priority,
            tags: t.tags,
            input: json_value(&t.input),
            state: t.state,
            due_ms: t.due_ms,
            attempt: t.attempt,
            worker: t.lease.as_ref().map(|l| l.worker.clone()),
            lease_expires_ms: t.lease.as_ref().map(|l| l.expires_ms),
            history: t.history,
            created_ms: t.created_ms,
            version: t.version,
        })
    }

    /// The OpenTelemetry trace id (32 hex digits) that the `otel` feature gives every span of
    /// the execution, in any process and after any restart: to find its trace in a backend.
    /// Derived from the file and the id; the execution need not exist.
    pub fn trace_id(&self, id: ExecutionId) -> String {
        super::otel::trace_id_hex(self.inner.trace_seed, id.0)
    }

    /// Every journal step of a workflow execution, in order (empty for an activity).
    pub fn steps(&self, id: ExecutionId) -> Result<Vec<StepInfo>> {
        let store = self.inner.store()?;
        if store.execution(id.0)?.is_none() {
            return Err(Error::UnknownExecution(id));
        }
        Ok(store.journal(id.0)?.into_iter().map(step_info).collect())
    }

    /// The kept past runs of an execution that continued as new, oldest first (the current
    /// run is `state_of(id).run`; see `EngineBuilder::runs_kept`).
    pub fn runs(&self, id: ExecutionId) -> Result<Vec<RunInfo>> {
        let store = self.inner.store()?;
        if store.execution(id.0)?.is_none() {
            return Err(Error::UnknownExecution(id));
        }
        Ok(store
            .runs(id.0)?
            .into_iter()
            .map(|r| RunInfo {
                run: r.run,
                version: r.version,
                input: json_value(&r.input),
                started_ms: r.started_ms,
                ended_ms: r.ended_ms,
                steps: r.steps,
            })
            .collect())
    }

    /// The journal steps of one kept past run, in order (empty for a run not kept).
    pub fn run_steps(&self, id: ExecutionId, run: u32) -> Result<Vec<StepInfo>> {
        let store = self.inner.store()?;
        if store.execution(id.0)?.is_none() {
            return Err(Error::UnknownExecution(id));
        }
        Ok(store.run_journal(id.0, run)?.into_iter().map(step_info).collect())
    }

    /// Everything known about an execution, with the progress of its last steps.
    pub fn state_of(&self, id: ExecutionId) -> Result<ExecutionInfo> {
        let (exec, task) = self.load(id)?;
        let store = self.inner.store()?;
        let mut info = info(exec, &task);
        // A damaged journal or context record does not hide the execution's state (which says
        // why it failed): the progress names the damage instead.
        match store.context(id.0) {
            Ok((counters, state)) => {
                info.counters = counters.into_iter().collect();
                info.custom_state = state.into_iter().map(|(k, v)| (k, json_value(&v))).collect();
            }
            Err(e @ StorageError::Corrupted { .. }) => info.progress.push(format!("counters or state unreadable: {e}")),
            Err(e) => return Err(e.into()),
        }
        match store.journal(id.0) {
            Ok(journal) => {
                info.steps = u32::try_from(journal.len()).unwrap_or(u32::MAX);
                let skip = journal.len().saturating_sub(crate::api::PROGRESS_LINES_MAX);
                info.progress.extend(journal.iter().skip(skip).map(progress_line));
            }
            Err(e @ StorageError::Corrupted { .. }) => info.progress.push(format!("journal unreadable: {e}")),
            Err(e) => return Err(e.into()),
        }
        Ok(info)
    }

    /// Executions matching `filter`, newest first.
    pub fn list_executions(&self, filter: &ExecutionFilter, page: &Page) -> Result<Vec<ExecutionInfo>> {
        let store = self.inner.store()?;
        let records = store.list_executions(filter, page)?;
        let mut out = Vec::with_capacity(records.len());
        for exec in records {
            let Some((exec, task)) = store.execution(exec.id)? else {
                continue;
            };
            out.push(info(exec, &task));
        }
        Ok(out)
    }

    pub fn counts_by_state(&self) -> Result<Vec<(ExecutionState, u64)>> {
        Ok(self.inner.store()?.count_by_state()?)
    }

    /// The concurrency keys in use now, by function and key, with their running executions
    /// (`FunctionOptions::max_concurrent_per_key`).
    pub fn concurrency_keys(&self) -> Result<Vec<crate::api::KeyUsage>> {
        let slots = self.inner.store()?.key_slots()?;
        Ok(slots.into_iter().map(|(function, key, running)| crate::api::KeyUsage { function, key, running }).collect())
    }

    /// Tasks due now and waiting for a worker in `queue`.
    pub fn queue_depth(&self, queue: &str) -> Result<u64> {
        Ok(self.inner.store()?.queue_depth(queue)?)
    }

    pub fn running_tasks(&self) -> Result<Vec<RunningTask>> {
        let tasks = self.inner.store()?.running_tasks()?;
        Ok(tasks
            .into_iter()
            .filter_map(|t| {
                let lease = t.lease?;
                Some(RunningTask {
                    task_id: TaskId(t.id),
                    execution_id: ExecutionId(t.execution_id),
                    function: t.function,
                    worker: lease.worker,
                    attempt: lease.token,
                    lease_expires_ms: lease.expires_ms,
                })
            })
            .collect())
    }
}

/// A registered `wait_for` call: its number and its wake-up.
pub(super) type WaiterEntry = (u64, oneshot::Sender<()>);

/// One `wait_for` registration; dropping it removes it (a finished execution's wake-up has
/// removed the whole list already).
struct Waiter<'a> {
    inner: &'a Inner,
    execution_id: u64,
    id: u64,
}

impl<'a> Waiter<'a> {
    pub(super) fn register(inner: &'a Inner, execution_id: u64) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let id = inner.next_waiter.fetch_add(1, Ordering::Relaxed);
        lock(&inner.waiters).entry(execution_id).or_default().push((id, tx));
        (Waiter { inner, execution_id, id }, rx)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = lock(&self.inner.waiters);
        if let Some(list) = waiters.get_mut(&self.execution_id) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                waiters.remove(&self.execution_id);
            }
        }
    }
}

pub(super) fn info(exec: ExecutionRecord, task: &TaskRecord) -> ExecutionInfo {
    ExecutionInfo {
        id: ExecutionId(exec.id),
        function: exec.function,
        state: exec.state,
        queue: exec.queue,
        priority: exec.priority,
        tags: exec.tags,
        input: json_value(&task.input),
        output: exec.output.as_deref().map(json_value),
        error: exec.error,
        created_ms: exec.created_ms,
        scheduled_ms: exec.scheduled_ms,
        started_ms: exec.started_ms,
        finished_ms: exec.finished_ms,
        deadline_ms: exec.deadline_ms,
        attempts: task.attempt,
        history: task.history.clone(),
        idempotency_key: exec.idempotency_key,
        parent: exec.parent.map(|p| ExecutionId(p.execution_id)),
        version: exec.version,
        run: exec.run,
        schedule: exec.schedule.map(|s| crate::api::ScheduledBy {
            schedule: s.name,
            fire_time_ms: s.nominal_ms,
            triggered: s.triggered,
        }),
        counters: Default::default(),
        custom_state: Default::default(),
        steps: 0,
        progress: Vec::new(),
    }
}

fn step_info(entry: crate::storage::records::JournalEntry) -> StepInfo {
    use crate::storage::records::StepOutcome;
    let mut info = StepInfo {
        step: entry.step,
        kind: entry.kind.to_string(),
        outcome: "running".to_string(),
        task_id: None,
        child: None,
        output: None,
        error: None,
        recorded_ms: entry.recorded_ms,
    };
    match entry.outcome {
        StepOutcome::Scheduled { task_id } => info.task_id = Some(TaskId(task_id)),
        StepOutcome::AwaitingSignal { .. } => info.outcome = "waiting".into(),
        StepOutcome::Child { execution_id } => info.child = Some(ExecutionId(execution_id)),
        StepOutcome::Completed { output } => {
            info.outcome = "completed".into();
            info.output = Some(json_value(&output));
        }
        StepOutcome::Failed { error } => {
            info.outcome = "failed".into();
            info.error = Some(error);
        }
    }
    info
}

pub(super) fn progress_line(entry: &crate::storage::records::JournalEntry) -> String {
    use crate::storage::records::StepOutcome;
    let outcome = match &entry.outcome {
        StepOutcome::Scheduled { task_id } => format!("running (task {task_id})"),
        StepOutcome::AwaitingSignal { .. } => "waiting".to_string(),
        StepOutcome::Child { execution_id } => format!("running (execution {execution_id})"),
        StepOutcome::Completed { .. } => "completed".to_string(),
        StepOutcome::Failed { error } => format!("failed: {error}"),
    };
    format!("step {}: {} {outcome}", entry.step, entry.kind)
}
