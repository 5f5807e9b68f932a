//! An in-place upgrade of workflow code while executions are in flight, in three runs on one
//! file:
//!
//!     cargo run --release --example upgrade -- --db PATH --phase old
//!     cargo run --release --example upgrade -- --db PATH --phase verify-broken
//!     cargo run --release --example upgrade -- --db PATH --phase new
//!
//! `old` runs the workflow `order` as first written (activity `reserve`, then a wait for the
//! signal `go`, then activity `ship`), starts 3 executions (idempotency keys `order-1` to
//! `order-3`, so a rerun finds them), waits until all 3 wait for the signal, and prints
//! `{"waiting":3}`.
//!
//! `verify-broken` opens the file read-only with an incompatible body (`reserve` renamed to
//! `reserve_v2`, no patch) and runs the pre-deploy replay check: one line per execution in
//! flight, `{"id":ID,"ok":false,"step":N}`, and exit code 1. Nothing in the file changes.
//!
//! `new` runs the patched body, which inserts an activity `audit` behind
//! `ctx.patched("audit")` between `reserve` and the signal wait. It first checks the replay
//! (every execution must replay cleanly), starts a 4th execution, signals `go` to all 4, and
//! prints one line per execution, `{"id":ID,"patched":BOOL,"state":"completed"}`: the 3 that
//! passed that point under the old code take the old branch (`false`), the new one `true`.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use stent::{Activity, Ctx, Engine, EngineBuilder, ExecutionId, ExecutionState, WorkerOptions, Workflow};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shipped {
    patched: bool,
}

const ORDER: Workflow<u32, Shipped> = Workflow::new("order");
const RESERVE: Activity<u32, u32> = Activity::new("reserve");
const RESERVE_V2: Activity<u32, u32> = Activity::new("reserve_v2");
const AUDIT: Activity<u32, u32> = Activity::new("audit");
const SHIP: Activity<u32, u32> = Activity::new("ship");

const OLD_ORDERS: u32 = 3;
const WAIT: Duration = Duration::from_secs(30);

/// The workflow as first deployed.
async fn order_old(ctx: Ctx, n: u32) -> stent::Result<Shipped> {
    ctx.call(RESERVE, &n).await?;
    let _go: bool = ctx.wait_for_signal("go").await?;
    ctx.call(SHIP, &n).await?;
    Ok(Shipped { patched: false })
}

/// A change that breaks executions in flight: the first step asks for another activity.
async fn order_broken(ctx: Ctx, n: u32) -> stent::Result<Shipped> {
    ctx.call(RESERVE_V2, &n).await?;
    let _go: bool = ctx.wait_for_signal("go").await?;
    ctx.call(SHIP, &n).await?;
    Ok(Shipped { patched: false })
}

/// The same change made safe: executions that reach the audit point under this code audit,
/// the ones that passed it under the old code go on as before.
async fn order_new(ctx: Ctx, n: u32) -> stent::Result<Shipped> {
    ctx.call(RESERVE, &n).await?;
    let patched = ctx.patched("audit");
    if patched {
        ctx.call(AUDIT, &n).await?;
    }
    let _go: bool = ctx.wait_for_signal("go").await?;
    ctx.call(SHIP, &n).await?;
    Ok(Shipped { patched })
}

fn activities(builder: EngineBuilder) -> EngineBuilder {
    builder
        .activity(RESERVE, |n: u32| async move { Ok(n) })
        .activity(RESERVE_V2, |n: u32| async move { Ok(n) })
        .activity(AUDIT, |n: u32| async move { Ok(n) })
        .activity(SHIP, |n: u32| async move { Ok(n) })
}

/// Whether the execution's newest journal step is the wait for `go`, still waiting.
fn waits_for_go(engine: &Engine, id: ExecutionId) -> stent::Result<bool> {
    let steps = engine.steps(id)?;
    Ok(steps.last().is_some_and(|s| s.kind.contains("\"go\"") && s.outcome == "waiting"))
}

async fn start(engine: &Engine, n: u32) -> stent::Result<ExecutionId> {
    engine.dispatch(ORDER, &n).idempotency_key(format!("order-{n}")).await
}

async fn phase_old(db: &str) -> anyhow::Result<i32> {
    let engine = activities(Engine::builder().path(db)).workflow(ORDER, order_old).open()?;
    let pool = engine.serve(WorkerOptions::default())?;
    let mut ids = Vec::new();
    for n in 1..=OLD_ORDERS {
        ids.push(start(&engine, n).await?);
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut waiting = 0;
        for &id in &ids {
            if waits_for_go(&engine, id)? {
                waiting += 1;
            }
        }
        if waiting == ids.len() {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("only {waiting} of {} executions reached the signal wait in {WAIT:?}", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.drain().await?;
    engine.close().await?;
    println!("{}", serde_json::json!({ "waiting": ids.len() }));
    Ok(0)
}

async fn phase_verify_broken(db: &str) -> anyhow::Result<i32> {
    let engine = activities(Engine::builder().path(db).read_only(true)).workflow(ORDER, order_broken).open()?;
    let checks = engine.verify_replay().await?;
    engine.close().await?;
    let mut all_ok = true;
    for check in &checks {
        all_ok &= check.ok();
        let mut line = serde_json::json!({ "id": check.id.0, "ok": check.ok() });
        if let Some(step) = check.diverging_step() {
            line["step"] = step.into();
        }
        println!("{line}");
        if let stent::ReplayOutcome::Diverged { step, recorded, requested } = &check.outcome {
            eprintln!("execution {}: step {step} recorded {recorded}, the code asks for {requested}", check.id.0);
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

async fn phase_new(db: &str) -> anyhow::Result<i32> {
    let engine = activities(Engine::builder().path(db)).workflow(ORDER, order_new).open()?;
    // What a deploy runs first: the executions in flight must replay under the new code.
    for check in engine.verify_replay().await? {
        if !check.ok() {
            bail!("execution {} does not replay under the new code: {:?}", check.id.0, check.outcome);
        }
    }
    let pool = engine.serve(WorkerOptions::default())?;
    let mut ids = Vec::new();
    for n in 1..=OLD_ORDERS + 1 {
        ids.push(start(&engine, n).await?);
    }
    for &id in &ids {
        // An execution that already finished (a rerun of this phase) takes no signal.
        if engine.state_of(id)?.state != ExecutionState::Completed {
            engine.send_signal(id, "go", &true).await?;
        }
    }
    let mut lines = Vec::new();
    for &id in &ids {
        let shipped = engine.wait_for(ORDER, id, Some(WAIT)).await?;
        let state = engine.state_of(id)?.state;
        lines.push(serde_json::json!({ "id": id.0, "patched": shipped.patched, "state": state.as_str() }));
    }
    pool.drain().await?;
    engine.close().await?;
    for line in lines {
        println!("{line}");
    }
    Ok(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let usage = "usage: upgrade --db PATH --phase old|verify-broken|new";
    let db = value("--db").context(usage)?;
    let code = match value("--phase").as_deref() {
        Some("old") => phase_old(&db).await?,
        Some("verify-broken") => phase_verify_broken(&db).await?,
        Some("new") => phase_new(&db).await?,
        _ => bail!(usage),
    };
    std::process::exit(code);
}
