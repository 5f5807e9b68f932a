//! Workflow operations beyond `call`: durable sleep (a re-run sleeps only the remainder),
//! clock and random reads that replay identically, fan-out with results in input order, and
//! signals (buffered before the wait, consumed once each, in order).
//!
//! Method: `MemoryDisk` + `ManualClock`; crashes are `Engine::close` without draining and a
//! new engine on the same bytes.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Clock, Ctx, Engine, Error, ExecutionState, Workflow};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");
const NAP: Workflow<u32, u32> = Workflow::new("nap");

fn open_nap(disk: &MemoryDisk, clock: &ManualClock, calls: &Arc<AtomicU64>) -> stent::Result<Engine> {
    let calls = calls.clone();
    builder(disk, clock)
        .workflow(NAP, |ctx: Ctx, x: u32| async move {
            let a = ctx.call(ECHO, &x).await?;
            ctx.sleep("1h").await?;
            ctx.call(ECHO, &(a + 1)).await
        })
        .activity(ECHO, move |x: u32| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ActivityError>(x) }
        })
        .open()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_sleep_survives_a_crash_and_sleeps_only_the_remainder() -> anyhow::Result<()> {
    let (disk, clock, calls) = (MemoryDisk::new(), ManualClock::default(), Arc::new(AtomicU64::new(0)));
    let engine = open_nap(&disk, &clock, &calls)?;
    let _pool = engine.serve(options("w"))?;
    let id = engine.dispatch(NAP, &1).await?;
    until(&calls, 1, "the first call runs").await;
    wait_until(LIMIT, "the sleep's timer is recorded", || {
        engine.queue_depth("default").unwrap() == 0 && engine.running_tasks().unwrap().is_empty()
    })
    .await;
    clock.advance(Duration::from_secs(30 * 60));
    engine.close().await?; // Crash half way through the hour.

    let engine = open_nap(&disk, &clock, &calls)?;
    let pool = engine.serve(options("w2"))?;
    clock.advance(Duration::from_secs(30 * 60 - 1));
    let marker = engine.dispatch(ECHO, &0).await?;
    finished(&engine, ECHO, marker).await?;
    assert_eq!(state(&engine, id), ExecutionState::Running, "woke before the hour was up");
    clock.advance(Duration::from_secs(1));
    assert_eq!(finished(&engine, NAP, id).await?, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two workflow calls and the marker, none twice");
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const READS: Workflow<(), (u64, u64, u64)> = Workflow::new("reads");
const BLOCK: Activity<u32, u32> = Activity::new("block");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_and_random_reads_replay_identically() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let open = |hang: bool| {
        builder(&disk, &clock)
            .workflow(READS, |ctx: Ctx, ()| async move {
                let now = ctx.now().await?;
                let r = ctx.random().await?;
                ctx.call(BLOCK, &1).await?;
                let later = ctx.now().await?;
                Ok((now, r, later))
            })
            .activity(BLOCK, move |x: u32| async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<_, ActivityError>(x)
            })
            .seed(1234)
            .open()
    };
    let engine = open(true)?;
    let _pool = engine.serve(options("w"))?;
    let t0 = clock.now_ms();
    let id = engine.dispatch(READS, &()).await?;
    // The step's task exists only once the suspension that recorded the reads committed.
    wait_until(LIMIT, "the block step is running", || {
        engine.running_tasks().unwrap().iter().any(|t| t.function == "block")
    })
    .await;
    engine.close().await?;

    clock.advance(Duration::from_secs(60));
    let engine = builder(&disk, &clock)
        .workflow(READS, |ctx: Ctx, ()| async move {
            let now = ctx.now().await?;
            let r = ctx.random().await?;
            ctx.call(BLOCK, &1).await?;
            let later = ctx.now().await?;
            Ok((now, r, later))
        })
        .activity(BLOCK, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .seed(99) // A different seed: the recorded draw must win.
        .open()?;
    let pool = engine.serve(options("w2"))?;
    let (now, r, later) = finished(&engine, READS, id).await?;
    assert_eq!(now, t0, "the first read is replayed, not re-read");
    assert_eq!(later, t0 + 60_000, "a read taken after the crash sees the new time");
    let mut seeded = rand_draw(1234);
    assert_eq!(r, seeded(), "the draw from the first run (seed 1234) is replayed");
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

/// The first u64 the engine's RNG draws for `seed` (the engine uses `StdRng::seed_from_u64`).
fn rand_draw(seed: u64) -> impl FnMut() -> u64 {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    move || rng.random::<u64>()
}

const FAN: Workflow<Vec<u32>, Vec<u32>> = Workflow::new("fan");
const HALF_SECOND: Activity<u32, u32> = Activity::new("half_second");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_overlaps_and_keeps_input_order() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let inside = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let (i, p, c) = (inside.clone(), peak.clone(), clock.clone());
    let engine = builder(&disk, &clock)
        .workflow(FAN, |ctx: Ctx, items: Vec<u32>| async move { ctx.map(HALF_SECOND, items).await })
        .activity_with(
            HALF_SECOND,
            move |x: u32| {
                let (i, p, c) = (i.clone(), p.clone(), c.clone());
                async move {
                    let n = i.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(n, Ordering::SeqCst);
                    c.sleep_until(c.now_ms() + 500).await;
                    i.fetch_sub(1, Ordering::SeqCst);
                    if x == 13 {
                        return Err(ActivityError::permanent("unlucky"));
                    }
                    Ok::<_, ActivityError>(x * 2)
                }
            },
            stent::FunctionOptions::new().retry(stent::RetryPolicy::none()),
        )
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(FAN, &vec![4, 3, 2, 1]).await?;
    until(&inside, 4, "all four run at once").await;
    clock.advance(Duration::from_millis(500));
    assert_eq!(finished(&engine, FAN, id).await?, vec![8, 6, 4, 2]);
    assert_eq!(peak.load(Ordering::SeqCst), 4);

    let empty = engine.dispatch(FAN, &vec![]).await?;
    assert_eq!(finished(&engine, FAN, empty).await?, Vec::<u32>::new());

    let failing = engine.dispatch(FAN, &vec![1, 13, 2]).await?;
    until(&inside, 3, "three run at once").await;
    clock.advance(Duration::from_millis(500));
    match finished(&engine, FAN, failing).await {
        Err(Error::ExecutionFailed { error, .. }) => assert_eq!(error.message, "unlucky"),
        other => panic!("expected the item's error, got {other:?}"),
    }
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const INBOX: Workflow<(), Vec<String>> = Workflow::new("inbox");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_buffered_consumed_once_and_in_order() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(INBOX, |ctx: Ctx, ()| async move {
            let first: String = ctx.wait_for_signal("msg").await?;
            let marker = ctx.call(ECHO, &0).await?; // Let the next signals arrive meanwhile.
            let second: String = ctx.wait_for_signal("msg").await?;
            let third: String = ctx.wait_for_signal("msg").await?;
            Ok(vec![first, format!("{marker}"), second, third])
        })
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .open()?;
    // Sent before any worker runs the workflow: buffered.
    let id = engine.dispatch(INBOX, &()).await?;
    engine.send_signal(id, "msg", &"early").await?;
    engine.send_signal(id, "other", &"ignored").await?;
    let pool = engine.serve(options("w"))?;
    wait_until(LIMIT, "the workflow waits for its second signal", || {
        engine.running_tasks().unwrap().is_empty() && engine.queue_depth("default").unwrap() == 0
    })
    .await;
    engine.send_signal(id, "msg", &"two").await?;
    engine.send_signal(id, "msg", &"three").await?;
    assert_eq!(finished(&engine, INBOX, id).await?, vec!["early", "0", "two", "three"]);

    match engine.send_signal(id, "msg", &"late").await {
        Err(Error::ExecutionFinished { state, .. }) => assert_eq!(state, ExecutionState::Completed),
        other => panic!("expected ExecutionFinished, got {other:?}"),
    }
    assert!(matches!(engine.send_signal(stent::ExecutionId(999), "msg", &"x").await, Err(Error::UnknownExecution(_))));
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const TIMED: Workflow<(), (Option<String>, Option<String>, String)> = Workflow::new("timed");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_wait_with_timeout_records_which_came_first() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(TIMED, |ctx: Ctx, ()| async move {
            let first: Option<String> = ctx.wait_for_signal_timeout("go", "10m").await?;
            let second: Option<String> = ctx.wait_for_signal_timeout("go", "10m").await?;
            // A signal that arrives after its wait timed out is kept for the next wait.
            let late: String = ctx.wait_for_signal("go").await?;
            Ok((first, second, late))
        })
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(TIMED, &()).await?;
    let waiting = || engine.running_tasks().unwrap().is_empty() && engine.queue_depth("default").unwrap() == 0;
    wait_until(LIMIT, "first wait", waiting).await;
    clock.advance(Duration::from_secs(60));
    engine.send_signal(id, "go", &"in time").await?; // Wins against the 10 min timer.
    wait_until(LIMIT, "second wait", || engine.state_of(id).unwrap().steps == 2 && waiting()).await;
    clock.advance(Duration::from_secs(600)); // The second wait times out.
    wait_until(LIMIT, "third wait", || engine.state_of(id).unwrap().steps == 3 && waiting()).await;
    engine.send_signal(id, "go", &"late").await?;
    let (first, second, late) = finished(&engine, TIMED, id).await?;
    assert_eq!(first.as_deref(), Some("in time"));
    assert_eq!(second, None);
    assert_eq!(late, "late");
    let progress = engine.state_of(id)?.progress;
    assert_eq!(progress[0], "step 0: wait for signal \"go\" with a timeout completed", "{progress:#?}");
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const COUNTING: Workflow<u32, i64> = Workflow::new("counting");
const TALLY: Activity<u32, u32> = Activity::new("tally");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_bumped_in_activity_and_workflow_survive_a_crash_without_double_counting() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let open = |hang_on: u32| {
        builder(&disk, &clock)
            .workflow(COUNTING, |ctx: Ctx, n: u32| async move {
                for i in 0..n {
                    ctx.counter("workflow_bumps").add(1).await?;
                    ctx.call(TALLY, &i).await?;
                }
                ctx.state("phase").set(&"done").await?;
                let total = ctx.counter("workflow_bumps").add(0).await?;
                Ok(total)
            })
            .activity(TALLY, move |i: u32| async move {
                stent::activity::add_counter("activity_bumps", 10)?;
                if i == hang_on {
                    // Counted only with an accepted completion: this attempt never completes.
                    std::future::pending::<()>().await;
                }
                Ok::<_, ActivityError>(i)
            })
            .open()
    };
    let engine = open(2)?;
    let _pool = engine.serve(options("w"))?;
    let id = engine.dispatch(COUNTING, &4).await?;
    wait_until(LIMIT, "the third tally hangs", || {
        engine.running_tasks().unwrap().iter().any(|t| t.function == "tally")
            && engine.state_of(id).unwrap().counters.get("activity_bumps") == Some(&20)
    })
    .await;
    engine.close().await?;

    let engine = open(u32::MAX)?;
    let pool = engine.serve(options("w2"))?;
    assert_eq!(finished(&engine, COUNTING, id).await?, 4);
    let info = engine.state_of(id)?;
    assert_eq!(info.counters.get("workflow_bumps"), Some(&4), "each workflow bump counted once across the re-runs");
    assert_eq!(info.counters.get("activity_bumps"), Some(&40), "the lost attempt's bump was not counted");
    assert_eq!(info.custom_state.get("phase"), Some(&serde_json::json!("done")));
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const LATER: Workflow<u32, u32> = Workflow::new("later");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_workflow_is_pending_before_its_time_and_done_after() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(LATER, |ctx: Ctx, x: u32| async move { ctx.call(ECHO, &x).await })
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x + 1) })
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(LATER, &1).delay("2h").await?;
    stent::testing::run_until_idle(&engine, LIMIT).await?;
    assert_eq!(state(&engine, id), ExecutionState::Pending);
    clock.advance(Duration::from_secs(2 * 3600 - 1));
    stent::testing::run_until_idle(&engine, LIMIT).await?;
    assert_eq!(state(&engine, id), ExecutionState::Pending);
    clock.advance(Duration::from_secs(1));
    stent::testing::run_until_idle(&engine, LIMIT).await?;
    assert_eq!(state(&engine, id), ExecutionState::Completed);
    assert_eq!(engine.result_of(LATER, id)?, Some(2));
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

const GUARDED: Workflow<u32, u32> = Workflow::new("guarded");
const FLAKY: Activity<u32, u32> = Activity::new("flaky");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_options_override_the_function_defaults() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let attempts = Arc::new(AtomicU64::new(0));
    let a = attempts.clone();
    let engine = builder(&disk, &clock)
        .workflow(GUARDED, |ctx: Ctx, x: u32| async move {
            // The function's default is one attempt; this call allows three.
            let retry = stent::RetryPolicy::exponential(3, Duration::ZERO);
            ctx.call_with(FLAKY, &x, stent::CallOptions { retry: Some(retry), ..Default::default() }).await
        })
        .activity_with(
            FLAKY,
            move |x: u32| {
                let n = a.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n < 3 {
                        return Err(ActivityError::retryable(format!("attempt {n}")));
                    }
                    Ok::<_, ActivityError>(x)
                }
            },
            stent::FunctionOptions::new().retry(stent::RetryPolicy::none()),
        )
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(GUARDED, &9).await?;
    assert_eq!(finished(&engine, GUARDED, id).await?, 9);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

const DEADLINE: Workflow<u32, u32> = Workflow::new("deadline");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_times_out_a_workflow_and_cancels_its_steps() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(DEADLINE, |ctx: Ctx, x: u32| async move {
            ctx.sleep("2h").await?;
            Ok(x)
        })
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(DEADLINE, &1).max_duration("1h").await?;
    stent::testing::run_until_idle(&engine, LIMIT).await?;
    clock.advance(Duration::from_secs(3600));
    assert!(matches!(finished(&engine, DEADLINE, id).await, Err(Error::TimedOut(_))));
    stent::testing::run_until_idle(&engine, LIMIT).await?;
    clock.advance(Duration::from_secs(3600)); // The sleep's timer was cancelled: nothing runs.
    stent::testing::run_until_idle(&engine, LIMIT).await?;
    assert_eq!(state(&engine, id), ExecutionState::TimedOut);
    assert!(engine.state_of(id)?.progress[0].contains("sleep"));
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}
