//! Schema versions: what this build writes, and the migrations from older files.

use ::redb::{Database, ReadableTable};

use super::RedbStore;
use crate::api::ExecutionState;
use crate::storage::codec::{append_fields, decode};
use crate::storage::records::{
    state_code, TaskRecord, SCHEMA5_EXECUTION_DEFAULTS, SCHEMA5_TASK_DEFAULTS, SCHEMA6_EXECUTION_DEFAULTS,
    SCHEMA6_TASK_DEFAULTS,
};
use crate::storage::tables::*;
use crate::storage::transitions::Ids;
use crate::storage::StorageError;

/// Schema version this build writes. Files with a larger one are refused.
/// Version 2 added `idx_exec_tasks` (built from the tasks on open of a version 1 file), version 3
/// `exec_counts` (counted from `idx_exec_state` on open of an older file), version 4
/// `heartbeats` (empty in an older file: no attempt there recorded details), version 5 the code
/// version of every execution and task and the run number of every execution (appended to
/// each record of an older file: version 1, run 1) and the tables of past runs (`runs`,
/// `run_steps`, empty in an older file), version 6 schedules (`schedules`, `idx_schedule_due`,
/// `idx_schedule_fires`), flow control (`rate_state`, `idx_key_slots`, `flow_keys`), all empty
/// in an older file, and the schedule fire that started each
/// execution (appended to each execution of an older file: none).
pub const SCHEMA_VERSION: u64 = 6;

/// Brings a file of schema version `from` up to `SCHEMA_VERSION`, in the open transaction.
pub(super) fn migrate(txn: &redb::WriteTransaction, from: u64) -> Result<(), StorageError> {
    tracing::info!(from, to = SCHEMA_VERSION, "migrating the database schema");
    // Record layouts first: the steps below read records with today's types.
    if from < 5 {
        // Version 5: fields appended to executions (version, run) and tasks (version).
        append_to_every_record(txn, EXECUTIONS, EXECUTIONS_NAME, &SCHEMA5_EXECUTION_DEFAULTS)?;
        append_to_every_record(txn, TASKS, TASKS_NAME, &SCHEMA5_TASK_DEFAULTS)?;
    }
    if from < 6 {
        // Version 6: the schedule that started an execution and its flow-control keys (none,
        // in an older file), a task's reserved rate-limit slot (none).
        append_to_every_record(txn, EXECUTIONS, EXECUTIONS_NAME, &SCHEMA6_EXECUTION_DEFAULTS)?;
        append_to_every_record(txn, TASKS, TASKS_NAME, &SCHEMA6_TASK_DEFAULTS)?;
    }
    if from < 2 {
        // Version 2: `idx_exec_tasks` from every task record.
        let mut index = txn.open_table(EXEC_TASKS)?;
        let tasks = txn.open_table(TASKS)?;
        for entry in tasks.iter()? {
            let (k, v) = entry?;
            match decode::<TaskRecord>(TASKS_NAME, &k.value(), v.value()) {
                Ok(task) => {
                    index.insert((task.execution_id, task.id), ())?;
                }
                // Left to `check`, which reports it; the rest of the file migrates.
                Err(e) => tracing::error!(error = %e, "task not indexed while migrating"),
            }
        }
    }
    if from < 3 {
        // Version 3: `exec_counts`, counted once from the state index (which holds an entry
        // for every execution, readable or not, as `move_count` counts them from here on).
        let by_state = txn.open_table(EXEC_BY_STATE)?;
        let mut counts = txn.open_table(EXEC_COUNTS)?;
        counts.retain(|_, _| false)?;
        for state in ExecutionState::ALL {
            let code = state_code(state);
            let n = by_state.range((code, 0)..=(code, u64::MAX))?.count() as u64;
            if n > 0 {
                counts.insert(code, n)?;
            }
        }
    }
    // Version 4: `heartbeats`, created empty with every other table by `init_schema`.
    // Version 5's `runs` and `run_steps` likewise, and version 6's schedule tables.
    Ok(())
}

/// Rewrites every record of `table` with `appended` encoded after its old fields (see
/// `codec::append_fields`), a bounded chunk at a time. A record that does not pass its
/// checksum is left as it is, for `check` to report; the rest of the file migrates.
fn append_to_every_record<T: serde::Serialize>(
    txn: &redb::WriteTransaction,
    definition: redb::TableDefinition<u64, &[u8]>,
    name: &'static str,
    appended: &T,
) -> Result<(), StorageError> {
    const CHUNK: usize = 4_096;
    let mut table = txn.open_table(definition)?;
    let mut from = 0u64;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        for entry in table.range(from..)?.take(CHUNK) {
            let (k, v) = entry?;
            let key = k.value();
            match append_fields(name, &key, v.value(), appended) {
                Ok(bytes) => chunk.push((key, Some(bytes))),
                Err(e) => {
                    tracing::error!(error = %e, "record not migrated");
                    chunk.push((key, None));
                }
            }
        }
        let Some(&(last, _)) = chunk.last() else { return Ok(()) };
        for (key, bytes) in chunk {
            if let Some(bytes) = bytes {
                table.insert(key, bytes.as_slice())?;
            }
        }
        match last.checked_add(1) {
            Some(next) => from = next,
            None => return Ok(()),
        }
    }
}

impl RedbStore {
    /// Creates or upgrades the schema; returns the next ids and the file's trace seed.
    pub(super) fn init_schema(db: &Database) -> Result<(Ids, u64), StorageError> {
        let txn = db.begin_write()?;
        let counters;
        let trace_seed;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StorageError::SchemaTooNew { found: v, supported: SCHEMA_VERSION })
                }
                Some(SCHEMA_VERSION) => {}
                Some(old) => {
                    migrate(&txn, old)?;
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            let get = |name: &str| -> Result<u64, StorageError> { Ok(meta.get(name)?.map_or(1, |v| v.value())) };
            counters = Ids {
                next_execution: get("next_execution_id")?,
                next_task: get("next_task_id")?,
                next_dead_letter: get("next_dead_letter_id")?,
            };
            let found = meta.get("trace_seed")?.map(|v| v.value());
            trace_seed = match found {
                Some(seed) => seed,
                None => {
                    let seed = fresh_trace_seed();
                    meta.insert("trace_seed", seed)?;
                    seed
                }
            };
            // Create every table so readers never meet a missing one.
            txn.open_table(EXECUTIONS)?;
            txn.open_table(TASKS)?;
            txn.open_table(READY)?;
            txn.open_table(TIMERS)?;
            txn.open_table(LEASES)?;
            txn.open_table(EXEC_BY_STATE)?;
            txn.open_table(DEADLINES)?;
            txn.open_table(IDEMPOTENCY)?;
            txn.open_table(DEAD_LETTERS)?;
            txn.open_table(DLQ_BY_TIME)?;
            txn.open_table(JOURNAL)?;
            txn.open_table(SIGNALS)?;
            txn.open_table(COUNTERS)?;
            txn.open_table(STATE)?;
            txn.open_table(CACHE)?;
            txn.open_table(CACHE_BY_EXPIRY)?;
            txn.open_table(STEP_INPUTS)?;
            txn.open_table(EXEC_TASKS)?;
            txn.open_table(EXEC_COUNTS)?;
            txn.open_table(HEARTBEATS)?;
            txn.open_table(RUNS)?;
            txn.open_table(RUN_STEPS)?;
            txn.open_table(SCHEDULES)?;
            txn.open_table(SCHEDULE_DUE)?;
            txn.open_table(SCHEDULE_FIRES)?;
            txn.open_table(RATE_STATE)?;
            txn.open_table(KEY_SLOTS)?;
            txn.open_table(FLOW_KEYS)?;
        }
        txn.commit()?;
        Ok((counters, trace_seed))
    }
}

/// A random seed for the file's trace ids (`trace_seed` in `meta`, written once, carried by
/// export and import): the high half of every execution's trace id, so executions of two files
/// never share a trace. Never zero (a trace id of zero is invalid).
fn fresh_trace_seed() -> u64 {
    use std::hash::BuildHasher;
    // `RandomState` is keyed from the operating system's randomness.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id())).max(1)
}
