//! Every redb table, defined once. Keys use redb's native tuple and integer types so ordering is
//! redb's. A table name is never reused; retired names are listed at the bottom.
//!
//! Index tables (`idx_*`) have `()` values: the key is the whole entry. Each is written in the
//! same transaction as the record it indexes (see docs/design.md, invariant I3).

use redb::TableDefinition;

/// `"schema_version"`, `"next_execution_id"`, `"next_task_id"`, `"next_dead_letter_id"`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// execution id → `ExecutionRecord`. Ids grow with dispatch order, so this table is also the
/// "executions by creation" index (reverse iteration = newest first).
pub const EXECUTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("executions");
/// task id → `TaskRecord`.
pub const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
/// Pending tasks due now: (queue, inverted priority, ready_ms, task id).
pub const READY: TableDefinition<(&str, u32, u64, u64), ()> = TableDefinition::new("idx_ready");
/// Pending tasks due later (delays, retry backoff): (due_ms, task id).
pub const TIMERS: TableDefinition<(u64, u64), ()> = TableDefinition::new("idx_timers");
/// Running tasks: (lease expiry ms, task id).
pub const LEASES: TableDefinition<(u64, u64), ()> = TableDefinition::new("idx_leases");
/// Executions by (state code, execution id).
pub const EXEC_BY_STATE: TableDefinition<(u8, u64), ()> = TableDefinition::new("idx_exec_state");
/// Executions per state: state code → how many executions are in that state. Changed only by
/// `move_count`, in the transaction of the state change it counts (an execution written, its
/// state changed, or removed by retention), so `count_by_state` reads one entry per state
/// instead of scanning `idx_exec_state`. Since schema version 3.
pub const EXEC_COUNTS: TableDefinition<u8, u64> = TableDefinition::new("exec_counts");
/// Non-terminal executions with a max_duration: (deadline_ms, execution id).
pub const DEADLINES: TableDefinition<(u64, u64), ()> = TableDefinition::new("idx_deadlines");
/// Every task of an execution: (execution id, task id). Written when a task is created,
/// removed with it (retention); lets an execution's records be found and removed together.
pub const EXEC_TASKS: TableDefinition<(u64, u64), ()> = TableDefinition::new("idx_exec_tasks");
/// Workflow journal: (execution id, step) → `JournalEntry`.
pub const JOURNAL: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("journal");
/// Signal mailboxes: (execution id, name, sequence) → JSON payload, FIFO per name.
pub const SIGNALS: TableDefinition<(u64, &str, u64), &[u8]> = TableDefinition::new("signals");
/// Execution counters: (execution id, name) → value.
pub const COUNTERS: TableDefinition<(u64, &str), i64> = TableDefinition::new("counters");
/// Execution custom state: (execution id, key) → JSON value.
pub const STATE: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("state");
/// Results of cached functions: (function, version, input) → `CacheRecord`.
pub const CACHE: TableDefinition<(&str, u32, &[u8]), &[u8]> = TableDefinition::new("cache");
/// Cache entries by (expiry ms, function, version, input), for eviction and cleanup.
pub const CACHE_BY_EXPIRY: TableDefinition<(u64, &str, u32, &[u8]), ()> = TableDefinition::new("idx_cache_expiry");
/// Operator-edited inputs for failed steps, consumed when the replayed workflow re-creates the
/// step: (execution id, step) → JSON input.
pub const STEP_INPUTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("step_inputs");
/// Activity progress: (execution id, task id) → the JSON details an attempt last recorded with
/// `stent::activity::heartbeat`, written by the lease renewal that carried them (so only an
/// attempt still holding its lease writes here), read by the task's later attempts. Kept
/// until retention removes the execution. Since schema version 4.
pub const HEARTBEATS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("heartbeats");
/// Past runs of executions that continued as new: (execution id, run) → `RunRecord`. The
/// latest `runs_kept` of an execution are kept (older ones go when a new run starts), all of
/// them until retention removes the execution. Since schema version 5.
pub const RUNS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("runs");
/// Journals of past runs: (execution id, run, step) → `JournalEntry`, as the run's journal
/// held it. Removed with its `runs` record. Since schema version 5.
pub const RUN_STEPS: TableDefinition<(u64, u32, u32), &[u8]> = TableDefinition::new("run_steps");
/// Schedules: name → `ScheduleRecord`. Since schema version 6.
pub const SCHEDULES: TableDefinition<&str, &[u8]> = TableDefinition::new("schedules");
/// Schedules by when their next fire is due: (jittered fire time ms, name); none for a paused
/// schedule or one with no time left. Since schema version 6.
pub const SCHEDULE_DUE: TableDefinition<(u64, &str), ()> = TableDefinition::new("idx_schedule_due");
/// The executions each schedule started: (name, nominal fire time ms, execution id), written
/// with the execution, removed with it. Since schema version 6.
pub const SCHEDULE_FIRES: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("idx_schedule_fires");
/// Rate-limit budgets: (function, key; `""` for the function's own limit) → the theoretical
/// arrival time of the generic cell rate algorithm (ms): the next start is allowed once the
/// clock is within the limit's burst of it. Since schema version 6.
pub const RATE_STATE: TableDefinition<(&str, &str), u64> = TableDefinition::new("rate_state");
/// Executions holding a concurrency-key slot: (function, key, execution id), one entry per
/// running execution dispatched with a concurrency key, written beside its state. Since
/// schema version 6.
pub const KEY_SLOTS: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("idx_key_slots");
/// Debounce and throttle keys (`"debounce:"`/`"throttle:"` and the caller's key) → (the
/// execution they name, when its window opened ms). Removed with the execution. Since schema
/// version 6.
pub const FLOW_KEYS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("flow_keys");
/// Idempotency key → execution id.
pub const IDEMPOTENCY: TableDefinition<&str, u64> = TableDefinition::new("idempotency");
/// dead letter id → `DeadLetterRecord`.
pub const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Dead letters by (failed_ms, dead letter id).
pub const DLQ_BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("idx_dlq_time");

/// Table names in their display form for `Corrupted` errors.
pub const EXECUTIONS_NAME: &str = "executions";
pub const TASKS_NAME: &str = "tasks";
pub const DEAD_LETTERS_NAME: &str = "dead_letters";
pub const JOURNAL_NAME: &str = "journal";
pub const CACHE_NAME: &str = "cache";
pub const RUNS_NAME: &str = "runs";
pub const RUN_STEPS_NAME: &str = "run_steps";
pub const SCHEDULES_NAME: &str = "schedules";

// Retired table names (never reuse): none yet.
