//! Retry policy: how many attempts, how far apart, and which errors retry at all.

use std::time::Duration;

use super::{ActivityError, ErrorKind};

/// Stored with every task, so a restart keeps the policy the task was dispatched with.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. `1` means never retry.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub backoff_factor: f64,
    pub max_delay: Duration,
    /// Fraction in `[0, 1]` of each delay that is randomised away (downwards, so `max_delay`
    /// holds). Drawn from the engine's seeded RNG.
    pub jitter: f64,
    /// When non-empty, only retryable errors with one of these codes retry.
    pub retry_codes: Vec<String>,
    /// Retryable errors with one of these codes do not retry.
    pub permanent_codes: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::exponential(3, Duration::from_secs(1))
    }
}

impl RetryPolicy {
    /// `max_attempts` in all, the first retry after `initial_delay`, doubling up to one hour.
    pub fn exponential(max_attempts: u32, initial_delay: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            initial_delay,
            backoff_factor: 2.0,
            max_delay: Duration::from_secs(3600),
            jitter: 0.0,
            retry_codes: Vec::new(),
            permanent_codes: Vec::new(),
        }
    }

    pub fn none() -> Self {
        RetryPolicy::exponential(1, Duration::ZERO)
    }

    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    pub fn with_backoff_factor(mut self, factor: f64) -> Self {
        self.backoff_factor = factor;
        self
    }

    pub fn retry_only_codes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, codes: I) -> Self {
        self.retry_codes = codes.into_iter().map(Into::into).collect();
        self
    }

    pub fn permanent_codes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, codes: I) -> Self {
        self.permanent_codes = codes.into_iter().map(Into::into).collect();
        self
    }

    /// Whether this error, seen on an attempt, may be retried by kind and code (the attempt
    /// budget is checked separately).
    pub fn retries(&self, error: &ActivityError) -> bool {
        if error.kind != ErrorKind::Retryable {
            return false;
        }
        let code = error.code.as_deref();
        if code.is_some_and(|c| self.permanent_codes.iter().any(|p| p == c)) {
            return false;
        }
        self.retry_codes.is_empty() || code.is_some_and(|c| self.retry_codes.iter().any(|r| r == c))
    }

    /// The delay before the attempt after `attempts_done` failed ones (`attempts_done >= 1`).
    /// `unit` is a uniform draw in `[0, 1)`.
    pub fn delay_after(&self, attempts_done: u32, unit: f64) -> Duration {
        debug_assert!(attempts_done >= 1);
        let exponent = attempts_done.saturating_sub(1).min(1_000) as i32;
        let factor =
            if self.backoff_factor.is_finite() && self.backoff_factor >= 1.0 { self.backoff_factor } else { 1.0 };
        let base = self.initial_delay.as_secs_f64() * factor.powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::exponential(10, Duration::from_secs(1)).with_max_delay(Duration::from_secs(5));
        let d: Vec<u64> = (1..=5).map(|n| p.delay_after(n, 0.0).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn jitter_only_shortens() {
        let p = RetryPolicy::exponential(3, Duration::from_secs(10)).with_jitter(0.5);
        assert_eq!(p.delay_after(1, 0.0), Duration::from_secs(10));
        assert_eq!(p.delay_after(1, 0.999_999).as_secs(), 5);
    }

    #[test]
    fn codes_select_what_retries() {
        let p = RetryPolicy::default().permanent_codes(["bad_card"]);
        assert!(p.retries(&ActivityError::retryable("timeout")));
        assert!(!p.retries(&ActivityError::retryable("x").with_code("bad_card")));
        assert!(!p.retries(&ActivityError::permanent("x")));
        let only = RetryPolicy::default().retry_only_codes(["503"]);
        assert!(only.retries(&ActivityError::retryable("x").with_code("503")));
        assert!(!only.retries(&ActivityError::retryable("x")));
    }
}
