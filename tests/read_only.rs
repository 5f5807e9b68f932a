//! `EngineBuilder::read_only`: every read works, every change is refused, and the file's bytes
//! never change, even when the file was left by a process that did not close it.

use std::time::Duration;

use stent::{Activity, ActivityError, Engine, Error, ExecutionFilter, ExecutionState, Page};

const WORK: Activity<u32, u32> = Activity::new("work");

async fn double(n: u32) -> Result<u32, ActivityError> {
    Ok(n * 2)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_engine_reads_a_crashed_file_as_left_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.stent");
    let engine = Engine::builder().path(&db).activity(WORK, double).open().unwrap();
    let pool = engine.serve(stent::WorkerOptions::default()).unwrap();
    let done = engine.dispatch(WORK, &1).await.unwrap();
    engine.wait_for(WORK, done, Some(Duration::from_secs(10))).await.unwrap();
    pool.drain().await.unwrap();
    let left = engine.dispatch(WORK, &2).await.unwrap();
    // The process "dies": the engine is leaked, never closed, and the file is read after.
    std::mem::forget(engine);
    // redb's lock is the process's; release it as a crash would by reading from a copy.
    let copy = dir.path().join("copy.stent");
    std::fs::copy(&db, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();

    let ro = Engine::builder().path(&copy).activity(WORK, double).read_only(true).open().unwrap();
    assert_eq!(ro.state_of(done).unwrap().state, ExecutionState::Completed);
    assert_eq!(ro.state_of(left).unwrap().state, ExecutionState::Pending);
    assert_eq!(ro.list_executions(&ExecutionFilter::default(), &Page::default()).unwrap().len(), 2);
    assert!(ro.check().unwrap().is_empty());
    assert!(matches!(ro.cancel(left).await, Err(Error::ReadOnly)));
    assert!(matches!(ro.dispatch(WORK, &3).await, Err(Error::ReadOnly)));
    ro.close().await.unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), before, "a read-only open changed the file");

    let missing = Engine::builder().path(dir.path().join("none.stent")).read_only(true).open();
    assert!(missing.is_err());
    assert!(!dir.path().join("none.stent").exists(), "a read-only open created a file");
}
