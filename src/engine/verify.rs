//! The pre-deploy replay check: every workflow execution still in flight, replayed over its
//! journal against the code registered in this engine, with no effect. Nothing runs (no
//! activity, no timer, no new step is built: a step the journal does not hold only marks
//! where the replay stops), nothing is written, and on an engine opened with
//! `EngineBuilder::read_only(true)` the file is not even opened for writing. Point it at a
//! copy of production data in CI before deploying new workflow code.

use serde::Serialize;

use super::registry::Handler;
use super::{Ctx, Engine};
use crate::api::{ExecutionFilter, ExecutionId, ExecutionState, Page};
use crate::error::Result;
use crate::storage::records::TaskKind;

/// How one execution's journal replays against the registered code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayCheck {
    pub id: ExecutionId,
    pub function: String,
    /// Journal steps the replay went through before it stopped (at the journal's end, at a
    /// step still waiting for its outcome, or at the divergence).
    pub steps_replayed: u32,
    pub outcome: ReplayOutcome,
}

impl ReplayCheck {
    /// Whether the new code can take this execution over.
    pub fn ok(&self) -> bool {
        self.outcome == ReplayOutcome::Clean
    }

    /// The first step where the code asks for something else than the journal recorded.
    pub fn diverging_step(&self) -> Option<u32> {
        match &self.outcome {
            ReplayOutcome::Diverged { step, .. } => Some(*step),
            _ => None,
        }
    }
}

/// See [`ReplayCheck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// Every recorded step is asked for again, in order, as it was recorded.
    Clean,
    /// At `step` the journal recorded `recorded`, the code asks for `requested` (or ends, or
    /// waits elsewhere, said in words).
    Diverged { step: u32, recorded: String, requested: String },
    /// The execution's workflow is not registered in this engine.
    NotRegistered,
    /// The workflow code failed while replaying (a panic, an error it raised on a recorded
    /// outcome is not one: that is the same on every replay). The reason in words.
    Failed { reason: String },
}

impl Engine {
    /// Replays every pending or running workflow execution's journal against the workflows
    /// registered in this engine, with no side effect (see the module docs), and reports,
    /// oldest first, whether each replays cleanly or the first step that diverges.
    pub async fn verify_replay(&self) -> Result<Vec<ReplayCheck>> {
        let store = self.inner.store()?;
        let mut ids = Vec::new();
        for state in [ExecutionState::Pending, ExecutionState::Running] {
            let filter = ExecutionFilter { state: Some(state), ..ExecutionFilter::default() };
            let mut page = Page { limit: 1_000, before: None };
            loop {
                let records = store.list_executions(&filter, &page)?;
                let Some(last) = records.last() else { break };
                page.before = Some(ExecutionId(last.id));
                ids.extend(records.iter().map(|r| r.id));
            }
        }
        ids.sort_unstable();
        let mut checks = Vec::with_capacity(ids.len());
        for id in ids {
            let Some((exec, task)) = store.execution(id)? else { continue };
            if task.kind != TaskKind::Workflow {
                continue;
            }
            let journal = store.journal(id)?;
            let handler = match self.inner.registry.get(&exec.function).map(|f| &f.handler) {
                Some(Handler::Workflow(handler)) => handler.clone(),
                _ => {
                    checks.push(ReplayCheck {
                        id: ExecutionId(id),
                        function: exec.function,
                        steps_replayed: 0,
                        outcome: ReplayOutcome::NotRegistered,
                    });
                    continue;
                }
            };
            let ctx = Ctx::verifying(self.inner.clone(), id, exec.queue.clone(), journal);
            let (steps_replayed, outcome) = replay(handler(ctx.clone(), task.input), ctx).await;
            checks.push(ReplayCheck { id: ExecutionId(id), function: exec.function, steps_replayed, outcome });
        }
        Ok(checks)
    }
}

/// Polls the workflow until it finishes or blocks (as the worker's driver does), in a task
/// of its own so a panic in user code is a report, then compares what it asked for with the
/// journal.
async fn replay(future: super::registry::WorkflowFuture, ctx: Ctx) -> (u32, ReplayOutcome) {
    let polled = tokio::spawn(async move {
        let mut future = future;
        super::worker::poll_until_blocked(&mut future).await.is_some()
    })
    .await;
    let super::ctx::ReplayPosition { next_step, recorded, nondeterminism } = ctx.replay_position();
    let finished = match polled {
        Ok(finished) => finished,
        Err(e) => {
            let reason = if e.is_panic() { "the workflow panicked while replaying" } else { "replay cancelled" };
            return (next_step, ReplayOutcome::Failed { reason: reason.to_string() });
        }
    };
    if let Some((step, recorded, requested)) = nondeterminism {
        return (step, ReplayOutcome::Diverged { step, recorded, requested });
    }
    // Steps the journal holds that the code never asked for.
    if let Some((step, kind)) = recorded.iter().find(|&(step, _)| *step >= next_step).cloned() {
        let requested = if finished {
            "the workflow's end".to_string()
        } else {
            format!("nothing: the workflow waits at step {}", next_step.saturating_sub(1))
        };
        return (step, ReplayOutcome::Diverged { step, recorded: kind, requested });
    }
    let replayed = recorded.iter().filter(|(step, _)| *step < next_step).count();
    (u32::try_from(replayed).unwrap_or(u32::MAX), ReplayOutcome::Clean)
}
