//! The public vocabulary: typed function handles, options, and the views returned by queries.
//!
//! Invariant: nothing here touches storage or the runtime; these are plain values. Types that
//! cross the disk boundary live in `storage::records` and are converted, so the public API can
//! evolve without changing the file format.

mod duration;
mod function_options;
mod retry;
mod schedule;
mod types;

pub use duration::DurationArg;
pub use function_options::FunctionOptions;
pub use retry::RetryPolicy;
pub(crate) use schedule::{jittered, FireTimes};
pub use schedule::{
    CatchUp, KeyUsage, Overlap, Schedule, ScheduleFire, ScheduleInfo, ScheduleSpec, ScheduledBy,
    CATCH_UP_ALL_MAX_DEFAULT, MISFIRE_GRACE,
};
pub use types::*;
