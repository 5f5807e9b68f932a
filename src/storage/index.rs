//! The index entries a record implies, derived from the record alone (docs/design.md, invariant
//! I3). A backend keeps one index entry per value computed here, written and removed only by its
//! own `put_*`/`remove_*` functions (`Records`), so no transition can let an index drift.

use super::effect::{Effect, ReadyItem};
use super::records::{priority_key, state_code, ExecutionRecord, TaskRecord};
use crate::api::TaskState;

/// The one index entry a task record implies: ready in its queue, on a timer, or leased.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskIndex {
    None,
    Ready { queue: String, pk: u32, ready_ms: u64 },
    Timer { due_ms: u64 },
    Lease { expires_ms: u64 },
}

impl TaskIndex {
    pub fn of(task: &TaskRecord) -> TaskIndex {
        match task.state {
            TaskState::Pending => match task.due_ms {
                Some(due_ms) => TaskIndex::Timer { due_ms },
                None => TaskIndex::Ready {
                    queue: task.queue.clone(),
                    pk: priority_key(task.priority),
                    ready_ms: task.ready_ms,
                },
            },
            TaskState::Running => match &task.lease {
                Some(lease) => TaskIndex::Lease { expires_ms: lease.expires_ms },
                None => TaskIndex::None, // Broken invariant; `check` reports it.
            },
            TaskState::Waiting | TaskState::Completed | TaskState::Failed | TaskState::Cancelled => TaskIndex::None,
        }
    }
}

/// The index entries an execution record implies: its state (code), and its deadline while live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutionIndex {
    pub state: u8,
    pub deadline_ms: Option<u64>,
}

impl ExecutionIndex {
    pub fn of(exec: &ExecutionRecord) -> ExecutionIndex {
        let deadline_ms = if exec.state.is_terminal() { None } else { exec.deadline_ms };
        ExecutionIndex { state: state_code(exec.state), deadline_ms }
    }
}

/// What a worker needs to know of a pending task to take it.
pub fn ready_item(task: &TaskRecord) -> ReadyItem {
    ReadyItem {
        task_id: task.id,
        execution_id: task.execution_id,
        function: task.function.clone(),
        queue: task.queue.clone(),
        priority: task.priority,
        ready_ms: task.ready_ms,
        tags: task.tags.clone(),
        version: task.version,
    }
}

/// The effect that puts a pending task into memory.
pub fn pending_effect(task: &TaskRecord) -> Effect {
    match task.due_ms {
        Some(due_ms) => Effect::Timer { due_ms, item: ready_item(task) },
        None => Effect::Ready(ready_item(task)),
    }
}
