//! Dispatch: an execution and its root task are created together or not at all; idempotency
//! keys create one execution; the group-commit writer isolates a rejected command from its
//! batch and poisons the engine after a failed commit.
//!
//! Method: an engine on `stent::testing::MemoryDisk`, reopened on the same bytes to see what
//! is durable; faults are injected through `Faults` flags that fire once.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use stent::storage::{Faults, StorageError};
use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Error, ExecutionFilter, ExecutionState, Page};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");

fn open(disk: &MemoryDisk, clock: &ManualClock, faults: Arc<Faults>) -> stent::Result<stent::Engine> {
    builder(disk, clock).faults(faults).activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) }).open()
}

fn total(engine: &stent::Engine) -> u64 {
    engine.counts_by_state().unwrap().iter().map(|(_, n)| n).sum()
}

#[tokio::test]
async fn failure_between_execution_and_task_leaves_nothing() -> anyhow::Result<()> {
    let (disk, clock, faults) = (MemoryDisk::new(), ManualClock::default(), Arc::new(Faults::default()));
    let engine = open(&disk, &clock, faults.clone())?;
    let kept = engine.dispatch(ECHO, &1).await?;

    faults.fail_between_execution_and_task.store(true, Ordering::SeqCst);
    let err = engine.dispatch(ECHO, &2).await.unwrap_err();
    match &err {
        Error::Storage(StorageError::Poisoned(cause)) => assert!(cause.contains("between execution and root task")),
        other => panic!("unexpected {other:?}"),
    }
    // The failed commit poisons the engine: nothing more is written until reopened.
    let err = engine.dispatch(ECHO, &3).await.unwrap_err();
    assert!(matches!(err, Error::Storage(StorageError::Poisoned(_))), "{err}");
    assert!(engine.poisoned().is_some());
    engine.close().await?;

    let engine = open(&disk, &clock, Arc::new(Faults::default()))?;
    let all = engine.list_executions(&ExecutionFilter::default(), &Page::default())?;
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![kept], "only the first dispatch exists");
    assert_consistent(&engine);
    // And the reopened engine writes again.
    let next = engine.dispatch(ECHO, &4).await?;
    assert!(next > kept);
    assert_eq!(total(&engine), 2);
    engine.close().await?;
    Ok(())
}

#[tokio::test]
async fn idempotency_key_returns_the_first_id_and_creates_nothing() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock, Arc::default())?;
    let first = engine.dispatch(ECHO, &1).idempotency_key("order-42").await?;
    let again = engine.dispatch(ECHO, &99).idempotency_key("order-42").await?;
    assert_eq!(first, again);
    // Concurrent duplicates (likely in one group-commit batch) also collapse to one.
    let dispatches: Vec<_> = (0..32)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.dispatch(ECHO, &i).idempotency_key("burst").await })
        })
        .collect();
    let mut ids = Vec::new();
    for d in dispatches {
        ids.push(d.await??);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(total(&engine), 2);
    assert_eq!(engine.state_of(first)?.input, serde_json::json!(1), "the first input is kept");
    // The key survives a restart.
    engine.close().await?;
    let engine = open(&disk, &clock, Arc::default())?;
    assert_eq!(engine.dispatch(ECHO, &5).idempotency_key("order-42").await?, first);
    assert_eq!(total(&engine), 2);
    engine.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_rejected_command_does_not_fail_its_batch() -> anyhow::Result<()> {
    use stent::storage::{NewExecution, Op, OpenOptions, RedbStore, Store};
    let store = RedbStore::open(OpenOptions {
        init_empty_file: false,
        read_only: false,
        file_mode: stent::storage::FILE_MODE_DEFAULT,
        path: None,
        backend: Some(Box::new(MemoryDisk::new())),
        verify_on_open: stent::VerifyOnOpen::Live,
        faults: Arc::default(),
        cache_entries_max: 10_000,
        page_cache_bytes: 64 << 20,
    })?;
    let new = |input: &str| NewExecution {
        claim: None,
        schedule: None,
        keys: Default::default(),
        flow: None,
        cache: None,
        kind: stent::storage::records::TaskKind::Activity,
        function: "echo".into(),
        queue: "default".into(),
        priority: 0,
        tags: vec![],
        input: input.as_bytes().to_vec(),
        delay_ms: 0,
        max_duration_ms: None,
        idempotency_key: None,
        retry: (&stent::RetryPolicy::default()).into(),
        timeout_ms: None,
        version: 1,
    };
    let (results, _) = store.apply_batch(
        1_000,
        vec![
            Op::Dispatch(new("1")),
            Op::Cancel { execution_id: 999 },
            Op::Complete { task_id: 1, token: 7, output: b"2".to_vec(), local: Default::default(), next: None },
            Op::Dispatch(new("3")),
        ],
    )?;
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(stent::storage::Rejection::UnknownExecution(_))), "{:?}", results[1]);
    assert!(matches!(results[2], Err(stent::storage::Rejection::Lease(_))), "{:?}", results[2]);
    assert!(results[3].is_ok());
    let counts = store.count_by_state()?;
    assert_eq!(counts.iter().find(|(s, _)| *s == ExecutionState::Pending).map(|c| c.1), Some(2));
    assert!(store.check()?.is_empty());
    Ok(())
}

#[tokio::test]
async fn unregistered_function_fails_at_once_naming_it() -> anyhow::Result<()> {
    const MISSING: Activity<u32, u32> = Activity::new("send_fax");
    let engine = open(&MemoryDisk::new(), &ManualClock::default(), Arc::default())?;
    let err = engine.dispatch(MISSING, &1).await.unwrap_err();
    match &err {
        Error::UnknownFunction { name, registered } => {
            assert_eq!(name, "send_fax");
            assert_eq!(registered, &vec!["echo".to_string()]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("send_fax") && err.to_string().contains("echo"), "{err}");
    assert_eq!(total(&engine), 0);
    engine.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_failed_commit_poisons_until_reopened() -> anyhow::Result<()> {
    let (disk, clock, faults) = (MemoryDisk::new(), ManualClock::default(), Arc::new(Faults::default()));
    let engine = open(&disk, &clock, faults.clone())?;
    faults.fail_next_commit.store(true, Ordering::SeqCst);
    assert!(engine.dispatch(ECHO, &1).await.is_err());
    let err = engine.dispatch(ECHO, &2).await.unwrap_err();
    assert!(err.to_string().contains("reopen"), "{err}");
    engine.close().await?;
    let engine = open(&disk, &clock, Arc::default())?;
    assert_eq!(total(&engine), 0, "nothing of the failed batch is on disk");
    engine.dispatch(ECHO, &3).await?;
    assert_eq!(total(&engine), 1);
    engine.close().await?;
    Ok(())
}
