//! Acting on a running engine: cancel, signal, worker pools, checks, and `close`.

use std::sync::Arc;

use serde::Serialize;

use super::clock::Clock;
use super::worker::{self, WorkerPool};

use super::{lock, unexpected, Engine, Stats};
use crate::api::{ExecutionId, ExecutionState, WorkerOptions};
use crate::error::{Error, Result};
use crate::storage::{Faults, Op, OpOutput};

impl Engine {
    /// Cancels a pending or running execution: its task is cancelled, its running future
    /// aborted, and nothing it does completes afterwards. Returns the state after the call
    /// (a terminal execution is left as it is). A workflow registered here with
    /// `FunctionOptions::cancel_grace` is cancelled gracefully instead: its open steps are
    /// cancelled, the one it awaits returns `Error::Cancelled`, and it may run compensating
    /// steps until it returns or the grace runs out (the state stays `running` meanwhile); a
    /// second `cancel`, or `cancel_now`, ends it at once.
    pub async fn cancel(&self, id: ExecutionId) -> Result<ExecutionState> {
        let store = self.inner.store()?;
        let Some((exec, _)) = store.execution(id.0)? else { return Err(Error::UnknownExecution(id)) };
        let grace = self.inner.registry.get(&exec.function).and_then(|f| match f.handler {
            super::registry::Handler::Workflow(_) => f.cancel_grace,
            super::registry::Handler::Activity(_) => None,
        });
        let op = match grace {
            Some(grace) => {
                Op::RequestCancel { execution_id: id.0, grace_ms: crate::storage::records::duration_ms(grace) }
            }
            None => Op::Cancel { execution_id: id.0 },
        };
        match self.inner.submit(op).await? {
            OpOutput::State(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Ends the execution at once, cancelled, with its live tasks and children, whatever its
    /// `cancel_grace` (a workflow compensating after a cancel is stopped where it stands).
    pub async fn cancel_now(&self, id: ExecutionId) -> Result<ExecutionState> {
        match self.inner.submit(Op::Cancel { execution_id: id.0 }).await? {
            OpOutput::State(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Sends a signal to a running workflow execution: the oldest `wait_for_signal(name)`
    /// waiting gets it, or it is kept (in order) until one asks. An unknown or finished
    /// execution is an error.
    pub async fn send_signal<T: Serialize>(&self, id: ExecutionId, name: &str, payload: &T) -> Result<()> {
        let payload = serde_json::to_vec(payload)
            .map_err(|e| Error::Payload { function: format!("signal {name:?}"), reason: e.to_string() })?;
        self.check_payload(&payload)?;
        self.inner.submit(Op::Signal { execution_id: id.0, name: name.to_string(), payload }).await.map(|_| ())
    }

    /// Starts a pool of workers in this process. Fails with [`Error::InvalidOptions`] when
    /// the options cannot work (see [`WorkerOptions::validate`]).
    pub fn serve(&self, options: WorkerOptions) -> Result<WorkerPool> {
        worker::start(self.inner.clone(), options)
    }

    /// Claim loops waiting idle now (each may be handed a task by a dispatch).
    #[doc(hidden)]
    pub fn idle_workers(&self) -> usize {
        lock(&self.inner.idle).len()
    }

    /// Verifies every record and index; returns the problems found (empty when consistent).
    pub fn check(&self) -> Result<Vec<String>> {
        Ok(self.inner.store()?.check()?)
    }

    /// Whether nothing can happen without the clock moving or a signal arriving: no task
    /// ready, none running, no timer due.
    pub fn is_idle(&self) -> Result<bool> {
        let (ready, running, due) = self.inner.store()?.pending_work(self.inner.clock.now_ms())?;
        Ok(ready == 0 && running == 0 && due == 0)
    }

    /// Why the engine refuses writes, if a commit failed.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.inner.poisoned).clone()
    }

    /// What the engine did since it was opened (a snapshot).
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot()
    }

    /// Blocked workflow futures kept in memory now (see [`EngineBuilder::evict_after`]).
    pub fn parked_workflows(&self) -> usize {
        self.inner.parked.len()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// The seed of the jitter RNG (print it when a test fails to reproduce the run).
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    #[doc(hidden)]
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Stops everything now and releases the database file. Attempts still running are
    /// aborted and stay leased on disk, so the next open re-queues them (counting the
    /// attempt), exactly as after a crash. Drain worker pools first for a clean stop.
    pub async fn close(&self) -> Result<()> {
        self.inner.shutdown.send_replace(true);
        // The socket goes first, while this engine still holds the file: a successor that
        // opens the file next binds its own socket, which nothing of ours may then remove.
        #[cfg(all(unix, not(loom)))]
        if let Some(socket) = lock(&self.inner.control_socket).take() {
            socket.stop();
        }
        // `shutdown` is raised first; an attempt registering its future checks it under the
        // same lock, so no attempt can start user code after this point (a claim still queued
        // in the writer may commit, but its future is aborted before its first poll).
        for running in lock(&self.inner.running).values_mut() {
            running.aborted = true;
            if let Some(abort) = &running.abort {
                abort.abort();
            }
        }
        // Idle registrations hold their pools, parked futures their `Ctx` (and so the engine):
        // drop them with the engine.
        lock(&self.inner.idle).clear();
        drop(self.inner.parked.drain());
        self.inner.spans.clear();
        drop(lock(&self.inner.tx).take());
        let thread = lock(&self.inner.writer_thread).take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|_| Error::Shutdown)?
                .map_err(|_| Error::Internal("the writer thread panicked".into()))?;
        }
        let store = self.inner.store.write().unwrap_or_else(|p| p.into_inner()).take();
        // The file is released when the last handle on the store drops; an attempt or a read
        // finishing meanwhile may still hold one for a moment. Wait (bounded) so that a
        // reopen right after `close` does not meet the file still open.
        if let Some(store) = store {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            drop(store);
        }
        Ok(())
    }
}
