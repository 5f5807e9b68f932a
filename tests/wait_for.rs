//! `wait_for` leaves nothing behind: its registration is removed when the call returns,
//! whichever way (result, timeout, future dropped). It once stayed until the execution
//! finished, so calls on a finished execution (or re-registrations after a wake-up) grew
//! memory by about 88 bytes each, without bound.
//!
//! Method: the engine's count of registrations (`Engine::waiters`) after each way of
//! returning, and the process's resident memory over many calls on one finished execution
//! (200,000 by default, 1,000,000 with `STENT_SLOW=1`; the leak was 17.6 MB and 88 MB).

mod support;

use std::time::Duration;

use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Error, Workflow};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");
const WAIT: Workflow<(), u32> = Workflow::new("wait_for_go");

fn open(disk: &MemoryDisk, clock: &ManualClock) -> stent::Result<stent::Engine> {
    builder(disk, clock)
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .workflow(WAIT, |ctx: stent::Ctx, ()| async move { ctx.wait_for_signal::<u32>("go").await })
        .open()
}

/// Resident set size in bytes (Linux), or `None` where /proc is not there.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_leaves_no_waiter_behind() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock)?;
    let pool = engine.serve(options("w"))?;

    // Returned with a result.
    let done = engine.dispatch(ECHO, &7).await?;
    assert_eq!(finished(&engine, ECHO, done).await?, 7);
    assert_eq!(engine.wait_for(ECHO, done, None).await?, 7);
    assert_eq!(engine.waiters(), 0, "after a result");

    // Returned with a timeout (on the engine clock), the execution still waiting.
    let waiting = engine.dispatch(WAIT, &()).await?;
    let call = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.wait_for(WAIT, waiting, Some(Duration::from_secs(1))).await })
    };
    wait_until(LIMIT, "the timed call is registered", || engine.waiters() == 1).await;
    clock.advance(Duration::from_secs(2));
    assert!(matches!(call.await?, Err(Error::WaitTimeout(id)) if id == waiting));
    assert_eq!(engine.waiters(), 0, "after a timeout");

    // The future dropped after its first poll registered it.
    tokio::select! {
        biased;
        _ = engine.wait_for(WAIT, waiting, None) => panic!("the execution cannot finish before its signal"),
        _ = std::future::ready(()) => {}
    }
    assert_eq!(engine.waiters(), 0, "after the future is dropped");

    // Woken by the finish: the wake-up removes the list, the call returns the result.
    let call = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.wait_for(WAIT, waiting, None).await })
    };
    wait_until(LIMIT, "the call is registered", || engine.waiters() == 1).await;
    engine.send_signal(waiting, "go", &9u32).await?;
    assert_eq!(call.await??, 9);
    assert_eq!(engine.waiters(), 0, "after a wake-up");

    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_wait_for_calls_leave_memory_flat() -> anyhow::Result<()> {
    let calls: u64 = if std::env::var_os("STENT_SLOW").is_some() { 1_000_000 } else { 200_000 };
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock)?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(ECHO, &3).await?;
    assert_eq!(finished(&engine, ECHO, id).await?, 3);
    // Warm up: page cache, allocator pools.
    for _ in 0..10_000 {
        engine.wait_for(ECHO, id, None).await?;
    }
    let before = resident_bytes();
    for _ in 0..calls {
        engine.wait_for(ECHO, id, None).await?;
    }
    assert_eq!(engine.waiters(), 0);
    if let (Some(before), Some(after)) = (before, resident_bytes()) {
        let grown = after.saturating_sub(before);
        // The leak grew 88 bytes a call; allow a tenth of that for allocator noise.
        assert!(grown < calls * 9, "{calls} calls grew resident memory by {grown} bytes");
    }
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}
