//! [`Store`] on one redb file. See docs/design.md for the table layout and commit protocol.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table};

use super::codec::{decode, encode_checked};
use super::guard::unpanic;
use super::records::{
    priority_key, state_code, CachePolicy, CacheRecord, DeadLetterRecord, ExecutionRecord, JournalEntry, ParentStep,
    StepKind, StepOutcome, TaskKind, TaskRecord, JOURNAL_STEPS_MAX,
};
use super::tables::*;

mod creation;
mod quarantine;
use super::{
    ClaimedTask, CleanupCursor, Continuation, Effect, Faults, Local, NewExecution, NewStep, Op, OpOutput, OpResult,
    ReadyItem, StepBody, StepTask, StorageError, Store, TERMINAL_STATES,
};
use crate::api::{
    ActivityError, AttemptRecord, CleanupReport, DeadLetterId, ExecutionFilter, ExecutionState, Page, RetryPolicy,
    TaskId, TaskState, VerifyOnOpen,
};
use crate::error::Error;
use crate::lease::Fence;

/// Schema version this build writes. Files with a larger one are refused.
/// Version 2 added `idx_exec_tasks` (built from the tasks on open of a version 1 file), version 3
/// `exec_counts` (counted from `idx_exec_state` on open of an older file).
pub const SCHEMA_VERSION: u64 = 3;

/// Where the store lives and how it is opened.
pub struct OpenOptions {
    pub path: Option<PathBuf>,
    pub backend: Option<Box<dyn redb::StorageBackend>>,
    /// What the open verifies (docs/design.md, "Recovery at open").
    pub verify_on_open: VerifyOnOpen,
    pub faults: Arc<Faults>,
    /// Entries the cache of cached functions keeps at most; the soonest to expire go first.
    pub cache_entries_max: u64,
    /// redb's page cache; resident memory grows with the file up to this.
    pub page_cache_bytes: usize,
    /// Whether an existing file of zero bytes may become a new database. Off by default: an
    /// empty file is also what a failed copy, a full disk or a truncation leaves.
    pub init_empty_file: bool,
}

/// Lets a boxed backend be handed to redb, which takes backends by value.
#[derive(Debug)]
struct Boxed(Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for Boxed {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
}

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

#[derive(Debug, Clone, Copy)]
struct Counters {
    next_execution: u64,
    next_task: u64,
    next_dead_letter: u64,
}

pub struct RedbStore {
    db: Database,
    counters: Mutex<Counters>,
    faults: Arc<Faults>,
    cache_entries_max: u64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

type Fatal = StorageError;
/// Outer error: the batch must abort (I/O, injected fault). Inner: this op is rejected.
type OpRes<T> = Result<Result<T, Error>, Fatal>;

fn corrupted(table: &'static str, key: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupted { table, key: key.to_string() }
}

/// Brings a file of schema version `from` up to `SCHEMA_VERSION`, in the open transaction.
fn migrate(txn: &redb::WriteTransaction, from: u64) -> Result<(), StorageError> {
    tracing::info!(from, to = SCHEMA_VERSION, "migrating the database schema");
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
    Ok(())
}

impl RedbStore {
    /// Opens the file, migrates its schema, and verifies it as `verify_on_open` asks. Every step
    /// runs under `unpanic`: redb may panic on a damaged page it was not asked to verify (and
    /// documents that an unverified open may), and no input file may take the process down.
    pub fn open(options: OpenOptions) -> Result<Self, StorageError> {
        let OpenOptions { path, backend, verify_on_open, faults, cache_entries_max, page_cache_bytes, init_empty_file } =
            options;
        if let (Some(path), None) = (&path, &backend) {
            // A missing file is created; an existing one must be a database already, unless
            // the application said an empty one is its to initialise. (redb's `create` would
            // silently initialise any empty file.)
            match std::fs::metadata(path) {
                Ok(meta) if meta.len() == 0 && !init_empty_file => {
                    return Err(StorageError::EmptyFile(path.display().to_string()))
                }
                _ => {}
            }
        }
        match (&path, &backend) {
            (_, Some(backend)) => creation::reset_unfinished(creation::Target::Backend(backend.as_ref()))?,
            (Some(path), None) => creation::reset_unfinished(creation::Target::Path(path))?,
            (None, None) => {}
        }
        let full = verify_on_open == VerifyOnOpen::Full;
        let mut builder = Database::builder();
        // Full: redb verifies every page's checksum and rebuilds its allocator state from the
        // trees. Either way, after an unclean shutdown redb does both by itself.
        builder.set_check_integrity_on_open(full);
        builder.set_cache_size(page_cache_bytes);
        let mut db = unpanic("opening the file", || {
            Ok(match (path, backend) {
                (_, Some(backend)) => builder.create_with_backend(Boxed(backend)),
                (Some(path), None) => builder.create(path),
                (None, None) => builder.create_with_backend(redb::backends::InMemoryBackend::new()),
            }?)
        })?;
        let counters = match unpanic("reading the schema", || Self::init_schema(&db)) {
            Ok(counters) => counters,
            // Under Live, a damaged `meta` page can read as any version: tell that apart from a
            // file a newer stent wrote before saying "upgrade stent".
            Err(e @ StorageError::SchemaTooNew { .. }) if !full => {
                unpanic("checking every page", || Ok(db.check_integrity()?))?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut store = RedbStore { db, counters: Mutex::new(counters), faults, cache_entries_max };
        if full {
            let problems = unpanic("checking every record", || store.check())?;
            if !problems.is_empty() {
                return Err(StorageError::CorruptFile(found_at_open("the full check", &problems)));
            }
        } else {
            store.verify_live()?;
        }
        Ok(store)
    }

    /// `VerifyOnOpen::Live`: checks what recovery and the coming work depend on (see
    /// `check_live`). Any problem there makes redb check every page: a damaged file is
    /// refused; damaged records on sound pages are logged and left to reject the ops that read
    /// them (and to `check`), as they would be if met later.
    fn verify_live(&mut self) -> Result<(), StorageError> {
        let problems = unpanic("verifying the live records", || self.check_live())?;
        if problems.is_empty() {
            return Ok(());
        }
        for problem in &problems {
            tracing::error!(problem = %problem, "found at open; checking every page of the file");
        }
        let clean = match unpanic("checking every page", || Ok(self.db.check_integrity()?)) {
            Ok(clean) => clean,
            Err(StorageError::CorruptFile(why)) => {
                return Err(StorageError::CorruptFile(format!("{why}; {}", found_at_open("the live check", &problems))))
            }
            Err(e) => return Err(e),
        };
        if !clean {
            // redb repaired the file: it fell back to the commit before the damaged one, or
            // rebuilt its allocator state. What it left is checked again and, as above, logged.
            let left = unpanic("verifying the live records", || self.check_live())?;
            tracing::warn!(problems = left.len(), "redb repaired the file at open; problems left: {left:?}");
        } else {
            tracing::warn!(
                problems = problems.len(),
                "every page of the file is sound; opening with the damaged records logged above"
            );
        }
        Ok(())
    }

    /// The checks of `VerifyOnOpen::Live`, in one read transaction: every pending and running
    /// execution (from the state index) decodes and is in the state it is indexed under; each
    /// of their tasks (from `idx_exec_tasks`) decodes, belongs to it, and has the index entry its
    /// record implies; the root task is there and live (I5); `idx_ready`, `idx_timers`,
    /// `idx_leases` and `idx_deadlines` hold exactly those entries (they hold nothing else by I3);
    /// the counts of both states match the index; the id counters are past every id in use.
    /// Cost: O(live executions and their tasks), whatever the history.
    pub fn check_live(&self) -> Result<Vec<String>, StorageError> {
        use std::collections::BTreeSet;
        let read = self.db.begin_read()?;
        let executions = read.open_table(EXECUTIONS)?;
        let tasks = read.open_table(TASKS)?;
        let by_state = read.open_table(EXEC_BY_STATE)?;
        let exec_tasks = read.open_table(EXEC_TASKS)?;
        let counts = read.open_table(EXEC_COUNTS)?;
        let mut problems = counter_problems(&read)?;
        let mut expect_ready = BTreeSet::new();
        let mut expect_timers = BTreeSet::new();
        let mut expect_leases = BTreeSet::new();
        let mut expect_deadlines = BTreeSet::new();
        for state in [ExecutionState::Pending, ExecutionState::Running] {
            let code = state_code(state);
            let mut indexed = 0u64;
            for entry in by_state.range((code, 0)..=(code, u64::MAX))? {
                let id = entry?.0.value().1;
                indexed += 1;
                let exec: ExecutionRecord = match executions.get(id)? {
                    None => {
                        problems.push(format!("idx_exec_state: entry {:?} matches no record", (code, id)));
                        continue;
                    }
                    Some(v) => match decode(EXECUTIONS_NAME, &id, v.value()) {
                        Ok(exec) => exec,
                        Err(e) => {
                            problems.push(e.to_string());
                            continue;
                        }
                    },
                };
                if exec.state != state {
                    problems.push(format!("execution {id} is {} but indexed as {state}", exec.state));
                }
                if let (_, Some(d)) = execution_index(&exec) {
                    expect_deadlines.insert((d, id));
                }
                let mut root_live = None;
                for entry in exec_tasks.range((id, 0)..=(id, u64::MAX))? {
                    let task_id = entry?.0.value().1;
                    let task: TaskRecord = match tasks.get(task_id)? {
                        None => {
                            problems.push(format!("idx_exec_tasks: entry {:?} matches no record", (id, task_id)));
                            continue;
                        }
                        Some(v) => match decode(TASKS_NAME, &task_id, v.value()) {
                            Ok(task) => task,
                            Err(e) => {
                                problems.push(e.to_string());
                                continue;
                            }
                        },
                    };
                    if task.execution_id != id {
                        problems.push(format!("task {task_id} is indexed under execution {id}, not its own"));
                    }
                    if task_id == exec.root_task {
                        root_live =
                            Some(matches!(task.state, TaskState::Pending | TaskState::Running | TaskState::Waiting));
                    }
                    match task_index(&task) {
                        TaskIndex::None if task.state == TaskState::Running => {
                            problems.push(format!("task {task_id} is running without a lease"))
                        }
                        TaskIndex::None => {}
                        TaskIndex::Ready { queue, pk, ready_ms } => {
                            expect_ready.insert((queue, pk, ready_ms, task_id));
                        }
                        TaskIndex::Timer { due_ms } => {
                            expect_timers.insert((due_ms, task_id));
                        }
                        TaskIndex::Lease { expires_ms } => {
                            expect_leases.insert((expires_ms, task_id));
                        }
                    }
                }
                match root_live {
                    None => problems.push(format!("execution {id} has no root task {}", exec.root_task)),
                    Some(false) => problems.push(format!("execution {id} is {state} but its root task has ended")),
                    Some(true) => {}
                }
            }
            let stored = counts.get(code)?.map_or(0, |v| v.value());
            if stored != indexed {
                problems
                    .push(format!("exec_counts: {state} counts {stored} executions, idx_exec_state holds {indexed}"));
            }
        }
        let mut ready = BTreeSet::new();
        for entry in read.open_table(READY)?.iter()? {
            let (k, _) = entry?;
            let (q, pk, r, id) = k.value();
            ready.insert((q.to_string(), pk, r, id));
        }
        diff(&mut problems, "idx_ready", &expect_ready, &ready);
        diff(&mut problems, "idx_timers", &expect_timers, &pairs(&read, TIMERS)?);
        diff(&mut problems, "idx_leases", &expect_leases, &pairs(&read, LEASES)?);
        diff(&mut problems, "idx_deadlines", &expect_deadlines, &pairs(&read, DEADLINES)?);
        Ok(problems)
    }

    fn init_schema(db: &Database) -> Result<Counters, StorageError> {
        let txn = db.begin_write()?;
        let counters;
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
            counters = Counters {
                next_execution: get("next_execution_id")?,
                next_task: get("next_task_id")?,
                next_dead_letter: get("next_dead_letter_id")?,
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
        }
        txn.commit()?;
        Ok(counters)
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
        let mut counters = self.lock_counters();
        let mut working = *counters;
        let mut results = Vec::with_capacity(ops.len());
        let effects;
        {
            let mut batch = self.batch(&txn, &mut working, now_ms)?;
            for (at, (i, op)) in ops.iter().enumerate() {
                if let Some(r) = refused.iter().find(|r| r.at == at) {
                    results.push((*i, Err(Error::Storage(corrupted(r.table, &r.key)))));
                    continue;
                }
                let before = batch.effects.len();
                let result = match batch.apply(op.clone()) {
                    Err(StorageError::Corrupted { table, key })
                    | Ok(Err(Error::Storage(StorageError::Corrupted { table, key }))) => {
                        return Ok(Pass::Tainted { at, table, key })
                    }
                    other => other?,
                };
                if let Err(Error::LocalStepFailed { .. }) = &result {
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
            batch.save_counters()?;
            effects = batch.effects;
        }
        if Faults::take(&self.faults.fail_next_commit) {
            return Err(StorageError::Injected("commit failed"));
        }
        txn.commit()?;
        *counters = working;
        Ok(Pass::Committed((results, effects)))
    }

    fn batch<'a, 't>(
        &'a self,
        txn: &'t redb::WriteTransaction,
        counters: &'a mut Counters,
        now: u64,
    ) -> Result<Batch<'a, 't>, StorageError> {
        Ok(Batch {
            txn,
            cache_entries_max: self.cache_entries_max,
            t: Tables::open(txn)?,
            counters,
            faults: &self.faults,
            now,
            effects: Vec::new(),
        })
    }

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // Poisoning only happens if a holder panicked; the counters are plain integers and
        // stay valid, so take them anyway.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The tables of one write transaction, opened once per batch.
struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    executions: Table<'t, u64, &'static [u8]>,
    tasks: Table<'t, u64, &'static [u8]>,
    ready: Table<'t, (&'static str, u32, u64, u64), ()>,
    timers: Table<'t, (u64, u64), ()>,
    leases: Table<'t, (u64, u64), ()>,
    by_state: Table<'t, (u8, u64), ()>,
    deadlines: Table<'t, (u64, u64), ()>,
    idempotency: Table<'t, &'static str, u64>,
    dead_letters: Table<'t, u64, &'static [u8]>,
    dlq_by_time: Table<'t, (u64, u64), ()>,
    journal: Table<'t, (u64, u32), &'static [u8]>,
    signals: Table<'t, (u64, &'static str, u64), &'static [u8]>,
    counters: Table<'t, (u64, &'static str), i64>,
    state: Table<'t, (u64, &'static str), &'static [u8]>,
    cache: Table<'t, (&'static str, u32, &'static [u8]), &'static [u8]>,
    cache_by_expiry: Table<'t, (u64, &'static str, u32, &'static [u8]), ()>,
    step_inputs: Table<'t, (u64, u32), &'static [u8]>,
    exec_tasks: Table<'t, (u64, u64), ()>,
    exec_counts: Table<'t, u8, u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t redb::WriteTransaction) -> Result<Self, StorageError> {
        Ok(Tables {
            meta: txn.open_table(META)?,
            executions: txn.open_table(EXECUTIONS)?,
            tasks: txn.open_table(TASKS)?,
            ready: txn.open_table(READY)?,
            timers: txn.open_table(TIMERS)?,
            leases: txn.open_table(LEASES)?,
            by_state: txn.open_table(EXEC_BY_STATE)?,
            deadlines: txn.open_table(DEADLINES)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            dead_letters: txn.open_table(DEAD_LETTERS)?,
            dlq_by_time: txn.open_table(DLQ_BY_TIME)?,
            journal: txn.open_table(JOURNAL)?,
            signals: txn.open_table(SIGNALS)?,
            counters: txn.open_table(COUNTERS)?,
            state: txn.open_table(STATE)?,
            cache: txn.open_table(CACHE)?,
            cache_by_expiry: txn.open_table(CACHE_BY_EXPIRY)?,
            step_inputs: txn.open_table(STEP_INPUTS)?,
            exec_tasks: txn.open_table(EXEC_TASKS)?,
            exec_counts: txn.open_table(EXEC_COUNTS)?,
        })
    }
}

/// The one index entry a task record implies (docs/design.md, invariant I3).
#[derive(Debug, Clone, PartialEq)]
enum TaskIndex {
    None,
    Ready { queue: String, pk: u32, ready_ms: u64 },
    Timer { due_ms: u64 },
    Lease { expires_ms: u64 },
}

fn task_index(task: &TaskRecord) -> TaskIndex {
    match task.state {
        TaskState::Pending => match task.due_ms {
            Some(due_ms) => TaskIndex::Timer { due_ms },
            None => {
                TaskIndex::Ready { queue: task.queue.clone(), pk: priority_key(task.priority), ready_ms: task.ready_ms }
            }
        },
        TaskState::Running => match &task.lease {
            Some(lease) => TaskIndex::Lease { expires_ms: lease.expires_ms },
            None => TaskIndex::None, // Broken invariant; `check` reports it.
        },
        TaskState::Waiting | TaskState::Completed | TaskState::Failed | TaskState::Cancelled => TaskIndex::None,
    }
}

fn ready_item(task: &TaskRecord) -> ReadyItem {
    ReadyItem {
        task_id: task.id,
        execution_id: task.execution_id,
        function: task.function.clone(),
        queue: task.queue.clone(),
        priority: task.priority,
        ready_ms: task.ready_ms,
        tags: task.tags.clone(),
    }
}

/// The effect that puts a pending task into memory.
fn pending_effect(task: &TaskRecord) -> Effect {
    match task.due_ms {
        Some(due_ms) => Effect::Timer { due_ms, item: ready_item(task) },
        None => Effect::Ready(ready_item(task)),
    }
}

fn get_task(t: &Tables<'_>, id: u64) -> Result<Option<TaskRecord>, StorageError> {
    match t.tasks.get(id)? {
        Some(v) => Ok(Some(decode(TASKS_NAME, &id, v.value())?)),
        None => Ok(None),
    }
}

fn get_step(t: &Tables<'_>, execution_id: u64, step: u32) -> Result<Option<JournalEntry>, StorageError> {
    match t.journal.get((execution_id, step))? {
        Some(v) => Ok(Some(decode(JOURNAL_NAME, &format_args!("({execution_id}, {step})"), v.value())?)),
        None => Ok(None),
    }
}

fn put_step(t: &mut Tables<'_>, execution_id: u64, entry: &JournalEntry) -> Result<(), StorageError> {
    t.journal.insert((execution_id, entry.step), encode_checked(JOURNAL_NAME, entry).as_slice())?;
    Ok(())
}

fn journal_of(
    journal: &impl ReadableTable<(u64, u32), &'static [u8]>,
    execution_id: u64,
) -> Result<Vec<JournalEntry>, StorageError> {
    let mut out = Vec::new();
    for entry in journal.range((execution_id, 0)..=(execution_id, u32::MAX))? {
        let (k, v) = entry?;
        let step = k.value().1;
        out.push(decode(JOURNAL_NAME, &format_args!("({execution_id}, {step})"), v.value())?);
    }
    Ok(out)
}

/// `[payload]`: the outcome of a timed signal wait that got its signal.
fn wrap_one(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 2);
    out.push(b'[');
    out.extend_from_slice(payload);
    out.push(b']');
    out
}

fn get_execution(t: &Tables<'_>, id: u64) -> Result<Option<ExecutionRecord>, StorageError> {
    match t.executions.get(id)? {
        Some(v) => Ok(Some(decode(EXECUTIONS_NAME, &id, v.value())?)),
        None => Ok(None),
    }
}

/// Writes a task and moves its index entry from `old` (the entry before the change) to the
/// one the record now implies.
/// Writes a new task with its index entries, including the one that ties it to its execution.
fn insert_task(t: &mut Tables<'_>, task: &TaskRecord) -> Result<(), StorageError> {
    t.exec_tasks.insert((task.execution_id, task.id), ())?;
    put_task(t, task, &TaskIndex::None)
}

fn put_task(t: &mut Tables<'_>, task: &TaskRecord, old: &TaskIndex) -> Result<(), StorageError> {
    let new = task_index(task);
    if *old != new {
        remove_task_index(t, task.id, old)?;
        match &new {
            TaskIndex::None => {}
            TaskIndex::Ready { queue, pk, ready_ms } => {
                t.ready.insert((queue.as_str(), *pk, *ready_ms, task.id), ())?;
            }
            TaskIndex::Timer { due_ms } => {
                t.timers.insert((*due_ms, task.id), ())?;
            }
            TaskIndex::Lease { expires_ms } => {
                t.leases.insert((*expires_ms, task.id), ())?;
            }
        }
    }
    t.tasks.insert(task.id, encode_checked(TASKS_NAME, task).as_slice())?;
    Ok(())
}

fn remove_task_index(t: &mut Tables<'_>, id: u64, index: &TaskIndex) -> Result<(), StorageError> {
    match index {
        TaskIndex::None => {}
        TaskIndex::Ready { queue, pk, ready_ms } => {
            t.ready.remove((queue.as_str(), *pk, *ready_ms, id))?;
        }
        TaskIndex::Timer { due_ms } => {
            t.timers.remove((*due_ms, id))?;
        }
        TaskIndex::Lease { expires_ms } => {
            t.leases.remove((*expires_ms, id))?;
        }
    }
    Ok(())
}

enum Retention {
    Remove,
    Keep,
    /// Created at or after the cutoff: so is every execution with a larger id (ids follow
    /// creation), and none of them can have ended before it.
    NewerFromHere,
}

fn retention(exec: &ExecutionRecord, cutoff_ms: u64) -> Retention {
    if exec.created_ms >= cutoff_ms {
        Retention::NewerFromHere
    } else if exec.state.is_terminal() && exec.finished_ms.is_some_and(|f| f < cutoff_ms) {
        Retention::Remove
    } else {
        Retention::Keep
    }
}

/// Index entries an execution record implies: its state, and its deadline while live.
fn execution_index(exec: &ExecutionRecord) -> (u8, Option<u64>) {
    let deadline = if exec.state.is_terminal() { None } else { exec.deadline_ms };
    (state_code(exec.state), deadline)
}

fn put_execution(
    t: &mut Tables<'_>,
    exec: &ExecutionRecord,
    old: Option<(u8, Option<u64>)>,
) -> Result<(), StorageError> {
    let (state, deadline) = execution_index(exec);
    let (old_state, old_deadline) = match old {
        Some((s, d)) => (Some(s), d),
        None => (None, None),
    };
    if old_state != Some(state) {
        if let Some(s) = old_state {
            t.by_state.remove((s, exec.id))?;
        }
        t.by_state.insert((state, exec.id), ())?;
        move_count(t, old_state, Some(state))?;
    }
    if old_deadline != deadline {
        if let Some(d) = old_deadline {
            t.deadlines.remove((d, exec.id))?;
        }
        if let Some(d) = deadline {
            t.deadlines.insert((d, exec.id), ())?;
        }
    }
    t.executions.insert(exec.id, encode_checked(EXECUTIONS_NAME, exec).as_slice())?;
    Ok(())
}

/// Moves one execution between the per-state counts (`None`: created, or removed). The only
/// writer of `exec_counts`, called by `put_execution` and `remove_execution` beside the state
/// index entry they move, so the counts change in the same transaction as the states they count.
fn move_count(t: &mut Tables<'_>, from: Option<u8>, to: Option<u8>) -> Result<(), StorageError> {
    if let Some(code) = from {
        let n = t.exec_counts.get(code)?.map_or(0, |v| v.value());
        // Zero here means the stored count is already wrong (damaged, or a bug); failing the
        // write would stop unrelated work, so keep going and leave the mismatch to `check`.
        if n == 0 {
            tracing::error!(state = code, "execution count would go below zero; `check` reports the mismatch");
        }
        t.exec_counts.insert(code, n.saturating_sub(1))?;
    }
    if let Some(code) = to {
        let n = t.exec_counts.get(code)?.map_or(0, |v| v.value());
        t.exec_counts.insert(code, n.saturating_add(1))?;
    }
    Ok(())
}

macro_rules! reject {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(rejection) => return Ok(Err(rejection.into())),
        }
    };
}

/// Splits a read's error: a record that fails to decode rejects only the op that read it (the
/// batch goes on, the engine stays writable); an I/O error aborts the batch.
fn soft<T>(r: Result<T, StorageError>) -> OpRes<T> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e @ StorageError::Corrupted { .. }) => {
            tracing::error!(error = %e, "corrupted record; the operation that read it is rejected");
            Ok(Err(Error::Storage(e)))
        }
        Err(e) => Err(e),
    }
}

/// Reads a task and its execution for a transition; a missing or corrupt one rejects the op.
fn load_pair(t: &Tables<'_>, task_id: u64) -> OpRes<(TaskRecord, ExecutionRecord)> {
    let Some(task) = reject!(soft(get_task(t, task_id))?) else {
        return Ok(Err(Error::UnknownTask { task_id: TaskId(task_id) }));
    };
    let Some(exec) = reject!(soft(get_execution(t, task.execution_id))?) else {
        return Ok(Err(Error::Storage(corrupted(EXECUTIONS_NAME, format!("{} (missing)", task.execution_id)))));
    };
    Ok(Ok((task, exec)))
}

struct Batch<'a, 't> {
    txn: &'t redb::WriteTransaction,
    cache_entries_max: u64,
    t: Tables<'t>,
    counters: &'a mut Counters,
    faults: &'a Faults,
    now: u64,
    effects: Vec<Effect>,
}

impl Batch<'_, '_> {
    fn apply(&mut self, op: Op) -> OpRes<OpOutput> {
        match op {
            Op::Dispatch(new) => self.dispatch(new),
            Op::Claim { task_id, worker, lease_ms } => self.claim(task_id, &worker, lease_ms),
            Op::Renew { leases, lease_ms } => self.renew(&leases, lease_ms),
            Op::Complete { task_id, token, output, local, next } => self.complete(task_id, token, output, local, next),
            Op::Fail { task_id, token, error, jitter_unit } => self.fail(task_id, token, error, jitter_unit),
            Op::Expire { task_id, token } => self.expire(task_id, token),
            Op::Abandon { task_id, token, reason } => self.abandon(task_id, token, reason),
            Op::Suspend { task_id, token, steps, awaiting, next } => {
                self.suspend(task_id, token, steps, &awaiting, next)
            }
            Op::Cancel { execution_id } => self.end_execution(execution_id, ExecutionState::Cancelled),
            Op::Signal { execution_id, name, payload } => self.signal(execution_id, &name, payload),
            Op::TimeOut { execution_id } => self.end_execution(execution_id, ExecutionState::TimedOut),
            Op::ReplayDeadLetter { id, input } => self.replay(id, input),
            Op::DiscardDeadLetter { id } => self.discard(id),
            Op::ReplayDeadLetterStep { id, step, input } => self.replay_step(id, step, input),
            Op::Cleanup { cutoff_ms, budget, from } => self.cleanup(cutoff_ms, budget, from),
        }
    }

    fn dispatch(&mut self, new: NewExecution) -> OpRes<OpOutput> {
        if let Some(key) = &new.idempotency_key {
            if let Some(existing) = self.t.idempotency.get(key.as_str())? {
                return Ok(Ok(OpOutput::Dispatched { execution_id: existing.value(), created: false, claimed: None }));
            }
        }
        let claim = new.claim.clone();
        let hit = if new.delay_ms == 0 { self.cached(new.cache, &new.function, &new.input)? } else { None };
        let (exec, task) = self.create_execution(new, None)?;
        let (execution_id, task_id) = (exec.id, task.id);
        if let Some(output) = hit {
            // A cached function's fresh result: the execution is done as it is created.
            self.finish_from_cache(task, exec, output)?;
            return Ok(Ok(OpOutput::Dispatched { execution_id, created: true, claimed: None }));
        }
        let claimed = match claim {
            Some(eager) if task.due_ms.is_none() => {
                let claimed = self.take_lease(task, exec, &eager.worker, eager.lease_ms)?;
                self.effects.push(Effect::Claimed { serial: eager.serial, task_id, token: claimed.token });
                Some(claimed)
            }
            _ => {
                self.effects.push(pending_effect(&task));
                None
            }
        };
        Ok(Ok(OpOutput::Dispatched { execution_id, created: true, claimed }))
    }

    fn finish_from_cache(
        &mut self,
        mut task: TaskRecord,
        mut exec: ExecutionRecord,
        output: Vec<u8>,
    ) -> Result<(), StorageError> {
        let old = task_index(&task);
        task.state = TaskState::Completed;
        put_task(&mut self.t, &task, &old)?;
        let old = execution_index(&exec);
        exec.state = ExecutionState::Completed;
        exec.started_ms = Some(self.now);
        exec.finished_ms = Some(self.now);
        exec.output = Some(output);
        put_execution(&mut self.t, &exec, Some(old))?;
        self.effects.push(Effect::Finished { execution_id: exec.id });
        Ok(())
    }

    /// Writes a new execution and its root task (pending; the caller queues or claims it).
    fn create_execution(
        &mut self,
        new: NewExecution,
        parent: Option<ParentStep>,
    ) -> Result<(ExecutionRecord, TaskRecord), StorageError> {
        let execution_id = self.counters.next_execution;
        let task_id = self.counters.next_task;
        self.counters.next_execution += 1;
        self.counters.next_task += 1;
        let now = self.now;
        let scheduled_ms = now.saturating_add(new.delay_ms);
        let deadline_ms = new.max_duration_ms.map(|d| scheduled_ms.saturating_add(d));
        let exec = ExecutionRecord {
            id: execution_id,
            function: new.function.clone(),
            queue: new.queue.clone(),
            priority: new.priority,
            tags: new.tags.clone(),
            state: ExecutionState::Pending,
            root_task: task_id,
            created_ms: now,
            scheduled_ms,
            started_ms: None,
            finished_ms: None,
            max_duration_ms: new.max_duration_ms,
            deadline_ms,
            output: None,
            error: None,
            idempotency_key: new.idempotency_key.clone(),
            parent,
        };
        put_execution(&mut self.t, &exec, None)?;
        if Faults::take(&self.faults.fail_between_execution_and_task) {
            return Err(StorageError::Injected("between execution and root task"));
        }
        let task = TaskRecord {
            id: task_id,
            execution_id,
            kind: new.kind,
            step: None,
            function: new.function,
            queue: new.queue,
            priority: new.priority,
            tags: new.tags,
            input: new.input,
            state: TaskState::Pending,
            due_ms: (new.delay_ms > 0).then_some(scheduled_ms),
            ready_ms: scheduled_ms,
            attempt: 0,
            round_start: 0,
            lease: None,
            retry: new.retry,
            timeout_ms: new.timeout_ms,
            cache: new.cache,
            history: Vec::new(),
            created_ms: now,
        };
        insert_task(&mut self.t, &task)?;
        if let Some(key) = &new.idempotency_key {
            self.t.idempotency.insert(key.as_str(), execution_id)?;
        }
        if let Some(deadline_ms) = deadline_ms {
            self.effects.push(Effect::Deadline { execution_id, deadline_ms });
        }
        Ok((exec, task))
    }

    fn claim(&mut self, task_id: u64, worker: &str, lease_ms: u64) -> OpRes<OpOutput> {
        let (task, exec) = reject!(load_pair(&self.t, task_id)?);
        let due = task.due_ms.is_none_or(|d| d <= self.now);
        if task.state != TaskState::Pending || !due || exec.state.is_terminal() {
            return Ok(Err(Error::TaskNotClaimable { task_id: TaskId(task_id) }));
        }
        if task.lease.is_some() {
            return Ok(Err(Error::TaskNotClaimable { task_id: TaskId(task_id) }));
        }
        if task.attempt == u32::MAX {
            return Ok(Err(Error::TokensExhausted { task_id: TaskId(task_id) }));
        }
        Ok(Ok(OpOutput::Claimed(self.take_lease(task, exec, worker, lease_ms)?)))
    }

    /// The claim itself, on a pending task of a live execution without a lease.
    fn take_lease(
        &mut self,
        mut task: TaskRecord,
        mut exec: ExecutionRecord,
        worker: &str,
        lease_ms: u64,
    ) -> Result<ClaimedTask, StorageError> {
        let task_id = task.id;
        let old = task_index(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        let token = fence
            .claim(worker, self.now, lease_ms)
            .map_err(|_| corrupted(TASKS_NAME, format!("{task_id} (claimed while leased)")))?;
        task.state = TaskState::Running;
        task.due_ms = None;
        put_task(&mut self.t, &task, &old)?;
        if exec.state == ExecutionState::Pending {
            let old = execution_index(&exec);
            exec.state = ExecutionState::Running;
            exec.started_ms.get_or_insert(self.now);
            put_execution(&mut self.t, &exec, Some(old))?;
        }
        let lease_expires_ms = self.now.saturating_add(lease_ms);
        self.effects.push(Effect::Lease { task_id, token, expires_ms: lease_expires_ms });
        Ok(ClaimedTask {
            task_id,
            execution_id: task.execution_id,
            kind: task.kind,
            wakes: task.step.map(|_| exec.function.clone()),
            queue: task.queue,
            function: task.function,
            input: task.input,
            token,
            lease_expires_ms,
            timeout_ms: task.timeout_ms,
        })
    }

    fn renew(&mut self, leases: &[(u64, u32)], lease_ms: u64) -> OpRes<OpOutput> {
        let mut results = Vec::with_capacity(leases.len());
        for &(task_id, token) in leases {
            let mut task = match soft(get_task(&self.t, task_id))? {
                Ok(Some(task)) => task,
                Ok(None) => {
                    results.push(Err(crate::lease::LeaseError::LeaseLost { task_id, token }.into()));
                    continue;
                }
                Err(corrupt) => {
                    results.push(Err(corrupt));
                    continue;
                }
            };
            let old = task_index(&task);
            let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
            match fence.renew(token, self.now, lease_ms) {
                Ok(expires_ms) => {
                    put_task(&mut self.t, &task, &old)?;
                    self.effects.push(Effect::Lease { task_id, token, expires_ms });
                    results.push(Ok(expires_ms));
                }
                Err(lost) => results.push(Err(lost.into())),
            }
        }
        Ok(Ok(OpOutput::Renewed(results)))
    }

    fn complete(
        &mut self,
        task_id: u64,
        token: u32,
        output: Vec<u8>,
        local: Local,
        next: Option<Continuation>,
    ) -> OpRes<OpOutput> {
        let (mut task, mut exec) = reject!(load_pair(&self.t, task_id)?);
        let old = task_index(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        reject!(fence.release(token));
        task.state = TaskState::Completed;
        if let Some(policy) = task.cache {
            self.cache_put(policy, &task.function, &task.input, &output)?;
        }
        // What the attempt recorded counts only with its accepted outcome: exactly once.
        for (name, delta) in &local.counters {
            self.add_counter(exec.id, name, *delta)?;
        }
        for (key, value) in &local.state {
            self.t.state.insert((exec.id, key.as_str()), value.as_slice())?;
        }
        if task.kind == TaskKind::Workflow && task.step.is_none() {
            for s in local.steps {
                if get_step(&self.t, exec.id, s.step)?.is_some() {
                    continue;
                }
                let Some(outcome) = self.local_outcome(exec.id, s.body)? else { continue };
                put_step(
                    &mut self.t,
                    exec.id,
                    &JournalEntry { step: s.step, kind: s.kind, outcome, recorded_ms: self.now },
                )?;
            }
        }
        if let Some(step) = task.step {
            put_task(&mut self.t, &task, &old)?;
            // The timer of a signal wait fired first: the wait timed out (an empty array).
            let timed_out = matches!(
                get_step(&self.t, exec.id, step)?,
                Some(JournalEntry { outcome: StepOutcome::AwaitingSignal { timer: Some(t) }, .. }) if t == task_id
            );
            let output = if timed_out { b"[]".to_vec() } else { output };
            let claimed = self.settle_step_for(&exec, step, StepOutcome::Completed { output }, next.as_ref())?;
            return Ok(Ok(claimed.map_or(OpOutput::Done, OpOutput::Next)));
        }
        put_task(&mut self.t, &task, &old)?;
        if task.kind == TaskKind::Workflow {
            let journal = journal_of(&self.t.journal, exec.id)?;
            self.cancel_steps(&journal)?;
        }
        let old = execution_index(&exec);
        exec.state = ExecutionState::Completed;
        exec.output = Some(output);
        exec.finished_ms = Some(self.now);
        put_execution(&mut self.t, &exec, Some(old))?;
        self.effects.push(Effect::Finished { execution_id: exec.id });
        if let (Some(parent), Some(output)) = (exec.parent, exec.output) {
            self.settle_parent(parent, StepOutcome::Completed { output })?;
        }
        Ok(Ok(OpOutput::Done))
    }

    fn fail(&mut self, task_id: u64, token: u32, error: ActivityError, jitter_unit: f64) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(load_pair(&self.t, task_id)?);
        let old = task_index(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        let lease = reject!(fence.release(token));
        task.push_history(AttemptRecord {
            attempt: token,
            worker: lease.worker,
            started_ms: lease.started_ms,
            ended_ms: self.now,
            error: error.clone(),
        });
        let policy = RetryPolicy::from(&task.retry);
        let attempts = task.attempts_in_round();
        if policy.retries(&error) && attempts < policy.max_attempts {
            let delay_ms = super::records::duration_ms(policy.delay_after(attempts, jitter_unit));
            self.requeue(task, &old, delay_ms)?;
        } else {
            self.bury(task, &old, exec, error)?;
        }
        Ok(Ok(OpOutput::Done))
    }

    fn expire(&mut self, task_id: u64, token: u32) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(load_pair(&self.t, task_id)?);
        let old = task_index(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        let Some(lease) = fence.expire(token, self.now) else {
            return Ok(Ok(OpOutput::Expired(false)));
        };
        let error = ActivityError::retryable(format!(
            "lease of worker {:?} expired at {} ms without a heartbeat",
            lease.worker, lease.expires_ms
        ))
        .with_code("lease_expired");
        self.effects.push(Effect::Abort { task_id, token: Some(token) });
        self.after_lost_attempt(task, &old, exec, lease, error)?;
        Ok(Ok(OpOutput::Expired(true)))
    }

    fn suspend(
        &mut self,
        task_id: u64,
        token: u32,
        steps: Vec<NewStep>,
        awaiting: &[u32],
        next: Option<Continuation>,
    ) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(load_pair(&self.t, task_id)?);
        if task.kind != TaskKind::Workflow || task.step.is_some() || exec.state.is_terminal() {
            return Ok(Err(Error::TaskNotClaimable { task_id: TaskId(task_id) }));
        }
        reject!(Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease }.check(token));
        // Validate everything before the first write.
        for s in &steps {
            if s.step >= JOURNAL_STEPS_MAX {
                return Ok(Err(Error::JournalFull {
                    execution_id: crate::api::ExecutionId(exec.id),
                    steps_max: JOURNAL_STEPS_MAX,
                }));
            }
            if let Some(existing) = reject!(soft(get_step(&self.t, exec.id, s.step))?) {
                // Recorded before (a step this attempt did not know of): never overwrite.
                return Ok(Err(Error::NonDeterminism {
                    step: s.step,
                    recorded: existing.kind.to_string(),
                    requested: s.kind.to_string(),
                }));
            }
        }
        let old = task_index(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        reject!(fence.release(token));
        // A suspension is progress: the retry budget (which guards against an attempt that
        // keeps killing its process) starts again with the next attempt.
        task.round_start = task.attempt;
        let mut continue_with = None;
        for s in steps {
            let outcome = match s.body {
                StepBody::Recorded(output) => StepOutcome::Completed { output },
                StepBody::Signal { name, timer } => match self.take_signal(exec.id, &name)? {
                    Some(payload) if timer.is_some() => StepOutcome::Completed { output: wrap_one(&payload) },
                    Some(payload) => StepOutcome::Completed { output: payload },
                    None => {
                        let timer = match timer {
                            Some(t) => Some(self.create_step_task(&exec, s.step, t, true)?),
                            None => None,
                        };
                        StepOutcome::AwaitingSignal { timer }
                    }
                },
                StepBody::Local(f) => {
                    let Some(f) = f.take() else {
                        return Ok(Err(Error::Internal(format!("local step {} ran twice", s.step))));
                    };
                    let txn = self.txn;
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(txn)));
                    match run {
                        Ok(Ok(output)) => StepOutcome::Completed { output },
                        Ok(Err(error)) => return Ok(Err(Error::LocalStepFailed { step: s.step, error })),
                        Err(_) => {
                            let error = ActivityError::permanent("the local step panicked").with_code("panic");
                            return Ok(Err(Error::LocalStepFailed { step: s.step, error }));
                        }
                    }
                }
                StepBody::Failed(error) => StepOutcome::Failed { error },
                body @ (StepBody::Counter { .. } | StepBody::SetState { .. } | StepBody::GetState { .. }) => {
                    match self.local_outcome(exec.id, body)? {
                        Some(outcome) => outcome,
                        None => continue,
                    }
                }
                StepBody::Child(new) => {
                    let parent = ParentStep { execution_id: exec.id, step: s.step };
                    let (child, root) = self.create_execution(new, Some(parent))?;
                    self.effects.push(pending_effect(&root));
                    StepOutcome::Child { execution_id: child.id }
                }
                StepBody::Task(mut t) => match self.cached(t.cache, &t.function, &t.input)? {
                    // A cached function's fresh result: the step is done without a task.
                    Some(output) => StepOutcome::Completed { output },
                    None => {
                        // An operator's edited input for this step (a DLQ replay) wins, once.
                        if let Some(v) = self.t.step_inputs.remove((exec.id, s.step))? {
                            t.input = v.value().to_vec();
                        }
                        let for_me = next.as_ref().is_some_and(|c| {
                            c.step == Some(s.step) && c.function == t.function && t.due_ms.is_none_or(|d| d <= self.now)
                        });
                        let task_id = self.create_step_task(&exec, s.step, t, !for_me)?;
                        if for_me {
                            continue_with = Some(task_id);
                        }
                        StepOutcome::Scheduled { task_id }
                    }
                },
            };
            let entry = JournalEntry { step: s.step, kind: s.kind, outcome, recorded_ms: self.now };
            put_step(&mut self.t, exec.id, &entry)?;
        }
        // Read after the writes: a step recorded just now may already have its outcome.
        let mut settled = false;
        for &step in awaiting {
            let entry = get_step(&self.t, exec.id, step)?;
            settled |= matches!(
                entry,
                Some(JournalEntry { outcome: StepOutcome::Completed { .. } | StepOutcome::Failed { .. }, .. })
            );
        }
        if settled {
            task.state = TaskState::Pending;
            task.due_ms = None;
            task.ready_ms = self.now;
        } else {
            task.state = TaskState::Waiting;
        }
        put_task(&mut self.t, &task, &old)?;
        if settled {
            self.effects.push(pending_effect(&task));
        }
        // The first new step's task, claimed for the worker whose attempt just suspended.
        if let (Some(child_id), Some(c)) = (continue_with, next.as_ref()) {
            let child = get_task(&self.t, child_id)?.ok_or_else(|| corrupted(TASKS_NAME, child_id))?;
            if c.accepts(&child) {
                let exec = get_execution(&self.t, exec.id)?.ok_or_else(|| corrupted(EXECUTIONS_NAME, exec.id))?;
                return Ok(Ok(OpOutput::Next(self.claim_for(child, exec, c)?)));
            }
            self.effects.push(pending_effect(&child));
        }
        Ok(Ok(OpOutput::Done))
    }

    /// Cancels the live tasks of scheduled steps (the execution is ending).
    fn cancel_steps(&mut self, journal: &[JournalEntry]) -> Result<(), StorageError> {
        for entry in journal {
            if let StepOutcome::Child { execution_id } = entry.outcome {
                // Cancels the child and, through it, its own children. A rejection (the child
                // record unreadable) leaves that child to `check`.
                if let Err(e) = self.end_execution(execution_id, ExecutionState::Cancelled)? {
                    tracing::error!(execution_id, error = %e, "child execution not cancelled");
                }
                continue;
            }
            if let StepOutcome::Scheduled { task_id } | StepOutcome::AwaitingSignal { timer: Some(task_id) } =
                entry.outcome
            {
                self.cancel_task(task_id)?;
            }
        }
        Ok(())
    }

    /// Creates the task of a step (pending, due now or at `due_ms`) and queues it.
    fn create_step_task(
        &mut self,
        exec: &ExecutionRecord,
        step: u32,
        t: StepTask,
        queue_it: bool,
    ) -> Result<u64, StorageError> {
        let child_id = self.counters.next_task;
        self.counters.next_task += 1;
        let due_ms = t.due_ms.filter(|&d| d > self.now);
        let child = TaskRecord {
            id: child_id,
            execution_id: exec.id,
            kind: TaskKind::Activity,
            step: Some(step),
            function: t.function,
            queue: t.queue,
            priority: t.priority,
            tags: exec.tags.clone(),
            input: t.input,
            state: TaskState::Pending,
            due_ms,
            ready_ms: due_ms.unwrap_or(self.now),
            attempt: 0,
            round_start: 0,
            lease: None,
            retry: t.retry,
            timeout_ms: t.timeout_ms,
            cache: t.cache,
            history: Vec::new(),
            created_ms: self.now,
        };
        insert_task(&mut self.t, &child)?;
        if queue_it {
            self.effects.push(pending_effect(&child));
        }
        Ok(child_id)
    }

    /// Cancels one live task (its step no longer needs it).
    fn cancel_task(&mut self, task_id: u64) -> Result<(), StorageError> {
        let Some(mut task) = get_task(&self.t, task_id)? else { return Ok(()) };
        if matches!(task.state, TaskState::Pending | TaskState::Running | TaskState::Waiting) {
            let old = task_index(&task);
            task.state = TaskState::Cancelled;
            task.lease = None;
            task.due_ms = None;
            put_task(&mut self.t, &task, &old)?;
            self.effects.push(Effect::Abort { task_id, token: None });
        }
        Ok(())
    }

    /// A cached function's unexpired result for `input`, if any.
    fn cached(
        &self,
        policy: Option<CachePolicy>,
        function: &str,
        input: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(policy) = policy else { return Ok(None) };
        let Some(v) = self.t.cache.get((function, policy.version, input))? else { return Ok(None) };
        // A damaged cache entry is only a miss: the function runs again.
        let Ok(record) = decode::<CacheRecord>(CACHE_NAME, &function, v.value()) else { return Ok(None) };
        Ok((record.expires_ms > self.now).then_some(record.output))
    }

    fn cache_put(
        &mut self,
        policy: CachePolicy,
        function: &str,
        input: &[u8],
        output: &[u8],
    ) -> Result<(), StorageError> {
        let key = (function, policy.version, input);
        let old = self.t.cache.get(key)?.and_then(|v| decode::<CacheRecord>(CACHE_NAME, &function, v.value()).ok());
        if let Some(old) = old {
            self.t.cache_by_expiry.remove((old.expires_ms, function, policy.version, input))?;
        }
        let expires_ms = self.now.saturating_add(policy.ttl_ms);
        let record = CacheRecord { output: output.to_vec(), expires_ms };
        self.t.cache.insert(key, encode_checked(CACHE_NAME, &record).as_slice())?;
        self.t.cache_by_expiry.insert((expires_ms, function, policy.version, input), ())?;
        self.evict_cache()
    }

    /// Removes expired entries (a few per call) and, beyond `cache_entries_max`, the entries
    /// that expire soonest.
    fn evict_cache(&mut self) -> Result<(), StorageError> {
        const EXPIRED_PER_CALL: usize = 16;
        let len = self.t.cache.len()?;
        let over = len.saturating_sub(self.cache_entries_max) as usize;
        let mut victims = Vec::new();
        for entry in self.t.cache_by_expiry.iter()? {
            let (k, _) = entry?;
            let (expires_ms, function, version, input) = k.value();
            let expired = expires_ms <= self.now && victims.len() < EXPIRED_PER_CALL + over;
            if !(expired || victims.len() < over) {
                break;
            }
            victims.push((expires_ms, function.to_string(), version, input.to_vec()));
        }
        self.remove_cache_entries(&victims)
    }

    /// Removes cache entries named by their expiry index keys, with those keys.
    fn remove_cache_entries(&mut self, victims: &[(u64, String, u32, Vec<u8>)]) -> Result<(), StorageError> {
        for (expires_ms, function, version, input) in victims {
            self.t.cache_by_expiry.remove((*expires_ms, function.as_str(), *version, input.as_slice()))?;
            self.t.cache.remove((function.as_str(), *version, input.as_slice()))?;
        }
        Ok(())
    }

    fn add_counter(&mut self, execution_id: u64, name: &str, delta: i64) -> Result<i64, StorageError> {
        let current = self.t.counters.get((execution_id, name))?.map_or(0, |v| v.value());
        let total = current.saturating_add(delta);
        self.t.counters.insert((execution_id, name), total)?;
        Ok(total)
    }

    /// Applies a step whose outcome is decided inside the transaction (counters, state, values
    /// known to the attempt). Steps that need a task are not local: `None`.
    fn local_outcome(&mut self, execution_id: u64, body: StepBody) -> Result<Option<StepOutcome>, StorageError> {
        let output = match body {
            StepBody::Recorded(output) => output,
            StepBody::Counter { name, delta } => {
                let total = self.add_counter(execution_id, &name, delta)?;
                total.to_string().into_bytes()
            }
            StepBody::SetState { key, value } => {
                self.t.state.insert((execution_id, key.as_str()), value.as_slice())?;
                b"null".to_vec()
            }
            StepBody::GetState { key } => match self.t.state.get((execution_id, key.as_str()))? {
                Some(v) => wrap_one(v.value()),
                None => b"[]".to_vec(),
            },
            StepBody::Task(_)
            | StepBody::Signal { .. }
            | StepBody::Child(_)
            | StepBody::Local(_)
            | StepBody::Failed(_) => return Ok(None),
        };
        Ok(Some(StepOutcome::Completed { output }))
    }

    /// Removes and returns the oldest signal `name` in the execution's mailbox.
    fn take_signal(&mut self, execution_id: u64, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let first = {
            let mut range = self.t.signals.range((execution_id, name, 0)..=(execution_id, name, u64::MAX))?;
            match range.next() {
                Some(entry) => {
                    let (k, v) = entry?;
                    Some((k.value().2, v.value().to_vec()))
                }
                None => None,
            }
        };
        let Some((seq, payload)) = first else { return Ok(None) };
        self.t.signals.remove((execution_id, name, seq))?;
        Ok(Some(payload))
    }

    fn signal(&mut self, execution_id: u64, name: &str, payload: Vec<u8>) -> OpRes<OpOutput> {
        let Some(exec) = reject!(soft(get_execution(&self.t, execution_id))?) else {
            return Ok(Err(Error::UnknownExecution(crate::api::ExecutionId(execution_id))));
        };
        if exec.state.is_terminal() {
            return Ok(Err(Error::ExecutionFinished { id: crate::api::ExecutionId(execution_id), state: exec.state }));
        }
        let journal = reject!(soft(journal_of(&self.t.journal, execution_id))?);
        let waiting = journal.iter().find_map(|e| match (&e.outcome, &e.kind) {
            (StepOutcome::AwaitingSignal { timer }, StepKind::Signal { name: n, .. }) if n == name => {
                Some((e.step, *timer))
            }
            _ => None,
        });
        match waiting {
            Some((step, timer)) => {
                // The signal wins the race: the timer is cancelled in the same transaction.
                let output = match timer {
                    Some(timer) => {
                        self.cancel_task(timer)?;
                        wrap_one(&payload)
                    }
                    None => payload,
                };
                self.settle_step(&exec, step, StepOutcome::Completed { output })?
            }
            None => {
                let next = {
                    let mut range = self.t.signals.range((execution_id, name, 0)..=(execution_id, name, u64::MAX))?;
                    match range.next_back() {
                        Some(entry) => entry?.0.value().2 + 1,
                        None => 0,
                    }
                };
                self.t.signals.insert((execution_id, name, next), payload.as_slice())?;
            }
        }
        Ok(Ok(OpOutput::Done))
    }

    /// A child execution ended: its parent's step gets the outcome, unless the parent has
    /// itself ended (it cancels its children then, and wants nothing more).
    fn settle_parent(&mut self, parent: ParentStep, outcome: StepOutcome) -> Result<(), StorageError> {
        let Some(exec) = get_execution(&self.t, parent.execution_id)? else {
            // Removed by retention (it ended, and so cancelled this child, long ago).
            tracing::warn!(parent = parent.execution_id, "the parent of a finished child no longer exists");
            return Ok(());
        };
        if exec.state.is_terminal() {
            return Ok(());
        }
        self.settle_step(&exec, parent.step, outcome)
    }

    /// Records a step's outcome and wakes its workflow if it is suspended.
    fn settle_step(&mut self, exec: &ExecutionRecord, step: u32, outcome: StepOutcome) -> Result<(), StorageError> {
        self.settle_step_for(exec, step, outcome, None).map(|_| ())
    }

    /// `settle_step`, claiming the woken workflow for `next`'s worker when it accepts it.
    fn settle_step_for(
        &mut self,
        exec: &ExecutionRecord,
        step: u32,
        outcome: StepOutcome,
        next: Option<&Continuation>,
    ) -> Result<Option<ClaimedTask>, StorageError> {
        let Some(mut entry) = get_step(&self.t, exec.id, step)? else {
            return Err(corrupted(JOURNAL_NAME, format!("({}, {step}) (step of a live task missing)", exec.id)));
        };
        entry.outcome = outcome;
        entry.recorded_ms = self.now;
        put_step(&mut self.t, exec.id, &entry)?;
        self.wake_workflow(exec, next)
    }

    fn wake_workflow(
        &mut self,
        exec: &ExecutionRecord,
        next: Option<&Continuation>,
    ) -> Result<Option<ClaimedTask>, StorageError> {
        let Some(mut root) = get_task(&self.t, exec.root_task)? else {
            return Err(corrupted(TASKS_NAME, format!("{} (root task missing)", exec.root_task)));
        };
        if root.state != TaskState::Waiting {
            return Ok(None);
        }
        let old = task_index(&root);
        root.state = TaskState::Pending;
        root.due_ms = None;
        root.ready_ms = self.now;
        put_task(&mut self.t, &root, &old)?;
        match next.filter(|c| c.step.is_none() && c.accepts(&root)) {
            // Straight to the worker whose step just finished: no ready entry, no claim.
            Some(c) => Ok(Some(self.claim_for(root, exec.clone(), c)?)),
            None => {
                self.effects.push(pending_effect(&root));
                Ok(None)
            }
        }
    }

    fn claim_for(
        &mut self,
        task: TaskRecord,
        exec: ExecutionRecord,
        next: &Continuation,
    ) -> Result<ClaimedTask, StorageError> {
        let task_id = task.id;
        let claimed = self.take_lease(task, exec, &next.worker, next.lease_ms)?;
        self.effects.push(Effect::Claimed { serial: next.serial, task_id, token: claimed.token });
        Ok(claimed)
    }

    fn abandon(&mut self, task_id: u64, token: u32, reason: String) -> OpRes<OpOutput> {
        let (mut task, exec) = reject!(load_pair(&self.t, task_id)?);
        let old = task_index(&task);
        let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
        let lease = reject!(fence.release(token));
        let error = ActivityError::retryable(reason).with_code("abandoned");
        self.after_lost_attempt(task, &old, exec, lease, error)?;
        Ok(Ok(OpOutput::Done))
    }

    /// An attempt ended without an outcome (lease expired, worker drained, process died): it
    /// counts, and the task runs again at once unless its budget is spent.
    fn after_lost_attempt(
        &mut self,
        mut task: TaskRecord,
        old: &TaskIndex,
        exec: ExecutionRecord,
        lease: crate::storage::records::LeaseRecord,
        error: ActivityError,
    ) -> Result<(), StorageError> {
        task.push_history(AttemptRecord {
            attempt: lease.token,
            worker: lease.worker,
            started_ms: lease.started_ms,
            ended_ms: self.now,
            error: error.clone(),
        });
        if task.attempts_in_round() < task.retry.max_attempts {
            self.requeue(task, old, 0)
        } else {
            self.bury(task, old, exec, error)
        }
    }

    fn requeue(&mut self, mut task: TaskRecord, old: &TaskIndex, delay_ms: u64) -> Result<(), StorageError> {
        task.state = TaskState::Pending;
        task.lease = None;
        task.ready_ms = self.now.saturating_add(delay_ms);
        task.due_ms = (delay_ms > 0).then_some(task.ready_ms);
        put_task(&mut self.t, &task, old)?;
        self.effects.push(pending_effect(&task));
        Ok(())
    }

    /// Retries exhausted or the error is permanent: the task fails, its execution fails, and
    /// the dead letter is written, all in this transaction.
    fn bury(
        &mut self,
        mut task: TaskRecord,
        old: &TaskIndex,
        mut exec: ExecutionRecord,
        error: ActivityError,
    ) -> Result<(), StorageError> {
        task.state = TaskState::Failed;
        task.lease = None;
        task.due_ms = None;
        put_task(&mut self.t, &task, old)?;
        if let Some(step) = task.step {
            // A step's failure is the workflow's to handle: record it and wake the workflow.
            return self.settle_step(&exec, step, StepOutcome::Failed { error });
        }
        if task.kind == TaskKind::Workflow {
            let journal = journal_of(&self.t.journal, exec.id)?;
            self.cancel_steps(&journal)?;
        }
        let old_exec = execution_index(&exec);
        exec.state = ExecutionState::Failed;
        exec.error = Some(error.clone());
        exec.finished_ms = Some(self.now);
        put_execution(&mut self.t, &exec, Some(old_exec))?;
        let id = self.counters.next_dead_letter;
        self.counters.next_dead_letter += 1;
        let letter = DeadLetterRecord {
            id,
            execution_id: exec.id,
            task_id: task.id,
            function: task.function,
            queue: task.queue,
            input: task.input,
            error,
            attempts: task.attempt,
            history: task.history,
            failed_ms: self.now,
        };
        self.t.dead_letters.insert(id, encode_checked(DEAD_LETTERS_NAME, &letter).as_slice())?;
        self.t.dlq_by_time.insert((self.now, id), ())?;
        self.effects.push(Effect::Finished { execution_id: exec.id });
        if let Some(parent) = exec.parent {
            self.settle_parent(parent, StepOutcome::Failed { error: letter.error })?;
        }
        Ok(())
    }

    /// Cancel, or time out: the execution ends and its live task with it.
    fn end_execution(&mut self, execution_id: u64, state: ExecutionState) -> OpRes<OpOutput> {
        let Some(mut exec) = reject!(soft(get_execution(&self.t, execution_id))?) else {
            return Ok(Err(Error::UnknownExecution(crate::api::ExecutionId(execution_id))));
        };
        if exec.state.is_terminal() {
            return Ok(Ok(OpOutput::State(exec.state)));
        }
        if state == ExecutionState::TimedOut && exec.deadline_ms.is_none_or(|d| d > self.now) {
            return Ok(Ok(OpOutput::State(exec.state)));
        }
        let children = reject!(soft(journal_of(&self.t.journal, exec.id))?);
        // Read (and so validated) before the first write.
        reject!(soft(get_task(&self.t, exec.root_task))?);
        self.cancel_task(exec.root_task)?;
        self.cancel_steps(&children)?;
        let old = execution_index(&exec);
        exec.state = state;
        exec.finished_ms = Some(self.now);
        put_execution(&mut self.t, &exec, Some(old))?;
        self.effects.push(Effect::Finished { execution_id });
        if let Some(parent) = exec.parent {
            let error = ActivityError::permanent(format!("child execution {execution_id} ended {state}"))
                .with_code(if state == ExecutionState::TimedOut { "child_timed_out" } else { "child_cancelled" });
            self.settle_parent(parent, StepOutcome::Failed { error })?;
        }
        Ok(Ok(OpOutput::State(state)))
    }

    fn replay(&mut self, id: u64, input: Option<Vec<u8>>) -> OpRes<OpOutput> {
        let letter: DeadLetterRecord = match self.t.dead_letters.get(id)? {
            Some(v) => reject!(soft(decode(DEAD_LETTERS_NAME, &id, v.value()))?),
            None => return Ok(Err(Error::UnknownDeadLetter(DeadLetterId(id)))),
        };
        let (mut task, mut exec) = reject!(load_pair(&self.t, letter.task_id)?);
        if exec.state != ExecutionState::Failed || task.state != TaskState::Failed {
            return Ok(Err(Error::NotReplayable {
                id: DeadLetterId(id),
                reason: format!("execution {} is {}, not failed", exec.id, exec.state),
            }));
        }
        let journal = match task.kind {
            TaskKind::Workflow => reject!(soft(journal_of(&self.t.journal, exec.id))?),
            TaskKind::Activity => Vec::new(),
        };
        // Failed and cancelled steps run again; completed ones are kept and not redone.
        for entry in &journal {
            let rerun = match entry.outcome {
                StepOutcome::Failed { .. } => true,
                StepOutcome::Scheduled { task_id } => get_task(&self.t, task_id)?
                    .is_none_or(|t| matches!(t.state, TaskState::Cancelled | TaskState::Failed)),
                StepOutcome::Child { execution_id } => get_execution(&self.t, execution_id)?.is_none_or(|c| {
                    matches!(c.state, ExecutionState::Cancelled | ExecutionState::Failed | ExecutionState::TimedOut)
                }),
                StepOutcome::Completed { .. } | StepOutcome::AwaitingSignal { .. } => false,
            };
            if rerun {
                self.t.journal.remove((exec.id, entry.step))?;
            }
        }
        let old = task_index(&task);
        task.state = TaskState::Pending;
        task.round_start = task.attempt;
        task.due_ms = None;
        task.ready_ms = self.now;
        if let Some(input) = input {
            task.input = input;
        }
        put_task(&mut self.t, &task, &old)?;
        let old_exec = execution_index(&exec);
        exec.state = ExecutionState::Pending;
        exec.error = None;
        exec.finished_ms = None;
        exec.deadline_ms = exec.max_duration_ms.map(|d| self.now.saturating_add(d));
        put_execution(&mut self.t, &exec, Some(old_exec))?;
        self.t.dead_letters.remove(id)?;
        self.t.dlq_by_time.remove((letter.failed_ms, id))?;
        self.effects.push(pending_effect(&task));
        if let Some(deadline_ms) = exec.deadline_ms {
            self.effects.push(Effect::Deadline { execution_id: exec.id, deadline_ms });
        }
        Ok(Ok(OpOutput::Replayed { execution_id: exec.id }))
    }

    fn replay_step(&mut self, id: u64, step: u32, input: Vec<u8>) -> OpRes<OpOutput> {
        let letter: DeadLetterRecord = match self.t.dead_letters.get(id)? {
            Some(v) => reject!(soft(decode(DEAD_LETTERS_NAME, &id, v.value()))?),
            None => return Ok(Err(Error::UnknownDeadLetter(DeadLetterId(id)))),
        };
        let entry = reject!(soft(get_step(&self.t, letter.execution_id, step))?);
        if !matches!(
            &entry,
            Some(JournalEntry { kind: StepKind::Call { .. }, outcome: StepOutcome::Failed { .. }, .. })
        ) {
            return Ok(Err(Error::NotReplayable {
                id: DeadLetterId(id),
                reason: format!("step {step} of execution {} is not a failed call", letter.execution_id),
            }));
        }
        let replayed = reject!(self.replay(id, None)?);
        self.t.step_inputs.insert((letter.execution_id, step), input.as_slice())?;
        Ok(Ok(replayed))
    }

    /// One step of a retention cleanup (see `Op::Cleanup`). Order matters: an execution's
    /// dead letters are never newer than its end, so by the time an execution is removed its
    /// dead letters (older than the same cutoff) already are; and a child ends no later than
    /// its parent, so no removed execution is still referred to by a live one.
    fn cleanup(&mut self, cutoff_ms: u64, budget: u32, from: CleanupCursor) -> OpRes<OpOutput> {
        let mut removed = CleanupReport::default();
        let mut left = budget.max(1) as usize;
        let mut at = from;
        loop {
            match at {
                CleanupCursor::DeadLetters => {
                    let mut letters = Vec::new();
                    for entry in self.t.dlq_by_time.range((0, 0)..(cutoff_ms, 0))?.take(left) {
                        letters.push(entry?.0.value());
                    }
                    for &(failed_ms, id) in &letters {
                        self.t.dead_letters.remove(id)?;
                        self.t.dlq_by_time.remove((failed_ms, id))?;
                    }
                    removed.dead_letters += letters.len() as u64;
                    left -= letters.len();
                    if left == 0 {
                        return Ok(Ok(OpOutput::Cleaned { removed, next: Some(at) }));
                    }
                    at = CleanupCursor::Cache;
                }
                CleanupCursor::Cache => {
                    let mut victims = Vec::new();
                    for entry in
                        self.t.cache_by_expiry.range((0, "", 0, &[][..])..(self.now, "", 0, &[][..]))?.take(left)
                    {
                        let (k, _) = entry?;
                        let (expires_ms, function, version, input) = k.value();
                        victims.push((expires_ms, function.to_string(), version, input.to_vec()));
                    }
                    self.remove_cache_entries(&victims)?;
                    removed.cache_entries += victims.len() as u64;
                    left -= victims.len();
                    if left == 0 {
                        return Ok(Ok(OpOutput::Cleaned { removed, next: Some(at) }));
                    }
                    at = CleanupCursor::Executions { state: 0, after: 0 };
                }
                CleanupCursor::Executions { state, after } => {
                    let Some(&exec_state) = TERMINAL_STATES.get(state) else {
                        return Ok(Ok(OpOutput::Cleaned { removed, next: None }));
                    };
                    let code = state_code(exec_state);
                    let mut ids = Vec::new();
                    for entry in self.t.by_state.range((code, after.saturating_add(1))..=(code, u64::MAX))?.take(left) {
                        ids.push(entry?.0.value().1);
                    }
                    let mut last = after;
                    let mut done_with_state = ids.len() < left;
                    for id in ids {
                        left -= 1;
                        last = id;
                        // An unreadable record stays (for `check` to report); the rest go on.
                        let Ok(Some(exec)) = soft(get_execution(&self.t, id))? else { continue };
                        match retention(&exec, cutoff_ms) {
                            Retention::Remove => {
                                self.remove_execution(&exec)?;
                                removed.executions += 1;
                            }
                            Retention::Keep => {}
                            Retention::NewerFromHere => {
                                done_with_state = true;
                                break;
                            }
                        }
                    }
                    at = if done_with_state {
                        CleanupCursor::Executions { state: state + 1, after: 0 }
                    } else {
                        CleanupCursor::Executions { state, after: last }
                    };
                    if left == 0 {
                        let more = match at {
                            CleanupCursor::Executions { state, .. } => state < TERMINAL_STATES.len(),
                            CleanupCursor::DeadLetters | CleanupCursor::Cache => true,
                        };
                        return Ok(Ok(OpOutput::Cleaned { removed, next: more.then_some(at) }));
                    }
                }
            }
        }
    }

    /// Removes a finished execution and every record of it. Its tasks are all ended (an
    /// execution's end cancels its live tasks), so none is in memory.
    fn remove_execution(&mut self, exec: &ExecutionRecord) -> Result<(), StorageError> {
        let id = exec.id;
        let mut tasks = Vec::new();
        for entry in self.t.exec_tasks.range((id, 0)..=(id, u64::MAX))? {
            tasks.push(entry?.0.value().1);
        }
        for task_id in tasks {
            if let Ok(Some(task)) = soft(get_task(&self.t, task_id))? {
                remove_task_index(&mut self.t, task_id, &task_index(&task))?;
            }
            self.t.tasks.remove(task_id)?;
        }
        self.t.exec_tasks.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        self.t.journal.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
        self.t.signals.retain_in((id, "", 0)..(id.saturating_add(1), "", 0), |_, _| false)?;
        self.t.counters.retain_in((id, "")..(id.saturating_add(1), ""), |_, _| false)?;
        self.t.state.retain_in((id, "")..(id.saturating_add(1), ""), |_, _| false)?;
        self.t.step_inputs.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
        if let Some(key) = &exec.idempotency_key {
            // The key is free again: a later dispatch with it starts a new execution.
            if self.t.idempotency.get(key.as_str())?.is_some_and(|v| v.value() == id) {
                self.t.idempotency.remove(key.as_str())?;
            }
        }
        let (state, deadline) = execution_index(exec);
        self.t.by_state.remove((state, id))?;
        move_count(&mut self.t, Some(state), None)?;
        if let Some(d) = deadline {
            self.t.deadlines.remove((d, id))?;
        }
        self.t.executions.remove(id)?;
        Ok(())
    }

    fn discard(&mut self, id: u64) -> OpRes<OpOutput> {
        let letter: DeadLetterRecord = match self.t.dead_letters.get(id)? {
            Some(v) => reject!(soft(decode(DEAD_LETTERS_NAME, &id, v.value()))?),
            None => return Ok(Err(Error::UnknownDeadLetter(DeadLetterId(id)))),
        };
        self.t.dead_letters.remove(id)?;
        self.t.dlq_by_time.remove((letter.failed_ms, id))?;
        Ok(Ok(OpOutput::Done))
    }

    fn save_counters(&mut self) -> Result<(), StorageError> {
        self.t.meta.insert("next_execution_id", self.counters.next_execution)?;
        self.t.meta.insert("next_task_id", self.counters.next_task)?;
        self.t.meta.insert("next_dead_letter_id", self.counters.next_dead_letter)?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn apply_batch(&self, now_ms: u64, ops: Vec<Op>) -> Result<(Vec<OpResult>, Vec<Effect>), StorageError> {
        let n = ops.len();
        let (exclusive, shared): (Vec<_>, Vec<_>) = ops.into_iter().enumerate().partition(|(_, op)| op.is_exclusive());
        let mut results: Vec<Option<OpResult>> = (0..n).map(|_| None).collect();
        let (shared_results, mut effects) = self.run_txn(now_ms, shared)?;
        for (i, r) in shared_results {
            results[i] = Some(r);
        }
        for (i, op) in exclusive {
            let (mut r, mut e) = self.run_txn(now_ms, vec![(i, op.clone())])?;
            if let Some((_, Err(Error::LocalStepFailed { step, error }))) = r.first() {
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
        let results = results.into_iter().map(|r| r.unwrap_or(Err(Error::Shutdown))).collect();
        Ok((results, effects))
    }

    fn recover(&self, now_ms: u64) -> Result<Vec<Effect>, StorageError> {
        let txn = self.db.begin_write()?;
        let mut counters = self.lock_counters();
        let mut working = *counters;
        {
            let mut batch = self.batch(&txn, &mut working, now_ms)?;
            let mut orphaned = Vec::new();
            for entry in batch.t.leases.iter()? {
                let (key, _) = entry?;
                orphaned.push(key.value().1);
            }
            for task_id in orphaned {
                // A damaged record must not keep the rest of the file from opening: it is
                // skipped here and reported by `check`.
                let (mut task, exec) = match load_pair(&batch.t, task_id)? {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::error!(task_id, error = %e, "cannot recover leased task; left as is");
                        continue;
                    }
                };
                let old = task_index(&task);
                let mut fence = Fence { task_id, attempt: &mut task.attempt, lease: &mut task.lease };
                let Some(lease) = fence.revoke() else {
                    continue;
                };
                tracing::warn!(task_id, attempt = lease.token, worker = %lease.worker, "re-queueing task left running by a stopped process");
                let error = ActivityError::retryable(format!(
                    "the process stopped while attempt {} was running (worker {:?})",
                    lease.token, lease.worker
                ))
                .with_code("process_stopped");
                batch.after_lost_attempt(task, &old, exec, lease, error)?;
            }
            batch.save_counters()?;
        }
        txn.commit()?;
        *counters = working;
        drop(counters);

        // Rebuild memory from the indexes.
        let read = self.db.begin_read()?;
        let tasks = read.open_table(TASKS)?;
        let load = |id: u64| -> Result<TaskRecord, StorageError> {
            match tasks.get(id)? {
                Some(v) => decode(TASKS_NAME, &id, v.value()),
                None => Err(corrupted(TASKS_NAME, format!("{id} (indexed but missing)"))),
            }
        };
        let mut effects = Vec::new();
        let skip =
            |id: u64, e: StorageError| tracing::error!(task_id = id, error = %e, "pending task unreadable; not queued");
        for entry in read.open_table(READY)?.iter()? {
            let (key, _) = entry?;
            let id = key.value().3;
            match load(id) {
                Ok(task) => effects.push(Effect::Ready(ready_item(&task))),
                Err(e @ StorageError::Corrupted { .. }) => skip(id, e),
                Err(e) => return Err(e),
            }
        }
        for entry in read.open_table(TIMERS)?.iter()? {
            let (key, _) = entry?;
            let (due_ms, id) = key.value();
            match load(id) {
                Ok(task) => effects.push(Effect::Timer { due_ms, item: ready_item(&task) }),
                Err(e @ StorageError::Corrupted { .. }) => skip(id, e),
                Err(e) => return Err(e),
            }
        }
        for entry in read.open_table(DEADLINES)?.iter()? {
            let (key, _) = entry?;
            let (deadline_ms, execution_id) = key.value();
            effects.push(Effect::Deadline { execution_id, deadline_ms });
        }
        Ok(effects)
    }

    fn execution(&self, id: u64) -> Result<Option<(ExecutionRecord, TaskRecord)>, StorageError> {
        let read = self.db.begin_read()?;
        let executions = read.open_table(EXECUTIONS)?;
        let Some(v) = executions.get(id)? else {
            return Ok(None);
        };
        let exec: ExecutionRecord = decode(EXECUTIONS_NAME, &id, v.value())?;
        let tasks = read.open_table(TASKS)?;
        let task: TaskRecord = match tasks.get(exec.root_task)? {
            Some(v) => decode(TASKS_NAME, &exec.root_task, v.value())?,
            None => return Err(corrupted(TASKS_NAME, format!("{} (root task missing)", exec.root_task))),
        };
        Ok(Some((exec, task)))
    }

    fn list_executions(&self, filter: &ExecutionFilter, page: &Page) -> Result<Vec<ExecutionRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let executions = read.open_table(EXECUTIONS)?;
        let before = page.before.map_or(u64::MAX, |id| id.0);
        let limit = page.limit.clamp(1, 10_000) as usize;
        let mut out = Vec::new();
        let mut consider = |id: u64, bytes: &[u8]| -> Result<bool, StorageError> {
            let exec: ExecutionRecord = decode(EXECUTIONS_NAME, &id, bytes)?;
            let keep = filter.state.is_none_or(|s| s == exec.state)
                && filter.function.as_ref().is_none_or(|f| *f == exec.function)
                && filter.queue.as_ref().is_none_or(|q| *q == exec.queue);
            if keep {
                out.push(exec);
            }
            Ok(out.len() >= limit)
        };
        if let Some(state) = filter.state {
            let code = state_code(state);
            let by_state = read.open_table(EXEC_BY_STATE)?;
            for entry in by_state.range((code, 0)..(code, before))?.rev() {
                let (key, _) = entry?;
                let id = key.value().1;
                let Some(v) = executions.get(id)? else {
                    return Err(corrupted(EXECUTIONS_NAME, format!("{id} (indexed but missing)")));
                };
                if consider(id, v.value())? {
                    break;
                }
            }
        } else {
            for entry in executions.range(..before)?.rev() {
                let (key, v) = entry?;
                if consider(key.value(), v.value())? {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn count_by_state(&self) -> Result<Vec<(ExecutionState, u64)>, StorageError> {
        let read = self.db.begin_read()?;
        let counts = read.open_table(EXEC_COUNTS)?;
        let mut out = Vec::with_capacity(ExecutionState::ALL.len());
        for state in ExecutionState::ALL {
            out.push((state, counts.get(state_code(state))?.map_or(0, |v| v.value())));
        }
        Ok(out)
    }

    fn queue_depth(&self, queue: &str) -> Result<u64, StorageError> {
        let read = self.db.begin_read()?;
        let ready = read.open_table(READY)?;
        let mut n = 0;
        for entry in ready.range((queue, 0u32, 0u64, 0u64)..=(queue, u32::MAX, u64::MAX, u64::MAX))? {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    fn running_tasks(&self) -> Result<Vec<TaskRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let leases = read.open_table(LEASES)?;
        let tasks = read.open_table(TASKS)?;
        let mut out = Vec::new();
        for entry in leases.iter()? {
            let (key, _) = entry?;
            let id = key.value().1;
            match tasks.get(id)? {
                Some(v) => out.push(decode(TASKS_NAME, &id, v.value())?),
                None => return Err(corrupted(TASKS_NAME, format!("{id} (leased but missing)"))),
            }
        }
        Ok(out)
    }

    fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let by_time = read.open_table(DLQ_BY_TIME)?;
        let letters = read.open_table(DEAD_LETTERS)?;
        let mut out = Vec::new();
        for entry in by_time.iter()?.rev().take(limit as usize) {
            let (key, _) = entry?;
            let id = key.value().1;
            match letters.get(id)? {
                Some(v) => out.push(decode(DEAD_LETTERS_NAME, &id, v.value())?),
                None => return Err(corrupted(DEAD_LETTERS_NAME, format!("{id} (indexed but missing)"))),
            }
        }
        Ok(out)
    }

    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetterRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let letters = read.open_table(DEAD_LETTERS)?;
        match letters.get(id)? {
            Some(v) => Ok(Some(decode(DEAD_LETTERS_NAME, &id, v.value())?)),
            None => Ok(None),
        }
    }

    fn journal(&self, execution_id: u64) -> Result<Vec<JournalEntry>, StorageError> {
        let read = self.db.begin_read()?;
        journal_of(&read.open_table(JOURNAL)?, execution_id)
    }

    fn cleanup_preview(&self, now_ms: u64, cutoff_ms: u64) -> Result<CleanupReport, StorageError> {
        let read = self.db.begin_read()?;
        let mut report = CleanupReport {
            dead_letters: read.open_table(DLQ_BY_TIME)?.range((0, 0)..(cutoff_ms, 0))?.count() as u64,
            cache_entries: read
                .open_table(CACHE_BY_EXPIRY)?
                .range((0, "", 0, &[][..])..(now_ms, "", 0, &[][..]))?
                .count() as u64,
            executions: 0,
        };
        let executions = read.open_table(EXECUTIONS)?;
        for state in TERMINAL_STATES {
            let code = state_code(state);
            for entry in read.open_table(EXEC_BY_STATE)?.range((code, 0)..=(code, u64::MAX))? {
                let id = entry?.0.value().1;
                let Some(v) = executions.get(id)? else { continue };
                let Ok(exec) = decode::<ExecutionRecord>(EXECUTIONS_NAME, &id, v.value()) else { continue };
                match retention(&exec, cutoff_ms) {
                    Retention::Remove => report.executions += 1,
                    Retention::Keep => {}
                    Retention::NewerFromHere => break,
                }
            }
        }
        Ok(report)
    }

    fn journal_steps(&self, execution_id: u64, steps: &[u32]) -> Result<Vec<JournalEntry>, StorageError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(JOURNAL)?;
        let mut out = Vec::with_capacity(steps.len());
        for &step in steps {
            if let Some(v) = table.get((execution_id, step))? {
                out.push(decode(JOURNAL_NAME, &format_args!("({execution_id}, {step})"), v.value())?);
            }
        }
        Ok(out)
    }

    fn context(&self, execution_id: u64) -> Result<super::ExecutionContext, StorageError> {
        let read = self.db.begin_read()?;
        let mut counters = Vec::new();
        for entry in read.open_table(COUNTERS)?.range((execution_id, "")..(execution_id + 1, ""))? {
            let (k, v) = entry?;
            counters.push((k.value().1.to_string(), v.value()));
        }
        let mut state = Vec::new();
        for entry in read.open_table(STATE)?.range((execution_id, "")..(execution_id + 1, ""))? {
            let (k, v) = entry?;
            state.push((k.value().1.to_string(), v.value().to_vec()));
        }
        Ok((counters, state))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StorageError> {
        Ok(self.db.begin_read()?)
    }

    fn pending_work(&self, now_ms: u64) -> Result<(u64, u64, u64), StorageError> {
        let read = self.db.begin_read()?;
        let ready = read.open_table(READY)?.len()?;
        let running = read.open_table(LEASES)?.len()?;
        let mut due = 0;
        for entry in read.open_table(TIMERS)?.range((0, 0)..=(now_ms, u64::MAX))? {
            entry?;
            due += 1;
        }
        Ok((ready, running, due))
    }

    fn check(&self) -> Result<Vec<String>, StorageError> {
        use std::collections::BTreeSet;
        let read = self.db.begin_read()?;
        let mut problems = Vec::new();
        let mut expect_ready = BTreeSet::new();
        let mut expect_timers = BTreeSet::new();
        let mut expect_leases = BTreeSet::new();
        let mut expect_state = BTreeSet::new();
        let mut expect_deadlines = BTreeSet::new();
        let mut tasks_by_id = std::collections::BTreeMap::new();
        for entry in read.open_table(TASKS)?.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            let task: TaskRecord = match decode(TASKS_NAME, &id, v.value()) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            match task_index(&task) {
                TaskIndex::None if task.state == TaskState::Running => {
                    problems.push(format!("task {id} is running without a lease"))
                }
                TaskIndex::None => {}
                TaskIndex::Ready { queue, pk, ready_ms } => {
                    expect_ready.insert((queue, pk, ready_ms, id));
                }
                TaskIndex::Timer { due_ms } => {
                    expect_timers.insert((due_ms, id));
                }
                TaskIndex::Lease { expires_ms } => {
                    expect_leases.insert((expires_ms, id));
                }
            }
            tasks_by_id.insert(id, task);
        }
        // Every execution key, readable or not: what a task or dead letter must refer to.
        let mut execution_ids = BTreeSet::new();
        for entry in read.open_table(EXECUTIONS)?.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            execution_ids.insert(id);
            let exec: ExecutionRecord = match decode(EXECUTIONS_NAME, &id, v.value()) {
                Ok(e) => e,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            let (state, deadline) = execution_index(&exec);
            expect_state.insert((state, id));
            if let Some(d) = deadline {
                expect_deadlines.insert((d, id));
            }
            match tasks_by_id.get(&exec.root_task) {
                None => problems.push(format!("execution {id} has no root task {}", exec.root_task)),
                Some(task) => {
                    let live = matches!(task.state, TaskState::Pending | TaskState::Running | TaskState::Waiting);
                    if !exec.state.is_terminal() && !live {
                        problems.push(format!("execution {id} is {} but its task is {:?}", exec.state, task.state));
                    }
                    if exec.state.is_terminal() && live {
                        problems
                            .push(format!("execution {id} is {} but its task is still {:?}", exec.state, task.state));
                    }
                }
            }
        }
        let journal = read.open_table(JOURNAL)?;
        for task in tasks_by_id.values() {
            if !execution_ids.contains(&task.execution_id) {
                problems.push(format!("task {} belongs to missing execution {}", task.id, task.execution_id));
            }
            let live = matches!(task.state, TaskState::Pending | TaskState::Running | TaskState::Waiting);
            if let (Some(step), true) = (task.step, live) {
                let entry = match journal.get((task.execution_id, step))? {
                    Some(v) => decode::<JournalEntry>(JOURNAL_NAME, &step, v.value()).ok(),
                    None => None,
                };
                let referenced = match entry {
                    Some(JournalEntry { outcome: StepOutcome::Scheduled { task_id }, .. }) => task_id == task.id,
                    Some(JournalEntry { outcome: StepOutcome::AwaitingSignal { timer: Some(t) }, .. }) => t == task.id,
                    _ => false,
                };
                if !referenced {
                    problems.push(format!("live task {} of step {step} is not scheduled in the journal", task.id));
                }
            }
            if task.state == TaskState::Waiting {
                // A damaged entry is reported by the journal scan below.
                let Ok(steps) = journal_of(&journal, task.execution_id) else { continue };
                let waits_on_something = steps.iter().any(|e| match e.outcome {
                    StepOutcome::AwaitingSignal { .. } | StepOutcome::Child { .. } => true,
                    StepOutcome::Scheduled { task_id } => tasks_by_id.get(&task_id).is_some_and(|t| {
                        matches!(t.state, TaskState::Pending | TaskState::Running | TaskState::Waiting)
                    }),
                    _ => false,
                });
                if !waits_on_something {
                    problems.push(format!("workflow task {} waits with no live step to wake it", task.id));
                }
            }
        }
        // Every journal entry and cache record decodes (their checksums hold).
        for entry in journal.iter()? {
            let (k, v) = entry?;
            let (execution_id, step) = k.value();
            if let Err(e) = decode::<JournalEntry>(JOURNAL_NAME, &format_args!("({execution_id}, {step})"), v.value()) {
                problems.push(e.to_string());
            }
        }
        for entry in read.open_table(CACHE)?.iter()? {
            let (k, v) = entry?;
            let (function, version, _) = k.value();
            if let Err(e) = decode::<CacheRecord>(CACHE_NAME, &format_args!("({function:?}, {version}, ..)"), v.value())
            {
                problems.push(e.to_string());
            }
        }
        let mut found = BTreeSet::new();
        for entry in read.open_table(READY)?.iter()? {
            let (k, _) = entry?;
            let (q, pk, r, id) = k.value();
            found.insert((q.to_string(), pk, r, id));
        }
        diff(&mut problems, "idx_ready", &expect_ready, &found);
        diff(&mut problems, "idx_timers", &expect_timers, &pairs(&read, TIMERS)?);
        diff(&mut problems, "idx_leases", &expect_leases, &pairs(&read, LEASES)?);
        diff(&mut problems, "idx_deadlines", &expect_deadlines, &pairs(&read, DEADLINES)?);
        let mut states = BTreeSet::new();
        for entry in read.open_table(EXEC_BY_STATE)?.iter()? {
            states.insert(entry?.0.value());
        }
        diff(&mut problems, "idx_exec_state", &expect_state, &states);
        // The counts against the state index (itself checked against the records just above),
        // so one damaged record is reported once, not again as a count that disagrees with it.
        let mut indexed = std::collections::BTreeMap::new();
        for &(code, _) in &states {
            *indexed.entry(code).or_insert(0u64) += 1;
        }
        let mut stored = std::collections::BTreeMap::new();
        for entry in read.open_table(EXEC_COUNTS)?.iter()? {
            let (k, v) = entry?;
            stored.insert(k.value(), v.value());
        }
        for code in indexed.keys().chain(stored.keys()).copied().collect::<BTreeSet<u8>>() {
            let (want, got) = (indexed.get(&code).copied().unwrap_or(0), stored.get(&code).copied().unwrap_or(0));
            if want != got {
                let state = ExecutionState::ALL.into_iter().find(|&s| state_code(s) == code);
                let name = state.map_or_else(|| format!("unknown state code {code}"), |s| s.to_string());
                problems.push(format!("exec_counts: {name} counts {got} executions, idx_exec_state holds {want}"));
            }
        }
        let mut expect_dlq = BTreeSet::new();
        for entry in read.open_table(DEAD_LETTERS)?.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            match decode::<DeadLetterRecord>(DEAD_LETTERS_NAME, &id, v.value()) {
                Ok(l) => {
                    expect_dlq.insert((l.failed_ms, id));
                    if !execution_ids.contains(&l.execution_id) {
                        problems.push(format!("dead letter {id} belongs to missing execution {}", l.execution_id));
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        diff(&mut problems, "idx_dlq_time", &expect_dlq, &pairs(&read, DLQ_BY_TIME)?);
        let expect_exec_tasks = tasks_by_id.values().map(|t| (t.execution_id, t.id)).collect();
        diff(&mut problems, "idx_exec_tasks", &expect_exec_tasks, &pairs(&read, EXEC_TASKS)?);
        problems.extend(counter_problems(&read)?);
        Ok(problems)
    }
}

/// The id counters in `meta` must be past every id in use, or a new dispatch would overwrite a
/// record. (Without redb's page check, nothing else would notice a damaged `meta` page.) The
/// in-memory counters are written there at the end of every batch.
fn counter_problems(read: &redb::ReadTransaction) -> Result<Vec<String>, StorageError> {
    let meta = read.open_table(META)?;
    let mut problems = Vec::new();
    let tables = [("next_execution_id", EXECUTIONS), ("next_task_id", TASKS), ("next_dead_letter_id", DEAD_LETTERS)];
    for (name, table) in tables {
        let Some(last) = read.open_table(table)?.last()?.map(|(k, _)| k.value()) else { continue };
        let next = meta.get(name)?.map_or(1, |v| v.value());
        if next <= last {
            problems.push(format!("meta: {name} is {next}, not past {last}, the last id in use"));
        }
    }
    Ok(problems)
}

/// The message of a refused open: how many problems, and the first few.
fn found_at_open(check: &str, problems: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut message = format!("{check} at open found {} problem(s): ", problems.len());
    message.push_str(&problems.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; "));
    if problems.len() > SHOWN {
        message.push_str("; ...");
    }
    message
}

fn pairs(
    read: &redb::ReadTransaction,
    table: redb::TableDefinition<(u64, u64), ()>,
) -> Result<std::collections::BTreeSet<(u64, u64)>, StorageError> {
    let mut out = std::collections::BTreeSet::new();
    for entry in read.open_table(table)?.iter()? {
        out.insert(entry?.0.value());
    }
    Ok(out)
}

fn diff<T: Ord + std::fmt::Debug>(
    problems: &mut Vec<String>,
    name: &str,
    expected: &std::collections::BTreeSet<T>,
    found: &std::collections::BTreeSet<T>,
) {
    for missing in expected.difference(found) {
        problems.push(format!("{name}: missing entry {missing:?}"));
    }
    for extra in found.difference(expected) {
        problems.push(format!("{name}: entry {extra:?} matches no record"));
    }
}
