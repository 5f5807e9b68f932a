//! Crash recovery at open: an attempt running when its process died is re-queued when the
//! database is next opened, and the attempt counts, so a task that kills the process every
//! time ends in the dead-letter queue instead of crash-looping.
//!
//! Method: `Engine::close` without draining leaves running attempts leased on disk, exactly
//! what a killed process leaves; a new engine is then opened on the same `MemoryDisk` bytes.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Engine, Error, ExecutionState, RetryPolicy};
use support::*;

const WORK: Activity<u32, u32> = Activity::new("work");

/// An engine whose `work` activity hangs (the process will "die" while it runs) or succeeds.
fn open(disk: &MemoryDisk, clock: &ManualClock, hang: bool, started: Arc<AtomicU64>) -> stent::Result<Engine> {
    builder(disk, clock)
        .activity_with(
            WORK,
            move |x: u32| {
                started.fetch_add(1, Ordering::SeqCst);
                async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, ActivityError>(x + 1)
                }
            },
            stent::FunctionOptions::new().retry(RetryPolicy::exponential(3, Duration::from_secs(1))),
        )
        .open()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_running_at_a_crash_is_requeued_at_open_and_the_attempt_counts() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let started = Arc::new(AtomicU64::new(0));
    let engine = open(&disk, &clock, true, started.clone())?;
    let _pool = engine.serve(options("doomed"))?;
    let id = engine.dispatch(WORK, &41).await?;
    until(&started, 1, "the attempt starts").await;
    until_state(&engine, id, ExecutionState::Running).await;
    engine.close().await?; // The process dies here.

    let started = Arc::new(AtomicU64::new(0));
    let engine = open(&disk, &clock, false, started.clone())?;
    let info = engine.state_of(id)?;
    assert_eq!(info.attempts, 1, "the lost attempt is counted");
    assert_eq!(info.history.len(), 1);
    assert_eq!(info.history[0].worker, "doomed");
    assert_eq!(info.history[0].error.code.as_deref(), Some("process_stopped"));
    assert!(engine.running_tasks()?.is_empty(), "nothing is left leased by the dead process");
    assert_eq!(engine.queue_depth("default")?, 1, "re-queued at once, no waiting for the lease");
    assert_consistent(&engine);

    let pool = engine.serve(options("survivor"))?;
    assert_eq!(finished(&engine, WORK, id).await?, 42);
    assert_eq!(engine.state_of(id)?.attempts, 2);
    assert_eq!(started.load(Ordering::SeqCst), 1);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_process_every_time_ends_in_the_dlq() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let mut id = None;
    for crash in 1..=3u32 {
        let started = Arc::new(AtomicU64::new(0));
        let engine = open(&disk, &clock, true, started.clone())?;
        if id.is_none() {
            id = Some(engine.dispatch(WORK, &1).await?);
        }
        let id = id.expect("dispatched");
        assert_eq!(engine.state_of(id)?.attempts, crash - 1);
        let _pool = engine.serve(options(&format!("run-{crash}")))?;
        until(&started, 1, "the attempt starts").await;
        until_state(&engine, id, ExecutionState::Running).await;
        engine.close().await?;
    }
    let id = id.expect("dispatched");
    let engine = open(&disk, &clock, false, Arc::default())?;
    let info = engine.state_of(id)?;
    assert_eq!(info.state, ExecutionState::Failed, "three lost attempts spend max_attempts = 3");
    assert_eq!(info.attempts, 3);
    let letters = engine.dead_letters(10)?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].execution_id, id);
    assert_eq!(letters[0].error.code.as_deref(), Some("process_stopped"));
    assert_eq!(letters[0].history.iter().map(|h| h.worker.as_str()).collect::<Vec<_>>(), ["run-1", "run-2", "run-3"]);
    match engine.result_of(WORK, id) {
        Err(Error::ExecutionFailed { error, .. }) => assert_eq!(error.code.as_deref(), Some("process_stopped")),
        other => panic!("unexpected {other:?}"),
    }
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_and_delayed_work_survives_a_restart() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock, false, Arc::default())?;
    let now = engine.dispatch(WORK, &1).await?;
    let later = engine.schedule(WORK, &2, "1h").await?;
    engine.close().await?;

    let engine = open(&disk, &clock, false, Arc::default())?;
    let pool = engine.serve(options("w"))?;
    assert_eq!(finished(&engine, WORK, now).await?, 2);
    assert_eq!(state(&engine, later), ExecutionState::Pending);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(finished(&engine, WORK, later).await?, 3);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}
