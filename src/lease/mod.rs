//! Leases and fencing: who may commit the outcome of a running task.
//!
//! A claim increments the task's attempt number and hands it out as the fencing token. Every
//! later write about that attempt (renew, complete, fail) must present the token; once the task
//! was re-queued (lease expiry, crash recovery, cancellation) or claimed again, the old token is
//! refused with [`LeaseError::LeaseLost`] and nothing is written.
//!
//! Invariant: this module is plain synchronous code over `crate::sync`; it never awaits, never
//! reads the clock (time is an argument) and imports nothing from storage (the lease record
//! it mutates is defined here). That is what lets loom explore it
//! (`RUSTFLAGS="--cfg loom" cargo test --release --lib lease`).

mod limiter;

pub use limiter::Limiter;

/// Who holds a running task, with which token, until when. Stored inside the task's record
/// (so its layout is part of the file format; `tests/file_format.rs` holds it still), but
/// defined here so the lease protocol imports nothing from storage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeaseRecord {
    pub worker: String,
    pub token: u32,
    pub started_ms: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The caller's token is not the task's current lease: its result is dropped.
    #[error("lease lost on task {task_id}: token {token} is not the current lease")]
    LeaseLost { task_id: u64, token: u32 },
}

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimRefused {
    AlreadyLeased,
    /// The attempt counter is at `u32::MAX`: a further token could not be larger than every
    /// earlier one, so the task can never be claimed again (a checked error, never a
    /// saturating token that would let two holders share one).
    TokensExhausted,
}

/// Mutable view of a task's fencing state: its attempt counter and current lease.
pub struct Fence<'a> {
    pub task_id: u64,
    pub attempt: &'a mut u32,
    pub lease: &'a mut Option<LeaseRecord>,
}

impl Fence<'_> {
    /// Takes the lease: the attempt counter (the token) goes up by one, strictly.
    pub fn claim(&mut self, worker: &str, now_ms: u64, lease_ms: u64) -> Result<u32, ClaimRefused> {
        if self.lease.is_some() {
            return Err(ClaimRefused::AlreadyLeased);
        }
        let Some(token) = self.attempt.checked_add(1) else {
            return Err(ClaimRefused::TokensExhausted);
        };
        debug_assert!(token > *self.attempt, "fencing token must strictly increase");
        *self.attempt = token;
        *self.lease = Some(LeaseRecord {
            worker: worker.to_string(),
            token,
            started_ms: now_ms,
            expires_ms: now_ms.saturating_add(lease_ms),
        });
        Ok(token)
    }

    /// Ok when `token` is the current lease. An expired lease that nobody has reaped yet is
    /// still current: the token, not the clock, decides (the reaper acts through [`expire`]).
    ///
    /// [`expire`]: Fence::expire
    pub fn check(&self, token: u32) -> Result<&LeaseRecord, LeaseError> {
        match self.lease.as_ref() {
            Some(lease) if lease.token == token => Ok(lease),
            _ => Err(LeaseError::LeaseLost { task_id: self.task_id, token }),
        }
    }

    /// Heartbeat: pushes the expiry to `now + lease_ms`. Returns the new expiry.
    pub fn renew(&mut self, token: u32, now_ms: u64, lease_ms: u64) -> Result<u64, LeaseError> {
        self.check(token)?;
        let lease = self.lease.as_mut().ok_or(LeaseError::LeaseLost { task_id: self.task_id, token })?;
        lease.expires_ms = lease.expires_ms.max(now_ms.saturating_add(lease_ms));
        Ok(lease.expires_ms)
    }

    /// The holder commits its outcome: the lease ends. Returns the ended lease.
    pub fn release(&mut self, token: u32) -> Result<LeaseRecord, LeaseError> {
        self.check(token)?;
        self.lease.take().ok_or(LeaseError::LeaseLost { task_id: self.task_id, token })
    }

    /// The reaper: if the lease with `token` is past its expiry at `now`, end it and return it.
    pub fn expire(&mut self, token: u32, now_ms: u64) -> Option<LeaseRecord> {
        match self.lease.as_ref() {
            Some(lease) if lease.token == token && lease.expires_ms <= now_ms => self.lease.take(),
            _ => None,
        }
    }

    /// Ends whatever lease there is (cancellation, recovery at open).
    pub fn revoke(&mut self) -> Option<LeaseRecord> {
        self.lease.take()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn stale_token_is_refused_after_reclaim() {
        let (mut attempt, mut lease) = (0u32, None);
        let mut f = Fence { task_id: 1, attempt: &mut attempt, lease: &mut lease };
        let t1 = f.claim("a", 0, 100).unwrap();
        assert_eq!(f.claim("b", 1, 100), Err(ClaimRefused::AlreadyLeased));
        assert!(f.expire(t1, 99).is_none(), "not expired yet");
        assert!(f.expire(t1, 100).is_some());
        let t2 = f.claim("b", 100, 100).unwrap();
        assert!(t2 > t1);
        assert_eq!(f.release(t1), Err(LeaseError::LeaseLost { task_id: 1, token: t1 }));
        assert_eq!(f.renew(t1, 101, 100), Err(LeaseError::LeaseLost { task_id: 1, token: t1 }));
        assert_eq!(f.renew(t2, 150, 100), Ok(250));
        assert!(f.expire(t2, 200).is_none(), "renewed lease does not expire at the old time");
        assert_eq!(f.release(t2).unwrap().worker, "b");
    }

    #[test]
    fn fencing_tokens_never_saturate() {
        let (mut attempt, mut lease) = (u32::MAX - 1, None);
        let mut f = Fence { task_id: 1, attempt: &mut attempt, lease: &mut lease };
        let last = f.claim("a", 0, 100).unwrap();
        assert_eq!(last, u32::MAX);
        f.release(last).unwrap();
        assert_eq!(f.claim("b", 1, 100), Err(ClaimRefused::TokensExhausted));
        assert!(f.lease.is_none(), "a refused claim takes no lease");
        assert_eq!(*f.attempt, u32::MAX, "a refused claim leaves the counter alone");
    }
}

/// Loom model of the lease protocol: two workers and a reaper race over one task. The writer
/// serialises every command (here, the mutex); loom explores every order in which the
/// commands can arrive. Property: at most one holder's completion is committed, and it is the
/// holder of the current token.
#[cfg(all(loom, test))]
mod loom_tests {
    use super::*;
    use crate::sync::{Arc, Mutex};

    struct Task {
        attempt: u32,
        lease: Option<LeaseRecord>,
        completed_by: Vec<u32>,
        now: u64,
    }

    fn with<R>(t: &Mutex<Task>, f: impl FnOnce(&mut Fence<'_>, &mut Vec<u32>, u64) -> R) -> R {
        let mut g = t.lock().unwrap();
        let g = &mut *g;
        let mut fence = Fence { task_id: 1, attempt: &mut g.attempt, lease: &mut g.lease };
        f(&mut fence, &mut g.completed_by, g.now)
    }

    #[test]
    fn at_most_one_holder_commits() {
        loom::model(|| {
            let task = Arc::new(Mutex::new(Task { attempt: 0, lease: None, completed_by: vec![], now: 0 }));
            // Worker A holds the first lease before the race starts.
            let token_a = with(&task, |f, _, now| f.claim("a", now, 10)).unwrap();

            let a = {
                let task = task.clone();
                loom::thread::spawn(move || {
                    // Heartbeat, then complete; both may find the lease gone.
                    let _ = with(&task, |f, _, now| f.renew(token_a, now, 10));
                    with(&task, |f, done, _| f.release(token_a).map(|_| done.push(token_a))).is_ok()
                })
            };
            let reaper_and_b = {
                let task = task.clone();
                loom::thread::spawn(move || {
                    // Time passes beyond the lease; the reaper expires it; worker B reclaims.
                    task.lock().unwrap().now = 100;
                    let expired = with(&task, |f, _, now| f.expire(token_a, now).is_some());
                    if !expired {
                        return false;
                    }
                    let token_b = with(&task, |f, _, now| f.claim("b", now, 10)).unwrap();
                    with(&task, |f, done, _| f.release(token_b).map(|_| done.push(token_b))).is_ok()
                })
            };
            let a_done = a.join().unwrap();
            let b_done = reaper_and_b.join().unwrap();
            let g = task.lock().unwrap();
            assert!(g.completed_by.len() <= 1, "two holders committed: {:?}", g.completed_by);
            assert!(!(a_done && b_done));
            if let Some(&t) = g.completed_by.first() {
                assert_eq!(t, g.attempt, "the committed token is the current one");
            }
        });
    }
}
