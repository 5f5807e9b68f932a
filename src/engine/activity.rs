//! What an activity can record about its execution besides its result: counters and custom
//! state, committed with the attempt's accepted completion, in the same transaction, and
//! dropped with a failed or lost attempt, so a retried activity never counts twice; and its
//! progress (`heartbeat`), made durable with the attempt's lease renewals, so the next attempt
//! after a crash or a timeout resumes where this one got to (`heartbeat_details`).
//!
//! ```
//! # async fn charge(cents: u64) -> Result<u64, stent::ActivityError> {
//! stent::activity::add_counter("cents_charged", cents as i64)?;
//! stent::activity::set_state("last_charge", &cents)?;
//! # Ok(cents) }
//! # async fn upload(parts: u32) -> Result<u32, stent::ActivityError> {
//! let first = stent::activity::heartbeat_details::<u32>()?.unwrap_or(0);
//! for part in first..parts {
//!     // ... upload part `part` ...
//!     stent::activity::heartbeat(&(part + 1))?;
//! }
//! # Ok(parts) }
//! ```

use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Inner;
use crate::api::ActivityError;
use crate::storage::Local;

tokio::task_local! {
    static LOCAL: Arc<Mutex<Local>>;
    static PROGRESS: Arc<Progress>;
}

/// Runs `future` as an attempt whose recordings go to `local` and whose heartbeats go to
/// `progress`.
pub(crate) async fn scope<F: std::future::Future>(
    local: Arc<Mutex<Local>>,
    progress: Arc<Progress>,
    future: F,
) -> F::Output {
    LOCAL.scope(local, PROGRESS.scope(progress, future)).await
}

/// One activity attempt's progress: what `heartbeat` recorded, held until the pool's next
/// lease renewal carries it (`take`), and the latest for `heartbeat_details`.
pub(crate) struct Progress {
    inner: Arc<Inner>,
    execution_id: u64,
    task_id: u64,
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    /// Recorded since the last renewal took it.
    unsent: Option<Vec<u8>>,
    /// The last details this attempt recorded, sent or not.
    latest: Option<Vec<u8>>,
}

impl Progress {
    pub(crate) fn new(inner: Arc<Inner>, execution_id: u64, task_id: u64) -> Self {
        Progress { inner, execution_id, task_id, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The details recorded since the last renewal, for the next one.
    pub(crate) fn take(&self) -> Option<Vec<u8>> {
        self.state().unsent.take()
    }

    /// Gives back details a renewal that failed to commit took, unless newer ones came.
    pub(crate) fn restore(&self, details: Vec<u8>) {
        self.state().unsent.get_or_insert(details);
    }
}

fn with_local(what: &str, f: impl FnOnce(&mut Local)) -> Result<(), ActivityError> {
    LOCAL.try_with(|local| f(&mut local.lock().unwrap_or_else(|p| p.into_inner()))).map_err(|_| outside(what))
}

/// Adds `delta` to the execution's counter `name` when this attempt completes.
pub fn add_counter(name: &str, delta: i64) -> Result<(), ActivityError> {
    with_local("add_counter", |local| local.counters.push((name.to_string(), delta)))
}

/// Records this attempt's progress: `details` replace the previous ones and become durable
/// with the pool's next lease renewal (every `WorkerOptions::heartbeat_interval`), written
/// only while this attempt holds its lease. A later attempt of the same task (after a crash,
/// a timeout or a retry) reads them with [`heartbeat_details`]. Details recorded after the
/// last renewal before a crash are lost; keep them cheap to redo.
pub fn heartbeat<T: Serialize>(details: &T) -> Result<(), ActivityError> {
    let details = serde_json::to_vec(details)
        .map_err(|e| ActivityError::permanent(format!("heartbeat details do not encode: {e}")))?;
    let progress = PROGRESS.try_with(Arc::clone).map_err(|_| outside("heartbeat"))?;
    let limit = progress.inner.payload_bytes_max;
    if details.len() as u64 > limit {
        return Err(ActivityError::permanent(format!(
            "heartbeat details of {} bytes exceed the limit of {limit} bytes",
            details.len()
        ))
        .with_code("payload_too_large"));
    }
    let mut state = progress.state();
    state.latest = Some(details.clone());
    state.unsent = Some(details);
    Ok(())
}

/// The progress last recorded for this task: this attempt's latest [`heartbeat`], else the
/// details an earlier attempt made durable; `None` when there are none.
pub fn heartbeat_details<T: DeserializeOwned>() -> Result<Option<T>, ActivityError> {
    let progress = PROGRESS.try_with(Arc::clone).map_err(|_| outside("heartbeat_details"))?;
    let latest = progress.state().latest.clone();
    let bytes = match latest {
        Some(bytes) => Some(bytes),
        None => progress
            .inner
            .store()
            .and_then(|store| Ok(store.heartbeat(progress.execution_id, progress.task_id)?))
            .map_err(|e| ActivityError::retryable(format!("heartbeat details cannot be read: {e}")))?,
    };
    bytes
        .map(|b| serde_json::from_slice(&b))
        .transpose()
        .map_err(|e| ActivityError::permanent(format!("heartbeat details do not decode: {e}")).with_code("decode"))
}

fn outside(what: &str) -> ActivityError {
    ActivityError::permanent(format!("stent::activity::{what} called outside an activity attempt"))
}

/// Sets the execution's state value `key` when this attempt completes.
pub fn set_state<T: Serialize>(key: &str, value: &T) -> Result<(), ActivityError> {
    let value = serde_json::to_vec(value)
        .map_err(|e| ActivityError::permanent(format!("state {key:?} does not encode: {e}")))?;
    with_local("set_state", |local| local.state.push((key.to_string(), value)))
}
