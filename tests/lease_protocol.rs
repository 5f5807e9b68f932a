//! Leases: heartbeats keep a long attempt the only one; a worker that stops heartbeating loses
//! the task to another worker; a stale holder's outcome is refused and overwrites nothing.
//!
//! Method: a manual clock moved one heartbeat interval at a time; between moves the test waits
//! for the commit it expects (a renewal, a claim), so nothing depends on real timing.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::storage::{NewExecution, Op, OpOutput, OpenOptions, RedbStore, Store};
use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Error, ExecutionState, WorkerOptions};
use support::*;
use tokio::sync::Notify;

const LONG: Activity<u32, u32> = Activity::new("long");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_with_heartbeats_is_never_run_twice() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let runs = Arc::new(AtomicU64::new(0));
    let release = Arc::new(Notify::new());
    let (r, n) = (runs.clone(), release.clone());
    let engine = builder(&disk, &clock)
        .activity(LONG, move |x: u32| {
            let (r, n) = (r.clone(), n.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                n.notified().await;
                Ok::<_, ActivityError>(x)
            }
        })
        .open()?;
    let pool = engine.serve(options("a"))?;
    let id = engine.dispatch(LONG, &5).await?;
    until(&runs, 1, "first attempt starts").await;

    // Six lease durations (10 s each) pass, one 3 s heartbeat interval at a time.
    for beat in 1..=20u64 {
        clock.advance(Duration::from_secs(3));
        stent::testing::wait_until(LIMIT, "heartbeat renews the lease", || engine.stats().lease_renewals >= beat).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the task ran again while its worker was alive");
    assert_eq!(engine.running_tasks()?.len(), 1);
    release.notify_one();
    assert_eq!(finished(&engine, LONG, id).await?, 5);
    let info = engine.state_of(id)?;
    assert_eq!(info.attempts, 1);
    assert!(info.history.is_empty(), "{:?}", info.history);
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_heartbeating_loses_the_task() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let engine = builder(&disk, &clock)
        .activity(LONG, move |x: u32| {
            let attempt = r.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if attempt == 1 {
                    std::future::pending::<()>().await; // Stuck: never finishes by itself.
                }
                Ok::<_, ActivityError>(x * 10)
            }
        })
        .open()?;
    // Pool "stuck" never heartbeats within its lease.
    let stuck = engine.serve(WorkerOptions { heartbeat_interval: Duration::from_secs(3600), ..options("stuck") })?;
    let id = engine.dispatch(LONG, &4).await?;
    until(&runs, 1, "stuck worker starts the task").await;
    assert_eq!(engine.running_tasks()?[0].worker, "stuck");

    let healthy = engine.serve(options("healthy"))?;
    clock.advance(Duration::from_secs(11)); // Past the 10 s lease.
    assert_eq!(finished(&engine, LONG, id).await?, 40);
    let info = engine.state_of(id)?;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(info.attempts, 2, "the expired lease counts as an attempt");
    assert_eq!(info.history.len(), 1);
    assert_eq!(info.history[0].worker, "stuck");
    assert_eq!(info.history[0].error.code.as_deref(), Some("lease_expired"));
    stent::testing::wait_until(LIMIT, "the stuck attempt's future is aborted", || stuck.running() == 0).await;
    stuck.drain().await?;
    healthy.drain().await?;
    assert_consistent(&engine);
    engine.close().await?;
    Ok(())
}

fn new_execution() -> NewExecution {
    NewExecution {
        claim: None,
        schedule: None,
        keys: Default::default(),
        flow: None,
        cache: None,
        kind: stent::storage::records::TaskKind::Activity,
        function: "long".into(),
        queue: "default".into(),
        priority: 0,
        tags: vec![],
        input: b"1".to_vec(),
        delay_ms: 0,
        max_duration_ms: None,
        idempotency_key: None,
        retry: (&stent::RetryPolicy::default()).into(),
        timeout_ms: None,
        version: 1,
    }
}

fn one(store: &RedbStore, now: u64, op: Op) -> stent::Result<OpOutput> {
    let (mut results, _) = store.apply_batch(now, vec![op])?;
    results.remove(0).map_err(stent::Error::from)
}

#[tokio::test]
async fn a_stale_holders_outcome_is_rejected_and_overwrites_nothing() -> anyhow::Result<()> {
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
    let OpOutput::Dispatched { execution_id, .. } = one(&store, 0, Op::Dispatch(new_execution()))? else {
        panic!("not dispatched")
    };
    let task_id = store.execution(execution_id)?.expect("exists").1.id;
    let claim = |now, worker: &str| match one(
        &store,
        now,
        Op::Claim { task_id, worker: worker.into(), lease_ms: 100, version: 1, limits: Default::default() },
    ) {
        Ok(OpOutput::Claimed(c)) => c.token,
        other => panic!("claim failed: {other:?}"),
    };
    let old = claim(0, "a");
    assert!(matches!(one(&store, 150, Op::Expire { task_id, token: old })?, OpOutput::Expired(true)));
    let new = claim(150, "b");
    assert!(new > old, "fencing token must grow");

    // The old holder finishes late: refused, for complete, fail and renew alike.
    for op in [
        Op::Complete { task_id, token: old, output: b"\"stale\"".to_vec(), local: Default::default(), next: None },
        Op::Fail { task_id, token: old, error: ActivityError::permanent("stale"), jitter_unit: 0.0 },
        Op::Renew { leases: vec![(task_id, old)], lease_ms: 100, details: vec![(task_id, b"\"stale\"".to_vec())] },
    ] {
        match one(&store, 160, op) {
            Err(Error::Lease(stent::LeaseError::LeaseLost { token, .. })) => assert_eq!(token, old),
            Ok(OpOutput::Renewed(r)) => assert!(matches!(r[0], Err(stent::storage::Rejection::Lease(_)))),
            other => panic!("stale outcome accepted: {other:?}"),
        }
    }
    let (exec, task) = store.execution(execution_id)?.expect("exists");
    assert_eq!(exec.state, ExecutionState::Running);
    assert_eq!(store.heartbeat(execution_id, task_id)?, None, "a refused renewal records no progress");
    assert_eq!(task.lease.as_ref().map(|l| (l.worker.as_str(), l.token)), Some(("b", new)));

    one(
        &store,
        170,
        Op::Complete { task_id, token: new, output: b"\"fresh\"".to_vec(), local: Default::default(), next: None },
    )?;
    let (exec, _) = store.execution(execution_id)?.expect("exists");
    assert_eq!(exec.state, ExecutionState::Completed);
    assert_eq!(exec.output.as_deref(), Some(&b"\"fresh\""[..]));
    // Once completed, the current token cannot complete it a second time either.
    assert!(one(
        &store,
        180,
        Op::Complete { task_id, token: new, output: b"\"again\"".to_vec(), local: Default::default(), next: None }
    )
    .is_err());
    assert!(store.check()?.is_empty());
    Ok(())
}
