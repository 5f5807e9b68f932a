//! Worker options that cannot work are refused by `serve` with one clear error, instead of
//! being clamped or cast into something else (a `max_concurrency` once cast to `u32` made
//! `drain` return at once).

mod support;

use std::time::Duration;

use stent::testing::{ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Error, WorkerOptions};
use support::*;

const ECHO: Activity<u32, u32> = Activity::new("echo");

#[tokio::test]
async fn max_concurrency_is_checked() -> anyhow::Result<()> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock).activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) }).open()?;
    let refused = |options: WorkerOptions| match engine.serve(options) {
        Err(Error::InvalidOptions { what: "WorkerOptions", reason }) => reason,
        Err(other) => panic!("expected InvalidOptions, got {other:?}"),
        Ok(_) => panic!("options were accepted"),
    };
    assert_eq!(refused(WorkerOptions { max_concurrency: 0, ..options("w") }), "max_concurrency must be at least 1");
    assert_eq!(
        refused(WorkerOptions { lease_duration: Duration::ZERO, ..options("w") }),
        "lease_duration must be more than zero"
    );
    assert_eq!(
        refused(WorkerOptions { heartbeat_interval: Duration::ZERO, ..options("w") }),
        "heartbeat_interval must be more than zero"
    );

    // The largest value is a real limit, not a wrapped one: the pool runs and drains.
    let pool = engine.serve(WorkerOptions { max_concurrency: u32::MAX, ..options("w") })?;
    let id = engine.dispatch(ECHO, &5).await?;
    assert_eq!(finished(&engine, ECHO, id).await?, 5);
    assert_eq!(pool.drain().await?, 0);
    assert_eq!(pool.running(), 0);
    engine.close().await?;
    Ok(())
}
