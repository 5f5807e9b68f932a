//! The hand-off between a dispatch and an idle claim loop: the loop registers itself idle, a
//! dispatch reserves it (with a slot of the function's limit) and claims the new task for it in
//! the dispatch's own commit, and the loop receives the claim.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::{serves, Pool};
use crate::api::WorkerStatus;
use crate::engine::registry::Function;
use crate::engine::{lock, Inner, Running};
use crate::storage::records::duration_ms;
use crate::storage::{ClaimedTask, ReadyItem};

/// Waits, registered idle as `idle_id`, for an assignment from a dispatch, new ready work, or
/// a status change. Returns the assignment if one came. The receiver is awaited at most until
/// it completes once: polling a completed oneshot again panics (which `close` used to trigger
/// by dropping every idle registration while its loop waited).
pub(super) async fn wait_idle(
    pool: &Pool,
    idle_id: u64,
    mut assigned: oneshot::Receiver<Assignment>,
    notified: &mut Pin<&mut tokio::sync::futures::Notified<'_>>,
    status: &mut watch::Receiver<WorkerStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Assignment> {
    tokio::select! {
        a = &mut assigned => return a.ok(),
        _ = notified.as_mut() => {}
        _ = status.changed() => {}
        _ = shutdown.changed() => {}
    }
    let still_idle = {
        let mut idle = lock(&pool.inner.idle);
        let before = idle.len();
        idle.retain(|i| i.id != idle_id);
        idle.len() < before
    };
    if still_idle {
        return None;
    }
    // Taken from the list meanwhile: by a dispatch (its assignment is on the way) or by
    // `close` (the sender is dropped, and the receiver completes with an error).
    assigned.await.ok()
}

pub(super) enum Taken {
    Ready((ReadyItem, Arc<Function>)),
    Assigned(Assignment),
}

/// An idle claim loop, waiting for work; a dispatch may reserve it.
pub(in crate::engine) struct Idle {
    pub(super) id: u64,
    pub(super) pool: Arc<Pool>,
    pub(super) assign: oneshot::Sender<Assignment>,
}

/// A task handed to an idle worker by a dispatch that claims it in its own transaction.
pub(in crate::engine) struct Assignment {
    pub(super) pool: Arc<Pool>,
    pub(super) serial: u64,
    pub(super) function: Arc<Function>,
    /// The claim, once committed; `None` if the dispatch did not create (or claim) a task.
    pub(super) claim: oneshot::Receiver<Option<ClaimedTask>>,
}

/// A reserved idle worker, ready to be named in a dispatch.
pub(in crate::engine) struct Reservation {
    pub worker: String,
    pub lease_ms: u64,
    pub serial: u64,
    pub(super) claim: oneshot::Sender<Option<ClaimedTask>>,
}

impl Reservation {
    /// Hands the dispatch's claim (or `None`) to the reserved worker.
    pub fn finish(self, claimed: Option<ClaimedTask>) {
        let _ = self.claim.send(claimed);
    }
}

/// Reserves an idle worker that serves `queue` and accepts `tags`, with a free slot of the
/// function's concurrency limit. The slot and the worker's pool permit go with the task.
pub(in crate::engine) fn reserve_idle(
    inner: &Inner,
    function: &Arc<Function>,
    queue: &str,
    tags: &[String],
) -> Option<Reservation> {
    let idle = {
        let mut idle = lock(&inner.idle);
        let at = idle.iter().position(|i| serves(&i.pool, queue, tags))?;
        if !function.limiter.try_acquire() {
            return None;
        }
        idle.swap_remove(at)
    };
    let serial = inner.next_attempt.fetch_add(1, Ordering::Relaxed);
    // Registered before the dispatch commits, like a normal claim, so an abort that follows
    // the commit always finds the attempt (`Effect::Claimed` fills in the task).
    lock(&inner.running).insert(
        serial,
        Running { task_id: u64::MAX, pool: idle.pool.id, token: None, abort: None, aborted: false, progress: None },
    );
    let (claim_tx, claim_rx) = oneshot::channel();
    let worker = idle.pool.options.worker_id.clone();
    let lease_ms = duration_ms(idle.pool.options.lease_duration);
    let assignment = Assignment { pool: idle.pool.clone(), serial, function: function.clone(), claim: claim_rx };
    if idle.assign.send(assignment).is_err() {
        // The loop is gone (its pool stopped): undo.
        lock(&inner.running).remove(&serial);
        function.limiter.release();
        return None;
    }
    Some(Reservation { worker, lease_ms, serial, claim: claim_tx })
}
