//! Workflow versions: a registration declares the version of its code
//! (`FunctionOptions::version`, default 1); every execution records the version it started
//! under and every task the version of its function it needs (`state_of`, listings, `task`);
//! an engine whose code is older does not run them. So rolling a deploy back leaves what the
//! newer code started pending, visibly (`unserved_work().newer_version`), and the newer code
//! picks it up again where it stood. Older executions run on newer code (that is an upgrade,
//! `tests/workflow_upgrade.rs`) and keep their recorded version.
//!
//! Method: `MemoryDisk` + `ManualClock`; a deploy is a crash of one engine and an engine with
//! other code on the same bytes.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stent::testing::{crash, wait_until, ManualClock, MemoryDisk};
use stent::{Activity, Ctx, Engine, ExecutionFilter, ExecutionState, FunctionOptions, Page, TaskId, Workflow};
use support::*;

const FLOW: Workflow<u32, u32> = Workflow::new("flow");
const STEP: Activity<u32, u32> = Activity::new("step");

#[derive(Clone, Default)]
struct World {
    disk: MemoryDisk,
    clock: ManualClock,
    /// Runs of the workflow's body, by the version of the code that ran it (index 1 and 2).
    bodies: Arc<[AtomicU64; 3]>,
    /// Runs of the activity, by version.
    steps: Arc<[AtomicU64; 3]>,
}

impl World {
    /// An engine with `flow` at `flow_version` (calls `step`, then waits for "go") and `step`
    /// at `step_version`.
    fn open(&self, flow_version: u32, step_version: u32) -> Engine {
        let (bodies, steps) = (self.bodies.clone(), self.steps.clone());
        builder(&self.disk, &self.clock)
            .workflow_with(
                FLOW,
                move |ctx: Ctx, n: u32| {
                    bodies[flow_version as usize].fetch_add(1, Ordering::SeqCst);
                    async move {
                        let n = ctx.call(STEP, &n).await?;
                        let _: bool = ctx.wait_for_signal("go").await?;
                        Ok(n + flow_version)
                    }
                },
                FunctionOptions::new().version(flow_version),
            )
            .activity_with(
                STEP,
                move |n: u32| {
                    steps[step_version as usize].fetch_add(1, Ordering::SeqCst);
                    async move { Ok(n * 10) }
                },
                FunctionOptions::new().version(step_version),
            )
            .open()
            .expect("open")
    }

    /// An engine like `open` whose activity never returns (an attempt to crash during).
    fn hanging(&self, flow_version: u32, step_version: u32) -> Engine {
        builder(&self.disk, &self.clock)
            .workflow_with(
                FLOW,
                move |ctx: Ctx, n: u32| async move {
                    let n = ctx.call(STEP, &n).await?;
                    let _: bool = ctx.wait_for_signal("go").await?;
                    Ok(n + flow_version)
                },
                FunctionOptions::new().version(flow_version),
            )
            .activity_with(
                STEP,
                |_: u32| std::future::pending::<Result<u32, stent::ActivityError>>(),
                FunctionOptions::new().version(step_version),
            )
            .open()
            .expect("open")
    }

    fn bodies(&self, version: usize) -> u64 {
        self.bodies[version].load(Ordering::SeqCst)
    }

    fn steps(&self, version: usize) -> u64 {
        self.steps[version].load(Ordering::SeqCst)
    }
}

/// How many ready tasks this engine leaves because they need newer code.
fn newer_version(engine: &Engine) -> u64 {
    engine.unserved_work().iter().map(|g| g.newer_version).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_records_the_version_it_started_under() {
    let world = World::default();
    let engine = world.open(2, 1);
    let id = engine.dispatch(FLOW, &1).await.unwrap();
    let info = engine.state_of(id).unwrap();
    assert_eq!((info.version, info.run), (2, 1));
    let listed = engine.list_executions(&ExecutionFilter::default(), &Page::default()).unwrap();
    assert_eq!(listed.iter().map(|e| (e.id, e.version)).collect::<Vec<_>>(), [(id, 2)]);
    let pool = engine.serve(options("w")).unwrap();
    wait_until(LIMIT, "it waits for the signal", || engine.steps(id).unwrap().len() == 2).await;
    // Task ids count from 1 in a new file: the root task, then the step's.
    assert_eq!(engine.task(TaskId(1)).unwrap().version, 2, "the root task needs the workflow's version");
    assert_eq!(engine.task(TaskId(2)).unwrap().function, "step");
    assert_eq!(engine.task(TaskId(2)).unwrap().version, 1, "the activity's task needs its own version");
    engine.send_signal(id, "go", &true).await.unwrap();
    assert_eq!(finished(&engine, FLOW, id).await.unwrap(), 12);
    assert_eq!(engine.state_of(id).unwrap().version, 2, "kept once finished");
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_engine_leaves_newer_executions_pending_and_the_newer_code_finishes_them() {
    let world = World::default();
    // Version 2 starts one execution; it runs up to its signal wait.
    let engine = world.open(2, 1);
    let pool = engine.serve(options("v2")).unwrap();
    let newer = engine.dispatch(FLOW, &1).await.unwrap();
    wait_until(LIMIT, "it waits for the signal", || engine.steps(newer).unwrap().len() == 2).await;
    drop(pool);
    crash(engine).await.unwrap();
    let bodies_v2 = world.bodies(2);

    // Rolled back to version 1: an execution of its own runs; the newer one, signalled, is
    // made ready but not run.
    let engine = world.open(1, 1);
    let pool = engine.serve(options("v1")).unwrap();
    let older = engine.dispatch(FLOW, &2).await.unwrap();
    wait_until(LIMIT, "the old code's own execution waits", || engine.steps(older).unwrap().len() == 2).await;
    engine.send_signal(newer, "go", &true).await.unwrap();
    engine.send_signal(older, "go", &true).await.unwrap();
    assert_eq!(finished(&engine, FLOW, older).await.unwrap(), 21);
    wait_until(LIMIT, "the newer execution is ready and left alone", || newer_version(&engine) == 1).await;
    let unserved = engine.unserved_work();
    assert_eq!(unserved.len(), 1, "{unserved:?}");
    assert_eq!((unserved[0].pending, unserved[0].newer_version), (1, 1));
    let info = engine.state_of(newer).unwrap();
    assert_eq!((info.state, info.version), (ExecutionState::Running, 2), "pending, not failed");
    assert_eq!(world.bodies(1), 1, "the old code ran only its own execution");
    assert!(!engine.is_idle().unwrap(), "the newer execution's work is still there");
    drop(pool);
    crash(engine).await.unwrap();

    // Forward again: version 2 finishes it from where it stood (the step not run again).
    let engine = world.open(2, 1);
    let pool = engine.serve(options("v2-again")).unwrap();
    assert_eq!(finished(&engine, FLOW, newer).await.unwrap(), 12);
    assert_eq!(world.steps(1), 2, "one step per execution");
    assert!(world.bodies(2) > bodies_v2);
    assert_eq!(newer_version(&engine), 0);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_completed_by_older_code_does_not_hand_the_newer_workflow_to_it() {
    // The activity is unchanged (version 1) and runs on the old engine; the completion's
    // hand-off of the woken workflow to the same worker (a continuation) must refuse the
    // workflow's newer version as a claim does.
    let world = World::default();
    let engine = world.hanging(2, 1);
    let pool = engine.serve(options("v2")).unwrap();
    let newer = engine.dispatch(FLOW, &3).await.unwrap();
    wait_until(LIMIT, "its step runs", || engine.running_tasks().unwrap().iter().any(|t| t.function == "step")).await;
    drop(pool);
    crash(engine).await.unwrap();

    let engine = world.open(1, 1);
    let pool = engine.serve(options("v1")).unwrap();
    wait_until(LIMIT, "the step ran again on the old code", || world.steps(1) == 1).await;
    wait_until(LIMIT, "the woken workflow waits for newer code", || newer_version(&engine) == 1).await;
    assert_eq!(world.bodies(1), 0, "the old code never ran the newer workflow");
    assert_eq!(engine.steps(newer).unwrap().len(), 1, "nothing past the step");
    drop(pool);
    crash(engine).await.unwrap();

    let engine = world.open(2, 1);
    let pool = engine.serve(options("v2-again")).unwrap();
    wait_until(LIMIT, "the newer code resumes it", || engine.steps(newer).unwrap().len() == 2).await;
    engine.send_signal(newer, "go", &true).await.unwrap();
    assert_eq!(finished(&engine, FLOW, newer).await.unwrap(), 32);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_needing_a_newer_activity_waits_for_an_engine_that_has_it() {
    // The workflow at version 1 everywhere; the activity at version 2 in the engine that
    // schedules the step (and crashes while it runs), version 1 in the one that follows.
    let world = World::default();
    let engine = world.hanging(1, 2);
    let pool = engine.serve(options("new-step")).unwrap();
    let id = engine.dispatch(FLOW, &4).await.unwrap();
    wait_until(LIMIT, "its step runs", || engine.running_tasks().unwrap().iter().any(|t| t.function == "step")).await;
    drop(pool);
    crash(engine).await.unwrap();

    let engine = world.open(1, 1);
    let pool = engine.serve(options("old-step")).unwrap();
    wait_until(LIMIT, "the step needs the newer activity", || newer_version(&engine) == 1).await;
    assert_eq!(world.steps(1), 0, "the older activity never ran a step made for the newer one");
    let step_task = engine.steps(id).unwrap()[0].task_id.expect("the call's task");
    assert_eq!(engine.task(step_task).unwrap().version, 2);
    drop(pool);
    crash(engine).await.unwrap();

    let engine = world.open(1, 2);
    let pool = engine.serve(options("new-step-again")).unwrap();
    wait_until(LIMIT, "it waits for the signal", || engine.steps(id).unwrap().len() == 2).await;
    assert_eq!(world.steps(2), 1);
    engine.send_signal(id, "go", &true).await.unwrap();
    assert_eq!(finished(&engine, FLOW, id).await.unwrap(), 41);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}
