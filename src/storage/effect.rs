//! What memory must do once a batch is durable: [`Effect`]s, applied by the engine after the
//! commit returned, so memory never runs ahead of the disk.

/// What the in-memory side must do once a batch is durable. Effects of a batch are applied
/// only after its commit returned, so memory never runs ahead of the disk.
#[derive(Debug, Clone)]
pub enum Effect {
    Ready(ReadyItem),
    Timer {
        due_ms: u64,
        item: ReadyItem,
    },
    Lease {
        task_id: u64,
        token: u32,
        expires_ms: u64,
    },
    /// An eager claim at dispatch: the attempt the engine numbered `serial` runs `task_id`.
    Claimed {
        serial: u64,
        task_id: u64,
        token: u32,
    },
    Deadline {
        execution_id: u64,
        deadline_ms: u64,
    },
    Finished {
        execution_id: u64,
    },
    /// Schedule `name`'s timer goes off at `at_ms` (replacing any earlier setting), or never.
    Schedule {
        name: String,
        function: String,
        at_ms: Option<u64>,
    },
    /// A claim found the concurrency key (`function`, `key`) full: `item` waits, out of the
    /// ready queue, until a slot of the key is freed.
    KeyWait {
        function: String,
        key: String,
        item: ReadyItem,
    },
    /// An execution holding a slot of (`function`, `key`) ended: a waiting task may take it.
    KeyFreed {
        function: String,
        key: String,
    },
    /// A workflow answered update `update` (`Ctx::reply`): its caller may read the reply.
    Replied {
        execution_id: u64,
        update: u64,
    },
    /// The execution failed into the dead-letter queue (after `Finished` for it): for the
    /// engine's metrics, whatever the cause (a failed attempt, a lost lease, a journal that
    /// cannot be read).
    DeadLettered {
        execution_id: u64,
        function: String,
    },
    /// Running attempts of the task must stop: all of them (`token: None`: cancelled, timed
    /// out) or the one holding `token` (its lease expired). Emitted before any effect that
    /// re-queues the task, so the abort can never reach the attempt that replaces it.
    Abort {
        task_id: u64,
        token: Option<u32>,
    },
}

/// What a worker needs to decide whether it may take a task, without reading the disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyItem {
    pub task_id: u64,
    pub execution_id: u64,
    pub function: String,
    pub queue: String,
    pub priority: i32,
    pub ready_ms: u64,
    pub tags: Vec<String>,
    /// The version of the function's code the task needs.
    pub version: u32,
}
