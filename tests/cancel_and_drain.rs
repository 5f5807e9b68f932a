//! Stopping work: cancel of a pending and of a running execution (the future is aborted and
//! nothing completes after it), max_duration timing an execution out, and a worker pool's
//! drain (finishes running work, claims nothing new, gives back what outlives the grace).
//!
//! Method: activities that block on a `Notify` the test controls and report when their future
//! is dropped; a manual clock for delays, deadlines and the drain grace.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Engine, Error, ExecutionState, WorkerStatus};
use support::*;
use tokio::sync::Notify;

const BLOCK: Activity<u32, u32> = Activity::new("block");

struct Probe {
    started: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    release: Arc<Notify>,
}

/// Counts drops of the activity's future: an aborted attempt drops without finishing.
struct DropFlag(Arc<AtomicU64>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn open(disk: &MemoryDisk, clock: &ManualClock) -> stent::Result<(Engine, Probe)> {
    let probe = Probe { started: Arc::default(), dropped: Arc::default(), release: Arc::new(Notify::new()) };
    let (s, d, r) = (probe.started.clone(), probe.dropped.clone(), probe.release.clone());
    let engine = builder(disk, clock)
        .activity(BLOCK, move |x: u32| {
            s.fetch_add(1, Ordering::SeqCst);
            let (flag, r) = (DropFlag(d.clone()), r.clone());
            async move {
                let _flag = flag;
                r.notified().await;
                Ok::<_, ActivityError>(x)
            }
        })
        .open()?;
    Ok((engine, probe))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_pending_execution() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let (engine, probe) = open(&disk, &clock)?;
    let pool = engine.serve(options("w"))?;
    let id = engine.schedule(BLOCK, &1, "1m").await?;
    assert_eq!(engine.cancel(id).await?, ExecutionState::Cancelled);
    clock.advance(Duration::from_secs(120));
    // A later task runs, so the workers were live; the cancelled one never started.
    let marker = engine.dispatch(BLOCK, &2).await?;
    until(&probe.started, 1, "the marker starts").await;
    assert_eq!(engine.state_of(marker)?.state, ExecutionState::Running);
    assert_eq!(engine.state_of(id)?.attempts, 0, "the cancelled one was never claimed");
    assert!(matches!(finished(&engine, BLOCK, id).await, Err(Error::Cancelled(i)) if i == id));
    assert_eq!(engine.cancel(id).await?, ExecutionState::Cancelled, "cancel is idempotent");
    probe.release.notify_one();
    assert_eq!(finished(&engine, BLOCK, marker).await?, 2);
    assert_eq!(engine.cancel(marker).await?, ExecutionState::Completed, "a finished execution stays as it is");
    assert!(matches!(engine.cancel(stent::ExecutionId(999)).await, Err(Error::UnknownExecution(_))));
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_running_execution_aborts_it_and_nothing_completes_after() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let (engine, probe) = open(&disk, &clock)?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(BLOCK, &1).await?;
    until(&probe.started, 1, "the attempt starts").await;
    until_state(&engine, id, ExecutionState::Running).await;
    let waiter = {
        let engine = engine.clone();
        tokio::spawn(async move { finished(&engine, BLOCK, id).await })
    };
    assert_eq!(engine.cancel(id).await?, ExecutionState::Cancelled);
    until(&probe.dropped, 1, "the running future is dropped").await;
    assert!(matches!(waiter.await?, Err(Error::Cancelled(_))), "waiters are woken by the cancel");
    wait_until(LIMIT, "the attempt is gone", || pool.running() == 0).await;
    probe.release.notify_waiters(); // Nothing is left to finish.
    let info = engine.state_of(id)?;
    assert_eq!(info.state, ExecutionState::Cancelled);
    assert!(info.output.is_none());
    assert!(engine.running_tasks()?.is_empty());
    assert_eq!(engine.stats().completions, 0);
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_times_an_execution_out() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let (engine, probe) = open(&disk, &clock)?;
    let pool = engine.serve(options("w"))?;
    // Deadline counts from the due time: 10 s delay + 30 s max_duration.
    let id = engine.dispatch(BLOCK, &1).delay("10s").max_duration("30s").await?;
    let info = engine.state_of(id)?;
    assert_eq!(info.deadline_ms, Some(info.created_ms + 40_000));
    clock.advance(Duration::from_secs(10));
    until(&probe.started, 1, "the attempt starts").await;
    clock.advance(Duration::from_secs(29));
    let marker = engine.dispatch(BLOCK, &2).await?;
    until_state(&engine, marker, ExecutionState::Running).await;
    assert_eq!(state(&engine, id), ExecutionState::Running);
    clock.advance(Duration::from_secs(1));
    assert!(matches!(finished(&engine, BLOCK, id).await, Err(Error::TimedOut(_))));
    until(&probe.dropped, 1, "the timed-out attempt is aborted").await;
    assert!(matches!(engine.result_of(BLOCK, id), Err(Error::TimedOut(_))));
    probe.release.notify_waiters();
    finished(&engine, BLOCK, marker).await?;
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_running_work_and_claims_nothing_new() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let (engine, probe) = open(&disk, &clock)?;
    let pool = engine.serve(options("w"))?;
    assert_eq!(pool.wait_until_ready().await, WorkerStatus::Ready);
    let running = engine.dispatch(BLOCK, &1).await?;
    until(&probe.started, 1, "the attempt starts").await;

    let draining = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.drain().await })
    };
    wait_until(LIMIT, "pool is draining", || pool.status() == WorkerStatus::Draining).await;
    let queued = engine.dispatch(BLOCK, &2).await?;
    probe.release.notify_one();
    assert_eq!(draining.await??, 0, "nothing had to be given back");
    assert_eq!(pool.status(), WorkerStatus::Stopped);
    assert_eq!(finished(&engine, BLOCK, running).await?, 1);
    assert_eq!(probe.started.load(Ordering::SeqCst), 1, "the draining pool claimed nothing new");
    let info = engine.state_of(queued)?;
    assert_eq!((info.state, info.attempts), (ExecutionState::Pending, 0));
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_gives_back_what_outlives_the_grace_period() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let (engine, probe) = open(&disk, &clock)?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(BLOCK, &1).await?;
    until(&probe.started, 1, "the attempt starts").await;
    until_state(&engine, id, ExecutionState::Running).await;
    let draining = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.drain_with_grace(Duration::from_secs(5)).await })
    };
    wait_until(LIMIT, "pool is draining", || pool.status() == WorkerStatus::Draining).await;
    clock.advance(Duration::from_secs(5));
    assert_eq!(draining.await??, 1);
    until(&probe.dropped, 1, "the attempt is aborted").await;
    let info = engine.state_of(id)?;
    assert_eq!((info.state, info.attempts), (ExecutionState::Running, 1), "execution goes on");
    assert_eq!(info.history[0].error.code.as_deref(), Some("abandoned"));
    assert_eq!(engine.queue_depth("default")?, 1, "the task is back in the queue");
    assert!(engine.running_tasks()?.is_empty());
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}
