//! Shared helpers for the engine integration tests.
#![allow(dead_code)]

pub mod power_loss_disk;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stent::testing::{wait_until, ManualClock, MemoryDisk};
use stent::{Engine, EngineBuilder, ExecutionId, ExecutionState, WorkerOptions};

/// Real-time limit for conditions that must become true; a hang becomes a clear failure.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn builder(disk: &MemoryDisk, clock: &ManualClock) -> EngineBuilder {
    Engine::builder().backend(disk.clone()).clock(clock.clone()).seed(7)
}

pub fn options(id: &str) -> WorkerOptions {
    WorkerOptions {
        worker_id: id.to_string(),
        max_concurrency: 8,
        lease_duration: Duration::from_secs(10),
        heartbeat_interval: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(5),
        ..WorkerOptions::default()
    }
}

pub fn state(engine: &Engine, id: ExecutionId) -> ExecutionState {
    engine.state_of(id).expect("state_of").state
}

pub async fn until_state(engine: &Engine, id: ExecutionId, want: ExecutionState) {
    wait_until(LIMIT, &format!("execution {id} reaches {want}"), || state(engine, id) == want).await;
}

pub async fn until(counter: &AtomicU64, at_least: u64, what: &str) {
    wait_until(LIMIT, what, || counter.load(Ordering::SeqCst) >= at_least).await;
}

/// Waits until the engine is idle; stops at once if it is poisoned (a commit failed), so a
/// driver on a dead disk does not wait out the limit.
pub async fn settle(engine: &Engine) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        if let Some(reason) = engine.poisoned() {
            return Err(format!("poisoned: {reason}"));
        }
        if engine.is_idle().map_err(|e| e.to_string())? {
            return Ok(());
        }
        if start.elapsed() > LIMIT {
            return Err(format!("the engine is still busy after {LIMIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub fn assert_consistent(engine: &Engine) {
    let problems = engine.check().expect("check");
    assert!(problems.is_empty(), "store inconsistent: {problems:#?}");
}

/// `wait_for` without an engine-clock timeout, bounded in real time so a broken protocol
/// fails the test instead of hanging it.
pub async fn finished<H: stent::FunctionHandle>(
    engine: &Engine,
    function: H,
    id: ExecutionId,
) -> stent::Result<H::Output> {
    finished_within(engine, function, id, LIMIT).await
}

/// `finished` with another real-time bound (for executions that do a lot of work).
pub async fn finished_within<H: stent::FunctionHandle>(
    engine: &Engine,
    function: H,
    id: ExecutionId,
    limit: Duration,
) -> stent::Result<H::Output> {
    match tokio::time::timeout(limit, engine.wait_for(function, id, None)).await {
        Ok(result) => result,
        Err(_) => panic!("execution {id} did not finish within {limit:?}"),
    }
}

/// Makes the records of a current file those of a schema 4 file: the fields schemas 5 and 6
/// appended (an execution's version, run, cancel request, schedule and three keys, a task's
/// version and rate slot: 1, 1, none, none, none x3, 1 and none here, one byte each) are cut
/// off each record and
/// its checksum recomputed, as a file written by a build of schema 4 holds them. For tests
/// that turn a current file into an older one (the caller also sets `schema_version` and
/// removes what later versions added).
pub fn cut_to_schema4_records(txn: &redb::WriteTransaction) {
    use redb::{ReadableTable, TableDefinition};
    use stent::storage::records::{ExecutionRecord, TaskRecord};
    fn cut<T: serde::de::DeserializeOwned>(
        txn: &redb::WriteTransaction,
        name: &'static str,
        appended: usize,
        check: impl Fn(&T),
    ) {
        let mut table = txn.open_table(TableDefinition::<u64, &[u8]>::new(name)).unwrap();
        let records: Vec<(u64, Vec<u8>)> =
            table.iter().unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value(), v.value().to_vec())).collect();
        for (key, bytes) in records {
            check(&stent::storage::codec::decode::<T>(name, &key, &bytes).unwrap());
            // Each appended field is one byte (a varint 1, or `None`), just before the 4-byte checksum.
            let mut body = bytes[..bytes.len() - 4 - appended].to_vec();
            let crc = crc32fast::hash(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            table.insert(key, body.as_slice()).unwrap();
        }
    }
    cut::<ExecutionRecord>(txn, "executions", 7, |e| {
        assert_eq!((e.version, e.run, e.cancel_requested_ms, &e.schedule), (1, 1, None, &None));
        assert_eq!(e.keys, Default::default());
    });
    cut::<TaskRecord>(txn, "tasks", 2, |t| assert_eq!((t.version, t.rate_slot_ms), (1, None)));
}
