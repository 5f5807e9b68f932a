//! Workflow futures kept in memory while they wait on a short step, so the attempt that the
//! step's outcome wakes resumes the same future instead of replaying the journal from the top
//! (replay costs time linear in the steps done, so an always-replaying workflow of n steps
//! costs O(n²)).
//!
//! Parking is an optimisation only: the suspension is committed before the future is parked,
//! so a parked future that is dropped (evicted, refused on resume, lost in a crash) is simply
//! replayed. A future is dropped when it has waited `evict_after`, at once when its wait is
//! known to last longer (a timer due later), when its execution ends, when the set is over
//! its bound (oldest first), and when the engine closes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::registry::WorkflowFuture;
use super::Ctx;

pub(crate) struct Parked {
    /// The workflow's root task: only its next claim may resume the future.
    pub task_id: u64,
    /// The fencing token of the attempt that parked it; a later attempt's future replaces it.
    pub token: u32,
    pub future: WorkflowFuture,
    pub ctx: Ctx,
    /// The eviction timer's key, removed when the future is taken.
    pub timer: Option<(u64, u64)>,
    seq: u64,
}

impl Parked {
    pub fn new(task_id: u64, token: u32, future: WorkflowFuture, ctx: Ctx) -> Self {
        Parked { task_id, token, future, ctx, timer: None, seq: 0 }
    }
}

#[derive(Default)]
struct Map {
    by_execution: HashMap<u64, Parked>,
    /// Park order (sequence → execution), to drop the oldest when over the bound.
    order: BTreeMap<u64, u64>,
    seq: u64,
}

impl Map {
    fn remove(&mut self, execution_id: u64) -> Option<Parked> {
        let parked = self.by_execution.remove(&execution_id)?;
        self.order.remove(&parked.seq);
        Some(parked)
    }
}

pub(crate) struct ParkedSet {
    map: Mutex<Map>,
    max: usize,
}

impl ParkedSet {
    pub fn new(max: usize) -> Self {
        ParkedSet { map: Mutex::new(Map::default()), max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `parked` for `execution_id`, unless a later attempt's future is there already.
    /// Returns what was dropped to make room (to be dropped outside the lock: a future's
    /// destructor is user code) and whether `parked` was kept.
    pub fn park(&self, execution_id: u64, mut parked: Parked) -> (Vec<Parked>, bool) {
        if self.max == 0 {
            return (vec![parked], false);
        }
        let mut map = self.lock();
        let mut dropped = Vec::new();
        if map.by_execution.get(&execution_id).is_some_and(|p| p.token > parked.token) {
            return (vec![parked], false);
        }
        dropped.extend(map.remove(execution_id));
        while map.by_execution.len() >= self.max {
            let Some((_, oldest)) = map.order.pop_first() else { break };
            dropped.extend(map.by_execution.remove(&oldest));
        }
        map.seq += 1;
        parked.seq = map.seq;
        map.order.insert(parked.seq, execution_id);
        map.by_execution.insert(execution_id, parked);
        (dropped, true)
    }

    /// Records the eviction timer of the future parked for `execution_id` with `token`.
    pub fn set_timer(&self, execution_id: u64, token: u32, key: (u64, u64)) -> bool {
        match self.lock().by_execution.get_mut(&execution_id) {
            Some(p) if p.token == token => {
                p.timer = Some(key);
                true
            }
            _ => false,
        }
    }

    /// Takes the future parked for `execution_id`, whatever the task or token (the caller
    /// checks them and drops a future that does not fit).
    pub fn take(&self, execution_id: u64) -> Option<Parked> {
        self.lock().remove(execution_id)
    }

    /// Takes the future parked by the attempt `token` of `execution_id`'s workflow, if it is
    /// still there (an eviction timer that fired).
    pub fn take_if(&self, execution_id: u64, token: u32) -> Option<Parked> {
        let mut map = self.lock();
        if map.by_execution.get(&execution_id).is_some_and(|p| p.token == token) {
            map.remove(execution_id)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_execution.len()
    }

    /// Takes every parked future (the engine is closing).
    pub fn drain(&self) -> Vec<Parked> {
        let mut map = self.lock();
        map.order.clear();
        map.by_execution.drain().map(|(_, p)| p).collect()
    }
}
