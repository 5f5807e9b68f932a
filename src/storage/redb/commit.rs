//! Batches in transactions. `apply` runs ops that carry application code (a local step) in
//! a transaction of their own; `run_txn` applies the rest together, and redoes a transaction
//! without an op that met a corrupted record (and with the quarantine of its execution).

use ::redb::Durability;

use super::records::RedbRecords;
use super::RedbStore;
use crate::storage::effect::Effect;
use crate::storage::faults::Faults;
use crate::storage::op::{Op, OpResult, StepBody};
use crate::storage::transitions::{corrupted, Batch, Ids};
use crate::storage::{Rejection, StorageError};

/// Results of one transaction's ops, by position in the caller's batch, and its effects.
type TxnOutcome = (Vec<(usize, OpResult)>, Vec<Effect>);

/// An op of a transaction refused because it met a corrupted record (at `table`, `key`).
struct Refusal {
    /// Position in the transaction's ops.
    at: usize,
    table: &'static str,
    key: String,
    /// Whether to stop the op's execution in the redo (false once that itself met damage).
    quarantine: bool,
}

/// How one pass over a transaction's ops ended.
enum Pass {
    Committed(TxnOutcome),
    /// Op `at` met a corrupted record: drop the transaction and run it again without the op.
    Tainted {
        at: usize,
        table: &'static str,
        key: String,
    },
    /// Stopping the execution of refused op `at` met damage too: run again without that.
    QuarantineTainted {
        at: usize,
    },
}

impl RedbStore {
    pub(super) fn apply(&self, now_ms: u64, ops: Vec<Op>) -> Result<(Vec<OpResult>, Vec<Effect>), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let n = ops.len();
        let (exclusive, shared): (Vec<_>, Vec<_>) = ops.into_iter().enumerate().partition(|(_, op)| op.is_exclusive());
        let mut results: Vec<Option<OpResult>> = (0..n).map(|_| None).collect();
        let (shared_results, mut effects) = self.run_txn(now_ms, shared)?;
        for (i, r) in shared_results {
            results[i] = Some(r);
        }
        for (i, op) in exclusive {
            let (mut r, mut e) = self.run_txn(now_ms, vec![(i, op.clone())])?;
            if let Some((_, Err(Rejection::LocalStepFailed { step, error }))) = r.first() {
                // The closure failed: its transaction was dropped with whatever it wrote.
                // Record the step as failed instead, without running the closure again.
                let (step, error) = (*step, error.clone());
                let mut op = op;
                if let Op::Suspend { steps, .. } = &mut op {
                    for s in steps.iter_mut().filter(|s| s.step == step) {
                        s.body = StepBody::Failed(error.clone());
                    }
                }
                (r, e) = self.run_txn(now_ms, vec![(i, op)])?;
            }
            effects.append(&mut e);
            for (i, r) in r {
                results[i] = Some(r);
            }
        }
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Rejection::Internal("an op of the batch got no result".into()))))
            .collect();
        Ok((results, effects))
    }

    /// One transaction over `ops` (tagged with their position in the caller's batch). A
    /// rejected op leaves neither writes nor effects; `LocalStepFailed` rejects the whole
    /// transaction (its ops were run alone for that reason).
    ///
    /// A record that fails to decode rejects the op that read it, by construction: the
    /// transaction is dropped (with whatever that op wrote before it met the record) and run
    /// again without it, so nothing it did can be committed, whatever the transition's code.
    /// The redo also takes the op's execution out of the way (`quarantine`), so a damaged
    /// record cannot make the same work run and fail forever. Each redo removes one op, so
    /// this ends; corruption is rare, so the redo costs nothing in the steady state.
    fn run_txn(&self, now_ms: u64, ops: Vec<(usize, Op)>) -> Result<TxnOutcome, StorageError> {
        if ops.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut refused: Vec<Refusal> = Vec::new();
        loop {
            match self.try_txn(now_ms, &ops, &refused)? {
                Pass::Committed(outcome) => return Ok(outcome),
                Pass::Tainted { at, table, key } => {
                    tracing::error!(
                        table,
                        key = %key,
                        "corrupted record: the operation that read it is rejected and its execution stopped"
                    );
                    refused.push(Refusal { at, table, key, quarantine: true });
                }
                Pass::QuarantineTainted { at } => {
                    if let Some(r) = refused.iter_mut().find(|r| r.at == at) {
                        r.quarantine = false;
                    }
                }
            }
        }
    }

    /// One pass of `run_txn`: commits unless an op (or a quarantine) met a corrupted record.
    fn try_txn(&self, now_ms: u64, ops: &[(usize, Op)], refused: &[Refusal]) -> Result<Pass, StorageError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut ids = self.lock_ids();
        let mut working = *ids;
        let mut results = Vec::with_capacity(ops.len());
        let effects;
        {
            let mut batch = self.batch(&txn, &mut working, now_ms)?;
            for (at, (i, op)) in ops.iter().enumerate() {
                if let Some(r) = refused.iter().find(|r| r.at == at) {
                    results.push((*i, Err(Rejection::Storage(corrupted(r.table, &r.key)))));
                    continue;
                }
                let before = batch.effects.len();
                let result = match batch.apply(op.clone()) {
                    Err(StorageError::Corrupted { table, key })
                    | Ok(Err(Rejection::Storage(StorageError::Corrupted { table, key }))) => {
                        return Ok(Pass::Tainted { at, table, key })
                    }
                    other => other?,
                };
                if let Err(Rejection::LocalStepFailed { .. }) = &result {
                    drop(batch);
                    drop(txn); // Abort: the closure's writes go with it.
                    return Ok(Pass::Committed((vec![(*i, result)], Vec::new())));
                }
                // A rejected op wrote nothing, so it must not leave effects behind either.
                if result.is_err() {
                    debug_assert_eq!(batch.effects.len(), before);
                    batch.effects.truncate(before);
                }
                results.push((*i, result));
            }
            for r in refused.iter().filter(|r| r.quarantine) {
                match batch.quarantine(&ops[r.at].1, r.table, &r.key) {
                    Err(StorageError::Corrupted { .. }) => return Ok(Pass::QuarantineTainted { at: r.at }),
                    other => other?,
                }
            }
            batch.r.finish(batch.ids)?;
            effects = batch.effects;
        }
        if Faults::take(&self.faults.fail_next_commit) {
            return Err(StorageError::Injected("commit failed"));
        }
        txn.commit()?;
        *ids = working;
        Ok(Pass::Committed((results, effects)))
    }

    pub(super) fn batch<'a, 't>(
        &'a self,
        txn: &'t ::redb::WriteTransaction,
        ids: &'a mut Ids,
        now: u64,
    ) -> Result<Batch<'a, RedbRecords<'t>>, StorageError> {
        Ok(Batch {
            r: RedbRecords::open(txn)?,
            ids,
            faults: &self.faults,
            cache_entries_max: self.cache_entries_max,
            now,
            effects: Vec::new(),
        })
    }
}
