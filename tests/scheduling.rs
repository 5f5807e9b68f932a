//! Time and routing: a delayed task is not claimed before it is due; retry backoff schedules
//! the next attempt exactly; queues and tags route tasks to the workers that serve them.
//!
//! Method: a manual clock. To show a task was *not* taken, a marker task dispatched after it
//! is run to completion first: the workers were live and had every chance to take it.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Engine, ExecutionId, ExecutionState, RetryPolicy, WorkerOptions};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");
const FLAKY: Activity<u32, u64> = Activity::new("flaky");

async fn prove_workers_idle(engine: &Engine) -> anyhow::Result<()> {
    let marker = engine.dispatch(ECHO, &0).await?;
    finished(engine, ECHO, marker).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_not_claimed_before_it_is_due() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock).activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) }).open()?;
    let pool = engine.serve(options("w"))?;
    let later = engine.schedule(ECHO, &7, "10s").await?;
    let info = engine.state_of(later)?;
    assert_eq!(info.scheduled_ms, info.created_ms + 10_000);

    prove_workers_idle(&engine).await?;
    assert_eq!(state(&engine, later), ExecutionState::Pending);
    clock.advance(Duration::from_millis(9_999));
    prove_workers_idle(&engine).await?;
    assert_eq!(state(&engine, later), ExecutionState::Pending);
    assert_eq!(engine.state_of(later)?.attempts, 0);

    clock.advance(Duration::from_millis(1));
    assert_eq!(finished(&engine, ECHO, later).await?, 7);
    assert_eq!(engine.state_of(later)?.started_ms, Some(info.created_ms + 10_000));
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_schedules_the_next_attempt() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let attempts_at: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (a, c) = (attempts_at.clone(), clock.clone());
    let engine = builder(&disk, &clock)
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .activity_with(
            FLAKY,
            move |_: u32| {
                let now = stent::Clock::now_ms(&c);
                let n = {
                    let mut a = a.lock().unwrap();
                    a.push(now);
                    a.len()
                };
                async move {
                    if n < 3 {
                        return Err(ActivityError::retryable(format!("attempt {n} failed")));
                    }
                    Ok(now)
                }
            },
            stent::FunctionOptions::new().retry(RetryPolicy::exponential(5, Duration::from_secs(10))),
        )
        .open()?;
    let pool = engine.serve(options("w"))?;
    let t0 = stent::Clock::now_ms(&clock);
    let id = engine.dispatch(FLAKY, &1).await?;
    let attempts = |n: usize| {
        let a = attempts_at.clone();
        move || a.lock().unwrap().len() >= n
    };
    stent::testing::wait_until(LIMIT, "first attempt", attempts(1)).await;
    stent::testing::wait_until(LIMIT, "first failure recorded", || engine.state_of(id).unwrap().history.len() == 1)
        .await;

    // Not before 10 s.
    clock.advance(Duration::from_millis(9_999));
    prove_workers_idle(&engine).await?;
    assert_eq!(attempts_at.lock().unwrap().len(), 1);
    clock.advance(Duration::from_millis(1));
    stent::testing::wait_until(LIMIT, "second attempt", attempts(2)).await;
    stent::testing::wait_until(LIMIT, "second failure recorded", || engine.state_of(id).unwrap().history.len() == 2)
        .await;

    // Then 20 s (factor 2).
    clock.advance(Duration::from_millis(19_999));
    prove_workers_idle(&engine).await?;
    assert_eq!(attempts_at.lock().unwrap().len(), 2);
    clock.advance(Duration::from_millis(1));
    assert_eq!(finished(&engine, FLAKY, id).await?, t0 + 30_000);
    assert_eq!(*attempts_at.lock().unwrap(), vec![t0, t0 + 10_000, t0 + 30_000]);
    let info = engine.state_of(id)?;
    assert_eq!(info.attempts, 3);
    assert_eq!(info.history[1].error.message, "attempt 2 failed");
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_tags_route_tasks() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock).activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) }).open()?;
    let gpu_worker = engine.serve(WorkerOptions {
        queues: vec!["default".into(), "video".into()],
        tags: vec!["gpu".into()],
        ..options("gpu")
    })?;
    let gpu = engine.dispatch(ECHO, &1).tag("gpu").await?;
    let untagged = engine.dispatch(ECHO, &2).await?;
    let video = engine.dispatch(ECHO, &3).queue("video").await?;
    let cpu_only = engine.dispatch(ECHO, &4).tag("cpu").await?;
    let billing = engine.dispatch(ECHO, &5).queue("billing").await?;
    for id in [gpu, untagged, video] {
        finished(&engine, ECHO, id).await?;
    }
    prove_workers_idle(&engine).await?;
    assert_eq!(state(&engine, cpu_only), ExecutionState::Pending, "a gpu worker took a cpu-only task");
    assert_eq!(state(&engine, billing), ExecutionState::Pending, "a queue nobody serves was served");
    assert_eq!(engine.queue_depth("billing")?, 1);

    let other = engine.serve(WorkerOptions {
        queues: vec!["default".into(), "billing".into()],
        tags: vec!["cpu".into()],
        ..options("cpu")
    })?;
    for id in [cpu_only, billing] {
        finished(&engine, ECHO, id).await?;
    }
    let ran_on = |id: ExecutionId| engine.state_of(id).map(|i| i.state);
    assert_eq!(ran_on(cpu_only)?, ExecutionState::Completed);
    assert_eq!(engine.queue_depth("billing")?, 0);
    gpu_worker.drain().await?;
    other.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let order: Arc<Mutex<Vec<u32>>> = Arc::default();
    let o = order.clone();
    let engine = builder(&disk, &clock)
        .activity(ECHO, move |x: u32| {
            o.lock().unwrap().push(x);
            async move { Ok::<_, ActivityError>(x) }
        })
        .open()?;
    let mut ids = Vec::new();
    for (x, p) in [(1, 0), (2, 5), (3, 0), (4, 9), (5, 5)] {
        ids.push(engine.dispatch(ECHO, &x).priority(p).await?);
    }
    let pool = engine.serve(WorkerOptions { max_concurrency: 1, ..options("single") })?;
    for id in ids {
        finished(&engine, ECHO, id).await?;
    }
    assert_eq!(*order.lock().unwrap(), vec![4, 2, 5, 1, 3], "priority first, then age");
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

/// Captures formatted tracing output for one test (the subscriber is the thread's default,
/// and a current-thread runtime runs the engine's tasks on that thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Tags stay routing constraints, but work no pool of this process accepts is visible: counted
/// per queue and tags by `unserved_work`, and a warning once it has waited longer than
/// `unserved_warn_after` on the engine clock.
#[tokio::test]
async fn tagged_work_no_pool_serves_is_visible() -> anyhow::Result<()> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .unserved_warn_after("1m")
        .open()?;
    let gpu = engine.serve(WorkerOptions { tags: vec!["gpu".into()], ..options("gpu") })?;
    let cpu_task = engine.dispatch(ECHO, &1).tag("cpu").await?;
    let billing = engine.dispatch(ECHO, &2).queue("billing").await?;
    let gpu_task = engine.dispatch(ECHO, &3).tag("gpu").await?;
    finished(&engine, ECHO, gpu_task).await?;
    prove_workers_idle(&engine).await?;

    let start = stent::Clock::now_ms(&clock);
    let unserved = engine.unserved_work();
    assert_eq!(
        unserved,
        vec![
            stent::UnservedWork {
                queue: "billing".into(),
                tags: vec![],
                pending: 1,
                oldest_ready_ms: start,
                newer_version: 0
            },
            stent::UnservedWork {
                queue: "default".into(),
                tags: vec!["cpu".into()],
                pending: 1,
                oldest_ready_ms: start,
                newer_version: 0
            },
        ]
    );
    assert_eq!(state(&engine, cpu_task), ExecutionState::Pending);

    // Not yet past the threshold: no warning.
    clock.advance(Duration::from_secs(30));
    tokio::task::yield_now().await;
    assert_eq!(engine.stats().unserved_warnings, 0);
    assert!(!captured.text().contains("no worker pool"), "{}", captured.text());

    // Past it: one warning per group, naming queue and tags.
    clock.advance(Duration::from_secs(31));
    stent::testing::wait_until(LIMIT, "both groups are warned about", || engine.stats().unserved_warnings >= 2).await;
    let log = captured.text();
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("no worker pool in this process serves"), "{log}");
    assert!(log.contains("queue=billing"), "{log}");
    assert!(log.contains("tags=[\"cpu\"]"), "{log}");

    // A pool that accepts them runs them; nothing is left unserved.
    let cpu = engine.serve(WorkerOptions {
        queues: vec!["default".into(), "billing".into()],
        tags: vec!["cpu".into()],
        ..options("cpu")
    })?;
    for id in [cpu_task, billing] {
        assert!(finished(&engine, ECHO, id).await? > 0);
    }
    assert_eq!(engine.unserved_work(), vec![]);
    gpu.drain().await?;
    cpu.drain().await?;
    engine.close().await?;
    Ok(())
}
