//! Children with options: a child takes its queue, priority, tags, deadline and idempotency
//! key from `ChildOptions` (the rest from its registration), times out at its own deadline
//! (its parent's step error), and a key held by another execution fails an awaited child's
//! step. A detached child (`Ctx::start_child`) is started once however often its parent
//! re-runs, outlives its cancelled parent, and a detached start with a held key gets the
//! holder's id.
//!
//! Method: `MemoryDisk` + `ManualClock`; the clock is moved past deadlines by hand.

mod support;

use std::time::Duration;

use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{
    ChildOptions, Ctx, Engine, Error, ExecutionFilter, ExecutionId, ExecutionState, Page, WorkerOptions, Workflow,
};
use support::*;

/// Starts its child with the options and reports how the child's step ended.
const PARENT: Workflow<String, String> = Workflow::new("parent");
/// Starts a detached child, then waits for "go" (never sent: the tests cancel it).
const LAUNCHER: Workflow<String, ExecutionId> = Workflow::new("launcher");
/// Waits for "go", returns its payload.
const WAITER: Workflow<u32, u32> = Workflow::new("waiter");

fn open(disk: &MemoryDisk, clock: &ManualClock) -> Engine {
    builder(disk, clock)
        .workflow(PARENT, |ctx: Ctx, key: String| async move {
            let options =
                ChildOptions::new().queue("gpu").priority(5).tag("eu").max_duration("1h").idempotency_key(key);
            match ctx.child_with(WAITER, &1, options).await {
                Ok(n) => Ok(format!("done {n}")),
                Err(Error::StepFailed { error, .. }) => Ok(error.code.unwrap_or_default()),
                Err(e) => Err(e),
            }
        })
        .workflow(LAUNCHER, |ctx: Ctx, key: String| async move {
            let child = ctx.start_child(WAITER, &2, ChildOptions::new().idempotency_key(key)).await?;
            let _: bool = ctx.wait_for_signal("go").await?;
            Ok(child)
        })
        .workflow(WAITER, |ctx: Ctx, n: u32| async move {
            let m: u32 = ctx.wait_for_signal("go").await?;
            Ok(n + m)
        })
        .open()
        .expect("open")
}

fn serve(engine: &Engine) -> stent::WorkerPool {
    let options =
        WorkerOptions { queues: vec!["default".into(), "gpu".into()], tags: vec!["eu".into()], ..options("w") };
    engine.serve(options).unwrap()
}

fn waiters(engine: &Engine) -> Vec<stent::ExecutionInfo> {
    let all = engine.list_executions(&ExecutionFilter::default(), &Page { limit: 1_000, before: None }).unwrap();
    all.into_iter().filter(|e| e.function == "waiter").collect()
}

/// The execution started by `parent`'s first step, once it exists.
async fn first_child(engine: &Engine, parent: ExecutionId) -> ExecutionId {
    wait_until(LIMIT, "the parent's first step is recorded", || !engine.steps(parent).unwrap().is_empty()).await;
    let step = &engine.steps(parent).unwrap()[0];
    match step.child {
        Some(child) => child,
        None => serde_json::from_value(step.output.clone().expect("a detached start's output")).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_takes_its_options_and_times_out_at_its_own_deadline() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock);
    let pool = serve(&engine);
    let parent = engine.dispatch(PARENT, &"child-1".to_string()).await.unwrap();
    let child = first_child(&engine, parent).await;

    let info = engine.state_of(child).unwrap();
    assert_eq!((info.queue.as_str(), info.priority, info.tags.clone()), ("gpu", 5, vec!["eu".to_string()]));
    assert_eq!(info.idempotency_key.as_deref(), Some("child-1"));
    assert_eq!(info.deadline_ms, Some(info.scheduled_ms + 3_600_000));
    assert_eq!(info.parent, Some(parent));

    // A second parent asking for a child under the same key does not adopt the first's.
    let other = engine.dispatch(PARENT, &"child-1".to_string()).await.unwrap();
    assert_eq!(finished(&engine, PARENT, other).await.unwrap(), "duplicate_key");
    assert_eq!(waiters(&engine).len(), 1);

    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(finished(&engine, PARENT, parent).await.unwrap(), "child_timed_out");
    assert_eq!(state(&engine, child), ExecutionState::TimedOut);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_child_is_started_once_and_outlives_its_cancelled_parent() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock);
    let pool = serve(&engine);
    let parent = engine.dispatch(LAUNCHER, &"job-7".to_string()).await.unwrap();
    let child = first_child(&engine, parent).await;
    wait_until(LIMIT, "the launcher waits for its signal", || {
        engine.steps(parent).unwrap().get(1).is_some_and(|s| s.outcome == "waiting")
    })
    .await;
    let info = engine.state_of(child).unwrap();
    assert_eq!(info.parent, None, "a detached child has no parent link");

    // Re-running the launcher (an upgrade, a crash) finds its start in the journal.
    drop(pool);
    stent::testing::crash(engine).await.unwrap();
    let engine = open(&disk, &clock);
    let pool = serve(&engine);
    engine.send_signal(parent, "go", &false).await.unwrap();
    assert_eq!(finished(&engine, LAUNCHER, parent).await.unwrap(), child);
    assert_eq!(waiters(&engine).len(), 1, "one detached child, whatever re-ran");

    // A second launcher with the key gets the same child, and cancelling it leaves the child.
    let second = engine.dispatch(LAUNCHER, &"job-7".to_string()).await.unwrap();
    assert_eq!(first_child(&engine, second).await, child);
    engine.cancel(second).await.unwrap();
    assert_eq!(state(&engine, second), ExecutionState::Cancelled);
    assert!(!state(&engine, child).is_terminal(), "the detached child outlived its parents");
    engine.send_signal(child, "go", &40).await.unwrap();
    assert_eq!(finished(&engine, WAITER, child).await.unwrap(), 42);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}
