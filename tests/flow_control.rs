//! Flow control as a user sees it: rate limits per function and per key (durable across a
//! restart, a backlog spread over its slots without polling), concurrency keys under a burst
//! of claims (never more than the limit at once, a workflow's waits included), debounce (the
//! input replaced, the start moved, bounded by `max_wait`) and throttle.
//!
//! Time is a `ManualClock`; the only real time is the bound on waiting for work that must
//! happen.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stent::testing::{run_until_idle, wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Ctx, Engine, ExecutionId, ExecutionState, FunctionOptions, Workflow};
use support::LIMIT;

const ECHO: Activity<String, String> = Activity::new("echo");
const T0: u64 = 1_780_000_000_000;

fn open_with(disk: &MemoryDisk, clock: &ManualClock, echo: FunctionOptions) -> Engine {
    support::builder(disk, clock)
        .activity_with(ECHO, |s: String| async move { Ok::<_, ActivityError>(s) }, echo)
        .open()
        .expect("open")
}

fn completed(engine: &Engine, ids: &[ExecutionId]) -> usize {
    ids.iter().filter(|&&id| support::state(engine, id) == ExecutionState::Completed).count()
}

async fn at(engine: &Engine, clock: &ManualClock, ms: u64) {
    clock.set_ms(ms);
    run_until_idle(engine, LIMIT).await.expect("idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_backlog_runs_at_its_slots() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let engine = open_with(&disk, &clock, FunctionOptions::new().rate_limit(2, "1m"));
    let _pool = engine.serve(support::options("w")).unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(engine.dispatch(ECHO, &format!("job-{i}")).await.unwrap());
    }
    run_until_idle(&engine, LIMIT).await.unwrap();
    // Two at once (the burst), then one every 30 s: 2 per minute.
    assert_eq!(completed(&engine, &ids), 2);
    // Counted by the workers as their claims return (after the commit idleness sees).
    wait_until(LIMIT, "four claims deferred", || engine.stats().rate_limited == 4).await;
    at(&engine, &clock, T0 + 29_999).await;
    assert_eq!(completed(&engine, &ids), 2);
    at(&engine, &clock, T0 + 30_000).await;
    assert_eq!(completed(&engine, &ids), 3);
    at(&engine, &clock, T0 + 90_000).await;
    assert_eq!(completed(&engine, &ids), 5);
    at(&engine, &clock, T0 + 120_000).await;
    assert_eq!(completed(&engine, &ids), 6);
    // Deferred to a reserved slot once each: nothing was claimed again and again.
    assert_eq!(engine.stats().rate_limited, 4);
    assert_eq!(engine.stats().claims, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_reset_a_budget() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let options = || FunctionOptions::new().rate_limit(2, "1m");
    let engine = open_with(&disk, &clock, options());
    let pool = engine.serve(support::options("w")).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(engine.dispatch(ECHO, &format!("job-{i}")).await.unwrap());
    }
    run_until_idle(&engine, LIMIT).await.unwrap();
    assert_eq!(completed(&engine, &ids), 2);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();

    let engine = open_with(&disk, &clock, options());
    let _pool = engine.serve(support::options("w")).unwrap();
    ids.push(engine.dispatch(ECHO, &"after-restart".to_string()).await.unwrap());
    run_until_idle(&engine, LIMIT).await.unwrap();
    // The budget spent before the restart still counts: neither the deferred task nor the
    // new one runs before its slot.
    assert_eq!(completed(&engine, &ids), 2);
    at(&engine, &clock, T0 + 30_000).await;
    assert_eq!(completed(&engine, &ids), 3);
    at(&engine, &clock, T0 + 60_000).await;
    assert_eq!(completed(&engine, &ids), 4);
    support::assert_consistent(&engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rate_key_has_its_own_budget() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let engine = open_with(&disk, &clock, FunctionOptions::new().rate_limit_per_key(1, "1m"));
    let _pool = engine.serve(support::options("w")).unwrap();
    let mut by_key: HashMap<&str, Vec<ExecutionId>> = HashMap::new();
    for key in ["ada", "ada", "ada", "bob", "bob"] {
        let id = engine.dispatch(ECHO, &key.to_string()).rate_key(key).await.unwrap();
        by_key.entry(key).or_default().push(id);
    }
    run_until_idle(&engine, LIMIT).await.unwrap();
    assert_eq!((completed(&engine, &by_key["ada"]), completed(&engine, &by_key["bob"])), (1, 1));
    at(&engine, &clock, T0 + 60_000).await;
    assert_eq!((completed(&engine, &by_key["ada"]), completed(&engine, &by_key["bob"])), (2, 2));
    at(&engine, &clock, T0 + 120_000).await;
    assert_eq!(completed(&engine, &by_key["ada"]), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrency_key_is_never_exceeded_under_a_burst() {
    const WORK: Activity<String, ()> = Activity::new("work");
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let inside: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let most: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    // Attempts hold their slot until the gate opens, so the burst meets full keys for sure.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (i2, m2, g2) = (inside.clone(), most.clone(), gate.clone());
    let engine = support::builder(&disk, &clock)
        .activity_with(
            WORK,
            move |key: String| {
                let (inside, most, gate) = (i2.clone(), m2.clone(), g2.clone());
                async move {
                    {
                        let mut inside = inside.lock().unwrap();
                        let n = inside.entry(key.clone()).or_default();
                        *n += 1;
                        let mut most = most.lock().unwrap();
                        let seen = most.entry(key.clone()).or_default();
                        *seen = (*seen).max(*n);
                    }
                    gate.acquire().await.expect("the gate stays").forget();
                    *inside.lock().unwrap().get_mut(&key).unwrap() -= 1;
                    Ok::<_, ActivityError>(())
                }
            },
            FunctionOptions::new().max_concurrent_per_key(2),
        )
        .open()
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        let key = ["k", "j", "l"][i % 3];
        ids.push(engine.dispatch(WORK, &key.to_string()).concurrency_key(key).await.unwrap());
    }
    // Three pools of 16 claim the 60 at once.
    let options = |i: u32| stent::WorkerOptions { max_concurrency: 16, ..support::options(&format!("w{i}")) };
    let _pools: Vec<_> = (0..3).map(|i| engine.serve(options(i)).unwrap()).collect();
    let full = || inside.lock().unwrap().values().filter(|&&n| n == 2).count() == 3;
    wait_until(LIMIT, "two attempts of each key run", full).await;
    wait_until(LIMIT, "the other claims find their key full", || engine.stats().key_waits >= 54).await;
    gate.add_permits(1_000);
    wait_until(LIMIT, "all 60 complete", || completed(&engine, &ids) == 60).await;
    let most = most.lock().unwrap().clone();
    for key in ["k", "j", "l"] {
        assert_eq!(most[key], 2, "key {key}: at most 2 at once, and the burst filled it");
    }
    support::assert_consistent(&engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_workflow_keeps_its_key_slot() {
    const SYNC: Workflow<u32, u32> = Workflow::new("sync");
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let engine = support::builder(&disk, &clock)
        .workflow_with(
            SYNC,
            |ctx: Ctx, n: u32| async move {
                let go: u32 = ctx.wait_for_signal("go").await?;
                Ok(n + go)
            },
            FunctionOptions::new().max_concurrent_per_key(1),
        )
        .open()
        .unwrap();
    let _pool = engine.serve(support::options("w")).unwrap();
    let first = engine.dispatch(SYNC, &1).concurrency_key("customer-7").await.unwrap();
    wait_until(LIMIT, "the first waits for its signal", || {
        engine.steps(first).unwrap().iter().any(|s| s.outcome == "waiting")
    })
    .await;
    let second = engine.dispatch(SYNC, &2).concurrency_key("customer-7").await.unwrap();
    let other = engine.dispatch(SYNC, &3).concurrency_key("customer-8").await.unwrap();
    support::until_state(&engine, other, ExecutionState::Running).await;
    wait_until(LIMIT, "the second's claim found the key full", || engine.stats().key_waits >= 1).await;
    // The first holds the key while it waits: the second has not started.
    assert_eq!(support::state(&engine, second), ExecutionState::Pending);
    engine.send_signal(first, "go", &10).await.unwrap();
    assert_eq!(support::finished(&engine, SYNC, first).await.unwrap(), 11);
    support::until_state(&engine, second, ExecutionState::Running).await;
    engine.send_signal(second, "go", &10).await.unwrap();
    assert_eq!(support::finished(&engine, SYNC, second).await.unwrap(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_replaces_the_input_and_moves_the_start_bounded_by_max_wait() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let engine = open_with(&disk, &clock, FunctionOptions::new());
    let _pool = engine.serve(support::options("w")).unwrap();
    let save = |text: &str| {
        let engine = engine.clone();
        let text = text.to_string();
        async move { engine.dispatch(ECHO, &text).debounce("doc-1", "10s").debounce_max_wait("25s").await.unwrap() }
    };
    let id = save("a").await;
    at(&engine, &clock, T0 + 5_000).await;
    assert_eq!(save("b").await, id, "inside the window: the same execution");
    at(&engine, &clock, T0 + 12_000).await;
    assert_eq!(support::state(&engine, id), ExecutionState::Pending, "moved to 15 s by the second save");
    assert_eq!(save("c").await, id);
    at(&engine, &clock, T0 + 20_000).await;
    assert_eq!(save("d").await, id);
    // 20 s + 10 s would be 30 s; max_wait holds it to 25 s after the first save.
    at(&engine, &clock, T0 + 24_999).await;
    assert_eq!(support::state(&engine, id), ExecutionState::Pending);
    at(&engine, &clock, T0 + 25_000).await;
    assert_eq!(support::finished(&engine, ECHO, id).await.unwrap(), "d", "the last input wins");
    // It has started: the next save starts a new burst.
    let next = save("e").await;
    assert_ne!(next, id);
    at(&engine, &clock, T0 + 35_000).await;
    assert_eq!(support::finished(&engine, ECHO, next).await.unwrap(), "e");
    assert_eq!(engine.list_executions(&Default::default(), &Default::default()).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_runs_the_first_and_folds_the_rest_of_the_window_into_it() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let engine = open_with(&disk, &clock, FunctionOptions::new());
    let _pool = engine.serve(support::options("w")).unwrap();
    let ping = |text: &str| {
        let engine = engine.clone();
        let text = text.to_string();
        async move { engine.dispatch(ECHO, &text).throttle("alerts", "1m").await.unwrap() }
    };
    let first = ping("first").await;
    assert_eq!(support::finished(&engine, ECHO, first).await.unwrap(), "first", "it runs at once");
    at(&engine, &clock, T0 + 10_000).await;
    assert_eq!(ping("second").await, first);
    at(&engine, &clock, T0 + 59_999).await;
    assert_eq!(ping("third").await, first);
    at(&engine, &clock, T0 + 60_000).await;
    let next = ping("fourth").await;
    assert_ne!(next, first);
    assert_eq!(support::finished(&engine, ECHO, next).await.unwrap(), "fourth");
    assert_eq!(engine.list_executions(&Default::default(), &Default::default()).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_are_refused_at_open() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let opened = support::builder(&disk, &clock)
        .activity_with(
            ECHO,
            |s: String| async move { Ok::<_, ActivityError>(s) },
            FunctionOptions::new().rate_limit(0, "1m"),
        )
        .open();
    assert!(matches!(opened, Err(stent::Error::Config(ref m)) if m.contains("rate_limit")), "{:?}", opened.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_the_budgets_that_are_full_again_and_nothing_else_changes() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(T0));
    let engine = open_with(&disk, &clock, FunctionOptions::new().rate_limit_per_key(1, "1m"));
    let _pool = engine.serve(support::options("w")).unwrap();
    for key in ["ada", "bob", "cy"] {
        engine.dispatch(ECHO, &key.to_string()).rate_key(key).await.unwrap();
    }
    run_until_idle(&engine, LIMIT).await.unwrap();
    // Each key spent its one start a minute: its budget is full again at T0 + 60 s.
    at(&engine, &clock, T0 + 30_000).await;
    assert_eq!(engine.cleanup("1d").await.unwrap().rate_budgets, 0, "not full yet: kept");
    let late = engine.dispatch(ECHO, &"ada again".to_string()).rate_key("ada").await.unwrap();
    run_until_idle(&engine, LIMIT).await.unwrap();
    assert_eq!(support::state(&engine, late), ExecutionState::Pending, "ada's budget still holds it");
    at(&engine, &clock, T0 + 120_001).await;
    assert_eq!(support::state(&engine, late), ExecutionState::Completed);
    let report = engine.cleanup("1d").await.unwrap();
    assert_eq!(report.rate_budgets, 3, "{report:?}");
    // A key whose budget went runs at once, as it would have with the budget kept.
    let again = engine.dispatch(ECHO, &"bob again".to_string()).rate_key("bob").await.unwrap();
    assert_eq!(support::finished(&engine, ECHO, again).await.unwrap(), "bob again");
    support::assert_consistent(&engine);
}
