//! End-to-end performance figures of the engine beside raw redb, all measured in one run on
//! one disk (a fresh temporary directory, removed at the end). See docs/PERFORMANCE.md.
//!
//!     cargo run --release --example bench -- --json [--n 20000] [--samples 2000] [--dir PATH]
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

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redb::{Database, Durability, TableDefinition};
use stent::engine::Stats;
use stent::{Activity, ActivityError, Engine, ExecutionState, RetryPolicy, WorkerOptions};

const ECHO: Activity<u64, u64> = Activity::new("echo");
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");

const POOL_CONCURRENCY: usize = 512;
const WAIT_LIMIT: Duration = Duration::from_secs(600);
const REDB_COMMITS: u64 = 2_000;
const REDB_BATCH_RECORDS: u64 = 1_000;
const REDB_BATCHES: u64 = 100;
const REDB_VALUE_BYTES: usize = 100;

struct Args {
    json: bool,
    n: usize,
    samples: usize,
    warmup: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { json: false, n: 20_000, samples: 2_000, warmup: 200, dir: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => args.json = true,
            "--n" => args.n = value("--n")?.parse().context("--n")?,
            "--samples" => args.samples = value("--samples")?.parse().context("--samples")?,
            "--warmup" => args.warmup = value("--warmup")?.parse().context("--warmup")?,
            "--dir" => args.dir = Some(PathBuf::from(value("--dir")?)),
            // `cargo bench` style flags are harmless here.
            "--bench" => {}
            "-h" | "--help" => {
                eprintln!("usage: bench [--json] [--n N] [--samples S] [--warmup W] [--dir PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.n == 0 || args.samples == 0 {
        bail!("--n and --samples must be at least 1");
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
        .activity(ECHO, |x: u64| async move { Ok::<_, ActivityError>(x) })
        .retry(RetryPolicy::none())
        .open()
}

fn worker_options() -> WorkerOptions {
    WorkerOptions { worker_id: "bench".into(), max_concurrency: POOL_CONCURRENCY, ..WorkerOptions::default() }
}

struct StatsSnapshot {
    batches: u64,
    ops: u64,
}

fn snapshot(stats: &Stats) -> StatsSnapshot {
    StatsSnapshot { batches: stats.batches.load(Ordering::Relaxed), ops: stats.ops.load(Ordering::Relaxed) }
}

fn report_batches(label: &str, before: &StatsSnapshot, after: &StatsSnapshot) {
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
    let workers = engine.serve(worker_options());
    workers.wait_until_ready().await;
    let before = snapshot(engine.stats());

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

    let after = snapshot(engine.stats());
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
    let workers = engine.serve(worker_options());
    workers.wait_until_ready().await;
    let mut micros = Vec::with_capacity(samples);
    let mut before = snapshot(engine.stats());
    for i in 0..(warmup + samples) as u64 {
        if i == warmup as u64 {
            before = snapshot(engine.stats());
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
    let after = snapshot(engine.stats());
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

    let redb_commit = redb_commits(dir.path())?;
    let redb_batch = redb_batches(dir.path())?;
    let executions = throughput(dir.path(), args.n).await?;
    let (p50, p99) = latency(dir.path(), args.warmup, args.samples).await?;

    let figures = [
        Figure { name: "trivial_executions_per_s", value: executions, unit: "executions/s" },
        Figure { name: "dispatch_to_completion_p50_us", value: p50, unit: "us" },
        Figure { name: "dispatch_to_completion_p99_us", value: p99, unit: "us" },
        Figure { name: "redb_commit_per_s", value: redb_commit, unit: "commits/s" },
        Figure { name: "redb_batch_records_per_s", value: redb_batch, unit: "records/s" },
    ];
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
            println!("{:<32} {:>14.1} {}", f.name, value, f.unit);
        }
    }
    eprintln!(
        "ratios: executions/s / redb commits/s = {:.2}; executions/s / redb records/s = {:.4}",
        executions / redb_commit,
        executions / redb_batch
    );
    dir.close().context("removing the bench directory")?;
    Ok(())
}
