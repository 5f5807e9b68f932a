//! `Step`: the future of one journaled operation, ready now or blocked until the journal
//! holds its outcome.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Ctx;
use crate::error::{Error, Result};
use crate::storage::records::StepOutcome;

/// The result of a durable operation: ready now, or blocked until its outcome is recorded.
pub struct Step<T> {
    pub(super) ready: Option<Result<T>>,
    /// A step without an outcome yet: where to look for it when polled again. A blocked step
    /// never wakes its task; the attempt suspends, and the outcome reaches this future only
    /// if the workflow stayed parked in memory (`EngineBuilder::evict_after`) and resumes
    /// with a journal that holds it.
    pub(super) pending: Option<Pending<T>>,
    /// Its journal step (`None` for an operation refused before it took one).
    pub(super) number: Option<u32>,
}

pub(super) struct Pending<T> {
    pub(super) ctx: Ctx,
    pub(super) step: u32,
    pub(super) what: String,
    pub(super) decode: fn(&str, &[u8]) -> Result<T>,
}

impl<T> Step<T> {
    pub(super) fn done(result: Result<T>) -> Self {
        Step { ready: Some(result), pending: None, number: None }
    }

    /// The outcome if the journal has it (taken out of the step), else `None` with the step
    /// noted as awaited: the attempt suspends on it if nothing else can go on.
    pub(super) fn check(&mut self) -> Option<Result<T>> {
        if let Some(result) = self.ready.take() {
            return Some(result);
        }
        let p = self.pending.as_ref()?;
        let mut state = p.ctx.journal_state();
        let result = match state.journal.get(&p.step).map(|e| &e.outcome) {
            Some(StepOutcome::Completed { output }) => (p.decode)(&p.what, output),
            Some(StepOutcome::Failed { error }) => Err(step_error(&p.ctx, p.step, &p.what, error)),
            _ => {
                state.awaiting.insert(p.step);
                return None;
            }
        };
        drop(state);
        self.pending = None;
        Some(result)
    }
}

impl<T> Unpin for Step<T> {}

impl<T> Future for Step<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<T>> {
        // Blocked on this step (`None`): the attempt suspends until it has an outcome.
        match self.check() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

/// What awaiting a failed step gives: `Error::Cancelled` for a step cancelled with its
/// execution (a graceful cancel), else the step's failure.
pub(super) fn step_error(ctx: &Ctx, step: u32, what: &str, error: &crate::api::ActivityError) -> Error {
    if error.code.as_deref() == Some(crate::storage::records::EXECUTION_CANCELLED) {
        return Error::Cancelled(crate::api::ExecutionId(ctx.shared.execution_id));
    }
    Error::StepFailed { step, function: what.to_string(), error: error.clone() }
}
