//! The JSON the CLI prints: stable field names (documented in docs/operations.md), times as
//! RFC 3339 strings in UTC (`*_at`), beside the raw milliseconds where a script may want them.

use serde_json::{json, Value};
use stent::{
    CatchUp, DeadLetter, ExecutionInfo, ExecutionState, Overlap, RunningTask, ScheduleFire, ScheduleInfo, ScheduleSpec,
    ScheduledBy, StepInfo, TaskInfo,
};

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
        "schedule": e.schedule.as_ref().map(scheduled_by),
    })
}

/// Which schedule started an execution: `{name, fire_time_at, triggered}`.
pub fn scheduled_by(s: &ScheduledBy) -> Value {
    json!({"name": s.schedule, "fire_time_at": time(s.fire_time_ms), "triggered": s.triggered})
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

/// A schedule as `schedule list` shows it.
pub fn schedule(s: &ScheduleInfo) -> Value {
    let spec = match &s.spec {
        ScheduleSpec::Cron { expr, tz } => json!({"kind": "cron", "expr": expr, "tz": tz}),
        ScheduleSpec::Every { period_ms } => json!({"kind": "every", "period_ms": period_ms}),
    };
    let (catch_up, catch_up_max) = catch_up(s.catch_up);
    json!({
        "name": s.name,
        "function": s.function,
        "input": s.input,
        "spec": spec,
        "catch_up": catch_up,
        "catch_up_max": catch_up_max,
        "overlap": overlap(s.overlap),
        "jitter_ms": s.jitter_ms,
        "paused": s.paused,
        "next_fire_at": opt_time(s.next_fire_ms),
        "last_fire_at": opt_time(s.last_fire_ms),
        "last_execution": s.last_execution.map(|e| e.0),
        "buffered_fire_at": opt_time(s.buffered_fire_ms),
        "fires": s.fires,
        "skipped": s.skipped,
        "created_at": time(s.created_ms),
        "updated_at": time(s.updated_ms),
    })
}

/// A schedule as `schedule show` shows it: with its latest fires, newest first, and the state
/// of each one's execution (`null` if it is gone).
pub fn schedule_detail(s: &ScheduleInfo, fires: &[(ScheduleFire, Option<ExecutionState>)]) -> Value {
    let mut v = schedule(s);
    if let Value::Object(m) = &mut v {
        let recent = fires
            .iter()
            .map(|(f, state)| {
                json!({
                    "fire_time_at": time(f.fire_time_ms),
                    "execution": f.execution.0,
                    "state": state.map(|s| s.as_str()),
                })
            })
            .collect();
        m.insert("recent_fires".into(), recent);
    }
    v
}

/// A catch-up policy's name (as `CatchUp::from_str` reads it) and its bound, if it has one.
pub fn catch_up(c: CatchUp) -> (&'static str, Option<u32>) {
    match c {
        CatchUp::Skip => ("skip", None),
        CatchUp::One => ("one", None),
        CatchUp::All { max } => ("all", Some(max)),
    }
}

/// An overlap policy's name (as `Overlap::from_str` reads it).
pub fn overlap(o: Overlap) -> &'static str {
    match o {
        Overlap::Skip => "skip",
        Overlap::BufferOne => "buffer_one",
        Overlap::Allow => "allow",
        Overlap::CancelPrevious => "cancel_previous",
    }
}
