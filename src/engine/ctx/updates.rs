//! The workflow's side of updates (`Engine::update`): wait for a request, answer it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Ctx, Step};
use crate::storage::records::{reply_key, update_signal};

/// A request sent with `Engine::update`, as `Ctx::wait_for_update` gives it: answer it with
/// `Ctx::reply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update<P> {
    /// Which request this is (the reply is stored under it).
    #[serde(rename = "update")]
    pub id: u64,
    pub payload: P,
}

impl Ctx {
    /// Waits for the next update named `name` (`Engine::update`), oldest first; requests
    /// sent before the workflow waits are queued in its mailbox. Journaled like a signal wait.
    pub fn wait_for_update<P: DeserializeOwned>(&self, name: &str) -> Step<Update<P>> {
        self.wait_for_signal(&update_signal(name))
    }

    /// Answers `update` with `value`: a journaled step whose commit hands the reply to the
    /// caller of `Engine::update` (kept in the execution's custom state). A re-run does not
    /// answer again.
    ///
    /// ```
    /// # use stent::{Ctx, Workflow};
    /// const ACCOUNT: Workflow<i64, i64> = Workflow::new("account");
    ///
    /// async fn account(ctx: Ctx, mut balance: i64) -> stent::Result<i64> {
    ///     loop {
    ///         let deposit = ctx.wait_for_update::<i64>("deposit").await?;
    ///         balance += deposit.payload;
    ///         ctx.reply(&deposit, &balance).await?;
    ///         if deposit.payload == 0 {
    ///             return Ok(balance);
    ///         }
    ///     }
    /// }
    /// # let _ = stent::Engine::builder().workflow(ACCOUNT, account);
    /// ```
    pub fn reply<P, R: Serialize>(&self, update: &Update<P>, value: &R) -> Step<()> {
        self.state(&reply_key(update.id)).set(value)
    }
}
