//! Transactional local steps: a workflow's `ctx.local` closure writes the application's own
//! redb table in the transaction that records the step, so the write happens exactly once
//! across crashes and re-runs; a closure that writes and then fails leaves nothing behind.
//!
//! Method: `MemoryDisk` + `ManualClock`; the application's table is read back with
//! `Engine::read`; crashes are `Engine::close` without draining.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};
use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Ctx, Engine, Error, Workflow};
use support::*;

const STOCK: TableDefinition<&str, u64> = TableDefinition::new("app_stock");
const RESERVE: Workflow<u64, u64> = Workflow::new("reserve");
const NOTIFY: Activity<u64, u64> = Activity::new("notify");

fn reserve_one(txn: &redb::WriteTransaction) -> Result<u64, ActivityError> {
    let mut stock = txn.open_table(STOCK).map_err(|e| ActivityError::permanent(e.to_string()))?;
    let left = stock.get("widget").map_err(|e| ActivityError::permanent(e.to_string()))?.map_or(10, |v| v.value());
    if left == 0 {
        return Err(ActivityError::permanent("out of stock"));
    }
    stock.insert("widget", left - 1).map_err(|e| ActivityError::permanent(e.to_string()))?;
    Ok(left - 1)
}

fn open(disk: &MemoryDisk, clock: &ManualClock, hang: bool, closures: &Arc<AtomicU64>) -> stent::Result<Engine> {
    let closures = closures.clone();
    builder(disk, clock)
        .workflow(RESERVE, move |ctx: Ctx, _: u64| {
            let closures = closures.clone();
            async move {
                let left = ctx
                    .local("reserve_stock", move |txn| {
                        closures.fetch_add(1, Ordering::SeqCst);
                        reserve_one(txn)
                    })
                    .await?;
                ctx.call(NOTIFY, &left).await
            }
        })
        .activity(NOTIFY, move |left: u64| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<_, ActivityError>(left)
        })
        .open()
}

fn stock(engine: &Engine) -> Option<u64> {
    engine
        .read(|txn| txn.open_table(STOCK).ok().and_then(|t| t.get("widget").ok().flatten().map(|v| v.value())))
        .expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_write_happens_exactly_once_across_a_crash() -> anyhow::Result<()> {
    let (disk, clock, closures) = (MemoryDisk::new(), ManualClock::default(), Arc::new(AtomicU64::new(0)));
    let engine = open(&disk, &clock, true, &closures)?;
    let _pool = engine.serve(options("w"))?;
    let id = engine.dispatch(RESERVE, &1).await?;
    wait_until(LIMIT, "notify runs after the reservation", || {
        engine.running_tasks().unwrap().iter().any(|t| t.function == "notify")
    })
    .await;
    assert_eq!(stock(&engine), Some(9));
    engine.close().await?;

    let engine = open(&disk, &clock, false, &closures)?;
    let pool = engine.serve(options("w2"))?;
    assert_eq!(finished(&engine, RESERVE, id).await?, 9);
    assert_eq!(stock(&engine), Some(9), "the re-run did not reserve again");
    assert_eq!(closures.load(Ordering::SeqCst), 1);
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

const FAILING: Workflow<(), String> = Workflow::new("failing_local");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_step_that_fails_after_writing_leaves_nothing() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(FAILING, |ctx: Ctx, ()| async move {
            let result: Result<u64, Error> = ctx
                .local("write_then_fail", |txn| {
                    reserve_one(txn)?; // Writes 9...
                    Err(ActivityError::permanent("changed my mind")) // ...then fails.
                })
                .await;
            match result {
                Err(Error::StepFailed { error, .. }) => Ok(error.message),
                other => Ok(format!("unexpected {other:?}")),
            }
        })
        .open()?;
    let pool = engine.serve(options("w"))?;
    let id = engine.dispatch(FAILING, &()).await?;
    assert_eq!(finished(&engine, FAILING, id).await?, "changed my mind");
    assert_eq!(stock(&engine), None, "the failed closure's write was rolled back");
    pool.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}
