//! Per-function concurrency limit, enforced at claim time across every worker of the process.
//!
//! A slot is taken with a compare-and-swap that refuses to go past the limit, so no
//! interleaving of claimers can exceed it (checked by loom below). The slot is given back only
//! when the attempt's future has actually ended, so a reclaimed task never runs beside a
//! still-running earlier attempt of the same function beyond the limit.

use crate::sync::{AtomicU32, Ordering};

#[derive(Debug)]
pub struct Limiter {
    max: u32,
    held: AtomicU32,
}

impl Limiter {
    /// `max == 0` means unlimited.
    pub fn new(max: u32) -> Self {
        Limiter { max, held: AtomicU32::new(0) }
    }

    pub fn try_acquire(&self) -> bool {
        if self.max == 0 {
            self.held.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        let mut current = self.held.load(Ordering::Acquire);
        loop {
            if current >= self.max {
                return false;
            }
            match self.held.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn release(&self) {
        let before = self.held.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "released a slot that was not held");
    }

    /// The limit; `0` means unlimited.
    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn held(&self) -> u32 {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(all(loom, test))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, AtomicU32, Ordering};

    #[test]
    fn never_exceeds_max() {
        loom::model(|| {
            let limiter = Arc::new(Limiter::new(1));
            let inside = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (limiter, inside) = (limiter.clone(), inside.clone());
                    loom::thread::spawn(move || {
                        if limiter.try_acquire() {
                            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(n <= 1, "{n} holders of a max-1 limiter");
                            inside.fetch_sub(1, Ordering::SeqCst);
                            limiter.release();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(limiter.held(), 0);
        });
    }
}
