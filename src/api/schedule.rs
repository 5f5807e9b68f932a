//! Schedules: what starts a function on a calendar or at a fixed interval (`Engine::schedules`),
//! and the pure arithmetic of their fire times.
//!
//! A cron schedule is read in an IANA time zone, so `0 9 * * MON-FRI` in `Europe/Berlin` fires
//! at 09:00 Berlin time in winter and in summer alike. On a day when the clocks change, the rule
//! is croner's (the Open Cron Pattern Specification, as Vixie cron does it):
//! - a fixed time that does not exist (02:30 on the night the clocks go forward) fires at the
//!   first time after the gap, on that day (03:00);
//! - a fixed time that exists twice (02:30 on the night they go back) fires once, at its first
//!   occurrence;
//! - a wildcard or stepped field (`*/15` minutes) fires at each matching wall-clock time, so
//!   times inside a skipped hour are skipped and a repeated hour fires twice.
//!
//! An interval schedule (`every 15m`) fires at whole multiples of its period since the Unix
//! epoch, in UTC: daylight saving does not move it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Serialize};

use super::{DurationArg, ExecutionId, FunctionHandle};
use crate::error::{Error, Result};

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSpec {
    /// A cron expression of 5 fields (minute, hour, day of month, month, day of week) or 6
    /// (seconds first), with names such as `MON-FRI` and `JAN`, read in time zone `tz`.
    Cron { expr: String, tz: String },
    /// Every `period_ms`, at its whole multiples since the Unix epoch.
    Every { period_ms: u64 },
}

impl ScheduleSpec {
    /// A cron schedule in an IANA time zone (`"Europe/Berlin"`, `"UTC"`); checked here.
    pub fn cron(expr: impl Into<String>, tz: impl Into<String>) -> Result<Self> {
        let spec = ScheduleSpec::Cron { expr: expr.into(), tz: tz.into() };
        spec.times()?;
        Ok(spec)
    }

    /// A fixed interval (`"15m"`, `Duration::from_secs(900)`), at least one second.
    pub fn every(period: impl Into<DurationArg>) -> Result<Self> {
        let period = period.into().get()?;
        let spec = ScheduleSpec::Every { period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX) };
        spec.times()?;
        Ok(spec)
    }

    /// The spec compiled for stepping through its times; fails with `InvalidSchedule`.
    pub(crate) fn times(&self) -> Result<FireTimes> {
        FireTimes::compile(self).map_err(|reason| Error::InvalidSchedule { spec: self.to_string(), reason })
    }
}

impl fmt::Display for ScheduleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleSpec::Cron { expr, tz } => write!(f, "cron {expr:?} in {tz}"),
            ScheduleSpec::Every { period_ms } => {
                write!(f, "every {}", humantime::format_duration(Duration::from_millis(*period_ms)))
            }
        }
    }
}

/// A spec compiled: the nominal fire times it names, as milliseconds since the epoch.
pub(crate) enum FireTimes {
    Cron(Box<Cron>, TimeZone),
    Every(u64),
}

impl FireTimes {
    /// Compiles a spec; the error says why it cannot work.
    pub(crate) fn compile(spec: &ScheduleSpec) -> std::result::Result<FireTimes, String> {
        match spec {
            ScheduleSpec::Cron { expr, tz } => {
                let zone = TimeZone::get(tz).map_err(|_| format!("unknown time zone {tz:?}"))?;
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .year(Year::Disallowed)
                    .build()
                    .parse(expr)
                    .map_err(|e| e.to_string())?;
                Ok(FireTimes::Cron(Box::new(cron), zone))
            }
            ScheduleSpec::Every { period_ms } if *period_ms < 1_000 => {
                Err("the period must be at least one second".into())
            }
            ScheduleSpec::Every { period_ms } => Ok(FireTimes::Every(*period_ms)),
        }
    }

    /// The first fire time strictly after `t_ms`.
    pub(crate) fn next_after(&self, t_ms: u64) -> Option<u64> {
        match self {
            FireTimes::Cron(cron, zone) => {
                let from = zoned(zone, t_ms.div_euclid(1_000))?;
                let next = cron.find_next_occurrence(&from, false).ok()?;
                u64::try_from(next.timestamp().as_millisecond()).ok()
            }
            FireTimes::Every(p) => (t_ms / p).checked_add(1)?.checked_mul(*p),
        }
    }

    /// The last fire time at or before `t_ms`.
    pub(crate) fn at_or_before(&self, t_ms: u64) -> Option<u64> {
        match self {
            FireTimes::Cron(cron, zone) => {
                let from = zoned(zone, t_ms.div_euclid(1_000))?;
                let prev = cron.find_previous_occurrence(&from, true).ok()?;
                u64::try_from(prev.timestamp().as_millisecond()).ok()
            }
            FireTimes::Every(p) => Some(t_ms / p * p),
        }
    }

    /// The last fire time strictly before `t_ms`.
    pub(crate) fn before(&self, t_ms: u64) -> Option<u64> {
        self.at_or_before(t_ms.checked_sub(1)?)
    }
}

fn zoned(zone: &TimeZone, secs: u64) -> Option<Zoned> {
    Some(Timestamp::from_second(i64::try_from(secs).ok()?).ok()?.to_zoned(zone.clone()))
}

/// The moment a fire of nominal time `nominal_ms` is started, `jitter_ms` at most after it: the
/// same for the same schedule name and nominal time in every process and after any restart.
pub(crate) fn jittered(name: &str, nominal_ms: u64, jitter_ms: u64) -> u64 {
    if jitter_ms == 0 {
        return nominal_ms;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(name.as_bytes());
    h.update(&nominal_ms.to_le_bytes());
    nominal_ms.saturating_add(u64::from(h.finalize()) % jitter_ms.saturating_add(1))
}

/// A fire reached within this long after its time (plus the schedule's jitter) is on time;
/// later, it was missed and the schedule's [`CatchUp`] decides.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// The most fires `CatchUp::All` starts after downtime, unless given: the latest ones.
pub const CATCH_UP_ALL_MAX_DEFAULT: u32 = 100;

/// What a schedule does with the fires it missed (the engine was closed, or the machine
/// asleep, when they were due): found when the engine reaches them more than
/// [`MISFIRE_GRACE`] late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Start none of them; go on with the next fire.
    Skip,
    /// Start one, for the latest missed time (the default, as cron's `@reboot`-less
    /// schedulers and systemd's `Persistent=` timers do).
    One,
    /// Start each missed fire, oldest first, at most `max` of them (the latest ones).
    All { max: u32 },
}

/// What a fire does while the execution the schedule started last is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Start nothing (counted in `ScheduleInfo::skipped`); the default.
    Skip,
    /// Start it once the running one ends; while one is waiting, a newer fire replaces it.
    BufferOne,
    /// Start it beside the running one.
    Allow,
    /// Cancel the running one, then start it.
    CancelPrevious,
}

impl FromStr for CatchUp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "one" => Ok(CatchUp::One),
            "all" => Ok(CatchUp::All { max: CATCH_UP_ALL_MAX_DEFAULT }),
            other => {
                Err(Error::InvalidOptions { what: "catch-up", reason: format!("{other:?}: use skip, one or all") })
            }
        }
    }
}

impl FromStr for Overlap {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(Overlap::Skip),
            "buffer_one" => Ok(Overlap::BufferOne),
            "allow" => Ok(Overlap::Allow),
            "cancel_previous" => Ok(Overlap::CancelPrevious),
            other => Err(Error::InvalidOptions {
                what: "overlap",
                reason: format!("{other:?}: use skip, buffer_one, allow or cancel_previous"),
            }),
        }
    }
}

/// A schedule's definition: its name, the function it starts with which input, when, and its
/// policies. Given to `EngineBuilder::schedule` (created or updated as the engine opens, before
/// any fire) or to `Schedules::upsert`.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub(crate) name: String,
    pub(crate) function: String,
    pub(crate) input: std::result::Result<Vec<u8>, String>,
    pub(crate) spec: ScheduleSpec,
    pub(crate) catch_up: CatchUp,
    pub(crate) overlap: Overlap,
    pub(crate) jitter: Option<DurationArg>,
}

impl Schedule {
    /// Starts `function` with `input` at every time of `spec`.
    pub fn new<F: FunctionHandle>(name: impl Into<String>, function: F, input: &F::Input, spec: ScheduleSpec) -> Self {
        Schedule {
            name: name.into(),
            function: function.name().to_string(),
            input: serde_json::to_vec(input).map_err(|e| e.to_string()),
            spec,
            catch_up: CatchUp::One,
            overlap: Overlap::Skip,
            jitter: None,
        }
    }

    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.overlap = overlap;
        self
    }

    /// Start each fire up to this long after its time (the same delay for the same fire in
    /// every process), to spread many schedules of one time. Keep it below the interval.
    pub fn jitter(mut self, jitter: impl Into<DurationArg>) -> Self {
        self.jitter = Some(jitter.into());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What `Schedules::get` and `list` show of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub name: String,
    pub function: String,
    pub input: serde_json::Value,
    pub spec: ScheduleSpec,
    pub catch_up: CatchUp,
    pub overlap: Overlap,
    pub jitter_ms: u64,
    pub paused: bool,
    /// The next nominal fire time (`None` while paused, or when the spec names no later time).
    pub next_fire_ms: Option<u64>,
    /// The nominal time of the last fire it started.
    pub last_fire_ms: Option<u64>,
    pub last_execution: Option<ExecutionId>,
    /// A fire held by `Overlap::BufferOne` until the running execution ends.
    pub buffered_fire_ms: Option<u64>,
    /// Executions started (by its times and by `trigger`).
    pub fires: u64,
    /// Fires not started because the previous one was still running (`Overlap::Skip`, or a
    /// buffered fire replaced by a newer one).
    pub skipped: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// An execution a schedule started (`Schedules::fires`), by nominal time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFire {
    pub fire_time_ms: u64,
    pub execution: ExecutionId,
}

/// A concurrency key in use (`Engine::concurrency_keys`): how many executions of `function`
/// dispatched with `key` are running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    pub function: String,
    pub key: String,
    pub running: u64,
}

/// Which schedule started an execution, and for which nominal time (`ExecutionInfo::schedule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledBy {
    pub schedule: String,
    pub fire_time_ms: u64,
    /// Started by `Schedules::trigger`, not by the spec: `fire_time_ms` is when.
    pub triggered: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> u64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    fn walk(spec: &ScheduleSpec, from: &str, n: usize) -> Vec<String> {
        let times = spec.times().unwrap();
        let mut t = ms(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = times.next_after(t).unwrap();
            out.push(Timestamp::from_millisecond(t as i64).unwrap().to_string());
        }
        out
    }

    #[test]
    fn a_local_time_stays_local_across_the_spring_change() {
        let spec = ScheduleSpec::cron("0 9 * * MON-FRI", "Europe/Berlin").unwrap();
        let got = walk(&spec, "2026-03-26T00:00:00Z", 3);
        assert_eq!(got, ["2026-03-26T08:00:00Z", "2026-03-27T08:00:00Z", "2026-03-30T07:00:00Z"]);
    }

    #[test]
    fn a_skipped_local_time_fires_after_the_gap_and_a_repeated_one_fires_once() {
        // 02:30 does not exist in Berlin on 29 March 2026 (02:00 -> 03:00): it fires at 03:00
        // local (01:00Z). On 25 October 02:30 exists twice: it fires at the first (00:30Z).
        let spec = ScheduleSpec::cron("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(walk(&spec, "2026-03-28T12:00:00Z", 2), ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]);
        assert_eq!(walk(&spec, "2026-10-24T12:00:00Z", 2), ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
    }

    #[test]
    fn a_stepped_schedule_fires_through_a_repeated_hour_twice() {
        let spec = ScheduleSpec::cron("0 */30 2 * * *", "Europe/Berlin").unwrap();
        let got = walk(&spec, "2026-10-24T23:59:00Z", 4);
        assert_eq!(
            got,
            ["2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z"]
        );
    }

    #[test]
    fn intervals_are_whole_multiples_since_the_epoch() {
        let spec = ScheduleSpec::every("15m").unwrap();
        assert_eq!(walk(&spec, "2026-03-29T00:07:00Z", 2), ["2026-03-29T00:15:00Z", "2026-03-29T00:30:00Z"]);
        let times = spec.times().unwrap();
        assert_eq!(times.at_or_before(ms("2026-03-29T00:30:00Z")), Some(ms("2026-03-29T00:30:00Z")));
        assert_eq!(times.before(ms("2026-03-29T00:30:00Z")), Some(ms("2026-03-29T00:15:00Z")));
    }

    #[test]
    fn bad_specs_are_one_clear_error() {
        for (expr, tz, says) in
            [("0 9 * * MON-FRI", "Mars/Olympus", "unknown time zone"), ("61 * * * *", "UTC", ""), ("", "UTC", "")]
        {
            match ScheduleSpec::cron(expr, tz) {
                Err(Error::InvalidSchedule { reason, .. }) => assert!(reason.contains(says), "{reason}"),
                other => panic!("{expr:?} in {tz}: {other:?}"),
            }
        }
        assert!(matches!(ScheduleSpec::every("10ms"), Err(Error::InvalidSchedule { .. })));
        assert!(matches!(ScheduleSpec::every("soon"), Err(Error::InvalidDuration { .. })));
    }

    #[test]
    fn jitter_is_fixed_per_fire_and_bounded() {
        let a = jittered("nightly", 1_000_000, 30_000);
        assert_eq!(a, jittered("nightly", 1_000_000, 30_000));
        assert!((1_000_000..=1_030_000).contains(&a));
        assert_eq!(jittered("nightly", 5, 0), 5);
    }
}
