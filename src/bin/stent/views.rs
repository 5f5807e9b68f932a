//! The JSON the CLI prints: stable field names (documented in docs/operations.md), times as
//! RFC 3339 strings in UTC (`*_at`), beside the raw milliseconds where a script may want them.

use serde_json::{json, Value};
use stent::{DeadLetter, ExecutionInfo, RunningTask, StepInfo, TaskInfo};

pub fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn opt_time(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(time(ms)))
}

/// An execution as `list` shows it.
pub fn execution_summary(e: &ExecutionInfo) -> Value {
    json!({
        "id": e.id.0,
        "function": e.function,
        "state": e.state.as_str(),
        "queue": e.queue,
        "priority": e.priority,
        "tags": e.tags,
        "idempotency_key": e.idempotency_key,
        "parent": e.parent.map(|p| p.0),
        "version": e.version,
        "run": e.run,
        "attempts": e.attempts,
        "created_at": time(e.created_ms),
        "started_at": opt_time(e.started_ms),
        "finished_at": opt_time(e.finished_ms),
    })
}

/// An execution as `show` shows it: everything, with its journal steps.
pub fn execution_detail(e: &ExecutionInfo, steps: &[StepInfo], children: &[ExecutionInfo]) -> Value {
    let mut v = execution_summary(e);
    let extra = json!({
        "scheduled_at": time(e.scheduled_ms),
        "deadline_at": opt_time(e.deadline_ms),
        "input": e.input,
        "result": e.output,
        "error": e.error,
        "history": e.history.iter().map(|a| json!({
            "attempt": a.attempt,
            "worker": a.worker,
            "started_at": time(a.started_ms),
            "ended_at": time(a.ended_ms),
            "error": a.error,
        })).collect::<Vec<_>>(),
        "counters": e.counters,
        "custom_state": e.custom_state,
        "progress": e.progress,
        "steps": steps.iter().map(step).collect::<Vec<_>>(),
        "children": children.iter().map(|c| json!({"id": c.id.0, "function": c.function, "state": c.state.as_str()})).collect::<Vec<_>>(),
    });
    if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
        m.extend(x);
    }
    v
}

pub fn step(s: &StepInfo) -> Value {
    json!({
        "step": s.step,
        "kind": s.kind,
        "outcome": s.outcome,
        "task_id": s.task_id.map(|t| t.0),
        "child": s.child.map(|c| c.0),
        "output": s.output,
        "error": s.error,
        "recorded_at": time(s.recorded_ms),
    })
}

pub fn dead_letter(l: &DeadLetter, full: bool) -> Value {
    let mut v = json!({
        "id": l.id.0,
        "task_id": l.task_id.0,
        "execution_id": l.execution_id.0,
        "function": l.function,
        "queue": l.queue,
        "error": l.error,
        "attempts": l.attempts,
        "failed_at": time(l.failed_ms),
    });
    if full {
        if let Value::Object(m) = &mut v {
            m.insert("input".into(), l.input.clone());
            m.insert(
                "history".into(),
                l.history
                    .iter()
                    .map(|a| json!({"attempt": a.attempt, "worker": a.worker, "ended_at": time(a.ended_ms), "error": a.error}))
                    .collect(),
            );
        }
    }
    v
}

pub fn task(t: &TaskInfo) -> Value {
    json!({
        "id": t.id.0,
        "execution_id": t.execution_id.0,
        "kind": t.kind,
        "step": t.step,
        "function": t.function,
        "queue": t.queue,
        "priority": t.priority,
        "tags": t.tags,
        "input": t.input,
        "state": t.state,
        "due_at": opt_time(t.due_ms),
        "attempt": t.attempt,
        "worker": t.worker,
        "lease_expires_at": opt_time(t.lease_expires_ms),
        "history": t.history.iter().map(|a| json!({"attempt": a.attempt, "worker": a.worker, "ended_at": time(a.ended_ms), "error": a.error})).collect::<Vec<_>>(),
        "created_at": time(t.created_ms),
        "version": t.version,
    })
}

pub fn running_task(t: &RunningTask) -> Value {
    json!({
        "task_id": t.task_id.0,
        "execution_id": t.execution_id.0,
        "function": t.function,
        "worker": t.worker,
        "attempt": t.attempt,
        "lease_expires_at": time(t.lease_expires_ms),
    })
}
