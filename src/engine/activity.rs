//! What an activity can record about its execution besides its result: counters and custom
//! state. Recorded values are committed with the attempt's accepted completion, in the same
//! transaction, and dropped with a failed or lost attempt, so a retried activity never counts
//! twice.
//!
//! ```
//! # async fn charge(cents: u64) -> Result<u64, stent::ActivityError> {
//! stent::activity::add_counter("cents_charged", cents as i64)?;
//! stent::activity::set_state("last_charge", &cents)?;
//! # Ok(cents) }
//! ```

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::api::ActivityError;
use crate::storage::Local;

tokio::task_local! {
    static LOCAL: Arc<Mutex<Local>>;
}

/// Runs `future` as an attempt whose recordings go to `local`.
pub(crate) async fn scope<F: std::future::Future>(local: Arc<Mutex<Local>>, future: F) -> F::Output {
    LOCAL.scope(local, future).await
}

fn with_local(what: &str, f: impl FnOnce(&mut Local)) -> Result<(), ActivityError> {
    LOCAL
        .try_with(|local| f(&mut local.lock().unwrap_or_else(|p| p.into_inner())))
        .map_err(|_| ActivityError::permanent(format!("stent::activity::{what} called outside an activity attempt")))
}

/// Adds `delta` to the execution's counter `name` when this attempt completes.
pub fn add_counter(name: &str, delta: i64) -> Result<(), ActivityError> {
    with_local("add_counter", |local| local.counters.push((name.to_string(), delta)))
}

/// Sets the execution's state value `key` when this attempt completes.
pub fn set_state<T: Serialize>(key: &str, value: &T) -> Result<(), ActivityError> {
    let value = serde_json::to_vec(value)
        .map_err(|e| ActivityError::permanent(format!("state {key:?} does not encode: {e}")))?;
    with_local("set_state", |local| local.state.push((key.to_string(), value)))
}
