//! Taking an execution out of the way when an op over it met a corrupted record.
//!
//! The op itself was already refused (its transaction was dropped and run again without it,
//! see `redb/commit.rs`). Left alone, its execution would go on failing the same way: a
//! step's completion refused, the lease expiring, the activity running again, refused again,
//! for ever. So the redo also stops the execution: it fails with an error coded
//! `corrupt_record` that names the table and key, its live tasks are cancelled (their running
//! attempts aborted), a dead letter shows it in the DLQ, and a parent waiting on it as a child
//! gets the failure. `check` keeps reporting the damaged record itself.
//!
//! Check, then write: every record needed is read and decoded first; a record that does not
//! decode is left out of the plan (a task that cannot be read stays as it is: its own
//! transitions are refused before they write). Only then are the writes done. When even the
//! execution record is unreadable, nothing is written: every op over it is refused anyway, and
//! `state_of` and `check` name the damage.

use super::outcome::Burial;
use super::*;
use crate::api::TaskState;
use crate::storage::records::{ParentStep, StepOutcome};

/// What a refused op was about.
enum Subject {
    Task(u64),
    Execution(u64),
    DeadLetter(u64),
}

fn subject(op: &Op) -> Option<Subject> {
    match op {
        Op::Claim { task_id, .. }
        | Op::Complete { task_id, .. }
        | Op::ContinueAsNew { task_id, .. }
        | Op::Fail { task_id, .. }
        | Op::Expire { task_id, .. }
        | Op::Suspend { task_id, .. }
        | Op::Abandon { task_id, .. } => Some(Subject::Task(*task_id)),
        Op::Cancel { execution_id }
        | Op::RequestCancel { execution_id, .. }
        | Op::Signal { execution_id, .. }
        | Op::TimeOut { execution_id } => Some(Subject::Execution(*execution_id)),
        Op::ReplayDeadLetter { id, .. } | Op::DiscardDeadLetter { id } | Op::ReplayDeadLetterStep { id, .. } => {
            Some(Subject::DeadLetter(*id))
        }
        // A dispatch creates its execution (a refused one created nothing), as a signal with
        // start does when its key is free (else it is refused unchanged, like a signal to an
        // unreadable execution found by id would not be); renewals refuse per lease without a
        // corrupted result; a cleanup stops at the damaged record.
        // A schedule op about an unreadable schedule is refused and its timer is not set
        // again (`check` reports the record); it names no execution to stop.
        Op::Dispatch(_) | Op::SignalWithStart { .. } | Op::Renew { .. } | Op::Cleanup { .. } => None,
        Op::PutSchedule(_) | Op::ControlSchedule { .. } | Op::FireSchedule { .. } => None,
    }
}

impl<R: Records> Batch<'_, R> {
    /// Stops the execution `op` was about, because reading it met the corrupted record at
    /// (`table`, `key`). Returns `Err(Corrupted)` only if a write needed a read that failed
    /// after all (the caller then runs the transaction again without the quarantine).
    pub fn quarantine(&mut self, op: &Op, table: &'static str, key: &str) -> Result<(), StorageError> {
        let Some(execution_id) = subject(op).and_then(|s| self.execution_of(s)) else {
            tracing::error!(table, key, "corrupted record: no execution could be identified to stop");
            return Ok(());
        };
        // Read and validate.
        let Ok(Some(exec)) = self.r.execution(execution_id) else {
            tracing::error!(execution_id, table, key, "corrupted record: the execution cannot be read to stop it");
            return Ok(());
        };
        if exec.state.is_terminal() {
            return Ok(());
        }
        let mut live = Vec::new();
        let mut root = None;
        for task_id in self.r.tasks_of(execution_id)? {
            match self.r.task(task_id) {
                Ok(Some(task)) => {
                    if task.id == exec.root_task {
                        root = Some(task.clone());
                    }
                    if matches!(task.state, TaskState::Pending | TaskState::Running | TaskState::Waiting) {
                        live.push(task);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(execution_id, task_id, error = %e, "task left as it is (unreadable)"),
            }
        }
        let parent = exec.parent.filter(|p| self.can_settle(p));
        let error = ActivityError::permanent(format!(
            "record unreadable: table {table} key {key}; execution {execution_id} was stopped"
        ))
        .with_code("corrupt_record")
        .with_details(&serde_json::json!({ "table": table, "key": key }));

        // Write.
        for mut task in live {
            let old = TaskIndex::of(&task);
            task.state = TaskState::Cancelled;
            task.lease = None;
            task.due_ms = None;
            self.r.put_task(&task, &old)?;
            self.effects.push(Effect::Abort { task_id: task.id, token: None });
        }
        let burial = Burial {
            task_id: exec.root_task,
            function: exec.function.clone(),
            queue: exec.queue.clone(),
            input: root.as_ref().map(|t| t.input.clone()).unwrap_or_default(),
            attempts: root.as_ref().map_or(0, |t| t.attempt),
            history: root.map(|t| t.history).unwrap_or_default(),
        };
        let id = self.fail_execution(exec, error.clone(), burial)?.id;
        if let Some(parent) = parent {
            self.settle_parent(parent, StepOutcome::Failed { error })?;
        }
        tracing::error!(
            execution_id,
            table,
            key,
            dead_letter = id,
            "execution stopped: one of its records is unreadable"
        );
        Ok(())
    }

    fn execution_of(&self, subject: Subject) -> Option<u64> {
        match subject {
            Subject::Execution(id) => Some(id),
            Subject::Task(task_id) => match self.r.task(task_id) {
                Ok(Some(task)) => Some(task.execution_id),
                Ok(None) => None,
                // The task itself is the damage: find its execution through the key-only index
                // (a scan, on this rare path only).
                Err(_) => self.r.execution_of_task(task_id).ok()?,
            },
            Subject::DeadLetter(id) => self.r.dead_letter(id).ok()?.map(|l| l.execution_id),
        }
    }

    /// Whether the parent's records that settling its step reads all decode.
    fn can_settle(&self, parent: &ParentStep) -> bool {
        match self.r.execution(parent.execution_id) {
            Ok(Some(p)) if !p.state.is_terminal() => {
                matches!(self.r.step(p.id, parent.step), Ok(Some(_))) && matches!(self.r.task(p.root_task), Ok(Some(_)))
            }
            // Gone or ended: settling does nothing, and reads nothing that can fail.
            Ok(_) => true,
            Err(_) => false,
        }
    }
}
