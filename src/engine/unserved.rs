//! Ready work that no worker pool of this process can take: its queue is not served, no pool
//! has one of its tags, or its function is not registered here. Tags stay routing
//! constraints (such work waits for a pool that accepts it), but the wait is visible:
//! [`crate::Engine::unserved_work`] counts it per queue and tags, and a check on the engine
//! clock logs a warning for work that has waited longer than `unserved_warn_after`.
//!
//! The check is armed by the first task that becomes ready and re-arms itself only while
//! ready work is left, so an idle engine schedules nothing (no polling).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::timers::Due;
use super::worker;
use super::Inner;
use crate::api::UnservedWork;
use crate::storage::ReadyItem;

impl Inner {
    /// Queues a ready task and makes sure the unserved-work check will look at it.
    pub(super) fn push_ready(&self, item: ReadyItem) {
        self.ready.push(item);
        self.arm_unserved_check();
    }

    fn arm_unserved_check(&self) {
        if self.unserved_warn_after_ms > 0 && !self.unserved_check_armed.swap(true, Ordering::AcqRel) {
            let at = self.clock.now_ms().saturating_add(self.unserved_warn_after_ms);
            self.timers.add(at, Due::UnservedCheck);
        }
    }

    /// Ready work no live pool of this process accepts, by (queue, tags).
    pub(super) fn unserved_work(&self) -> Vec<UnservedWork> {
        let pools = worker::live_pools(self);
        let mut groups: BTreeMap<(String, Vec<String>), UnservedWork> = BTreeMap::new();
        self.ready.for_each(|item| {
            let runnable = super::ready::runnable(&self.registry, item).is_some();
            if runnable && pools.iter().any(|p| worker::serves(p, &item.queue, &item.tags)) {
                return;
            }
            let mut tags = item.tags.clone();
            tags.sort();
            let group = groups.entry((item.queue.clone(), tags.clone())).or_insert_with(|| UnservedWork {
                queue: item.queue.clone(),
                tags,
                pending: 0,
                oldest_ready_ms: item.ready_ms,
                newer_version: 0,
            });
            group.pending += 1;
            if self.registry.get(&item.function).is_some_and(|f| f.version < item.version) {
                group.newer_version += 1;
            }
            group.oldest_ready_ms = group.oldest_ready_ms.min(item.ready_ms);
        });
        groups.into_values().collect()
    }

    /// The timer fired: warn about work that has waited too long, and look again later while
    /// any ready work is left.
    pub(super) fn check_unserved(self: &Arc<Self>) {
        self.unserved_check_armed.store(false, Ordering::Release);
        let now = self.clock.now_ms();
        for group in self.unserved_work() {
            let waited_ms = now.saturating_sub(group.oldest_ready_ms);
            if waited_ms >= self.unserved_warn_after_ms {
                self.stats.unserved_warnings.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    queue = %group.queue,
                    tags = ?group.tags,
                    pending = group.pending,
                    waited_ms,
                    newer_version = group.newer_version,
                    "ready work that no worker pool in this process serves (its queue is not served, no \
                     pool has one of its tags, its function is not registered here, or it needs a newer \
                     version of the function's code)"
                );
            }
        }
        if !self.ready.is_empty() {
            self.arm_unserved_check();
        }
    }
}
