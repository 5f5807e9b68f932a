//! Child executions started by a workflow step: awaited (`Ctx::child`, `child_with`: the
//! child's end is the step's outcome, and ending the parent cancels it) or detached
//! (`Ctx::start_child`: the step's outcome is the child's id, and it outlives its parent).

use super::{decode, Ctx, Step};
use crate::api::{DurationArg, ExecutionId, FunctionHandle};
use crate::error::{Error, Result};
use crate::storage::records::{duration_ms, RetryRecord, StepKind};
use crate::storage::{NewExecution, StepBody};

/// Options of one child execution (`Ctx::child_with`, `Ctx::start_child`); unset ones come
/// from the child function's registration, as for a dispatch.
///
/// ```
/// let options = stent::ChildOptions::new().queue("gpu").priority(5).tag("eu").max_duration("1h");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ChildOptions {
    queue: Option<String>,
    priority: Option<i32>,
    tags: Vec<String>,
    max_duration: Option<DurationArg>,
    idempotency_key: Option<String>,
}

impl ChildOptions {
    pub fn new() -> Self {
        ChildOptions::default()
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Routing tag of the child's tasks (see `DispatchBuilder::tag`); may be given more than
    /// once.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The child's deadline: it times out this long after it starts (`TimedOut`, which an
    /// awaiting parent's step gets as its error).
    pub fn max_duration(mut self, d: impl Into<DurationArg>) -> Self {
        self.max_duration = Some(d.into());
        self
    }

    /// The child holds this key as a dispatch would. A detached start whose key is held gets
    /// the holder's id; an awaited child's step fails (code `duplicate_key`), since another
    /// execution's result is not this step's.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

impl Ctx {
    /// Starts a child execution of `workflow` (an activity works too) and awaits its result.
    /// The child is an execution of its own (visible in `list_executions`); its failure,
    /// cancellation or timeout is this step's error, and cancelling this execution cancels it.
    pub fn child<H: FunctionHandle>(&self, workflow: H, input: &H::Input) -> Step<H::Output> {
        self.child_with(workflow, input, ChildOptions::default())
    }

    /// `child` with options for this child.
    pub fn child_with<H: FunctionHandle>(
        &self,
        workflow: H,
        input: &H::Input,
        options: ChildOptions,
    ) -> Step<H::Output> {
        let name = workflow.name();
        self.step(StepKind::Child { function: name.to_string() }, name, decode, |ctx, _| {
            Ok(StepBody::Child { new: Box::new(ctx.new_child(name, input, options)?), detached: false })
        })
    }

    /// Starts a detached child execution of `workflow`: the step's outcome is its id, at once
    /// (journaled like any step, so a re-run starts nothing more), and it outlives this
    /// execution: ending or cancelling the parent leaves it running. Await its result like any
    /// execution's (`Engine::wait_for`), or not at all.
    pub fn start_child<H: FunctionHandle>(
        &self,
        workflow: H,
        input: &H::Input,
        options: ChildOptions,
    ) -> Step<ExecutionId> {
        let name = workflow.name();
        self.step(StepKind::StartChild { function: name.to_string() }, name, decode, |ctx, _| {
            Ok(StepBody::Child { new: Box::new(ctx.new_child(name, input, options)?), detached: true })
        })
    }

    fn new_child<I: serde::Serialize>(&self, name: &str, input: &I, options: ChildOptions) -> Result<NewExecution> {
        let inner = &self.shared.inner;
        let function = inner.registry.require(name)?;
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: name.to_string(), reason: e.to_string() })?;
        if input.len() as u64 > inner.payload_bytes_max {
            return Err(Error::PayloadTooLarge { bytes: input.len() as u64, limit: inner.payload_bytes_max });
        }
        Ok(NewExecution {
            function: name.to_string(),
            kind: function.handler.kind(),
            queue: options.queue.unwrap_or_else(|| function.queue.clone()),
            priority: options.priority.unwrap_or(function.priority),
            tags: options.tags,
            input,
            delay_ms: 0,
            max_duration_ms: options.max_duration.map(|d| d.get()).transpose()?.map(duration_ms),
            idempotency_key: options.idempotency_key,
            retry: RetryRecord::from(&function.retry),
            timeout_ms: function.timeout.map(duration_ms),
            cache: function.cache.filter(|c| c.ttl_ms > 0),
            version: function.version,
            claim: None,
            schedule: None,
            keys: Default::default(),
            flow: None,
        })
    }
}
