//! The in-memory ready queue over the durable `idx_ready`: workers take work from here, never
//! by scanning the database.
//!
//! One lock-free ordered map per queue (crossbeam's `SkipMap`), ordered like the durable
//! index: priority first, then age, then task id. Taking a task is `Entry::remove`, which
//! returns true to exactly one caller, so two workers never both try to claim it. The durable
//! claim (in the writer) remains the authority: an entry left behind by a cancelled task is
//! refused there and dropped.
//!
//! Rebuilt from the index at open; every durable change reaches it through an `Effect` after
//! its commit, so it never holds a task the disk does not.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crossbeam_skiplist::SkipMap;
use tokio::sync::Notify;

use super::registry::{Function, Registry};
use crate::storage::records::priority_key;
use crate::storage::ReadyItem;

type Key = (u32, u64, u64);

#[derive(Default)]
pub struct ReadyQueue {
    queues: RwLock<HashMap<String, Arc<SkipMap<Key, ReadyItem>>>>,
    /// Woken on every push; claim loops wait on it when they find nothing.
    pub notify: Notify,
}

/// What a worker serves.
pub struct Filter<'a> {
    pub queues: &'a [String],
    pub tags: &'a [String],
}

impl Filter<'_> {
    fn accepts(&self, item: &ReadyItem) -> bool {
        item.tags.is_empty() || item.tags.iter().any(|t| self.tags.contains(t))
    }
}

impl ReadyQueue {
    fn queue(&self, name: &str) -> Arc<SkipMap<Key, ReadyItem>> {
        if let Some(q) = self.queues.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return q.clone();
        }
        let mut w = self.queues.write().unwrap_or_else(|p| p.into_inner());
        w.entry(name.to_string()).or_default().clone()
    }

    pub fn push(&self, item: ReadyItem) {
        let key = (priority_key(item.priority), item.ready_ms, item.task_id);
        let queue = self.queue(&item.queue);
        let name = item.queue.clone();
        queue.insert(key, item);
        super::metrics::queue_depth(name, queue.len());
        self.notify.notify_waiters();
    }

    /// Visits every ready task (in no particular order across queues).
    pub fn for_each(&self, mut f: impl FnMut(&ReadyItem)) {
        let maps: Vec<_> = self.queues.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for map in maps {
            for entry in map.iter() {
                f(entry.value());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queues.read().unwrap_or_else(|p| p.into_inner()).values().all(|m| m.is_empty())
    }

    /// Takes the best task the filter accepts whose function has a free concurrency slot.
    /// On success the slot is held by the caller.
    pub fn take(&self, filter: &Filter<'_>, registry: &Registry) -> Option<(ReadyItem, Arc<Function>)> {
        let maps: Vec<_> = filter.queues.iter().map(|q| self.queue(q)).collect();
        'retry: loop {
            // The best candidate across the served queues: smallest key.
            let mut best: Option<(Key, usize)> = None;
            for (i, map) in maps.iter().enumerate() {
                for entry in map.iter() {
                    let item = entry.value();
                    if !filter.accepts(item) {
                        continue;
                    }
                    let Some(function) = runnable(registry, item) else {
                        continue;
                    };
                    if !has_room(function) {
                        continue;
                    }
                    if best.is_none_or(|(k, _)| *entry.key() < k) {
                        best = Some((*entry.key(), i));
                    }
                    break;
                }
            }
            let (key, i) = best?;
            let Some(entry) = maps[i].get(&key) else {
                continue 'retry;
            };
            let item = entry.value().clone();
            let function = registry.get(&item.function)?.clone();
            if !function.limiter.try_acquire() {
                continue 'retry;
            }
            if entry.remove() {
                super::metrics::queue_depth(item.queue.clone(), maps[i].len());
                return Some((item, function));
            }
            function.limiter.release();
        }
    }
}

/// The function that runs the item, if this engine has it and its code is not older than the
/// version the task needs (a task of newer code waits for an engine that has it).
pub fn runnable<'r>(registry: &'r Registry, item: &ReadyItem) -> Option<&'r Arc<Function>> {
    registry.get(&item.function).filter(|f| f.version >= item.version)
}

fn has_room(function: &Function) -> bool {
    let max = function.limiter.max();
    max == 0 || function.limiter.held() < max
}
