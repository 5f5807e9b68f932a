//! The file format's own types for the values records share with the API.
//!
//! Records keep API types in memory (`ExecutionState`, `TaskState`, `ActivityError`,
//! `AttemptRecord`), since the transitions and the engine work with them, but they are
//! serialized only through the storage-owned types here (`#[serde(with = ...)]` on each field).
//! So a change to an API type (a new field on `ActivityError`, a reordered enum) cannot change
//! the layout on disk by itself: every conversion below destructures or matches exhaustively,
//! and fails to compile until this file decides what the change means for the format (and, if
//! the layout changes, `codec::FORMAT_VERSION` or the schema version moves with it).
//! `tests/file_format.rs` pins the bytes.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::{ActivityError, AttemptRecord, CatchUp, ErrorKind, ExecutionState, Overlap, ScheduleSpec, TaskState};

#[derive(Serialize, Deserialize)]
enum ExecutionStateWire {
    Pending,
    Running,
    Completed,
    Failed,
    TimedOut,
    Cancelled,
}

impl From<ExecutionState> for ExecutionStateWire {
    fn from(s: ExecutionState) -> Self {
        match s {
            ExecutionState::Pending => ExecutionStateWire::Pending,
            ExecutionState::Running => ExecutionStateWire::Running,
            ExecutionState::Completed => ExecutionStateWire::Completed,
            ExecutionState::Failed => ExecutionStateWire::Failed,
            ExecutionState::TimedOut => ExecutionStateWire::TimedOut,
            ExecutionState::Cancelled => ExecutionStateWire::Cancelled,
        }
    }
}

impl From<ExecutionStateWire> for ExecutionState {
    fn from(s: ExecutionStateWire) -> Self {
        match s {
            ExecutionStateWire::Pending => ExecutionState::Pending,
            ExecutionStateWire::Running => ExecutionState::Running,
            ExecutionStateWire::Completed => ExecutionState::Completed,
            ExecutionStateWire::Failed => ExecutionState::Failed,
            ExecutionStateWire::TimedOut => ExecutionState::TimedOut,
            ExecutionStateWire::Cancelled => ExecutionState::Cancelled,
        }
    }
}

#[derive(Serialize, Deserialize)]
enum TaskStateWire {
    Pending,
    Running,
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl From<TaskState> for TaskStateWire {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => TaskStateWire::Pending,
            TaskState::Running => TaskStateWire::Running,
            TaskState::Waiting => TaskStateWire::Waiting,
            TaskState::Completed => TaskStateWire::Completed,
            TaskState::Failed => TaskStateWire::Failed,
            TaskState::Cancelled => TaskStateWire::Cancelled,
        }
    }
}

impl From<TaskStateWire> for TaskState {
    fn from(s: TaskStateWire) -> Self {
        match s {
            TaskStateWire::Pending => TaskState::Pending,
            TaskStateWire::Running => TaskState::Running,
            TaskStateWire::Waiting => TaskState::Waiting,
            TaskStateWire::Completed => TaskState::Completed,
            TaskStateWire::Failed => TaskState::Failed,
            TaskStateWire::Cancelled => TaskState::Cancelled,
        }
    }
}

#[derive(Serialize, Deserialize)]
enum ErrorKindWire {
    Retryable,
    Permanent,
}

#[derive(Serialize, Deserialize)]
struct ErrorWire {
    message: String,
    kind: ErrorKindWire,
    code: Option<String>,
    details: Option<String>,
}

impl From<&ActivityError> for ErrorWire {
    fn from(e: &ActivityError) -> Self {
        let ActivityError { message, kind, code, details } = e;
        let kind = match kind {
            ErrorKind::Retryable => ErrorKindWire::Retryable,
            ErrorKind::Permanent => ErrorKindWire::Permanent,
        };
        ErrorWire { message: message.clone(), kind, code: code.clone(), details: details.clone() }
    }
}

impl From<ErrorWire> for ActivityError {
    fn from(e: ErrorWire) -> Self {
        let ErrorWire { message, kind, code, details } = e;
        let kind = match kind {
            ErrorKindWire::Retryable => ErrorKind::Retryable,
            ErrorKindWire::Permanent => ErrorKind::Permanent,
        };
        ActivityError { message, kind, code, details }
    }
}

#[derive(Serialize, Deserialize)]
struct AttemptWire {
    attempt: u32,
    worker: String,
    started_ms: u64,
    ended_ms: u64,
    error: ErrorWire,
}

impl From<&AttemptRecord> for AttemptWire {
    fn from(a: &AttemptRecord) -> Self {
        let AttemptRecord { attempt, worker, started_ms, ended_ms, error } = a;
        AttemptWire {
            attempt: *attempt,
            worker: worker.clone(),
            started_ms: *started_ms,
            ended_ms: *ended_ms,
            error: error.into(),
        }
    }
}

impl From<AttemptWire> for AttemptRecord {
    fn from(a: AttemptWire) -> Self {
        let AttemptWire { attempt, worker, started_ms, ended_ms, error } = a;
        AttemptRecord { attempt, worker, started_ms, ended_ms, error: error.into() }
    }
}

pub mod execution_state {
    use super::*;

    pub fn serialize<S: Serializer>(s: &ExecutionState, ser: S) -> Result<S::Ok, S::Error> {
        ExecutionStateWire::from(*s).serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<ExecutionState, D::Error> {
        Ok(ExecutionStateWire::deserialize(de)?.into())
    }
}

pub mod task_state {
    use super::*;

    pub fn serialize<S: Serializer>(s: &TaskState, ser: S) -> Result<S::Ok, S::Error> {
        TaskStateWire::from(*s).serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<TaskState, D::Error> {
        Ok(TaskStateWire::deserialize(de)?.into())
    }
}

pub mod error {
    use super::*;

    pub fn serialize<S: Serializer>(e: &ActivityError, ser: S) -> Result<S::Ok, S::Error> {
        ErrorWire::from(e).serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<ActivityError, D::Error> {
        Ok(ErrorWire::deserialize(de)?.into())
    }
}

pub mod opt_error {
    use super::*;

    pub fn serialize<S: Serializer>(e: &Option<ActivityError>, ser: S) -> Result<S::Ok, S::Error> {
        e.as_ref().map(ErrorWire::from).serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<ActivityError>, D::Error> {
        Ok(Option::<ErrorWire>::deserialize(de)?.map(Into::into))
    }
}

pub mod attempts {
    use super::*;

    pub fn serialize<S: Serializer>(a: &[AttemptRecord], ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(a.iter().map(AttemptWire::from))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<AttemptRecord>, D::Error> {
        Ok(Vec::<AttemptWire>::deserialize(de)?.into_iter().map(Into::into).collect())
    }
}

#[derive(Serialize, Deserialize)]
enum ScheduleSpecWire {
    Cron { expr: String, tz: String },
    Every { period_ms: u64 },
}

#[derive(Serialize, Deserialize)]
enum CatchUpWire {
    Skip,
    One,
    All { max: u32 },
}

#[derive(Serialize, Deserialize)]
enum OverlapWire {
    Skip,
    BufferOne,
    Allow,
    CancelPrevious,
}

pub mod schedule_spec {
    use super::*;

    pub fn serialize<S: Serializer>(s: &ScheduleSpec, ser: S) -> Result<S::Ok, S::Error> {
        match s.clone() {
            ScheduleSpec::Cron { expr, tz } => ScheduleSpecWire::Cron { expr, tz },
            ScheduleSpec::Every { period_ms } => ScheduleSpecWire::Every { period_ms },
        }
        .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<ScheduleSpec, D::Error> {
        Ok(match ScheduleSpecWire::deserialize(de)? {
            ScheduleSpecWire::Cron { expr, tz } => ScheduleSpec::Cron { expr, tz },
            ScheduleSpecWire::Every { period_ms } => ScheduleSpec::Every { period_ms },
        })
    }
}

pub mod catch_up {
    use super::*;

    pub fn serialize<S: Serializer>(c: &CatchUp, ser: S) -> Result<S::Ok, S::Error> {
        match *c {
            CatchUp::Skip => CatchUpWire::Skip,
            CatchUp::One => CatchUpWire::One,
            CatchUp::All { max } => CatchUpWire::All { max },
        }
        .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<CatchUp, D::Error> {
        Ok(match CatchUpWire::deserialize(de)? {
            CatchUpWire::Skip => CatchUp::Skip,
            CatchUpWire::One => CatchUp::One,
            CatchUpWire::All { max } => CatchUp::All { max },
        })
    }
}

pub mod overlap {
    use super::*;

    pub fn serialize<S: Serializer>(o: &Overlap, ser: S) -> Result<S::Ok, S::Error> {
        match o {
            Overlap::Skip => OverlapWire::Skip,
            Overlap::BufferOne => OverlapWire::BufferOne,
            Overlap::Allow => OverlapWire::Allow,
            Overlap::CancelPrevious => OverlapWire::CancelPrevious,
        }
        .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Overlap, D::Error> {
        Ok(match OverlapWire::deserialize(de)? {
            OverlapWire::Skip => Overlap::Skip,
            OverlapWire::BufferOne => Overlap::BufferOne,
            OverlapWire::Allow => Overlap::Allow,
            OverlapWire::CancelPrevious => Overlap::CancelPrevious,
        })
    }
}
