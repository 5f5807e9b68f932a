//! Execution counts by state (`Engine::counts_by_state`): they are kept in the transaction of
//! every state change, so they always equal the states of the executions themselves: after
//! executions complete, fail, are cancelled, time out, wait or wait to start; after retention
//! removes some; across a reopen; and after a file of schema version 2, which had no counts, is
//! migrated.
//!
//! Method: real files in a temporary directory and a `ManualClock`. A fixed mix of executions
//! is driven to every state through the public API; the counts are compared with the states
//! read back one execution at a time (`state_of`), and `check` (which verifies the stored counts
//! against the state index, and the index against the records) must find nothing. The schema-2
//! file is made from a current one with raw redb, the way a schema-1 file is made in
//! `tests/retention.rs`: the counts table deleted and `schema_version` set to 2.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use redb::{ReadableDatabase, TableDefinition};
use stent::testing::{run_until_idle, ManualClock};
use stent::{
    Activity, ActivityError, Ctx, Engine, EngineBuilder, ExecutionId, ExecutionState, FunctionOptions, RetryPolicy,
    Workflow,
};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");
const BROKEN: Activity<u32, u32> = Activity::new("broken");
/// Sleeps two hours, then returns its input.
const SLEEPER: Workflow<u32, u32> = Workflow::new("sleeper");

/// Spelled out rather than taken from `stent::storage::tables`, so a renamed table fails here.
const EXEC_COUNTS: TableDefinition<u8, u64> = TableDefinition::new("exec_counts");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn builder_at(path: &Path, clock: &ManualClock) -> EngineBuilder {
    Engine::builder()
        .path(path)
        .clock(clock.clone())
        .seed(7)
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .activity_with(
            BROKEN,
            |_: u32| async move { Err::<u32, _>(ActivityError::permanent("always broken")) },
            FunctionOptions::new().retry(RetryPolicy::none()),
        )
        .workflow(SLEEPER, |ctx: Ctx, x: u32| async move {
            ctx.sleep("2h").await?;
            Ok(x)
        })
}

/// Executions in every state, built in order so each state is reached by its own path: 3
/// completed, 2 failed, 1 cancelled, 1 timed out, 1 running (asleep), 2 pending (delayed a
/// day). Returns their ids.
async fn mixed_history(engine: &Engine, clock: &ManualClock) -> anyhow::Result<Vec<ExecutionId>> {
    let mut ids = Vec::new();
    for x in 1..=3 {
        let id = engine.dispatch(ECHO, &x).await?;
        assert_eq!(finished(engine, ECHO, id).await?, x);
        ids.push(id);
    }
    for x in 1..=2 {
        let id = engine.dispatch(BROKEN, &x).await?;
        assert!(finished(engine, BROKEN, id).await.is_err());
        ids.push(id);
    }
    let cancelled = engine.dispatch(ECHO, &9).delay("1d").await?;
    assert_eq!(engine.cancel(cancelled).await?, ExecutionState::Cancelled);
    ids.push(cancelled);
    let timed_out = engine.dispatch(SLEEPER, &1).max_duration("1h").await?;
    let asleep = engine.dispatch(SLEEPER, &2).await?;
    run_until_idle(engine, LIMIT).await?;
    clock.advance(Duration::from_secs(3_600));
    until_state(engine, timed_out, ExecutionState::TimedOut).await;
    ids.extend([timed_out, asleep]);
    for x in 1..=2 {
        ids.push(engine.dispatch(ECHO, &x).delay("1d").await?);
    }
    run_until_idle(engine, LIMIT).await?;
    assert_eq!(state(engine, asleep), ExecutionState::Running);
    Ok(ids)
}

/// The counts the executions' own states give, in every state (zero included).
fn counted(engine: &Engine, ids: &[ExecutionId]) -> BTreeMap<ExecutionState, u64> {
    let mut out: BTreeMap<ExecutionState, u64> = ExecutionState::ALL.iter().map(|&s| (s, 0)).collect();
    for &id in ids {
        *out.get_mut(&state(engine, id)).expect("every state") += 1;
    }
    out
}

fn counts(engine: &Engine) -> anyhow::Result<BTreeMap<ExecutionState, u64>> {
    Ok(engine.counts_by_state()?.into_iter().collect())
}

fn expected(pairs: &[(ExecutionState, u64)]) -> BTreeMap<ExecutionState, u64> {
    let mut out: BTreeMap<ExecutionState, u64> = ExecutionState::ALL.iter().map(|&s| (s, 0)).collect();
    out.extend(pairs.iter().copied());
    out
}

const MIX: [(ExecutionState, u64); 6] = [
    (ExecutionState::Pending, 2),
    (ExecutionState::Running, 1),
    (ExecutionState::Completed, 3),
    (ExecutionState::Failed, 2),
    (ExecutionState::TimedOut, 1),
    (ExecutionState::Cancelled, 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_follow_every_state_change_retention_and_a_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counts.stent");
    let clock = ManualClock::default();
    let engine = builder_at(&path, &clock).open()?;
    let pool = engine.serve(options("w"))?;
    let ids = mixed_history(&engine, &clock).await?;
    assert_eq!(counted(&engine, &ids), expected(&MIX), "the mix reached every state");
    assert_eq!(counts(&engine)?, expected(&MIX));
    assert_consistent(&engine);

    // A day later the delayed ones run and the sleeper wakes: pending and running go to zero.
    clock.advance(Duration::from_secs(86_400));
    for &id in &ids[ids.len() - 3..] {
        until_state(&engine, id, ExecutionState::Completed).await;
    }
    run_until_idle(&engine, LIMIT).await?;
    let later = expected(&[
        (ExecutionState::Completed, 6),
        (ExecutionState::Failed, 2),
        (ExecutionState::TimedOut, 1),
        (ExecutionState::Cancelled, 1),
    ]);
    assert_eq!(counted(&engine, &ids), later);
    assert_eq!(counts(&engine)?, later);
    pool.drain().await?;
    engine.close().await?;

    // The counts are on disk, not rebuilt from memory.
    let engine = builder_at(&path, &clock).open()?;
    assert_eq!(counts(&engine)?, later, "after a reopen");
    assert_consistent(&engine);

    // Retention takes executions out of the counts as it removes them.
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(engine.cleanup("1m").await?.executions, 10);
    assert_eq!(counts(&engine)?, expected(&[]), "after retention removed everything");
    assert_consistent(&engine);
    let id = engine.dispatch(ECHO, &1).delay("1h").await?;
    assert_eq!(counts(&engine)?, expected(&[(ExecutionState::Pending, 1)]), "after a new dispatch ({id})");
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_schema_2_is_migrated_with_its_counts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v2.stent");
    let clock = ManualClock::default();
    let engine = builder_at(&path, &clock).open()?;
    let pool = engine.serve(options("w"))?;
    let ids = mixed_history(&engine, &clock).await?;
    pool.drain().await?;
    engine.close().await?;

    // Make it a version 2 file: no counts table.
    {
        let db = redb::Database::open(&path)?;
        let txn = db.begin_write()?;
        assert!(txn.delete_table(EXEC_COUNTS)?, "a current file has the counts table");
        txn.delete_table(stent::storage::tables::HEARTBEATS)?;
        txn.open_table(META)?.insert("schema_version", 2)?;
        support::cut_to_schema4_records(&txn);
        txn.commit()?;
    }

    let engine = builder_at(&path, &clock).open()?;
    assert_eq!(counts(&engine)?, expected(&MIX), "counted from the state index at open");
    assert_eq!(counted(&engine, &ids), expected(&MIX));
    assert_consistent(&engine);

    // And kept from there on: the delayed ones run and the sleeper wakes.
    let pool = engine.serve(options("w"))?;
    clock.advance(Duration::from_secs(86_400));
    for &id in &ids[ids.len() - 3..] {
        until_state(&engine, id, ExecutionState::Completed).await;
    }
    run_until_idle(&engine, LIMIT).await?;
    assert_eq!(counts(&engine)?, counted(&engine, &ids));
    assert_eq!(counts(&engine)?[&ExecutionState::Completed], 6);
    assert_consistent(&engine);
    pool.drain().await?;
    engine.close().await?;

    let db = redb::Database::open(&path)?;
    let read = db.begin_read()?;
    assert_eq!(read.open_table(META)?.get("schema_version")?.map(|v| v.value()), Some(6));
    assert_eq!(read.open_table(EXEC_COUNTS)?.get(2)?.map(|v| v.value()), Some(6), "completed, on disk");
    Ok(())
}

/// A count that disagrees with the index (written behind stent's back, on sound pages) is
/// reported by `check`, refused by a `Full` open, and, for the live states only, found by what
/// the default open verifies (`check_live`): the history's counts are not read at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_count_is_reported_by_check_and_refused_by_a_full_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wrong.stent");
    let clock = ManualClock::default();
    let engine = builder_at(&path, &clock).open()?;
    let pool = engine.serve(options("w"))?;
    mixed_history(&engine, &clock).await?;
    pool.drain().await?;
    engine.close().await?;
    {
        let db = redb::Database::open(&path)?;
        let txn = db.begin_write()?;
        {
            let mut counts = txn.open_table(EXEC_COUNTS)?;
            counts.insert(0, 7)?; // pending: 2 in truth
            counts.insert(2, 99)?; // completed: 3 in truth
        }
        txn.commit()?;
    }
    let pending = "exec_counts: pending counts 7 executions, idx_exec_state holds 2";
    let completed = "exec_counts: completed counts 99 executions, idx_exec_state holds 3";

    let store = stent::storage::RedbStore::open(stent::storage::OpenOptions {
        path: Some(path.clone()),
        backend: None,
        verify_on_open: stent::VerifyOnOpen::Live,
        faults: Default::default(),
        cache_entries_max: 10_000,
        page_cache_bytes: 1 << 20,
        init_empty_file: false,
        read_only: false,
        file_mode: stent::storage::FILE_MODE_DEFAULT,
    })?;
    assert_eq!(store.check_live()?, vec![pending.to_string()]);
    drop(store);

    // The default open goes on (the pages are sound, the history is not read); the counts read
    // as stored.
    let engine = builder_at(&path, &clock).open()?;
    assert_eq!(counts(&engine)?[&ExecutionState::Completed], 99);
    assert_eq!(engine.check()?, vec![pending.to_string(), completed.to_string()]);
    engine.close().await?;

    let err = builder_at(&path, &clock).verify_on_open(stent::VerifyOnOpen::Full).open().expect_err("refused");
    match &err {
        stent::Error::Storage(stent::storage::StorageError::CorruptFile(msg)) => {
            assert!(msg.contains("found 2 problem(s)"), "{msg}");
            assert!(msg.contains(pending) && msg.contains(completed), "{msg}");
        }
        other => panic!("expected CorruptFile, got {other:?}"),
    }
    Ok(())
}
