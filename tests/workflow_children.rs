//! Child workflows: a parent awaits a child as one step (even with a single worker slot, since
//! a waiting workflow holds none); a child's failure is the parent's step error; cancelling
//! the parent cancels the child and the child's running work.
//!
//! Method: `MemoryDisk` + `ManualClock`; activities report when their future is dropped.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Ctx, Error, ExecutionFilter, ExecutionState, Page, WorkerOptions, Workflow};
use support::*;

const PARENT: Workflow<u32, u32> = Workflow::new("parent");
const CHILD: Workflow<u32, u32> = Workflow::new("child");
const DOUBLE: Activity<u32, u32> = Activity::new("double");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_awaits_its_child_with_a_single_worker_slot() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(PARENT, |ctx: Ctx, x: u32| async move {
            let a = ctx.child(CHILD, &x).await?;
            let b = ctx.child(CHILD, &a).await?;
            Ok(a + b)
        })
        .workflow(CHILD, |ctx: Ctx, x: u32| async move { ctx.call(DOUBLE, &x).await })
        .activity(DOUBLE, |x: u32| async move { Ok::<_, ActivityError>(x * 2) })
        .open()?;
    let pool = engine.serve(WorkerOptions { max_concurrency: 1, ..options("solo") })?;
    let id = engine.dispatch(PARENT, &5).await?;
    assert_eq!(finished(&engine, PARENT, id).await?, 10 + 20);
    let all = engine.list_executions(&ExecutionFilter::default(), &Page::default())?;
    let children: Vec<_> = all.iter().filter(|e| e.parent == Some(id)).collect();
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|c| c.function == "child" && c.state == ExecutionState::Completed));
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const FRAGILE: Workflow<u32, u32> = Workflow::new("fragile");
const REFUSE: Activity<u32, u32> = Activity::new("refuse");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_failure_is_the_parents_step_error() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(PARENT, |ctx: Ctx, x: u32| async move {
            match ctx.child(FRAGILE, &x).await {
                Err(Error::StepFailed { error, .. }) => Ok(error.message.len() as u32),
                Ok(v) => Ok(v),
                Err(e) => Err(e),
            }
        })
        .workflow(FRAGILE, |ctx: Ctx, x: u32| async move { ctx.call(REFUSE, &x).await })
        .activity(REFUSE, |_: u32| async move { Err::<u32, _>(ActivityError::permanent("no")) })
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(PARENT, &1).await?;
    assert_eq!(finished(&engine, PARENT, id).await?, 2, "the parent saw the child's error \"no\"");
    let child = engine.list_executions(
        &ExecutionFilter { function: Some("fragile".into()), ..Default::default() },
        &Page::default(),
    )?;
    assert_eq!(child.len(), 1);
    assert_eq!(child[0].state, ExecutionState::Failed);
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const SLOW: Activity<u32, u32> = Activity::new("slow");
const WAITS: Workflow<u32, u32> = Workflow::new("waits");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_parent_cancels_the_child_and_its_work() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let started = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (s, d) = (started.clone(), dropped.clone());
    struct OnDrop(Arc<AtomicU64>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let engine = builder(&disk, &clock)
        .workflow(PARENT, |ctx: Ctx, x: u32| async move { ctx.child(WAITS, &x).await })
        .workflow(WAITS, |ctx: Ctx, x: u32| async move { ctx.call(SLOW, &x).await })
        .activity(SLOW, move |x: u32| {
            s.fetch_add(1, Ordering::SeqCst);
            let guard = OnDrop(d.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, ActivityError>(x)
            }
        })
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(PARENT, &1).await?;
    until(&started, 1, "the grandchild activity runs").await;
    assert_eq!(engine.cancel(id).await?, ExecutionState::Cancelled);
    until(&dropped, 1, "the running activity is aborted").await;
    let child = engine
        .list_executions(&ExecutionFilter { function: Some("waits".into()), ..Default::default() }, &Page::default())?;
    assert_eq!(child[0].state, ExecutionState::Cancelled);
    wait_until(LIMIT, "nothing runs", || engine.running_tasks().unwrap().is_empty()).await;
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}
