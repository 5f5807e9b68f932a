//! `Engine::signal_with_start`: the execution that holds an idempotency key gets the signal,
//! created first (in the same transaction) when no execution holds the key. Racing starts
//! with the same key make one execution and lose no signal; the signal survives a crash
//! before anything ran; a finished holder refuses the signal and nothing is created.
//!
//! Method: `MemoryDisk` + `ManualClock`; a crash is `testing::crash` and an engine on the
//! same bytes.

mod support;

use std::future::IntoFuture;

use stent::testing::crash;
use stent::{Ctx, Engine, Error, ExecutionFilter, ExecutionState, Page, Workflow};
use support::*;

/// Waits for `n` "add" signals and returns them in the order they came.
const CART: Workflow<u32, Vec<String>> = Workflow::new("cart");

fn open(disk: &stent::testing::MemoryDisk, clock: &stent::testing::ManualClock) -> Engine {
    builder(disk, clock)
        .workflow(CART, |ctx: Ctx, n: u32| async move {
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(ctx.wait_for_signal::<String>("add").await?);
            }
            Ok(items)
        })
        .open()
        .expect("open")
}

fn executions(engine: &Engine) -> Vec<stent::ExecutionId> {
    let page = Page { limit: 10_000, before: None };
    engine.list_executions(&ExecutionFilter::default(), &page).unwrap().into_iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_with_start_go_to_one_execution_and_survive_a_crash_before_it_ran() {
    let (disk, clock) = (stent::testing::MemoryDisk::new(), stent::testing::ManualClock::default());
    let engine = open(&disk, &clock);
    // No worker yet: the first call creates the execution with the signal in its mailbox.
    let first = engine.signal_with_start(CART, "cart-ada", &3, "add", &"book").await.unwrap();
    let second = engine.signal_with_start(CART, "cart-ada", &99, "add", &"pen").await.unwrap();
    assert_eq!(first, second, "the key's execution got the second signal");
    assert_eq!(executions(&engine), vec![first]);
    crash(engine).await.unwrap();

    let engine = open(&disk, &clock);
    let pool = engine.serve(options("w")).unwrap();
    // Once the cart waits for its third item, the signal goes to the waiting step.
    stent::testing::wait_until(LIMIT, "the cart waits for a third item", || {
        engine.steps(first).unwrap().get(2).is_some_and(|s| s.outcome == "waiting")
    })
    .await;
    let third = engine.signal_with_start(CART, "cart-ada", &1, "add", &"ink").await.unwrap();
    assert_eq!(third, first);
    let items = finished(&engine, CART, first).await.unwrap();
    assert_eq!(items, ["book", "pen", "ink"], "every signal, in order; later calls' inputs were not used");
    pool.drain().await.unwrap();

    // The key's execution has finished: the signal is refused and nothing is created.
    let err = engine.signal_with_start(CART, "cart-ada", &1, "add", &"late").await.unwrap_err();
    assert!(matches!(err, Error::ExecutionFinished { id, state: ExecutionState::Completed } if id == first), "{err}");
    assert_eq!(executions(&engine), vec![first]);
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_with_start_racing_a_start_with_the_same_key_makes_one_execution() {
    let (disk, clock) = (stent::testing::MemoryDisk::new(), stent::testing::ManualClock::default());
    let engine = open(&disk, &clock);
    let pool = engine.serve(options("w")).unwrap();
    const KEYS: u32 = 40;
    let races = (0..KEYS).map(|k| {
        let engine = engine.clone();
        tokio::spawn(async move {
            let key = format!("order-{k}");
            // Both in flight at once: they reach the writer in one batch or in two, in
            // either order, and each time the one that comes second finds the first.
            let started = engine.dispatch(CART, &1).idempotency_key(key.clone());
            let signalled = engine.signal_with_start(CART, key.clone(), &1, "add", &key);
            // `join!` polls in order, so half the keys submit the signal first.
            let (a, b) = if k % 2 == 0 {
                tokio::join!(started.into_future(), signalled.into_future())
            } else {
                let (b, a) = tokio::join!(signalled.into_future(), started.into_future());
                (a, b)
            };
            (key, a.unwrap(), b.unwrap())
        })
    });
    let mut ids = Vec::new();
    for race in races.collect::<Vec<_>>() {
        let (key, started, signalled) = race.await.unwrap();
        assert_eq!(started, signalled, "{key}: one execution");
        assert_eq!(finished(&engine, CART, started).await.unwrap(), [key], "the signal reached it");
        ids.push(started);
    }
    ids.sort_unstable();
    assert_eq!(executions(&engine).len(), KEYS as usize, "one execution per key, no more");
    ids.dedup();
    assert_eq!(ids.len(), KEYS as usize);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}
