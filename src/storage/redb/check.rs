//! Checking the file: `check` (every record's checksum, every index against the records, the
//! per-state counts, the id counters) and the live check the default open runs.

use ::redb::{ReadableDatabase, ReadableTable};

use super::records::journal_of;
use super::RedbStore;
use crate::api::{ExecutionState, TaskState};
use crate::storage::codec::decode;
use crate::storage::guard::unpanic;
use crate::storage::index::{ExecutionIndex, TaskIndex};
use crate::storage::records::{
    state_code, CacheRecord, DeadLetterRecord, ExecutionRecord, JournalEntry, ScheduleRecord, StepOutcome, TaskRecord,
};
use crate::storage::tables::*;
use crate::storage::StorageError;

impl RedbStore {
    /// `VerifyOnOpen::Live`: checks what recovery and the coming work depend on (see
    /// `check_live`). Any problem there makes redb check every page: a damaged file is
    /// refused; damaged records on sound pages are logged and left to reject the ops that read
    /// them (and to `check`), as they would be if met later.
    pub(super) fn verify_live(&mut self) -> Result<(), StorageError> {
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
                if let Some(d) = ExecutionIndex::of(&exec).deadline_ms {
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
                    match TaskIndex::of(&task) {
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

    pub(super) fn check_all(&self) -> Result<Vec<String>, StorageError> {
        use std::collections::BTreeSet;
        let read = self.db.begin_read()?;
        let mut problems = Vec::new();
        let mut expect_ready = BTreeSet::new();
        let mut expect_timers = BTreeSet::new();
        let mut expect_leases = BTreeSet::new();
        let mut expect_state = BTreeSet::new();
        let mut expect_deadlines = BTreeSet::new();
        let mut tasks_by_id = std::collections::BTreeMap::new();
        let mut expect_key_slots = BTreeSet::new();
        let mut expect_fires = BTreeSet::new();
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
            match TaskIndex::of(&task) {
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
            let ExecutionIndex { state, deadline_ms: deadline } = ExecutionIndex::of(&exec);
            expect_state.insert((state, id));
            if let (Some(key), ExecutionState::Running) = (&exec.keys.concurrency, exec.state) {
                expect_key_slots.insert((exec.function.clone(), key.clone(), id));
            }
            if let Some(origin) = &exec.schedule {
                expect_fires.insert((origin.name.clone(), origin.nominal_ms, id));
            }
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
        problems.extend(flow_problems(&read, expect_key_slots, expect_fires)?);
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

/// Schedules and flow control: every schedule record decodes and its due entry is the one it
/// implies; the key slots and the fires index are the ones the executions imply.
fn flow_problems(
    read: &redb::ReadTransaction,
    expect_key_slots: std::collections::BTreeSet<(String, String, u64)>,
    expect_fires: std::collections::BTreeSet<(String, u64, u64)>,
) -> Result<Vec<String>, StorageError> {
    use std::collections::BTreeSet;
    let mut problems = Vec::new();
    let mut expect_due = BTreeSet::new();
    for entry in read.open_table(SCHEDULES)?.iter()? {
        let (k, v) = entry?;
        let name = k.value();
        match decode::<ScheduleRecord>(SCHEDULES_NAME, &name, v.value()) {
            Ok(rec) => {
                if let Some(at) = rec.due_ms() {
                    expect_due.insert((at, rec.name));
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mut due = BTreeSet::new();
    for entry in read.open_table(SCHEDULE_DUE)?.iter()? {
        let key = entry?.0;
        let (at, name) = key.value();
        due.insert((at, name.to_string()));
    }
    diff(&mut problems, "idx_schedule_due", &expect_due, &due);
    let mut slots = BTreeSet::new();
    for entry in read.open_table(KEY_SLOTS)?.iter()? {
        let key = entry?.0;
        let (f, k, id) = key.value();
        slots.insert((f.to_string(), k.to_string(), id));
    }
    diff(&mut problems, "idx_key_slots", &expect_key_slots, &slots);
    let mut fires = BTreeSet::new();
    for entry in read.open_table(SCHEDULE_FIRES)?.iter()? {
        let key = entry?.0;
        let (name, nominal, id) = key.value();
        fires.insert((name.to_string(), nominal, id));
    }
    diff(&mut problems, "idx_schedule_fires", &expect_fires, &fires);
    Ok(problems)
}

/// The message of a refused open: how many problems, and the first few.
pub(super) fn found_at_open(check: &str, problems: &[String]) -> String {
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
