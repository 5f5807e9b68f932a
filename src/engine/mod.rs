//! The engine: registry, group-commit writer, in-memory ready queue, timers, workers and the
//! public [`Engine`] API.
//!
//! Architecture invariants:
//! - `engine` never names a redb type: it talks to `storage::Store` in engine operations;
//! - memory follows the disk: the ready queue, timers and waiters change only through the
//!   `Effect`s of a committed batch (or the recovery scan at open);
//! - a user future is started only after its claim is durable, and its outcome is written only
//!   with the claim's fencing token.

pub mod activity;
mod clock;
mod ctx;
mod parked;
mod ready;
mod registry;
mod timers;
mod worker;
mod writer;

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use ctx::{CallOptions, CounterRef, Ctx, StateRef, Step};
pub use worker::WorkerPool;

use crate::api::{
    ActivityError, CleanupReport, DeadLetter, DurationArg, ExecutionFilter, ExecutionId, ExecutionInfo, ExecutionState,
    FunctionHandle, Page, RetryPolicy, RunningTask, VerifyOnOpen, WorkerOptions,
};
use crate::error::{Error, Result};
use crate::storage::records::{duration_ms, DeadLetterRecord, ExecutionRecord, RetryRecord, TaskRecord};
use crate::storage::{
    CleanupCursor, EagerClaim, Effect, Faults, Guarded, NewExecution, Op, OpOutput, OpenOptions, RedbStore, Store,
};
use registry::{Bound, Function, Registry};
use timers::{Due, Timers};

/// Default limit on one payload (input, output) in bytes.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// Commands applied per transaction at most.
pub const BATCH_OPS_MAX_DEFAULT: usize = 2048;
/// How long a blocked workflow's future stays in memory by default.
pub const EVICT_AFTER_DEFAULT: Duration = Duration::from_secs(10);
/// Blocked workflow futures kept in memory at most by default.
pub const PARKED_WORKFLOWS_MAX_DEFAULT: usize = 1_000;
/// Records a retention cleanup removes per write transaction at most, so other work
/// interleaves with a large cleanup.
const CLEANUP_BUDGET: u32 = 256;
/// Commands waiting for the writer at most (back-pressure beyond that).
const COMMAND_QUEUE_MAX: usize = 16 * 1024;

/// Counters of what the engine did, for tests, benches and dashboards.
#[derive(Debug, Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub ops: AtomicU64,
    pub claims: AtomicU64,
    pub completions: AtomicU64,
    pub failures: AtomicU64,
    /// Workflow attempts that ended blocked on steps (not failures).
    pub suspensions: AtomicU64,
    /// Workflow attempts that resumed a parked future instead of replaying the journal.
    pub resumes: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub leases_lost: AtomicU64,
}

impl Stats {
    fn record_batch(&self, ops: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.ops.fetch_add(ops as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// An attempt running in this process, keyed by a serial number of its own: the same task
/// may briefly have two (a stale attempt being aborted and its replacement).
struct Running {
    task_id: u64,
    pool: u64,
    token: Option<u32>,
    abort: Option<tokio::task::AbortHandle>,
    /// Set when an abort arrived before the attempt's future started.
    aborted: bool,
}

pub(crate) struct Inner {
    store: RwLock<Option<Arc<dyn Store>>>,
    tx: Mutex<Option<mpsc::Sender<writer::Command>>>,
    registry: Registry,
    clock: Arc<dyn Clock>,
    ready: ready::ReadyQueue,
    timers: Timers,
    waiters: Mutex<HashMap<u64, Vec<oneshot::Sender<()>>>>,
    running: Mutex<HashMap<u64, Running>>,
    next_attempt: AtomicU64,
    /// Claim loops with nothing to do, which a dispatch may hand its task to directly.
    idle: Mutex<Vec<worker::Idle>>,
    rng: Mutex<rand::rngs::StdRng>,
    seed: u64,
    payload_bytes_max: u64,
    poisoned: Mutex<Option<String>>,
    shutdown: watch::Sender<bool>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    faults: Arc<Faults>,
    next_pool: AtomicU64,
    stats: Stats,
    /// Blocked workflow futures kept in memory (see `EngineBuilder::evict_after`).
    parked: parked::ParkedSet,
    evict_after_ms: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain maps behind; carry on with them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn store(&self) -> Result<Arc<dyn Store>> {
        self.store.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or(Error::Shutdown)
    }

    async fn submit(&self, op: Op) -> Result<OpOutput> {
        let tx = lock(&self.tx).clone().ok_or(Error::Shutdown)?;
        let (reply, rx) = oneshot::channel();
        tx.send(writer::Command { op, reply }).await.map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    fn jitter_unit(&self) -> f64 {
        lock(&self.rng).random::<f64>()
    }

    fn next_random(&self) -> u64 {
        lock(&self.rng).random::<u64>()
    }

    /// Brings memory in line with a committed batch. Runs on the writer thread, before any
    /// caller of that batch is answered.
    fn apply_effects(&self, effects: Vec<Effect>) {
        let now = self.clock.now_ms();
        for effect in effects {
            match effect {
                Effect::Ready(item) => self.ready.push(item),
                Effect::Timer { due_ms, item } if due_ms <= now => self.ready.push(item),
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
                    for waiter in lock(&self.waiters).remove(&execution_id).unwrap_or_default() {
                        let _ = waiter.send(());
                    }
                }
                Effect::Abort { task_id, token } => {
                    self.timers.clear_lease(task_id);
                    self.abort_local(task_id, token);
                }
            }
        }
    }

    /// Stops the in-process futures of a task's attempts: the one holding `token`, or all.
    /// An entry whose claim has not returned yet (no token) matches too: effects that abort
    /// come before the effects that re-queue, so such an entry is the attempt being aborted.
    fn abort_local(&self, task_id: u64, token: Option<u32>) {
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
    fn park(&self, execution_id: u64, parked: parked::Parked, earliest_wake_ms: u64) {
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

    fn unpark(&self, execution_id: u64) -> Option<parked::Parked> {
        let parked = self.parked.take(execution_id)?;
        if let Some(key) = parked.timer {
            self.timers.remove(key);
        }
        Some(parked)
    }

    /// Removes what ended before `now - older_than`, a budget per transaction.
    async fn cleanup(&self, older_than: Duration) -> Result<CleanupReport> {
        let cutoff_ms = self.cutoff_ms(older_than);
        let mut total = CleanupReport::default();
        let mut from = Some(CleanupCursor::DeadLetters);
        while let Some(at) = from {
            match self.submit(Op::Cleanup { cutoff_ms, budget: CLEANUP_BUDGET, from: at }).await? {
                OpOutput::Cleaned { removed, next } => {
                    total += removed;
                    from = next;
                }
                other => return Err(Error::Config(format!("unexpected answer to a cleanup: {other:?}"))),
            }
        }
        Ok(total)
    }

    /// Retention keeps what ended at or after this time.
    fn cutoff_ms(&self, older_than: Duration) -> u64 {
        self.clock.now_ms().saturating_sub(duration_ms(older_than))
    }

    /// The retention loop (`EngineBuilder::retention`): a cleanup at open, then every period
    /// (at most every hour) on a schedule anchored at `anchor_ms` (the open), so a loop that
    /// starts or runs late still wakes when the clock passes the next multiple.
    async fn retain(self: Arc<Self>, period: Duration, anchor_ms: u64) {
        let interval_ms = duration_ms(period).clamp(1_000, 3_600_000);
        let mut shutdown = self.shutdown.subscribe();
        loop {
            match self.cleanup(period).await {
                Ok(r) if r == CleanupReport::default() => {}
                Ok(r) => tracing::info!(
                    executions = r.executions,
                    dead_letters = r.dead_letters,
                    cache_entries = r.cache_entries,
                    "retention cleanup"
                ),
                Err(Error::Shutdown) => return,
                Err(e) => tracing::warn!(error = %e, "retention cleanup failed"),
            }
            let since = self.clock.now_ms().saturating_sub(anchor_ms);
            let next = anchor_ms.saturating_add((since / interval_ms + 1).saturating_mul(interval_ms));
            tokio::select! {
                _ = self.clock.sleep_until(next) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// The timer driver: sleeps until the earliest entry or until an earlier one is added.
    async fn drive_timers(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let notified = self.timers.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (due, next) = self.timers.pop_due(self.clock.now_ms());
            for what in due {
                match what {
                    Due::Task(item) => self.ready.push(item),
                    Due::Lease { task_id, token } => {
                        let inner = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = inner.submit(Op::Expire { task_id, token }).await {
                                tracing::debug!(task_id, error = %e, "lease expiry not applied");
                            }
                        });
                    }
                    Due::Evict { execution_id, token } => drop(self.parked.take_if(execution_id, token)),
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

/// Builds an [`Engine`]: where its file is, which functions it runs, its clock.
pub struct EngineBuilder {
    path: Option<PathBuf>,
    backend: Option<Box<dyn redb::StorageBackend>>,
    registry: Registry,
    last: Option<Function>,
    errors: Vec<String>,
    clock: Arc<dyn Clock>,
    seed: Option<u64>,
    verify_on_open: VerifyOnOpen,
    payload_bytes_max: u64,
    batch_ops_max: usize,
    cache_entries_max: u64,
    page_cache_bytes: usize,
    evict_after: Duration,
    parked_workflows_max: usize,
    retention: Option<Duration>,
    faults: Arc<Faults>,
}

impl EngineBuilder {
    /// The database file; created if missing.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Keep everything in memory (tests). Nothing survives the engine.
    pub fn in_memory(mut self) -> Self {
        self.path = None;
        self.backend = None;
        self
    }

    /// A custom redb storage backend (fault injection, `stent::testing::MemoryDisk`).
    pub fn backend(mut self, backend: impl redb::StorageBackend) -> Self {
        self.backend = Some(Box::new(backend));
        self
    }

    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Seed of the RNG behind retry jitter (logged at open when not given).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// What the open verifies before anything runs: [`VerifyOnOpen::Live`] (the default: the
    /// pending and running executions, their tasks and the indexes recovery reads; its cost
    /// follows the live work, not the history) or [`VerifyOnOpen::Full`] (every page and every
    /// record; reads the whole file). `Engine::check` runs the full record check at any time.
    pub fn verify_on_open(mut self, verify: VerifyOnOpen) -> Self {
        self.verify_on_open = verify;
        self
    }

    pub fn payload_bytes_max(mut self, bytes: u64) -> Self {
        self.payload_bytes_max = bytes;
        self
    }

    pub fn batch_ops_max(mut self, ops: usize) -> Self {
        self.batch_ops_max = ops.max(1);
        self
    }

    #[doc(hidden)]
    pub fn faults(mut self, faults: Arc<Faults>) -> Self {
        self.faults = faults;
        self
    }

    fn flush_last(&mut self) {
        if let Some(f) = self.last.take() {
            if f.name.starts_with("stent.") {
                self.errors.push(format!("function name {:?}: names starting with \"stent.\" are reserved", f.name));
                return;
            }
            if let Err(e) = self.registry.insert(f) {
                self.errors.push(e.to_string());
            }
        }
    }

    /// Registers an activity: `async fn(Input) -> Result<Output, ActivityError>`. Options that
    /// follow (`retry`, `max_concurrent`, `queue`, `priority`, `timeout`) apply to it.
    pub fn activity<H, F, Fut>(mut self, handle: H, f: F) -> Self
    where
        H: FunctionHandle,
        F: Fn(H::Input) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<H::Output, ActivityError>> + Send + 'static,
    {
        self.flush_last();
        self.last = Some(Function::new(
            handle.name(),
            registry::handler(handle, Bound::<H, F>::new(f)),
            RetryPolicy::default(),
        ));
        self
    }

    /// Registers a workflow: `async fn(Ctx, Input) -> stent::Result<Output>`. It must be
    /// deterministic in the durable operations it performs, and await only `Ctx` operations.
    /// A workflow's own error fails its execution (into the dead-letter queue) at once; an
    /// attempt lost to a crash or an expired lease is retried up to 3 times in a row.
    pub fn workflow<H, F, Fut>(mut self, handle: H, f: F) -> Self
    where
        H: FunctionHandle,
        F: Fn(Ctx, H::Input) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<H::Output>> + Send + 'static,
    {
        self.flush_last();
        // Errors a workflow returns are permanent (re-running it gives the same answer); the
        // attempts guard against an attempt that keeps dying with its process.
        self.last = Some(Function::new(
            handle.name(),
            registry::workflow_handler(handle, f),
            RetryPolicy::exponential(3, Duration::from_secs(1)),
        ));
        self
    }

    fn with_last(mut self, what: &str, f: impl FnOnce(&mut Function)) -> Self {
        match self.last.as_mut() {
            Some(last) => f(last),
            None => self.errors.push(format!("{what}() given before any function was registered")),
        }
        self
    }

    pub fn retry(self, policy: RetryPolicy) -> Self {
        self.with_last("retry", |f| f.retry = policy)
    }

    /// At most `n` attempts of this function run at once across all workers (`0`: no limit).
    pub fn max_concurrent(self, n: u32) -> Self {
        self.with_last("max_concurrent", |f| f.limiter = crate::lease::Limiter::new(n))
    }

    pub fn queue(self, queue: &str) -> Self {
        self.with_last("queue", |f| f.queue = queue.to_string())
    }

    pub fn priority(self, priority: i32) -> Self {
        self.with_last("priority", |f| f.priority = priority)
    }

    /// Reuses this function's result across executions for `ttl`: a call or dispatch with the
    /// same input (and `version`) gets the stored result without running. Bounded by
    /// `cache_entries_max`; expired entries are removed as new ones come in.
    pub fn cached(self, ttl: impl Into<DurationArg>) -> Self {
        match ttl.into().get() {
            Ok(ttl) => self.with_last("cached", |f| {
                let version = f.cache.map_or(1, |c| c.version);
                f.cache = Some(crate::storage::records::CachePolicy { version, ttl_ms: duration_ms(ttl) });
            }),
            Err(e) => {
                let mut s = self;
                s.errors.push(e.to_string());
                s
            }
        }
    }

    /// The version of this function's code in cache keys: bump it when results change.
    pub fn version(self, version: u32) -> Self {
        self.with_last("version", |f| {
            if let Some(c) = f.cache.as_mut() {
                c.version = version;
            } else {
                f.cache = Some(crate::storage::records::CachePolicy { version, ttl_ms: 0 });
            }
        })
    }

    /// Bytes of file pages kept in memory (default 64 MiB). Resident memory follows the file's
    /// size up to this; more helps large files, less suits small devices.
    pub fn page_cache_bytes(mut self, bytes: usize) -> Self {
        self.page_cache_bytes = bytes;
        self
    }

    /// How long a blocked workflow's future may wait in memory (default 10 s, on the engine's
    /// clock). Every suspension is committed first, so this trades memory for speed only: a
    /// workflow woken while its future is kept resumes it where it stopped; one woken later
    /// (or after a restart) is re-run from the top over its journal, which costs time in
    /// proportion to the steps it has done. A wait known to be longer (a timer due later)
    /// drops the future at once. `Duration::ZERO` always drops it. See also
    /// [`EngineBuilder::parked_workflows_max`].
    pub fn evict_after(mut self, threshold: impl Into<DurationArg>) -> Self {
        match threshold.into().get() {
            Ok(d) => self.evict_after = d,
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

    /// Blocked workflow futures kept in memory at most (default 1,000); beyond it the
    /// longest-parked is dropped (its workflow replays when woken). `0` keeps none.
    pub fn parked_workflows_max(mut self, max: usize) -> Self {
        self.parked_workflows_max = max;
        self
    }

    /// Keeps finished executions and dead letters for `period`, then removes them with all
    /// their records (see [`Engine::cleanup`]); expired cache entries go too. Runs at open and
    /// then every `period` (at most every hour) on the engine's clock. Default: keep
    /// everything until `Engine::cleanup` is called.
    pub fn retention(mut self, period: impl Into<DurationArg>) -> Self {
        match period.into().get() {
            Ok(d) => self.retention = Some(d),
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

    /// Entries the function result cache keeps at most (default 10,000).
    pub fn cache_entries_max(mut self, entries: u64) -> Self {
        self.cache_entries_max = entries.max(1);
        self
    }

    /// Limit on one attempt; an attempt that takes longer fails with code `"timeout"`.
    pub fn timeout(self, timeout: impl Into<DurationArg>) -> Self {
        match timeout.into().get() {
            Ok(d) => self.with_last("timeout", |f| f.timeout = Some(d)),
            Err(e) => {
                let mut s = self;
                s.errors.push(e.to_string());
                s
            }
        }
    }

    /// Opens (or creates) the database, re-queues work left running by a previous process,
    /// and starts the writer and timers. Must be called inside a tokio runtime.
    pub fn open(mut self) -> Result<Engine> {
        self.flush_last();
        if !self.errors.is_empty() {
            return Err(Error::Config(self.errors.join("; ")));
        }
        // The timer behind `Ctx::sleep`: due at the wake-up time, done as soon as it runs.
        self.registry.insert(Function::new(
            ctx::SLEEP_FUNCTION,
            registry::Handler::Activity(Arc::new(|_| Box::pin(async { Ok(b"null".to_vec()) }))),
            RetryPolicy::default(),
        ))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("Engine::open must be called inside a tokio runtime".into()))?;
        let store = RedbStore::open(OpenOptions {
            path: self.path.clone(),
            backend: self.backend.take(),
            verify_on_open: self.verify_on_open,
            faults: self.faults.clone(),
            cache_entries_max: self.cache_entries_max,
            page_cache_bytes: self.page_cache_bytes,
        })?;
        // Every call from here on runs under `unpanic` (storage/guard.rs): a damaged page that
        // the open did not read must not take the process down when it is read later.
        let store: Arc<dyn Store> = Arc::new(Guarded(store));
        let effects = store.recover(self.clock.now_ms())?;
        let seed = self.seed.unwrap_or_else(|| {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        });
        tracing::info!(seed, path = ?self.path, "stent engine open");
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let inner = Arc::new(Inner {
            store: RwLock::new(Some(store.clone())),
            tx: Mutex::new(Some(tx)),
            registry: self.registry,
            clock: self.clock,
            ready: ready::ReadyQueue::default(),
            timers: Timers::default(),
            waiters: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            next_attempt: AtomicU64::new(1),
            idle: Mutex::new(Vec::new()),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            seed,
            payload_bytes_max: self.payload_bytes_max,
            poisoned: Mutex::new(None),
            shutdown: watch::Sender::new(false),
            writer_thread: Mutex::new(None),
            faults: self.faults,
            next_pool: AtomicU64::new(1),
            stats: Stats::default(),
            parked: parked::ParkedSet::new(self.parked_workflows_max),
            evict_after_ms: duration_ms(self.evict_after),
        });
        inner.apply_effects(effects);
        let batch_ops_max = self.batch_ops_max;
        let writer_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("stent-writer".into())
            .spawn(move || writer::run(writer_inner, store, rx, batch_ops_max))
            .map_err(|e| Error::Config(format!("cannot start the writer thread: {e}")))?;
        *lock(&inner.writer_thread) = Some(thread);
        runtime.spawn(inner.clone().drive_timers());
        if let Some(period) = self.retention {
            runtime.spawn(inner.clone().retain(period, inner.clock.now_ms()));
        }
        Ok(Engine { inner })
    }
}

/// A durable execution engine over one database file. Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("seed", &self.inner.seed).finish_non_exhaustive()
    }
}

/// A dispatch being prepared; `.await` it to commit.
#[must_use = "a dispatch does nothing until awaited"]
pub struct DispatchBuilder<'e, F: FunctionHandle> {
    engine: &'e Engine,
    function: F,
    input: Result<Vec<u8>>,
    delay: Option<DurationArg>,
    max_duration: Option<DurationArg>,
    queue: Option<String>,
    priority: Option<i32>,
    tags: Vec<String>,
    idempotency_key: Option<String>,
}

impl<F: FunctionHandle> DispatchBuilder<'_, F> {
    /// Start no earlier than this from now.
    pub fn delay(mut self, delay: impl Into<DurationArg>) -> Self {
        self.delay = Some(delay.into());
        self
    }

    /// The execution times out this long after it is due to start (dispatch time plus delay).
    pub fn max_duration(mut self, d: impl Into<DurationArg>) -> Self {
        self.max_duration = Some(d.into());
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// A second dispatch with the same key returns the first execution's id and creates
    /// nothing.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    async fn run(self) -> Result<ExecutionId> {
        let inner = &self.engine.inner;
        let function = inner.registry.require(self.function.name())?;
        let input = self.input?;
        self.engine.check_payload(&input)?;
        let delay_ms = self.delay.map(|d| d.get()).transpose()?.map_or(0, duration_ms);
        let max_duration_ms = self.max_duration.map(|d| d.get()).transpose()?.map(duration_ms);
        let queue = self.queue.unwrap_or_else(|| function.queue.clone());
        // An idle worker may take the task in the dispatch's own transaction.
        let reservation = if delay_ms == 0 { worker::reserve_idle(inner, function, &queue, &self.tags) } else { None };
        let new = NewExecution {
            function: function.name.to_string(),
            kind: function.handler.kind(),
            claim: reservation.as_ref().map(|r| EagerClaim {
                worker: r.worker.clone(),
                lease_ms: r.lease_ms,
                serial: r.serial,
            }),
            queue,
            priority: self.priority.unwrap_or(function.priority),
            tags: self.tags,
            input,
            delay_ms,
            max_duration_ms,
            idempotency_key: self.idempotency_key,
            retry: RetryRecord::from(&function.retry),
            timeout_ms: function.timeout.map(duration_ms),
            cache: function.cache.filter(|c| c.ttl_ms > 0),
        };
        let result = inner.submit(Op::Dispatch(new)).await;
        match result {
            Ok(OpOutput::Dispatched { execution_id, claimed, .. }) => {
                if let Some(r) = reservation {
                    r.finish(claimed);
                }
                Ok(ExecutionId(execution_id))
            }
            other => {
                if let Some(r) = reservation {
                    r.finish(None);
                }
                match other {
                    Ok(output) => Err(unexpected(output)),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

impl<'e, F: FunctionHandle> IntoFuture for DispatchBuilder<'e, F> {
    type Output = Result<ExecutionId>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<ExecutionId>> + Send + 'e>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

fn unexpected(output: OpOutput) -> Error {
    // The writer answers each op with its own output kind; anything else is a bug.
    debug_assert!(false, "unexpected op output {output:?}");
    Error::Config(format!("internal error: unexpected op output {output:?}"))
}

fn json_value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

impl Engine {
    pub fn builder() -> EngineBuilder {
        EngineBuilder {
            path: None,
            backend: None,
            registry: Registry::default(),
            last: None,
            errors: Vec::new(),
            clock: Arc::new(SystemClock),
            seed: None,
            verify_on_open: VerifyOnOpen::Live,
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            batch_ops_max: BATCH_OPS_MAX_DEFAULT,
            cache_entries_max: 10_000,
            page_cache_bytes: 64 * 1024 * 1024,
            evict_after: EVICT_AFTER_DEFAULT,
            parked_workflows_max: PARKED_WORKFLOWS_MAX_DEFAULT,
            retention: None,
            faults: Arc::new(Faults::default()),
        }
    }

    fn check_payload(&self, bytes: &[u8]) -> Result<()> {
        let len = bytes.len() as u64;
        if len > self.inner.payload_bytes_max {
            return Err(Error::PayloadTooLarge { bytes: len, limit: self.inner.payload_bytes_max });
        }
        Ok(())
    }

    /// Starts an execution of `function`; `.await` the returned builder.
    ///
    /// The handle's input type is checked at compile time:
    ///
    /// ```compile_fail
    /// # async fn demo(engine: stent::Engine) {
    /// const CHARGE: stent::Activity<u64, String> = stent::Activity::new("charge_card");
    /// engine.dispatch(CHARGE, &"forty-two").await; // a &str is not a u64
    /// # }
    /// ```
    pub fn dispatch<F: FunctionHandle>(&self, function: F, input: &F::Input) -> DispatchBuilder<'_, F> {
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: function.name().to_string(), reason: e.to_string() });
        DispatchBuilder {
            engine: self,
            function,
            input,
            delay: None,
            max_duration: None,
            queue: None,
            priority: None,
            tags: Vec::new(),
            idempotency_key: None,
        }
    }

    /// `dispatch` with a delay.
    pub fn schedule<F: FunctionHandle>(
        &self,
        function: F,
        input: &F::Input,
        delay: impl Into<DurationArg>,
    ) -> DispatchBuilder<'_, F> {
        self.dispatch(function, input).delay(delay)
    }

    fn load(&self, id: ExecutionId) -> Result<(ExecutionRecord, TaskRecord)> {
        self.inner.store()?.execution(id.0)?.ok_or(Error::UnknownExecution(id))
    }

    fn outcome<F: FunctionHandle>(&self, function: F, exec: &ExecutionRecord) -> Result<Option<F::Output>> {
        if exec.function != function.name() {
            return Err(Error::Payload {
                function: function.name().to_string(),
                reason: format!("execution {} runs {:?}, not {:?}", exec.id, exec.function, function.name()),
            });
        }
        let id = ExecutionId(exec.id);
        match exec.state {
            ExecutionState::Pending | ExecutionState::Running => Ok(None),
            ExecutionState::Completed => {
                let bytes = exec.output.as_deref().unwrap_or(b"null");
                serde_json::from_slice(bytes).map(Some).map_err(|e| Error::Payload {
                    function: exec.function.clone(),
                    reason: format!("result does not decode: {e}"),
                })
            }
            ExecutionState::Failed => Err(Error::ExecutionFailed {
                id,
                error: exec.error.clone().unwrap_or_else(|| ActivityError::permanent("failed")),
            }),
            ExecutionState::Cancelled => Err(Error::Cancelled(id)),
            ExecutionState::TimedOut => Err(Error::TimedOut(id)),
        }
    }

    /// The result if finished (`Ok(None)` while pending or running); the failure, cancellation
    /// or timeout as an error.
    pub fn result_of<F: FunctionHandle>(&self, function: F, id: ExecutionId) -> Result<Option<F::Output>> {
        let (exec, _) = self.load(id)?;
        self.outcome(function, &exec)
    }

    /// Waits until the execution finishes (woken by its commit, no polling) and returns its
    /// result, or `WaitTimeout` after `timeout` (measured on the engine's clock).
    pub async fn wait_for<F: FunctionHandle>(
        &self,
        function: F,
        id: ExecutionId,
        timeout: Option<Duration>,
    ) -> Result<F::Output> {
        let deadline = timeout.map(|t| self.inner.clock.now_ms().saturating_add(duration_ms(t)));
        loop {
            let (tx, rx) = oneshot::channel();
            lock(&self.inner.waiters).entry(id.0).or_default().push(tx);
            let (exec, _) = self.load(id)?;
            if let Some(output) = self.outcome(function, &exec)? {
                return Ok(output);
            }
            let sleep: Sleep = match deadline {
                Some(at) => self.inner.clock.sleep_until(at),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                woke = rx => if woke.is_err() { return Err(Error::Shutdown) },
                _ = sleep => {
                    let mut waiters = lock(&self.inner.waiters);
                    if let Some(list) = waiters.get_mut(&id.0) {
                        list.retain(|w| !w.is_closed());
                        if list.is_empty() {
                            waiters.remove(&id.0);
                        }
                    }
                    drop(waiters);
                    let (exec, _) = self.load(id)?;
                    return self.outcome(function, &exec)?.ok_or(Error::WaitTimeout(id));
                }
            }
        }
    }

    /// Everything known about an execution, with the progress of its last steps.
    pub fn state_of(&self, id: ExecutionId) -> Result<ExecutionInfo> {
        let (exec, task) = self.load(id)?;
        let store = self.inner.store()?;
        let journal = store.journal(id.0)?;
        let (counters, state) = store.context(id.0)?;
        let mut info = info(exec, &task);
        info.counters = counters.into_iter().collect();
        info.custom_state = state.into_iter().map(|(k, v)| (k, json_value(&v))).collect();
        info.steps = u32::try_from(journal.len()).unwrap_or(u32::MAX);
        let skip = journal.len().saturating_sub(crate::api::PROGRESS_LINES_MAX);
        info.progress = journal.iter().skip(skip).map(progress_line).collect();
        Ok(info)
    }

    /// Cancels a pending or running execution: its task is cancelled, its running future
    /// aborted, and nothing it does completes afterwards. Returns the state after the call
    /// (a terminal execution is left as it is).
    pub async fn cancel(&self, id: ExecutionId) -> Result<ExecutionState> {
        match self.inner.submit(Op::Cancel { execution_id: id.0 }).await? {
            OpOutput::State(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a signal to a running workflow execution: the oldest `wait_for_signal(name)`
    /// waiting gets it, or it is kept (in order) until one asks. An unknown or finished
    /// execution is an error.
    pub async fn send_signal<T: Serialize>(&self, id: ExecutionId, name: &str, payload: &T) -> Result<()> {
        let payload = serde_json::to_vec(payload)
            .map_err(|e| Error::Payload { function: format!("signal {name:?}"), reason: e.to_string() })?;
        self.check_payload(&payload)?;
        self.inner.submit(Op::Signal { execution_id: id.0, name: name.to_string(), payload }).await.map(|_| ())
    }

    /// Executions matching `filter`, newest first.
    pub fn list_executions(&self, filter: &ExecutionFilter, page: &Page) -> Result<Vec<ExecutionInfo>> {
        let store = self.inner.store()?;
        let records = store.list_executions(filter, page)?;
        let mut out = Vec::with_capacity(records.len());
        for exec in records {
            let Some((exec, task)) = store.execution(exec.id)? else {
                continue;
            };
            out.push(info(exec, &task));
        }
        Ok(out)
    }

    pub fn counts_by_state(&self) -> Result<Vec<(ExecutionState, u64)>> {
        Ok(self.inner.store()?.count_by_state()?)
    }

    /// Tasks due now and waiting for a worker in `queue`.
    pub fn queue_depth(&self, queue: &str) -> Result<u64> {
        Ok(self.inner.store()?.queue_depth(queue)?)
    }

    pub fn running_tasks(&self) -> Result<Vec<RunningTask>> {
        let tasks = self.inner.store()?.running_tasks()?;
        Ok(tasks
            .into_iter()
            .filter_map(|t| {
                let lease = t.lease?;
                Some(RunningTask {
                    task_id: t.id,
                    execution_id: ExecutionId(t.execution_id),
                    function: t.function,
                    worker: lease.worker,
                    attempt: lease.token,
                    lease_expires_ms: lease.expires_ms,
                })
            })
            .collect())
    }

    /// Dead letters, newest first.
    pub fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        Ok(self.inner.store()?.dead_letters(limit)?.into_iter().map(dead_letter).collect())
    }

    pub fn dead_letter(&self, id: u64) -> Result<DeadLetter> {
        self.inner.store()?.dead_letter(id)?.map(dead_letter).ok_or(Error::UnknownDeadLetter(id))
    }

    /// Re-opens the failed execution with a fresh retry budget and removes the dead letter.
    pub async fn replay_dead_letter(&self, id: u64) -> Result<ExecutionId> {
        self.replay(id, None).await
    }

    /// Like `replay_dead_letter`, with an operator-edited input.
    pub async fn replay_dead_letter_with_input<I: Serialize>(&self, id: u64, input: &I) -> Result<ExecutionId> {
        let letter = self.dead_letter(id)?;
        let bytes = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: letter.function.clone(), reason: e.to_string() })?;
        self.check_payload(&bytes)?;
        self.replay(id, Some(bytes)).await
    }

    /// Replays a failed workflow execution, running its failed call at `step` again with an
    /// operator-edited `input` (completed steps are kept and not redone).
    pub async fn replay_dead_letter_with_step_input<I: Serialize>(
        &self,
        id: u64,
        step: u32,
        input: &I,
    ) -> Result<ExecutionId> {
        let letter = self.dead_letter(id)?;
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: letter.function.clone(), reason: e.to_string() })?;
        self.check_payload(&input)?;
        match self.inner.submit(Op::ReplayDeadLetterStep { id, step, input }).await? {
            OpOutput::Replayed { execution_id } => Ok(ExecutionId(execution_id)),
            other => Err(unexpected(other)),
        }
    }

    async fn replay(&self, id: u64, input: Option<Vec<u8>>) -> Result<ExecutionId> {
        match self.inner.submit(Op::ReplayDeadLetter { id, input }).await? {
            OpOutput::Replayed { execution_id } => Ok(ExecutionId(execution_id)),
            other => Err(unexpected(other)),
        }
    }

    pub async fn discard_dead_letter(&self, id: u64) -> Result<()> {
        self.inner.submit(Op::DiscardDeadLetter { id }).await.map(|_| ())
    }

    /// Starts a pool of workers in this process.
    pub fn serve(&self, options: WorkerOptions) -> WorkerPool {
        worker::start(self.inner.clone(), options)
    }

    /// Verifies every record and index; returns the problems found (empty when consistent).
    pub fn check(&self) -> Result<Vec<String>> {
        Ok(self.inner.store()?.check()?)
    }

    /// Reads the application's own tables in the database file (those `Ctx::local` writes).
    pub fn read<R>(&self, f: impl FnOnce(&redb::ReadTransaction) -> R) -> Result<R> {
        let txn = self.inner.store()?.begin_read()?;
        Ok(f(&txn))
    }

    /// Whether nothing can happen without the clock moving or a signal arriving: no task
    /// ready, none running, no timer due.
    pub fn is_idle(&self) -> Result<bool> {
        let (ready, running, due) = self.inner.store()?.pending_work(self.inner.clock.now_ms())?;
        Ok(ready == 0 && running == 0 && due == 0)
    }

    /// Why the engine refuses writes, if a commit failed.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.inner.poisoned).clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Removes finished executions (completed, failed, timed out, cancelled) that ended more
    /// than `older_than` ago, each with all its records (tasks, journal, signals, counters,
    /// state; its idempotency key becomes free), dead letters from before then, and expired
    /// cache entries. Work goes on meanwhile: the removal is split into small transactions.
    /// redb reuses the freed pages for later writes; the file itself does not shrink.
    pub async fn cleanup(&self, older_than: impl Into<DurationArg>) -> Result<CleanupReport> {
        self.inner.cleanup(older_than.into().get()?).await
    }

    /// What [`Engine::cleanup`] would remove now, removing nothing (a dry run).
    pub fn cleanup_preview(&self, older_than: impl Into<DurationArg>) -> Result<CleanupReport> {
        let cutoff_ms = self.inner.cutoff_ms(older_than.into().get()?);
        Ok(self.inner.store()?.cleanup_preview(self.inner.clock.now_ms(), cutoff_ms)?)
    }

    /// Blocked workflow futures kept in memory now (see [`EngineBuilder::evict_after`]).
    pub fn parked_workflows(&self) -> usize {
        self.inner.parked.len()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// The seed of the jitter RNG (print it when a test fails to reproduce the run).
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    #[doc(hidden)]
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Stops everything now and releases the database file. Attempts still running are
    /// aborted and stay leased on disk, so the next open re-queues them (counting the
    /// attempt), exactly as after a crash. Drain worker pools first for a clean stop.
    pub async fn close(&self) -> Result<()> {
        self.inner.shutdown.send_replace(true);
        // `shutdown` is raised first; an attempt registering its future checks it under the
        // same lock, so no attempt can start user code after this point (a claim still queued
        // in the writer may commit, but its future is aborted before its first poll).
        for running in lock(&self.inner.running).values_mut() {
            running.aborted = true;
            if let Some(abort) = &running.abort {
                abort.abort();
            }
        }
        // Idle registrations hold their pools, parked futures their `Ctx` (and so the engine):
        // drop them with the engine.
        lock(&self.inner.idle).clear();
        drop(self.inner.parked.drain());
        drop(lock(&self.inner.tx).take());
        let thread = lock(&self.inner.writer_thread).take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|_| Error::Shutdown)?
                .map_err(|_| Error::Config("the writer thread panicked".into()))?;
        }
        self.inner.store.write().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }
}

fn info(exec: ExecutionRecord, task: &TaskRecord) -> ExecutionInfo {
    ExecutionInfo {
        id: ExecutionId(exec.id),
        function: exec.function,
        state: exec.state,
        queue: exec.queue,
        priority: exec.priority,
        tags: exec.tags,
        input: json_value(&task.input),
        output: exec.output.as_deref().map(json_value),
        error: exec.error,
        created_ms: exec.created_ms,
        scheduled_ms: exec.scheduled_ms,
        started_ms: exec.started_ms,
        finished_ms: exec.finished_ms,
        deadline_ms: exec.deadline_ms,
        attempts: task.attempt,
        history: task.history.clone(),
        idempotency_key: exec.idempotency_key,
        parent: exec.parent.map(|p| ExecutionId(p.execution_id)),
        counters: Default::default(),
        custom_state: Default::default(),
        steps: 0,
        progress: Vec::new(),
    }
}

fn progress_line(entry: &crate::storage::records::JournalEntry) -> String {
    use crate::storage::records::StepOutcome;
    let outcome = match &entry.outcome {
        StepOutcome::Scheduled { task_id } => format!("running (task {task_id})"),
        StepOutcome::AwaitingSignal { .. } => "waiting".to_string(),
        StepOutcome::Child { execution_id } => format!("running (execution {execution_id})"),
        StepOutcome::Completed { .. } => "completed".to_string(),
        StepOutcome::Failed { error } => format!("failed: {error}"),
    };
    format!("step {}: {} {outcome}", entry.step, entry.kind)
}

fn dead_letter(r: DeadLetterRecord) -> DeadLetter {
    DeadLetter {
        id: r.id,
        execution_id: ExecutionId(r.execution_id),
        task_id: r.task_id,
        function: r.function,
        queue: r.queue,
        input: json_value(&r.input),
        error: r.error,
        attempts: r.attempts,
        history: r.history,
        failed_ms: r.failed_ms,
    }
}
