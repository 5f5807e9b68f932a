//! What the engine reports through the `metrics` facade (names and meanings in
//! docs/operations.md). Free when no recorder is installed: each macro is a check of a global
//! pointer. Labels are bounded: a function name (registered, so finite), a queue name (as
//! many as the application uses), an outcome from a fixed set; never an execution or task id.
//! Gauges describe the engine in this process.

use std::time::Duration;

/// A committed batch: its size and how long the transaction and its fsync took.
pub(super) fn commit(ops: usize, took: Duration) {
    metrics::counter!("stent_commits_total").increment(1);
    metrics::histogram!("stent_commit_batch_ops").record(ops as f64);
    metrics::histogram!("stent_commit_seconds").record(took.as_secs_f64());
}

pub(super) fn commit_failed() {
    metrics::counter!("stent_commit_failures_total").increment(1);
}

/// An attempt started (its claim is durable).
pub(super) fn claim(function: &'static str) {
    metrics::counter!("stent_claims_total", "function" => function).increment(1);
}

/// An attempt's outcome was committed: `completed`, `suspended` (a workflow blocked on its
/// steps) or `failed` (retried or dead-lettered), and how long the attempt ran.
pub(super) fn attempt(function: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!("stent_attempts_total", "function" => function, "outcome" => outcome).increment(1);
    metrics::histogram!("stent_attempt_seconds", "function" => function).record(took.as_secs_f64());
}

pub(super) fn lease_renewals(n: u64) {
    metrics::counter!("stent_lease_renewals_total").increment(n);
}

pub(super) fn lease_lost() {
    metrics::counter!("stent_leases_lost_total").increment(1);
}

/// A dispatch was committed: a new execution (`created`) or the one its idempotency key
/// already named (`existing`).
pub(super) fn dispatch(function: &'static str, created: bool) {
    let outcome = if created { "created" } else { "existing" };
    metrics::counter!("stent_dispatches_total", "function" => function, "outcome" => outcome).increment(1);
}

/// A failed attempt was re-queued to run again.
pub(super) fn retry(function: &'static str) {
    metrics::counter!("stent_retries_total", "function" => function).increment(1);
}

/// An execution failed into the dead-letter queue, whatever the cause.
pub(super) fn dead_letter(function: String) {
    metrics::counter!("stent_dead_letters_total", "function" => function).increment(1);
}

/// A claim over `function`'s rate limit deferred its task to a reserved slot.
pub(super) fn rate_limited(function: &str) {
    metrics::counter!("stent_rate_limited_total", "function" => function.to_string()).increment(1);
}

/// A claim found its concurrency key full; its task waits for a slot.
pub(super) fn key_busy(function: &str) {
    metrics::counter!("stent_concurrency_key_waits_total", "function" => function.to_string()).increment(1);
}

/// A workflow attempt asked for a different step than its journal recorded.
pub(super) fn nondeterminism(function: &'static str) {
    metrics::counter!("stent_nondeterminism_total", "function" => function).increment(1);
}

/// A lease ran out without a heartbeat and the engine took the task back.
pub(super) fn lease_expired() {
    metrics::counter!("stent_lease_expiries_total").increment(1);
}

/// A task's timer (a delay, a retry's backoff, a workflow's sleep) fired this late after its
/// due time: how far behind the timer driver runs.
pub(super) fn wakeup_lateness(late_ms: u64) {
    metrics::histogram!("stent_wakeup_lateness_seconds").record(late_ms as f64 / 1000.0);
}

/// Ready tasks of `queue` waiting for a worker (set whenever the engine's ready queue changes).
pub(super) fn queue_depth(queue: String, depth: usize) {
    metrics::gauge!("stent_queue_depth", "queue" => queue).set(depth as f64);
}

/// Workflow futures held in memory while they wait on a step's outcome.
pub(super) fn parked_workflows(n: usize) {
    metrics::gauge!("stent_parked_workflows").set(n as f64);
}

/// Tasks waiting for a time: a delayed dispatch, a retry's backoff, a workflow's durable sleep.
pub(super) fn sleeping_tasks(n: u64) {
    metrics::gauge!("stent_sleeping_tasks").set(n as f64);
}

/// Counts an attempt as running from its start until it ends, however it ends (dropped with
/// the attempt's task when the runtime stops).
pub(super) struct RunningAttempt(());

impl RunningAttempt {
    pub(super) fn start() -> Self {
        metrics::gauge!("stent_running_attempts").increment(1.0);
        RunningAttempt(())
    }
}

impl Drop for RunningAttempt {
    fn drop(&mut self) {
        metrics::gauge!("stent_running_attempts").decrement(1.0);
    }
}
