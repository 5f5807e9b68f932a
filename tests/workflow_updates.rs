//! Updates: `engine.update(id, name, payload)` delivers a request the workflow answers
//! (`ctx.wait_for_update`, `ctx.reply`) and returns the durable reply. Requests queue in the
//! mailbox until the workflow asks; concurrent callers each get their own reply; an execution
//! that ends without answering fails its callers; a finished one refuses at once.
//!
//! Method: `MemoryDisk` + `ManualClock`.

mod support;

use stent::testing::{crash, ManualClock, MemoryDisk};
use stent::{Ctx, Engine, Error, Workflow};
use support::*;

const ACCOUNT: Workflow<i64, i64> = Workflow::new("account");

/// Adds each deposit and replies with the balance; a deposit of 0 closes the account.
async fn account(ctx: Ctx, mut balance: i64) -> stent::Result<i64> {
    loop {
        let deposit = ctx.wait_for_update::<i64>("deposit").await?;
        balance += deposit.payload;
        ctx.reply(&deposit, &balance).await?;
        if deposit.payload == 0 {
            return Ok(balance);
        }
    }
}

fn open(disk: &MemoryDisk, clock: &ManualClock) -> Engine {
    builder(disk, clock)
        .workflow(ACCOUNT, account)
        .workflow(SILENT, |ctx: Ctx, _: u32| async move {
            // Takes the request and ends without answering.
            let _ = ctx.wait_for_update::<u32>("ask").await?;
            Ok(0u32)
        })
        .open()
        .unwrap()
}

const SILENT: Workflow<u32, u32> = Workflow::new("silent");

/// `engine.update`, bounded in real time so a lost wake-up fails the test instead of hanging it.
async fn update<R: serde::de::DeserializeOwned>(
    engine: &Engine,
    id: stent::ExecutionId,
    name: &str,
    payload: i64,
) -> stent::Result<R> {
    match tokio::time::timeout(LIMIT, engine.update(id, name, &payload)).await {
        Ok(result) => result,
        Err(_) => panic!("update {name:?} of execution {id} got no answer within {LIMIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_update_gets_the_reply_the_workflow_gave_it() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock);
    let id = engine.dispatch(ACCOUNT, &100).await.unwrap();
    let pool = engine.serve(options("w")).unwrap();
    assert_eq!(update::<i64>(&engine, id, "deposit", 5).await.unwrap(), 105);
    assert_eq!(update::<i64>(&engine, id, "deposit", 7).await.unwrap(), 112);

    // Two callers at once: each gets the balance after its own deposit.
    let (a, b) = tokio::join!(update::<i64>(&engine, id, "deposit", 10), update::<i64>(&engine, id, "deposit", 20));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!((a, b) == (122, 142) || (a, b) == (152, 132), "{a} {b}");

    assert_eq!(update::<i64>(&engine, id, "deposit", 0).await.unwrap(), 142);
    assert_eq!(finished(&engine, ACCOUNT, id).await.unwrap(), 142);
    let err = update::<i64>(&engine, id, "deposit", 1).await.unwrap_err();
    assert!(matches!(err, Error::ExecutionFinished { .. }), "{err}");
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_while_no_worker_runs_is_answered_later_and_replies_survive_a_restart() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock);
    let id = engine.dispatch(ACCOUNT, &1).await.unwrap();
    // No worker yet: the request waits in the mailbox, and the caller with it.
    let caller = {
        let engine = engine.clone();
        tokio::spawn(async move { update::<i64>(&engine, id, "deposit", 2).await })
    };
    // The workflow has not run yet: whenever the request commits, it is queued for it.
    tokio::task::yield_now().await;
    let pool = engine.serve(options("w")).unwrap();
    assert_eq!(caller.await.unwrap().unwrap(), 3);
    drop(pool);
    crash(engine).await.unwrap();

    // The reply is durable; the next request after a restart continues from the balance.
    let engine = open(&disk, &clock);
    let pool = engine.serve(options("w2")).unwrap();
    assert_eq!(update::<i64>(&engine, id, "deposit", 4).await.unwrap(), 7);
    assert_eq!(update::<i64>(&engine, id, "deposit", 0).await.unwrap(), 7);
    assert_eq!(finished(&engine, ACCOUNT, id).await.unwrap(), 7);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_that_ends_without_answering_fails_its_caller() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = open(&disk, &clock);
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(SILENT, &0).await.unwrap();
    let err = update::<u32>(&engine, id, "ask", 1).await.unwrap_err();
    assert!(matches!(&err, Error::UpdateUnanswered { name, .. } if name == "ask"), "{err}");
    assert_eq!(finished(&engine, SILENT, id).await.unwrap(), 0);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}
