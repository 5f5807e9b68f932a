//! Blocked workflow futures kept in memory (`EngineBuilder::evict_after`): a workflow woken
//! soon resumes where it stopped; one that waits longer than the threshold, or on a timer known
//! to be later, is dropped and re-run over its journal when woken. Either way it gets the same
//! outcomes. What a user sees: how many times the workflow function is entered from the top.
//!
//! Method: `MemoryDisk` + `ManualClock`; eviction timers run on the manual clock.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Ctx, Engine, EngineBuilder, ExecutionState, Workflow};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");
const CHAIN: Workflow<u32, u32> = Workflow::new("chain");
const WAITER: Workflow<u32, u32> = Workflow::new("waiter");
const SLEEPER: Workflow<u64, u64> = Workflow::new("sleeper");

/// How many times each execution's workflow function was entered, by its input.
#[derive(Clone, Default)]
struct Entries(Arc<Mutex<HashMap<u64, u64>>>);

impl Entries {
    fn enter(&self, key: u64) {
        *self.0.lock().unwrap().entry(key).or_default() += 1;
    }
    fn of(&self, key: u64) -> u64 {
        self.0.lock().unwrap().get(&key).copied().unwrap_or(0)
    }
}

fn engine(builder: EngineBuilder, entries: &Entries) -> stent::Result<Engine> {
    let (chain, waiter, sleeper) = (entries.clone(), entries.clone(), entries.clone());
    builder
        .workflow(CHAIN, move |ctx: Ctx, n: u32| {
            chain.enter(u64::from(n));
            async move {
                let mut sum = 0;
                for i in 0..n {
                    sum += ctx.call(ECHO, &i).await?;
                }
                Ok(sum)
            }
        })
        .workflow(WAITER, move |ctx: Ctx, key: u32| {
            waiter.enter(u64::from(key));
            async move {
                let v: u32 = ctx.wait_for_signal("go").await?;
                ctx.call(ECHO, &(v + key)).await
            }
        })
        .workflow(SLEEPER, move |ctx: Ctx, secs: u64| {
            sleeper.enter(secs);
            async move {
                ctx.sleep(Duration::from_secs(secs)).await?;
                Ok(secs)
            }
        })
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .open()
}

async fn suspensions(engine: &Engine, at_least: u64) {
    wait_until(LIMIT, &format!("{at_least} suspensions"), || engine.stats().suspensions >= at_least).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_woken_soon_resumes_where_it_stopped_instead_of_replaying() -> anyhow::Result<()> {
    for (threshold, entered) in [(None, 1), (Some(Duration::ZERO), 21)] {
        let (disk, clock, entries) = (MemoryDisk::new(), ManualClock::default(), Entries::default());
        let mut b = builder(&disk, &clock);
        if let Some(t) = threshold {
            b = b.evict_after(t);
        }
        let engine = engine(b, &entries)?;
        let pool = engine.serve(options("w"))?;
        let id = engine.dispatch(CHAIN, &20).await?;
        assert_eq!(finished(&engine, CHAIN, id).await?, (0..20).sum::<u32>());
        assert_eq!(entries.of(20), entered, "threshold {threshold:?}: times the workflow ran from the top");
        assert_eq!(engine.parked_workflows(), 0, "a finished workflow keeps nothing in memory");
        pool.drain().await?;
        assert_consistent(&engine);
        engine.close().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_waiting_past_the_threshold_is_dropped_and_the_workflow_replays() -> anyhow::Result<()> {
    let (disk, clock, entries) = (MemoryDisk::new(), ManualClock::default(), Entries::default());
    let engine = engine(builder(&disk, &clock).evict_after("1m"), &entries)?;
    let pool = engine.serve(options("w"))?;
    let early = engine.dispatch(WAITER, &1).await?;
    suspensions(&engine, 1).await;
    assert_eq!(engine.parked_workflows(), 1);
    clock.advance(Duration::from_secs(40));
    let late = engine.dispatch(WAITER, &2).await?;
    suspensions(&engine, 2).await;
    assert_eq!(engine.parked_workflows(), 2);
    // The first has now waited 70 s, the second 30 s.
    clock.advance(Duration::from_secs(30));
    wait_until(LIMIT, "the first future is evicted", || engine.parked_workflows() == 1).await;

    engine.send_signal(early, "go", &10).await?;
    engine.send_signal(late, "go", &20).await?;
    assert_eq!(finished(&engine, WAITER, early).await?, 11);
    assert_eq!(finished(&engine, WAITER, late).await?, 22);
    assert_eq!(entries.of(1), 2, "the evicted workflow re-ran from the top");
    assert_eq!(entries.of(2), 1, "the parked one resumed");
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_due_after_the_threshold_drops_the_future_at_once() -> anyhow::Result<()> {
    let (disk, clock, entries) = (MemoryDisk::new(), ManualClock::default(), Entries::default());
    let engine = engine(builder(&disk, &clock).evict_after("1m"), &entries)?;
    let pool = engine.serve(options("w"))?;

    let short = engine.dispatch(SLEEPER, &10).await?;
    suspensions(&engine, 1).await;
    assert_eq!(engine.parked_workflows(), 1, "a 10 s sleep keeps the future");
    clock.advance(Duration::from_secs(10));
    assert_eq!(finished(&engine, SLEEPER, short).await?, 10);
    assert_eq!(entries.of(10), 1);

    let long = engine.dispatch(SLEEPER, &3600).await?;
    suspensions(&engine, 2).await;
    assert_eq!(engine.parked_workflows(), 0, "an hour's sleep drops the future at once");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(finished(&engine, SLEEPER, long).await?, 3600);
    assert_eq!(entries.of(3600), 2);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_futures_are_bounded_oldest_dropped_first() -> anyhow::Result<()> {
    let (disk, clock, entries) = (MemoryDisk::new(), ManualClock::default(), Entries::default());
    let engine = engine(builder(&disk, &clock).parked_workflows_max(2), &entries)?;
    let pool = engine.serve(options("w"))?;
    let mut ids = Vec::new();
    for key in 1..=5u32 {
        ids.push(engine.dispatch(WAITER, &key).await?);
        suspensions(&engine, u64::from(key)).await;
        assert!(engine.parked_workflows() <= 2);
    }
    assert_eq!(engine.parked_workflows(), 2);
    // Newest first: a replayed workflow parks again when it blocks, which would drop another.
    for (key, id) in (1..6u32).zip(&ids).rev() {
        engine.send_signal(*id, "go", &100).await?;
        assert_eq!(finished(&engine, WAITER, *id).await?, 100 + key);
    }
    let entered: Vec<u64> = (1..=5).map(|k| entries.of(k)).collect();
    assert_eq!(entered, [2, 2, 2, 1, 1], "the three oldest were dropped and replayed");
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_an_execution_drops_its_parked_future() -> anyhow::Result<()> {
    let (disk, clock, entries) = (MemoryDisk::new(), ManualClock::default(), Entries::default());
    let engine = engine(builder(&disk, &clock), &entries)?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(WAITER, &1).await?;
    suspensions(&engine, 1).await;
    assert_eq!(engine.parked_workflows(), 1);
    assert_eq!(engine.cancel(id).await?, ExecutionState::Cancelled);
    assert_eq!(engine.parked_workflows(), 0);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_parked_replays_over_the_journal() -> anyhow::Result<()> {
    let (disk, clock, entries) = (MemoryDisk::new(), ManualClock::default(), Entries::default());
    let calls = Arc::new(AtomicU64::new(0));
    let open = |entries: &Entries| {
        let calls = calls.clone();
        let entries = entries.clone();
        builder(&disk, &clock)
            .workflow(WAITER, move |ctx: Ctx, key: u32| {
                entries.enter(u64::from(key));
                async move {
                    let a = ctx.call(ECHO, &key).await?;
                    let v: u32 = ctx.wait_for_signal("go").await?;
                    ctx.call(ECHO, &(a + v)).await
                }
            })
            .activity(ECHO, move |x: u32| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, ActivityError>(x) }
            })
            .open()
    };
    let engine = open(&entries)?;
    let _pool = engine.serve(options("w"))?;
    let id = engine.dispatch(WAITER, &5).await?;
    suspensions(&engine, 2).await; // After the first call, waiting for the signal.
    assert_eq!(engine.parked_workflows(), 1);
    engine.close().await?; // Crash: the parked future is gone with the process.

    let engine = open(&entries)?;
    let pool = engine.serve(options("w2"))?;
    engine.send_signal(id, "go", &10).await?;
    assert_eq!(finished(&engine, WAITER, id).await?, 15);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the first call was not redone");
    assert_eq!(entries.of(5), 2, "entered once before the crash, once to replay after it");
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}
