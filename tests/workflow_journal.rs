//! Workflows over their journal: finished steps are never redone when a workflow re-runs
//! (after a crash at any step boundary, or a DLQ replay); a changed workflow body is detected
//! as non-determinism and overwrites nothing; a step's failure reaches the workflow as a value.
//!
//! Method: `MemoryDisk` + `ManualClock`; a "crash" is `Engine::close` without draining, then a
//! new engine on the same bytes. Activities wait on a semaphore the test releases one permit
//! at a time, so the test decides exactly where each crash falls.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Ctx, Engine, Error, ExecutionState, Workflow};
use support::*;
use tokio::sync::Semaphore;

const FIVE: Workflow<u32, Vec<u32>> = Workflow::new("five_steps");
const STEP: Activity<u32, u32> = Activity::new("step");

#[derive(Clone, Default)]
struct Ledger {
    runs: Arc<Mutex<Vec<u32>>>,
}

fn open_five(disk: &MemoryDisk, clock: &ManualClock, ledger: &Ledger, gate: &Arc<Semaphore>) -> stent::Result<Engine> {
    let (runs, gate) = (ledger.runs.clone(), gate.clone());
    builder(disk, clock)
        .workflow(FIVE, |ctx: Ctx, base: u32| async move {
            let mut out = Vec::new();
            for k in 1..=5 {
                out.push(ctx.call(STEP, &(base + k)).await?);
            }
            Ok(out)
        })
        .activity(STEP, move |x: u32| {
            let (runs, gate) = (runs.clone(), gate.clone());
            async move {
                gate.acquire().await.expect("gate open").forget();
                runs.lock().unwrap().push(x); // The side effect, after the gate.
                Ok::<_, ActivityError>(x * 10)
            }
        })
        .open()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_runs_its_steps_in_order() -> anyhow::Result<()> {
    let (disk, clock, ledger) = (MemoryDisk::new(), ManualClock::default(), Ledger::default());
    let gate = Arc::new(Semaphore::new(100));
    let engine = open_five(&disk, &clock, &ledger, &gate)?;
    // One worker with one slot: the waiting workflow must not hold the slot its steps need.
    let pool = engine.serve(stent::WorkerOptions { max_concurrency: 1, ..options("solo") })?;
    let id = engine.dispatch(FIVE, &100).await?;
    assert_eq!(finished(&engine, FIVE, id).await?, vec![1010, 1020, 1030, 1040, 1050]);
    assert_eq!(*ledger.runs.lock().unwrap(), vec![101, 102, 103, 104, 105]);
    let info = engine.state_of(id)?;
    assert_eq!(info.steps, 5);
    assert_eq!(info.progress[0], "step 0: call \"step\" completed");
    assert_eq!(info.progress.len(), 5);
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_boundary_redoes_nothing() -> anyhow::Result<()> {
    let (disk, clock, ledger) = (MemoryDisk::new(), ManualClock::default(), Ledger::default());
    let gate = Arc::new(Semaphore::new(0));
    let mut id = None;
    for k in 1..=5u64 {
        let engine = open_five(&disk, &clock, &ledger, &gate)?;
        if id.is_none() {
            id = Some(engine.dispatch(FIVE, &0).await?);
        }
        let _pool = engine.serve(options(&format!("run-{k}")))?;
        gate.add_permits(1); // Let exactly one more step through.
        stent::testing::wait_until(LIMIT, "the step's completion is committed", || engine.stats().completions >= 1)
            .await;
        if k < 5 {
            engine.close().await?; // Crash right after step k is durable.
        } else {
            assert_eq!(finished(&engine, FIVE, id.expect("dispatched")).await?, vec![10, 20, 30, 40, 50]);
            assert_consistent(&engine);
            engine.close().await?;
        }
    }
    assert_eq!(*ledger.runs.lock().unwrap(), vec![1, 2, 3, 4, 5], "each activity ran exactly once");
    Ok(())
}

const V1: Workflow<u32, u32> = Workflow::new("evolving");
const A: Activity<u32, u32> = Activity::new("a");
const B: Activity<u32, u32> = Activity::new("b");
const C: Activity<u32, u32> = Activity::new("c");

fn open_evolving(disk: &MemoryDisk, clock: &ManualClock, version: u32, runs: &Arc<AtomicU64>) -> stent::Result<Engine> {
    let runs_a = runs.clone();
    builder(disk, clock)
        .workflow(V1, move |ctx: Ctx, x: u32| async move {
            let first = if version == 1 { ctx.call(A, &x).await? } else { ctx.call(C, &x).await? };
            ctx.call(B, &first).await
        })
        .activity(A, move |x: u32| {
            runs_a.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ActivityError>(x + 1) }
        })
        .activity(B, move |x: u32| async move {
            if version == 1 {
                std::future::pending::<()>().await; // Still running when the process stops.
            }
            Ok::<_, ActivityError>(x)
        })
        .activity(C, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .open()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_workflow_body_is_detected_and_overwrites_nothing() -> anyhow::Result<()> {
    let (disk, clock, runs_a) = (MemoryDisk::new(), ManualClock::default(), Arc::new(AtomicU64::new(0)));
    let engine = open_evolving(&disk, &clock, 1, &runs_a)?;
    let _pool = engine.serve(options("v1"))?;
    let id = engine.dispatch(V1, &1).await?;
    until(&runs_a, 1, "step 0 (a) runs").await;
    stent::testing::wait_until(LIMIT, "step 1 (b) is running", || {
        engine.running_tasks().unwrap().iter().any(|t| t.function == "b")
    })
    .await;
    engine.close().await?;

    // Version 2 asks for `c` at step 0, where the journal recorded `a`: found when `b`
    // finishes and the workflow runs again over its journal.
    let engine = open_evolving(&disk, &clock, 2, &runs_a)?;
    let pool = engine.serve(options("v2"))?;
    match finished(&engine, V1, id).await {
        Err(Error::ExecutionFailed { error, .. }) => {
            assert_eq!(error.code.as_deref(), Some("non_determinism"));
            assert!(error.message.contains("step 0"), "{}", error.message);
            assert!(error.message.contains("\"a\"") && error.message.contains("\"c\""), "{}", error.message);
        }
        other => panic!("expected non-determinism, got {other:?}"),
    }
    let letter = engine.dead_letters(10)?.into_iter().find(|l| l.execution_id == id).expect("in the DLQ");
    pool.drain().await?;
    engine.close().await?;

    // The fix (version 1 again) and a replay resume it: `a` is not run again.
    let runs_b = Arc::new(AtomicU64::new(0));
    let rb = runs_b.clone();
    let engine = builder(&disk, &clock)
        .workflow(V1, |ctx: Ctx, x: u32| async move {
            let first = ctx.call(A, &x).await?;
            ctx.call(B, &first).await
        })
        .activity(A, |x: u32| async move { Ok::<_, ActivityError>(x + 1000) })
        .activity(B, move |x: u32| {
            rb.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ActivityError>(x * 2) }
        })
        .open()?;
    let pool = engine.serve(options("fixed"))?;
    engine.replay_dead_letter(letter.id).await?;
    // Both steps have recorded outcomes (a gave 2, b passed it through): nothing runs again,
    // and the journal still says `a` at step 0 (the fixed code matches it).
    assert_eq!(finished(&engine, V1, id).await?, 2);
    assert_eq!(runs_a.load(Ordering::SeqCst), 1);
    assert_eq!(runs_b.load(Ordering::SeqCst), 0);
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const HANDLES: Workflow<u32, String> = Workflow::new("handles_failure");
const FAILS: Activity<u32, u32> = Activity::new("fails");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_is_a_value_the_workflow_can_handle() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(HANDLES, |ctx: Ctx, x: u32| async move {
            match ctx.call(FAILS, &x).await {
                Err(Error::StepFailed { step, error, .. }) => {
                    let fallback = ctx.call(STEP, &x).await?;
                    Ok(format!("step {step} failed ({}), fallback gave {fallback}", error.message))
                }
                other => Ok(format!("unexpected {other:?}")),
            }
        })
        .activity(FAILS, |_: u32| async move { Err::<u32, _>(ActivityError::permanent("card declined")) })
        .activity(STEP, |x: u32| async move { Ok::<_, ActivityError>(x * 10) })
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(HANDLES, &7).await?;
    assert_eq!(finished(&engine, HANDLES, id).await?, "step 0 failed (card declined), fallback gave 70");
    assert!(engine.dead_letters(10)?.is_empty(), "a handled step failure is not a dead letter");
    assert_eq!(state(&engine, id), ExecutionState::Completed);
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const ORDER: Workflow<String, String> = Workflow::new("order");
const RESERVE: Activity<String, String> = Activity::new("reserve");
const SHIP: Activity<String, String> = Activity::new("ship");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_can_edit_the_failed_steps_input() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let reserved = Arc::new(AtomicU64::new(0));
    let r = reserved.clone();
    let engine = builder(&disk, &clock)
        .workflow(ORDER, |ctx: Ctx, address: String| async move {
            let item = ctx.call(RESERVE, &"widget".to_string()).await?;
            ctx.call(SHIP, &format!("{item} to {address}")).await
        })
        .activity(RESERVE, move |item: String| {
            r.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ActivityError>(item) }
        })
        .activity(SHIP, |what: String| async move {
            if what.ends_with("to ") {
                return Err(ActivityError::permanent("no address"));
            }
            Ok(format!("shipped {what}"))
        })
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(ORDER, &String::new()).await?;
    assert!(matches!(finished(&engine, ORDER, id).await, Err(Error::ExecutionFailed { .. })));
    let letter = engine.dead_letters(10)?.into_iter().find(|l| l.execution_id == id).expect("dead letter");
    assert!(
        matches!(engine.replay_dead_letter_with_step_input(letter.id, 0, &"x").await, Err(Error::NotReplayable { .. })),
        "step 0 completed: not editable"
    );
    engine.replay_dead_letter_with_step_input(letter.id, 1, &"widget to 1 Main St").await?;
    assert_eq!(finished(&engine, ORDER, id).await?, "shipped widget to 1 Main St");
    assert_eq!(reserved.load(Ordering::SeqCst), 1, "the completed step was not redone");
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}
