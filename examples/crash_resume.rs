//! Runs, or resumes, one workflow of five sequential activities; activity k appends the line
//! `activity k` to the ledger file. With `--abort-after N` the process aborts right after
//! activity N's completion is committed (the workflow sees the outcome, which it only can once
//! it is durable). Running again without the flag resumes the same execution (found by a fixed
//! idempotency key) and finishes it: each activity runs once.
//!
//!     cargo run --release --example crash_resume -- --db PATH --ledger FILE [--abort-after N]

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use stent::{Activity, ActivityError, Ctx, Engine, WorkerOptions, Workflow};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    ledger: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    ledger: String,
    k: u32,
}

const CRASH_RESUME: Workflow<Job, String> = Workflow::new("crash_resume");
const APPEND: Activity<Line, u32> = Activity::new("append_line");

fn append(line: &Line) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&line.ledger)?;
    writeln!(file, "activity {}", line.k)?;
    file.sync_all()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let db = value("--db").context("usage: crash_resume --db PATH --ledger FILE [--abort-after N]")?;
    let ledger = value("--ledger").context("--ledger FILE is required")?;
    let abort_after: Option<u32> =
        value("--abort-after").map(|n| n.parse()).transpose().context("--abort-after takes a number")?;

    let engine = Engine::builder()
        .path(&db)
        .workflow(CRASH_RESUME, move |ctx: Ctx, job: Job| async move {
            for k in 1..=5 {
                let done = ctx.call(APPEND, &Line { ledger: job.ledger.clone(), k }).await?;
                if abort_after == Some(done) {
                    eprintln!("aborting after activity {done}'s completion was committed");
                    std::process::abort();
                }
            }
            Ok(format!("crash_resume finished: 5 activities, execution {}", ctx.execution_id()))
        })
        .activity(APPEND, |line: Line| async move {
            append(&line).map_err(|e| ActivityError::retryable(e.to_string()))?;
            Ok(line.k)
        })
        .open()?;
    let workers = engine.serve(WorkerOptions::default())?;
    let id = engine.dispatch(CRASH_RESUME, &Job { ledger }).idempotency_key("crash_resume").await?;
    let result = engine.wait_for(CRASH_RESUME, id, Some(Duration::from_secs(60))).await?;
    println!("{result}");
    workers.drain().await?;
    engine.close().await?;
    Ok(())
}
