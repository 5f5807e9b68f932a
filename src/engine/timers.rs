//! Everything that must happen at a time: delayed and backed-off tasks becoming ready, lease
//! expiries, execution deadlines, schedule fires, evictions of parked workflow futures. One driver task sleeps until the earliest entry (through the
//! injected clock) or until an earlier entry is added; there is no polling loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::storage::ReadyItem;

#[derive(Debug, Clone)]
pub enum Due {
    Task(ReadyItem),
    Lease {
        task_id: u64,
        token: u32,
    },
    Deadline {
        execution_id: u64,
    },
    /// Look for ready work no pool of this process serves (`unserved_warn_after`).
    UnservedCheck,
    /// A schedule's next fire (or a buffered one) is due.
    Schedule {
        name: String,
        function: String,
    },
    /// A parked workflow future has waited `evict_after`.
    Evict {
        execution_id: u64,
        token: u32,
    },
}

type Key = (u64, u64);

#[derive(Default)]
pub struct Timers {
    entries: Mutex<BTreeMap<Key, Due>>,
    /// Current lease timer per task, so a renewal or an ended attempt removes the old entry
    /// (keeps the map at one entry per running task).
    lease_keys: Mutex<HashMap<u64, Key>>,
    /// Current timer per schedule, likewise: setting one replaces the old entry.
    schedule_keys: Mutex<HashMap<String, Key>>,
    /// How many entries are `Due::Task` (changed under the `entries` lock), for the
    /// `stent_sleeping_tasks` gauge.
    tasks: AtomicU64,
    seq: AtomicU64,
    pub notify: Notify,
}

impl Timers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Due>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, due_ms: u64, what: Due) -> Key {
        let key = (due_ms, self.seq.fetch_add(1, Ordering::Relaxed));
        let is_task = matches!(what, Due::Task(_));
        let earliest = {
            let mut entries = self.lock();
            entries.insert(key, what);
            if is_task {
                self.count_tasks(1, 0);
            }
            entries.keys().next() == Some(&key)
        };
        if earliest {
            self.notify.notify_one();
        }
        key
    }

    pub fn remove(&self, key: Key) {
        let mut entries = self.lock();
        if let Some(Due::Task(_)) = entries.remove(&key) {
            self.count_tasks(0, 1);
        }
    }

    /// Adjusts the count of task entries (the caller holds the `entries` lock) and the gauge.
    fn count_tasks(&self, added: u64, removed: u64) {
        let before = self.tasks.load(Ordering::Relaxed);
        let now = (before + added).saturating_sub(removed);
        self.tasks.store(now, Ordering::Relaxed);
        super::metrics::sleeping_tasks(now);
    }

    pub fn set_lease(&self, task_id: u64, token: u32, expires_ms: u64) {
        let key = self.add(expires_ms, Due::Lease { task_id, token });
        let old = self.lease_keys.lock().unwrap_or_else(|p| p.into_inner()).insert(task_id, key);
        if let Some(old) = old {
            self.lock().remove(&old);
        }
    }

    pub fn clear_lease(&self, task_id: u64) {
        let old = self.lease_keys.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_id);
        if let Some(old) = old {
            self.lock().remove(&old);
        }
    }

    /// Sets schedule `name`'s timer to `at_ms` (`None`: removes it).
    pub fn set_schedule(&self, name: String, function: String, at_ms: Option<u64>) {
        let mut keys = self.schedule_keys.lock().unwrap_or_else(|p| p.into_inner());
        let old = match at_ms {
            Some(at) => keys.insert(name.clone(), self.add(at, Due::Schedule { name, function })),
            None => keys.remove(&name),
        };
        if let Some(old) = old {
            self.lock().remove(&old);
        }
    }

    /// Removes and returns every entry due at `now_ms` with its due time, and the next due
    /// time after them.
    pub fn pop_due(&self, now_ms: u64) -> (Vec<(u64, Due)>, Option<u64>) {
        let mut entries = self.lock();
        let later = entries.split_off(&(now_ms.saturating_add(1), 0));
        let due = std::mem::replace(&mut *entries, later);
        let next = entries.keys().next().map(|k| k.0);
        let tasks = due.values().filter(|d| matches!(d, Due::Task(_))).count() as u64;
        if tasks > 0 {
            self.count_tasks(0, tasks);
        }
        drop(entries);
        let mut out = Vec::with_capacity(due.len());
        for (key, what) in due {
            if let Due::Lease { task_id, .. } = &what {
                let mut keys = self.lease_keys.lock().unwrap_or_else(|p| p.into_inner());
                if keys.get(task_id) == Some(&key) {
                    keys.remove(task_id);
                }
            }
            if let Due::Schedule { name, .. } = &what {
                let mut keys = self.schedule_keys.lock().unwrap_or_else(|p| p.into_inner());
                if keys.get(name) == Some(&key) {
                    keys.remove(name);
                }
            }
            out.push((key.0, what));
        }
        (out, next)
    }
}
