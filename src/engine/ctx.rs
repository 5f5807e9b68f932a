//! `Ctx`: what a workflow uses for every durable operation.
//!
//! A workflow attempt runs over the journal it loaded at claim. Each operation takes the next
//! step number when it is *created* (program order), so concurrent operations number the same
//! way on every run. A step with an outcome in the journal returns it at once; a step without
//! one is recorded as new (its task is created when the attempt suspends) and blocks the
//! attempt. When the workflow future can make no more progress, the worker commits the new
//! steps in one `Suspend` and drops the future; an outcome later re-queues the workflow, which
//! runs again from the top and finds the finished steps in its journal.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use super::Inner;
use crate::api::FunctionHandle;
use crate::error::{Error, Result};
use crate::storage::records::{JournalEntry, RetryRecord, StepKind, StepOutcome};
use crate::storage::NewStep;

/// The durable context of one workflow execution. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Arc<Inner>,
    execution_id: u64,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    journal: BTreeMap<u32, JournalEntry>,
    next_step: u32,
    pub(crate) new_steps: Vec<NewStep>,
    pub(crate) awaiting: BTreeSet<u32>,
    /// Set on the first non-determinism; the attempt fails even if the workflow swallows it.
    pub(crate) nondeterminism: Option<(u32, String, String)>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("execution_id", &self.shared.execution_id).finish_non_exhaustive()
    }
}

/// The result of a durable operation: ready now, or blocked until the workflow is re-run.
pub struct Step<T> {
    ready: Option<Result<T>>,
}

impl<T> Unpin for Step<T> {}

impl<T> Future for Step<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<T>> {
        // A blocked step is never woken in this attempt: the attempt suspends and the
        // workflow runs again once the step has an outcome.
        match self.ready.take() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

impl Ctx {
    pub(crate) fn new(inner: Arc<Inner>, execution_id: u64, journal: Vec<JournalEntry>) -> Self {
        let state = State { journal: journal.into_iter().map(|e| (e.step, e)).collect(), ..State::default() };
        Ctx { shared: Arc::new(Shared { inner, execution_id, state: Mutex::new(state) }) }
    }

    pub fn execution_id(&self) -> crate::api::ExecutionId {
        crate::api::ExecutionId(self.shared.execution_id)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn take_state(&self) -> State {
        std::mem::take(&mut *self.state())
    }

    /// Calls an activity as a journaled step: it runs (with its retries) at most until one
    /// outcome is recorded, and a re-run of the workflow gets that outcome without running it.
    pub fn call<H: FunctionHandle>(&self, activity: H, input: &H::Input) -> Step<H::Output> {
        let name = activity.name();
        let mut state = self.state();
        let step = state.next_step;
        state.next_step += 1;
        let requested = StepKind::Call { function: name.to_string() };
        let ready = match state.journal.get(&step) {
            Some(entry) if entry.kind != requested => {
                let recorded = entry.kind.to_string();
                state.nondeterminism.get_or_insert((step, recorded.clone(), requested.to_string()));
                Some(Err(Error::NonDeterminism { step, recorded, requested: requested.to_string() }))
            }
            Some(entry) => match &entry.outcome {
                StepOutcome::Completed { output } => Some(decode::<H::Output>(name, output)),
                StepOutcome::Failed { error } => {
                    Some(Err(Error::StepFailed { step, function: name.to_string(), error: error.clone() }))
                }
                StepOutcome::Scheduled { .. } => {
                    state.awaiting.insert(step);
                    None
                }
            },
            None => match self.new_call(step, name, input) {
                Ok(new) => {
                    state.new_steps.push(new);
                    state.awaiting.insert(step);
                    None
                }
                Err(e) => Some(Err(e)),
            },
        };
        Step { ready }
    }

    fn new_call<I: serde::Serialize>(&self, step: u32, name: &str, input: &I) -> Result<NewStep> {
        let inner = &self.shared.inner;
        let function = inner.registry.require(name)?;
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: name.to_string(), reason: e.to_string() })?;
        if input.len() as u64 > inner.payload_bytes_max {
            return Err(Error::PayloadTooLarge { bytes: input.len() as u64, limit: inner.payload_bytes_max });
        }
        Ok(NewStep {
            step,
            kind: StepKind::Call { function: name.to_string() },
            function: name.to_string(),
            queue: function.queue.clone(),
            priority: function.priority,
            input,
            retry: RetryRecord::from(&function.retry),
            timeout_ms: function.timeout.map(crate::storage::records::duration_ms),
        })
    }
}

fn decode<T: DeserializeOwned>(function: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Payload {
        function: function.to_string(),
        reason: format!("recorded result does not decode: {e}"),
    })
}
