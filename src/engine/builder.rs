//! `EngineBuilder`: where the file is, which functions run, limits and clocks; `open`.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::SeedableRng;
use tokio::sync::{mpsc, watch};

use super::clock::{Clock, SystemClock};
use super::ctx::Ctx;

use super::registry::{self, Bound, Function, Registry};
use super::timers::Timers;
use super::{
    ctx, lock, parked, ready, writer, Counters, Engine, Inner, BATCH_OPS_MAX_DEFAULT, COMMAND_QUEUE_MAX,
    EVICT_AFTER_DEFAULT, PARKED_WORKFLOWS_MAX_DEFAULT, PAYLOAD_BYTES_MAX_DEFAULT, RUNS_KEPT_DEFAULT,
};
use crate::api::{ActivityError, DurationArg, FunctionHandle, FunctionOptions, RetryPolicy, VerifyOnOpen};
use crate::error::{Error, Result};
use crate::storage::records::duration_ms;
use crate::storage::{Faults, Guarded, OpenOptions, RedbStore, StorageError, Store};

/// Builds an [`Engine`]: where its file is, which functions it runs, its clock.
pub struct EngineBuilder {
    path: Option<PathBuf>,
    backend: Option<Box<dyn redb::StorageBackend>>,
    registry: Registry,
    errors: Vec<String>,
    clock: Arc<dyn Clock>,
    seed: Option<u64>,
    verify_on_open: VerifyOnOpen,
    payload_bytes_max: u64,
    runs_kept: u32,
    /// Schedules declared in code, written as the engine opens (`schedule`).
    schedules: Vec<crate::api::Schedule>,
    batch_ops_max: usize,
    cache_entries_max: u64,
    page_cache_bytes: usize,
    evict_after: Duration,
    parked_workflows_max: usize,
    retention: Option<Duration>,
    unserved_warn_after: Duration,
    init_empty_file: bool,
    read_only: bool,
    file_mode: u32,
    control_socket: bool,
    fire_schedules: bool,
    wait_for_file: Duration,
    faults: Arc<Faults>,
}

impl EngineBuilder {
    /// The database file: opened if it is a stent database, created if missing. An existing
    /// empty file is refused ([`StorageError::EmptyFile`](crate::storage::StorageError)) unless
    /// [`init_empty_file`](Self::init_empty_file) allows it; a file of another kind is
    /// refused and left untouched.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// How long ready work may wait with no pool of this process able to take it (queue not
    /// served, no pool with one of its tags, function not registered) before a warning is
    /// logged; default 60 s, on the engine's clock. Zero turns the warning off;
    /// [`Engine::unserved_work`] counts such work either way.
    pub fn unserved_warn_after(mut self, after: impl Into<DurationArg>) -> Self {
        match after.into().get() {
            Ok(d) => self.unserved_warn_after = d,
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

    /// Lets an existing file of zero bytes become a new database (a file made by
    /// `tempfile::NamedTempFile`, say). Off by default: an empty file is also what a
    /// truncation or a failed copy leaves, and opening it as new would hide that the data is
    /// gone.
    pub fn init_empty_file(mut self, allow: bool) -> Self {
        self.init_empty_file = allow;
        self
    }

    /// Keep everything in memory (tests). Nothing survives the engine.
    /// Opens the file without ever writing it: no recovery, no migration, no workers; every
    /// read works and every change is refused with [`Error::ReadOnly`]. For looking at the
    /// file of a stopped application as it was left (the `stent` CLI reads this way). The
    /// file must exist; a process that opens it for writing meanwhile is told it is in use.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Permissions of the database file when the open creates it (Unix). The default, 0o600,
    /// lets only its owner read it: it holds every input and result. Files stent writes beside
    /// it (exports) are owner-only whatever this says.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }

    /// Whether the engine serves the control socket beside its file (`FILE.sock`, owner-only),
    /// by which the `stent` CLI reads and changes a database while this engine holds it.
    /// On by default for a file on disk; a read-only open never serves one. If the socket
    /// cannot be made (a path longer than the 107 bytes a Unix socket allows, a read-only
    /// directory), the engine runs without it and logs a warning.
    pub fn control_socket(mut self, serve: bool) -> Self {
        self.control_socket = serve;
        self
    }

    /// Whether this engine fires the file's schedules when they are due (default on). A tool
    /// that opens the file for a moment (the `stent` CLI) turns it off, so that opening it
    /// never starts the fires an application's engine would; `Schedules::trigger` still
    /// fires one when asked.
    pub fn fire_schedules(mut self, fire: bool) -> Self {
        self.fire_schedules = fire;
        self
    }

    /// How long the open waits when another process holds the file's lock, before it gives
    /// up with [`Error::InUseBy`]; default 2 s. A `stent` CLI read (`stats`, `list`, each
    /// refresh of `watch`) holds the lock for milliseconds, and an application starting at
    /// that instant should wait for it rather than fail. Another engine holds the lock for
    /// its whole life, so the wait ends in the same error, later. Zero fails at once (the CLI
    /// opens this way, then turns to the holder's control socket).
    pub fn wait_for_file(mut self, wait: impl Into<DurationArg>) -> Self {
        match wait.into().get() {
            Ok(d) => self.wait_for_file = d,
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }

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

    /// Past runs kept per execution that continues as new (default 10): the latest ones, with
    /// their journals, for `Engine::runs` and `Engine::run_steps`; an older run is removed when
    /// a newer one starts, and all of them with the execution. `0` keeps none.
    pub fn runs_kept(mut self, runs: u32) -> Self {
        self.runs_kept = runs;
        self
    }

    /// A schedule declared in code: created, or its definition updated, as the engine opens,
    /// before recovery sets any timer, so a changed policy (its catch-up after downtime, say)
    /// already decides the fires that came due while the engine was closed. Its cursor, counts
    /// and pause are kept across opens. A schedule no longer declared is left as it is (see
    /// `Schedules::delete`).
    pub fn schedule(mut self, schedule: crate::api::Schedule) -> Self {
        self.schedules.push(schedule);
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

    /// Registers an activity, `async fn(Input) -> Result<Output, ActivityError>`, with the
    /// default [`FunctionOptions`].
    pub fn activity<H, F, Fut>(self, handle: H, f: F) -> Self
    where
        H: FunctionHandle,
        F: Fn(H::Input) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<H::Output, ActivityError>> + Send + 'static,
    {
        self.activity_with(handle, f, FunctionOptions::default())
    }

    /// Registers an activity with its options (retry, concurrency limit, queue, priority,
    /// attempt timeout, caching).
    pub fn activity_with<H, F, Fut>(mut self, handle: H, f: F, options: FunctionOptions) -> Self
    where
        H: FunctionHandle,
        F: Fn(H::Input) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<H::Output, ActivityError>> + Send + 'static,
    {
        let handler = registry::handler(handle, Bound::<H, F>::new(f));
        self.register(handle.name(), handler, RetryPolicy::default(), options, registry::input_check::<H::Input>);
        self
    }

    /// Registers a workflow, `async fn(Ctx, Input) -> stent::Result<Output>`, with the default
    /// [`FunctionOptions`]. It must be deterministic in the durable operations it performs,
    /// and await only `Ctx` operations. A workflow's own error fails its execution (into the
    /// dead-letter queue) at once; an attempt lost to a crash or an expired lease is retried
    /// up to 3 times in a row.
    pub fn workflow<H, F, Fut>(self, handle: H, f: F) -> Self
    where
        H: FunctionHandle,
        F: Fn(Ctx, H::Input) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<H::Output>> + Send + 'static,
    {
        self.workflow_with(handle, f, FunctionOptions::default())
    }

    /// Registers a workflow with its options.
    pub fn workflow_with<H, F, Fut>(mut self, handle: H, f: F, options: FunctionOptions) -> Self
    where
        H: FunctionHandle,
        F: Fn(Ctx, H::Input) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<H::Output>> + Send + 'static,
    {
        // Errors a workflow returns are permanent (re-running it gives the same answer); the
        // attempts guard against an attempt that keeps dying with its process.
        let retry = RetryPolicy::exponential(3, Duration::from_secs(1));
        let handler = registry::workflow_handler(handle, f);
        self.register(handle.name(), handler, retry, options, registry::input_check::<H::Input>);
        self
    }

    fn register(
        &mut self,
        name: &'static str,
        handler: registry::Handler,
        retry: RetryPolicy,
        o: FunctionOptions,
        input_check: registry::InputCheck,
    ) {
        if name.starts_with("stent.") {
            self.errors.push(format!("function name {name:?}: names starting with \"stent.\" are reserved"));
            return;
        }
        let mut function = Function::new(name, handler, o.retry.unwrap_or(retry));
        function.limiter = crate::lease::Limiter::new(o.max_concurrent);
        function.input_check = input_check;
        if let Some(queue) = o.queue {
            function.queue = queue;
        }
        function.priority = o.priority;
        function.version = o.version.unwrap_or(1);
        let mut durations = |what: &str, d: Option<DurationArg>| match d.map(|d| d.get()).transpose() {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(format!("{name}: {what}: {e}"));
                None
            }
        };
        function.timeout = durations("timeout", o.timeout);
        function.cancel_grace = durations("cancel_grace", o.cancel_grace);
        let ttl = durations("cached", o.cached);
        function.cache = match (ttl, o.version) {
            (None, None) => None,
            (ttl, version) => Some(crate::storage::records::CachePolicy {
                version: version.unwrap_or(1),
                ttl_ms: ttl.map_or(0, duration_ms),
            }),
        };
        let mut rate = |what: &str, limit: Option<(u32, DurationArg)>| {
            let (per, period) = limit?;
            match period.get() {
                Ok(period) if per > 0 && !period.is_zero() => {
                    Some(crate::storage::Rate { per, period_ms: duration_ms(period) })
                }
                Ok(_) => {
                    self.errors.push(format!("{name}: {what}: needs at least one start in a period over zero"));
                    None
                }
                Err(e) => {
                    self.errors.push(format!("{name}: {what}: {e}"));
                    None
                }
            }
        };
        let (rate, key_rate) = (rate("rate_limit", o.rate_limit), rate("rate_limit_per_key", o.rate_limit_per_key));
        function.limits = crate::storage::ClaimLimits { rate, key_rate, key_max: o.max_concurrent_per_key };
        if let Err(e) = self.registry.insert(function) {
            self.errors.push(e.to_string());
        }
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

    /// Opens (or creates) the database, re-queues work left running by a previous process,
    /// and starts the writer and timers. Must be called inside a tokio runtime.
    /// Opens the store, waiting up to `wait_for_file` while another process holds the file.
    fn open_store(&mut self) -> Result<RedbStore> {
        let deadline = std::time::Instant::now() + self.wait_for_file;
        let mut gone_retried = false;
        loop {
            let opened = RedbStore::open(OpenOptions {
                path: self.path.clone(),
                backend: self.backend.take(),
                verify_on_open: self.verify_on_open,
                faults: self.faults.clone(),
                cache_entries_max: self.cache_entries_max,
                page_cache_bytes: self.page_cache_bytes,
                init_empty_file: self.init_empty_file,
                read_only: self.read_only,
                file_mode: self.file_mode,
            });
            let (Some(StorageError::InUse), Some(path)) = (opened.as_ref().err(), &self.path) else {
                return opened.map_err(Error::Storage);
            };
            // Only a holder in another process can let go while this one waits: an engine of
            // this process keeps the file until it closes. No holder in `/proc/locks` is that,
            // or a holder that let go since the open was refused: one more try tells which.
            let Some(pid) = super::holder::holder_pid(path) else {
                if gone_retried {
                    return Err(Error::Storage(StorageError::InUse));
                }
                gone_retried = true;
                continue;
            };
            gone_retried = false;
            if std::time::Instant::now() >= deadline {
                return Err(Error::InUseBy { path: path.display().to_string(), pid });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn open(mut self) -> Result<Engine> {
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
        if !has_driver(&runtime, || drop(tokio::time::sleep(Duration::ZERO))) {
            return Err(Error::Config(
                "the tokio runtime has no timers: build it with enable_time() or enable_all()".into(),
            ));
        }
        let store = self.open_store()?;
        // Every call from here on runs under `unpanic` (storage/guard.rs): a damaged page that
        // the open did not read must not take the process down when it is read later.
        let store: Arc<dyn Store> = Arc::new(Guarded(store));
        if !self.read_only && !self.schedules.is_empty() {
            self.declare_schedules(store.as_ref())?;
        }
        let effects = if self.read_only { Vec::new() } else { store.recover(self.clock.now_ms())? };
        let seed = self.seed.unwrap_or_else(|| {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        });
        tracing::info!(seed, path = ?self.path, read_only = self.read_only, "stent engine open");
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_MAX);
        let inner = Arc::new(Inner {
            store: RwLock::new(Some(store.clone())),
            tx: Mutex::new(Some(tx)),
            registry: self.registry,
            clock: self.clock,
            ready: ready::ReadyQueue::default(),
            timers: Timers::default(),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(0),
            key_waiting: Mutex::new(HashMap::new()),
            key_woken: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            update_waiters: Mutex::new(HashMap::new()),
            next_attempt: AtomicU64::new(1),
            idle: Mutex::new(Vec::new()),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            seed,
            payload_bytes_max: self.payload_bytes_max,
            runs_kept: self.runs_kept,
            poisoned: Mutex::new(None),
            shutdown: watch::Sender::new(false),
            writer_thread: Mutex::new(None),
            faults: self.faults,
            next_pool: AtomicU64::new(1),
            pools: Mutex::new(Vec::new()),
            unserved_warn_after_ms: duration_ms(self.unserved_warn_after),
            unserved_check_armed: std::sync::atomic::AtomicBool::new(false),
            stats: Counters::default(),
            parked: parked::ParkedSet::new(self.parked_workflows_max),
            spans: Default::default(),
            trace_seed: store.trace_seed(),
            evict_after_ms: duration_ms(self.evict_after),
            read_only: self.read_only,
            fire_schedules: self.fire_schedules,
            #[cfg(all(unix, not(loom)))]
            control_socket: Mutex::new(None),
        });
        let engine = Engine { inner: inner.clone() };
        if self.read_only {
            // Nothing may change: no writer, no timers, no retention.
            drop(lock(&inner.tx).take());
            drop(rx);
            return Ok(engine);
        }
        inner.apply_effects(effects);
        let batch_ops_max = self.batch_ops_max;
        let writer_inner = inner.clone();
        let thread = std::thread::Builder::new()
            .name("stent-writer".into())
            .spawn(move || writer::run(writer_inner, store, rx, batch_ops_max))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        *lock(&inner.writer_thread) = Some(thread);
        runtime.spawn(inner.clone().drive_timers());
        if let Some(period) = self.retention {
            runtime.spawn(inner.clone().retain(period, inner.clock.now_ms()));
        }
        #[cfg(all(unix, not(loom)))]
        if let (true, Some(path)) = (self.control_socket, &self.path) {
            let io = has_driver(&runtime, || {
                let (a, _b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
                a.set_nonblocking(true).expect("nonblocking");
                drop(tokio::net::UnixStream::from_std(a));
            });
            let started = if io {
                super::control_socket::ControlSocket::start(engine.clone(), path, &runtime)
            } else {
                Err(std::io::Error::other("the tokio runtime has no I/O driver (enable_io() or enable_all())"))
            };
            match started {
                Ok(socket) => *lock(&inner.control_socket) = Some(socket),
                Err(e) => tracing::warn!(
                    error = %e,
                    socket = %super::control_socket::socket_path(path).display(),
                    "no control socket: the stent CLI cannot reach this engine while it runs"
                ),
            }
        }
        Ok(engine)
    }
}

impl EngineBuilder {
    /// Writes the declared schedules in one transaction, before the writer starts; the timers
    /// they need come from the recovery scan that follows.
    fn declare_schedules(&mut self, store: &dyn Store) -> Result<()> {
        let mut ops = Vec::with_capacity(self.schedules.len());
        for schedule in std::mem::take(&mut self.schedules) {
            ops.push(crate::storage::Op::PutSchedule(super::schedules::draft(
                &self.registry,
                self.payload_bytes_max,
                schedule,
            )?));
        }
        let (results, _effects) = store.apply_batch(self.clock.now_ms(), ops)?;
        for result in results {
            result?;
        }
        Ok(())
    }
}

/// Whether `probe`, which needs one of the runtime's drivers (timers, I/O), runs on `runtime`
/// without tokio's panic for a missing driver; tokio has no way to ask that does not panic.
fn has_driver(runtime: &tokio::runtime::Handle, probe: impl FnOnce()) -> bool {
    let _entered = runtime.enter();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe)).is_ok()
}

impl EngineBuilder {
    pub(super) fn new() -> Self {
        EngineBuilder {
            path: None,
            backend: None,
            registry: Registry::default(),
            errors: Vec::new(),
            clock: Arc::new(SystemClock),
            seed: None,
            verify_on_open: VerifyOnOpen::Live,
            payload_bytes_max: PAYLOAD_BYTES_MAX_DEFAULT,
            runs_kept: RUNS_KEPT_DEFAULT,
            schedules: Vec::new(),
            batch_ops_max: BATCH_OPS_MAX_DEFAULT,
            cache_entries_max: 10_000,
            page_cache_bytes: 64 * 1024 * 1024,
            evict_after: EVICT_AFTER_DEFAULT,
            parked_workflows_max: PARKED_WORKFLOWS_MAX_DEFAULT,
            retention: None,
            unserved_warn_after: Duration::from_secs(60),
            init_empty_file: false,
            read_only: false,
            file_mode: crate::storage::FILE_MODE_DEFAULT,
            control_socket: true,
            fire_schedules: true,
            wait_for_file: Duration::from_secs(2),
            faults: Arc::new(Faults::default()),
        }
    }
}
