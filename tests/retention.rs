//! Retention: finished executions, dead letters and expired cache entries older than a period
//! are removed with all their records, nothing newer or still running is touched, and the
//! file's freed space is reused by later work.
//!
//! Method: real database files in a temporary directory and a `ManualClock`; after the engine
//! closes, the file is read with redb directly to prove that no record of a removed execution
//! is left in any table.

mod support;

use std::path::Path;
use std::time::Duration;

use redb::{ReadableDatabase, TableDefinition};
use stent::testing::{wait_until, ManualClock};
use stent::{
    Activity, ActivityError, CleanupReport, Ctx, Engine, EngineBuilder, Error, ExecutionId, ExecutionState,
    RetryPolicy, Workflow,
};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");
const SQUARE: Activity<u32, u32> = Activity::new("square");
const BROKEN: Activity<u32, u32> = Activity::new("broken");
const ORDER: Workflow<u32, u32> = Workflow::new("order");

fn builder_at(path: &Path, clock: &ManualClock) -> EngineBuilder {
    Engine::builder()
        .path(path)
        .clock(clock.clone())
        .seed(7)
        .workflow(ORDER, |ctx: Ctx, x: u32| async move {
            let squared = ctx.call(SQUARE, &x).await?;
            ctx.counter("items").add(1).await?;
            ctx.state("last").set(&squared).await?;
            let bonus: u32 = ctx.wait_for_signal("go").await?;
            ctx.call(ECHO, &(squared + bonus)).await
        })
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .activity_with(
            SQUARE,
            |x: u32| async move { Ok::<_, ActivityError>(x * x) },
            stent::FunctionOptions::new().cached("1h"),
        )
        .activity_with(
            BROKEN,
            |_: u32| async move { Err::<u32, _>(ActivityError::permanent("always broken")) },
            stent::FunctionOptions::new().retry(RetryPolicy::none()),
        )
}

/// Runs one `ORDER` to completion with idempotency key `key`, leaving one unconsumed signal in
/// its mailbox.
async fn finished_order(engine: &Engine, x: u32, key: &str) -> anyhow::Result<ExecutionId> {
    let id = engine.dispatch(ORDER, &x).idempotency_key(key).await?;
    engine.send_signal(id, "go", &1).await?;
    engine.send_signal(id, "go", &2).await?; // Never consumed.
    assert_eq!(finished(engine, ORDER, id).await?, x * x + 1);
    Ok(id)
}

/// The records of execution `id` left in the tables keyed by it: (table, count). (Tasks,
/// dead letters and the idempotency key are checked through the engine and `check`.)
fn records_of(path: &Path, id: u64) -> anyhow::Result<Vec<(&'static str, usize)>> {
    let db = redb::Database::open(path)?;
    let read = db.begin_read()?;
    let next = id + 1;
    let counts = [
        ("executions", read.open_table(TableDefinition::<u64, &[u8]>::new("executions"))?.range(id..next)?.count()),
        (
            "journal",
            read.open_table(TableDefinition::<(u64, u32), &[u8]>::new("journal"))?.range((id, 0)..(next, 0))?.count(),
        ),
        (
            "step_inputs",
            read.open_table(TableDefinition::<(u64, u32), &[u8]>::new("step_inputs"))?
                .range((id, 0)..(next, 0))?
                .count(),
        ),
        (
            "signals",
            read.open_table(TableDefinition::<(u64, &str, u64), &[u8]>::new("signals"))?
                .range((id, "", 0)..(next, "", 0))?
                .count(),
        ),
        (
            "counters",
            read.open_table(TableDefinition::<(u64, &str), i64>::new("counters"))?.range((id, "")..(next, ""))?.count(),
        ),
        (
            "state",
            read.open_table(TableDefinition::<(u64, &str), &[u8]>::new("state"))?.range((id, "")..(next, ""))?.count(),
        ),
        (
            "idx_exec_tasks",
            read.open_table(TableDefinition::<(u64, u64), ()>::new("idx_exec_tasks"))?
                .range((id, 0)..(next, 0))?
                .count(),
        ),
    ];
    Ok(counts.into_iter().filter(|(_, n)| *n > 0).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_what_ended_before_the_period_with_all_its_records() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("retention.stent");
    let clock = ManualClock::default();
    let engine = builder_at(&path, &clock).open()?;
    let pool = engine.serve(options("w"))?;

    let old = finished_order(&engine, 3, "order-3").await?;
    let broken = engine.dispatch(BROKEN, &1).await?;
    assert!(finished(&engine, BROKEN, broken).await.is_err());
    assert_eq!(engine.dead_letters(10)?.len(), 1);

    clock.advance(Duration::from_secs(2 * 86_400));
    let recent = finished_order(&engine, 4, "order-4").await?;
    let running = engine.dispatch(ORDER, &5).await?; // Waits for its signal.
    wait_until(LIMIT, "the running order waits", || {
        engine.state_of(running).is_ok_and(|i| i.state == ExecutionState::Running)
    })
    .await;

    // The cached square of 3 expired too, but the recent order's own result, cached later,
    // already pushed it out (see `expired_cache_entries_are_removed`).
    let expect = CleanupReport { executions: 2, dead_letters: 1, cache_entries: 0, rate_budgets: 0 };
    assert_eq!(engine.cleanup_preview("1d")?, expect, "the preview counts what cleanup removes");
    assert_eq!(engine.cleanup_preview("1d")?, expect, "and removes nothing");
    assert_eq!(engine.cleanup("1d").await?, expect);
    assert_eq!(engine.cleanup("1d").await?, CleanupReport::default(), "a second cleanup finds nothing");

    for id in [old, broken] {
        assert!(matches!(engine.state_of(id), Err(Error::UnknownExecution(_))), "{id} is gone");
    }
    assert!(engine.dead_letters(10)?.is_empty());
    assert_eq!(state(&engine, recent), ExecutionState::Completed, "ended within the period: kept");
    assert_eq!(state(&engine, running), ExecutionState::Running, "still running: kept");
    assert_eq!(engine.state_of(recent)?.counters, [("items".to_string(), 1)].into());
    assert_consistent(&engine);

    // The removed execution's idempotency key is free again.
    let again = engine.dispatch(ORDER, &3).idempotency_key("order-3").await?;
    assert_ne!(again, old);
    // The recent one's is not.
    assert_eq!(engine.dispatch(ORDER, &4).idempotency_key("order-4").await?, recent);

    engine.send_signal(running, "go", &1).await?;
    engine.send_signal(again, "go", &1).await?;
    assert_eq!(finished(&engine, ORDER, running).await?, 26);
    assert_eq!(finished(&engine, ORDER, again).await?, 10);
    pool.drain().await?;
    engine.close().await?;

    for id in [old.0, broken.0] {
        assert_eq!(records_of(&path, id)?, vec![], "records of removed execution {id}");
    }
    assert!(!records_of(&path, recent.0)?.is_empty(), "the kept execution's records are still there");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_cache_entries_are_removed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cache.stent");
    let clock = ManualClock::default();
    let engine = builder_at(&path, &clock).open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(SQUARE, &3).await?;
    assert_eq!(finished(&engine, SQUARE, id).await?, 9);
    assert_eq!(engine.cleanup("1d").await?, CleanupReport::default(), "fresh: kept");

    clock.advance(Duration::from_secs(2 * 3_600)); // Past the 1 h TTL, within the 1 day period.
    let expect = CleanupReport { executions: 0, dead_letters: 0, cache_entries: 1, rate_budgets: 0 };
    assert_eq!(engine.cleanup_preview("1d")?, expect);
    assert_eq!(engine.cleanup("1d").await?, expect);
    assert_eq!(state(&engine, id), ExecutionState::Completed);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_by_itself_on_the_engine_clock() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("auto.stent");
    let clock = ManualClock::default();
    let engine = builder_at(&path, &clock).retention("1h").open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(ECHO, &1).await?;
    assert_eq!(finished(&engine, ECHO, id).await?, 1);

    clock.advance(Duration::from_secs(30 * 60));
    let young = engine.dispatch(ECHO, &2).await?;
    assert_eq!(finished(&engine, ECHO, young).await?, 2);
    clock.advance(Duration::from_secs(45 * 60));
    // 75 minutes after the first ended, 45 after the second: only the first is past the hour.
    wait_until(LIMIT, "the hour-old execution is removed", || {
        matches!(engine.state_of(id), Err(Error::UnknownExecution(_)))
    })
    .await;
    assert_eq!(state(&engine, young), ExecutionState::Completed);
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_freed_by_cleanup_is_reused() -> anyhow::Result<()> {
    const ROUNDS: usize = 4;
    const PER_ROUND: u32 = 200;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("reuse.stent");
    let clock = ManualClock::default();
    let engine = builder_at(&path, &clock).open()?;
    let pool = engine.serve(options("w"))?;
    let mut sizes = Vec::new();
    for round in 0..ROUNDS {
        // Concurrently, so group commit keeps the fsyncs few.
        let mut orders = tokio::task::JoinSet::new();
        for i in 0..PER_ROUND {
            let engine = engine.clone();
            orders.spawn(async move {
                let id = engine.dispatch(ORDER, &i).idempotency_key(format!("{round}-{i}")).await?;
                engine.send_signal(id, "go", &1).await?;
                anyhow::ensure!(finished(&engine, ORDER, id).await? == i * i + 1);
                Ok(())
            });
        }
        while let Some(order) = orders.join_next().await {
            order??;
        }
        clock.advance(Duration::from_secs(3_600));
        let removed = engine.cleanup("1m").await?;
        assert_eq!(removed.executions, u64::from(PER_ROUND));
        sizes.push(std::fs::metadata(&path)?.len());
    }
    pool.drain().await?;
    engine.close().await?;
    eprintln!("file sizes after each round: {sizes:?}");
    // Every round writes as much; without reuse the file would grow by that much each round
    // (to about 4x the first round's size over these rounds; 1,658,880 bytes was measured). redb
    // grows a file in steps, and one step taken while reuse works was seen to be +51 % (417,792
    // to 630,784 bytes), so the bound allows one step: the old bound of +50 % sat on it.
    let (first, last) = (sizes[0], sizes[ROUNDS - 1]);
    assert!(last < 2 * first, "file grew from {first} to {last} bytes over {ROUNDS} rounds: {sizes:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_schema_1_is_migrated_on_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v1.stent");
    let clock = ManualClock::default();
    let engine = builder_at(&path, &clock).open()?;
    let pool = engine.serve(options("w"))?;
    let old = finished_order(&engine, 2, "k").await?;
    pool.drain().await?;
    engine.close().await?;

    // Make it a version 1 file: no index of tasks by execution, no counts by state (version 3),
    // no heartbeats (version 4), records without versions and runs (version 5).
    {
        let db = redb::Database::open(&path)?;
        let txn = db.begin_write()?;
        txn.delete_table(TableDefinition::<(u64, u64), ()>::new("idx_exec_tasks"))?;
        txn.delete_table(TableDefinition::<u8, u64>::new("exec_counts"))?;
        txn.delete_table(TableDefinition::<(u64, u64), &[u8]>::new("heartbeats"))?;
        txn.open_table(TableDefinition::<&str, u64>::new("meta"))?.insert("schema_version", 1)?;
        support::cut_to_schema4_records(&txn);
        txn.commit()?;
    }

    let engine = builder_at(&path, &clock).open()?;
    assert_consistent(&engine); // The index was rebuilt from the tasks, the counts from the states.
    let completed = engine.counts_by_state()?.into_iter().find(|(s, _)| *s == ExecutionState::Completed);
    assert_eq!(completed, Some((ExecutionState::Completed, 1)));
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(engine.cleanup("1m").await?.executions, 1);
    engine.close().await?;
    assert_eq!(records_of(&path, old.0)?, vec![]);
    let db = redb::Database::open(&path)?;
    let version = db.begin_read()?.open_table(TableDefinition::<&str, u64>::new("meta"))?.get("schema_version")?;
    assert_eq!(version.map(|v| v.value()), Some(6), "migrated through versions 2 to 5 to 6");
    Ok(())
}
