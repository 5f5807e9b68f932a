//! Schedules, the engine's side: [`Engine::schedules`] and its [`Schedules`] handle, the
//! definitions checked before they reach the writer, and what the timer does when a schedule
//! is due. Which times fire, and the executions they start, are decided in one transaction by
//! `storage/transitions/schedule.rs`.

use std::sync::Arc;

use super::registry::{Function, Registry};
use super::{unexpected, Engine, Inner};
use crate::api::{CatchUp, ExecutionId, Schedule, ScheduleFire, ScheduleInfo};
use crate::error::{Error, Result};
use crate::storage::records::{duration_ms, ExecutionTemplate, RetryRecord, ScheduleRecord};
use crate::storage::{Op, OpOutput, ScheduleAction, ScheduleDraft};

/// The schedules of an engine's file (`Engine::schedules`).
///
/// ```no_run
/// # async fn demo(engine: stent::Engine) -> stent::Result<()> {
/// use stent::{Schedule, ScheduleSpec};
/// const REPORT: stent::Workflow<String, ()> = stent::Workflow::new("daily_report");
/// let spec = ScheduleSpec::cron("0 9 * * MON-FRI", "Europe/Berlin")?;
/// engine.schedules().upsert(Schedule::new("report", REPORT, &"sales".to_string(), spec)).await?;
/// for s in engine.schedules().list()? {
///     println!("{} next at {:?}", s.name, s.next_fire_ms);
/// }
/// # Ok(()) }
/// ```
pub struct Schedules<'e> {
    engine: &'e Engine,
}

impl Engine {
    /// Creates, changes, pauses, resumes, triggers, deletes and lists schedules.
    pub fn schedules(&self) -> Schedules<'_> {
        Schedules { engine: self }
    }
}

impl Schedules<'_> {
    /// Creates the schedule, or updates the definition of the one with its name (keeping
    /// where it is in time, its counts and whether it is paused); the same definition again
    /// changes nothing. Its first fire is the first time of its spec after it is created.
    /// Its function must be registered on this engine.
    pub async fn upsert(&self, schedule: Schedule) -> Result<ScheduleInfo> {
        let inner = &self.engine.inner;
        let draft = draft(&inner.registry, inner.payload_bytes_max, schedule)?;
        self.control(Op::PutSchedule(draft)).await
    }

    /// Stops the schedule firing until `resume`; a `trigger` still fires it.
    pub async fn pause(&self, name: &str) -> Result<ScheduleInfo> {
        self.control(Op::ControlSchedule { name: name.to_string(), action: ScheduleAction::Pause }).await
    }

    /// Fires again from the next time after now: times that passed while it was paused are
    /// not fired.
    pub async fn resume(&self, name: &str) -> Result<ScheduleInfo> {
        self.control(Op::ControlSchedule { name: name.to_string(), action: ScheduleAction::Resume }).await
    }

    /// Removes the schedule; the executions it started are kept (and keep its name).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let op = Op::ControlSchedule { name: name.to_string(), action: ScheduleAction::Delete };
        match self.engine.inner.submit(op).await? {
            OpOutput::Schedule { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Fires the schedule now, paused or not, under its overlap policy: the execution it
    /// started, or `None` when the policy started none (the previous one is still running).
    pub async fn trigger(&self, name: &str) -> Result<Option<ExecutionId>> {
        let inner = &self.engine.inner;
        let template = self.get(name)?.and_then(|s| inner.registry.get(&s.function).map(|f| template(f)));
        let op = Op::FireSchedule { name: name.to_string(), template, trigger: true };
        match inner.submit(op).await? {
            OpOutput::Schedule { fired, .. } => Ok(fired.map(ExecutionId)),
            other => Err(unexpected(other)),
        }
    }

    pub fn get(&self, name: &str) -> Result<Option<ScheduleInfo>> {
        Ok(self.engine.inner.store()?.schedule(name)?.map(info))
    }

    /// Every schedule, by name, with its next fire time.
    pub fn list(&self) -> Result<Vec<ScheduleInfo>> {
        Ok(self.engine.inner.store()?.schedules()?.into_iter().map(info).collect())
    }

    /// The latest `limit` executions the schedule started (that retention has not removed),
    /// by nominal fire time, oldest first.
    pub fn fires(&self, name: &str, limit: usize) -> Result<Vec<ScheduleFire>> {
        let store = self.engine.inner.store()?;
        if store.schedule(name)?.is_none() {
            return Err(Error::UnknownSchedule(name.to_string()));
        }
        Ok(store
            .schedule_fires(name, limit)?
            .into_iter()
            .map(|(fire_time_ms, id)| ScheduleFire { fire_time_ms, execution: ExecutionId(id) })
            .collect())
    }

    async fn control(&self, op: Op) -> Result<ScheduleInfo> {
        match self.engine.inner.submit(op).await? {
            OpOutput::Schedule { record: Some(record), .. } => Ok(info(*record)),
            other => Err(unexpected(other)),
        }
    }
}

/// Checks a definition against this engine's registry: the function exists and takes the
/// input, the spec compiles, the policies can work.
pub(super) fn draft(registry: &Registry, payload_bytes_max: u64, schedule: Schedule) -> Result<ScheduleDraft> {
    let Schedule { name, function, input, spec, catch_up, overlap, jitter } = schedule;
    if name.is_empty() {
        return Err(Error::InvalidOptions { what: "schedule", reason: "the name is empty".into() });
    }
    let registered = registry.require(&function)?;
    let input = input.map_err(|reason| Error::Payload { function: function.clone(), reason })?;
    if input.len() as u64 > payload_bytes_max {
        return Err(Error::PayloadTooLarge { bytes: input.len() as u64, limit: payload_bytes_max });
    }
    (registered.input_check)(&input).map_err(|reason| Error::Payload { function: function.clone(), reason })?;
    spec.times()?;
    if catch_up == (CatchUp::All { max: 0 }) {
        return Err(Error::InvalidOptions {
            what: "catch-up",
            reason: "CatchUp::All needs a max of at least 1".into(),
        });
    }
    let jitter_ms = jitter.map(|j| j.get()).transpose()?.map_or(0, duration_ms);
    Ok(ScheduleDraft { name, template: template(registered), input, spec, catch_up, overlap, jitter_ms })
}

/// How the function's executions start, from its registration.
pub(super) fn template(function: &Function) -> ExecutionTemplate {
    ExecutionTemplate {
        function: function.name.to_string(),
        kind: function.handler.kind(),
        queue: function.queue.clone(),
        priority: function.priority,
        retry: RetryRecord::from(&function.retry),
        timeout_ms: function.timeout.map(duration_ms),
        cache: function.cache.filter(|c| c.ttl_ms > 0),
        version: function.version,
    }
}

pub(super) fn info(r: ScheduleRecord) -> ScheduleInfo {
    ScheduleInfo {
        input: super::json_value(&r.input),
        function: r.template.function,
        spec: r.spec,
        catch_up: r.catch_up,
        overlap: r.overlap,
        jitter_ms: r.jitter_ms,
        paused: r.paused,
        next_fire_ms: if r.paused { None } else { r.next_ms },
        last_fire_ms: r.last_fire_ms,
        last_execution: r.last_execution.map(ExecutionId),
        buffered_fire_ms: r.buffered,
        fires: r.fires,
        skipped: r.skipped,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        name: r.name,
    }
}

impl Inner {
    /// The schedule's timer went off: the fires due now start in one transaction, which also
    /// sets its next timer.
    pub(super) async fn fire_schedule(self: Arc<Self>, name: String, function: &str) {
        let template = self.registry.get(function).map(|f| template(f));
        let op = Op::FireSchedule { name: name.clone(), template, trigger: false };
        match self.submit(op).await {
            Ok(_) => {}
            Err(Error::Shutdown) => {}
            Err(e) => {
                tracing::error!(schedule = %name, error = %e, "schedule fire not applied; it fires again at the next open")
            }
        }
    }
}
