//! Cached functions: a `cached(ttl)` function's result is reused across executions by
//! (name, version, input) until the TTL passes; a new version or input runs it again; the
//! cache is bounded and drops the entries that expire soonest.
//!
//! Method: `MemoryDisk` + `ManualClock`; the activity counts its runs.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Ctx, Engine, Workflow};
use support::*;

const RATE: Activity<String, u64> = Activity::new("exchange_rate");
const QUOTE: Workflow<String, u64> = Workflow::new("quote");

fn open(
    disk: &MemoryDisk,
    clock: &ManualClock,
    runs: &Arc<AtomicU64>,
    version: u32,
    max: u64,
) -> stent::Result<Engine> {
    let runs = runs.clone();
    builder(disk, clock)
        .workflow(QUOTE, |ctx: Ctx, pair: String| async move { ctx.call(RATE, &pair).await })
        .activity_with(
            RATE,
            move |pair: String| {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Ok::<_, ActivityError>(pair.len() as u64 * 1000 + n) }
            },
            stent::FunctionOptions::new().cached("1h").version(version),
        )
        .cache_entries_max(max)
        .open()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_result_is_reused_until_its_ttl() -> anyhow::Result<()> {
    let (disk, clock, runs) = (MemoryDisk::new(), ManualClock::default(), Arc::new(AtomicU64::new(0)));
    let engine = open(&disk, &clock, &runs, 1, 100)?;
    let pool = engine.serve(options("w"))?;
    let first = engine.dispatch(QUOTE, &"EURUSD".to_string()).await?;
    assert_eq!(finished(&engine, QUOTE, first).await?, 6001);
    // Another execution, same input: the recorded result, no run.
    let again = engine.dispatch(QUOTE, &"EURUSD".to_string()).await?;
    assert_eq!(finished(&engine, QUOTE, again).await?, 6001);
    // A direct dispatch of the activity is served from the cache too.
    let direct = engine.dispatch(RATE, &"EURUSD".to_string()).await?;
    assert_eq!(finished(&engine, RATE, direct).await?, 6001);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Another input runs.
    let other = engine.dispatch(QUOTE, &"GBPUSD".to_string()).await?;
    assert_eq!(finished(&engine, QUOTE, other).await?, 6002);
    // After the TTL it runs again.
    clock.advance(Duration::from_secs(3600));
    let later = engine.dispatch(QUOTE, &"EURUSD".to_string()).await?;
    assert_eq!(finished(&engine, QUOTE, later).await?, 6003);
    pool.drain().await?;
    engine.close().await?;

    // A new version of the function does not reuse the old version's results.
    let engine = open(&disk, &clock, &runs, 2, 100)?;
    let pool = engine.serve(options("w2"))?;
    let v2 = engine.dispatch(QUOTE, &"EURUSD".to_string()).await?;
    assert_eq!(finished(&engine, QUOTE, v2).await?, 6004);
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_bounded() -> anyhow::Result<()> {
    let (disk, clock, runs) = (MemoryDisk::new(), ManualClock::default(), Arc::new(AtomicU64::new(0)));
    let engine = open(&disk, &clock, &runs, 1, 2)?;
    let pool = engine.serve(options("w"))?;
    for (i, pair) in ["A", "B", "C"].into_iter().enumerate() {
        clock.advance(Duration::from_secs(1)); // A expires first, then B, then C.
        let id = engine.dispatch(RATE, &pair.to_string()).await?;
        assert_eq!(finished(&engine, RATE, id).await?, 1000 + i as u64 + 1);
    }
    // C and B are kept; A (the soonest to expire) was evicted and runs again.
    for pair in ["C", "B"] {
        let id = engine.dispatch(RATE, &pair.to_string()).await?;
        finished(&engine, RATE, id).await?;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let a = engine.dispatch(RATE, &"A".to_string()).await?;
    assert_eq!(finished(&engine, RATE, a).await?, 1004);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}
