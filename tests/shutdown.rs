//! Closing an engine never panics, drained or not.
//!
//! Method: a process-wide panic hook counts every panic in this test binary (tokio swallows a
//! panicking task, so without the hook a panic inside a claim loop would go unnoticed; with
//! `panic = "abort"` it would kill the application). Each round opens an engine, starts
//! several worker pools, waits until every claim loop has registered itself idle (so a
//! dispatch could hand it a task), closes the engine without draining, and waits until every
//! pool reports `Stopped`: a claim loop that panicked never gets there.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, WorkerStatus};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");

static PANICS: AtomicU64 = AtomicU64::new(0);

fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_idle_pools_never_panics() -> anyhow::Result<()> {
    count_panics();
    for round in 0..20 {
        let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
        let ran = Arc::new(AtomicU64::new(0));
        let r = ran.clone();
        let engine = builder(&disk, &clock)
            .activity(ECHO, move |x: u32| {
                r.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, ActivityError>(x) }
            })
            .open()?;
        let pools: Vec<_> = (0..4).map(|i| engine.serve(options(&format!("w{i}")))).collect::<Result<_, _>>()?;
        // Some work first, so the loops have been through a claim and back to idle.
        for x in 0..3 {
            let id = engine.dispatch(ECHO, &x).await?;
            assert_eq!(finished(&engine, ECHO, id).await?, x);
        }
        wait_until(LIMIT, "every claim loop waits idle", || engine.idle_workers() == pools.len()).await;
        engine.close().await?;
        wait_until(LIMIT, &format!("round {round}: every pool stops after close"), || {
            pools.iter().all(|p| p.status() == WorkerStatus::Stopped)
        })
        .await;
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "round {round}: a task panicked during close");
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_busy_pools_never_panics() -> anyhow::Result<()> {
    count_panics();
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .activity(ECHO, |x: u32| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, ActivityError>(x)
        })
        .open()?;
    let pools: Vec<_> = (0..3).map(|i| engine.serve(options(&format!("w{i}")))).collect::<Result<_, _>>()?;
    for x in 0..5 {
        engine.dispatch(ECHO, &x).await?;
    }
    wait_until(LIMIT, "attempts are running", || pools.iter().map(|p| p.running()).sum::<usize>() == 5).await;
    engine.close().await?;
    wait_until(LIMIT, "every pool stops after close", || pools.iter().all(|p| p.status() == WorkerStatus::Stopped))
        .await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task panicked during close");
    Ok(())
}
