//! The workload of the SIGKILL soak (`scripts/soak.sh`): N workflows of five sequential
//! activities. Activity k of execution E appends the line `E k` to the ledger before it
//! returns, and returns `n * k` for the workflow's input n, so execution n's result is
//! `15 * n`. Executions are dispatched with idempotency keys `soak-1` .. `soak-N`: a rerun
//! after a kill finds them instead of starting new ones, and resumes them. Exits 0 once all N
//! are completed, printing `{"completed":N}`.
//!
//!     cargo run --release --example soak -- --db PATH --ledger FILE --executions N
//!         [--step-ms MS] [--concurrency C]
//!
//! `--step-ms` (default 5) is how long each activity works before it writes its line, so a run
//! lasts long enough to be killed at random moments and looked at with `stent stats`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use stent::{Activity, ActivityError, Ctx, Engine, WorkerOptions, Workflow};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    execution: u64,
    n: u64,
    k: u64,
}

const SOAK: Workflow<u64, u64> = Workflow::new("soak");
const STEP: Activity<Step, u64> = Activity::new("soak_step");

/// Appends `EXECUTION k` to the ledger: one `write` of the whole line (O_APPEND), so lines of
/// concurrent activities never interleave, and the line is in the file (the page cache) before
/// the activity returns, which is all a SIGKILL can take away.
fn append(ledger: &std::fs::File, step: &Step) -> std::io::Result<()> {
    let line = format!("{} {}\n", step.execution, step.k);
    (&*ledger).write_all(line.as_bytes())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let usage = "usage: soak --db PATH --ledger FILE --executions N [--step-ms MS] [--concurrency C]";
    let db = value("--db").context(usage)?;
    let ledger_path = value("--ledger").context(usage)?;
    let executions: u64 = value("--executions").context(usage)?.parse().context("--executions takes a number")?;
    let step_ms: u64 = value("--step-ms").map_or(Ok(5), |v| v.parse()).context("--step-ms takes a number")?;
    let concurrency: u32 =
        value("--concurrency").map_or(Ok(16), |v| v.parse()).context("--concurrency takes a number")?;
    let ledger = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&ledger_path)
            .with_context(|| format!("cannot open the ledger {ledger_path}"))?,
    );

    let engine = Engine::builder()
        .path(&db)
        .workflow(SOAK, |ctx: Ctx, n: u64| async move {
            let execution = ctx.execution_id().0;
            let mut sum = 0;
            for k in 1..=5 {
                sum += ctx.call(STEP, &Step { execution, n, k }).await?;
            }
            Ok(sum)
        })
        .activity(STEP, move |step: Step| {
            let ledger = ledger.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(step_ms)).await;
                append(&ledger, &step).map_err(|e| ActivityError::retryable(e.to_string()))?;
                Ok(step.n * step.k)
            }
        })
        .open()
        .with_context(|| format!("cannot open {db}"))?;
    let workers = engine.serve(WorkerOptions { max_concurrency: concurrency, ..WorkerOptions::default() })?;

    // Dispatch (or find) every execution, a bounded number at a time, then wait for each.
    let mut ids = Vec::with_capacity(executions as usize);
    let mut pending = tokio::task::JoinSet::new();
    for n in 1..=executions {
        if pending.len() >= 256 {
            ids.push(pending.join_next().await.context("no dispatch task")???);
        }
        let engine = engine.clone();
        pending.spawn(async move {
            let id = engine.dispatch(SOAK, &n).idempotency_key(format!("soak-{n}")).await?;
            anyhow::Ok((n, id))
        });
    }
    while let Some(dispatched) = pending.join_next().await {
        ids.push(dispatched??);
    }
    let mut waits = tokio::task::JoinSet::new();
    for (n, id) in ids {
        let engine = engine.clone();
        waits.spawn(async move {
            let result = engine.wait_for(SOAK, id, None).await?;
            anyhow::ensure!(result == 15 * n, "execution {id} (soak-{n}) returned {result}, not {}", 15 * n);
            anyhow::Ok(())
        });
    }
    while let Some(done) = waits.join_next().await {
        done??;
    }
    workers.drain().await?;
    engine.close().await?;
    println!("{{\"completed\":{executions}}}");
    Ok(())
}
