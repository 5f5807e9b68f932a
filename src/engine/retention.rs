//! Retention: removing what finished long ago, on demand and on a schedule.

use std::sync::Arc;
use std::time::Duration;

use super::{Engine, Inner, CLEANUP_BUDGET};
use crate::api::{CleanupReport, DurationArg};
use crate::error::Error;
use crate::error::Result;
use crate::storage::records::duration_ms;
use crate::storage::{CleanupCursor, CleanupParts, Op, OpOutput};

impl Engine {
    /// Removes finished executions (completed, failed, timed out, cancelled) that ended more
    /// than `older_than` ago, each with all its records (tasks, journal, signals, counters,
    /// state; its idempotency key becomes free), dead letters from before then, and expired
    /// cache entries. Work goes on meanwhile: the removal is split into small transactions.
    /// redb reuses the freed pages for later writes; the file itself does not shrink.
    pub async fn cleanup(&self, older_than: impl Into<DurationArg>) -> Result<CleanupReport> {
        self.inner.cleanup(older_than.into().get()?, CleanupParts::ALL).await
    }

    /// [`Engine::cleanup`] of some kinds of record only. Removing executions also removes the
    /// dead letters from before the cutoff, which refer to them.
    pub async fn cleanup_parts(
        &self,
        older_than: impl Into<DurationArg>,
        parts: CleanupParts,
    ) -> Result<CleanupReport> {
        self.inner.cleanup(older_than.into().get()?, parts).await
    }

    /// What [`Engine::cleanup`] would remove now, removing nothing (a dry run).
    pub fn cleanup_preview(&self, older_than: impl Into<DurationArg>) -> Result<CleanupReport> {
        self.cleanup_preview_parts(older_than, CleanupParts::ALL)
    }

    /// What [`Engine::cleanup_parts`] would remove now, removing nothing.
    pub fn cleanup_preview_parts(
        &self,
        older_than: impl Into<DurationArg>,
        parts: CleanupParts,
    ) -> Result<CleanupReport> {
        let cutoff_ms = self.inner.cutoff_ms(older_than.into().get()?);
        let all = self.inner.store()?.cleanup_preview(self.inner.clock.now_ms(), cutoff_ms)?;
        Ok(CleanupReport {
            executions: if parts.executions { all.executions } else { 0 },
            dead_letters: if parts.dead_letters || parts.executions { all.dead_letters } else { 0 },
            cache_entries: if parts.cache { all.cache_entries } else { 0 },
            rate_budgets: if parts.cache { all.rate_budgets } else { 0 },
        })
    }
}

impl Inner {
    /// Removes what ended before `now - older_than`, a budget per transaction.
    pub(super) async fn cleanup(&self, older_than: Duration, parts: CleanupParts) -> Result<CleanupReport> {
        let cutoff_ms = self.cutoff_ms(older_than);
        let mut total = CleanupReport::default();
        let mut from = Some(CleanupCursor::DeadLetters);
        while let Some(at) = from {
            match self.submit(Op::Cleanup { cutoff_ms, budget: CLEANUP_BUDGET, from: at, parts }).await? {
                OpOutput::Cleaned { removed, next } => {
                    total += removed;
                    from = next;
                }
                other => return Err(Error::Internal(format!("unexpected answer to a cleanup: {other:?}"))),
            }
        }
        Ok(total)
    }

    /// Retention keeps what ended at or after this time.
    pub(super) fn cutoff_ms(&self, older_than: Duration) -> u64 {
        self.clock.now_ms().saturating_sub(duration_ms(older_than))
    }

    /// The retention loop (`EngineBuilder::retention`): a cleanup at open, then every period
    /// (at most every hour) on a schedule anchored at `anchor_ms` (the open), so a loop that
    /// starts or runs late still wakes when the clock passes the next multiple.
    pub(super) async fn retain(self: Arc<Self>, period: Duration, anchor_ms: u64) {
        let interval_ms = duration_ms(period).clamp(1_000, 3_600_000);
        let mut shutdown = self.shutdown.subscribe();
        loop {
            match self.cleanup(period, CleanupParts::ALL).await {
                Ok(r) if r == CleanupReport::default() => {}
                Ok(r) => tracing::info!(
                    executions = r.executions,
                    dead_letters = r.dead_letters,
                    cache_entries = r.cache_entries,
                    "retention cleanup"
                ),
                Err(Error::Shutdown) => return,
                Err(e) => tracing::warn!(error = %e, "retention cleanup failed"),
            }
            let since = self.clock.now_ms().saturating_sub(anchor_ms);
            let next = anchor_ms.saturating_add((since / interval_ms + 1).saturating_mul(interval_ms));
            tokio::select! {
                _ = self.clock.sleep_until(next) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}
