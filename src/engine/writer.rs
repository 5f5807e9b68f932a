//! The group-commit writer: one thread owns every write transaction.
//!
//! Engine operations arrive as commands. The writer takes every command waiting (up to
//! `batch_ops_max`), applies them in one transaction with one fsync, applies the batch's
//! effects to memory, and only then answers each caller. A rejected command does not fail
//! its batch. A failed commit poisons the engine: every later command is refused until the
//! database is reopened, because after a failed fsync the page cache can no longer be trusted
//! to match the disk.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Inner;
use crate::error::{Error, Result};
use crate::storage::{Op, OpOutput, StorageError, Store};

pub struct Command {
    pub op: Op,
    /// The op's result, its rejection already turned into `stent::Error`.
    pub reply: oneshot::Sender<Result<OpOutput>>,
}

pub fn run(inner: Arc<Inner>, store: Arc<dyn Store>, mut rx: mpsc::Receiver<Command>, batch_ops_max: usize) {
    let mut poisoned: Option<String> = None;
    let mut ops = Vec::with_capacity(batch_ops_max);
    let mut replies = Vec::with_capacity(batch_ops_max);
    while let Some(first) = rx.blocking_recv() {
        ops.push(first.op);
        replies.push(first.reply);
        while ops.len() < batch_ops_max {
            match rx.try_recv() {
                Ok(c) => {
                    ops.push(c.op);
                    replies.push(c.reply);
                }
                Err(_) => break,
            }
        }
        if let Some(reason) = &poisoned {
            ops.clear();
            for reply in replies.drain(..) {
                let _ = reply.send(Err(Error::Storage(StorageError::Poisoned(reason.clone()))));
            }
            continue;
        }
        let batch_len = ops.len();
        let now = inner.clock.now_ms();
        let started = std::time::Instant::now();
        match store.apply_batch(now, std::mem::take(&mut ops)) {
            Ok((results, effects)) => {
                inner.stats.record_batch(batch_len);
                super::metrics::commit(batch_len, started.elapsed());
                inner.apply_effects(effects);
                debug_assert_eq!(results.len(), replies.len());
                for (reply, result) in replies.drain(..).zip(results) {
                    let _ = reply.send(result.map_err(Error::from));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                super::metrics::commit_failed();
                tracing::error!(error = %reason, "commit failed; engine poisoned until reopened");
                *inner.poisoned.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
                poisoned = Some(reason.clone());
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(Error::Storage(StorageError::Poisoned(reason.clone()))));
                }
            }
        }
    }
}
