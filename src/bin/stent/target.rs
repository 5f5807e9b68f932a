//! What a command runs against: the file itself, or the running engine that holds it.
//!
//! The CLI first opens the file (read-only for a read, as a worker-less engine for a change).
//! When an application holds it, the open is refused with "in use", and the command goes to
//! that application's engine through its control socket instead (stent's engine/control_socket):
//! the same operations, answered by the same engine methods, so the output does not depend on
//! which way a command went.

use std::path::Path;
use std::time::Duration;

use stent::{
    CleanupParts, CleanupReport, DeadLetter, DeadLetterId, Engine, Error, ExecutionFilter, ExecutionId, ExecutionInfo,
    ExecutionState, Page, RunningTask, ScheduleFire, ScheduleInfo, StepInfo, TaskId, TaskInfo, TransferReport,
    VerifyOnOpen,
};

use crate::Failure;

#[cfg(unix)]
use stent::control_socket::{Client, Request};

pub(crate) enum Target {
    /// The CLI opened the file: no application holds it.
    Local(Engine),
    /// An application holds the file; its engine answers (the pid of its process).
    #[cfg(unix)]
    Remote(Client),
}

impl Target {
    /// For a read: nothing in the file changes (docs/operations.md). `full` verifies every page
    /// at open (`check`), which only a local open can.
    pub(crate) async fn read(db: &Path, full: bool) -> Result<Target, Failure> {
        missing(db)?;
        let verify = if full { VerifyOnOpen::Full } else { VerifyOnOpen::Live };
        let opened = Engine::builder()
            .path(db)
            .read_only(true)
            .wait_for_file(Duration::ZERO)
            .verify_on_open(verify)
            .page_cache_bytes(CACHE_BYTES)
            .open();
        Target::or_remote(db, opened).await
    }

    /// For a change: an engine with no workers (and no control socket of its own).
    pub(crate) async fn write(db: &Path) -> Result<Target, Failure> {
        missing(db)?;
        let opened = Engine::builder()
            .path(db)
            .control_socket(false)
            .fire_schedules(false)
            .wait_for_file(Duration::ZERO)
            .page_cache_bytes(CACHE_BYTES)
            .open();
        Target::or_remote(db, opened).await
    }

    async fn or_remote(db: &Path, opened: stent::Result<Engine>) -> Result<Target, Failure> {
        let refused = match opened {
            Ok(engine) => return Ok(Target::Local(engine)),
            Err(e @ (Error::InUseBy { .. } | Error::Storage(stent::StorageError::InUse))) => e,
            Err(e) => return Err(e.into()),
        };
        #[cfg(unix)]
        match Client::connect(db).await {
            Ok(client) => Ok(Target::Remote(client)),
            Err(why) => Err(Failure(format!("{refused}, and its engine cannot be reached: {why}"))),
        }
        #[cfg(not(unix))]
        Err(Failure(format!("{refused}; the CLI reaches a running engine only on Unix")))
    }

    /// The pid of the application whose engine answers, if one does.
    pub(crate) fn remote_pid(&self) -> Option<u32> {
        match self {
            Target::Local(_) => None,
            #[cfg(unix)]
            Target::Remote(client) => Some(client.pid()),
        }
    }

    /// Lets go of the file (a local open) once the command is done, then hands back its result.
    pub(crate) async fn finish<T>(self, result: stent::Result<T>) -> Result<T, Failure> {
        let closed = match self {
            Target::Local(engine) => engine.close().await,
            #[cfg(unix)]
            Target::Remote(_) => Ok(()),
        };
        let value = result?;
        closed?;
        Ok(value)
    }

    pub(crate) async fn list_executions(
        &mut self,
        filter: &ExecutionFilter,
        page: &Page,
    ) -> stent::Result<Vec<ExecutionInfo>> {
        match self {
            Target::Local(e) => e.list_executions(filter, page),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::ListExecutions { filter: filter.clone(), page: page.clone() }).await,
        }
    }

    pub(crate) async fn state_of(&mut self, id: ExecutionId) -> stent::Result<ExecutionInfo> {
        match self {
            Target::Local(e) => e.state_of(id),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::Execution { id }).await,
        }
    }

    pub(crate) async fn steps(&mut self, id: ExecutionId) -> stent::Result<Vec<StepInfo>> {
        match self {
            Target::Local(e) => e.steps(id),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::Steps { id }).await,
        }
    }

    pub(crate) async fn running_tasks(&mut self) -> stent::Result<Vec<RunningTask>> {
        match self {
            Target::Local(e) => e.running_tasks(),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::RunningTasks).await,
        }
    }

    pub(crate) async fn task(&mut self, id: TaskId) -> stent::Result<TaskInfo> {
        match self {
            Target::Local(e) => e.task(id),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::Task { id }).await,
        }
    }

    pub(crate) async fn counts_by_state(&mut self) -> stent::Result<Vec<(ExecutionState, u64)>> {
        match self {
            Target::Local(e) => e.counts_by_state(),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::CountsByState).await,
        }
    }

    pub(crate) async fn queue_depth(&mut self, queue: &str) -> stent::Result<u64> {
        match self {
            Target::Local(e) => e.queue_depth(queue),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::QueueDepth { queue: queue.to_string() }).await,
        }
    }

    pub(crate) async fn dead_letter_count(&mut self) -> stent::Result<u64> {
        match self {
            Target::Local(e) => e.dead_letter_count(),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::DeadLetterCount).await,
        }
    }

    /// Newest first, at most `limit`, only of `function` when given.
    pub(crate) async fn dead_letters(&mut self, limit: u32, function: Option<&str>) -> stent::Result<Vec<DeadLetter>> {
        match self {
            Target::Local(e) => Ok(e
                .dead_letters(u32::MAX)?
                .into_iter()
                .filter(|l| function.is_none_or(|f| l.function == f))
                .take(limit as usize)
                .collect()),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::DeadLetters { limit, function: function.map(str::to_string) }).await,
        }
    }

    pub(crate) async fn dead_letter(&mut self, id: DeadLetterId) -> stent::Result<DeadLetter> {
        match self {
            Target::Local(e) => e.dead_letter(id),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::DeadLetter { id }).await,
        }
    }

    /// A replay; a new input is checked against the function's declared type by a running
    /// engine, which declares it. The CLI's own engine registers no functions: the input is
    /// then decoded when an application's attempt runs it.
    pub(crate) async fn replay(
        &mut self,
        id: DeadLetterId,
        input: Option<serde_json::Value>,
    ) -> stent::Result<ExecutionId> {
        match self {
            Target::Local(e) => match &input {
                Some(input) => e.replay_dead_letter_with_unchecked_input(id, input).await,
                None => e.replay_dead_letter(id).await,
            },
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::ReplayDeadLetter { id, input }).await,
        }
    }

    pub(crate) async fn discard(&mut self, id: DeadLetterId) -> stent::Result<()> {
        match self {
            Target::Local(e) => e.discard_dead_letter(id).await,
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::DiscardDeadLetter { id }).await,
        }
    }

    pub(crate) async fn cancel(&mut self, id: ExecutionId) -> stent::Result<ExecutionState> {
        match self {
            Target::Local(e) => e.cancel(id).await,
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::Cancel { id }).await,
        }
    }

    pub(crate) async fn signal(
        &mut self,
        id: ExecutionId,
        name: &str,
        payload: serde_json::Value,
    ) -> stent::Result<()> {
        match self {
            Target::Local(e) => e.send_signal(id, name, &payload).await,
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::Signal { id, name: name.to_string(), payload }).await,
        }
    }

    pub(crate) async fn cleanup(
        &mut self,
        older_than: Duration,
        parts: CleanupParts,
        dry_run: bool,
    ) -> stent::Result<CleanupReport> {
        match self {
            Target::Local(e) if dry_run => e.cleanup_preview_parts(older_than, parts),
            Target::Local(e) => e.cleanup_parts(older_than, parts).await,
            #[cfg(unix)]
            Target::Remote(c) => {
                let older_than_ms = u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX);
                c.call(Request::Cleanup { older_than_ms, parts, dry_run }).await
            }
        }
    }

    /// Every record and index (a local full open has verified every page before).
    pub(crate) async fn check(&mut self) -> stent::Result<Vec<String>> {
        match self {
            Target::Local(e) => e.check(),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::Check).await,
        }
    }

    pub(crate) async fn export(&mut self, file: &Path) -> stent::Result<TransferReport> {
        match self {
            Target::Local(e) => e.export(file).await,
            #[cfg(unix)]
            Target::Remote(c) => {
                // The engine's process writes the file: give it a path that means the same there.
                let path = std::path::absolute(file).map_err(|e| Error::Remote {
                    kind: "bad_request".into(),
                    message: format!("cannot make {} absolute: {e}", file.display()),
                })?;
                c.call(Request::Export { path }).await
            }
        }
    }

    /// Every schedule, by name.
    pub(crate) async fn concurrency_keys(&mut self) -> stent::Result<Vec<stent::KeyUsage>> {
        match self {
            Target::Local(e) => e.concurrency_keys(),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::ConcurrencyKeys).await,
        }
    }

    pub(crate) async fn schedules(&mut self) -> stent::Result<Vec<ScheduleInfo>> {
        match self {
            Target::Local(e) => e.schedules().list(),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::Schedules).await,
        }
    }

    pub(crate) async fn schedule(&mut self, name: &str) -> stent::Result<Option<ScheduleInfo>> {
        match self {
            Target::Local(e) => e.schedules().get(name),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::Schedule { name: name.to_string() }).await,
        }
    }

    /// The latest `limit` executions the schedule started, oldest first.
    pub(crate) async fn schedule_fires(&mut self, name: &str, limit: u32) -> stent::Result<Vec<ScheduleFire>> {
        match self {
            Target::Local(e) => e.schedules().fires(name, limit as usize),
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::ScheduleFires { name: name.to_string(), limit }).await,
        }
    }

    pub(crate) async fn pause_schedule(&mut self, name: &str) -> stent::Result<ScheduleInfo> {
        match self {
            Target::Local(e) => e.schedules().pause(name).await,
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::PauseSchedule { name: name.to_string() }).await,
        }
    }

    pub(crate) async fn resume_schedule(&mut self, name: &str) -> stent::Result<ScheduleInfo> {
        match self {
            Target::Local(e) => e.schedules().resume(name).await,
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::ResumeSchedule { name: name.to_string() }).await,
        }
    }

    /// Fires the schedule now: the execution it started, or `None` when its overlap policy
    /// started none. The CLI's own engine registers no functions: the execution then starts
    /// as the schedule's record says (queue, retry and version as the application recorded).
    pub(crate) async fn trigger_schedule(&mut self, name: &str) -> stent::Result<Option<ExecutionId>> {
        match self {
            Target::Local(e) => e.schedules().trigger(name).await,
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::TriggerSchedule { name: name.to_string() }).await,
        }
    }

    pub(crate) async fn delete_schedule(&mut self, name: &str) -> stent::Result<()> {
        match self {
            Target::Local(e) => e.schedules().delete(name).await,
            #[cfg(unix)]
            Target::Remote(c) => c.call(Request::DeleteSchedule { name: name.to_string() }).await,
        }
    }
}

/// The page cache a CLI open uses: commands read little, and start fast.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

fn missing(db: &Path) -> Result<(), Failure> {
    if db.exists() {
        Ok(())
    } else {
        Err(Failure(format!("no database at {}", db.display())))
    }
}
