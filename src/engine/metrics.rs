//! What the engine reports through the `metrics` facade (names and meanings in
//! docs/operations.md). Free when no recorder is installed: each macro is a check of a global
//! pointer. Labels are bounded: a function name (registered, so finite), an outcome from a
//! fixed set; never an execution or task id.

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
