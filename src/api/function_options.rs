//! Options of one registered function, given as a value with its registration
//! (`EngineBuilder::activity_with`, `workflow_with`): the twin of `CallOptions`, which
//! overrides some of them for one call.

use super::{DurationArg, RetryPolicy};

/// How a function runs by default. Every option has a default; set only what differs.
///
/// ```
/// use stent::{FunctionOptions, RetryPolicy};
/// use std::time::Duration;
///
/// let options = FunctionOptions::new()
///     .retry(RetryPolicy::exponential(5, Duration::from_secs(1)))
///     .max_concurrent(5)
///     .timeout("30s");
/// ```
#[derive(Debug, Clone, Default)]
pub struct FunctionOptions {
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) max_concurrent: u32,
    pub(crate) queue: Option<String>,
    pub(crate) priority: i32,
    pub(crate) timeout: Option<DurationArg>,
    pub(crate) cached: Option<DurationArg>,
    pub(crate) version: Option<u32>,
    pub(crate) cancel_grace: Option<DurationArg>,
    pub(crate) rate_limit: Option<(u32, DurationArg)>,
    pub(crate) rate_limit_per_key: Option<(u32, DurationArg)>,
    pub(crate) max_concurrent_per_key: u32,
}

impl FunctionOptions {
    pub fn new() -> Self {
        FunctionOptions::default()
    }

    /// Retry policy of failed attempts. Default: an activity's is `RetryPolicy::default()`; a
    /// workflow's retries only attempts lost to a crash or an expired lease (3 in a row),
    /// since the errors it returns itself are permanent.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// At most `n` attempts of this function run at once across all workers (`0`, the
    /// default: no limit).
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = n;
        self
    }

    /// At most `per` attempts of this function start in any `period` (bursts of up to `per`),
    /// across restarts: the budget is kept in the file. A task over the limit waits on a timer
    /// for the slot reserved for it; nothing polls. (For a workflow, each attempt counts,
    /// including its re-runs after a wait: limit the activities it calls instead.)
    pub fn rate_limit(mut self, per: u32, period: impl Into<DurationArg>) -> Self {
        self.rate_limit = Some((per, period.into()));
        self
    }

    /// Like `rate_limit`, per rate key: the executions dispatched with the same
    /// `DispatchBuilder::rate_key` (a customer, say) share one budget of `per` starts in any
    /// `period`.
    pub fn rate_limit_per_key(mut self, per: u32, period: impl Into<DurationArg>) -> Self {
        self.rate_limit_per_key = Some((per, period.into()));
        self
    }

    /// At most `n` executions of this function dispatched with the same
    /// `DispatchBuilder::concurrency_key` run at once (from their first claim to their end, a
    /// workflow's waits included); the others wait, pending, for one to end. `0`, the default:
    /// no limit.
    pub fn max_concurrent_per_key(mut self, n: u32) -> Self {
        self.max_concurrent_per_key = n;
        self
    }

    /// Queue its tasks go to (default `"default"`).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Higher runs first (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Each attempt may run this long before it fails as retryable (code `timeout`). Default:
    /// no limit.
    pub fn timeout(mut self, timeout: impl Into<DurationArg>) -> Self {
        self.timeout = Some(timeout.into());
        self
    }

    /// Reuses this function's result across executions for `ttl`: a call or dispatch with the
    /// same input (and `version`) gets the stored result without running. Bounded by
    /// `EngineBuilder::cache_entries_max`; expired entries are removed as new ones come in.
    pub fn cached(mut self, ttl: impl Into<DurationArg>) -> Self {
        self.cached = Some(ttl.into());
        self
    }

    /// For a workflow: `Engine::cancel` lets it compensate. The step it awaits (and every
    /// other open step) is cancelled and returns `Error::Cancelled`; the steps it takes from
    /// there (undoing what it did, a saga) run normally, and it ends cancelled when it
    /// returns that error, or at the latest `grace` after the cancel. Without it (the default)
    /// a cancel ends the execution at once, as `Engine::cancel_now` always does.
    pub fn cancel_grace(mut self, grace: impl Into<DurationArg>) -> Self {
        self.cancel_grace = Some(grace.into());
        self
    }

    /// The version of this function's code (default 1). Every execution and task records the
    /// version it started under, and an engine whose registration is older does not run it
    /// (it stays pending, counted by `Engine::unserved_work`): rolling a deploy back leaves
    /// what newer code started alone. Also part of cache keys: bump it when results change.
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }
}
