//! Goal: every storage backend (behind `stent::storage::Store`) makes exactly the state
//! transitions a small reference model allows, keeps its indexes consistent with its records,
//! and never lets a stale fencing token commit, across batches, clock jumps and crashes. The test
//! knows a backend only through a `StoreFactory` (how to open a store on fresh durable state,
//! crash and reopen it, and run the backend's own live check) and the `Store` trait, so the same
//! steps and assertions run unchanged against each backend.
//!
//! Backends run today: `redb_memory` (`RedbMemoryFactory`: the redb store on a `MemoryDisk`).
//! Adding a second backend takes one `impl StoreFactory` (see the section "Store factories") and
//! one line in the `model_tests!` list at the end of the file, which instantiates every test here
//! (the state machine and the deterministic cases) in a module named after the backend.
//!
//! Method: a proptest state machine (`proptest-state-machine`). Random steps (dispatch with or
//! without delay, idempotency key and deadline; claim; renew; complete and fail with current or
//! stale tokens; abandon; lease expiry before and after the lease's end, and a reaper pass; cancel;
//! time out; dead-letter replay and discard; clock advances; batches of several ops, some whose
//! commit is made to fail through `Faults`; retention cleanups in small budgets; and crash, reopen
//! and `recover` on the factory's durable state, for redb a shared `MemoryDisk`) run against
//! both the store and the model, on a manual clock. After every step the test compares every op
//! result, every execution and task record, the running set, the dead-letter table, counts and
//! queue depths with the model, and checks invariants that hold whatever the model says: `check()`
//! and the factory's live check (for redb `check_live()`, what the default open verifies) are
//! empty, no task completes twice, a stale token's complete/fail/abandon is rejected and writes
//! nothing, fencing tokens strictly increase, nothing is running after recovery, every live
//! execution has a pending or running task, and the batch effects, applied the way the engine
//! applies them, leave every pending task queued, every lease and deadline on a timer, and announce
//! exactly the executions that ended and the attempts taken away.
//!
//! Runs 64 cases of up to 40 steps by default, per backend; `STENT_PROPTEST_CASES` and
//! `STENT_PROPTEST_STEPS` raise them for longer runs. A failure prints the shrunk step list.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

use stent::storage::records::{RetryRecord, HISTORY_ENTRIES_MAX};
use stent::storage::{
    CleanupCursor, CleanupParts, Effect, Faults, NewExecution, Op, OpOutput, OpResult, Rejection, StorageError, Store,
};
use stent::LeaseError;
use stent::{ActivityError, CleanupReport, ExecutionState, TaskState};

const START_MS: u64 = 1_000;
const MAX_DELAY_MS: u64 = 1_500;
const QUEUES: [&str; 2] = ["a", "b"];
const PERMANENT_CODE: &str = "fatal";

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config() -> Config {
    Config {
        cases: env_or("STENT_PROPTEST_CASES", 64),
        // The shrunk case is printed on failure; no regression file is written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

fn max_steps() -> usize {
    env_or("STENT_PROPTEST_STEPS", 40).max(1) as usize
}

// ---------------------------------------------------------------------------------------------
// Transitions. Picks are resolved against the model when the step is applied, so a step stays
// meaningful (and the model stays exact) when shrinking deletes the steps before it.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum TaskPick {
    /// The i-th (mod count) task a claim could take now.
    Claimable(usize),
    /// The i-th (mod count) task holding a lease.
    Running(usize),
    /// Any id, known or not (0 and ids past the last dispatch are unknown).
    Id(u64),
}

#[derive(Clone, Copy, Debug)]
enum TokenPick {
    /// The last token handed out for the task (stale once the task was re-queued or ended).
    Current,
    Previous,
    Next,
    Zero,
}

#[derive(Clone, Debug)]
enum ExecPick {
    Live(usize),
    Id(u64),
}

#[derive(Clone, Debug)]
enum DlPick {
    Existing(usize),
    Id(u64),
}

#[derive(Clone, Copy, Debug)]
enum ErrPick {
    Retryable,
    /// Retryable kind, but with a code the task's policy lists as permanent.
    PermanentCode,
    Permanent,
}

#[derive(Clone, Debug)]
enum ClockPick {
    By(u64),
    /// To the lease expiry of the i-th running task, or one millisecond before it.
    ToLeaseExpiry {
        index: usize,
        minus_one: bool,
    },
    /// To the due time of the i-th delayed task.
    ToDue(usize),
}

#[derive(Clone, Debug)]
struct DispatchSpec {
    delay_ms: u64,
    max_attempts: u32,
    initial_delay_ms: u64,
    key: Option<u8>,
    max_duration_ms: Option<u64>,
    queue: usize,
    priority: i32,
    /// The code version the execution starts under (a claim by older code is refused).
    version: u32,
}

#[derive(Clone, Debug)]
enum Cmd {
    Dispatch(DispatchSpec),
    Claim {
        task: TaskPick,
        lease_ms: u64,
        version: u32,
    },
    Renew {
        leases: Vec<(TaskPick, TokenPick)>,
        lease_ms: u64,
    },
    Complete {
        task: TaskPick,
        token: TokenPick,
    },
    Fail {
        task: TaskPick,
        token: TokenPick,
        error: ErrPick,
    },
    Expire {
        task: TaskPick,
        token: TokenPick,
    },
    /// A draining worker gives its attempt back.
    Abandon {
        task: TaskPick,
        token: TokenPick,
    },
    Cancel(ExecPick),
    TimeOut(ExecPick),
    Replay {
        dl: DlPick,
        new_input: bool,
    },
    Discard(DlPick),
}

#[derive(Clone, Debug)]
enum Step {
    /// Ops applied in one `apply_batch` (one transaction).
    Batch(Vec<Cmd>),
    /// Ops applied in one batch whose commit is made to fail: nothing may change.
    FailedCommit(Vec<Cmd>),
    Advance(ClockPick),
    /// What the engine's reaper does: one batch expiring every lease past its expiry now.
    Reap,
    CrashReopen,
    /// A whole retention cleanup (`Op::Cleanup` until nothing is left), `budget` records per
    /// op, removing what ended more than `older_than_ms` ago.
    Cleanup {
        older_than_ms: u64,
        budget: u32,
    },
}

// ---------------------------------------------------------------------------------------------
// Concrete ops and their expected outcomes.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum COp {
    Dispatch(DispatchSpec),
    Claim { task: u64, lease_ms: u64, version: u32 },
    Renew { leases: Vec<(u64, u32)>, lease_ms: u64 },
    Complete { task: u64, token: u32 },
    Fail { task: u64, token: u32, error: ErrPick },
    Expire { task: u64, token: u32 },
    Abandon { task: u64, token: u32 },
    Cancel(u64),
    TimeOut(u64),
    Replay { dl: u64, new_input: bool },
    Discard(u64),
}

#[derive(Clone, Debug, PartialEq)]
enum Rej {
    LeaseLost {
        task: u64,
        token: u32,
    },
    NotClaimable(u64),
    UnknownExecution(u64),
    UnknownDeadLetter(u64),
    /// `StorageError::Corrupted`: what the store answers for a task id it has no record of.
    MissingRecord,
    Config,
    Other(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Dispatched { exec: u64, created: bool },
    Claimed { task: u64, exec: u64, token: u32, expires: u64 },
    Renewed(Vec<Result<u64, Rej>>),
    Done,
    Failed { buried: bool },
    Expired(bool),
    State(ExecutionState),
    Replayed { exec: u64 },
    Rejected(Rej),
}

#[derive(Clone, Debug)]
struct Planned {
    op: COp,
    expect: Outcome,
    /// The model's task state and live lease token before this op (for Complete/Fail/Abandon).
    pre_state: Option<TaskState>,
    pre_token: Option<u32>,
}

#[derive(Clone, Debug)]
enum Last {
    Start,
    Batch(Vec<Planned>),
    FailedCommit(Vec<Planned>),
    Advance,
    Crash,
    Cleanup { cutoff_ms: u64, budget: u32, expect: CleanupReport },
}

// ---------------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct MLease {
    token: u32,
    expires: u64,
}

#[derive(Clone, Debug)]
struct MTask {
    exec: u64,
    queue: usize,
    state: TaskState,
    attempt: u32,
    round_start: u32,
    due: Option<u64>,
    lease: Option<MLease>,
    max_attempts: u32,
    initial_delay_ms: u64,
    /// Attempts that ended in a failure or were lost: the task's history entries.
    ended_badly: u32,
    version: u32,
}

#[derive(Clone, Debug)]
struct MExec {
    state: ExecutionState,
    created: u64,
    /// When it last became terminal (`None` while live: a replay re-opens it).
    finished: Option<u64>,
    task: u64,
    max_duration: Option<u64>,
    deadline: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
struct MDead {
    exec: u64,
    task: u64,
    attempts: u32,
    failed_ms: u64,
}

#[derive(Clone, Debug)]
struct Model {
    now: u64,
    execs: BTreeMap<u64, MExec>,
    tasks: BTreeMap<u64, MTask>,
    keys: BTreeMap<u8, u64>,
    dead: BTreeMap<u64, MDead>,
    next_exec: u64,
    next_task: u64,
    next_dead: u64,
    last: Last,
    /// Executions that ended, and tasks whose attempt was taken away, in the last step: the
    /// `Finished` and `Abort` effects the batch must carry.
    finished: Vec<u64>,
    aborted: Vec<u64>,
    /// Executions that failed into the dead-letter queue in the last step (`DeadLettered`).
    buried: Vec<u64>,
}

fn retry_delay(initial_ms: u64, attempts_done: u32) -> u64 {
    let factor = 1u64 << attempts_done.saturating_sub(1).min(20);
    initial_ms.saturating_mul(factor).min(MAX_DELAY_MS)
}

fn live(state: TaskState) -> bool {
    matches!(state, TaskState::Pending | TaskState::Running)
}

impl Model {
    fn new() -> Self {
        Model {
            now: START_MS,
            execs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            keys: BTreeMap::new(),
            dead: BTreeMap::new(),
            next_exec: 1,
            next_task: 1,
            next_dead: 1,
            last: Last::Start,
            finished: Vec::new(),
            aborted: Vec::new(),
            buried: Vec::new(),
        }
    }

    fn claimable(&self) -> Vec<u64> {
        self.tasks
            .iter()
            .filter(|(_, t)| {
                t.state == TaskState::Pending
                    && t.due.is_none_or(|d| d <= self.now)
                    && !self.execs[&t.exec].state.is_terminal()
            })
            .map(|(&id, _)| id)
            .collect()
    }

    fn running(&self) -> Vec<u64> {
        self.tasks.iter().filter(|(_, t)| t.lease.is_some()).map(|(&id, _)| id).collect()
    }

    fn nth_or(&self, list: &[u64], i: usize) -> u64 {
        if !list.is_empty() {
            return list[i % list.len()];
        }
        let all: Vec<u64> = self.tasks.keys().copied().collect();
        if all.is_empty() {
            self.next_task
        } else {
            all[i % all.len()]
        }
    }

    fn pick_task(&self, p: &TaskPick) -> u64 {
        match p {
            TaskPick::Claimable(i) => self.nth_or(&self.claimable(), *i),
            TaskPick::Running(i) => self.nth_or(&self.running(), *i),
            TaskPick::Id(id) => *id,
        }
    }

    fn pick_token(&self, task: u64, p: TokenPick) -> u32 {
        let attempt = self.tasks.get(&task).map_or(0, |t| t.attempt);
        match p {
            TokenPick::Current => attempt,
            TokenPick::Previous => attempt.saturating_sub(1),
            TokenPick::Next => attempt + 1,
            TokenPick::Zero => 0,
        }
    }

    fn pick_exec(&self, p: &ExecPick) -> u64 {
        match p {
            ExecPick::Id(id) => *id,
            ExecPick::Live(i) => {
                let live: Vec<u64> =
                    self.execs.iter().filter(|(_, e)| !e.state.is_terminal()).map(|(&id, _)| id).collect();
                let all: Vec<u64> = self.execs.keys().copied().collect();
                if !live.is_empty() {
                    live[i % live.len()]
                } else if !all.is_empty() {
                    all[i % all.len()]
                } else {
                    self.next_exec
                }
            }
        }
    }

    fn pick_dl(&self, p: &DlPick) -> u64 {
        match p {
            DlPick::Id(id) => *id,
            DlPick::Existing(i) => {
                let ids: Vec<u64> = self.dead.keys().copied().collect();
                if ids.is_empty() {
                    self.next_dead
                } else {
                    ids[i % ids.len()]
                }
            }
        }
    }

    fn resolve_clock(&self, p: &ClockPick) -> u64 {
        let target = match p {
            ClockPick::By(ms) => self.now + ms,
            ClockPick::ToLeaseExpiry { index, minus_one } => {
                let running = self.running();
                if running.is_empty() {
                    self.now
                } else {
                    let task = &self.tasks[&running[index % running.len()]];
                    let expires = task.lease.as_ref().map_or(self.now, |l| l.expires);
                    expires.saturating_sub(u64::from(*minus_one))
                }
            }
            ClockPick::ToDue(index) => {
                let dues: Vec<u64> =
                    self.tasks.values().filter(|t| t.state == TaskState::Pending).filter_map(|t| t.due).collect();
                if dues.is_empty() {
                    self.now
                } else {
                    dues[index % dues.len()]
                }
            }
        };
        target.max(self.now)
    }

    /// The task is pending again: ready at once, or due after `delay_ms`.
    fn requeue(&mut self, task: u64, delay_ms: u64) {
        let now = self.now;
        let t = self.tasks.get_mut(&task).expect("requeued task exists");
        t.state = TaskState::Pending;
        t.lease = None;
        t.due = (delay_ms > 0).then_some(now + delay_ms);
    }

    fn bury(&mut self, task: u64) {
        let t = self.tasks.get_mut(&task).expect("buried task exists");
        t.state = TaskState::Failed;
        t.lease = None;
        t.due = None;
        let (exec, attempts) = (t.exec, t.attempt);
        let e = self.execs.get_mut(&exec).expect("execution exists");
        e.state = ExecutionState::Failed;
        e.finished = Some(self.now);
        self.finished.push(exec);
        self.buried.push(exec);
        let id = self.next_dead;
        self.next_dead += 1;
        self.dead.insert(id, MDead { exec, task, attempts, failed_ms: self.now });
    }

    /// `after_lost_attempt`: the attempt counts; re-queue at once or bury.
    fn lost_attempt(&mut self, task: u64) {
        let t = self.tasks.get_mut(&task).expect("task exists");
        t.ended_badly += 1;
        if t.attempt - t.round_start < t.max_attempts {
            self.requeue(task, 0);
        } else {
            self.bury(task);
        }
    }

    /// Retention: dead letters from before the cutoff, and executions that ended before it
    /// with their tasks and idempotency keys.
    fn cleanup(&mut self, cutoff_ms: u64) -> CleanupReport {
        let letters: Vec<u64> = self.dead.iter().filter(|(_, d)| d.failed_ms < cutoff_ms).map(|(&id, _)| id).collect();
        for id in &letters {
            self.dead.remove(id);
        }
        let execs: Vec<u64> = self
            .execs
            .iter()
            .filter(|(_, e)| e.state.is_terminal() && e.finished.is_some_and(|f| f < cutoff_ms))
            .map(|(&id, _)| id)
            .collect();
        for id in &execs {
            let e = self.execs.remove(id).expect("listed above");
            assert!(e.created < cutoff_ms, "model: ended before it was created");
            self.tasks.remove(&e.task);
            self.keys.retain(|_, exec| exec != id);
        }
        CleanupReport {
            executions: execs.len() as u64,
            dead_letters: letters.len() as u64,
            cache_entries: 0,
            rate_budgets: 0,
        }
    }

    fn plan(&mut self, cmd: &Cmd) -> Planned {
        let (op, pre_task) = self.resolve(cmd);
        let pre_state = pre_task.and_then(|id| self.tasks.get(&id).map(|t| t.state));
        let pre_token = pre_task.and_then(|id| self.tasks.get(&id)).and_then(|t| t.lease.as_ref().map(|l| l.token));
        let expect = self.exec_op(&op);
        Planned { op, expect, pre_state, pre_token }
    }

    fn resolve(&self, cmd: &Cmd) -> (COp, Option<u64>) {
        match cmd {
            Cmd::Dispatch(d) => (COp::Dispatch(d.clone()), None),
            Cmd::Claim { task, lease_ms, version } => {
                let task = self.pick_task(task);
                (COp::Claim { task, lease_ms: *lease_ms, version: *version }, Some(task))
            }
            Cmd::Renew { leases, lease_ms } => {
                let leases = leases
                    .iter()
                    .map(|(p, tp)| {
                        let task = self.pick_task(p);
                        (task, self.pick_token(task, *tp))
                    })
                    .collect();
                (COp::Renew { leases, lease_ms: *lease_ms }, None)
            }
            Cmd::Complete { task, token } => {
                let task = self.pick_task(task);
                let token = self.pick_token(task, *token);
                (COp::Complete { task, token }, Some(task))
            }
            Cmd::Fail { task, token, error } => {
                let task = self.pick_task(task);
                let token = self.pick_token(task, *token);
                (COp::Fail { task, token, error: *error }, Some(task))
            }
            Cmd::Expire { task, token } => {
                let task = self.pick_task(task);
                let token = self.pick_token(task, *token);
                (COp::Expire { task, token }, Some(task))
            }
            Cmd::Abandon { task, token } => {
                let task = self.pick_task(task);
                let token = self.pick_token(task, *token);
                (COp::Abandon { task, token }, Some(task))
            }
            Cmd::Cancel(p) => (COp::Cancel(self.pick_exec(p)), None),
            Cmd::TimeOut(p) => (COp::TimeOut(self.pick_exec(p)), None),
            Cmd::Replay { dl, new_input } => (COp::Replay { dl: self.pick_dl(dl), new_input: *new_input }, None),
            Cmd::Discard(p) => (COp::Discard(self.pick_dl(p)), None),
        }
    }

    /// Applies one concrete op to the model and returns what the store must answer.
    fn exec_op(&mut self, op: &COp) -> Outcome {
        let now = self.now;
        match op {
            COp::Dispatch(d) => {
                if let Some(exec) = d.key.and_then(|k| self.keys.get(&k).copied()) {
                    return Outcome::Dispatched { exec, created: false };
                }
                let (exec, task) = (self.next_exec, self.next_task);
                self.next_exec += 1;
                self.next_task += 1;
                let scheduled = now + d.delay_ms;
                self.execs.insert(
                    exec,
                    MExec {
                        state: ExecutionState::Pending,
                        created: now,
                        finished: None,
                        task,
                        max_duration: d.max_duration_ms,
                        deadline: d.max_duration_ms.map(|m| scheduled + m),
                    },
                );
                self.tasks.insert(
                    task,
                    MTask {
                        exec,
                        queue: d.queue,
                        state: TaskState::Pending,
                        attempt: 0,
                        round_start: 0,
                        due: (d.delay_ms > 0).then_some(scheduled),
                        lease: None,
                        max_attempts: d.max_attempts,
                        initial_delay_ms: d.initial_delay_ms,
                        ended_badly: 0,
                        version: d.version,
                    },
                );
                if let Some(k) = d.key {
                    self.keys.insert(k, exec);
                }
                Outcome::Dispatched { exec, created: true }
            }
            COp::Claim { task, lease_ms, version } => {
                let Some(t) = self.tasks.get(task) else {
                    return Outcome::Rejected(Rej::MissingRecord);
                };
                let exec = t.exec;
                if t.state != TaskState::Pending
                    || t.due.is_some_and(|d| d > now)
                    || self.execs[&exec].state.is_terminal()
                    || t.lease.is_some()
                    || t.version > *version
                {
                    return Outcome::Rejected(Rej::NotClaimable(*task));
                }
                let t = self.tasks.get_mut(task).expect("checked above");
                t.attempt += 1;
                t.state = TaskState::Running;
                t.due = None;
                let expires = now + lease_ms;
                t.lease = Some(MLease { token: t.attempt, expires });
                let token = t.attempt;
                let e = self.execs.get_mut(&exec).expect("execution exists");
                if e.state == ExecutionState::Pending {
                    e.state = ExecutionState::Running;
                }
                Outcome::Claimed { task: *task, exec, token, expires }
            }
            COp::Renew { leases, lease_ms } => {
                let mut results = Vec::new();
                for &(task, token) in leases {
                    let lease = self.tasks.get_mut(&task).and_then(|t| t.lease.as_mut());
                    match lease {
                        Some(l) if l.token == token => {
                            l.expires = l.expires.max(now + lease_ms);
                            results.push(Ok(l.expires));
                        }
                        _ => results.push(Err(Rej::LeaseLost { task, token })),
                    }
                }
                Outcome::Renewed(results)
            }
            COp::Complete { task, token } => {
                let Some(t) = self.tasks.get_mut(task) else {
                    return Outcome::Rejected(Rej::MissingRecord);
                };
                if t.lease.as_ref().is_none_or(|l| l.token != *token) {
                    return Outcome::Rejected(Rej::LeaseLost { task: *task, token: *token });
                }
                t.lease = None;
                t.state = TaskState::Completed;
                let exec = t.exec;
                let e = self.execs.get_mut(&exec).expect("execution exists");
                e.state = ExecutionState::Completed;
                e.finished = Some(now);
                self.finished.push(exec);
                Outcome::Done
            }
            COp::Fail { task, token, error } => {
                let Some(t) = self.tasks.get_mut(task) else {
                    return Outcome::Rejected(Rej::MissingRecord);
                };
                if t.lease.as_ref().is_none_or(|l| l.token != *token) {
                    return Outcome::Rejected(Rej::LeaseLost { task: *task, token: *token });
                }
                t.lease = None;
                t.ended_badly += 1;
                let attempts = t.attempt - t.round_start;
                let retries = matches!(error, ErrPick::Retryable);
                let buried = !(retries && attempts < t.max_attempts);
                if buried {
                    self.bury(*task);
                } else {
                    let delay = retry_delay(t.initial_delay_ms, attempts);
                    self.requeue(*task, delay);
                }
                Outcome::Failed { buried }
            }
            COp::Expire { task, token } => {
                let Some(t) = self.tasks.get(task) else {
                    return Outcome::Rejected(Rej::MissingRecord);
                };
                match &t.lease {
                    Some(l) if l.token == *token && l.expires <= now => {
                        self.lost_attempt(*task);
                        self.aborted.push(*task);
                        Outcome::Expired(true)
                    }
                    _ => Outcome::Expired(false),
                }
            }
            COp::Abandon { task, token } => {
                let Some(t) = self.tasks.get_mut(task) else {
                    return Outcome::Rejected(Rej::MissingRecord);
                };
                if t.lease.as_ref().is_none_or(|l| l.token != *token) {
                    return Outcome::Rejected(Rej::LeaseLost { task: *task, token: *token });
                }
                t.lease = None;
                self.lost_attempt(*task);
                Outcome::Done
            }
            COp::Cancel(id) | COp::TimeOut(id) => {
                let timeout = matches!(op, COp::TimeOut(_));
                let Some(e) = self.execs.get(id) else {
                    return Outcome::Rejected(Rej::UnknownExecution(*id));
                };
                if e.state.is_terminal() {
                    return Outcome::State(e.state);
                }
                if timeout && e.deadline.is_none_or(|d| d > now) {
                    return Outcome::State(e.state);
                }
                let task = e.task;
                let t = self.tasks.get_mut(&task).expect("root task exists");
                if live(t.state) {
                    t.state = TaskState::Cancelled;
                    t.lease = None;
                    t.due = None;
                    self.aborted.push(task);
                }
                let end = if timeout { ExecutionState::TimedOut } else { ExecutionState::Cancelled };
                let e = self.execs.get_mut(id).expect("checked above");
                e.state = end;
                e.finished = Some(now);
                self.finished.push(*id);
                Outcome::State(end)
            }
            COp::Replay { dl, .. } => {
                let Some(letter) = self.dead.get(dl).cloned() else {
                    return Outcome::Rejected(Rej::UnknownDeadLetter(*dl));
                };
                let t = self.tasks.get_mut(&letter.task).expect("letter's task exists");
                let e = self.execs.get_mut(&t.exec).expect("letter's execution");
                if e.state != ExecutionState::Failed || t.state != TaskState::Failed {
                    return Outcome::Rejected(Rej::Config);
                }
                t.state = TaskState::Pending;
                t.round_start = t.attempt;
                t.due = None;
                e.state = ExecutionState::Pending;
                e.finished = None;
                e.deadline = e.max_duration.map(|m| now + m);
                self.dead.remove(dl);
                Outcome::Replayed { exec: letter.exec }
            }
            COp::Discard(dl) => {
                if self.dead.remove(dl).is_none() {
                    return Outcome::Rejected(Rej::UnknownDeadLetter(*dl));
                }
                Outcome::Done
            }
        }
    }

    /// Recovery at open: every leased task, in `idx_leases` order (expiry, id), loses its
    /// attempt.
    fn recover(&mut self) {
        let mut leased: Vec<(u64, u64)> =
            self.tasks.iter().filter_map(|(&id, t)| t.lease.as_ref().map(|l| (l.expires, id))).collect();
        leased.sort();
        for (_, task) in leased {
            self.tasks.get_mut(&task).expect("leased task").lease = None;
            self.lost_attempt(task);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------------

fn task_pick(max_id: u64, prefer: fn(usize) -> TaskPick) -> impl Strategy<Value = TaskPick> {
    prop_oneof![
        8 => (0usize..8).prop_map(prefer),
        1 => (0..=max_id).prop_map(TaskPick::Id),
    ]
}

fn token_pick() -> impl Strategy<Value = TokenPick> {
    prop_oneof![
        6 => Just(TokenPick::Current),
        2 => Just(TokenPick::Previous),
        1 => Just(TokenPick::Next),
        1 => Just(TokenPick::Zero),
    ]
}

fn dispatch_spec() -> impl Strategy<Value = DispatchSpec> {
    (
        prop_oneof![3 => Just(0u64), 1 => Just(50u64), 1 => Just(500u64)],
        1u32..=3,
        prop_oneof![Just(0u64), Just(50u64), Just(100u64), Just(1_000u64)],
        prop_oneof![2 => Just(None), 1 => (0u8..3).prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => Just(Some(300u64)), 1 => Just(Some(2_000u64))],
        0usize..QUEUES.len(),
        -1i32..=1,
        prop_oneof![3 => Just(1u32), 1 => Just(2u32)],
    )
        .prop_map(|(delay_ms, max_attempts, initial_delay_ms, key, max_duration_ms, queue, priority, version)| {
            DispatchSpec { delay_ms, max_attempts, initial_delay_ms, key, max_duration_ms, queue, priority, version }
        })
}

fn lease_ms() -> impl Strategy<Value = u64> {
    prop_oneof![Just(100u64), Just(1_000u64)]
}

/// Weights follow the state, so that most ops can take effect: few claims while nothing is
/// claimable, many completions while something runs, replays while letters exist.
fn cmd(s: &Model) -> BoxedStrategy<Cmd> {
    let max_task = s.next_task + 1;
    let max_exec = s.next_exec + 1;
    let max_dl = s.next_dead + 1;
    let running = move || task_pick(max_task, TaskPick::Running);
    let exec_pick = move || {
        prop_oneof![
            3 => (0usize..8).prop_map(ExecPick::Live),
            1 => (0..=max_exec).prop_map(ExecPick::Id),
        ]
    };
    let dl_pick = move || {
        prop_oneof![
            4 => (0usize..8).prop_map(DlPick::Existing),
            1 => (0..=max_dl).prop_map(DlPick::Id),
        ]
    };
    let (has_tasks, has_claimable, has_running, has_dead) =
        (!s.tasks.is_empty(), !s.claimable().is_empty(), !s.running().is_empty(), !s.dead.is_empty());
    let w = |cond: bool, yes: u32, no: u32| if cond { yes } else { no };
    prop_oneof![
        w(s.tasks.len() < 3, 8, 3) => dispatch_spec().prop_map(Cmd::Dispatch),
        w(has_claimable, 8, 1) => (
            task_pick(max_task, TaskPick::Claimable),
            lease_ms(),
            prop_oneof![3 => Just(2u32), 1 => Just(1u32)],
        )
            .prop_map(|(task, lease_ms, version)| Cmd::Claim { task, lease_ms, version }),
        w(has_running, 2, 1) => (
            proptest::collection::vec((running(), token_pick()), 1..=3),
            lease_ms(),
        )
            .prop_map(|(leases, lease_ms)| Cmd::Renew { leases, lease_ms }),
        w(has_running, 5, 1) => (running(), token_pick())
            .prop_map(|(task, token)| Cmd::Complete { task, token }),
        w(has_running, 6, 1) => (
            running(),
            token_pick(),
            prop_oneof![
                3 => Just(ErrPick::Retryable),
                1 => Just(ErrPick::PermanentCode),
                1 => Just(ErrPick::Permanent),
            ],
        )
            .prop_map(|(task, token, error)| Cmd::Fail { task, token, error }),
        w(has_running, 4, 1) => (running(), token_pick())
            .prop_map(|(task, token)| Cmd::Expire { task, token }),
        w(has_running, 2, 1) => (running(), token_pick())
            .prop_map(|(task, token)| Cmd::Abandon { task, token }),
        w(has_tasks, 1, 1) => exec_pick().prop_map(Cmd::Cancel),
        w(has_tasks, 2, 1) => exec_pick().prop_map(Cmd::TimeOut),
        w(has_dead, 6, 1) => (dl_pick(), any::<bool>())
            .prop_map(|(dl, new_input)| Cmd::Replay { dl, new_input }),
        w(has_dead, 3, 1) => dl_pick().prop_map(Cmd::Discard),
    ]
    .boxed()
}

fn clock_pick(s: &Model) -> impl Strategy<Value = ClockPick> {
    let has_running = !s.running().is_empty();
    let has_due = s.tasks.values().any(|t| t.due.is_some());
    prop_oneof![
        3 => prop_oneof![
            Just(1u64),
            Just(10u64),
            Just(99u64),
            Just(100u64),
            Just(250u64),
            Just(1_000u64),
            Just(5_000u64),
        ]
        .prop_map(ClockPick::By),
        if has_running { 4 } else { 1 } => (0usize..8, any::<bool>())
            .prop_map(|(index, minus_one)| ClockPick::ToLeaseExpiry { index, minus_one }),
        if has_due { 2 } else { 1 } => (0usize..8).prop_map(ClockPick::ToDue),
    ]
}

/// The reference side: generates steps and predicts the store's answers.
struct StoreModel;

/// The test side: runs the steps on a store from factory `F` and compares.
struct StoreTest<F>(PhantomData<F>);

impl ReferenceStateMachine for StoreModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(s: &Model) -> BoxedStrategy<Step> {
        prop_oneof![
            8 => cmd(s).prop_map(|c| Step::Batch(vec![c])),
            2 => proptest::collection::vec(cmd(s), 2..=4).prop_map(Step::Batch),
            1 => proptest::collection::vec(cmd(s), 1..=3).prop_map(Step::FailedCommit),
            3 => clock_pick(s).prop_map(Step::Advance),
            if s.running().is_empty() { 1 } else { 3 } => Just(Step::Reap),
            1 => Just(Step::CrashReopen),
            1 => (prop_oneof![Just(0u64), Just(100), 0..3_000u64], 1..=3u32)
                .prop_map(|(older_than_ms, budget)| Step::Cleanup { older_than_ms, budget }),
        ]
        .boxed()
    }

    fn apply(mut s: Model, step: &Step) -> Model {
        s.finished.clear();
        s.aborted.clear();
        s.buried.clear();
        match step {
            Step::Batch(cmds) => {
                let planned = cmds.iter().map(|c| s.plan(c)).collect();
                s.last = Last::Batch(planned);
            }
            Step::FailedCommit(cmds) => {
                let mut scratch = s.clone();
                let planned = cmds.iter().map(|c| scratch.plan(c)).collect();
                s.last = Last::FailedCommit(planned);
            }
            Step::Advance(p) => {
                s.now = s.resolve_clock(p);
                s.last = Last::Advance;
            }
            Step::Reap => {
                let due: Vec<COp> = s
                    .tasks
                    .iter()
                    .filter_map(|(&task, t)| {
                        let l = t.lease.as_ref()?;
                        (l.expires <= s.now).then_some(COp::Expire { task, token: l.token })
                    })
                    .collect();
                let planned = due
                    .into_iter()
                    .map(|op| {
                        let expect = s.exec_op(&op);
                        Planned { op, expect, pre_state: None, pre_token: None }
                    })
                    .collect();
                s.last = Last::Batch(planned);
            }
            Step::CrashReopen => {
                s.recover();
                // Recovery rebuilds memory from the indexes; it reports no endings.
                s.finished.clear();
                s.buried.clear();
                s.last = Last::Crash;
            }
            Step::Cleanup { older_than_ms, budget } => {
                let cutoff_ms = s.now.saturating_sub(*older_than_ms);
                let expect = s.cleanup(cutoff_ms);
                s.last = Last::Cleanup { cutoff_ms, budget: *budget, expect };
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Store factories: the only backend-specific code in this file.
// ---------------------------------------------------------------------------------------------

/// How the tests get a store of one backend. Everything outside the implementations goes
/// through this trait and `stent::storage::Store` only, so a second backend runs every test in
/// this file with one implementation and one line in `model_tests!`.
trait StoreFactory: 'static {
    type Store: Store;
    /// Shown in the consistency checks' failure messages.
    const NAME: &'static str;

    /// A factory over new, empty durable state (a new file, disk, database…).
    fn new() -> Self;

    /// Opens a store on this factory's durable state the way the engine opens it at start-up
    /// (with the checks its default open makes), without calling `recover`. The store must
    /// honour `faults`: the test sets `fail_next_commit` and expects that batch to fail with
    /// `StorageError::Injected` and write nothing.
    fn open(&mut self, faults: &Arc<Faults>) -> Self::Store;

    /// A crash: the process dies with `store` open, and a new one opens a store on the same
    /// durable state. Everything committed must survive it, and nothing else.
    fn crash(&mut self, store: Self::Store, faults: &Arc<Faults>) -> Self::Store {
        drop(store);
        self.open(faults)
    }

    /// The backend's own consistency check besides `Store::check` (for redb, `check_live`: what
    /// its default open verifies). Must be empty on a sound store, like `check`.
    fn live_problems(store: &Self::Store) -> Result<Vec<String>, StorageError>;
}

/// The redb store on a `MemoryDisk`: a crash drops the store and reopens the same disk.
struct RedbMemoryFactory {
    disk: stent::testing::MemoryDisk,
}

impl StoreFactory for RedbMemoryFactory {
    type Store = stent::storage::RedbStore;
    const NAME: &'static str = "redb on a MemoryDisk";

    fn new() -> Self {
        RedbMemoryFactory { disk: stent::testing::MemoryDisk::new() }
    }

    fn open(&mut self, faults: &Arc<Faults>) -> Self::Store {
        stent::storage::RedbStore::open(stent::storage::OpenOptions {
            init_empty_file: false,
            read_only: false,
            file_mode: stent::storage::FILE_MODE_DEFAULT,
            path: None,
            backend: Some(Box::new(self.disk.clone())),
            verify_on_open: stent::VerifyOnOpen::Live,
            faults: faults.clone(),
            cache_entries_max: 10_000,
            page_cache_bytes: 64 << 20,
        })
        .expect("open the store on the memory disk")
    }

    fn live_problems(store: &Self::Store) -> Result<Vec<String>, StorageError> {
        store.check_live()
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test.
// ---------------------------------------------------------------------------------------------

struct Sut<F: StoreFactory> {
    /// Owns the durable state the store lives on, across crashes.
    factory: F,
    faults: Arc<Faults>,
    store: Option<F::Store>,
    /// Highest token a claim returned, per task.
    last_token: BTreeMap<u64, u32>,
    /// Highest `attempt` read back, per task.
    attempt_seen: BTreeMap<u64, u32>,
    /// Tasks whose Complete was accepted.
    completed: BTreeSet<u64>,
    /// What the engine's memory would hold after applying every effect so far (as
    /// `Engine::apply_effects` does): queued tasks and their due time (`None`: ready), lease
    /// timers, deadline timers.
    mem_queue: BTreeMap<u64, Option<u64>>,
    mem_leases: BTreeMap<u64, (u32, u64)>,
    mem_deadlines: BTreeMap<u64, u64>,
}

impl<F: StoreFactory> Sut<F> {
    fn store(&self) -> &F::Store {
        self.store.as_ref().expect("store is open")
    }
}

fn retry_record(d: &DispatchSpec) -> RetryRecord {
    RetryRecord {
        max_attempts: d.max_attempts,
        initial_delay_ms: d.initial_delay_ms,
        backoff_factor: 2.0,
        max_delay_ms: MAX_DELAY_MS,
        jitter: 0.0,
        retry_codes: Vec::new(),
        permanent_codes: vec![PERMANENT_CODE.to_string()],
    }
}

fn to_op(op: &COp) -> Op {
    match op {
        COp::Dispatch(d) => Op::Dispatch(NewExecution {
            claim: None,
            schedule: None,
            keys: Default::default(),
            flow: None,
            cache: None,
            kind: stent::storage::records::TaskKind::Activity,
            function: "f".into(),
            queue: QUEUES[d.queue].into(),
            priority: d.priority,
            tags: vec!["t".into()],
            input: b"{}".to_vec(),
            delay_ms: d.delay_ms,
            max_duration_ms: d.max_duration_ms,
            idempotency_key: d.key.map(|k| format!("key-{k}")),
            retry: retry_record(d),
            timeout_ms: None,
            version: d.version,
        }),
        COp::Claim { task, lease_ms, version } => Op::Claim {
            task_id: *task,
            worker: "w".into(),
            lease_ms: *lease_ms,
            version: *version,
            limits: Default::default(),
        },
        COp::Renew { leases, lease_ms } => {
            Op::Renew { leases: leases.clone(), lease_ms: *lease_ms, details: Vec::new() }
        }
        COp::Complete { task, token } => {
            Op::Complete { task_id: *task, token: *token, output: b"1".to_vec(), local: Default::default(), next: None }
        }
        COp::Fail { task, token, error } => Op::Fail {
            task_id: *task,
            token: *token,
            error: match error {
                ErrPick::Retryable => ActivityError::retryable("flaky"),
                ErrPick::PermanentCode => ActivityError::retryable("bad").with_code(PERMANENT_CODE),
                ErrPick::Permanent => ActivityError::permanent("broken"),
            },
            jitter_unit: 0.5,
        },
        COp::Expire { task, token } => Op::Expire { task_id: *task, token: *token },
        COp::Abandon { task, token } => Op::Abandon { task_id: *task, token: *token, reason: "draining".into() },
        COp::Cancel(id) => Op::Cancel { execution_id: *id },
        COp::TimeOut(id) => Op::TimeOut { execution_id: *id },
        COp::Replay { dl, new_input } => Op::ReplayDeadLetter { id: *dl, input: new_input.then(|| b"[2]".to_vec()) },
        COp::Discard(dl) => Op::DiscardDeadLetter { id: *dl },
    }
}

fn rej(e: &Rejection) -> Rej {
    match e {
        Rejection::Lease(LeaseError::LeaseLost { task_id, token }) => Rej::LeaseLost { task: *task_id, token: *token },
        Rejection::TaskNotClaimable(task_id) => Rej::NotClaimable(*task_id),
        Rejection::UnknownExecution(id) => Rej::UnknownExecution(*id),
        Rejection::UnknownDeadLetter(id) => Rej::UnknownDeadLetter(*id),
        Rejection::UnknownTask(_) => Rej::MissingRecord,
        Rejection::NotReplayable { .. } | Rejection::JournalFull { .. } => Rej::Config,
        other => Rej::Other(format!("{other:?}")),
    }
}

fn outcome(r: &OpResult) -> Outcome {
    match r {
        Err(e) => Outcome::Rejected(rej(e)),
        Ok(OpOutput::Dispatched { execution_id, created, .. }) => {
            Outcome::Dispatched { exec: *execution_id, created: *created }
        }
        Ok(OpOutput::Claimed(c)) => {
            Outcome::Claimed { task: c.task_id, exec: c.execution_id, token: c.token, expires: c.lease_expires_ms }
        }
        Ok(OpOutput::Renewed(rs)) => Outcome::Renewed(rs.iter().map(|r| r.as_ref().copied().map_err(rej)).collect()),
        Ok(OpOutput::Done) => Outcome::Done,
        Ok(OpOutput::Failed { buried }) => Outcome::Failed { buried: *buried },
        Ok(OpOutput::Expired(b)) => Outcome::Expired(*b),
        Ok(OpOutput::State(s)) => Outcome::State(*s),
        Ok(OpOutput::Replayed { execution_id }) => Outcome::Replayed { exec: *execution_id },
        // The model never asks for a continuation.
        Ok(OpOutput::Next(c)) => Outcome::Rejected(Rej::Other(format!("unasked continuation {c:?}"))),
        // Retention is covered by tests/retention.rs, not by this model.
        Ok(OpOutput::Cleaned { removed, .. }) => Outcome::Rejected(Rej::Other(format!("unasked cleanup {removed:?}"))),
        // Schedules are covered by tests/schedules*.rs, not by this model.
        Ok(OpOutput::Schedule { .. }) => Outcome::Rejected(Rej::Other("unasked schedule op".into())),
        // Flow control is covered by tests/flow_control.rs: the model's claims carry no limits.
        Ok(OpOutput::Deferred { .. } | OpOutput::KeyBusy) => Outcome::Rejected(Rej::Other("unasked limit".into())),
    }
}

type Snapshot = Option<(stent::storage::records::ExecutionRecord, stent::storage::records::TaskRecord)>;

impl<F: StoreFactory> Sut<F> {
    /// For a single Complete/Fail/Abandon whose token is not the stored lease's: the records
    /// before.
    fn stale_snapshot(&self, ref_state: &Model, p: &Planned) -> Option<(u64, u32, Snapshot)> {
        let (COp::Complete { task, token } | COp::Fail { task, token, .. } | COp::Abandon { task, token }) = &p.op
        else {
            return None;
        };
        let exec = ref_state.tasks.get(task)?.exec;
        let before = self.store().execution(exec).expect("read execution");
        let current = before.as_ref().and_then(|(_, t)| t.lease.as_ref().map(|l| l.token));
        (current != Some(*token)).then_some((*task, *token, before))
    }

    fn run_batch(&mut self, ref_state: &Model, planned: &[Planned]) {
        let stale = match planned {
            [single] => self.stale_snapshot(ref_state, single),
            _ => None,
        };
        let ops = planned.iter().map(|p| to_op(&p.op)).collect();
        let (results, effects) = self.store().apply_batch(ref_state.now, ops).expect("batch commits");
        self.apply_effects(ref_state, &effects);
        assert_eq!(results.len(), planned.len(), "one result per op");
        for (p, r) in planned.iter().zip(&results) {
            let got = outcome(r);
            // Independent of the model: a Complete/Fail/Abandon with a token that is not the live
            // lease's never succeeds, and one accepted Complete per task at most.
            if let COp::Complete { task, token } | COp::Fail { task, token, .. } | COp::Abandon { task, token } = &p.op
            {
                if r.is_ok() {
                    assert_eq!(
                        p.pre_token,
                        Some(*token),
                        "{:?} accepted with a token that is not the live lease's",
                        p.op
                    );
                    assert_ne!(
                        p.pre_state,
                        Some(TaskState::Completed),
                        "{:?} accepted for a task that had already completed",
                        p.op
                    );
                }
                if matches!(p.op, COp::Complete { .. }) && r.is_ok() {
                    assert!(self.completed.insert(*task), "task {task} completed twice");
                }
            }
            if let Outcome::Claimed { task, token, .. } = got {
                let last = self.last_token.insert(task, token).unwrap_or(0);
                assert!(token > last, "claim of task {task} handed out token {token} after token {last}");
            }
            assert_eq!(
                got, p.expect,
                "op {:?} at now={}: store answered {:?} (left), model expects {:?}",
                p.op, ref_state.now, got, p.expect
            );
        }
        if let Some((task, token, before)) = stale {
            assert!(
                matches!(&results[0], Err(Rejection::Lease(LeaseError::LeaseLost { .. }))),
                "stale token {token} on task {task} was not refused with LeaseLost: {:?}",
                results[0]
            );
            let exec = ref_state.tasks[&task].exec;
            let after = self.store().execution(exec).expect("read execution");
            assert_eq!(before, after, "a refused stale token {token} changed task {task}'s records");
        }
    }

    /// Mirrors `Engine::apply_effects`, and checks the batch announced exactly the endings and
    /// the revoked attempts the model made.
    fn apply_effects(&mut self, ref_state: &Model, effects: &[Effect]) {
        let mut finished = Vec::new();
        let mut aborted = Vec::new();
        let mut buried = Vec::new();
        for e in effects {
            match e {
                Effect::Ready(item) => {
                    self.mem_queue.insert(item.task_id, None);
                }
                Effect::Timer { due_ms, item } => {
                    self.mem_queue.insert(item.task_id, Some(*due_ms));
                }
                Effect::Lease { task_id, token, expires_ms } => {
                    // A worker took the task off the queue to claim it.
                    self.mem_queue.remove(task_id);
                    self.mem_leases.insert(*task_id, (*token, *expires_ms));
                }
                Effect::Deadline { execution_id, deadline_ms } => {
                    self.mem_deadlines.insert(*execution_id, *deadline_ms);
                }
                Effect::Finished { execution_id } => finished.push(*execution_id),
                Effect::DeadLettered { execution_id, .. } => buried.push(*execution_id),
                Effect::Claimed { .. } => panic!("an eager claim effect for a dispatch that asked for none"),
                Effect::Replied { .. } => panic!("a reply effect from ops that run no workflow"),
                Effect::Schedule { .. } => panic!("a schedule effect from ops that touch no schedule"),
                Effect::KeyWait { .. } | Effect::KeyFreed { .. } => panic!("a concurrency key effect without keys"),
                Effect::Abort { task_id, .. } => {
                    self.mem_leases.remove(task_id);
                    aborted.push(*task_id);
                }
            }
        }
        let mut want_finished = ref_state.finished.clone();
        let mut want_aborted = ref_state.aborted.clone();
        let mut want_buried = ref_state.buried.clone();
        for v in [&mut finished, &mut aborted, &mut buried, &mut want_finished, &mut want_aborted, &mut want_buried] {
            v.sort_unstable();
        }
        assert_eq!(finished, want_finished, "Finished effects of the batch");
        assert_eq!(aborted, want_aborted, "Abort effects of the batch");
        assert_eq!(buried, want_buried, "DeadLettered effects of the batch");
    }

    fn run_failed_commit(&mut self, ref_state: &Model, planned: &[Planned]) {
        let before = dump(self.store(), ref_state);
        self.faults.fail_next_commit.store(true, Ordering::Release);
        let ops = planned.iter().map(|p| to_op(&p.op)).collect();
        let result = self.store().apply_batch(ref_state.now, ops);
        assert!(
            matches!(result, Err(StorageError::Injected(_))),
            "a batch whose commit failed must report it: {result:?}"
        );
        assert!(!self.faults.fail_next_commit.load(Ordering::Acquire), "the injected fault fired");
        assert_eq!(before, dump(self.store(), ref_state), "a failed commit changed state");
    }

    fn run_cleanup(&mut self, ref_state: &Model, cutoff_ms: u64, budget: u32, expect: CleanupReport) {
        let total = cleanup_all(self.store(), ref_state.now, cutoff_ms, budget);
        assert_eq!(total, expect, "cleanup before {cutoff_ms} (budget {budget})");
        assert_eq!(self.store().cleanup_preview(ref_state.now, cutoff_ms).expect("preview"), CleanupReport::default());
    }

    fn crash_reopen(&mut self, ref_state: &Model) {
        let store = self.store.take().expect("store is open");
        let store = self.factory.crash(store, &self.faults);
        let effects = store.recover(ref_state.now).expect("recover");
        self.store = Some(store);
        // A new process: memory starts empty and is rebuilt from the recovery effects.
        self.mem_queue.clear();
        self.mem_leases.clear();
        self.mem_deadlines.clear();
        for &id in ref_state.execs.keys() {
            let (_, task) = self.store().execution(id).expect("read execution").expect("execution survives the crash");
            assert_ne!(task.state, TaskState::Running, "task {} still running after recovery", task.id);
        }
        let running = self.store().running_tasks().expect("running tasks");
        assert!(
            running.is_empty(),
            "tasks still running after recovery: {:?}",
            running.iter().map(|t| t.id).collect::<Vec<_>>()
        );
        // The effects rebuild memory: every pending task exactly once, every live deadline.
        let mut ready = BTreeSet::new();
        let mut timers = BTreeSet::new();
        let mut deadlines = BTreeSet::new();
        for e in &effects {
            match e {
                Effect::Ready(item) => {
                    assert!(ready.insert(item.task_id), "{e:?} twice");
                    self.mem_queue.insert(item.task_id, None);
                }
                Effect::Timer { due_ms, item } => {
                    assert!(timers.insert((*due_ms, item.task_id)), "{e:?} twice");
                    self.mem_queue.insert(item.task_id, Some(*due_ms));
                }
                Effect::Deadline { execution_id, deadline_ms } => {
                    deadlines.insert((*deadline_ms, *execution_id));
                    self.mem_deadlines.insert(*execution_id, *deadline_ms);
                }
                other => panic!("unexpected effect from recover: {other:?}"),
            }
        }
        let m = ref_state;
        let want_ready: BTreeSet<u64> = m
            .tasks
            .iter()
            .filter(|(_, t)| t.state == TaskState::Pending && t.due.is_none())
            .map(|(&id, _)| id)
            .collect();
        let want_timers: BTreeSet<(u64, u64)> = m
            .tasks
            .iter()
            .filter(|(_, t)| t.state == TaskState::Pending)
            .filter_map(|(&id, t)| t.due.map(|d| (d, id)))
            .collect();
        let want_deadlines: BTreeSet<(u64, u64)> = m
            .execs
            .iter()
            .filter(|(_, e)| !e.state.is_terminal())
            .filter_map(|(&id, e)| e.deadline.map(|d| (d, id)))
            .collect();
        assert_eq!(ready, want_ready, "Ready effects after recovery");
        assert_eq!(timers, want_timers, "Timer effects after recovery");
        assert_eq!(deadlines, want_deadlines, "Deadline effects after recovery");
    }

    /// Checks that hold whatever the model says, and records what must only grow.
    fn observe(&mut self, ref_state: &Model) {
        let store = self.store.as_ref().expect("store is open");
        let problems = store.check().expect("check runs");
        assert!(problems.is_empty(), "{}: store.check(): {problems:#?}", F::NAME);
        // What the default open verifies must agree with the full check on a sound store.
        let live = F::live_problems(store).expect("the live check runs");
        assert!(live.is_empty(), "{}: the live check (for redb check_live()): {live:#?}", F::NAME);
        let running: BTreeSet<u64> = store.running_tasks().expect("running tasks").iter().map(|t| t.id).collect();
        for &id in ref_state.execs.keys() {
            let Some((exec, task)) = store.execution(id).expect("read execution") else {
                continue; // The model comparison reports it.
            };
            if !exec.state.is_terminal() {
                // Liveness: memory knows how to move every live execution on (a queue entry
                // or timer for a pending task, a lease timer for a running one, a deadline).
                match task.state {
                    TaskState::Pending => {
                        assert!(task.lease.is_none(), "execution {id}: pending task {} holds a lease", task.id);
                        assert_eq!(
                            self.mem_queue.get(&task.id),
                            Some(&task.due_ms),
                            "execution {id}: pending task {} (due {:?}) is not queued in memory",
                            task.id,
                            task.due_ms
                        );
                    }
                    TaskState::Running => {
                        let lease = task.lease.as_ref().map(|l| (l.token, l.expires_ms));
                        assert!(
                            lease.is_some() && running.contains(&task.id),
                            "execution {id}: running task {} has no lease",
                            task.id
                        );
                        assert_eq!(
                            self.mem_leases.get(&task.id),
                            lease.as_ref(),
                            "execution {id}: running task {}'s lease has no timer in memory",
                            task.id
                        );
                    }
                    other => panic!("execution {id} is {} but its task {} is {other:?}", exec.state, task.id),
                }
                if let Some(deadline) = exec.deadline_ms {
                    assert_eq!(
                        self.mem_deadlines.get(&id),
                        Some(&deadline),
                        "execution {id}: deadline has no timer in memory"
                    );
                }
            }
            let seen = self.attempt_seen.entry(task.id).or_insert(0);
            assert!(task.attempt >= *seen, "task {} attempt went back from {} to {}", task.id, *seen, task.attempt);
            *seen = task.attempt;
        }
    }
}

/// Everything the store exposes about the model's ids, for before/after comparisons.
fn dump(store: &impl Store, m: &Model) -> String {
    let mut out = String::new();
    for id in 1..=m.next_exec {
        out.push_str(&format!("{:?}\n", store.execution(id).expect("read")));
    }
    out.push_str(&format!("{:?}\n", store.running_tasks().expect("read")));
    out.push_str(&format!("{:?}\n", store.dead_letters(10_000).expect("read")));
    out.push_str(&format!("{:?}\n", store.count_by_state().expect("read")));
    out
}

/// Compares every record the model knows with the store's.
fn compare(store: &impl Store, m: &Model) {
    for (&id, e) in &m.execs {
        let (exec, task) = store
            .execution(id)
            .expect("read execution")
            .unwrap_or_else(|| panic!("execution {id} missing from the store"));
        let mt = &m.tasks[&e.task];
        let ctx = format!("execution {id} at now={}", m.now);
        assert_eq!(exec.state, e.state, "{ctx}: execution state");
        assert_eq!(exec.root_task, e.task, "{ctx}: root task");
        assert_eq!(exec.deadline_ms, e.deadline, "{ctx}: deadline");
        assert_eq!(task.execution_id, id, "{ctx}: task's execution");
        assert_eq!(task.state, mt.state, "{ctx}: task state");
        assert_eq!(task.attempt, mt.attempt, "{ctx}: attempt (fencing token)");
        assert_eq!(task.round_start, mt.round_start, "{ctx}: round start");
        assert_eq!(task.due_ms, mt.due, "{ctx}: due time");
        assert_eq!(task.queue, QUEUES[mt.queue], "{ctx}: queue");
        let lease = task.lease.as_ref().map(|l| MLease { token: l.token, expires: l.expires_ms });
        assert_eq!(lease, mt.lease, "{ctx}: lease");
        // Fields the model does not track, by their invariants.
        assert_eq!(exec.finished_ms.is_some(), e.state.is_terminal(), "{ctx}: finished_ms");
        assert_eq!(exec.output.is_some(), e.state == ExecutionState::Completed, "{ctx}: output");
        assert_eq!(exec.error.is_some(), e.state == ExecutionState::Failed, "{ctx}: error");
        assert_eq!(exec.started_ms.is_some(), mt.attempt > 0, "{ctx}: started_ms");
        let want_history = mt.ended_badly.min(HISTORY_ENTRIES_MAX as u32) as usize;
        assert_eq!(task.history.len(), want_history, "{ctx}: history length");
        assert!(
            task.history.windows(2).all(|w| w[0].attempt < w[1].attempt)
                && task.history.iter().all(|h| h.attempt <= mt.attempt),
            "{ctx}: history attempts {:?}",
            task.history.iter().map(|h| h.attempt).collect::<Vec<_>>()
        );
    }
    for id in 1..m.next_exec {
        if !m.execs.contains_key(&id) {
            assert!(store.execution(id).expect("read execution").is_none(), "execution {id} was removed");
        }
    }
    assert!(
        store.execution(m.next_exec).expect("read execution").is_none(),
        "execution {} exists but was never dispatched",
        m.next_exec
    );
    let running: BTreeMap<u64, u32> = store
        .running_tasks()
        .expect("running tasks")
        .iter()
        .map(|t| (t.id, t.lease.as_ref().map_or(0, |l| l.token)))
        .collect();
    let want: BTreeMap<u64, u32> =
        m.tasks.iter().filter_map(|(&id, t)| t.lease.as_ref().map(|l| (id, l.token))).collect();
    assert_eq!(running, want, "running tasks and their tokens");
    let listed = store.dead_letters(10_000).expect("dead letters");
    for l in &listed {
        let (exec, _) = store
            .execution(l.execution_id)
            .expect("read execution")
            .unwrap_or_else(|| panic!("dead letter {} of a missing execution", l.id));
        assert_eq!(exec.error.as_ref(), Some(&l.error), "dead letter {}: its execution's error", l.id);
        assert_eq!(
            l.history.last().map(|h| h.attempt),
            Some(l.attempts),
            "dead letter {}: the last history entry is the last attempt",
            l.id
        );
    }
    let letters: BTreeMap<u64, MDead> = listed
        .into_iter()
        .map(|l| (l.id, MDead { exec: l.execution_id, task: l.task_id, attempts: l.attempts, failed_ms: l.failed_ms }))
        .collect();
    assert_eq!(letters, m.dead, "dead letters");
    for id in m.dead.keys() {
        assert!(store.dead_letter(*id).expect("read letter").is_some(), "dead letter {id} listed but not readable");
    }
    assert!(
        store.dead_letter(m.next_dead).expect("read letter").is_none(),
        "dead letter {} exists but was never written",
        m.next_dead
    );
    let mut counts: BTreeMap<ExecutionState, u64> = ExecutionState::ALL.iter().map(|&s| (s, 0)).collect();
    for e in m.execs.values() {
        *counts.get_mut(&e.state).expect("all states") += 1;
    }
    let got: BTreeMap<ExecutionState, u64> = store.count_by_state().expect("counts").into_iter().collect();
    assert_eq!(got, counts, "count_by_state");
    for (q, name) in QUEUES.iter().enumerate() {
        let ready =
            m.tasks.values().filter(|t| t.queue == q && t.state == TaskState::Pending && t.due.is_none()).count()
                as u64;
        assert_eq!(store.queue_depth(name).expect("queue depth"), ready, "queue_depth({name:?})");
    }
}

impl<F: StoreFactory> StateMachineTest for StoreTest<F> {
    type SystemUnderTest = Sut<F>;
    type Reference = StoreModel;

    fn init_test(ref_state: &Model) -> Sut<F> {
        let mut factory = F::new();
        let faults = Arc::new(Faults::default());
        let store = factory.open(&faults);
        store.recover(ref_state.now).expect("recover a new store");
        Sut {
            factory,
            faults,
            store: Some(store),
            last_token: BTreeMap::new(),
            attempt_seen: BTreeMap::new(),
            completed: BTreeSet::new(),
            mem_queue: BTreeMap::new(),
            mem_leases: BTreeMap::new(),
            mem_deadlines: BTreeMap::new(),
        }
    }

    fn apply(mut sut: Sut<F>, ref_state: &Model, step: Step) -> Sut<F> {
        match (&ref_state.last, &step) {
            (Last::Batch(planned), Step::Batch(_) | Step::Reap) => sut.run_batch(ref_state, planned),
            (Last::FailedCommit(planned), Step::FailedCommit(_)) => sut.run_failed_commit(ref_state, planned),
            (Last::Advance, Step::Advance(_)) => {}
            (Last::Crash, Step::CrashReopen) => sut.crash_reopen(ref_state),
            (Last::Cleanup { cutoff_ms, budget, expect }, Step::Cleanup { .. }) => {
                sut.run_cleanup(ref_state, *cutoff_ms, *budget, *expect)
            }
            (last, step) => panic!("model out of step: {last:?} for {step:?}"),
        }
        sut.observe(ref_state);
        sut
    }

    fn check_invariants(sut: &Sut<F>, ref_state: &Model) {
        compare(sut.store(), ref_state);
    }
}

/// A whole cleanup, `Op::Cleanup` after `Op::Cleanup` until the cursor runs out, asserting that
/// no op removes more than `budget` records or touches memory.
fn cleanup_all(store: &impl Store, now: u64, cutoff_ms: u64, budget: u32) -> CleanupReport {
    let mut total = CleanupReport::default();
    let mut from = Some(CleanupCursor::DeadLetters);
    let mut ops = 0;
    while let Some(at) = from {
        ops += 1;
        assert!(ops < 10_000, "cleanup does not end");
        let op = Op::Cleanup { cutoff_ms, budget, from: at, parts: CleanupParts::ALL };
        let (mut results, effects) = store.apply_batch(now, vec![op]).expect("cleanup commits");
        assert!(effects.is_empty(), "cleanup changes nothing in memory: {effects:?}");
        let Some(Ok(OpOutput::Cleaned { removed, next })) = results.pop() else {
            panic!("op {ops}: not a cleanup answer");
        };
        let n = removed.executions + removed.dead_letters + removed.cache_entries;
        assert!(n <= u64::from(budget), "op {ops} removed {n} records with a budget of {budget}: {removed:?}");
        total += removed;
        from = next;
    }
    total
}

/// One `Op::Cleanup` removes at most its budget of records, across dead letters, cache
/// entries and executions alike, and the cursor takes the rest in later ops (a deterministic case the
/// random one rarely builds: several dead letters and executions due at once).
fn a_cleanup_op_never_removes_more_than_its_budget<F: StoreFactory>() {
    let store = F::new().open(&Arc::new(Faults::default()));
    let spec = DispatchSpec {
        delay_ms: 0,
        max_attempts: 1,
        initial_delay_ms: 0,
        key: None,
        max_duration_ms: None,
        queue: 0,
        priority: 0,
        version: 1,
    };
    let now = START_MS;
    let apply = |op: Op| -> OpOutput {
        let (mut results, _) = store.apply_batch(now, vec![op]).expect("commits");
        results.pop().expect("one result").expect("accepted")
    };
    let apply_c = |op: COp| apply(to_op(&op));
    // Execution i has task i; odd ones fail into the DLQ, even ones complete and leave a cache
    // entry that expires before the cleanup.
    for i in 1..=6u64 {
        let mut dispatch = to_op(&COp::Dispatch(spec.clone()));
        if let Op::Dispatch(new) = &mut dispatch {
            new.cache = Some(stent::storage::records::CachePolicy { version: 1, ttl_ms: 5 });
            new.input = format!("[{i}]").into_bytes();
        }
        apply(dispatch);
        apply_c(COp::Claim { task: i, lease_ms: 1_000, version: 1 });
        if i % 2 == 1 {
            apply_c(COp::Fail { task: i, token: 1, error: ErrPick::Permanent });
        } else {
            apply_c(COp::Complete { task: i, token: 1 });
        }
    }
    // Then executions 7..=9 are cancelled before they run: the last state a cleanup visits,
    // and more of them than one op's budget.
    for i in 7..=9u64 {
        apply_c(COp::Dispatch(spec.clone()));
        apply_c(COp::Cancel(i));
    }
    let later = now + 10;
    let total = cleanup_all(&store, later, later, 2);
    assert_eq!(total, CleanupReport { executions: 9, dead_letters: 3, cache_entries: 3, rate_budgets: 0 });
    assert!(store.check().expect("check").is_empty());
    assert_eq!(store.count_by_state().expect("counts").iter().map(|(_, n)| n).sum::<u64>(), 0);
}

// ---------------------------------------------------------------------------------------------
// The tests, once per backend.
// ---------------------------------------------------------------------------------------------

/// `backend => Factory` instantiates every test of this file for that factory, in module
/// `backend` (`cargo test --test model_store backend::`).
macro_rules! model_tests {
    ($($backend:ident => $factory:ty),+ $(,)?) => {$(
        mod $backend {
            use super::*;

            prop_state_machine! {
                #![proptest_config(config())]

                #[test]
                fn store_matches_model(sequential 1..=max_steps() => StoreTest<$factory>);
            }

            #[test]
            fn a_cleanup_op_never_removes_more_than_its_budget() {
                super::a_cleanup_op_never_removes_more_than_its_budget::<$factory>();
            }
        }
    )+};
}

model_tests! {
    redb_memory => RedbMemoryFactory,
}
