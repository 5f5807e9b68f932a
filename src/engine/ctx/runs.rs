//! Runs: `Ctx::continue_as_new` ends the execution's current run and starts the next one
//! (same execution id, run number + 1, an empty journal, the signals not yet taken carried
//! over), so a workflow that loops forever keeps a bounded journal.

use super::Ctx;
use crate::error::{Error, NextRun, Result};

impl Ctx {
    /// Ends this run and starts the next run of the same execution with `input`: return it
    /// from the workflow (`return ctx.continue_as_new(&next)`). The next run replays nothing
    /// of this one: it starts with an empty journal, under the code registered now (its
    /// version), and takes the signals this run left in the mailbox. Steps this run started
    /// and did not await are cancelled with it (its awaited children too; detached children
    /// go on). Counters and custom state belong to the execution and carry over. This run's
    /// journal is kept for inspection (`Engine::runs`, `Engine::run_steps`): the latest
    /// `EngineBuilder::runs_kept` runs, until retention removes the execution.
    ///
    /// `input` must be of the workflow's input type; one that does not decode as it fails the
    /// execution (code `bad_input`) rather than starting a run that cannot.
    ///
    /// ```
    /// # use stent::{Ctx, Workflow};
    /// const POLL: Workflow<u64, ()> = Workflow::new("poll");
    ///
    /// async fn poll(ctx: Ctx, round: u64) -> stent::Result<()> {
    ///     ctx.sleep("1m").await?;
    ///     // ... one round of work ...
    ///     ctx.continue_as_new(&(round + 1))
    /// }
    /// # let _ = stent::Engine::builder().workflow(POLL, poll);
    /// ```
    pub fn continue_as_new<T>(&self, input: &impl serde::Serialize) -> Result<T> {
        let inner = &self.shared.inner;
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: "continue_as_new".to_string(), reason: e.to_string() })?;
        if input.len() as u64 > inner.payload_bytes_max {
            return Err(Error::PayloadTooLarge { bytes: input.len() as u64, limit: inner.payload_bytes_max });
        }
        Err(Error::ContinueAsNew(NextRun { input }))
    }
}
