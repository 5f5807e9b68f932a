//! Memory of sleeping workflows (issue 3): N workflows (default 100,000) each sleep one hour on
//! a manual clock; the process's resident memory is read while they all sleep; then the clock
//! passes the hour and every one must wake and finish. A real file in a fresh temporary
//! directory (removed at the end). See docs/PERFORMANCE.md.
//!
//!     cargo run --release --example sleepers -- [--json] [--n 100000] [--dispatchers 512] [--dir PATH]
//!
//! Phases, each timed: dispatch all N (from `--dispatchers` concurrent tokio tasks, so the
//! group-commit writer batches them); wait until every workflow has suspended on its timer
//! (nothing running, nothing due in the queue); read `VmRSS` and `VmHWM` from
//! `/proc/self/status`; advance the clock by one hour; wait until all N executions are
//! completed; check every result. Exits non-zero if any execution did not finish.
//!
//! With `--json`, stdout carries exactly one JSON line per figure,
//! `{"name":…,"value":…,"unit":…}`, and nothing else; progress goes to stderr. MB here is
//! 10^6 bytes (`/proc` reports KiB).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stent::testing::ManualClock;
use stent::{Ctx, Engine, ExecutionState, WorkerOptions, Workflow};

/// Sleeps one hour, then returns its input.
const SLEEPER: Workflow<u64, u64> = Workflow::new("sleeper");

const POOL_CONCURRENCY: u32 = 512;
const POLL: Duration = Duration::from_millis(100);

struct Args {
    json: bool,
    n: u64,
    dispatchers: u64,
    dir: Option<PathBuf>,
    /// Real-time limit of each waiting phase, so a lost wake-up fails instead of hanging.
    limit: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { json: false, n: 100_000, dispatchers: 512, dir: None, limit: Duration::from_secs(600) };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => args.json = true,
            "--n" => args.n = value("--n")?.parse().context("--n")?,
            "--dispatchers" => args.dispatchers = value("--dispatchers")?.parse().context("--dispatchers")?,
            "--dir" => args.dir = Some(PathBuf::from(value("--dir")?)),
            "--limit-s" => args.limit = Duration::from_secs(value("--limit-s")?.parse().context("--limit-s")?),
            "-h" | "--help" => {
                eprintln!("usage: sleepers [--json] [--n N] [--dispatchers D] [--dir PATH] [--limit-s SECONDS]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.n == 0 || args.dispatchers == 0 {
        bail!("--n and --dispatchers must be at least 1");
    }
    Ok(args)
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn memory() -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{name} missing"))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().context(name.to_string())?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn count(engine: &Engine, state: ExecutionState) -> anyhow::Result<u64> {
    Ok(engine.counts_by_state()?.into_iter().find(|(s, _)| *s == state).map_or(0, |(_, c)| c))
}

fn nonzero_counts(engine: &Engine) -> anyhow::Result<String> {
    let counts = engine.counts_by_state()?;
    Ok(counts.iter().filter(|(_, c)| *c > 0).map(|(s, c)| format!("{s}: {c}")).collect::<Vec<_>>().join(", "))
}

/// Polls `condition` every `POLL` until it holds; fails after `limit`.
async fn poll_until(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !condition()? {
        if start.elapsed() > limit {
            bail!("{what}: not reached within {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = match &args.dir {
        Some(parent) => tempfile::Builder::new().prefix("stent-sleepers-").tempdir_in(parent)?,
        None => tempfile::Builder::new().prefix("stent-sleepers-").tempdir()?,
    };
    let path = dir.path().join("sleepers.stent");
    let n = args.n;
    eprintln!("sleepers: n={n} dispatchers={} pool={POOL_CONCURRENCY} in {}", args.dispatchers, dir.path().display());

    let clock = ManualClock::default();
    let engine = Engine::builder()
        .path(&path)
        .clock(clock.clone())
        .workflow(SLEEPER, |ctx: Ctx, x: u64| async move {
            ctx.sleep("1h").await?;
            Ok(x)
        })
        .open()?;
    let workers = engine.serve(WorkerOptions {
        worker_id: "sleepers".into(),
        max_concurrency: POOL_CONCURRENCY,
        ..WorkerOptions::default()
    })?;
    workers.wait_until_ready().await;
    let (rss_start, _) = memory()?;
    eprintln!("RSS before dispatch: {:.1} MB", mb(rss_start));

    // Dispatch: D tasks, task d dispatching inputs d, d + D, d + 2D, ...
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for d in 0..args.dispatchers.min(n) {
        let engine = engine.clone();
        let stride = args.dispatchers;
        tasks.spawn(async move {
            let mut ids = Vec::new();
            let mut x = d;
            while x < n {
                ids.push((x, engine.dispatch(SLEEPER, &x).await?));
                x += stride;
            }
            anyhow::Ok(ids)
        });
    }
    let mut ids = Vec::with_capacity(n as usize);
    while let Some(joined) = tasks.join_next().await {
        ids.extend(joined.context("a dispatcher task panicked")??);
    }
    let dispatch_s = start.elapsed().as_secs_f64();
    eprintln!("dispatched {n} in {dispatch_s:.2} s ({:.0}/s)", n as f64 / dispatch_s);

    // Every workflow has run once and suspended on its timer when nothing is running and no
    // task is due: the only tasks left are the sleep steps, due in one hour.
    poll_until(args.limit, "all workflows suspended", || {
        Ok(workers.running() == 0 && engine.queue_depth("default")? == 0 && engine.running_tasks()?.is_empty())
    })
    .await?;
    let suspend_s = start.elapsed().as_secs_f64();
    let running = count(&engine, ExecutionState::Running)?;
    eprintln!(
        "all suspended {suspend_s:.2} s after the first dispatch ({:.2} s after the last); executions: {}",
        suspend_s - dispatch_s,
        nonzero_counts(&engine)?
    );
    if count(&engine, ExecutionState::Completed)? != 0 {
        bail!("some workflows finished before the clock moved");
    }
    // Let the runtime settle (freed attempt futures, channel buffers), then read memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_sleeping, hwm_sleeping) = memory()?;
    let file_bytes = std::fs::metadata(&path)?.len();
    eprintln!(
        "while {running} sleep: RSS {:.1} MB ({:.1} MiB), peak so far {:.1} MB; file {:.1} MB",
        mb(rss_sleeping),
        rss_sleeping as f64 / (1024.0 * 1024.0),
        mb(hwm_sleeping),
        mb(file_bytes)
    );

    // Pass the hour: every timer fires; every workflow must wake and finish.
    let wake = Instant::now();
    clock.advance(Duration::from_secs(3600));
    let finished =
        poll_until(args.limit, "all workflows finished", || Ok(count(&engine, ExecutionState::Completed)? == n)).await;
    let wake_s = wake.elapsed().as_secs_f64();
    let (rss_end, hwm_end) = memory()?;
    let completed = count(&engine, ExecutionState::Completed)?;
    eprintln!(
        "{completed} of {n} completed {wake_s:.2} s after the clock passed the hour ({:.0}/s); executions: {}; \
         RSS now {:.1} MB, peak {:.1} MB",
        completed as f64 / wake_s,
        nonzero_counts(&engine)?,
        mb(rss_end),
        mb(hwm_end)
    );
    if let Err(e) = finished {
        bail!("{e}: {completed} of {n} completed");
    }
    let mut wrong = 0u64;
    for (x, id) in &ids {
        if engine.result_of(SLEEPER, *id)? != Some(*x) {
            wrong += 1;
        }
    }
    if wrong > 0 {
        bail!("{wrong} of {n} workflows finished without their input as result");
    }
    eprintln!("all {n} results checked");

    workers.drain().await?;
    engine.close().await?;

    let figures = [
        Figure { name: "sleeping_workflows_rss_mb", value: mb(rss_sleeping), unit: "MB" },
        Figure { name: "sleeping_workflows_peak_rss_mb", value: mb(hwm_sleeping), unit: "MB" },
        Figure { name: "sleepers_wake_and_finish_s", value: wake_s, unit: "s" },
        Figure { name: "sleepers_dispatch_s", value: dispatch_s, unit: "s" },
        Figure { name: "sleepers_suspend_all_s", value: suspend_s, unit: "s" },
        Figure { name: "sleepers_peak_rss_mb", value: mb(hwm_end), unit: "MB" },
        Figure { name: "sleepers_file_mb", value: mb(file_bytes), unit: "MB" },
    ];
    for f in &figures {
        let value = (f.value * 100.0).round() / 100.0;
        if args.json {
            println!(
                "{{\"name\":{},\"value\":{},\"unit\":{}}}",
                serde_json::Value::from(f.name),
                serde_json::Value::from(value),
                serde_json::Value::from(f.unit)
            );
        } else {
            println!("{:<32} {:>10.2} {}", f.name, value, f.unit);
        }
    }
    dir.close().context("removing the sleepers directory")?;
    Ok(())
}
