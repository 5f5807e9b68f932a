//! Cancellation with compensation: a workflow registered with `cancel_grace` is cancelled
//! gracefully. The step it awaits returns `Error::Cancelled` (its task cancelled, the attempt
//! aborted), the compensating steps it then takes run normally, and it ends cancelled when it
//! returns; a crash during compensation resumes it; the grace bounds it; `cancel_now` and a
//! second `cancel` end it at once.
//!
//! Method: `MemoryDisk` + `ManualClock`; activities that hang until the test lets them go.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::testing::{crash, wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Ctx, Engine, Error, ExecutionState, FunctionOptions, Workflow};
use support::*;
use tokio::sync::Semaphore;

const RESERVE: Activity<u32, u32> = Activity::new("reserve");
const CHARGE: Activity<u32, u32> = Activity::new("charge");
const RELEASE: Activity<u32, u32> = Activity::new("release");
const ORDER: Workflow<u32, u32> = Workflow::new("order");

#[derive(Clone)]
struct World {
    disk: MemoryDisk,
    clock: ManualClock,
    /// `release` waits for a permit.
    gate: Arc<Semaphore>,
    releases: Arc<AtomicU64>,
    /// What the awaited step gave the workflow, once cancelled (1: `Error::Cancelled`).
    saw_cancelled: Arc<AtomicU64>,
}

impl World {
    fn new(release_permits: usize) -> Self {
        World {
            disk: MemoryDisk::new(),
            clock: ManualClock::default(),
            gate: Arc::new(Semaphore::new(release_permits)),
            releases: Arc::new(AtomicU64::new(0)),
            saw_cancelled: Arc::new(AtomicU64::new(0)),
        }
    }

    fn open(&self) -> Engine {
        let (gate, releases, saw) = (self.gate.clone(), self.releases.clone(), self.saw_cancelled.clone());
        builder(&self.disk, &self.clock)
            .activity(RESERVE, |n: u32| async move { Ok::<_, ActivityError>(n) })
            .activity(CHARGE, |_: u32| std::future::pending::<Result<u32, ActivityError>>())
            .activity(RELEASE, move |n: u32| {
                let (gate, releases) = (gate.clone(), releases.clone());
                async move {
                    let _permit = gate.acquire().await.expect("gate open");
                    releases.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ActivityError>(n)
                }
            })
            .workflow_with(
                ORDER,
                move |ctx: Ctx, n: u32| {
                    let saw = saw.clone();
                    async move {
                        let reserved = ctx.call(RESERVE, &n).await?;
                        match ctx.call(CHARGE, &n).await {
                            Ok(v) => Ok(v),
                            Err(e) => {
                                if matches!(e, Error::Cancelled(_)) {
                                    saw.store(1, Ordering::SeqCst);
                                }
                                // Compensation: runs although the execution is cancelled.
                                ctx.call(RELEASE, &reserved).await?;
                                Err(e)
                            }
                        }
                    }
                },
                FunctionOptions::new().cancel_grace("10m"),
            )
            .open()
            .expect("open")
    }
}

fn running(engine: &Engine, function: &str) -> usize {
    engine.running_tasks().unwrap().iter().filter(|t| t.function == function).count()
}

/// Starts an order and waits until its charge is in flight.
async fn charging(engine: &Engine) -> stent::ExecutionId {
    let id = engine.dispatch(ORDER, &7).await.unwrap();
    wait_until(LIMIT, "the charge runs", || running(engine, "charge") == 1).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_lets_the_workflow_compensate_then_ends_it_cancelled() {
    let world = World::new(1);
    let engine = world.open();
    let pool = engine.serve(options("w")).unwrap();
    let id = charging(&engine).await;
    assert_eq!(engine.cancel(id).await.unwrap(), ExecutionState::Running, "compensating");
    until_state(&engine, id, ExecutionState::Cancelled).await;
    assert_eq!(world.saw_cancelled.load(Ordering::SeqCst), 1, "the awaited step returned Error::Cancelled");
    assert_eq!(world.releases.load(Ordering::SeqCst), 1, "the compensation ran");
    assert_eq!(running(&engine, "charge"), 0, "the charge's attempt was aborted");
    let steps = engine.steps(id).unwrap();
    assert_eq!(steps[1].error.as_ref().and_then(|e| e.code.as_deref()), Some("execution_cancelled"));
    assert_eq!((steps[2].kind.as_str(), steps[2].outcome.as_str()), ("call \"release\"", "completed"));
    assert!(matches!(finished(&engine, ORDER, id).await, Err(Error::Cancelled(_))));
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_compensation_resumes_it() {
    let world = World::new(0);
    let engine = world.open();
    let pool = engine.serve(options("w")).unwrap();
    let id = charging(&engine).await;
    engine.cancel(id).await.unwrap();
    wait_until(LIMIT, "the compensation runs", || running(&engine, "release") == 1).await;
    drop(pool);
    crash(engine).await.unwrap();

    let engine = world.open();
    world.gate.add_permits(1);
    let pool = engine.serve(options("w2")).unwrap();
    until_state(&engine, id, ExecutionState::Cancelled).await;
    assert_eq!(world.releases.load(Ordering::SeqCst), 1, "the compensation finished once");
    assert_eq!(engine.steps(id).unwrap()[2].outcome, "completed");
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_bounds_the_compensation_and_a_forced_cancel_ends_it_at_once() {
    // The compensation never finishes: the grace ends it.
    let world = World::new(0);
    let engine = world.open();
    let pool = engine.serve(options("w")).unwrap();
    let id = charging(&engine).await;
    engine.cancel(id).await.unwrap();
    wait_until(LIMIT, "the compensation runs", || running(&engine, "release") == 1).await;
    world.clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(state(&engine, id), ExecutionState::Running, "inside the grace");
    world.clock.advance(Duration::from_secs(60));
    until_state(&engine, id, ExecutionState::Cancelled).await;
    wait_until(LIMIT, "the compensation is stopped", || running(&engine, "release") == 0).await;

    // A second cancel, and cancel_now, do not wait.
    for forced in [false, true] {
        let id = charging(&engine).await;
        engine.cancel(id).await.unwrap();
        wait_until(LIMIT, "the compensation runs", || running(&engine, "release") == 1).await;
        let state = if forced { engine.cancel_now(id).await } else { engine.cancel(id).await };
        assert_eq!(state.unwrap(), ExecutionState::Cancelled);
        wait_until(LIMIT, "the compensation is stopped", || running(&engine, "release") == 0).await;
    }
    // Without the cancel request, cancel_now ends it before any compensation.
    let id = charging(&engine).await;
    assert_eq!(engine.cancel_now(id).await.unwrap(), ExecutionState::Cancelled);
    assert_eq!(world.releases.load(Ordering::SeqCst), 0);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}
