//! What travels over the control socket: one JSON object per line each way.
//!
//! A request is `{"v":1,"request":{...}}`, its reply `{"v":1,"ok":VALUE}` or
//! `{"v":1,"error":{"kind":"...","message":"..."}}`. Requests are plain data, one variant per
//! engine operation the CLI uses; decoding is strict (an unknown operation or field is refused
//! with serde's reason), and nothing in a request is ever run as code. A connection may carry
//! any number of requests, answered in order.

use serde::{Deserialize, Serialize};

use crate::api::{CleanupParts, DeadLetterId, ExecutionFilter, ExecutionId, Page, TaskId};

/// Bumped when a request or reply changes shape; a peer of another version is told so.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a request line may add to the engine's payload limit (ids, names, JSON framing).
pub(crate) const REQUEST_OVERHEAD_BYTES_MAX: u64 = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLine {
    pub v: u32,
    pub request: Request,
}

/// One engine operation. Reads answer what the same `Engine` method returns; changes are
/// applied by the running engine exactly as its own API would apply them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Who answers: the engine's pid and protocol version (`Hello`).
    Hello,
    ListExecutions {
        filter: ExecutionFilter,
        page: Page,
    },
    Execution {
        id: ExecutionId,
    },
    Steps {
        id: ExecutionId,
    },
    RunningTasks,
    Task {
        id: TaskId,
    },
    CountsByState,
    QueueDepth {
        queue: String,
    },
    DeadLetterCount,
    /// Newest first, at most `limit`, only of `function` when given.
    DeadLetters {
        limit: u32,
        function: Option<String>,
    },
    DeadLetter {
        id: DeadLetterId,
    },
    /// A replay; a new input is checked against the function's declared input type by the
    /// engine that applies it (`Engine::replay_dead_letter_with_input`).
    ReplayDeadLetter {
        id: DeadLetterId,
        input: Option<serde_json::Value>,
    },
    DiscardDeadLetter {
        id: DeadLetterId,
    },
    Cancel {
        id: ExecutionId,
    },
    Signal {
        id: ExecutionId,
        name: String,
        payload: serde_json::Value,
    },
    Cleanup {
        older_than_ms: u64,
        parts: CleanupParts,
        dry_run: bool,
    },
    /// Every record and index, in one snapshot (redb's page check needs the file to itself).
    Check,
    /// Writes an export to `path` (absolute; the engine's process writes it, owner-only).
    Export {
        path: std::path::PathBuf,
    },
    /// The concurrency keys in use (`Engine::concurrency_keys`).
    ConcurrencyKeys,
    /// Every schedule, by name (`Schedules::list`).
    Schedules,
    /// One schedule, `null` when there is none of that name (`Schedules::get`).
    Schedule {
        name: String,
    },
    /// The latest `limit` executions the schedule started, oldest first (`Schedules::fires`).
    ScheduleFires {
        name: String,
        limit: u32,
    },
    PauseSchedule {
        name: String,
    },
    ResumeSchedule {
        name: String,
    },
    /// Fires the schedule now under its overlap policy: the execution started, or `null`.
    TriggerSchedule {
        name: String,
    },
    DeleteSchedule {
        name: String,
    },
}

/// The answer to `Hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub pid: u32,
    pub version: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReplyLine {
    pub v: u32,
    #[serde(flatten)]
    pub reply: Reply,
}

/// `"ok": VALUE` (`null` for an operation that returns nothing) or `"error": {...}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(serde_json::Value),
    Error(ReplyError),
}

/// A refusal: `kind` for programs (`not_found`, `bad_request`, `refused`, `failed`), the
/// message as the engine's own error would say it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyError {
    pub kind: String,
    pub message: String,
}

impl ReplyError {
    pub(crate) fn of(e: &crate::Error) -> ReplyError {
        use crate::Error;
        let kind = match e {
            Error::Remote { kind, .. } => kind.as_str(),
            Error::UnknownExecution(_)
            | Error::UnknownTask { .. }
            | Error::UnknownDeadLetter(_)
            | Error::UnknownSchedule(_) => "not_found",
            Error::Payload { .. }
            | Error::PayloadTooLarge { .. }
            | Error::InvalidDuration { .. }
            | Error::UnknownFunction { .. }
            | Error::NotReplayable { .. }
            | Error::ExecutionFinished { .. }
            | Error::InvalidSchedule { .. } => "bad_request",
            _ => "failed",
        };
        ReplyError { kind: kind.into(), message: e.to_string() }
    }
}
