//! Driving a workflow attempt: poll its future until it finishes or blocks on journal steps
//! without outcomes, and say how the attempt ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use crate::api::ActivityError;
use crate::engine::registry::WorkflowFuture;
use crate::engine::Ctx;
use crate::error::Error;
use crate::storage::{Local, NewStep, StepBody};

/// The error code of an attempt that asked for another step than its journal recorded.
pub(super) const NON_DETERMINISM: &str = "non_determinism";

/// How an attempt ended.
pub(super) enum Outcome {
    Output {
        output: Vec<u8>,
        local: Local,
    },
    Error(ActivityError),
    /// A workflow returned `Ctx::continue_as_new`: its next run starts with `input`.
    ContinueAsNew {
        input: Vec<u8>,
        local: Local,
    },
    /// A workflow is blocked on steps without outcomes.
    Suspend {
        steps: Vec<NewStep>,
        awaiting: Vec<u32>,
        /// The blocked future, to park once the suspension is committed.
        keep: Option<(WorkflowFuture, Ctx)>,
        earliest_wake_ms: u64,
    },
}

/// Runs a workflow attempt until it finishes or can make no more progress. Durable steps
/// without an outcome never wake the future, so "pending and not woken" means blocked on the
/// journal: the attempt suspends, handing back the future so it may be parked. A wake-up from
/// anything else (a combinator re-polling its children) is honoured by polling again.
pub(super) async fn drive_workflow(mut future: WorkflowFuture, ctx: Ctx) -> Outcome {
    let result = poll_until_blocked(&mut future).await;
    let state = ctx.take_suspension();
    if let Some((step, recorded, requested)) = state.nondeterminism {
        let error = Error::NonDeterminism { step, recorded, requested };
        return Outcome::Error(ActivityError::permanent(error.to_string()).with_code(NON_DETERMINISM));
    }
    // Local steps since the last suspension commit with the run's end.
    let local = |new_steps: Vec<NewStep>| {
        let steps = new_steps
            .into_iter()
            .filter(|s| {
                matches!(
                    s.body,
                    StepBody::Recorded(_)
                        | StepBody::Counter { .. }
                        | StepBody::SetState { .. }
                        | StepBody::GetState { .. }
                        | StepBody::Race { .. }
                        | StepBody::Cancel { .. }
                )
            })
            .collect();
        Local { steps, ..Local::default() }
    };
    match result {
        Some(Ok(output)) => Outcome::Output { output, local: local(state.new_steps) },
        Some(Err(Error::ContinueAsNew(next))) => {
            Outcome::ContinueAsNew { input: next.input, local: local(state.new_steps) }
        }
        Some(Err(error)) => Outcome::Error(workflow_error(&error)),
        None if state.awaiting.is_empty() => Outcome::Error(
            ActivityError::permanent("the workflow awaited something that is not a stent operation")
                .with_code("blocked_outside_stent"),
        ),
        None => Outcome::Suspend {
            steps: state.new_steps,
            awaiting: state.awaiting,
            keep: Some((future, ctx)),
            earliest_wake_ms: state.earliest_wake_ms,
        },
    }
}

/// Polls a workflow future until it finishes (`Some`) or is pending without having been woken
/// (`None`): blocked on journal steps, or on something that is not a stent operation.
pub(in crate::engine) async fn poll_until_blocked(future: &mut WorkflowFuture) -> Option<Result<Vec<u8>, Error>> {
    let woken = Arc::new(WakeFlag(AtomicBool::new(false)));
    let waker = Waker::from(woken.clone());
    loop {
        woken.0.store(false, Ordering::SeqCst);
        // The poll's `Context` is not `Send`: dropped before any await.
        let poll = future.as_mut().poll(&mut std::task::Context::from_waker(&waker));
        match poll {
            Poll::Ready(result) => return Some(result),
            Poll::Pending if woken.0.load(Ordering::SeqCst) => tokio::task::yield_now().await,
            Poll::Pending => return None,
        }
    }
}

pub(super) fn workflow_error(error: &Error) -> ActivityError {
    match error {
        Error::StepFailed { error, .. } => error.clone(),
        Error::NonDeterminism { .. } => ActivityError::permanent(error.to_string()).with_code(NON_DETERMINISM),
        Error::Cancelled(_) => {
            ActivityError::permanent(error.to_string()).with_code(crate::storage::records::EXECUTION_CANCELLED)
        }
        other => ActivityError::permanent(other.to_string()).with_code("workflow_error"),
    }
}

struct WakeFlag(AtomicBool);

impl std::task::Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub(super) fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into()),
        Err(e) => e.to_string(),
    }
}
