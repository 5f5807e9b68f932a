//! The state every handle, worker and the writer share (`Inner`), and how memory follows
//! each committed batch: effects, the timer driver, parked futures.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch};

use super::clock::{Clock, Sleep};
use super::worker;

use super::registry::Registry;
use super::timers::{Due, Timers};
use crate::error::{Error, Result};
use crate::storage::{Effect, Faults, Op, OpOutput, Store};

use super::queries::WaiterEntry;
use super::{parked, ready, writer, Counters};

/// An attempt running in this process, keyed by a serial number of its own: the same task
/// may briefly have two (a stale attempt being aborted and its replacement).
pub(super) struct Running {
    pub(super) task_id: u64,
    pub(super) pool: u64,
    pub(super) token: Option<u32>,
    pub(super) abort: Option<tokio::task::AbortHandle>,
    /// Set when an abort arrived before the attempt's future started.
    pub(super) aborted: bool,
    /// An activity attempt's heartbeat details, for the pool's renewals.
    pub(super) progress: Option<Arc<super::activity::Progress>>,
}

pub(crate) struct Inner {
    pub(super) store: RwLock<Option<Arc<dyn Store>>>,
    pub(super) tx: Mutex<Option<mpsc::Sender<writer::Command>>>,
    pub(super) registry: Registry,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) ready: ready::ReadyQueue,
    pub(super) timers: Timers,
    /// `wait_for` calls by execution, each under its own number so it can remove itself.
    pub(super) waiters: Mutex<HashMap<u64, Vec<WaiterEntry>>>,
    /// Callers of `Engine::update` awaiting a reply: by execution, then update id.
    pub(super) update_waiters: Mutex<HashMap<u64, HashMap<u64, oneshot::Sender<()>>>>,
    pub(super) next_waiter: AtomicU64,
    /// Tasks waiting for a slot of a concurrency key, oldest first, by (function, key).
    pub(super) key_waiting: Mutex<HashMap<(String, String), std::collections::VecDeque<crate::storage::ReadyItem>>>,
    /// Tasks given a freed key slot whose claim has not returned yet, with their key.
    pub(super) key_woken: Mutex<HashMap<u64, (String, String)>>,
    pub(super) running: Mutex<HashMap<u64, Running>>,
    pub(super) next_attempt: AtomicU64,
    /// Claim loops with nothing to do, which a dispatch may hand its task to directly.
    pub(super) idle: Mutex<Vec<worker::Idle>>,
    pub(super) rng: Mutex<rand::rngs::StdRng>,
    pub(super) seed: u64,
    pub(super) payload_bytes_max: u64,
    /// Past runs kept per execution (`EngineBuilder::runs_kept`).
    pub(super) runs_kept: u32,
    pub(super) poisoned: Mutex<Option<String>>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(super) faults: Arc<Faults>,
    pub(super) next_pool: AtomicU64,
    /// Every pool started on this engine (dropped ones are pruned as new ones start).
    pub(super) pools: Mutex<Vec<std::sync::Weak<worker::Pool>>>,
    pub(super) unserved_warn_after_ms: u64,
    pub(super) unserved_check_armed: std::sync::atomic::AtomicBool,
    pub(super) stats: Counters,
    /// Blocked workflow futures kept in memory (see `EngineBuilder::evict_after`).
    pub(super) parked: parked::ParkedSet,
    /// The `execution` tracing spans of executions in memory.
    pub(super) spans: Arc<super::spans::ExecutionSpans>,
    /// Mixed into the trace id of an execution's spans (feature `otel`): random per file.
    pub(super) trace_seed: u64,
    pub(super) evict_after_ms: u64,
    /// Opened with `EngineBuilder::read_only`: every change is refused.
    pub(super) read_only: bool,
    /// `EngineBuilder::fire_schedules`: whether schedule timers are set at all.
    pub(super) fire_schedules: bool,
    /// The socket the CLI reaches this engine by, while it is served (path-backed engines).
    #[cfg(all(unix, not(loom)))]
    pub(super) control_socket: Mutex<Option<super::control_socket::ControlSocket>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain maps behind; carry on with them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    pub(super) fn store(&self) -> Result<Arc<dyn Store>> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or(Error::Shutdown)
    }

    pub(super) async fn submit(&self, op: Op) -> Result<OpOutput> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let tx = lock(&self.tx).clone().ok_or(Error::Shutdown)?;
        let (reply, rx) = oneshot::channel();
        tx.send(writer::Command { op, reply }).await.map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    pub(super) fn jitter_unit(&self) -> f64 {
        lock(&self.rng).random::<f64>()
    }

    pub(super) fn next_random(&self) -> u64 {
        lock(&self.rng).random::<u64>()
    }

    /// Brings memory in line with a committed batch. Runs on the writer thread, before any
    /// caller of that batch is answered.
    pub(super) fn apply_effects(&self, effects: Vec<Effect>) {
        let now = self.clock.now_ms();
        for effect in effects {
            match effect {
                Effect::Ready(item) => self.push_ready(item),
                Effect::Timer { due_ms, item } if due_ms <= now => self.push_ready(item),
                Effect::Timer { due_ms, item } => {
                    self.timers.add(due_ms, Due::Task(item));
                }
                Effect::Lease { task_id, token, expires_ms } => self.timers.set_lease(task_id, token, expires_ms),
                Effect::Claimed { serial, task_id, token } => {
                    if let Some(running) = lock(&self.running).get_mut(&serial) {
                        running.task_id = task_id;
                        running.token = Some(token);
                    }
                }
                Effect::Deadline { execution_id, deadline_ms } => {
                    self.timers.add(deadline_ms, Due::Deadline { execution_id });
                }
                Effect::Finished { execution_id } => {
                    drop(self.unpark(execution_id));
                    self.spans.finished(execution_id);
                    for (_, waiter) in lock(&self.waiters).remove(&execution_id).unwrap_or_default() {
                        let _ = waiter.send(());
                    }
                    // Updates it will never answer: their callers find no reply and say so.
                    for (_, waiter) in lock(&self.update_waiters).remove(&execution_id).unwrap_or_default() {
                        let _ = waiter.send(());
                    }
                }
                Effect::Replied { execution_id, update } => {
                    let mut waiters = lock(&self.update_waiters);
                    if let Some(of_execution) = waiters.get_mut(&execution_id) {
                        if let Some(waiter) = of_execution.remove(&update) {
                            let _ = waiter.send(());
                        }
                        if of_execution.is_empty() {
                            waiters.remove(&execution_id);
                        }
                    }
                }
                Effect::DeadLettered { function, .. } => super::metrics::dead_letter(function),
                Effect::Schedule { name, function, at_ms } if self.fire_schedules => {
                    self.timers.set_schedule(name, function, at_ms)
                }
                Effect::Schedule { .. } => {}
                Effect::KeyWait { function, key, item } => {
                    lock(&self.key_waiting).entry((function, key)).or_default().push_back(item);
                }
                Effect::KeyFreed { function, key } => self.wake_key(function, key),
                Effect::Abort { task_id, token } => {
                    self.timers.clear_lease(task_id);
                    self.abort_local(task_id, token);
                }
            }
        }
    }

    /// A slot of concurrency key (`function`, `key`) is free: its oldest waiting task goes back
    /// to the ready queue (marked, so that if its claim does not take the slot, the next one
    /// is woken).
    pub(super) fn wake_key(&self, function: String, key: String) {
        let mut waiting = lock(&self.key_waiting);
        let fk = (function, key);
        let Some(queue) = waiting.get_mut(&fk) else { return };
        let item = queue.pop_front();
        if queue.is_empty() {
            waiting.remove(&fk);
        }
        drop(waiting);
        if let Some(item) = item {
            lock(&self.key_woken).insert(item.task_id, fk);
            self.push_ready(item);
        }
    }

    /// Stops the in-process futures of a task's attempts: the one holding `token`, or all.
    /// An entry whose claim has not returned yet (no token) matches too: effects that abort
    /// come before the effects that re-queue, so such an entry is the attempt being aborted.
    pub(super) fn abort_local(&self, task_id: u64, token: Option<u32>) {
        for running in lock(&self.running).values_mut() {
            let matches =
                running.task_id == task_id && (token.is_none() || running.token.is_none() || running.token == token);
            if matches {
                running.aborted = true;
                if let Some(abort) = &running.abort {
                    abort.abort();
                }
            }
        }
    }

    /// Keeps a blocked workflow's future (its suspension committed) for the attempt its next
    /// outcome wakes, unless the wait is known to outlast `evict_after` (a timer due later).
    pub(super) fn park(&self, execution_id: u64, parked: parked::Parked, earliest_wake_ms: u64) {
        let evict_at = self.clock.now_ms().saturating_add(self.evict_after_ms);
        if self.evict_after_ms == 0 || earliest_wake_ms > evict_at || *self.shutdown.borrow() {
            return;
        }
        let token = parked.token;
        let (dropped, kept) = self.parked.park(execution_id, parked);
        for d in &dropped {
            if let Some(key) = d.timer {
                self.timers.remove(key);
            }
        }
        drop(dropped);
        if kept {
            let key = self.timers.add(evict_at, Due::Evict { execution_id, token });
            if !self.parked.set_timer(execution_id, token, key) {
                self.timers.remove(key); // Taken meanwhile.
            }
        }
    }

    pub(super) fn unpark(&self, execution_id: u64) -> Option<parked::Parked> {
        let parked = self.parked.take(execution_id)?;
        if let Some(key) = parked.timer {
            self.timers.remove(key);
        }
        Some(parked)
    }

    /// The timer driver: sleeps until the earliest entry or until an earlier one is added.
    pub(super) async fn drive_timers(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let notified = self.timers.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now_ms = self.clock.now_ms();
            let (due, next) = self.timers.pop_due(now_ms);
            for (due_ms, what) in due {
                match what {
                    Due::Task(item) => {
                        super::metrics::wakeup_lateness(now_ms.saturating_sub(due_ms));
                        self.push_ready(item);
                    }
                    Due::UnservedCheck => self.check_unserved(),
                    Due::Lease { task_id, token } => {
                        let inner = self.clone();
                        tokio::spawn(async move {
                            match inner.submit(Op::Expire { task_id, token }).await {
                                Ok(OpOutput::Expired(true)) => super::metrics::lease_expired(),
                                Ok(_) => {}
                                Err(e) => tracing::debug!(task_id, error = %e, "lease expiry not applied"),
                            }
                        });
                    }
                    Due::Evict { execution_id, token } => drop(self.parked.take_if(execution_id, token)),
                    Due::Schedule { name, function } => {
                        let inner = self.clone();
                        tokio::spawn(async move { inner.fire_schedule(name, &function).await });
                    }
                    Due::Deadline { execution_id } => {
                        let inner = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = inner.submit(Op::TimeOut { execution_id }).await {
                                tracing::debug!(execution_id, error = %e, "deadline not applied");
                            }
                        });
                    }
                }
            }
            let sleep: Sleep = match next {
                Some(at) => self.clock.sleep_until(at),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                _ = sleep => {}
                _ = &mut notified => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
