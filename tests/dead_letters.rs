//! The dead-letter queue: a task that fails permanently or exhausts its retries is kept as a
//! structured record (error, attempts, history, input), can be inspected, replayed with its
//! input or an edited one, or discarded.
//!
//! Method: an engine on a manual clock; activities fail by input so the test controls which.

mod support;

use std::time::Duration;

use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Error, ErrorKind, ExecutionState, RetryPolicy};
use support::*;

const SHIP: Activity<String, String> = Activity::new("ship");

async fn ship(address: String) -> Result<String, ActivityError> {
    match address.as_str() {
        "" => Err(ActivityError::permanent("no address")
            .with_code("bad_address")
            .with_details(&serde_json::json!({ "field": "address" }))),
        "flaky" => Err(ActivityError::retryable("carrier down")),
        a => Ok(format!("shipped to {a}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_round_trip() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .activity_with(
            SHIP,
            ship,
            stent::FunctionOptions::new().retry(RetryPolicy::exponential(2, Duration::from_secs(1))),
        )
        .open()?;
    let pool = engine.serve(options("w"))?;

    // Permanent: one attempt, straight to the DLQ.
    let bad = engine.dispatch(SHIP, &String::new()).await?;
    assert!(matches!(finished(&engine, SHIP, bad).await, Err(Error::ExecutionFailed { .. })));
    let letters = engine.dead_letters(10)?;
    assert_eq!(letters.len(), 1);
    let letter = engine.dead_letter(letters[0].id)?;
    assert_eq!(letter.execution_id, bad);
    assert_eq!(letter.function, "ship");
    assert_eq!(letter.input, serde_json::json!(""));
    assert_eq!(letter.attempts, 1);
    assert_eq!(letter.error.kind, ErrorKind::Permanent);
    assert_eq!(letter.error.code.as_deref(), Some("bad_address"));
    assert_eq!(letter.error.details(), Some(serde_json::json!({ "field": "address" })));
    assert_eq!(letter.history.len(), 1);

    // Replay with an edited input: runs again and succeeds; the letter is gone.
    assert_eq!(engine.replay_dead_letter_with_input(letter.id, &"1 Main St").await?, bad);
    assert_eq!(finished(&engine, SHIP, bad).await?, "shipped to 1 Main St");
    assert!(engine.dead_letters(10)?.is_empty());
    let info = engine.state_of(bad)?;
    assert_eq!(info.attempts, 2, "attempt numbers keep growing across a replay");
    assert_eq!(info.input, serde_json::json!("1 Main St"));
    assert!(matches!(engine.dead_letter(letter.id), Err(Error::UnknownDeadLetter(_))));

    // Retries exhausted: two attempts, then the DLQ; discard keeps the execution failed.
    let flaky = engine.dispatch(SHIP, &"flaky".to_string()).await?;
    until_state(&engine, flaky, ExecutionState::Running).await;
    stent::testing::wait_until(LIMIT, "first attempt fails", || engine.state_of(flaky).unwrap().history.len() == 1)
        .await;
    clock.advance(Duration::from_secs(1));
    assert!(matches!(finished(&engine, SHIP, flaky).await, Err(Error::ExecutionFailed { .. })));
    let letter = engine.dead_letters(10)?.into_iter().next().expect("a dead letter");
    assert_eq!((letter.execution_id, letter.attempts, letter.history.len()), (flaky, 2, 2));
    engine.discard_dead_letter(letter.id).await?;
    assert!(engine.dead_letters(10)?.is_empty());
    assert_eq!(state(&engine, flaky), ExecutionState::Failed);
    assert!(matches!(engine.replay_dead_letter(letter.id).await, Err(Error::UnknownDeadLetter(_))));

    // Replay without edits after a restart: the record survived, and the retry budget is fresh.
    let again = engine.dispatch(SHIP, &"flaky".to_string()).await?;
    stent::testing::wait_until(LIMIT, "first attempt fails", || engine.state_of(again).unwrap().history.len() == 1)
        .await;
    clock.advance(Duration::from_secs(1));
    assert!(finished(&engine, SHIP, again).await.is_err());
    pool.drain().await?;
    engine.close().await?;
    let engine = builder(&disk, &clock)
        .activity_with(
            SHIP,
            ship,
            stent::FunctionOptions::new().retry(RetryPolicy::exponential(2, Duration::from_secs(1))),
        )
        .open()?;
    let letter = engine.dead_letters(10)?.into_iter().next().expect("survives restart");
    assert_eq!(letter.execution_id, again);
    engine.replay_dead_letter(letter.id).await?;
    assert_eq!(state(&engine, again), ExecutionState::Pending);
    let pool = engine.serve(options("w2"))?;
    stent::testing::wait_until(LIMIT, "replayed attempt fails", || engine.state_of(again).unwrap().history.len() == 3)
        .await;
    assert_eq!(state(&engine, again), ExecutionState::Running, "a fresh budget of 2: one retry left");
    clock.advance(Duration::from_secs(1));
    assert!(finished(&engine, SHIP, again).await.is_err());
    assert_eq!(engine.state_of(again)?.attempts, 4);
    assert_consistent(&engine);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

/// A replay's new input is checked against the function's declared input type by the engine
/// that applies it: a wrong shape is refused with serde's reason and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_input_of_the_wrong_shape_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock).activity(SHIP, ship).open()?;
    let pool = engine.serve(options("w"))?;
    let bad = engine.dispatch(SHIP, &String::new()).await?;
    assert!(engine.wait_for(SHIP, bad, None).await.is_err());
    let letter = engine.dead_letters(10)?.remove(0);

    // The input type is String; a number and an object are not.
    for wrong in [serde_json::json!(42), serde_json::json!({ "address": "1 Main St" })] {
        match engine.replay_dead_letter_with_input(letter.id, &wrong).await {
            Err(Error::Payload { reason, .. }) => assert!(reason.contains("invalid type"), "{reason}"),
            other => panic!("expected the input refused, got {other:?}"),
        }
    }
    assert_eq!(engine.dead_letter_count()?, 1, "the dead letter is still there");
    assert_eq!(engine.state_of(bad)?.state, ExecutionState::Failed, "the execution did not move");

    engine.replay_dead_letter_with_input(letter.id, &"1 Main St".to_string()).await?;
    assert_eq!(engine.wait_for(SHIP, bad, None).await?, "shipped to 1 Main St");
    assert_eq!(engine.dead_letter_count()?, 0);
    pool.drain().await?;
    Ok(())
}
