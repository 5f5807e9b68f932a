//! A damaged record rejects only the operation that read it, and its execution is taken out of
//! the way; the engine keeps working, now and after every reopen.
//!
//! The defect this guards against: a journal entry whose bytes were damaged, read by a step's
//! completion after that op had already written the task, aborted the whole batch and
//! poisoned the engine; after a reopen the same completion ran again and poisoned it again, so
//! the engine never made progress (a crash loop).
//!
//! Method: a real file. A workflow's activity is running when the process "crashes"; one bit
//! of that step's journal entry is flipped with redb directly (redb's page checksums are
//! rewritten, so only stent's envelope can notice); the reopened engine re-runs the activity,
//! whose completion meets the damage. Then: what the user sees of that execution (state, error,
//! DLQ), that other work runs, and that a second reopen runs nothing again.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};
use stent::{Activity, ActivityError, Ctx, Engine, ExecutionId, ExecutionState, Workflow};
use support::*;

const SLOW: Activity<u32, u32> = Activity::new("slow");
const ECHO: Activity<u32, u32> = Activity::new("echo");
const FLOW: Workflow<u32, u32> = Workflow::new("flow");

/// Spelled out rather than taken from `stent::storage::tables`, so a renamed table fails here.
const JOURNAL: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("journal");

fn open(path: &Path, runs: &Arc<AtomicU64>, block_first: bool) -> stent::Result<Engine> {
    let r = runs.clone();
    Engine::builder()
        .path(path)
        .seed(7)
        .activity(SLOW, move |x: u32| {
            let run = r.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if block_first && run == 1 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, ActivityError>(x + 1)
            }
        })
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .workflow(FLOW, |ctx: Ctx, x: u32| async move { ctx.call(SLOW, &x).await })
        .open()
}

fn flip_bit_in_journal(path: &Path, key: (u64, u32)) -> anyhow::Result<()> {
    let db = redb::Database::open(path)?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(JOURNAL)?;
        let mut bytes = table.get(key)?.ok_or_else(|| anyhow::anyhow!("no journal entry {key:?}"))?.value().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        table.insert(key, bytes.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_journal_entry_does_not_crash_loop_the_engine() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    let runs = Arc::new(AtomicU64::new(0));

    // The step's activity is running when the process dies.
    let engine = open(&path, &runs, true)?;
    let pool = engine.serve(options("first"))?;
    let id = engine.dispatch(FLOW, &1).await?;
    assert_eq!(id, ExecutionId(1));
    until(&runs, 1, "the step's activity starts").await;
    drop(pool);
    stent::testing::crash(engine).await?;
    flip_bit_in_journal(&path, (1, 0))?;

    // Reopened: the activity runs again and its completion meets the damaged entry.
    let engine = open(&path, &runs, false)?;
    let pool = engine.serve(options("second"))?;
    until_state(&engine, id, ExecutionState::Failed).await;
    assert_eq!(engine.poisoned(), None, "a damaged record poisoned the engine");
    let info = engine.state_of(id)?;
    let error = info.error.expect("the failure is recorded");
    assert_eq!(error.code.as_deref(), Some("corrupt_record"));
    assert!(error.message.contains("table journal key (1, 0)"), "{}", error.message);
    let details: serde_json::Value = serde_json::from_str(error.details.as_deref().unwrap_or("null"))?;
    assert_eq!(details, serde_json::json!({ "table": "journal", "key": "(1, 0)" }));
    let letters = engine.dead_letters(10)?;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].execution_id, id);
    assert_eq!(letters[0].error.code.as_deref(), Some("corrupt_record"));
    let waited = engine.wait_for(FLOW, id, None).await;
    assert!(matches!(waited, Err(stent::Error::ExecutionFailed { id: failed, .. }) if failed == id), "{waited:?}");

    // The rest of the engine keeps working.
    let other = engine.dispatch(ECHO, &5).await?;
    assert_eq!(finished(&engine, ECHO, other).await?, 5);
    let problems = engine.check()?;
    assert!(problems.iter().any(|p| p.contains("journal")), "check names the damage: {problems:?}");
    let runs_before = runs.load(Ordering::SeqCst);
    assert_eq!(runs_before, 2, "the lost attempt ran again once");
    pool.drain().await?;
    engine.close().await?;

    // Reopened again: nothing of the stopped execution runs or fails again.
    let engine = open(&path, &runs, false)?;
    let pool = engine.serve(options("third"))?;
    let marker = engine.dispatch(ECHO, &6).await?;
    assert_eq!(finished(&engine, ECHO, marker).await?, 6);
    assert_eq!(engine.poisoned(), None);
    assert_eq!(engine.state_of(id)?.state, ExecutionState::Failed);
    assert_eq!(runs.load(Ordering::SeqCst), runs_before, "the stopped execution's activity ran again");
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}
