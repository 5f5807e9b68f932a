//! Claiming under concurrency: every task is run by exactly one worker, and a function's
//! `max_concurrent` is never exceeded however many workers race for it.
//!
//! Method: several worker pools on a multi-thread runtime over one engine; activities count
//! their own runs and the number of attempts inside them at once.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, ExecutionState, WorkerOptions};
use support::*;

const RECORD: Activity<u32, u32> = Activity::new("record");
const LIMITED: Activity<u32, u32> = Activity::new("limited");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_workers_claim_m_tasks_each_exactly_once() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let seen: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let s = seen.clone();
    let engine = builder(&disk, &clock)
        .activity(RECORD, move |x: u32| {
            *s.lock().unwrap().entry(x).or_default() += 1;
            async move {
                tokio::task::yield_now().await;
                Ok::<_, ActivityError>(x)
            }
        })
        .open()?;
    let pools: Vec<_> = (0..4)
        .map(|i| engine.serve(WorkerOptions { max_concurrency: 16, ..options(&format!("w{i}")) }))
        .collect::<Result<_, _>>()?;
    const M: u32 = 600;
    let mut ids = Vec::new();
    for x in 0..M {
        ids.push(engine.dispatch(RECORD, &x).await?);
    }
    for (x, id) in (0..M).zip(&ids) {
        assert_eq!(finished(&engine, RECORD, *id).await?, x);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), M as usize);
    assert!(
        seen.values().all(|&n| n == 1),
        "some task ran twice: {:?}",
        seen.iter().filter(|(_, n)| **n != 1).collect::<Vec<_>>()
    );
    assert_eq!(engine.stats().claims, u64::from(M));
    for id in &ids {
        assert_eq!(engine.state_of(*id)?.attempts, 1);
    }
    let completed = engine.counts_by_state()?.into_iter().find(|(s, _)| *s == ExecutionState::Completed).map(|c| c.1);
    assert_eq!(completed, Some(u64::from(M)));
    for pool in pools {
        pool.drain().await?;
    }
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrent_is_never_exceeded() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let inside = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (i, p, d) = (inside.clone(), peak.clone(), done.clone());
    let engine = builder(&disk, &clock)
        .activity_with(
            LIMITED,
            move |x: u32| {
                let (i, p, d) = (i.clone(), p.clone(), d.clone());
                async move {
                    let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    // The first wave holds until three are inside at once (bounded in real time),
                    // so that the limit allowing three does not depend on scheduling luck.
                    let start = std::time::Instant::now();
                    while d.load(Ordering::SeqCst) == 0 && p.load(Ordering::SeqCst) < 3 && start.elapsed() < LIMIT {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                    for _ in 0..20 {
                        tokio::task::yield_now().await;
                    }
                    i.fetch_sub(1, Ordering::SeqCst);
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ActivityError>(x)
                }
            },
            stent::FunctionOptions::new().max_concurrent(3),
        )
        .open()?;
    const N: u64 = 300;
    for x in 0..N as u32 {
        engine.dispatch(LIMITED, &x).await?;
    }
    // All queued first, so the pools race for them.
    let pools: Vec<_> = (0..4)
        .map(|i| engine.serve(WorkerOptions { max_concurrency: 32, ..options(&format!("w{i}")) }))
        .collect::<Result<_, _>>()?;
    until(&done, N, "all limited tasks finish").await;
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} attempts ran at once with max_concurrent(3)");
    assert_eq!(peak, 3, "the limit should still allow 3 at once");
    for pool in pools {
        pool.drain().await?;
    }
    engine.close().await?;
    Ok(())
}
