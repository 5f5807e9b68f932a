//! Durations given as `Duration` or as strings such as `"1h30m"` or `"2d8h"`.
//!
//! Parsing is humantime's; we only add the rules it does not have: no empty string and no
//! whitespace, so `"1h 30m"` (easily a typo for two arguments) is refused rather than guessed.

use std::time::Duration;

use crate::error::{Error, Result};

/// Anything an option taking a duration accepts. Parsing errors are reported when the
/// request is made, quoting the input.
#[derive(Debug, Clone)]
pub struct DurationArg(Result<Duration, (String, String)>);

impl DurationArg {
    pub fn get(&self) -> Result<Duration> {
        self.0.clone().map_err(|(input, reason)| Error::InvalidDuration { input, reason })
    }

    /// Parses `"1h30m"`, `"250ms"`, `"2d8h"`.
    pub fn parse(input: &str) -> Result<Duration> {
        DurationArg::from(input).get()
    }
}

impl From<Duration> for DurationArg {
    fn from(d: Duration) -> Self {
        DurationArg(Ok(d))
    }
}

impl From<&str> for DurationArg {
    fn from(s: &str) -> Self {
        let parsed = if s.is_empty() {
            Err("empty string".to_string())
        } else if s.chars().any(char::is_whitespace) {
            Err("whitespace is not allowed; write e.g. \"1h30m\"".to_string())
        } else {
            humantime::parse_duration(s).map_err(|e| e.to_string())
        };
        DurationArg(parsed.map_err(|reason| (s.to_string(), reason)))
    }
}

impl From<String> for DurationArg {
    fn from(s: String) -> Self {
        DurationArg::from(s.as_str())
    }
}

impl From<&String> for DurationArg {
    fn from(s: &String) -> Self {
        DurationArg::from(s.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_compound_units() {
        assert_eq!(DurationArg::parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(DurationArg::parse("2d8h").unwrap(), Duration::from_secs(2 * 86400 + 8 * 3600));
        assert_eq!(DurationArg::parse("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn garbage_is_an_error_that_quotes_the_input() {
        for bad in ["10x", "", "1h 30m", "h", "-5s"] {
            let err = DurationArg::parse(bad).unwrap_err();
            match &err {
                Error::InvalidDuration { input, .. } => assert_eq!(input, bad),
                other => panic!("unexpected {other:?}"),
            }
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
