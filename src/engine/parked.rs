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

/// What the engine parks: the blocked future and its `Ctx`. (The set is generic so its
/// bookkeeping can be tested without an engine.)
pub(crate) type Workflow = (WorkflowFuture, Ctx);

pub(crate) struct Parked<W = Workflow> {
    /// The workflow's root task: only its next claim may resume the future.
    pub task_id: u64,
    /// The fencing token of the attempt that parked it; a later attempt's future replaces it.
    pub token: u32,
    pub workflow: W,
    /// The eviction timer's key, removed when the future is taken.
    pub timer: Option<(u64, u64)>,
    /// Keeps the execution's tracing span open while the future waits here.
    pub hold: Option<super::spans::ExecutionHold>,
    seq: u64,
}

impl<W> Parked<W> {
    pub fn new(task_id: u64, token: u32, workflow: W) -> Self {
        Parked { task_id, token, workflow, timer: None, hold: None, seq: 0 }
    }
}

struct Map<W> {
    by_execution: HashMap<u64, Parked<W>>,
    /// Park order (sequence → execution), to drop the oldest when over the bound.
    order: BTreeMap<u64, u64>,
    seq: u64,
}

impl<W> Default for Map<W> {
    fn default() -> Self {
        Map { by_execution: HashMap::new(), order: BTreeMap::new(), seq: 0 }
    }
}

impl<W> Map<W> {
    fn remove(&mut self, execution_id: u64) -> Option<Parked<W>> {
        let parked = self.by_execution.remove(&execution_id)?;
        self.order.remove(&parked.seq);
        Some(parked)
    }
}

pub(crate) struct ParkedSet<W = Workflow> {
    map: Mutex<Map<W>>,
    max: usize,
}

impl<W> ParkedSet<W> {
    pub fn new(max: usize) -> Self {
        ParkedSet { map: Mutex::new(Map::default()), max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map<W>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks `parked` for `execution_id`, unless a later attempt's future is there already.
    /// Returns what was dropped to make room (to be dropped outside the lock: a future's
    /// destructor is user code) and whether `parked` was kept.
    pub fn park(&self, execution_id: u64, mut parked: Parked<W>) -> (Vec<Parked<W>>, bool) {
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
        super::metrics::parked_workflows(map.by_execution.len());
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
    pub fn take(&self, execution_id: u64) -> Option<Parked<W>> {
        let mut map = self.lock();
        let parked = map.remove(execution_id);
        super::metrics::parked_workflows(map.by_execution.len());
        parked
    }

    /// Takes the future parked by the attempt `token` of `execution_id`'s workflow, if it is
    /// still there (an eviction timer that fired).
    pub fn take_if(&self, execution_id: u64, token: u32) -> Option<Parked<W>> {
        let mut map = self.lock();
        if map.by_execution.get(&execution_id).is_some_and(|p| p.token == token) {
            let parked = map.remove(execution_id);
            super::metrics::parked_workflows(map.by_execution.len());
            parked
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_execution.len()
    }

    /// Takes every parked future (the engine is closing).
    pub fn drain(&self) -> Vec<Parked<W>> {
        let mut map = self.lock();
        map.order.clear();
        super::metrics::parked_workflows(0);
        map.by_execution.drain().map(|(_, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(token: u32, what: &'static str) -> Parked<&'static str> {
        Parked::new(100, token, what)
    }

    #[test]
    fn an_earlier_attempts_future_never_replaces_a_later_ones() {
        let set = ParkedSet::new(10);
        assert!(set.park(1, parked(5, "attempt 5")).1);
        // The attempt that suspended before (token 4) parks late: it is refused, not kept.
        let (refused, kept) = set.park(1, parked(4, "attempt 4"));
        assert!(!kept);
        assert_eq!(refused.iter().map(|p| p.workflow).collect::<Vec<_>>(), ["attempt 4"]);
        // A later attempt's future replaces it, handing back the one it replaced.
        let (dropped, kept) = set.park(1, parked(6, "attempt 6"));
        assert!(kept);
        assert_eq!(dropped.iter().map(|p| p.workflow).collect::<Vec<_>>(), ["attempt 5"]);
        assert_eq!(set.take(1).map(|p| p.workflow), Some("attempt 6"));
        assert!(set.take(1).is_none());
    }

    #[test]
    fn over_the_bound_the_longest_parked_goes_first() {
        let set = ParkedSet::new(2);
        set.park(1, parked(1, "one"));
        set.park(2, parked(1, "two"));
        let (dropped, kept) = set.park(3, parked(1, "three"));
        assert!(kept);
        assert_eq!(dropped.iter().map(|p| p.workflow).collect::<Vec<_>>(), ["one"]);
        assert_eq!(set.len(), 2);
        // Re-parking an execution moves it to the back of the line.
        set.park(2, parked(2, "two again"));
        let (dropped, _) = set.park(4, parked(1, "four"));
        assert_eq!(dropped.iter().map(|p| p.workflow).collect::<Vec<_>>(), ["three"]);
        let mut left: Vec<_> = set.drain().into_iter().map(|p| p.workflow).collect();
        left.sort();
        assert_eq!(left, ["four", "two again"]);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn a_bound_of_zero_keeps_nothing() {
        let set = ParkedSet::new(0);
        let (refused, kept) = set.park(1, parked(1, "x"));
        assert!(!kept && refused.len() == 1 && set.len() == 0);
    }

    #[test]
    fn timers_and_evictions_name_the_attempt() {
        let set = ParkedSet::new(10);
        set.park(1, parked(3, "attempt 3"));
        assert!(!set.set_timer(1, 2, (9, 9)), "another attempt's timer");
        assert!(!set.set_timer(2, 3, (9, 9)), "another execution");
        assert!(set.set_timer(1, 3, (7, 7)));
        assert!(set.take_if(1, 2).is_none(), "an eviction for an earlier attempt takes nothing");
        let taken = set.take_if(1, 3).expect("its own eviction takes it");
        assert_eq!((taken.workflow, taken.timer), ("attempt 3", Some((7, 7))));
    }
}
