//! Schedules: a definition written or changed, paused, resumed, deleted, and fired.
//!
//! A fire creates its execution in the transaction that moves the schedule's cursor
//! (`after_ms`) past its nominal time, so no crash can start a time twice or lose it; the
//! execution's idempotency key (schedule name and nominal time) makes even a second writer of
//! the same time find the first's execution. Which times are due is decided here from `now`
//! alone: a timer that goes off early or twice finds nothing new and only re-arms.

use super::*;
use crate::api::{jittered, CatchUp, FireTimes, Overlap, MISFIRE_GRACE};
use crate::storage::op::{ScheduleAction, ScheduleDraft};
use crate::storage::records::{ExecutionKeys, ExecutionTemplate};

impl<R: Records> Batch<'_, R> {
    /// Creates a schedule, or updates its definition; its cursor, counts and pause are kept.
    /// The same definition again changes nothing.
    pub(super) fn put_schedule(&mut self, draft: ScheduleDraft) -> OpRes<OpOutput> {
        let times = reject!(compile(&draft.spec));
        let old = reject!(soft(self.r.schedule(&draft.name))?);
        let now = self.now;
        let ScheduleDraft { name, template, input, spec, catch_up, overlap, jitter_ms } = draft;
        let mut rec = match &old {
            Some(old) => ScheduleRecord { template, input, spec, catch_up, overlap, jitter_ms, ..old.clone() },
            None => ScheduleRecord {
                name,
                template,
                input,
                spec,
                catch_up,
                overlap,
                jitter_ms,
                paused: false,
                // Its first fire is the first time after its creation.
                after_ms: now,
                next_ms: None,
                buffered: None,
                last_execution: None,
                last_fire_ms: None,
                fires: 0,
                skipped: 0,
                created_ms: now,
                updated_ms: now,
            },
        };
        rec.next_ms = times.next_after(rec.after_ms);
        if old.as_ref() == Some(&rec) {
            return Ok(Ok(OpOutput::Schedule { record: Some(Box::new(rec)), fired: None }));
        }
        rec.updated_ms = now;
        self.r.put_schedule(&rec, old.as_ref())?;
        self.arm(&rec)?;
        Ok(Ok(OpOutput::Schedule { record: Some(Box::new(rec)), fired: None }))
    }

    pub(super) fn control_schedule(&mut self, name: &str, action: ScheduleAction) -> OpRes<OpOutput> {
        let Some(old) = reject!(soft(self.r.schedule(name))?) else {
            return Ok(Err(Rejection::UnknownSchedule(name.to_string())));
        };
        let mut rec = old.clone();
        match action {
            ScheduleAction::Delete => {
                self.r.remove_schedule(&old)?;
                let function = old.template.function;
                self.effects.push(Effect::Schedule { name: old.name, function, at_ms: None });
                return Ok(Ok(OpOutput::Schedule { record: None, fired: None }));
            }
            ScheduleAction::Pause => rec.paused = true,
            ScheduleAction::Resume if rec.paused => {
                // Times that passed while it was paused are not fired.
                let times = reject!(compile(&rec.spec));
                rec.paused = false;
                rec.after_ms = rec.after_ms.max(self.now);
                rec.next_ms = times.next_after(rec.after_ms);
            }
            ScheduleAction::Resume => {}
        }
        if rec != old {
            rec.updated_ms = self.now;
            self.r.put_schedule(&rec, Some(&old))?;
            self.arm(&rec)?;
        }
        Ok(Ok(OpOutput::Schedule { record: Some(Box::new(rec)), fired: None }))
    }

    /// The schedule's timer went off (`trigger: false`): a buffered fire whose wait is over,
    /// then the times due at `now` as its catch-up policy picks them, each under its overlap
    /// policy. Or an operator's `trigger`: one fire now, under the overlap policy, paused or
    /// not. `template`: this engine's registration of the function, when it has one.
    pub(super) fn fire_schedule(
        &mut self,
        name: &str,
        template: Option<ExecutionTemplate>,
        trigger: bool,
    ) -> OpRes<OpOutput> {
        let Some(mut stored) = reject!(soft(self.r.schedule(name))?) else {
            return Ok(Err(Rejection::UnknownSchedule(name.to_string())));
        };
        let times = reject!(compile(&stored.spec));
        let mut rec = stored.clone();
        if let Some(template) = template {
            rec.template = template;
        }
        let now = self.now;
        let mut fired = None;
        // Whether the execution started before this op still runs: the fires this op starts
        // (a catch-up's several) are not overlaps of one another.
        let mut running = self.running(rec.last_execution)?;
        if trigger {
            fired = reject!(self.fire_one(&mut stored, &mut rec, &mut running, now, true)?);
        } else if !rec.paused {
            if let (Some(nominal), false) = (rec.buffered, running) {
                rec.buffered = None;
                self.start_fire(&mut rec, nominal, false)?;
            }
            for nominal in due(&mut rec, &times, now) {
                reject!(self.fire_one(&mut stored, &mut rec, &mut running, nominal, false)?);
            }
        }
        if rec != stored {
            self.r.put_schedule(&rec, Some(&stored))?;
        }
        self.arm(&rec)?;
        Ok(Ok(OpOutput::Schedule { record: Some(Box::new(rec)), fired }))
    }

    /// One fire under the overlap policy (`running`: the execution started before this op has
    /// not ended); its execution, if it started one. `stored` is the record as written (a
    /// cancel of the running execution writes `rec` first).
    fn fire_one(
        &mut self,
        stored: &mut ScheduleRecord,
        rec: &mut ScheduleRecord,
        running: &mut bool,
        nominal: u64,
        triggered: bool,
    ) -> OpRes<Option<u64>> {
        if let (true, Some(last)) = (*running, rec.last_execution) {
            match rec.overlap {
                Overlap::Skip => {
                    rec.skipped += 1;
                    return Ok(Ok(None));
                }
                Overlap::BufferOne => {
                    if rec.buffered.replace(nominal).is_some() {
                        rec.skipped += 1;
                    }
                    return Ok(Ok(None));
                }
                Overlap::Allow => {}
                Overlap::CancelPrevious => {
                    // Written first, with no fire buffered, so the end of the cancelled
                    // execution finds nothing to start (`after_end`).
                    rec.buffered = None;
                    self.r.put_schedule(rec, Some(stored))?;
                    *stored = rec.clone();
                    reject!(self.end_execution(last, ExecutionState::Cancelled)?);
                    *running = false;
                }
            }
        }
        Ok(Ok(self.start_fire(rec, nominal, triggered)?))
    }

    /// Creates the execution of one fire (or finds the one its key already names).
    fn start_fire(
        &mut self,
        rec: &mut ScheduleRecord,
        nominal: u64,
        triggered: bool,
    ) -> Result<Option<u64>, StorageError> {
        let key = fire_key(&rec.name, nominal, triggered);
        if let Some(existing) = self.r.idempotent(&key)? {
            return Ok(Some(existing));
        }
        let t = &rec.template;
        let new = NewExecution {
            function: t.function.clone(),
            kind: t.kind,
            queue: t.queue.clone(),
            priority: t.priority,
            tags: Vec::new(),
            input: rec.input.clone(),
            delay_ms: 0,
            max_duration_ms: None,
            idempotency_key: Some(key),
            retry: t.retry.clone(),
            timeout_ms: t.timeout_ms,
            cache: t.cache,
            version: t.version,
            claim: None,
            schedule: Some(Box::new(ScheduleOrigin { name: rec.name.clone(), nominal_ms: nominal, triggered })),
            keys: ExecutionKeys::default(),
            flow: None,
        };
        let hit = self.cached(new.cache, &new.function, &new.input)?;
        let (exec, task) = self.create_execution(new, None)?;
        let id = exec.id;
        rec.last_execution = Some(id);
        rec.last_fire_ms = Some(nominal);
        rec.fires += 1;
        match hit {
            Some(output) => self.finish_from_cache(task, exec, output)?,
            None => self.effects.push(pending_effect(&task)),
        }
        Ok(Some(id))
    }

    /// An execution ended: if a schedule started it and holds a fire buffered behind it
    /// (`Overlap::BufferOne`), that fire starts now, in this transaction.
    pub(super) fn after_end(&mut self, exec: &ExecutionRecord) -> Result<(), StorageError> {
        let Some(origin) = &exec.schedule else { return Ok(()) };
        let stored = match self.r.schedule(&origin.name) {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(()),
            Err(e @ StorageError::Corrupted { .. }) => {
                tracing::error!(error = %e, "schedule unreadable; its buffered fire waits");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(nominal) = stored.buffered else { return Ok(()) };
        if stored.paused || stored.last_execution != Some(exec.id) {
            return Ok(());
        }
        let mut rec = stored.clone();
        rec.buffered = None;
        self.start_fire(&mut rec, nominal, false)?;
        self.r.put_schedule(&rec, Some(&stored))?;
        self.arm(&rec)
    }

    /// Pushes the effect that sets the schedule's timer.
    fn arm(&mut self, rec: &ScheduleRecord) -> Result<(), StorageError> {
        let running = self.running(rec.last_execution)?;
        let at_ms = rec.wake_ms(self.now, running);
        self.effects.push(Effect::Schedule { name: rec.name.clone(), function: rec.template.function.clone(), at_ms });
        Ok(())
    }

    /// Whether the execution exists and has not ended.
    fn running(&self, execution_id: Option<u64>) -> Result<bool, StorageError> {
        let Some(id) = execution_id else { return Ok(false) };
        match self.r.execution(id) {
            Ok(exec) => Ok(exec.is_some_and(|e| !e.state.is_terminal())),
            Err(e @ StorageError::Corrupted { .. }) => {
                // Quarantine stops it when it is next touched; the schedule goes on.
                tracing::error!(error = %e, "a schedule's last execution is unreadable; taken as ended");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

fn compile(spec: &crate::api::ScheduleSpec) -> Result<FireTimes, Rejection> {
    FireTimes::compile(spec).map_err(|reason| Rejection::InvalidSchedule { spec: spec.to_string(), reason })
}

/// The idempotency key of a fire: the same for the same schedule and nominal time, always.
fn fire_key(name: &str, nominal_ms: u64, triggered: bool) -> String {
    let kind = if triggered { "trigger" } else { "fire" };
    format!("stent:schedule:{name}:{kind}:{nominal_ms}")
}

/// The nominal times to fire at `now`, oldest first, as the catch-up policy picks them; moves
/// the cursor past every time due (picked or not). The latest time due is on time when `now`
/// is within its jitter and `MISFIRE_GRACE` of it; every earlier one was missed.
fn due(rec: &mut ScheduleRecord, times: &FireTimes, now: u64) -> Vec<u64> {
    let Some(mut latest) = times.at_or_before(now) else { return Vec::new() };
    if jittered(&rec.name, latest, rec.jitter_ms) > now {
        // Inside its jitter: not due yet; the one before it may be.
        match times.before(latest) {
            Some(t) => latest = t,
            None => return Vec::new(),
        }
    }
    if latest <= rec.after_ms {
        return Vec::new();
    }
    let grace = u64::try_from(MISFIRE_GRACE.as_millis()).unwrap_or(u64::MAX);
    let on_time = now - latest <= rec.jitter_ms.saturating_add(grace);
    let missed_from = rec.next_ms;
    let picked = match rec.catch_up {
        CatchUp::Skip if on_time => vec![latest],
        CatchUp::Skip => Vec::new(),
        CatchUp::One => vec![latest],
        CatchUp::All { max } => {
            let mut picked = vec![latest];
            while picked.len() < max as usize {
                match picked.last().and_then(|&t| times.before(t)) {
                    Some(t) if t > rec.after_ms => picked.push(t),
                    _ => break,
                }
            }
            picked.reverse();
            picked
        }
    };
    if !on_time || picked.len() > 1 {
        tracing::warn!(
            schedule = %rec.name,
            missed_from = ?missed_from,
            latest,
            started = picked.len(),
            policy = ?rec.catch_up,
            "schedule fires were missed (the engine was not running); caught up by its policy"
        );
    }
    rec.after_ms = latest;
    rec.next_ms = times.next_after(latest);
    picked
}
