//! Retention: what ended before a cutoff is removed, a budget per op, in an order that never
//! leaves a live record referring to a removed one.

use super::*;
use crate::api::CleanupReport;
use crate::storage::op::{CleanupCursor, CleanupParts, TERMINAL_STATES};

pub enum Retention {
    Remove,
    Keep,
    /// Created at or after the cutoff: so is every execution with a larger id (ids follow
    /// creation), and none of them can have ended before it.
    NewerFromHere,
}

pub fn retention(exec: &ExecutionRecord, cutoff_ms: u64) -> Retention {
    if exec.created_ms >= cutoff_ms {
        Retention::NewerFromHere
    } else if exec.state.is_terminal() && exec.finished_ms.is_some_and(|f| f < cutoff_ms) {
        Retention::Remove
    } else {
        Retention::Keep
    }
}

impl<R: Records> Batch<'_, R> {
    /// One step of a retention cleanup (see `Op::Cleanup`). Order matters: an execution's
    /// dead letters are never newer than its end, so by the time an execution is removed its
    /// dead letters (older than the same cutoff) already are; and a child ends no later than
    /// its parent, so no removed execution is still referred to by a live one.
    pub(super) fn cleanup(
        &mut self,
        cutoff_ms: u64,
        budget: u32,
        from: CleanupCursor,
        parts: CleanupParts,
    ) -> OpRes<OpOutput> {
        let mut removed = CleanupReport::default();
        let mut left = budget.max(1) as usize;
        let mut at = from;
        loop {
            match at {
                CleanupCursor::DeadLetters if !(parts.dead_letters || parts.executions) => at = CleanupCursor::Cache,
                CleanupCursor::Cache if !parts.cache => at = CleanupCursor::Executions { state: 0, after: 0 },
                CleanupCursor::Executions { .. } if !parts.executions => {
                    return Ok(Ok(OpOutput::Cleaned { removed, next: None }));
                }
                CleanupCursor::DeadLetters => {
                    let letters = self.r.dead_letters_before(cutoff_ms, left)?;
                    for &(failed_ms, id) in &letters {
                        self.r.remove_dead_letter(id, failed_ms)?;
                    }
                    removed.dead_letters += letters.len() as u64;
                    left -= letters.len();
                    if left == 0 {
                        return Ok(Ok(OpOutput::Cleaned { removed, next: Some(at) }));
                    }
                    at = CleanupCursor::Cache;
                }
                CleanupCursor::Cache => {
                    let victims = self.r.cache_by_expiry(Some(self.now), left)?;
                    self.remove_cache_entries(&victims)?;
                    removed.cache_entries += victims.len() as u64;
                    left -= victims.len();
                    // A budget whose theoretical arrival time has passed is a full one: the
                    // same as none (`flow.rs`), so removing it changes no claim.
                    let full = self.r.prune_rate_budgets(self.now, left)?;
                    removed.rate_budgets += full;
                    left -= full as usize;
                    if left == 0 {
                        return Ok(Ok(OpOutput::Cleaned { removed, next: Some(at) }));
                    }
                    at = CleanupCursor::Executions { state: 0, after: 0 };
                }
                CleanupCursor::Executions { state, after } => {
                    let Some(&exec_state) = TERMINAL_STATES.get(state) else {
                        return Ok(Ok(OpOutput::Cleaned { removed, next: None }));
                    };
                    let ids = self.r.executions_in_state(exec_state, after, left)?;
                    let mut last = after;
                    let mut done_with_state = ids.len() < left;
                    for id in ids {
                        left -= 1;
                        last = id;
                        // An unreadable record stays (for `check` to report); the rest go on.
                        let Ok(Some(exec)) = soft(self.r.execution(id))? else { continue };
                        match retention(&exec, cutoff_ms) {
                            Retention::Remove => {
                                self.r.remove_execution(&exec)?;
                                removed.executions += 1;
                            }
                            Retention::Keep => {}
                            Retention::NewerFromHere => {
                                done_with_state = true;
                                break;
                            }
                        }
                    }
                    at = if done_with_state {
                        CleanupCursor::Executions { state: state + 1, after: 0 }
                    } else {
                        CleanupCursor::Executions { state, after: last }
                    };
                    if left == 0 {
                        let more = match at {
                            CleanupCursor::Executions { state, .. } => state < TERMINAL_STATES.len(),
                            CleanupCursor::DeadLetters | CleanupCursor::Cache => true,
                        };
                        return Ok(Ok(OpOutput::Cleaned { removed, next: more.then_some(at) }));
                    }
                }
            }
        }
    }
}
