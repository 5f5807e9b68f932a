//! Updates: `Engine::update` sends a request that the workflow answers (`Ctx::wait_for_update`,
//! `Ctx::reply`) and waits for the durable reply.
//!
//! The request travels as a signal under a reserved name (`records::update_signal`) with a
//! payload of `{"update": id, "payload": ...}`, so it queues in the mailbox like any signal
//! until the workflow waits for it. The reply is a custom state value under a reserved key
//! (`records::reply_key`), written by the workflow's journaled step, whose commit wakes the
//! caller (`Effect::Replied`); the execution's end wakes callers it never answered. Nothing
//! polls. The id is random (64 bits from the operating system's keyed hasher), so requests
//! made by different processes or before a restart never share a reply.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use super::shared::lock;
use super::{Engine, Inner};
use crate::api::ExecutionId;
use crate::error::{Error, Result};
use crate::storage::records::{reply_key, update_signal};
use crate::storage::Op;

impl Engine {
    /// Sends update `name` with `payload` to a workflow execution and waits until the
    /// workflow answers it (`Ctx::wait_for_update` then `Ctx::reply`), returning the reply.
    /// The request waits in the execution's mailbox until the workflow asks for it; the reply
    /// is durable (kept in the execution's custom state). Fails at once if the execution has
    /// ended, and with [`Error::UpdateUnanswered`] if it ends without answering. Bound the
    /// wait with `tokio::time::timeout` if the workflow may take long to get to it.
    pub async fn update<P: Serialize, R: DeserializeOwned>(
        &self,
        id: ExecutionId,
        name: &str,
        payload: &P,
    ) -> Result<R> {
        let payload = serde_json::to_vec(payload)
            .map_err(|e| Error::Payload { function: format!("update {name:?}"), reason: e.to_string() })?;
        let update = fresh_update_id();
        let mut envelope = format!("{{\"update\":{update},\"payload\":").into_bytes();
        envelope.extend_from_slice(&payload);
        envelope.push(b'}');
        self.check_payload(&envelope)?;
        let inner = &self.inner;
        // Registered before the request can be answered; removed if this future is dropped.
        let mut waiter = Waiter::register(inner, id.0, update);
        inner.submit(Op::Signal { execution_id: id.0, name: update_signal(name), payload: envelope }).await?;
        (&mut waiter.replied).await.map_err(|_| Error::Shutdown)?;
        let info = self.state_of(id)?;
        match info.custom_state.get(&reply_key(update)) {
            Some(reply) => serde_json::from_value(reply.clone())
                .map_err(|e| Error::Payload { function: format!("update {name:?}"), reason: e.to_string() }),
            None => Err(Error::UpdateUnanswered { id, name: name.to_string() }),
        }
    }
}

struct Waiter<'a> {
    inner: &'a Inner,
    execution_id: u64,
    update: u64,
    replied: oneshot::Receiver<()>,
}

impl<'a> Waiter<'a> {
    fn register(inner: &'a Inner, execution_id: u64, update: u64) -> Self {
        let (tx, replied) = oneshot::channel();
        lock(&inner.update_waiters).entry(execution_id).or_default().insert(update, tx);
        Waiter { inner, execution_id, update, replied }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = lock(&self.inner.update_waiters);
        if let Some(of_execution) = waiters.get_mut(&self.execution_id) {
            of_execution.remove(&self.update);
            if of_execution.is_empty() {
                waiters.remove(&self.execution_id);
            }
        }
    }
}

fn fresh_update_id() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    // Below 2^53, so the id survives JSON readers that hold numbers as doubles.
    std::collections::hash_map::RandomState::new().hash_one((n, std::process::id())) >> 11
}
