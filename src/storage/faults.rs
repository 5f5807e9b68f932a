//! Fault injection for tests (`stent::testing`).

use std::sync::atomic::{AtomicBool, Ordering};

/// Fault injection for tests (`stent::testing`): each flag fires once.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail a dispatch after the execution record is written and before its root task is.
    pub fail_between_execution_and_task: AtomicBool,
    /// Fail the next commit (as a failed fsync would).
    pub fail_next_commit: AtomicBool,
}

impl Faults {
    pub(crate) fn take(flag: &AtomicBool) -> bool {
        flag.swap(false, Ordering::AcqRel)
    }
}
