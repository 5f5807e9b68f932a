//! Flow control: rate limits and concurrency keys at claim time, debounce and throttle at
//! dispatch.
//!
//! A rate limit is the generic cell rate algorithm over one stored time per (function, key),
//! its theoretical arrival time (TAT): with `per` starts in `period`, the emission interval is
//! `T = period / per` and the burst tolerance `tau = period - T`; a start at `t` conforms when
//! `t >= TAT - tau`, and moves TAT to `max(TAT, t) + T`. A claim that does not conform is not
//! refused: it reserves the first conforming time for its task (moving TAT as a start there
//! would) and defers the task to it, so a backlog is spread over its slots, each task deferred
//! once, and no worker polls. The budget is on disk, so a restart does not reset it.

use super::*;
use crate::storage::index::ready_item;
use crate::storage::op::Rate;

impl<R: Records> Batch<'_, R> {
    /// Whether the claim may start its execution beside the running ones of its function with
    /// its concurrency key (only a root task of a pending execution starts one). If not, its
    /// task waits in memory for a slot (`Effect::KeyWait`).
    pub(super) fn key_room(
        &mut self,
        task: &TaskRecord,
        exec: &ExecutionRecord,
        limits: &ClaimLimits,
    ) -> Result<bool, StorageError> {
        let Some(key) = &exec.keys.concurrency else { return Ok(true) };
        if limits.key_max == 0 || exec.state != ExecutionState::Pending || task.step.is_some() {
            return Ok(true);
        }
        let max = u64::from(limits.key_max);
        if self.r.key_slots_held(&exec.function, key, max)? < max {
            return Ok(true);
        }
        let (function, key) = (exec.function.clone(), key.clone());
        self.effects.push(Effect::KeyWait { function, key, item: ready_item(task) });
        Ok(false)
    }

    /// Takes the claim's rate-limit budget: `None` when it may start now (its reserved slot
    /// has come, or every limit conforms), else the time its task is deferred to, with the
    /// slot reserved and the task written waiting for it.
    pub(super) fn rate_admit(
        &mut self,
        task: &mut TaskRecord,
        exec: &ExecutionRecord,
        limits: &ClaimLimits,
    ) -> Result<Option<u64>, StorageError> {
        let now = self.now;
        if task.rate_slot_ms.take().is_some() {
            // Reserved when it was deferred; the claim's due check saw its time come.
            return Ok(None);
        }
        let mut budgets: Vec<(&str, Rate)> = Vec::with_capacity(2);
        if let Some(rate) = limits.rate {
            budgets.push(("", rate));
        }
        if let (Some(rate), Some(key), None) = (limits.key_rate, &exec.keys.rate, task.step) {
            budgets.push((key.as_str(), rate));
        }
        if budgets.is_empty() {
            return Ok(None);
        }
        let mut states = Vec::with_capacity(budgets.len());
        let mut start = now;
        for (key, rate) in &budgets {
            let (t, tau) = interval(*rate);
            let tat = self.r.rate_tat(&task.function, key)?.unwrap_or(0);
            start = start.max(tat.saturating_sub(tau));
            states.push((*key, tat, t));
        }
        for (key, tat, t) in states {
            self.r.put_rate_tat(&task.function, key, tat.max(start).saturating_add(t))?;
        }
        if start <= now {
            return Ok(None);
        }
        let old = TaskIndex::of(task);
        task.due_ms = Some(start);
        task.rate_slot_ms = Some(start);
        self.r.put_task(task, &old)?;
        self.effects.push(pending_effect(task));
        Ok(Some(start))
    }

    /// Debounce or throttle: the execution an earlier dispatch with the same key started, if
    /// this one folds into it (a debounced one takes this input and its later start); else
    /// `new` is made to record the key and start as the flow says.
    pub(super) fn fold(&mut self, flow: &Flow, new: &mut NewExecution) -> OpRes<Option<u64>> {
        let now = self.now;
        match flow {
            Flow::Throttle { key, window_ms } => {
                let key = format!("throttle:{key}");
                if let Some((id, opened)) = self.r.flow_key(&key)? {
                    if now < opened.saturating_add(*window_ms) && self.r.execution(id)?.is_some() {
                        return Ok(Ok(Some(id)));
                    }
                }
                new.keys.flow = Some(key);
            }
            Flow::Debounce { key, window_ms, max_wait_ms } => {
                let key = format!("debounce:{key}");
                if let Some((id, opened)) = self.r.flow_key(&key)? {
                    if let Some(exec) = reject!(soft(self.r.execution(id))?) {
                        let waiting = exec.state == ExecutionState::Pending;
                        if let (true, Some(mut task)) = (waiting, reject!(soft(self.r.task(exec.root_task))?)) {
                            if task.state == TaskState::Pending && task.attempt == 0 {
                                let latest = max_wait_ms.map_or(u64::MAX, |w| opened.saturating_add(w));
                                let due = now.saturating_add(*window_ms).min(latest).max(now);
                                self.redebounce(exec, &mut task, std::mem::take(&mut new.input), due)?;
                                return Ok(Ok(Some(id)));
                            }
                        }
                    }
                }
                new.delay_ms = new.delay_ms.max(*window_ms);
                new.keys.flow = Some(key);
            }
        }
        Ok(Ok(None))
    }

    /// A debounced execution takes a later dispatch's input and start.
    fn redebounce(
        &mut self,
        mut exec: ExecutionRecord,
        task: &mut TaskRecord,
        input: Vec<u8>,
        due_ms: u64,
    ) -> Result<(), StorageError> {
        let old = TaskIndex::of(task);
        task.input = input;
        task.due_ms = (due_ms > self.now).then_some(due_ms);
        task.ready_ms = due_ms;
        self.r.put_task(task, &old)?;
        self.effects.push(pending_effect(task));
        let old = ExecutionIndex::of(&exec);
        exec.scheduled_ms = due_ms;
        if let Some(d) = exec.max_duration_ms {
            exec.deadline_ms = Some(due_ms.saturating_add(d));
        }
        self.r.put_execution(&exec, Some(old))?;
        if let Some(deadline_ms) = exec.deadline_ms {
            self.effects.push(Effect::Deadline { execution_id: exec.id, deadline_ms });
        }
        Ok(())
    }
}

/// The rate's emission interval and burst tolerance, in ms.
fn interval(rate: Rate) -> (u64, u64) {
    let t = rate.period_ms.div_ceil(u64::from(rate.per.max(1))).max(1);
    (t, rate.period_ms.saturating_sub(t))
}
