//! Power loss at every sync point: whatever survives a power cut at any `sync_data` of a
//! representative workload, the file opens, `check()` finds nothing, nothing an operation
//! acknowledged is lost, no activity whose completion was durable runs again, and finishing
//! the workload on the recovered file gives every execution the outcome it would have had
//! without the crash. Running out of space at any point poisons the engine with a clear error
//! and never damages the file.
//!
//! Method: `support::power_loss_disk::PowerLossDisk` (its fault model is written at its top).
//! The workload is 50 executions on a `ManualClock`: 20 workflows of three activities with a
//! one-hour sleep and a signal between them, 3 more that are cancelled while they sleep, 3
//! delayed activities cancelled before they are due, 6 activities that fail once and succeed
//! on their retry, 6 that fail permanently into the DLQ, 6 executions of a cached function
//! (two inputs, three each), and 6 workflows whose first step is a `ctx.local` write to an
//! application table. The driver is re-entrant: every dispatch has an idempotency key (a
//! re-dispatch after reopen returns the same execution), a signal is sent only to a workflow
//! whose journal shows it waiting for it, cancels are idempotent, and time only moves forward.
//!
//! 1. A reference run without faults checks the expected outcomes (every activity ran once,
//!    the flaky ones twice, the cached one once per input) and counts the sync points (every
//!    `sync_data`, from creating the file to closing it) and the storage operations. It prints
//!    how often redb grew and shrank the file (typically 3 and 1 or 2: shrinks depend on
//!    batching, so they are reported, not asserted); lost length changes are among the faults.
//! 2. For a sync point N and each of the four images (durable only; plus a random prefix of
//!    the unsynced writes; plus a random subset; plus a subset with its last write torn),
//!    generation 0 runs the driver until power is lost at sync N. The disk then fails every
//!    write, so the engine is poisoned and no operation can return `Ok` for a commit that was
//!    not synced. The driver records what operations returned and, whenever the engine is
//!    idle, what it reads back (activity completions, finished executions, dead letters).
//!    Generation 1 opens a new engine on the surviving bytes, and before anything runs checks:
//!    the file opens, `check()` is clean, every acknowledged dispatch, cancel and signal and
//!    every outcome seen is there (`losses`). It then runs the driver again to the end and
//!    checks every execution's outcome, the application table, that a re-dispatch returns the
//!    execution the first dispatch did and none was created twice, that no activity the
//!    recovered file records completed ran again (`reruns`), `check()` again, and that no
//!    thread panicked.
//! 3. For a sample of operation counts N, the disk fails writes with ENOSPC after N
//!    operations: the engine must be poisoned with an error naming the cause ("No space left
//!    on device"), refuse the next dispatch, and not panic; reopened on the same bytes with
//!    the fault gone, the checks of 2 hold.
//!
//! Coverage: the reference run has 140 to 210 sync points (the count varies between runs with
//! group-commit batching; a point past the end of a shorter run loses power after close).
//! The first two are redb creating the file, where a power cut used to leave a file that never
//! opened again: those are covered by
//! `a_power_loss_or_full_disk_while_the_file_is_created_leaves_a_file_that_opens`, and the
//! sweeps start at sync 3. By default each image kind is swept over 14 points spread evenly
//! from sync 3 to the last, both ends included, the interior points shifted per kind so that
//! the four kinds together visit about 50 distinct points (56 cases); the ENOSPC sweep takes
//! 12 operation counts from the end of file creation to the end of the workload.
//! `STENT_SLOW=1` sweeps every sync point from 3 to the last with every image kind (about 600
//! cases) and 60 operation counts. `STENT_POWER_SEED=<u64>` changes the seed of the random
//! images (each case's seed is derived from it, the point and the kind, and is printed with
//! every failure); `STENT_POWER_POINT=<n>` runs only sync point n, to reproduce one case.
//! `the_checks_notice_a_lost_commit` shows that `losses` reports a commit the disk lost.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{ReadableTable, TableDefinition};
use stent::testing::ManualClock;
use stent::{
    Activity, ActivityError, Ctx, Engine, Error, ExecutionFilter, ExecutionId, ExecutionState, Page, RetryPolicy,
    WorkerOptions, Workflow,
};
use support::power_loss_disk::{Image, PowerLossDisk};
use support::settle;

const ORDER: Workflow<u32, String> = Workflow::new("order");
const RESERVE: Workflow<u32, String> = Workflow::new("reserve");
const STEP: Activity<String, String> = Activity::new("step");
const FLAKY: Activity<u32, u32> = Activity::new("flaky");
const REJECT: Activity<u32, u32> = Activity::new("reject");
const RATE: Activity<String, u64> = Activity::new("rate");
/// The application's own table that `RESERVE` writes in its local step: times reserved, by
/// workflow input.
const RESERVATIONS: TableDefinition<u32, u64> = TableDefinition::new("app_reservations");

const EXECUTIONS: usize = 50;
const DEFAULT_POINTS_PER_IMAGE: usize = 14;
const DEFAULT_ENOSPC_POINTS: usize = 12;
const SLOW_ENOSPC_POINTS: usize = 60;
const DEFAULT_SEED: u64 = 0x5EED_D15C;

// ---------------------------------------------------------------------------------------------
// The workload

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Three activities, a one-hour sleep after the first and a signal before the second.
    Order(u32),
    /// An `Order` cancelled while it sleeps.
    CancelledOrder(u32),
    /// A `step` activity delayed 30 days, cancelled before it is due.
    CancelledDelayed(u32),
    /// Fails its first attempt (retryable), succeeds on the retry.
    Flaky(u32),
    /// Fails permanently: into the DLQ.
    Reject(u32),
    /// The cached `rate` function; the first of each input runs it, the others (dispatched once
    /// the first is done) are served from the cache.
    Cached(&'static str, u32),
    /// A local step writing `RESERVATIONS`, then an activity.
    Reserve(u32),
}

impl Kind {
    fn key(self) -> String {
        format!("{self:?}")
    }

    /// Dispatched in the second phase, after the first wave is idle.
    fn second_wave(self) -> bool {
        matches!(self, Kind::Cached(_, n) if n > 0)
    }
}

fn workload() -> Vec<Kind> {
    let mut all = Vec::new();
    all.extend((0..20).map(Kind::Order));
    all.extend((100..103).map(Kind::CancelledOrder));
    all.extend((0..3).map(Kind::CancelledDelayed));
    all.extend((0..6).map(Kind::Flaky));
    all.extend((0..6).map(Kind::Reject));
    for pair in ["EURUSD", "GBPUSD"] {
        all.extend((0..3).map(|n| Kind::Cached(pair, n)));
    }
    all.extend((0..6).map(Kind::Reserve));
    assert_eq!(all.len(), EXECUTIONS);
    all
}

fn signal_payload(i: u32) -> String {
    format!("go-{i}")
}

#[derive(Debug, PartialEq)]
enum Expect {
    Completed(serde_json::Value),
    /// Failed into the DLQ with this error code.
    DeadLetter(&'static str),
    Cancelled,
}

fn expected(kind: Kind) -> Expect {
    use serde_json::json;
    match kind {
        Kind::Order(i) => {
            Expect::Completed(json!(format!("did order-{i}-a+{}+did order-{i}-b+did order-{i}-c", signal_payload(i))))
        }
        Kind::CancelledOrder(_) | Kind::CancelledDelayed(_) => Expect::Cancelled,
        Kind::Flaky(i) => Expect::Completed(json!(i * 2)),
        Kind::Reject(_) => Expect::DeadLetter("rejected"),
        Kind::Cached(pair, _) => Expect::Completed(json!(pair.len() as u64 * 1000)),
        Kind::Reserve(i) => Expect::Completed(json!(format!("did reserve-{i}-notify"))),
    }
}

/// Invocations of each activity by its key (function and input, unique per (execution,
/// step)), each noted with the generation of the engine that ran it.
#[derive(Debug, Clone, Default)]
struct Ledger(Arc<Mutex<BTreeMap<String, Vec<u32>>>>);

impl Ledger {
    /// Records an invocation; returns how many there have been for `key`, this one included.
    fn record(&self, key: String, generation: u32) -> usize {
        let mut runs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let list = runs.entry(key).or_default();
        list.push(generation);
        list.len()
    }

    fn runs(&self) -> BTreeMap<String, Vec<u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn open(disk: &PowerLossDisk, clock: &ManualClock, ledger: &Ledger, generation: u32) -> stent::Result<Engine> {
    let (l1, l2, l3, l4) = (ledger.clone(), ledger.clone(), ledger.clone(), ledger.clone());
    Engine::builder()
        .backend(disk.clone())
        .clock(clock.clone())
        .seed(7)
        .workflow(ORDER, |ctx: Ctx, i: u32| async move {
            let a = ctx.call(STEP, &format!("order-{i}-a")).await?;
            ctx.sleep("1h").await?;
            let go: String = ctx.wait_for_signal("go").await?;
            let b = ctx.call(STEP, &format!("order-{i}-b")).await?;
            let c = ctx.call(STEP, &format!("order-{i}-c")).await?;
            Ok(format!("{a}+{go}+{b}+{c}"))
        })
        .workflow(RESERVE, |ctx: Ctx, i: u32| async move {
            ctx.local("reserve", move |txn| reserve(txn, i)).await?;
            ctx.call(STEP, &format!("reserve-{i}-notify")).await
        })
        .activity(STEP, move |input: String| {
            l1.record(format!("step:{input}"), generation);
            async move { Ok::<_, ActivityError>(format!("did {input}")) }
        })
        .activity_with(
            FLAKY,
            move |i: u32| {
                let n = l2.record(format!("flaky:{i}"), generation);
                async move {
                    if n == 1 {
                        return Err(ActivityError::retryable(format!("flaky {i} fails its first attempt")));
                    }
                    Ok(i * 2)
                }
            },
            stent::FunctionOptions::new().retry(RetryPolicy::exponential(3, Duration::from_secs(1))),
        )
        .activity(REJECT, move |i: u32| {
            l3.record(format!("reject:{i}"), generation);
            async move { Err::<u32, _>(ActivityError::permanent(format!("reject {i}")).with_code("rejected")) }
        })
        .activity_with(
            RATE,
            move |pair: String| {
                l4.record(format!("rate:{pair}"), generation);
                async move { Ok::<_, ActivityError>(pair.len() as u64 * 1000) }
            },
            stent::FunctionOptions::new().cached("30d"),
        )
        .open()
}

fn reserve(txn: &redb::WriteTransaction, i: u32) -> Result<u64, ActivityError> {
    let fail = |e: &dyn std::fmt::Display| ActivityError::permanent(e.to_string());
    let mut table = txn.open_table(RESERVATIONS).map_err(|e| fail(&e))?;
    let times = table.get(i).map_err(|e| fail(&e))?.map_or(0, |v| v.value()) + 1;
    table.insert(i, times).map_err(|e| fail(&e))?;
    Ok(times)
}

fn worker_options() -> WorkerOptions {
    WorkerOptions {
        worker_id: "w".to_string(),
        max_concurrency: 4,
        lease_duration: Duration::from_secs(10),
        heartbeat_interval: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerOptions::default()
    }
}

/// What one generation was told was committed: the results of operations that returned `Ok`,
/// and outcomes it read back. All of it must survive any crash after it was learnt.
#[derive(Debug, Default, Clone)]
struct Facts {
    dispatched: BTreeMap<String, ExecutionId>,
    cancelled: BTreeSet<ExecutionId>,
    signalled: BTreeSet<ExecutionId>,
    finished: BTreeMap<ExecutionId, ExecutionState>,
    dead_letters: BTreeSet<ExecutionId>,
    /// Activities read back as completed (ledger keys) whenever the engine was idle.
    completed: BTreeSet<String>,
}

/// Why the driver stopped early (the disk failed under it, or something was wrong).
type Stop = String;

async fn dispatch(engine: &Engine, kind: Kind) -> stent::Result<ExecutionId> {
    let key = kind.key();
    match kind {
        Kind::Order(i) | Kind::CancelledOrder(i) => engine.dispatch(ORDER, &i).idempotency_key(key).await,
        Kind::CancelledDelayed(i) => {
            engine.dispatch(STEP, &format!("late-{i}")).delay("30d").idempotency_key(key).await
        }
        Kind::Flaky(i) => engine.dispatch(FLAKY, &i).idempotency_key(key).await,
        Kind::Reject(i) => engine.dispatch(REJECT, &i).idempotency_key(key).await,
        Kind::Cached(pair, _) => engine.dispatch(RATE, &pair.to_string()).idempotency_key(key).await,
        Kind::Reserve(i) => engine.dispatch(RESERVE, &i).idempotency_key(key).await,
    }
}

fn waits_for_signal(engine: &Engine, id: ExecutionId) -> stent::Result<bool> {
    let info = engine.state_of(id)?;
    Ok(info.state == ExecutionState::Running
        && info.progress.iter().any(|line| line.contains("wait for signal \"go\"") && line.ends_with(" waiting")))
}

/// Reads back what the engine says is done: activity completions, finished executions and
/// dead letters. What a user saw is as good as what an operation returned: it must survive.
fn observe(engine: &Engine, facts: &mut Facts) -> Result<(), Stop> {
    let e = |e: Error| e.to_string();
    facts.completed.extend(completed_activities(engine).map_err(e)?);
    let page = Page { limit: 1000, before: None };
    for info in engine.list_executions(&ExecutionFilter::default(), &page).map_err(e)? {
        if info.state.is_terminal() {
            facts.finished.insert(info.id, info.state);
        }
    }
    for letter in engine.dead_letters(1000).map_err(e)? {
        facts.dead_letters.insert(letter.execution_id);
    }
    Ok(())
}

/// Runs the workload to its end from wherever the file stands. Re-entrant: run it again on a
/// recovered file and it finishes what is left without repeating what is done.
async fn drive(engine: &Engine, clock: &ManualClock, facts: &mut Facts) -> Result<(), Stop> {
    let all = workload();
    let e = |e: Error| e.to_string();
    for &kind in all.iter().filter(|k| !k.second_wave()) {
        let id = dispatch(engine, kind).await.map_err(e)?;
        facts.dispatched.insert(kind.key(), id);
    }
    settle(engine).await?;
    observe(engine, facts)?;

    for &kind in &all {
        if matches!(kind, Kind::CancelledOrder(_) | Kind::CancelledDelayed(_)) {
            let id = facts.dispatched[&kind.key()];
            let state = engine.cancel(id).await.map_err(e)?;
            if state != ExecutionState::Cancelled {
                return Err(format!("cancel of {kind:?} ({id}) left it {state}"));
            }
            facts.cancelled.insert(id);
        }
    }
    for &kind in all.iter().filter(|k| k.second_wave()) {
        let id = dispatch(engine, kind).await.map_err(e)?;
        facts.dispatched.insert(kind.key(), id);
    }
    settle(engine).await?;
    observe(engine, facts)?;

    clock.advance(Duration::from_secs(3600)); // The orders' sleeps end; the retries are due.
    settle(engine).await?;
    observe(engine, facts)?;

    for &kind in &all {
        if let Kind::Order(i) = kind {
            let id = facts.dispatched[&kind.key()];
            if waits_for_signal(engine, id).map_err(e)? {
                engine.send_signal(id, "go", &signal_payload(i)).await.map_err(e)?;
                facts.signalled.insert(id);
            }
        }
    }
    settle(engine).await?;
    observe(engine, facts)?;

    clock.advance(Duration::from_secs(3600)); // Anything still backing off.
    settle(engine).await?;
    observe(engine, facts)?;

    for &kind in &all {
        let id = facts.dispatched[&kind.key()];
        let state = engine.state_of(id).map_err(e)?.state;
        if !state.is_terminal() {
            return Err(format!("{kind:?} ({id}) is still {state} at the end of the workload"));
        }
        facts.finished.insert(id, state);
    }
    if let Some(reason) = engine.poisoned() {
        return Err(format!("poisoned: {reason}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The checks

/// What the recovered file lost of what generation 0 was told: one line per loss.
fn losses(engine: &Engine, facts: &Facts) -> Vec<String> {
    let mut lost = Vec::new();
    let state = |id: ExecutionId| engine.state_of(id);
    for (key, &id) in &facts.dispatched {
        if let Err(err) = state(id) {
            lost.push(format!("dispatch {key} returned {id}, but the execution is gone: {err}"));
        }
    }
    for &id in &facts.cancelled {
        match state(id) {
            Ok(info) if info.state == ExecutionState::Cancelled => {}
            Ok(info) => lost.push(format!("cancel of {id} returned Ok(Cancelled), but it is {}", info.state)),
            Err(err) => lost.push(format!("cancel of {id} returned Ok, but the execution is gone: {err}")),
        }
    }
    for &id in &facts.signalled {
        match state(id) {
            Ok(info)
                if info.state.is_terminal()
                    || info.progress.iter().any(|l| l.contains("wait for signal") && l.ends_with(" completed")) => {}
            Ok(info) => lost.push(format!("signal to {id} returned Ok, but it was not delivered: {:?}", info.progress)),
            Err(err) => lost.push(format!("signal to {id} returned Ok, but the execution is gone: {err}")),
        }
    }
    for (&id, &was) in &facts.finished {
        match state(id) {
            Ok(info) if info.state == was => {}
            Ok(info) => lost.push(format!("execution {id} was seen {was}, but after the crash it is {}", info.state)),
            Err(err) => lost.push(format!("execution {id} was seen {was}, but it is gone: {err}")),
        }
    }
    match engine.dead_letters(1000) {
        Ok(letters) => {
            let present: BTreeSet<ExecutionId> = letters.iter().map(|l| l.execution_id).collect();
            for id in facts.dead_letters.difference(&present) {
                lost.push(format!("execution {id} was seen in the DLQ, but its dead letter is gone"));
            }
        }
        Err(err) => lost.push(format!("dead letters unreadable: {err}")),
    }
    match completed_activities(engine) {
        Ok(done) => {
            for key in facts.completed.difference(&done) {
                lost.push(format!("activity {key} was seen completed, but after the crash it is not"));
            }
        }
        Err(err) => lost.push(format!("executions unreadable: {err}")),
    }
    lost
}

/// The ledger keys of every activity invocation the file records as completed: a completed
/// activity execution, or a completed `call` step of a workflow.
fn completed_activities(engine: &Engine) -> stent::Result<BTreeSet<String>> {
    let mut done = BTreeSet::new();
    let page = Page { limit: 1000, before: None };
    for info in engine.list_executions(&ExecutionFilter::default(), &page)? {
        let completed = info.state == ExecutionState::Completed;
        let input = &info.input;
        match info.function.as_str() {
            "step" | "rate" | "flaky" if completed => {
                let input = input.as_str().map_or_else(|| input.to_string(), str::to_string);
                done.insert(format!("{}:{input}", info.function));
            }
            "order" | "reserve" => {
                let i = input.as_u64().unwrap_or(u64::MAX);
                for line in engine.state_of(info.id)?.progress {
                    let Some(step) = completed_call(&line) else { continue };
                    let step_input = match (info.function.as_str(), step) {
                        ("order", 0) => format!("order-{i}-a"),
                        ("order", 3) => format!("order-{i}-b"),
                        ("order", 4) => format!("order-{i}-c"),
                        ("reserve", 1) => format!("reserve-{i}-notify"),
                        other => panic!("unexpected completed call {other:?} in {line:?}"),
                    };
                    done.insert(format!("step:{step_input}"));
                }
            }
            _ => {}
        }
    }
    Ok(done)
}

/// The step number of a progress line "step 3: call \"step\" completed".
fn completed_call(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("step ")?;
    let (n, rest) = rest.split_once(": ")?;
    (rest.starts_with("call ") && rest.ends_with(" completed")).then(|| n.parse().ok())?
}

/// Activities that ran in generation `after` or later although the file they were recovered
/// from recorded them completed.
fn reruns(ledger: &Ledger, completed: &BTreeSet<String>, after: u32) -> Vec<String> {
    let runs = ledger.runs();
    completed
        .iter()
        .filter(|key| runs.get(*key).is_some_and(|gens| gens.iter().any(|&g| g >= after)))
        .map(|key| format!("activity {key} was recorded completed, yet ran again after reopen: {:?}", runs[key]))
        .collect()
}

/// The end state every execution must reach, and the side effects the user can count.
fn final_problems(engine: &Engine, facts: &Facts, ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    let letters: BTreeSet<ExecutionId> = match engine.dead_letters(1000) {
        Ok(letters) => letters.iter().map(|l| l.execution_id).collect(),
        Err(err) => return vec![format!("dead letters unreadable: {err}")],
    };
    for kind in workload() {
        let Some(&id) = facts.dispatched.get(&kind.key()) else {
            problems.push(format!("{kind:?} was never dispatched"));
            continue;
        };
        let info = match engine.state_of(id) {
            Ok(info) => info,
            Err(err) => {
                problems.push(format!("{kind:?} ({id}): {err}"));
                continue;
            }
        };
        let ok = match expected(kind) {
            Expect::Completed(value) => info.state == ExecutionState::Completed && info.output.as_ref() == Some(&value),
            Expect::DeadLetter(code) => {
                info.state == ExecutionState::Failed
                    && info.error.as_ref().and_then(|e| e.code.as_deref()) == Some(code)
                    && letters.contains(&id)
            }
            Expect::Cancelled => info.state == ExecutionState::Cancelled,
        };
        if !ok {
            problems.push(format!(
                "{kind:?} ({id}) should be {:?}, is {} with output {:?}, error {:?}, in DLQ: {}",
                expected(kind),
                info.state,
                info.output,
                info.error,
                letters.contains(&id)
            ));
        }
    }
    match engine.counts_by_state() {
        Ok(counts) => {
            let total: u64 = counts.iter().map(|(_, n)| n).sum();
            if total != EXECUTIONS as u64 {
                problems.push(format!("{total} executions in the file, the workload made {EXECUTIONS}: {counts:?}"));
            }
        }
        Err(err) => problems.push(format!("counts_by_state: {err}")),
    }
    let reservations = engine.read(|txn| -> Result<Vec<(u32, u64)>, String> {
        let table = match txn.open_table(RESERVATIONS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        };
        let rows = table.iter().map_err(|e| e.to_string())?;
        rows.map(|row| row.map(|(k, v)| (k.value(), v.value())).map_err(|e| e.to_string())).collect()
    });
    let want: Vec<(u32, u64)> = (0..6).map(|i| (i, 1)).collect();
    match reservations {
        Ok(Ok(rows)) if rows == want => {}
        other => problems.push(format!("each reserve workflow reserves once: want {want:?}, found {other:?}")),
    }
    let runs = ledger.runs();
    for i in 0..3 {
        if let Some(gens) = runs.get(&format!("step:late-{i}")) {
            problems.push(format!("cancelled delayed activity late-{i} ran: {gens:?}"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Panics anywhere (tokio tasks swallow them) and the runtimes they happen on

#[derive(Debug, Clone)]
struct PanicRecord {
    thread: String,
    message: String,
}

static PANICS: Mutex<Vec<PanicRecord>> = Mutex::new(Vec::new());

/// Records every panic with its thread's name, so a case can tell whether anything it ran
/// panicked, even inside a spawned task whose panic nobody joins.
fn record_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let thread = std::thread::current().name().unwrap_or("").to_string();
            PANICS.lock().unwrap_or_else(|p| p.into_inner()).push(PanicRecord { thread, message });
            previous(info);
        }));
    });
}

fn panics_on(label: &str) -> Vec<PanicRecord> {
    PANICS.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|p| p.thread == label).cloned().collect()
}

/// Panics on the runtime `label` since `since` of them had been seen.
fn new_panics(label: &str, since: usize) -> Vec<String> {
    panics_on(label).into_iter().skip(since).map(|p| format!("a thread panicked: {}", p.message)).collect()
}

fn panic_count(label: &str) -> usize {
    panics_on(label).len()
}

/// Runs a test on its own runtime whose threads are named `label`, so its panics are its own.
fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(label: &'static str, test: F) -> anyhow::Result<()> {
    record_panics();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(label).enable_all().build()?;
    runtime.block_on(test)
}

// ---------------------------------------------------------------------------------------------
// Cases

/// redb creates a new file in two syncs: the header without its magic number, then with it
/// (`TransactionalMemory::new`). A power cut at either, or a full disk before the second
/// completes, leaves a file redb refuses to open ("Not a redb database: magic number
/// mismatch"); `a_power_loss_or_full_disk_while_the_file_is_created_leaves_a_file_that_opens`
/// shows it. The sweeps start after these syncs so that they test everything else.
const CREATION_SYNCS: u64 = 2;

fn slow() -> bool {
    std::env::var("STENT_SLOW").is_ok_and(|v| v == "1")
}

fn base_seed() -> u64 {
    match std::env::var("STENT_POWER_SEED") {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("STENT_POWER_SEED must be a u64, got {s:?}")),
        Err(_) => DEFAULT_SEED,
    }
}

fn only_point() -> Option<u64> {
    std::env::var("STENT_POWER_POINT").ok().map(|s| s.parse().expect("STENT_POWER_POINT must be a number"))
}

/// A case's seed: the base seed mixed with the point and the image kind (splitmix64).
fn case_seed(base: u64, point: u64, image: Image) -> u64 {
    let mut z = base ^ point.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (image as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `count` points from `first..=last`, spread evenly, both ends included; `shift` of `shifts`
/// moves the interior points so that different shifts visit different points.
fn sample(first: u64, last: u64, count: usize, shift: usize, shifts: usize) -> Vec<u64> {
    if last - first < count as u64 {
        return (first..=last).collect();
    }
    let (span, gaps) = (last - first, (count - 1) as u64);
    let mut points: Vec<u64> = (0..=gaps)
        .map(|k| {
            let at = first + k * span / gaps;
            if k == 0 || k == gaps {
                at
            } else {
                (at + shift as u64 * span / gaps / shifts as u64).min(last)
            }
        })
        .collect();
    points.dedup();
    points
}

struct Reference {
    syncs: u64,
    /// Storage operations when the driver finished (before close).
    ops: u64,
    /// Storage operations when redb's creation of the file was durable.
    ops_created: u64,
}

/// The workload without faults: it must give the expected outcomes, and it tells the sweeps
/// how many sync points and operations there are.
async fn reference() -> anyhow::Result<Reference> {
    let (disk, clock, ledger) = (PowerLossDisk::new(), ManualClock::default(), Ledger::default());
    let engine = open(&disk, &clock, &ledger, 0)?;
    let pool = engine.serve(worker_options()).expect("worker options are valid");
    let mut facts = Facts::default();
    drive(&engine, &clock, &mut facts).await.map_err(anyhow::Error::msg)?;
    let problems = final_problems(&engine, &facts, &ledger);
    assert!(problems.is_empty(), "the uncrashed workload is wrong: {problems:#?}");
    let check = engine.check()?;
    assert!(check.is_empty(), "the uncrashed workload leaves an inconsistent file: {check:#?}");
    // Without a crash every activity runs once, the flaky ones twice (through a retry) and the
    // cached function once per input.
    let runs = ledger.runs();
    for (key, gens) in &runs {
        let want = if key.starts_with("flaky:") { 2 } else { 1 };
        assert_eq!(gens.len(), want, "runs of {key} without a crash");
    }
    assert_eq!(runs.len(), 20 * 3 + 3 + 6 + 6 + 2 + 6, "activities that ran: {:?}", runs.keys());
    for kind in workload() {
        if let Kind::Flaky(_) = kind {
            let info = engine.state_of(facts.dispatched[&kind.key()])?;
            assert_eq!((info.attempts, info.history.len()), (2, 1), "{kind:?} failed once, then was retried");
        }
    }
    let ops = disk.ops();
    pool.drain().await?;
    engine.close().await?;
    let (grows, shrinks) = disk.resizes();
    eprintln!(
        "reference run: {} syncs, {ops} operations, set_len grew the file {grows} times, shrank it {shrinks}",
        disk.syncs()
    );
    Ok(Reference { syncs: disk.syncs(), ops, ops_created: disk.ops_at_sync(CREATION_SYNCS) })
}

/// Generation 1: a new engine on `image`; checks the recovered file against what generation 0
/// was told, finishes the workload, checks the end state. Returns the problems found.
async fn recover_and_finish(
    image: Vec<u8>,
    clock: &ManualClock,
    ledger: &Ledger,
    before: &Facts,
) -> anyhow::Result<Vec<String>> {
    let disk = PowerLossDisk::from_image(image);
    let engine = match open(&disk, clock, ledger, 1) {
        Ok(engine) => engine,
        Err(err) => return Ok(vec![format!("the recovered file does not open: {err}")]),
    };
    let mut problems = Vec::new();
    problems.extend(engine.check()?.into_iter().map(|p| format!("check() at reopen: {p}")));
    problems.extend(losses(&engine, before));
    let completed = completed_activities(&engine)?;
    if !problems.is_empty() {
        engine.close().await?;
        return Ok(problems);
    }
    let pool = engine.serve(worker_options()).expect("worker options are valid");
    let mut after = Facts::default();
    if let Err(stop) = drive(&engine, clock, &mut after).await {
        problems.push(format!("finishing the workload after reopen failed: {stop}"));
    }
    for (key, id) in &before.dispatched {
        if after.dispatched.get(key) != Some(id) {
            problems
                .push(format!("dispatch {key} returned {id} before the crash, {:?} after", after.dispatched.get(key)));
        }
    }
    problems.extend(reruns(ledger, &completed, 1));
    problems.extend(final_problems(&engine, &after, ledger));
    problems.extend(engine.check()?.into_iter().map(|p| format!("check() at the end: {p}")));
    pool.drain().await?;
    engine.close().await?;
    Ok(problems)
}

/// What a case did, for the sweep's summary.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    /// Power was lost while the workload ran (not after it, or while the file was created).
    mid_workload: usize,
    pending: usize,
    kept: usize,
    torn: usize,
}

/// One case: power is lost at sync `point`, the surviving bytes are chosen by `image`.
async fn power_loss_case(
    label: &str,
    point: u64,
    image: Image,
    seed: u64,
    tally: &mut Tally,
) -> anyhow::Result<Vec<String>> {
    let panics = panic_count(label);
    let (disk, clock, ledger) = (PowerLossDisk::new(), ManualClock::default(), Ledger::default());
    disk.lose_power_at_sync(point, image, seed);
    let mut before = Facts::default();
    match open(&disk, &clock, &ledger, 0) {
        Ok(engine) => {
            let pool = engine.serve(worker_options()).expect("worker options are valid");
            let outcome = drive(&engine, &clock, &mut before).await;
            if let Err(stop) = &outcome {
                anyhow::ensure!(disk.crashed(), "the workload stopped without a power loss: {stop}");
                anyhow::ensure!(engine.poisoned().is_some(), "the disk failed but the engine is not poisoned: {stop}");
                tally.mid_workload += 1;
            }
            // The process dies: no drain (it would wait on the dead disk), attempts stay leased.
            drop(pool);
            engine.close().await?;
        }
        Err(err) => anyhow::ensure!(disk.crashed(), "open failed without a power loss: {err}"),
    }
    // A point past the end of this run (batching varies a little): lose power after close.
    disk.lose_power_now(image, seed);
    let image = disk.crash_image().expect("power was lost");
    let survival = disk.survival();
    tally.cases += 1;
    tally.pending += survival.pending;
    tally.kept += survival.kept;
    tally.torn += usize::from(survival.torn);
    let mut problems = recover_and_finish(image, &clock, &ledger, &before).await?;
    problems.extend(new_panics(label, panics));
    Ok(problems)
}

async fn sweep(label: &'static str, image: Image) -> anyhow::Result<()> {
    let started = Instant::now();
    let reference = reference().await?;
    let first = CREATION_SYNCS + 1;
    let points = match only_point() {
        Some(p) => vec![p],
        None if slow() => (first..=reference.syncs).collect(),
        None => {
            let shift = Image::ALL.iter().position(|&i| i == image).unwrap_or(0);
            sample(first, reference.syncs, DEFAULT_POINTS_PER_IMAGE, shift, Image::ALL.len())
        }
    };
    let base = base_seed();
    let mut failures = Vec::new();
    let mut tally = Tally::default();
    for &point in &points {
        let seed = case_seed(base, point, image);
        let problems = power_loss_case(label, point, image, seed, &mut tally).await?;
        if !problems.is_empty() {
            failures.push(format!(
                "power lost at sync {point} of {} ({image:?} image, case seed {seed}; reproduce with \
                 STENT_POWER_SEED={base} STENT_POWER_POINT={point}):\n  {}",
                reference.syncs,
                problems.join("\n  ")
            ));
        }
    }
    eprintln!(
        "power_loss {image:?}: {} of the sync points {first}..={} in {:.1?}; {tally:?}",
        points.len(),
        reference.syncs,
        started.elapsed()
    );
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), points.len(), failures.join("\n"));
    Ok(())
}

#[test]
fn power_loss_keeping_only_the_durable_image() -> anyhow::Result<()> {
    block_on("power-durable", sweep("power-durable", Image::Durable))
}

#[test]
fn power_loss_keeping_a_prefix_of_the_unsynced_writes() -> anyhow::Result<()> {
    block_on("power-prefix", sweep("power-prefix", Image::Prefix))
}

#[test]
fn power_loss_keeping_a_subset_of_the_unsynced_writes() -> anyhow::Result<()> {
    block_on("power-subset", sweep("power-subset", Image::Subset))
}

#[test]
fn power_loss_keeping_a_subset_with_a_torn_write() -> anyhow::Result<()> {
    block_on("power-torn", sweep("power-torn", Image::Torn))
}

/// What the ENOSPC cases did, for the summary.
#[derive(Debug, Default)]
struct SpaceTally {
    /// The engine was poisoned while the workload ran.
    poisoned: usize,
    /// `Engine::open` itself failed.
    open_failed: usize,
    /// The fault came after the workload's last write.
    untouched: usize,
    /// One poison message, to show what a user reads.
    example: Option<String>,
}

/// One ENOSPC case: writes fail after `ops` operations. Returns the problems found.
async fn enospc_case(label: &str, ops: u64, tally: &mut SpaceTally) -> anyhow::Result<Vec<String>> {
    let panics = panic_count(label);
    let (disk, clock, ledger) = (PowerLossDisk::new(), ManualClock::default(), Ledger::default());
    disk.fail_writes_after(ops);
    let mut before = Facts::default();
    let mut problems = Vec::new();
    let names_the_cause = |msg: &str| msg.contains("No space left on device") || msg.contains("os error 28");
    match open(&disk, &clock, &ledger, 0) {
        Ok(engine) => {
            let pool = engine.serve(worker_options()).expect("worker options are valid");
            let outcome = drive(&engine, &clock, &mut before).await;
            match (outcome, engine.poisoned()) {
                (Ok(()), None) if disk.enospc_errors() == 0 => tally.untouched += 1,
                (Ok(()), None) => problems.push("writes failed, yet the workload finished unpoisoned".to_string()),
                (_, Some(reason)) => {
                    tally.poisoned += 1;
                    tally.example.get_or_insert_with(|| reason.clone());
                    if !names_the_cause(&reason) {
                        problems.push(format!("poisoned with an error that does not name ENOSPC: {reason}"));
                    }
                    match engine.dispatch(STEP, &"after".to_string()).await {
                        Err(Error::Storage(e)) if e.to_string().contains(&reason) => {}
                        other => problems.push(format!("a dispatch on the poisoned engine gave {other:?}")),
                    }
                }
                (Err(stop), None) => problems.push(format!("the workload stopped, unpoisoned: {stop}")),
            }
            drop(pool);
            engine.close().await?;
        }
        Err(err) => {
            tally.open_failed += 1;
            if !names_the_cause(&err.to_string()) {
                problems.push(format!("open failed with an error that does not name ENOSPC: {err}"));
            }
        }
    }
    if problems.is_empty() {
        problems = recover_and_finish(disk.live_image(), &clock, &ledger, &before).await?;
    }
    problems.extend(new_panics(label, panics));
    Ok(problems)
}

#[test]
fn running_out_of_space_poisons_the_engine_and_damages_nothing() -> anyhow::Result<()> {
    const LABEL: &str = "power-enospc";
    block_on(LABEL, async {
        let started = Instant::now();
        let reference = reference().await?;
        let count = if slow() { SLOW_ENOSPC_POINTS } else { DEFAULT_ENOSPC_POINTS };
        let points = sample(reference.ops_created, reference.ops, count, 0, 1);
        let mut failures = Vec::new();
        let mut tally = SpaceTally::default();
        for &ops in &points {
            let problems = enospc_case(LABEL, ops, &mut tally).await?;
            if !problems.is_empty() {
                failures.push(format!(
                    "ENOSPC after {ops} of {} operations:\n  {}",
                    reference.ops,
                    problems.join("\n  ")
                ));
            }
        }
        eprintln!(
            "power_loss ENOSPC: {} of the operation counts {}..={} in {:.1?}; {tally:?}",
            points.len(),
            reference.ops_created,
            reference.ops,
            started.elapsed()
        );
        assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), points.len(), failures.join("\n"));
        Ok(())
    })
}

/// A crash or a full disk in the first moments of the first start, while redb creates the
/// file, must not leave a file that can never be opened: nothing was committed, so the next
/// start should open it (as new). redb 4.6 leaves such a file without its magic number and
/// refuses every later open ("Not a redb database"); stent recognises exactly that state
/// (`storage/redb_store/creation.rs`) and creates the file anew.
#[test]
fn a_power_loss_or_full_disk_while_the_file_is_created_leaves_a_file_that_opens() -> anyhow::Result<()> {
    const LABEL: &str = "power-creation";
    block_on(LABEL, async {
        let reference = reference().await?;
        let base = base_seed();
        let mut failures = Vec::new();
        for point in 1..=CREATION_SYNCS {
            for image in Image::ALL {
                let seed = case_seed(base, point, image);
                let problems = power_loss_case(LABEL, point, image, seed, &mut Tally::default()).await?;
                if !problems.is_empty() {
                    failures
                        .push(format!("power lost at sync {point} ({image:?}, seed {seed}): {}", problems.join("; ")));
                }
            }
        }
        for ops in 0..reference.ops_created {
            let problems = enospc_case(LABEL, ops, &mut SpaceTally::default()).await?;
            if !problems.is_empty() {
                failures.push(format!("ENOSPC after {ops} operations: {}", problems.join("; ")));
            }
        }
        assert!(
            failures.is_empty(),
            "{} cases leave a file that does not open:\n{}",
            failures.len(),
            failures.join("\n")
        );
        Ok(())
    })
}

/// The checks can fail: a disk that loses one acknowledged sync (the file rolled back by one
/// commit) loses a cancel that returned `Ok`, and `losses` says so.
#[test]
fn the_checks_notice_a_lost_commit() -> anyhow::Result<()> {
    block_on("power-detector", async {
        let (disk, clock, ledger) = (PowerLossDisk::new(), ManualClock::default(), Ledger::default());
        let engine = open(&disk, &clock, &ledger, 0)?;
        let mut facts = Facts::default();
        let kind = Kind::CancelledDelayed(0);
        let id = dispatch(&engine, kind).await?;
        facts.dispatched.insert(kind.key(), id);
        // No pool and nothing due: the cancel's commit is the last sync.
        assert_eq!(engine.cancel(id).await?, ExecutionState::Cancelled);
        facts.cancelled.insert(id);
        let rolled_back = disk.rolled_back_image();
        engine.close().await?;

        let engine = open(&PowerLossDisk::from_image(rolled_back), &clock, &ledger, 1)?;
        assert!(engine.check()?.is_empty(), "a rolled-back file is still consistent, just old");
        let lost = losses(&engine, &facts);
        assert_eq!(lost, vec![format!("cancel of {id} returned Ok(Cancelled), but it is pending")]);
        engine.close().await?;
        Ok(())
    })
}

/// `Engine::close` while a pool's claim loop waits idle: close drops the idle registration's
/// sender; the loop used to await the completed oneshot again and panic ("called after
/// complete"), 7 to 13 closes in 40. The sweeps, whose crashed generation closes without a
/// drain, now tolerate no panic at all (see also `tests/shutdown.rs`).
#[test]
fn closing_an_engine_while_its_pool_is_idle_does_not_panic() -> anyhow::Result<()> {
    const LABEL: &str = "power-close";
    const ROUNDS: usize = 40;
    block_on(LABEL, async {
        for _ in 0..ROUNDS {
            let (disk, clock, ledger) = (PowerLossDisk::new(), ManualClock::default(), Ledger::default());
            let engine = open(&disk, &clock, &ledger, 0)?;
            let pool = engine.serve(worker_options()).expect("worker options are valid");
            let id = engine.dispatch(STEP, &"x".to_string()).await?;
            assert_eq!(support::finished(&engine, STEP, id).await?, "did x");
            settle(&engine).await.map_err(anyhow::Error::msg)?;
            drop(pool);
            engine.close().await?;
        }
        let panics = panics_on(LABEL);
        assert!(panics.is_empty(), "{} of {ROUNDS} closes panicked: {:?}", panics.len(), panics[0]);
        Ok(())
    })
}

#[test]
fn the_sample_spreads_over_the_range_with_both_ends() {
    let points = sample(3, 300, 14, 0, 4);
    assert_eq!((points.len(), points[0], points[13]), (14, 3, 300));
    let shifted = sample(3, 300, 14, 2, 4);
    assert_eq!((shifted[0], shifted[13]), (3, 300));
    assert!(points[1..13].iter().all(|p| !shifted.contains(p)), "{points:?} {shifted:?}");
    assert_eq!(sample(1, 5, 14, 1, 4), vec![1, 2, 3, 4, 5]);
}

#[test]
fn the_rerun_check_names_an_activity_that_ran_after_reopen() {
    let ledger = Ledger::default();
    ledger.record("step:order-1-a".to_string(), 0);
    ledger.record("step:order-1-a".to_string(), 1);
    ledger.record("step:order-2-a".to_string(), 0);
    let completed: BTreeSet<String> = ["step:order-1-a", "step:order-2-a"].map(String::from).into();
    assert_eq!(
        reruns(&ledger, &completed, 1),
        vec!["activity step:order-1-a was recorded completed, yet ran again after reopen: [0, 1]".to_string()]
    );
}
