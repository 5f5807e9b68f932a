//! Synchronisation primitives, switched to loom's under `cfg(loom)` (as tokio's `src/loom`).
//!
//! Code whose interleavings matter (the lease state machine, the concurrency limiter) takes its
//! atomics and locks from here, so `RUSTFLAGS="--cfg loom"` model-checks the same code that
//! ships.

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{
    atomic::{AtomicU32, AtomicU64, Ordering},
    Arc, Mutex,
};

#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{
    atomic::{AtomicU32, AtomicU64, Ordering},
    Arc, Mutex,
};
