//! End-to-end performance figures of the engine beside raw redb, all measured in one run on
//! one disk (a fresh temporary directory, removed at the end). See docs/PERFORMANCE.md.
//!
//!     cargo run --release --example bench -- --json [--n 20000] [--samples 2000] [--dir PATH]
//!
//! Options for the workflow figures: `--workflows W` (concurrent executions per throughput
//! round, default 100), `--steps K` (sequential steps per workflow, default 10), `--rounds R`
//! (measured throughput rounds, default 5), `--wf-samples S` / `--wf-warmup W` (latency
//! samples, default 200 after 20), `--fanout F` (children of the fan-out, default 1,000),
//! `--fanout-runs R` (default 3), `--long-steps L` (steps of the long workflow, default
//! 2,000), `--long-runs R` (default 3; also the repeats of the continue-as-new loop),
//! `--loop-runs N` (runs of the continue-as-new loop, one call each, default 1,000),
//! `--evict-after DUR` (the engine's `evict_after`
//! for every workflow figure; `0s` replays every workflow from the top at each step).
//! `--skip-workflows` leaves out the workflow figures, `--only-workflows` prints only them.
//!
//! History costs (off by default): `--history N` builds a file of N finished executions (or
//! reuses the one at `--history-path PATH`, which is kept), closes it, and measures on it:
//! `open()` (median of `--opens K`, default 7, after one unmeasured open), `counts_by_state`
//! (median of `--count-calls C`, default 101), and `open()` after a process that had the file
//! open exited without closing it (median of `--unclean-opens U`, default 3). `--only-history`
//! prints only these figures.
//!
//! Schedule costs (on by default; about 4 s): `--schedules N` (default 10,000; the figures keep
//! their `10k` names) idle schedules on one file, on a `ManualClock` that never moves, so none
//! is due and none fires; `--opens K` reopens (as for the history figures), `--idle-s S` (real
//! seconds of the idle CPU window, default 2). `--skip-schedules` leaves them out,
//! `--only-schedules` prints only them. `--only-workflows` and `--only-history` leave them out.
//!
//! Rate-limit costs (on by default; about `--rate-s` seconds, default 10): an activity limited
//! to 20 starts per second (`rate_limit(20, "1s")`) on the real clock, a backlog of 20 × S
//! executions (200 by default) dispatched at once and run by one pool, in a child process.
//! `--skip-rate-limit` leaves them out, `--only-rate-limit` prints only them.
//! `--only-workflows`, `--only-history` and `--only-schedules` leave them out.
//!
//! With `--json`, stdout carries exactly one JSON line per figure,
//! `{"name":…,"value":…,"unit":…}`, and nothing else; progress and engine counters go to
//! stderr. Without it, stdout gets a human-readable table.
//!
//! Figures:
//! - `trivial_executions_per_s`: N executions of an activity that returns its input,
//!   dispatched concurrently (one tokio task each: dispatch, then `wait_for`), run by one
//!   worker pool of 512; wall time from the first dispatch to the last completion.
//! - `dispatch_to_completion_p50_us` / `_p99_us`: one execution at a time on an idle engine,
//!   from the call to `dispatch` to the return of `wait_for`.
//! - `redb_commit_per_s`: raw redb, one-record write transactions, `Durability::Immediate`.
//! - `redb_batch_records_per_s`: raw redb, 1,000-record write transactions (u64 -> 100 bytes).
//! - `workflow_steps_per_s`: W concurrent executions of a workflow of K sequential `ctx.call`
//!   steps (the activity returns its input), one pool of 512; W × K steps ÷ wall time from the
//!   first dispatch to the last `wait_for` returning; median of R rounds after one warm-up
//!   round, all on one engine.
//! - `workflow_step_p50_us` / `_p99_us`: one such workflow at a time on an idle engine; each
//!   sample is (dispatch to `wait_for` return) ÷ K.
//! - `fanout_1000_children_ms`: one workflow doing `ctx.map` of F trivial calls; dispatch to
//!   `wait_for` return; median of the runs.
//! - `long_workflow_steps_per_s`: one workflow of L sequential steps alone on an engine; L ÷
//!   (dispatch to `wait_for` return); median of the runs. Shows what replaying the journal
//!   at every step would cost (`--evict-after 0s`).
//! - `history_open_ms`: `Engine::open` with the default options (`VerifyOnOpen::Live`) on the
//!   history file, median.
//! - `history_open_full_ms`: the same with `verify_on_open(VerifyOnOpen::Full)` (every page and
//!   every record), for comparison.
//! - `history_counts_us`: one `counts_by_state` call on the history file, median.
//! - `history_check_ms`: one `Engine::check` (every record and index) on the history file,
//!   median of 3.
//! - `history_unclean_open_ms`: `Engine::open` with the default options right after a process
//!   that had the file open (and had just run one execution) exited without closing it, so
//!   redb repairs the file at open; median.
//! - `history_file_mb`: the history file's size (10^6 bytes).
//! - `schedules_10k_create_ms`: N `Engine::schedules().upsert` calls, one tokio task each, all
//!   started at once (so the writer group-commits them), on an engine with one idle pool; wall
//!   time from the first call to the last return. The specs mix cron expressions in
//!   Europe/Berlin, America/New_York, UTC and Asia/Kolkata with `every` intervals.
//! - `schedules_10k_upserts_per_s`: N ÷ that time.
//! - `schedules_10k_file_mb`: the file's size after the engine that created them closed.
//! - `schedules_10k_open_ms`: `Engine::open` (default options) on that file, which loads and
//!   arms every schedule's timer; median of `--opens K` after one unmeasured open.
//! - `schedules_10k_rss_mb`: in a fresh child process of the bench, VmRSS
//!   (`/proc/self/status`) with that file open, every schedule armed and one pool serving,
//!   minus VmRSS with an empty file open and one pool serving (that engine closed first).
//!   (The same difference in the process that made the upserts, printed on stderr, also
//!   counts the heap they and the opens left to the allocator for reuse: several times more,
//!   and it depends on what ran before.)
//! - `schedules_10k_idle_cpu_pct`: in the child, with the schedules armed and the pool idle,
//!   the CPU time of the whole process (utime + stime of `/proc/self/stat`, 10 ms ticks) over
//!   `--idle-s` real seconds, as a percentage of one core. The child then checks that every
//!   schedule is listed, none fired and no execution exists.
//! - `rate_limited_per_s`: in a fresh child process, on the system clock, one pool of 512
//!   serving an activity with `rate_limit(20, "1s")` (it returns its input), 20 × S executions
//!   dispatched at once (one tokio task each: dispatch, then `wait_for`). The first 20 fit the
//!   burst and run at once; the rest are deferred to their reserved slots, one every 50 ms.
//!   The figure is the steady part: (M − 1) ÷ (time of the last completion − time of the 21st),
//!   M = the completions from the 21st on (completion = `wait_for` returning). Should be 20.
//! - `rate_limited_cpu_pct`: in that child, the whole process's CPU time (utime + stime of
//!   `/proc/self/stat`) from the 21st completion to the last, as a percentage of one core over
//!   that wall time: the work of the 20 starts a second, with nothing polling between them.
//! - `rate_limited_deferrals_per_task`: `stats().rate_limited` ÷ (20 × S − 20), the deferred
//!   claims per task over the burst (1.0 when each waiting task is deferred exactly once).
//! - `rate_limited_claims_per_completion`: claim operations (`stats().claims`, the attempts
//!   started, plus `stats().rate_limited`, the deferred claims) ÷ completions: (2 × 20 × S − 20)
//!   ÷ (20 × S) when each is deferred once, 1.9 for the default backlog.
//! - `rate_limited_drain_s`: the first dispatch to the last completion (ideally S − 1 s).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redb::{Database, Durability, TableDefinition};
use stent::Stats;
use stent::{Activity, ActivityError, Ctx, Engine, ExecutionState, RetryPolicy, VerifyOnOpen, WorkerOptions, Workflow};

const ECHO: Activity<u64, u64> = Activity::new("echo");
/// K sequential calls of `ECHO`, each on the previous result plus one: input x returns x + K.
const STEPS: Workflow<u64, u64> = Workflow::new("sequential_steps");
/// Fans out `ECHO` over 0..F with `ctx.map` and returns the sum of the results.
const FANOUT: Workflow<u64, u64> = Workflow::new("fanout");
/// A loop of `ctx.continue_as_new`: each run calls `ECHO` once, then continues with one run
/// fewer to go; returns 0.
const LOOP: Workflow<u64, u64> = Workflow::new("continue_loop");
/// What the schedule figures' schedules would start (returns its input); none fires.
const SCHEDULED: Workflow<u64, u64> = Workflow::new("scheduled_report");
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");

const POOL_CONCURRENCY: u32 = 512;
const WAIT_LIMIT: Duration = Duration::from_secs(600);
const REDB_COMMITS: u64 = 2_000;
const REDB_BATCH_RECORDS: u64 = 1_000;
const REDB_BATCHES: u64 = 100;
const REDB_VALUE_BYTES: usize = 100;
/// The manual clock of the schedule figures: 2026-12-07T10:17:23Z. It never moves, so no
/// schedule (each first due after this) fires.
const SCHEDULE_CLOCK_MS: u64 = 1_796_638_643_000;
/// `/proc/self/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const USER_HZ: f64 = 100.0;

struct Args {
    json: bool,
    n: usize,
    samples: usize,
    warmup: usize,
    dir: Option<PathBuf>,
    executions: bool,
    workflows: bool,
    wf_concurrent: usize,
    wf_steps: u64,
    wf_rounds: usize,
    wf_samples: usize,
    wf_warmup: usize,
    fanout: u64,
    fanout_runs: usize,
    long_steps: u64,
    long_runs: usize,
    loop_runs: u64,
    evict_after: Option<Duration>,
    history: Option<u64>,
    history_path: Option<PathBuf>,
    opens: usize,
    count_calls: usize,
    unclean_opens: usize,
    schedules: bool,
    schedule_count: usize,
    idle_s: f64,
    rate_limit: bool,
    rate_s: f64,
}

const USAGE: &str = "usage: bench [--json] [--n N] [--samples S] [--warmup W] [--dir PATH] \
    [--workflows W] [--steps K] [--rounds R] [--wf-samples S] [--wf-warmup W] [--fanout F] [--fanout-runs R] \
    [--long-steps L] [--long-runs R] [--loop-runs N] [--evict-after DUR] [--skip-workflows | --only-workflows] \
    [--history N [--history-path PATH] [--opens K] [--count-calls C] [--unclean-opens U] [--only-history]] \
    [--schedules N] [--idle-s S] [--skip-schedules | --only-schedules] \
    [--rate-s S] [--skip-rate-limit | --only-rate-limit]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        json: false,
        n: 20_000,
        samples: 2_000,
        warmup: 200,
        dir: None,
        executions: true,
        workflows: true,
        wf_concurrent: 100,
        wf_steps: 10,
        wf_rounds: 5,
        wf_samples: 200,
        wf_warmup: 20,
        fanout: 1_000,
        fanout_runs: 3,
        long_steps: 2_000,
        long_runs: 3,
        loop_runs: 1_000,
        evict_after: None,
        history: None,
        history_path: None,
        opens: 7,
        count_calls: 101,
        unclean_opens: 3,
        schedules: true,
        schedule_count: 10_000,
        idle_s: 2.0,
        rate_limit: true,
        rate_s: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => args.json = true,
            "--n" => args.n = value("--n")?.parse().context("--n")?,
            "--samples" => args.samples = value("--samples")?.parse().context("--samples")?,
            "--warmup" => args.warmup = value("--warmup")?.parse().context("--warmup")?,
            "--dir" => args.dir = Some(PathBuf::from(value("--dir")?)),
            "--workflows" => args.wf_concurrent = value("--workflows")?.parse().context("--workflows")?,
            "--steps" => args.wf_steps = value("--steps")?.parse().context("--steps")?,
            "--rounds" => args.wf_rounds = value("--rounds")?.parse().context("--rounds")?,
            "--wf-samples" => args.wf_samples = value("--wf-samples")?.parse().context("--wf-samples")?,
            "--wf-warmup" => args.wf_warmup = value("--wf-warmup")?.parse().context("--wf-warmup")?,
            "--fanout" => args.fanout = value("--fanout")?.parse().context("--fanout")?,
            "--fanout-runs" => args.fanout_runs = value("--fanout-runs")?.parse().context("--fanout-runs")?,
            "--long-steps" => args.long_steps = value("--long-steps")?.parse().context("--long-steps")?,
            "--long-runs" => args.long_runs = value("--long-runs")?.parse().context("--long-runs")?,
            "--loop-runs" => args.loop_runs = value("--loop-runs")?.parse().context("--loop-runs")?,
            "--evict-after" => {
                args.evict_after = Some(stent::DurationArg::from(value("--evict-after")?.as_str()).get()?)
            }
            "--skip-workflows" => args.workflows = false,
            "--only-workflows" => {
                args.executions = false;
                args.schedules = false;
                args.rate_limit = false;
            }
            "--history" => args.history = Some(value("--history")?.parse().context("--history")?),
            "--history-path" => args.history_path = Some(PathBuf::from(value("--history-path")?)),
            "--opens" => args.opens = value("--opens")?.parse().context("--opens")?,
            "--count-calls" => args.count_calls = value("--count-calls")?.parse().context("--count-calls")?,
            "--unclean-opens" => args.unclean_opens = value("--unclean-opens")?.parse().context("--unclean-opens")?,
            "--only-history" => {
                args.executions = false;
                args.workflows = false;
                args.schedules = false;
                args.rate_limit = false;
            }
            "--schedules" => args.schedule_count = value("--schedules")?.parse().context("--schedules")?,
            "--idle-s" => args.idle_s = value("--idle-s")?.parse().context("--idle-s")?,
            "--skip-schedules" => args.schedules = false,
            "--only-schedules" => {
                args.executions = false;
                args.workflows = false;
                args.schedules = true;
                args.rate_limit = false;
            }
            "--rate-s" => args.rate_s = value("--rate-s")?.parse().context("--rate-s")?,
            "--skip-rate-limit" => args.rate_limit = false,
            "--only-rate-limit" => {
                args.executions = false;
                args.workflows = false;
                args.schedules = false;
                args.rate_limit = true;
            }
            // `cargo bench` style flags are harmless here.
            "--bench" => {}
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.n == 0 || args.samples == 0 {
        bail!("--n and --samples must be at least 1");
    }
    if args.wf_concurrent == 0
        || args.wf_steps == 0
        || args.wf_rounds == 0
        || args.wf_samples == 0
        || args.fanout == 0
        || args.fanout_runs == 0
        || args.long_steps == 0
        || args.long_runs == 0
        || args.loop_runs == 0
    {
        bail!(
            "--workflows, --steps, --rounds, --wf-samples, --fanout, --fanout-runs, --long-steps, --long-runs and \
             --loop-runs must be at least 1"
        );
    }
    if args.history == Some(0) || args.opens == 0 || args.count_calls == 0 {
        bail!("--history, --opens and --count-calls must be at least 1");
    }
    if args.schedule_count == 0 || !args.idle_s.is_finite() || args.idle_s <= 0.0 {
        bail!("--schedules and --idle-s must be above 0");
    }
    // At least two deferred tasks, so the steady part has an interval.
    if !args.rate_s.is_finite() || rate_backlog(args.rate_s) < u64::from(RATE_PER) + 2 {
        bail!("--rate-s must be at least 1.1 (a backlog of {RATE_PER} per second, beyond the burst of {RATE_PER})");
    }
    if !args.executions && !args.workflows && !args.schedules && !args.rate_limit && args.history.is_none() {
        bail!(
            "nothing to measure (--only-history needs --history N; --skip-workflows and --only-workflows together, \
             or an --only-X and its --skip-X, leave nothing)"
        );
    }
    Ok(args)
}

struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
}

fn open_engine(path: &Path) -> stent::Result<Engine> {
    Engine::builder()
        .path(path)
        .activity_with(
            ECHO,
            |x: u64| async move { Ok::<_, ActivityError>(x) },
            stent::FunctionOptions::new().retry(RetryPolicy::none()),
        )
        .open()
}

/// The engine of the workflow figures: `ECHO` plus the two workflows.
fn open_workflow_engine(path: &Path, steps: u64, evict_after: Option<Duration>) -> stent::Result<Engine> {
    let mut builder = Engine::builder();
    if let Some(d) = evict_after {
        builder = builder.evict_after(d);
    }
    builder
        .path(path)
        .activity_with(
            ECHO,
            |x: u64| async move { Ok::<_, ActivityError>(x) },
            stent::FunctionOptions::new().retry(RetryPolicy::none()),
        )
        .workflow(STEPS, move |ctx: Ctx, x: u64| async move {
            let mut x = x;
            for _ in 0..steps {
                x = ctx.call(ECHO, &(x + 1)).await?;
            }
            Ok(x)
        })
        .workflow(LOOP, |ctx: Ctx, left: u64| async move {
            ctx.call(ECHO, &left).await?;
            if left == 0 {
                return Ok(0);
            }
            ctx.continue_as_new(&(left - 1))
        })
        .workflow(FANOUT, |ctx: Ctx, n: u64| async move {
            let out = ctx.map(ECHO, (0..n).collect()).await?;
            Ok(out.into_iter().sum())
        })
        .open()
}

fn worker_options() -> WorkerOptions {
    WorkerOptions { worker_id: "bench".into(), max_concurrency: POOL_CONCURRENCY, ..WorkerOptions::default() }
}

fn report_batches(label: &str, before: &Stats, after: &Stats) {
    let batches = after.batches - before.batches;
    let ops = after.ops - before.ops;
    eprintln!(
        "  {label}: {batches} write transactions, {ops} ops, {:.1} ops per transaction",
        ops as f64 / batches.max(1) as f64
    );
}

/// N concurrent dispatch + wait_for, one worker pool.
async fn throughput(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let path = dir.join("throughput.stent");
    let engine = open_engine(&path)?;
    let workers = engine.serve(worker_options())?;
    workers.wait_until_ready().await;
    let before = engine.stats();

    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n as u64 {
        let engine = engine.clone();
        tasks.spawn(async move {
            let id = engine.dispatch(ECHO, &i).await?;
            let out = engine.wait_for(ECHO, id, Some(WAIT_LIMIT)).await?;
            if out != i {
                bail!("execution {id} returned {out}, expected {i}");
            }
            Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a dispatcher task panicked")??;
    }
    let elapsed = start.elapsed();

    let after = engine.stats();
    let completed =
        engine.counts_by_state()?.into_iter().find(|(s, _)| *s == ExecutionState::Completed).map_or(0, |(_, c)| c);
    if completed != n as u64 {
        bail!("{completed} executions completed, expected {n}");
    }
    let rate = n as f64 / elapsed.as_secs_f64();
    eprintln!("throughput: {n} executions in {:.3} s = {rate:.0} executions/s", elapsed.as_secs_f64());
    report_batches("throughput", &before, &after);
    workers.drain().await?;
    engine.close().await?;
    Ok(rate)
}

/// One execution at a time on an idle engine: dispatch, then wait_for.
async fn latency(dir: &Path, warmup: usize, samples: usize) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("latency.stent");
    let engine = open_engine(&path)?;
    let workers = engine.serve(worker_options())?;
    workers.wait_until_ready().await;
    let mut micros = Vec::with_capacity(samples);
    let mut before = engine.stats();
    for i in 0..(warmup + samples) as u64 {
        if i == warmup as u64 {
            before = engine.stats();
        }
        let start = Instant::now();
        let id = engine.dispatch(ECHO, &i).await?;
        let out = engine.wait_for(ECHO, id, Some(WAIT_LIMIT)).await?;
        let took = start.elapsed();
        if out != i {
            bail!("execution {id} returned {out}, expected {i}");
        }
        if i >= warmup as u64 {
            micros.push(took.as_secs_f64() * 1e6);
        }
    }
    let after = engine.stats();
    micros.sort_by(f64::total_cmp);
    let p50 = percentile(&micros, 50.0);
    let p99 = percentile(&micros, 99.0);
    eprintln!(
        "latency: {samples} samples, p50 {p50:.0} us, p99 {p99:.0} us, min {:.0} us, max {:.0} us",
        micros[0],
        micros[micros.len() - 1]
    );
    report_batches("latency", &before, &after);
    workers.drain().await?;
    engine.close().await?;
    Ok((p50, p99))
}

/// `count` concurrent executions of `STEPS` (one tokio task each: dispatch, then `wait_for`);
/// returns the wall time from the first dispatch to the last `wait_for` returning.
async fn steps_round(engine: &Engine, count: usize, steps: u64, base: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count as u64 {
        let engine = engine.clone();
        let input = base + i * 1_000;
        tasks.spawn(async move {
            let id = engine.dispatch(STEPS, &input).await?;
            let out = engine.wait_for(STEPS, id, Some(WAIT_LIMIT)).await?;
            if out != input + steps {
                bail!("workflow {id} returned {out}, expected {}", input + steps);
            }
            Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a dispatcher task panicked")??;
    }
    Ok(start.elapsed())
}

fn completed(engine: &Engine) -> anyhow::Result<u64> {
    Ok(engine.counts_by_state()?.into_iter().find(|(s, _)| *s == ExecutionState::Completed).map_or(0, |(_, c)| c))
}

/// Workflow throughput: rounds of `count` concurrent `STEPS` executions on one engine; one
/// unmeasured warm-up round, then the median steps/s of `rounds` rounds.
async fn workflow_throughput(
    dir: &Path,
    count: usize,
    steps: u64,
    rounds: usize,
    evict_after: Option<Duration>,
) -> anyhow::Result<f64> {
    let path = dir.join("workflow_throughput.stent");
    let engine = open_workflow_engine(&path, steps, evict_after)?;
    let workers = engine.serve(worker_options())?;
    workers.wait_until_ready().await;
    steps_round(&engine, count, steps, 0).await?;
    let before = engine.stats();
    let mut rates = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let took = steps_round(&engine, count, steps, (r as u64 + 1) * 1_000_000_000).await?;
        let rate = (count as u64 * steps) as f64 / took.as_secs_f64();
        eprintln!(
            "workflow throughput round {}: {count} workflows x {steps} steps in {:.1} ms = {rate:.0} steps/s",
            r + 1,
            took.as_secs_f64() * 1e3
        );
        rates.push(rate);
    }
    let after = engine.stats();
    let done = completed(&engine)?;
    let expected = (count * (rounds + 1)) as u64; // Steps are tasks of their workflow's execution.
    if done != expected {
        bail!("{done} executions completed, expected {expected}");
    }
    report_batches("workflow throughput", &before, &after);
    let measured = (count * rounds) as f64;
    eprintln!(
        "  per workflow of {steps} steps: {:.1} ops, {:.2} write transactions",
        (after.ops - before.ops) as f64 / measured,
        (after.batches - before.batches) as f64 / measured
    );
    rates.sort_by(f64::total_cmp);
    workers.drain().await?;
    engine.close().await?;
    Ok(rates[rates.len() / 2])
}

/// Workflow step latency: one `STEPS` execution at a time on an idle engine; each sample is
/// the time from `dispatch` to `wait_for` returning, divided by the number of steps.
async fn workflow_latency(
    dir: &Path,
    steps: u64,
    warmup: usize,
    samples: usize,
    evict_after: Option<Duration>,
) -> anyhow::Result<(f64, f64)> {
    let path = dir.join("workflow_latency.stent");
    let engine = open_workflow_engine(&path, steps, evict_after)?;
    let workers = engine.serve(worker_options())?;
    workers.wait_until_ready().await;
    let mut per_step = Vec::with_capacity(samples);
    let mut before = engine.stats();
    for i in 0..(warmup + samples) as u64 {
        if i == warmup as u64 {
            before = engine.stats();
        }
        let input = i * 1_000;
        let start = Instant::now();
        let id = engine.dispatch(STEPS, &input).await?;
        let out = engine.wait_for(STEPS, id, Some(WAIT_LIMIT)).await?;
        let took = start.elapsed();
        if out != input + steps {
            bail!("workflow {id} returned {out}, expected {}", input + steps);
        }
        if i >= warmup as u64 {
            per_step.push(took.as_secs_f64() * 1e6 / steps as f64);
        }
    }
    let after = engine.stats();
    per_step.sort_by(f64::total_cmp);
    let p50 = percentile(&per_step, 50.0);
    let p99 = percentile(&per_step, 99.0);
    eprintln!(
        "workflow latency: {samples} workflows of {steps} steps, per step p50 {p50:.0} us, p99 {p99:.0} us, \
         min {:.0} us, max {:.0} us (whole workflow p50 {:.2} ms)",
        per_step[0],
        per_step[per_step.len() - 1],
        p50 * steps as f64 / 1e3
    );
    report_batches("workflow latency", &before, &after);
    let per = |a: u64, b: u64| (a - b) as f64 / samples as f64;
    eprintln!(
        "  per workflow of {steps} steps: {:.1} write transactions; engine counters: {:.1} claims, \
         {:.1} completions, {:.1} failures",
        per(after.batches, before.batches),
        per(after.claims, before.claims),
        per(after.completions, before.completions),
        per(after.failures, before.failures)
    );
    workers.drain().await?;
    engine.close().await?;
    Ok((p50, p99))
}

/// Fan-out: one workflow maps `ECHO` over `children` items; dispatch to `wait_for` returning.
/// Each run on a fresh engine; the median of `runs`.
async fn fanout(dir: &Path, children: u64, runs: usize, evict_after: Option<Duration>) -> anyhow::Result<f64> {
    let mut millis = Vec::with_capacity(runs);
    for r in 0..runs {
        let path = dir.join(format!("fanout_{r}.stent"));
        let engine = open_workflow_engine(&path, 1, evict_after)?;
        let workers = engine.serve(worker_options())?;
        workers.wait_until_ready().await;
        let before = engine.stats();
        let start = Instant::now();
        let id = engine.dispatch(FANOUT, &children).await?;
        let sum = engine.wait_for(FANOUT, id, Some(WAIT_LIMIT)).await?;
        let took = start.elapsed();
        let after = engine.stats();
        if sum != children * (children - 1) / 2 {
            bail!("fan-out returned {sum}, expected {}", children * (children - 1) / 2);
        }
        let ms = took.as_secs_f64() * 1e3;
        eprintln!("fan-out run {}: {children} children in {ms:.1} ms", r + 1);
        report_batches("fan-out", &before, &after);
        millis.push(ms);
        workers.drain().await?;
        engine.close().await?;
        std::fs::remove_file(&path)?;
    }
    millis.sort_by(f64::total_cmp);
    Ok(millis[millis.len() / 2])
}

/// One workflow of `steps` sequential steps alone on a fresh engine; steps/s, median of `runs`.
async fn long_workflow(dir: &Path, steps: u64, runs: usize, evict_after: Option<Duration>) -> anyhow::Result<f64> {
    let mut rates = Vec::with_capacity(runs);
    for r in 0..runs {
        let path = dir.join(format!("long_{r}.stent"));
        let engine = open_workflow_engine(&path, steps, evict_after)?;
        let workers = engine.serve(worker_options())?;
        workers.wait_until_ready().await;
        let before = engine.stats();
        let start = Instant::now();
        let id = engine.dispatch(STEPS, &0).await?;
        let out = engine.wait_for(STEPS, id, Some(WAIT_LIMIT)).await?;
        let took = start.elapsed();
        if out != steps {
            bail!("long workflow returned {out}, expected {steps}");
        }
        let after = engine.stats();
        let rate = steps as f64 / took.as_secs_f64();
        eprintln!(
            "long workflow run {}: {steps} steps in {:.1} ms = {rate:.0} steps/s ({} parked resumes)",
            r + 1,
            took.as_secs_f64() * 1e3,
            engine.stats().resumes
        );
        report_batches("long workflow", &before, &after);
        rates.push(rate);
        workers.drain().await?;
        engine.close().await?;
        std::fs::remove_file(&path)?;
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Runs per second of a workflow that loops with `continue_as_new` (one call per run), the
/// median of `repeats` loops of `runs` runs each on a fresh file.
async fn continue_loop(dir: &Path, runs: u64, repeats: usize, evict_after: Option<Duration>) -> anyhow::Result<f64> {
    let mut rates = Vec::with_capacity(repeats);
    for r in 0..repeats {
        let path = dir.join(format!("loop_{r}.stent"));
        let engine = open_workflow_engine(&path, 1, evict_after)?;
        let workers = engine.serve(worker_options())?;
        workers.wait_until_ready().await;
        let before = engine.stats();
        let start = Instant::now();
        let id = engine.dispatch(LOOP, &(runs - 1)).await?;
        engine.wait_for(LOOP, id, Some(WAIT_LIMIT)).await?;
        let took = start.elapsed();
        let after = engine.stats();
        if after.runs_continued - before.runs_continued != runs - 1 {
            bail!("the loop continued {} times, expected {}", after.runs_continued - before.runs_continued, runs - 1);
        }
        let rate = runs as f64 / took.as_secs_f64();
        eprintln!(
            "continue-as-new loop {}: {runs} runs in {:.1} ms = {rate:.0} runs/s",
            r + 1,
            took.as_secs_f64() * 1e3
        );
        report_batches("continue-as-new loop", &before, &after);
        rates.push(rate);
        workers.drain().await?;
        engine.close().await?;
        std::fs::remove_file(&path)?;
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Hidden argument: the child process of the unclean-shutdown figure.
const CRASH_CHILD: &str = "--history-crash-child";
/// `Engine::check` calls on the history file (each reads every record).
const CHECK_RUNS: usize = 3;
/// Executions in flight at once while the history file is built.
const HISTORY_WAVE: u64 = 20_000;

/// Builds `n` finished executions of `ECHO` in the file at `path`, in waves of concurrent
/// dispatches (each: dispatch, then `wait_for`) run by one pool, then closes the engine.
async fn build_history(path: &Path, n: u64) -> anyhow::Result<()> {
    let engine = open_engine(path)?;
    let workers = engine.serve(worker_options())?;
    workers.wait_until_ready().await;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let wave = HISTORY_WAVE.min(n - done);
        let mut tasks = tokio::task::JoinSet::new();
        for i in done..done + wave {
            let engine = engine.clone();
            tasks.spawn(async move {
                let id = engine.dispatch(ECHO, &i).await?;
                let out = engine.wait_for(ECHO, id, Some(WAIT_LIMIT)).await?;
                if out != i {
                    bail!("execution {id} returned {out}, expected {i}");
                }
                Ok(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("a dispatcher task panicked")??;
        }
        done += wave;
        if done % 100_000 == 0 || done == n {
            let s = start.elapsed().as_secs_f64();
            eprintln!("history: {done} of {n} executions finished in {s:.1} s ({:.0}/s)", done as f64 / s);
        }
    }
    workers.drain().await?;
    engine.close().await?;
    Ok(())
}

/// Wall time of `Engine::open` made by `open`, in ms; the engine is closed (untimed).
async fn time_open(open: impl Fn() -> stent::Result<Engine>) -> anyhow::Result<f64> {
    let start = Instant::now();
    let engine = open()?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    engine.close().await?;
    Ok(ms)
}

/// Median open time in ms over `runs` opens, after one unmeasured open (timed on stderr only:
/// on a file of an older schema it is the one that migrates it).
async fn median_open(label: &str, runs: usize, open: impl Fn() -> stent::Result<Engine>) -> anyhow::Result<f64> {
    let first = time_open(&open).await?;
    eprintln!("{label}: first (unmeasured) open {first:.2} ms");
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        ms.push(time_open(&open).await?);
    }
    ms.sort_by(f64::total_cmp);
    eprintln!("{label}: {:?} ms", ms.iter().map(|m| (m * 100.0).round() / 100.0).collect::<Vec<_>>());
    Ok(ms[ms.len() / 2])
}

/// The child of the unclean-shutdown figure: opens the file, runs one execution, and exits
/// without closing the engine (no destructor runs), as a killed process would.
async fn crash_child(path: &Path) -> anyhow::Result<()> {
    let engine = open_engine(path)?;
    let workers = engine.serve(worker_options())?;
    let id = engine.dispatch(ECHO, &7).await?;
    engine.wait_for(ECHO, id, Some(WAIT_LIMIT)).await?;
    drop(workers);
    std::process::exit(0);
}

/// The history figures: see the module documentation.
async fn history(dir: &Path, args: &Args, n: u64) -> anyhow::Result<Vec<Figure>> {
    let path = args.history_path.clone().unwrap_or_else(|| dir.join("history.stent"));
    if path.exists() {
        eprintln!("history: reusing {}", path.display());
    } else {
        build_history(&path, n).await?;
    }
    let file_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
    eprintln!("history: file {} of {file_mb:.1} MB", path.display());

    let open_default = median_open("history: open, default options", args.opens, || open_engine(&path)).await?;
    let open_full = median_open("history: open, VerifyOnOpen::Full", args.opens, || {
        Engine::builder()
            .path(&path)
            .verify_on_open(VerifyOnOpen::Full)
            .activity_with(
                ECHO,
                |x: u64| async move { Ok::<_, ActivityError>(x) },
                stent::FunctionOptions::new().retry(RetryPolicy::none()),
            )
            .open()
    })
    .await?;

    let engine = open_engine(&path)?;
    let counts = engine.counts_by_state()?;
    let finished: u64 = counts
        .iter()
        .filter(|(s, _)| *s != ExecutionState::Pending && *s != ExecutionState::Running)
        .map(|(_, c)| c)
        .sum();
    eprintln!("history: counts {counts:?}");
    if finished < n {
        bail!("the history file holds {finished} finished executions, expected at least {n}");
    }
    let mut micros = Vec::with_capacity(args.count_calls);
    for _ in 0..args.count_calls {
        let start = Instant::now();
        let again = engine.counts_by_state()?;
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        if again != counts {
            bail!("counts_by_state changed on an idle engine: {again:?} after {counts:?}");
        }
    }
    let mut checks = Vec::with_capacity(CHECK_RUNS);
    for _ in 0..CHECK_RUNS {
        let start = Instant::now();
        let problems = engine.check()?;
        checks.push(start.elapsed().as_secs_f64() * 1e3);
        if !problems.is_empty() {
            bail!("check found problems in the history file: {problems:?}");
        }
    }
    engine.close().await?;
    checks.sort_by(f64::total_cmp);
    eprintln!("history: check: {checks:?} ms");
    micros.sort_by(f64::total_cmp);
    let counts_us = micros[micros.len() / 2];
    eprintln!(
        "history: counts_by_state: {} calls, median {counts_us:.1} us, min {:.1} us, max {:.1} us",
        micros.len(),
        micros[0],
        micros[micros.len() - 1]
    );

    let mut unclean = Vec::with_capacity(args.unclean_opens);
    for _ in 0..args.unclean_opens {
        let status = std::process::Command::new(std::env::current_exe()?).arg(CRASH_CHILD).arg(&path).status()?;
        if !status.success() {
            bail!("the crashing child exited with {status}");
        }
        unclean.push(time_open(|| open_engine(&path)).await?);
    }
    unclean.sort_by(f64::total_cmp);
    eprintln!(
        "history: open after an unclean exit: {:?} ms",
        unclean.iter().map(|m| (m * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
    let mut figures = vec![
        Figure { name: "history_open_ms", value: open_default, unit: "ms" },
        Figure { name: "history_open_full_ms", value: open_full, unit: "ms" },
        Figure { name: "history_counts_us", value: counts_us, unit: "us" },
        Figure { name: "history_check_ms", value: checks[checks.len() / 2], unit: "ms" },
    ];
    if !unclean.is_empty() {
        figures.push(Figure { name: "history_unclean_open_ms", value: unclean[unclean.len() / 2], unit: "ms" });
    }
    figures.push(Figure { name: "history_file_mb", value: file_mb, unit: "MB" });
    Ok(figures)
}

/// The engine of the schedule figures: `SCHEDULED` registered, time from `clock`.
fn open_schedule_engine(path: &Path, clock: &stent::ManualClock) -> stent::Result<Engine> {
    Engine::builder()
        .path(path)
        .clock(clock.clone())
        .workflow(SCHEDULED, |_ctx: Ctx, x: u64| async move { Ok(x) })
        .open()
}

/// Schedule `i` of the schedule figures: cron specs in four time zones (daily, weekdays only,
/// stepped, monthly, with seconds) and `every` intervals from 90 s to a day, spread over the
/// minutes and hours so their fire times differ.
fn schedule_spec(i: usize) -> stent::Result<stent::ScheduleSpec> {
    use stent::ScheduleSpec;
    const ZONES: [&str; 4] = ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata"];
    const PERIODS: [&str; 6] = ["90s", "5m", "15m", "1h", "6h", "1d"];
    let (minute, hour, zone) = (i % 60, (i / 60) % 24, ZONES[(i / 7) % ZONES.len()]);
    match i % 8 {
        0 | 1 => ScheduleSpec::cron(format!("{minute} {hour} * * *"), zone),
        2 => ScheduleSpec::cron(format!("{minute} {hour} * * MON-FRI"), zone),
        3 => ScheduleSpec::cron(format!("{}-59/15 * * * *", minute % 15), zone),
        4 => ScheduleSpec::cron(format!("{minute} {hour} {} * *", 1 + i % 28), zone),
        5 => ScheduleSpec::cron(format!("{} {minute} {hour} * * SAT,SUN", i % 60), zone),
        _ => ScheduleSpec::every(PERIODS[(i / 8) % PERIODS.len()]),
    }
}

/// A line of `/proc/self/status` (`VmRSS`, `VmHWM`) in MB (10^6 bytes; `/proc` counts KiB).
fn proc_status_mb(key: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .with_context(|| format!("no {key} in /proc/self/status"))?;
    let kib: f64 = line.trim().trim_end_matches("kB").trim().parse().with_context(|| format!("{key}: {line:?}"))?;
    Ok(kib * 1024.0 / 1e6)
}

/// CPU time the whole process used so far (every thread, user + system), in seconds, from
/// fields 14 and 15 of `/proc/self/stat`.
fn process_cpu_s() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat.rsplit_once(')').context("/proc/self/stat has no command name")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("/proc/self/stat is short")?.parse::<u64>().context("/proc/self/stat")? as f64)
    };
    // `rest` starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    Ok((ticks(11)? + ticks(12)?) / USER_HZ)
}

/// Hidden argument: the child process of the schedule figures (`schedules_child`).
const SCHEDULES_CHILD: &str = "--schedules-child";

/// What the child of the schedule figures measured, one JSON line on its stdout.
#[derive(serde::Serialize, serde::Deserialize)]
struct ArmedFigures {
    rss_empty_mb: f64,
    rss_armed_mb: f64,
    idle_cpu_s: f64,
    idle_wall_s: f64,
    idle_batches: u64,
}

/// Opens `path` and one pool, waits `SETTLE`, reads VmRSS; the engine and pool stay open.
async fn open_and_serve(path: &Path, clock: &stent::ManualClock) -> anyhow::Result<(Engine, stent::WorkerPool, f64)> {
    const SETTLE: Duration = Duration::from_millis(200);
    let engine = open_schedule_engine(path, clock)?;
    let workers = engine.serve(worker_options())?;
    workers.wait_until_ready().await;
    tokio::time::sleep(SETTLE).await;
    let rss = proc_status_mb("VmRSS")?;
    Ok((engine, workers, rss))
}

/// The child of the schedule figures, a fresh process (so nothing another phase allocated
/// is counted): VmRSS with an empty file open and one pool, closed; then the same with the
/// schedules' file, every timer armed; then the CPU of the whole process over `idle_s` real
/// seconds with that engine idle; then checks that nothing fired.
async fn schedules_child(path: &Path, empty: &Path, idle_s: f64, n: usize) -> anyhow::Result<()> {
    let clock = stent::ManualClock::new(SCHEDULE_CLOCK_MS);
    let (engine, workers, rss_empty_mb) = open_and_serve(empty, &clock).await?;
    workers.drain().await?;
    engine.close().await?;
    let (engine, workers, rss_armed_mb) = open_and_serve(path, &clock).await?;

    let before = engine.stats();
    let cpu_start = process_cpu_s()?;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(idle_s)).await;
    let idle_cpu_s = process_cpu_s()? - cpu_start;
    let idle_wall_s = wall.elapsed().as_secs_f64();
    let idle_batches = engine.stats().batches - before.batches;

    // Nothing fired, and every schedule is still armed for a time after the clock.
    let listed = engine.schedules().list()?;
    if listed.len() != n {
        bail!("{} schedules listed, expected {n}", listed.len());
    }
    if let Some(s) = listed.iter().find(|s| s.fires != 0 || s.next_fire_ms.is_none_or(|t| t <= SCHEDULE_CLOCK_MS)) {
        bail!("schedule {} fired or is not armed: {s:?}", s.name);
    }
    let executions: u64 = engine.counts_by_state()?.iter().map(|(_, c)| c).sum();
    if executions != 0 {
        bail!("{executions} executions exist, expected none (no schedule is due)");
    }
    workers.drain().await?;
    engine.close().await?;
    let figures = ArmedFigures { rss_empty_mb, rss_armed_mb, idle_cpu_s, idle_wall_s, idle_batches };
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

/// The schedule figures: see the module documentation.
async fn schedules(dir: &Path, args: &Args) -> anyhow::Result<Vec<Figure>> {
    let n = args.schedule_count;
    let path = dir.join("schedules.stent");
    let empty = dir.join("schedules_empty.stent");
    let clock = stent::ManualClock::new(SCHEDULE_CLOCK_MS);
    let (engine, workers, rss_before) = open_and_serve(&path, &clock).await?;
    let mut specs = Vec::with_capacity(n);
    for i in 0..n {
        specs.push(stent::Schedule::new(format!("tenant-{i:05}-report"), SCHEDULED, &(i as u64), schedule_spec(i)?));
    }
    let before = engine.stats();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for schedule in specs {
        let engine = engine.clone();
        tasks.spawn(async move {
            let info = engine.schedules().upsert(schedule).await?;
            match info.next_fire_ms {
                Some(t) if t > SCHEDULE_CLOCK_MS => Ok(()),
                other => bail!("schedule {} has next fire {other:?}, expected one after the clock", info.name),
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("an upsert task panicked")??;
    }
    let create_s = start.elapsed().as_secs_f64();
    let after = engine.stats();
    let rss_created = proc_status_mb("VmRSS")?;
    eprintln!("schedules: {n} upserts in {create_s:.3} s = {:.0} upserts/s", n as f64 / create_s);
    report_batches("schedules", &before, &after);
    workers.drain().await?;
    engine.close().await?;
    let file_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
    eprintln!("schedules: file {} of {file_mb:.2} MB", path.display());

    let open_ms = median_open("schedules: open", args.opens, || open_schedule_engine(&path, &clock)).await?;
    open_schedule_engine(&empty, &clock)?.close().await?;
    let empty_ms =
        median_open("schedules: open of an empty file (baseline)", args.opens, || open_schedule_engine(&empty, &clock))
            .await?;
    eprintln!("schedules: open {open_ms:.2} ms against {empty_ms:.2} ms for an empty file");

    // Reopened in the process that made the upserts and the opens above: its VmRSS also
    // counts the heap they left to the allocator for reuse, so it depends on what ran before
    // (stderr only; the figure comes from a fresh process).
    let (engine, workers, rss_reopened) = open_and_serve(&path, &clock).await?;
    workers.drain().await?;
    engine.close().await?;
    eprintln!(
        "schedules: this process: VmRSS {rss_before:.1} MB with the empty file open, {rss_created:.1} MB after the \
         upserts, {rss_reopened:.1} MB reopened (+{:.1} MB)",
        rss_reopened - rss_before
    );

    let output = std::process::Command::new(std::env::current_exe()?)
        .arg(SCHEDULES_CHILD)
        .arg(&path)
        .arg(&empty)
        .arg(args.idle_s.to_string())
        .arg(n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("the schedules child exited with {}", output.status);
    }
    let armed: ArmedFigures =
        serde_json::from_slice(&output.stdout).context("reading the schedules child's figures")?;
    let rss_mb = armed.rss_armed_mb - armed.rss_empty_mb;
    let idle_pct = armed.idle_cpu_s / armed.idle_wall_s * 100.0;
    eprintln!(
        "schedules: fresh process: VmRSS {:.1} MB with the empty file open, {:.1} MB with the {n} schedules armed \
         (+{rss_mb:.1} MB, {:.0} bytes per schedule)",
        armed.rss_empty_mb,
        armed.rss_armed_mb,
        rss_mb * 1e6 / n as f64
    );
    eprintln!(
        "schedules: idle {:.2} s: {:.2} s CPU = {idle_pct:.2} % of one core; {} write transactions",
        armed.idle_wall_s, armed.idle_cpu_s, armed.idle_batches
    );
    std::fs::remove_file(&path)?;
    std::fs::remove_file(&empty)?;
    Ok(vec![
        Figure { name: "schedules_10k_create_ms", value: create_s * 1e3, unit: "ms" },
        Figure { name: "schedules_10k_upserts_per_s", value: n as f64 / create_s, unit: "upserts/s" },
        Figure { name: "schedules_10k_file_mb", value: file_mb, unit: "MB" },
        Figure { name: "schedules_10k_open_ms", value: open_ms, unit: "ms" },
        Figure { name: "schedules_10k_rss_mb", value: rss_mb, unit: "MB" },
        Figure { name: "schedules_10k_idle_cpu_pct", value: idle_pct, unit: "%" },
    ])
}

/// Hidden argument: the child process of the rate-limit figures (`rate_limit_child`).
const RATE_CHILD: &str = "--rate-limit-child";
/// The rate-limited activity of the rate-limit figures (returns its input).
const RATED: Activity<u64, u64> = Activity::new("rated_echo");
/// Its limit: `RATE_PER` starts per `RATE_PERIOD`, so a burst of `RATE_PER` on a fresh
/// budget, then one start every 50 ms.
const RATE_PER: u32 = 20;
const RATE_PERIOD: &str = "1s";

/// The backlog of the rate-limit figures: `RATE_PER` executions per second of `--rate-s`.
fn rate_backlog(rate_s: f64) -> u64 {
    (f64::from(RATE_PER) * rate_s).round() as u64
}

/// What the child of the rate-limit figures measured, one JSON line on its stdout.
#[derive(serde::Serialize, serde::Deserialize)]
struct RateRun {
    /// Each execution's completion (its `wait_for` returning), in seconds after the first
    /// dispatch, sorted.
    completed_s: Vec<f64>,
    /// The first dispatch call's start to the last one's return.
    dispatch_s: f64,
    /// Process CPU and wall time from the first dispatch to the last completion.
    cpu_s: f64,
    wall_s: f64,
    /// The same from the first completion after the burst (the `RATE_PER + 1`-th) to the last.
    steady_cpu_s: f64,
    steady_wall_s: f64,
    claims: u64,
    rate_limited: u64,
    completions: u64,
    failures: u64,
    batches: u64,
    ops: u64,
}

/// The child of the rate-limit figures, a fresh process on the system clock: opens `path`
/// with the rate-limited activity and one pool, dispatches `n` executions at once and waits
/// for each, reading the process's CPU time at the first dispatch, at the first completion
/// after the burst and at the last.
async fn rate_limit_child(path: &Path, n: u64) -> anyhow::Result<()> {
    const SETTLE: Duration = Duration::from_millis(200);
    let engine = Engine::builder()
        .path(path)
        .activity_with(
            RATED,
            |x: u64| async move { Ok::<_, ActivityError>(x) },
            stent::FunctionOptions::new().retry(RetryPolicy::none()).rate_limit(RATE_PER, RATE_PERIOD),
        )
        .open()?;
    let workers = engine.serve(worker_options())?;
    workers.wait_until_ready().await;
    tokio::time::sleep(SETTLE).await;

    let before = engine.stats();
    let cpu_start = process_cpu_s()?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let engine = engine.clone();
        tasks.spawn(async move {
            let id = engine.dispatch(RATED, &i).await?;
            let dispatched_s = start.elapsed().as_secs_f64();
            let out = engine.wait_for(RATED, id, Some(WAIT_LIMIT)).await?;
            if out != i {
                bail!("execution {id} returned {out}, expected {i}");
            }
            Ok((dispatched_s, start.elapsed().as_secs_f64()))
        });
    }
    let mut completed_s = Vec::with_capacity(n as usize);
    let mut dispatch_s = 0.0f64;
    let mut steady = None;
    while let Some(joined) = tasks.join_next().await {
        let (dispatched, done) = joined.context("a dispatcher task panicked")??;
        dispatch_s = dispatch_s.max(dispatched);
        completed_s.push(done);
        if completed_s.len() == RATE_PER as usize + 1 {
            steady = Some((process_cpu_s()?, Instant::now()));
        }
    }
    let cpu_end = process_cpu_s()?;
    let end = Instant::now();
    let (steady_cpu, steady_start) = steady.context("the backlog is no larger than the burst")?;
    completed_s.sort_by(f64::total_cmp);
    let done = completed(&engine)?;
    if done != n {
        bail!("{done} executions completed, expected {n}");
    }
    // After the drain: a worker counts its completion once its commit returns, which may be
    // after `wait_for` saw it.
    workers.drain().await?;
    let after = engine.stats();
    engine.close().await?;
    let run = RateRun {
        completed_s,
        dispatch_s,
        cpu_s: cpu_end - cpu_start,
        wall_s: (end - start).as_secs_f64(),
        steady_cpu_s: cpu_end - steady_cpu,
        steady_wall_s: (end - steady_start).as_secs_f64(),
        claims: after.claims - before.claims,
        rate_limited: after.rate_limited - before.rate_limited,
        completions: after.completions - before.completions,
        failures: after.failures - before.failures,
        batches: after.batches - before.batches,
        ops: after.ops - before.ops,
    };
    println!("{}", serde_json::to_string(&run)?);
    Ok(())
}

/// The rate-limit figures: see the module documentation.
async fn rate_limit(dir: &Path, args: &Args) -> anyhow::Result<Vec<Figure>> {
    let n = rate_backlog(args.rate_s);
    let path = dir.join("rate_limit.stent");
    let output = std::process::Command::new(std::env::current_exe()?)
        .arg(RATE_CHILD)
        .arg(&path)
        .arg(n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        bail!("the rate-limit child exited with {}", output.status);
    }
    let run: RateRun = serde_json::from_slice(&output.stdout).context("reading the rate-limit child's figures")?;
    std::fs::remove_file(&path)?;

    let burst = RATE_PER as usize;
    let t = &run.completed_s;
    let steady = &t[burst..];
    let span = steady[steady.len() - 1] - steady[0];
    let per_s = (steady.len() - 1) as f64 / span;
    let gaps: Vec<f64> = steady.windows(2).map(|w| (w[1] - w[0]) * 1e3).collect();
    let (min_gap, max_gap) = gaps.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &g| (lo.min(g), hi.max(g)));
    let deferred = n - u64::from(RATE_PER);
    let deferrals = run.rate_limited as f64 / deferred as f64;
    let claims_per = (run.claims + run.rate_limited) as f64 / run.completions.max(1) as f64;
    let cpu_pct = run.steady_cpu_s / run.steady_wall_s * 100.0;
    eprintln!(
        "rate limit: {n} dispatched in {:.1} ms; the burst of {burst} done {:.1} ms after the first dispatch, \
         completion {} at {:.1} ms, the last at {:.3} s",
        run.dispatch_s * 1e3,
        t[burst - 1] * 1e3,
        burst + 1,
        t[burst] * 1e3,
        t[t.len() - 1]
    );
    eprintln!(
        "rate limit: steady part {} completions over {span:.3} s = {per_s:.2}/s (limit {RATE_PER} per \
         {RATE_PERIOD}); gaps between completions {min_gap:.1} to {max_gap:.1} ms",
        steady.len()
    );
    eprintln!(
        "rate limit: {} claims started, {} deferred ({deferred} tasks beyond the burst: {deferrals:.3} each), \
         {} completions, {} failures: {claims_per:.3} claim operations per completion",
        run.claims, run.rate_limited, run.completions, run.failures
    );
    eprintln!(
        "rate limit: CPU {:.2} s over the steady {:.2} s = {cpu_pct:.2} % of one core ({:.2} ms per completion); \
         {:.2} s over the whole {:.2} s = {:.2} %; {} write transactions, {} ops ({:.2} transactions per execution)",
        run.steady_cpu_s,
        run.steady_wall_s,
        run.steady_cpu_s * 1e3 / (steady.len() - 1) as f64,
        run.cpu_s,
        run.wall_s,
        run.cpu_s / run.wall_s * 100.0,
        run.batches,
        run.ops,
        run.batches as f64 / n as f64
    );
    Ok(vec![
        Figure { name: "rate_limited_per_s", value: per_s, unit: "completions/s" },
        Figure { name: "rate_limited_cpu_pct", value: cpu_pct, unit: "%" },
        Figure { name: "rate_limited_deferrals_per_task", value: deferrals, unit: "deferrals/task" },
        Figure { name: "rate_limited_claims_per_completion", value: claims_per, unit: "claims/completion" },
        Figure { name: "rate_limited_drain_s", value: run.wall_s, unit: "s" },
    ])
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn value_bytes(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; REDB_VALUE_BYTES];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

/// Raw redb: one record per write transaction, each made durable.
fn redb_commits(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("redb_commits.redb");
    let db = Database::create(&path)?;
    let start = Instant::now();
    for i in 0..REDB_COMMITS {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(RAW)?;
            table.insert(i, value_bytes(i).as_slice())?;
        }
        txn.commit()?;
    }
    let elapsed = start.elapsed();
    drop(db);
    std::fs::remove_file(&path)?;
    let rate = REDB_COMMITS as f64 / elapsed.as_secs_f64();
    eprintln!("redb: {REDB_COMMITS} one-record commits in {:.3} s = {rate:.0} commits/s", elapsed.as_secs_f64());
    Ok(rate)
}

/// Raw redb: 1,000 records per write transaction, each made durable.
fn redb_batches(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("redb_batches.redb");
    let db = Database::create(&path)?;
    let start = Instant::now();
    for b in 0..REDB_BATCHES {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(RAW)?;
            for j in 0..REDB_BATCH_RECORDS {
                let i = b * REDB_BATCH_RECORDS + j;
                table.insert(i, value_bytes(i).as_slice())?;
            }
        }
        txn.commit()?;
    }
    let elapsed = start.elapsed();
    drop(db);
    std::fs::remove_file(&path)?;
    let records = REDB_BATCHES * REDB_BATCH_RECORDS;
    let rate = records as f64 / elapsed.as_secs_f64();
    eprintln!(
        "redb: {REDB_BATCHES} transactions of {REDB_BATCH_RECORDS} records in {:.3} s = {rate:.0} records/s",
        elapsed.as_secs_f64()
    );
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut raw = std::env::args().skip(1);
    match raw.next().as_deref() {
        Some(CRASH_CHILD) => {
            let path = raw.next().context("the crashing child needs a path")?;
            return crash_child(Path::new(&path)).await;
        }
        Some(SCHEDULES_CHILD) => {
            let mut next = |what: &str| raw.next().with_context(|| format!("the schedules child needs {what}"));
            let (path, empty) = (PathBuf::from(next("a path")?), PathBuf::from(next("an empty path")?));
            let idle_s = next("the idle seconds")?.parse()?;
            let n = next("the schedule count")?.parse()?;
            return schedules_child(&path, &empty, idle_s, n).await;
        }
        Some(RATE_CHILD) => {
            let path = raw.next().context("the rate-limit child needs a path")?;
            let n = raw.next().context("the rate-limit child needs a backlog")?.parse()?;
            return rate_limit_child(Path::new(&path), n).await;
        }
        _ => {}
    }
    let args = parse_args()?;
    let dir = match &args.dir {
        Some(parent) => tempfile::Builder::new().prefix("stent-bench-").tempdir_in(parent)?,
        None => tempfile::Builder::new().prefix("stent-bench-").tempdir()?,
    };
    eprintln!(
        "stent bench: n={} samples={} (after {} warm-up) pool={} in {}",
        args.n,
        args.samples,
        args.warmup,
        POOL_CONCURRENCY,
        dir.path().display()
    );

    let mut figures = Vec::new();
    let mut baselines = None;
    if args.executions {
        let redb_commit = redb_commits(dir.path())?;
        let redb_batch = redb_batches(dir.path())?;
        let executions = throughput(dir.path(), args.n).await?;
        let (p50, p99) = latency(dir.path(), args.warmup, args.samples).await?;
        figures.extend([
            Figure { name: "trivial_executions_per_s", value: executions, unit: "executions/s" },
            Figure { name: "dispatch_to_completion_p50_us", value: p50, unit: "us" },
            Figure { name: "dispatch_to_completion_p99_us", value: p99, unit: "us" },
            Figure { name: "redb_commit_per_s", value: redb_commit, unit: "commits/s" },
            Figure { name: "redb_batch_records_per_s", value: redb_batch, unit: "records/s" },
        ]);
        baselines = Some((executions, redb_commit, redb_batch));
    }
    if args.workflows {
        eprintln!(
            "workflows: {} concurrent x {} steps, {} rounds; latency {} samples (after {} warm-up); fan-out {} x {}",
            args.wf_concurrent,
            args.wf_steps,
            args.wf_rounds,
            args.wf_samples,
            args.wf_warmup,
            args.fanout,
            args.fanout_runs
        );
        let evict = args.evict_after;
        let steps = workflow_throughput(dir.path(), args.wf_concurrent, args.wf_steps, args.wf_rounds, evict).await?;
        let (p50, p99) = workflow_latency(dir.path(), args.wf_steps, args.wf_warmup, args.wf_samples, evict).await?;
        let fan = fanout(dir.path(), args.fanout, args.fanout_runs, evict).await?;
        let long = long_workflow(dir.path(), args.long_steps, args.long_runs, evict).await?;
        let looped = continue_loop(dir.path(), args.loop_runs, args.long_runs, evict).await?;
        figures.extend([
            Figure { name: "workflow_steps_per_s", value: steps, unit: "steps/s" },
            Figure { name: "workflow_step_p50_us", value: p50, unit: "us" },
            Figure { name: "workflow_step_p99_us", value: p99, unit: "us" },
            Figure { name: "fanout_1000_children_ms", value: fan, unit: "ms" },
            Figure { name: "long_workflow_steps_per_s", value: long, unit: "steps/s" },
            Figure { name: "continue_as_new_runs_per_s", value: looped, unit: "runs/s" },
        ]);
    }
    if args.schedules {
        eprintln!("schedules: {} idle schedules, {} opens, {} s idle", args.schedule_count, args.opens, args.idle_s);
        figures.extend(schedules(dir.path(), &args).await?);
    }
    if args.rate_limit {
        eprintln!(
            "rate limit: {} executions of an activity limited to {RATE_PER} per {RATE_PERIOD}, system clock",
            rate_backlog(args.rate_s)
        );
        figures.extend(rate_limit(dir.path(), &args).await?);
    }
    if let Some(n) = args.history {
        eprintln!("history: {n} finished executions");
        figures.extend(history(dir.path(), &args, n).await?);
    }
    for f in &figures {
        let value = (f.value * 10.0).round() / 10.0;
        if args.json {
            // Keys in the documented order: name, value, unit.
            println!(
                "{{\"name\":{},\"value\":{},\"unit\":{}}}",
                serde_json::Value::from(f.name),
                serde_json::Value::from(value),
                serde_json::Value::from(f.unit)
            );
        } else {
            println!("{:<36} {:>14.1} {}", f.name, value, f.unit);
        }
    }
    if let Some((executions, redb_commit, redb_batch)) = baselines {
        eprintln!(
            "ratios: executions/s / redb commits/s = {:.2}; executions/s / redb records/s = {:.4}",
            executions / redb_commit,
            executions / redb_batch
        );
    }
    dir.close().context("removing the bench directory")?;
    Ok(())
}
