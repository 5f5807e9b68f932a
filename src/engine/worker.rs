//! Worker pools: a claim loop, a heartbeat loop, and one tokio task per running attempt.
//!
//! An attempt goes: take from the ready queue (holding a pool permit and a function slot) →
//! durable claim (lease + fencing token) → run the user's future → commit the outcome with the
//! token. Heartbeats renew every lease of the pool in one command per interval; a renewal that
//! comes back `LeaseLost` aborts that attempt's future, since another worker may own it now.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use std::future::Future;
use std::pin::Pin;

use super::parked::Parked;
use super::ready::Filter;
use super::registry::{Function, Handler, WorkflowFuture};
use super::spans::ExecutionHold;
use super::Ctx;
use super::{lock, Inner, Running};
use crate::api::{ActivityError, WorkerOptions, WorkerStatus};
use crate::error::{Error, Result};
use crate::lease::LeaseError;
use crate::storage::records::duration_ms;
use crate::storage::{ClaimedTask, Continuation, Local, Op, OpOutput, ReadyItem, StepBody};

mod drive;
mod handoff;
mod heartbeat;

pub(super) use drive::poll_until_blocked;
use drive::{drive_workflow, panic_message, Outcome};
pub(super) use handoff::{reserve_idle, Idle};
use handoff::{wait_idle, Taken};
use heartbeat::heartbeat_loop;

/// Handle on a pool of workers started by [`crate::Engine::serve`].
#[derive(Clone)]
pub struct WorkerPool {
    shared: Arc<Pool>,
}

pub(super) struct Pool {
    inner: Arc<Inner>,
    id: u64,
    options: WorkerOptions,
    queues: Vec<String>,
    permits: Arc<Semaphore>,
    status: watch::Sender<WorkerStatus>,
}

pub(super) fn start(inner: Arc<Inner>, options: WorkerOptions) -> Result<WorkerPool> {
    options.validate().map_err(|reason| Error::InvalidOptions { what: "WorkerOptions", reason })?;
    if options.heartbeat_interval >= options.lease_duration {
        tracing::warn!(
            worker = %options.worker_id,
            heartbeat_interval = ?options.heartbeat_interval,
            lease_duration = ?options.lease_duration,
            "heartbeat_interval is not shorter than lease_duration: leases will lapse between beats"
        );
    }
    let queues = if options.queues.is_empty() { vec!["default".to_string()] } else { options.queues.clone() };
    let shared = Arc::new(Pool {
        id: inner.next_pool.fetch_add(1, Ordering::Relaxed),
        // u32 permits always fit a semaphore (its bound is usize::MAX >> 3).
        permits: Arc::new(Semaphore::new(options.max_concurrency as usize)),
        status: watch::Sender::new(WorkerStatus::Starting),
        inner,
        options,
        queues,
    });
    {
        let mut pools = lock(&shared.inner.pools);
        pools.retain(|p| p.strong_count() > 0); // Dropped pools leave the registry.
        pools.push(Arc::downgrade(&shared));
    }
    tokio::spawn(claim_loop(shared.clone()));
    tokio::spawn(heartbeat_loop(shared.clone()));
    Ok(WorkerPool { shared })
}

impl WorkerPool {
    pub fn status(&self) -> WorkerStatus {
        *self.shared.status.borrow()
    }

    /// Resolves once the pool is claiming work.
    pub async fn wait_until_ready(&self) -> WorkerStatus {
        let mut rx = self.shared.status.subscribe();
        let status = rx.wait_for(|s| *s != WorkerStatus::Starting).await.map(|s| *s);
        status.unwrap_or(WorkerStatus::Stopped)
    }

    /// Attempts of this pool running now.
    pub fn running(&self) -> usize {
        lock(&self.shared.inner.running).values().filter(|r| r.pool == self.shared.id).count()
    }

    pub fn worker_id(&self) -> &str {
        &self.shared.options.worker_id
    }

    /// Stops claiming, lets running attempts finish for up to the grace period (on the
    /// engine's clock), then aborts what is left and gives it back to the queue (the attempt
    /// counts). Returns how many attempts were given back.
    pub async fn drain(&self) -> Result<usize> {
        self.drain_with_grace(self.shared.options.shutdown_grace).await
    }

    pub async fn drain_with_grace(&self, grace: Duration) -> Result<usize> {
        let pool = &self.shared;
        pool.status.send_if_modified(|s| {
            let change = *s != WorkerStatus::Stopped;
            if change {
                *s = WorkerStatus::Draining;
            }
            change
        });
        let all = pool.options.max_concurrency;
        let deadline = pool.inner.clock.now_ms().saturating_add(duration_ms(grace));
        let finished = tokio::select! {
            permits = pool.permits.clone().acquire_many_owned(all) => Some(permits),
            _ = pool.inner.clock.sleep_until(deadline) => None,
        };
        let mut given_back = 0;
        let permits = match finished {
            Some(permits) => permits,
            None => {
                let left: Vec<(u64, Option<u32>)> = {
                    let mut running = lock(&pool.inner.running);
                    running
                        .values_mut()
                        .filter(|r| r.pool == pool.id)
                        .map(|r| {
                            r.aborted = true;
                            if let Some(a) = &r.abort {
                                a.abort();
                            }
                            (r.task_id, r.token)
                        })
                        .collect()
                };
                for (task_id, token) in left {
                    let Some(token) = token else { continue };
                    let reason = format!("worker {:?} drained before the attempt finished", pool.options.worker_id);
                    match pool.inner.submit(Op::Abandon { task_id, token, reason }).await {
                        Ok(_) => given_back += 1,
                        Err(Error::Lease(_)) => {} // It finished or was taken meanwhile.
                        Err(e) => return Err(e),
                    }
                }
                pool.permits.clone().acquire_many_owned(all).await
            }
        };
        drop(permits);
        pool.status.send_replace(WorkerStatus::Stopped);
        Ok(given_back)
    }
}

/// Pools of this engine that still exist.
pub(super) fn live_pools(inner: &Inner) -> Vec<Arc<Pool>> {
    lock(&inner.pools).iter().filter_map(std::sync::Weak::upgrade).collect()
}

/// Whether `pool` takes work of `queue` with `tags` (the routing rule): it serves the queue,
/// is not stopping, and the work is untagged or shares one of the pool's tags.
pub(super) fn serves(pool: &Pool, queue: &str, tags: &[String]) -> bool {
    !stopping(pool)
        && pool.queues.iter().any(|q| q == queue)
        && (tags.is_empty() || tags.iter().any(|t| pool.options.tags.contains(t)))
}

fn stopping(pool: &Pool) -> bool {
    matches!(*pool.status.borrow(), WorkerStatus::Draining | WorkerStatus::Stopped) || *pool.inner.shutdown.borrow()
}

async fn claim_loop(pool: Arc<Pool>) {
    let mut status = pool.status.subscribe();
    let mut shutdown = pool.inner.shutdown.subscribe();
    pool.status.send_if_modified(|s| {
        let change = *s == WorkerStatus::Starting;
        if change {
            *s = WorkerStatus::Ready;
        }
        change
    });
    let filter = Filter { queues: &pool.queues, tags: &pool.options.tags };
    loop {
        if stopping(&pool) {
            break;
        }
        let permit = tokio::select! {
            p = pool.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = status.changed() => continue,
            _ = shutdown.changed() => continue,
        };
        let taken = loop {
            let notified = pool.inner.ready.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if stopping(&pool) {
                break None;
            }
            if let Some(taken) = pool.inner.ready.take(&filter, &pool.inner.registry) {
                break Some(Taken::Ready(taken));
            }
            // Idle: a dispatch may hand us its task directly, claimed in its own transaction.
            let (assign, assigned) = oneshot::channel();
            let idle_id = pool.inner.next_attempt.fetch_add(1, Ordering::Relaxed);
            lock(&pool.inner.idle).push(Idle { id: idle_id, pool: pool.clone(), assign });
            match wait_idle(&pool, idle_id, assigned, &mut notified, &mut status, &mut shutdown).await {
                Some(a) => break Some(Taken::Assigned(a)),
                None => continue,
            }
        };
        let (item, function) = match taken {
            None => {
                drop(permit);
                continue;
            }
            Some(Taken::Assigned(a)) => {
                tokio::spawn(async move {
                    let claimed = a.claim.await.ok().flatten();
                    run_claimed(a.pool, a.serial, claimed, a.function, permit).await;
                });
                continue;
            }
            Some(Taken::Ready(taken)) => taken,
        };
        let serial = pool.inner.next_attempt.fetch_add(1, Ordering::Relaxed);
        lock(&pool.inner.running).insert(
            serial,
            Running { task_id: item.task_id, pool: pool.id, token: None, abort: None, aborted: false, progress: None },
        );
        tokio::spawn(run_attempt(pool.clone(), serial, item, function, permit));
    }
    // Closing the engine stops the pool as a drain would (a drain sets `Stopped` itself once
    // its attempts are done).
    if *pool.inner.shutdown.borrow() {
        pool.status.send_replace(WorkerStatus::Stopped);
    }
}

async fn run_attempt(
    pool: Arc<Pool>,
    serial: u64,
    item: ReadyItem,
    function: Arc<Function>,
    permit: OwnedSemaphorePermit,
) {
    let inner = &pool.inner;
    let task_id = item.task_id;
    let lease_ms = duration_ms(pool.options.lease_duration);
    let worker = pool.options.worker_id.clone();
    let claim =
        inner.submit(Op::Claim { task_id, worker, lease_ms, version: function.version, limits: function.limits }).await;
    // Only a function with a per-key limit has tasks woken for a freed slot.
    let woken = if function.limits.key_max > 0 { lock(&inner.key_woken).remove(&task_id) } else { None };
    match (&claim, woken) {
        (Ok(OpOutput::Claimed(_) | OpOutput::KeyBusy), _) | (_, None) => {}
        // Woken for a freed slot, but it will not take it (cancelled meanwhile, say): the
        // next waiter may.
        (_, Some((function, key))) => inner.wake_key(function, key),
    }
    let claimed = match claim {
        Ok(OpOutput::Claimed(c)) => Some(c),
        Ok(OpOutput::Deferred { until_ms }) => {
            super::metrics::rate_limited(&item.function);
            inner.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(task_id, until_ms, "rate limited; waits for its slot");
            None
        }
        Ok(OpOutput::KeyBusy) => {
            super::metrics::key_busy(&item.function);
            inner.stats.key_waits.fetch_add(1, Ordering::Relaxed);
            None
        }
        // Gone: a step task of a run that continued as new, removed with the run.
        Ok(_) | Err(Error::TaskNotClaimable { .. } | Error::UnknownTask { .. }) => None,
        Err(e) => {
            tracing::warn!(task_id, error = %e, "claim failed");
            None
        }
    };
    run_claimed(pool, serial, claimed, function, permit).await;
}

/// Runs a claimed attempt (or cleans up after a claim that did not happen), commits its
/// outcome with the claim's token, and goes on with the task that outcome handed back to this
/// worker (a continuation), keeping the pool permit.
async fn run_claimed(
    pool: Arc<Pool>,
    serial: u64,
    claimed: Option<ClaimedTask>,
    function: Arc<Function>,
    permit: OwnedSemaphorePermit,
) {
    let inner = &pool.inner;
    let mut next = match claimed {
        Some(claimed) => Some((serial, claimed, function)),
        None => {
            lock(&inner.running).remove(&serial);
            function.limiter.release();
            None
        }
    };
    // The previous attempt's hold on its execution's span, kept until the next attempt (most
    // often a step of the same workflow) holds it too, so one span covers the chain.
    let mut held = None;
    while let Some((serial, claimed, function)) = next.take() {
        let (continued, hold) = run_one(&pool, serial, claimed, &function, held.take()).await;
        next = continued;
        held = Some(hold);
        function.limiter.release();
    }
    drop(held);
    drop(permit);
    // A freed function slot may make a skipped task claimable.
    inner.ready.notify.notify_waiters();
}

/// Registers the attempt that may continue this worker's run with `function` (a slot of its
/// limit taken), or nothing if the pool is stopping or the function has no free slot.
fn prepare_continuation(pool: &Arc<Pool>, function: &str, step: Option<u32>) -> Option<(Continuation, Arc<Function>)> {
    let inner = &pool.inner;
    if stopping(pool) {
        return None;
    }
    let f = inner.registry.get(function)?.clone();
    // A rate-limited claim is the normal claim's to make (it reserves and defers).
    if f.limits.rate.is_some() || f.limits.key_rate.is_some() || !f.limiter.try_acquire() {
        return None;
    }
    let serial = inner.next_attempt.fetch_add(1, Ordering::Relaxed);
    // Registered before the commit that may claim, like every claim (see `reserve_idle`).
    lock(&inner.running).insert(
        serial,
        Running { task_id: u64::MAX, pool: pool.id, token: None, abort: None, aborted: false, progress: None },
    );
    let continuation = Continuation {
        worker: pool.options.worker_id.clone(),
        lease_ms: duration_ms(pool.options.lease_duration),
        serial,
        function: function.to_string(),
        version: f.version,
        queues: pool.queues.clone(),
        tags: pool.options.tags.clone(),
        step,
    };
    Some((continuation, f))
}

fn undo_continuation(inner: &Inner, prepared: Option<(Continuation, Arc<Function>)>) {
    if let Some((c, f)) = prepared {
        lock(&inner.running).remove(&c.serial);
        f.limiter.release();
    }
}

/// The future of a claimed workflow attempt: the one parked by the workflow's previous
/// attempt, brought up to date, if no other attempt ran since; otherwise a fresh run of the
/// workflow over its whole journal (read here, after the claim committed, off the writer).
fn workflow_attempt(
    inner: &Arc<Inner>,
    handler: &super::registry::WorkflowHandler,
    claimed: ClaimedTask,
) -> Result<(WorkflowFuture, Ctx)> {
    let store = inner.store()?;
    if let Some(parked) = inner.unpark(claimed.execution_id) {
        if parked.task_id == claimed.task_id && parked.token.checked_add(1) == Some(claimed.token) {
            let asked = parked.workflow.1.unsettled_steps();
            let updates = store.journal_steps(claimed.execution_id, &asked)?;
            if parked.workflow.1.resume(&asked, updates) {
                inner.stats.resumes.fetch_add(1, Ordering::Relaxed);
                return Ok(parked.workflow);
            }
        }
    }
    let journal = store.journal(claimed.execution_id)?;
    let ctx = Ctx::new(inner.clone(), claimed.execution_id, claimed.queue, journal);
    Ok((handler(ctx.clone(), claimed.input), ctx))
}

/// One attempt: run it, commit its outcome, and return the continuation if the commit claimed
/// one for this worker, with this attempt's hold on its execution's span (`previous`: the
/// hold of the attempt before it in this worker's chain, released once this one holds).
async fn run_one(
    pool: &Arc<Pool>,
    serial: u64,
    claimed: ClaimedTask,
    function: &Arc<Function>,
    previous: Option<ExecutionHold>,
) -> (Option<(u64, ClaimedTask, Arc<Function>)>, ExecutionHold) {
    let inner = &pool.inner;
    let task_id = claimed.task_id;
    inner.stats.claims.fetch_add(1, Ordering::Relaxed);
    super::metrics::claim(function.name);
    let attempt_started = std::time::Instant::now();
    let execution_function = claimed.wakes.as_deref().unwrap_or(&claimed.function);
    let hold = inner.spans.hold(claimed.execution_id, execution_function, inner.trace_seed);
    drop(previous);
    let span = tracing::info_span!(
        parent: hold.span(),
        "attempt",
        execution_id = claimed.execution_id,
        task_id,
        function = %claimed.function,
        attempt = claimed.token,
    );
    let token = claimed.token;
    let execution_id = claimed.execution_id;
    let wakes = claimed.wakes.clone();
    let clock = inner.clock.clone();
    let timeout_ms = claimed.timeout_ms;
    let mut progress = None;
    let attempt: Pin<Box<dyn Future<Output = Outcome> + Send>> = match &function.handler {
        Handler::Activity(handler) => {
            let local = Arc::new(std::sync::Mutex::new(Local::default()));
            let heartbeats = Arc::new(super::activity::Progress::new(inner.clone(), execution_id, task_id));
            progress = Some(heartbeats.clone());
            let future = super::activity::scope(local.clone(), heartbeats, handler(claimed.input));
            Box::pin(async move {
                let result = match timeout_ms {
                    None => future.await,
                    Some(ms) => {
                        let deadline = clock.now_ms().saturating_add(ms);
                        tokio::select! {
                            out = future => out,
                            _ = clock.sleep_until(deadline) => Err(ActivityError::retryable(
                                format!("attempt timed out after {ms} ms")).with_code("timeout")),
                        }
                    }
                };
                match result {
                    Ok(output) => {
                        let local = std::mem::take(&mut *local.lock().unwrap_or_else(|p| p.into_inner()));
                        Outcome::Output { output, local }
                    }
                    Err(error) => Outcome::Error(error),
                }
            })
        }
        Handler::Workflow(handler) => match workflow_attempt(inner, handler, claimed) {
            Ok((future, ctx)) => Box::pin(drive_workflow(future, ctx)),
            Err(e) => {
                let error = ActivityError::permanent(format!("the workflow's journal cannot be read: {e}"))
                    .with_code("journal_unreadable");
                Box::pin(async move { Outcome::Error(error) })
            }
        },
    };
    // The spawned task waits for `start` before its first poll of the user's future: a
    // runtime thread may poll a new task at once, and user code must not run before the check
    // under the `running` lock below (an attempt aborted by `close` or a cancel meanwhile
    // never starts, so it can take nothing, such as a semaphore permit, from its successor).
    let (start, started) = oneshot::channel::<()>();
    let gated = async move {
        if started.await.is_err() {
            // Aborted before it started: wait for the abort, which is already on its way.
            std::future::pending::<()>().await;
        }
        attempt.await
    };
    let join = tokio::spawn(tracing::Instrument::instrument(gated, span));
    let running_gauge = super::metrics::RunningAttempt::start();
    {
        let mut running = lock(&inner.running);
        let go = match running.get_mut(&serial) {
            Some(r) => {
                r.token = Some(token);
                r.abort = Some(join.abort_handle());
                r.progress = progress;
                !(r.aborted || *inner.shutdown.borrow())
            }
            None => !*inner.shutdown.borrow(),
        };
        if go {
            let _ = start.send(());
        } else {
            join.abort();
        }
    }
    let outcome = join.await;
    drop(running_gauge);
    lock(&inner.running).remove(&serial);
    let mut prepared = None;
    let mut parking = None;
    let op = match outcome {
        Ok(Outcome::Output { output, .. }) if output.len() as u64 > inner.payload_bytes_max => Some(Op::Fail {
            task_id,
            token,
            error: ActivityError::permanent(format!(
                "output of {} bytes exceeds the limit of {} bytes",
                output.len(),
                inner.payload_bytes_max
            ))
            .with_code("payload_too_large"),
            jitter_unit: 0.0,
        }),
        Ok(Outcome::Output { output, local }) => {
            // A step's completion wakes its workflow: run it here, next.
            prepared = wakes.as_deref().and_then(|w| prepare_continuation(pool, w, None));
            let next = prepared.as_ref().map(|(c, _)| c.clone());
            Some(Op::Complete { task_id, token, output, local, next })
        }
        Ok(Outcome::ContinueAsNew { input, local }) => match (function.input_check)(&input) {
            Ok(()) => {
                // The next run starts here, next.
                prepared = prepare_continuation(pool, function.name, None);
                let next = prepared.as_ref().map(|(c, _)| c.clone());
                let (version, runs_kept) = (function.version, inner.runs_kept);
                Some(Op::ContinueAsNew { task_id, token, input, local, version, runs_kept, next })
            }
            Err(reason) => Some(Op::Fail {
                task_id,
                token,
                error: ActivityError::permanent(format!(
                    "continue_as_new: the input does not decode as the workflow's input: {reason}"
                ))
                .with_code("bad_input"),
                jitter_unit: 0.0,
            }),
        },
        // A workflow that gives up after a cancel (returns `Error::Cancelled`) ends cancelled.
        Ok(Outcome::Error(error))
            if matches!(function.handler, Handler::Workflow(_))
                && error.code.as_deref() == Some(crate::storage::records::EXECUTION_CANCELLED) =>
        {
            Some(Op::Cancel { execution_id })
        }
        Ok(Outcome::Error(error)) => Some(Op::Fail { task_id, token, error, jitter_unit: inner.jitter_unit() }),
        Ok(Outcome::Suspend { steps, awaiting, keep, earliest_wake_ms }) => {
            parking = keep.map(|workflow| {
                let mut parked = Parked::new(task_id, token, workflow);
                parked.hold = Some(hold.clone());
                (parked, earliest_wake_ms)
            });
            // The first new call this attempt asked for: run it here, next.
            let first = steps.iter().find_map(|s| match &s.body {
                StepBody::Task(t) if t.due_ms.is_none() => Some((s.step, t.function.clone())),
                _ => None,
            });
            prepared = first.and_then(|(step, f)| prepare_continuation(pool, &f, Some(step)));
            let next = prepared.as_ref().map(|(c, _)| c.clone());
            Some(Op::Suspend { task_id, token, steps, awaiting, next })
        }
        Err(e) if e.is_panic() => Some(Op::Fail {
            task_id,
            token,
            error: ActivityError::retryable(format!("attempt panicked: {}", panic_message(e))).with_code("panic"),
            jitter_unit: inner.jitter_unit(),
        }),
        Err(_) => None, // Aborted: cancelled, timed out, lease lost, drained or closed.
    };
    let mut continued = None;
    if let Some(op) = op {
        let (counter, outcome) = match op {
            Op::Complete { .. } => (&inner.stats.completions, "completed"),
            Op::ContinueAsNew { .. } => (&inner.stats.runs_continued, "continued"),
            Op::Suspend { .. } => (&inner.stats.suspensions, "suspended"),
            _ => (&inner.stats.failures, "failed"),
        };
        let nondeterministic =
            matches!(&op, Op::Fail { error, .. } if error.code.as_deref() == Some(drive::NON_DETERMINISM));
        match inner.submit(op).await {
            Ok(output) => {
                match output {
                    OpOutput::Failed { buried: false } => super::metrics::retry(function.name),
                    _ if nondeterministic => super::metrics::nondeterminism(function.name),
                    _ => {}
                }
                // Committed: the future may wait in memory for the step's outcome. (Parked
                // before the suspension is counted, so a test that sees the count sees it.)
                if let Some((parked, earliest_wake_ms)) = parking.take() {
                    inner.park(execution_id, parked, earliest_wake_ms);
                }
                counter.fetch_add(1, Ordering::Relaxed);
                super::metrics::attempt(function.name, outcome, attempt_started.elapsed());
                if let (OpOutput::Next(claimed), Some((c, f))) = (output, prepared.take()) {
                    continued = Some((c.serial, claimed, f));
                }
            }
            Err(Error::Lease(LeaseError::LeaseLost { .. })) => {
                inner.stats.leases_lost.fetch_add(1, Ordering::Relaxed);
                super::metrics::lease_lost();
                tracing::warn!(task_id, token, "outcome dropped: the lease was lost");
            }
            Err(e) => tracing::warn!(task_id, token, error = %e, "outcome not recorded"),
        }
    }
    undo_continuation(inner, prepared);
    inner.timers.clear_lease(task_id);
    (continued, hold)
}
