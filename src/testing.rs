//! Support for testing code that uses stent: a manual clock, an in-memory "disk" that survives
//! a simulated crash, fault injection, and a helper to wait for a condition.

use std::sync::Arc;
use std::time::Duration;

pub use crate::engine::ManualClock;
pub use crate::storage::Faults;

/// An in-memory database file shared by every engine opened on it, so a test can "crash" an
/// engine (close it without draining) and open a new one on the same bytes.
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk {
    bytes: Arc<redb::backends::InMemoryBackend>,
}

impl MemoryDisk {
    pub fn new() -> Self {
        MemoryDisk { bytes: Arc::new(redb::backends::InMemoryBackend::new()) }
    }
}

impl redb::StorageBackend for MemoryDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.bytes.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.bytes.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.bytes.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.bytes.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.bytes.write(offset, data)
    }
}

/// Simulates a crash of the process that runs `engine`: running attempts are aborted where
/// they stand (nothing more is committed for them) and the file is released, leaving exactly
/// what a killed process leaves. Open a new engine on the same `MemoryDisk` (or path) to see
/// recovery: the lost attempts are re-queued and counted, and workflows resume from their
/// journals.
pub async fn crash(engine: crate::Engine) -> crate::Result<()> {
    engine.close().await
}

/// Lets the engine's workers run until it is idle (`Engine::is_idle`): everything due at the
/// manual clock's current time has run, and what is left waits for time or a signal. Fails
/// after `limit` of real time (an attempt that never ends keeps the engine busy).
///
/// ```no_run
/// # async fn demo(engine: stent::Engine, clock: stent::ManualClock) -> stent::Result<()> {
/// clock.advance(std::time::Duration::from_secs(3600));
/// stent::testing::run_until_idle(&engine, std::time::Duration::from_secs(10)).await?;
/// # Ok(()) }
/// ```
pub async fn run_until_idle(engine: &crate::Engine, limit: Duration) -> crate::Result<()> {
    let start = std::time::Instant::now();
    loop {
        if engine.is_idle()? {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(crate::Error::NotIdle(limit));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits (yielding to the runtime) until `condition` holds; fails after `limit` of real time
/// with the message. For outcomes that are certain but asynchronous (a commit that must
/// happen), never for timing: the limit only turns a hang into a clear failure.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "condition never held within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
