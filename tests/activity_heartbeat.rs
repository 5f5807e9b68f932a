//! Activity heartbeat details: progress an attempt records (`stent::activity::heartbeat`)
//! becomes durable with its pool's next lease renewal, and the task's next attempt (after a
//! crash, or after a timeout and a retry) reads it (`heartbeat_details`) and resumes from
//! there. Progress recorded after the last renewal before a crash is lost, as documented.
//! A file of schema version 3 (before heartbeats) opens and gets the table.
//!
//! Method: `MemoryDisk` + `ManualClock`. The activity "uploads" parts, recording each one it
//! finished; it stops (pending forever) at a part the test names, so the test controls what
//! was recorded before it moves the clock by one heartbeat interval (one renewal) and crashes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::ReadableDatabase;
use stent::testing::{crash, wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Engine, FunctionOptions, RetryPolicy};
use support::*;

const UPLOAD: Activity<u32, u32> = Activity::new("upload");

#[derive(Clone, Default)]
struct World {
    disk: MemoryDisk,
    clock: ManualClock,
    /// The part each attempt started from.
    starts: Arc<Mutex<Vec<u32>>>,
    /// Parts at which an attempt stops and hangs (the first listed, then removed).
    stalls: Arc<Mutex<Vec<u32>>>,
}

impl World {
    fn open(&self, options: FunctionOptions) -> Engine {
        let (starts, stalls) = (self.starts.clone(), self.stalls.clone());
        builder(&self.disk, &self.clock)
            .activity_with(
                UPLOAD,
                move |parts: u32| {
                    let (starts, stalls) = (starts.clone(), stalls.clone());
                    async move {
                        let first = stent::activity::heartbeat_details::<u32>()?.unwrap_or(0);
                        starts.lock().unwrap().push(first);
                        let stall = stalls.lock().unwrap().first().copied();
                        for part in first..parts {
                            if stall == Some(part) {
                                stalls.lock().unwrap().remove(0);
                                std::future::pending::<()>().await;
                            }
                            stent::activity::heartbeat(&(part + 1))?;
                        }
                        Ok::<_, ActivityError>(parts)
                    }
                },
                options,
            )
            .open()
            .expect("open")
    }

    fn starts(&self) -> Vec<u32> {
        self.starts.lock().unwrap().clone()
    }

    /// Moves the clock by one heartbeat interval and waits for the renewal it causes.
    async fn renew_once(&self, engine: &Engine) {
        let before = engine.stats().lease_renewals;
        self.clock.advance(options("w").heartbeat_interval);
        wait_until(LIMIT, "a lease renewal commits", || engine.stats().lease_renewals > before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_after_a_crash_resumes_from_the_last_renewed_progress() {
    let world = World::default();
    *world.stalls.lock().unwrap() = vec![3, 5];
    let engine = world.open(FunctionOptions::new());
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(UPLOAD, &8).await.unwrap();
    wait_until(LIMIT, "the first attempt stops at part 3", || world.stalls.lock().unwrap().len() == 1).await;
    world.renew_once(&engine).await;
    drop(pool);
    crash(engine).await.unwrap();

    // The second attempt starts at part 3, records 4 and 5, and dies before any renewal.
    let engine = world.open(FunctionOptions::new());
    let pool = engine.serve(options("w")).unwrap();
    wait_until(LIMIT, "the second attempt stops at part 5", || world.stalls.lock().unwrap().is_empty()).await;
    drop(pool);
    crash(engine).await.unwrap();

    let engine = world.open(FunctionOptions::new());
    let pool = engine.serve(options("w")).unwrap();
    assert_eq!(finished(&engine, UPLOAD, id).await.unwrap(), 8);
    assert_eq!(world.starts(), [0, 3, 3], "progress after the last renewal before a crash is lost");
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_timeout_resumes_from_the_timed_out_attempts_progress() {
    let world = World::default();
    *world.stalls.lock().unwrap() = vec![4];
    let retry = RetryPolicy::exponential(3, Duration::from_secs(1));
    let engine = world.open(FunctionOptions::new().timeout("10s").retry(retry));
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(UPLOAD, &6).await.unwrap();
    wait_until(LIMIT, "the first attempt stops at part 4", || world.stalls.lock().unwrap().is_empty()).await;
    world.renew_once(&engine).await;
    // To the attempt's timeout (10 s after it started) and inside its lease (10 s from the
    // renewal at 3 s): were the clock to pass 13 s the lease would expire at the same instant
    // and the reclaimer could end the attempt first, as an expiry rather than a timeout.
    world.clock.advance(Duration::from_secs(7));
    wait_until(LIMIT, "the attempt timed out", || engine.stats().failures == 1).await;
    // Past the retry's backoff.
    world.clock.advance(Duration::from_secs(5));
    assert_eq!(finished(&engine, UPLOAD, id).await.unwrap(), 6);
    assert_eq!(world.starts(), [0, 4]);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

#[tokio::test]
async fn heartbeats_outside_an_activity_attempt_are_refused() {
    let err = stent::activity::heartbeat(&1).unwrap_err();
    assert!(err.message.contains("outside an activity attempt"), "{err}");
    assert!(stent::activity::heartbeat_details::<u32>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_3_file_opens_and_gets_the_heartbeat_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.stent");
    let world = World::default();
    let engine = Engine::builder().path(&path).clock(world.clock.clone()).open().unwrap();
    engine.close().await.unwrap();
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(stent::storage::tables::HEARTBEATS).unwrap(), "a current file has it");
        txn.open_table(stent::storage::tables::META).unwrap().insert("schema_version", 3).unwrap();
        cut_to_schema4_records(&txn);
        txn.commit().unwrap();
    }
    let engine = Engine::builder()
        .path(&path)
        .clock(world.clock.clone())
        .activity(UPLOAD, |parts: u32| async move {
            stent::activity::heartbeat(&parts)?;
            Ok::<_, ActivityError>(stent::activity::heartbeat_details::<u32>()?.unwrap_or(0) + 1)
        })
        .open()
        .unwrap();
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(UPLOAD, &2).await.unwrap();
    assert_eq!(finished(&engine, UPLOAD, id).await.unwrap(), 3, "an attempt reads its own latest details");
    assert_consistent(&engine);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
    let db = redb::Database::open(&path).unwrap();
    let read = db.begin_read().unwrap();
    let meta = read.open_table(stent::storage::tables::META).unwrap();
    assert_eq!(meta.get("schema_version").unwrap().map(|v| v.value()), Some(6));
    read.open_table(stent::storage::tables::HEARTBEATS).unwrap();
}
