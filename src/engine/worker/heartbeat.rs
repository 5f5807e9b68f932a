//! The heartbeat loop of a pool: every interval, one command renews every lease the pool holds,
//! carrying the progress details activities recorded since (`stent::activity::heartbeat`),
//! written only where the renewal is accepted; a renewal refused (`LeaseLost`) aborts that
//! attempt, since another worker may own it now.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Pool;
use crate::api::WorkerStatus;
use crate::engine::lock;
use crate::storage::records::duration_ms;
use crate::storage::{Op, OpOutput};

pub(super) async fn heartbeat_loop(pool: Arc<Pool>) {
    let inner = &pool.inner;
    let interval_ms = duration_ms(pool.options.heartbeat_interval).max(1);
    let lease_ms = duration_ms(pool.options.lease_duration);
    let mut status = pool.status.subscribe();
    let mut shutdown = inner.shutdown.subscribe();
    // Beats are anchored to the pool's start (not to when the previous beat finished), so a
    // clock moved by one interval yields exactly one beat; after a longer jump the schedule
    // restarts from now instead of firing once per missed beat.
    let mut next = inner.clock.now_ms().saturating_add(interval_ms);
    loop {
        tokio::select! {
            _ = inner.clock.sleep_until(next) => {}
            _ = status.wait_for(|s| *s == WorkerStatus::Stopped) => return,
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = inner.clock.now_ms();
        next = next.saturating_add(interval_ms);
        if next <= now {
            next = now.saturating_add(interval_ms);
        }
        let mut leases = Vec::new();
        let mut details = Vec::new();
        let mut carried = Vec::new();
        for r in lock(&inner.running).values().filter(|r| r.pool == pool.id) {
            let Some(token) = r.token else { continue };
            leases.push((r.task_id, token));
            if let Some(progress) = &r.progress {
                if let Some(bytes) = progress.take() {
                    details.push((r.task_id, bytes.clone()));
                    carried.push((progress.clone(), bytes));
                }
            }
        }
        if leases.is_empty() {
            continue;
        }
        let renewed = inner.submit(Op::Renew { leases: leases.clone(), lease_ms, details }).await;
        if renewed.is_err() {
            // Nothing was written: the next beat carries the details again.
            for (progress, bytes) in carried {
                progress.restore(bytes);
            }
        }
        match renewed {
            Ok(OpOutput::Renewed(results)) => {
                for ((task_id, token), result) in leases.into_iter().zip(results) {
                    match result {
                        Ok(_) => {
                            inner.stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
                            super::super::metrics::lease_renewals(1);
                        }
                        Err(_) => {
                            inner.stats.leases_lost.fetch_add(1, Ordering::Relaxed);
                            super::super::metrics::lease_lost();
                            tracing::warn!(task_id, token, "lease lost on heartbeat; aborting the attempt");
                            inner.abort_local(task_id, Some(token));
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
