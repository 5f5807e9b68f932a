//! `Ctx`: what a workflow uses for every durable operation.
//!
//! A workflow attempt runs over the journal it loaded at claim. Each operation takes the next
//! step number when it is *created* (program order), so concurrent operations number the same
//! way on every run. A step with an outcome in the journal returns it at once; a step without
//! one is recorded as new (its task is created when the attempt suspends) and blocks the
//! attempt. When the workflow future can make no more progress, the worker commits the new
//! steps in one `Suspend`; an outcome later re-queues the workflow. Its next attempt either
//! resumes the same future, if it was kept parked in memory (a short wait, see
//! `EngineBuilder::evict_after`), with the journal refreshed from the claim, or runs the
//! workflow again from the top, finding the finished steps in its journal. Both see the same
//! outcomes in the same order.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use super::Inner;
use crate::api::FunctionHandle;
use crate::error::{Error, Result};
use crate::storage::records::{JournalEntry, RetryRecord, StepKind, StepOutcome};
use crate::storage::{NewStep, StepBody, StepTask};

mod children;
mod race;
mod runs;
mod step;
mod updates;
pub use children::ChildOptions;
pub use race::{Either, Race, Select};
pub use step::Step;
use step::{step_error, Pending};
pub use updates::Update;

/// The durable context of one workflow execution. Cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Arc<Inner>,
    execution_id: u64,
    queue: String,
    /// A replay check (`Engine::verify_replay`): a step the journal does not hold is never
    /// built (nothing runs, nothing is computed), it only blocks the workflow there.
    verifying: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    journal: BTreeMap<u32, JournalEntry>,
    next_step: u32,
    new_steps: Vec<NewStep>,
    awaiting: BTreeSet<u32>,
    /// Set on the first non-determinism; the attempt fails even if the workflow swallows it.
    nondeterminism: Option<(u32, String, String)>,
}

/// What a workflow attempt that can make no more progress hands over (see
/// [`Ctx::take_suspension`]).
pub(crate) struct Suspension {
    pub new_steps: Vec<NewStep>,
    /// Steps the future is blocked on (polled without an outcome).
    pub awaiting: Vec<u32>,
    /// The earliest time an awaited step can settle: a timer's due time, or 0 for a step
    /// that may settle at any moment.
    pub earliest_wake_ms: u64,
    pub nondeterminism: Option<(u32, String, String)>,
}

/// See [`Ctx::replay_position`].
pub(crate) struct ReplayPosition {
    /// The step number the workflow's next operation would take.
    pub next_step: u32,
    /// The journal's steps and what each recorded.
    pub recorded: Vec<(u32, String)>,
    /// The first step asked for as something else than recorded: (step, recorded, requested).
    pub nondeterminism: Option<(u32, String, String)>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("execution_id", &self.shared.execution_id).finish_non_exhaustive()
    }
}

/// Name of the built-in function behind `Ctx::sleep`: a task that is due at the wake-up time
/// and completes as soon as a worker takes it. Names starting with `stent.` are reserved.
pub(crate) const SLEEP_FUNCTION: &str = "stent.sleep";

impl Ctx {
    pub(crate) fn new(inner: Arc<Inner>, execution_id: u64, queue: String, journal: Vec<JournalEntry>) -> Self {
        Self::with_mode(inner, execution_id, queue, journal, false)
    }

    /// A context for replaying `journal` without effects (see `Shared::verifying`).
    pub(crate) fn verifying(inner: Arc<Inner>, execution_id: u64, queue: String, journal: Vec<JournalEntry>) -> Self {
        Self::with_mode(inner, execution_id, queue, journal, true)
    }

    fn with_mode(
        inner: Arc<Inner>,
        execution_id: u64,
        queue: String,
        journal: Vec<JournalEntry>,
        verifying: bool,
    ) -> Self {
        let state = State { journal: journal.into_iter().map(|e| (e.step, e)).collect(), ..State::default() };
        Ctx { shared: Arc::new(Shared { inner, execution_id, queue, verifying, state: Mutex::new(state) }) }
    }

    /// Where a replay check stands: the next step number the workflow would take, the steps
    /// the journal holds, and the first non-determinism (step, recorded, requested).
    pub(crate) fn replay_position(&self) -> ReplayPosition {
        let state = self.journal_state();
        ReplayPosition {
            next_step: state.next_step,
            recorded: state.journal.values().map(|e| (e.step, e.kind.to_string())).collect(),
            nondeterminism: state.nondeterminism.clone(),
        }
    }

    pub fn execution_id(&self) -> crate::api::ExecutionId {
        crate::api::ExecutionId(self.shared.execution_id)
    }

    fn journal_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what the attempt asked for since the last suspension (new steps, the steps it is
    /// blocked on, a non-determinism), keeping the journal and the step numbering so the
    /// future can stay parked. The new steps stay in the journal as placeholders without an
    /// outcome (they are recorded by the suspension that carries them).
    pub(crate) fn take_suspension(&self) -> Suspension {
        let mut state = self.journal_state();
        let new_steps = std::mem::take(&mut state.new_steps);
        for s in &new_steps {
            state.journal.entry(s.step).or_insert_with(|| JournalEntry {
                step: s.step,
                kind: s.kind.clone(),
                outcome: StepOutcome::Scheduled { task_id: u64::MAX },
                recorded_ms: 0,
            });
        }
        let awaiting: Vec<u32> = std::mem::take(&mut state.awaiting).into_iter().collect();
        // A timer the workflow waits on can only wake it at its due time; anything else
        // (a call, a child, a signal) may settle at any moment.
        let earliest_wake_ms = awaiting
            .iter()
            .map(|step| match state.journal.get(step).map(|e| &e.kind) {
                Some(StepKind::Sleep { until_ms }) => *until_ms,
                _ => 0,
            })
            .min()
            .unwrap_or(0);
        Suspension { new_steps, awaiting, earliest_wake_ms, nondeterminism: state.nondeterminism.take() }
    }

    /// The steps this workflow knows of that had no outcome when it suspended: the only
    /// journal entries that can have changed while its future was parked (see `resume`).
    pub(crate) fn unsettled_steps(&self) -> Vec<u32> {
        self.journal_state().journal.values().filter(|e| !e.outcome.is_final()).map(|e| e.step).collect()
    }

    /// Brings a parked workflow's view up to date with `updates`, the current entries of its
    /// `unsettled_steps`. Only valid when no other attempt of the workflow ran since the
    /// future parked (the claim's token is the parked one plus one): then steps only ever
    /// settle, nothing else in the journal moves. Refused (the future must be dropped and the
    /// workflow replayed) if a step is missing or recorded as something else.
    pub(crate) fn resume(&self, asked: &[u32], updates: Vec<JournalEntry>) -> bool {
        merge(&mut self.journal_state().journal, asked, updates)
    }

    /// The core of every operation: take the next step number; return the recorded outcome,
    /// or record the step as new (`body` builds what to record) and block.
    pub(super) fn step<T>(
        &self,
        kind: StepKind,
        what: &str,
        decode: fn(&str, &[u8]) -> Result<T>,
        body: impl FnOnce(&Self, u32) -> Result<StepBody>,
    ) -> Step<T> {
        let mut state = self.journal_state();
        let step = state.next_step;
        state.next_step += 1;
        let ready = match state.journal.get(&step) {
            Some(entry) if !entry.kind.matches(&kind) => {
                let recorded = entry.kind.to_string();
                state.nondeterminism.get_or_insert((step, recorded.clone(), kind.to_string()));
                Some(Err(Error::NonDeterminism { step, recorded, requested: kind.to_string() }))
            }
            Some(entry) => match &entry.outcome {
                StepOutcome::Completed { output } => Some(decode(what, output)),
                StepOutcome::Failed { error } => Some(Err(step_error(self, step, what, error))),
                StepOutcome::Scheduled { .. } | StepOutcome::AwaitingSignal { .. } | StepOutcome::Child { .. } => None,
            },
            // A replay check stops at the first step the journal does not hold.
            None if self.shared.verifying => None,
            None if step >= crate::storage::records::JOURNAL_STEPS_MAX => Some(Err(Error::JournalFull {
                execution_id: crate::api::ExecutionId(self.shared.execution_id),
                steps_max: crate::storage::records::JOURNAL_STEPS_MAX,
            })),
            None => match body(self, step) {
                // Known now: recorded with the next commit, returned at once.
                Ok(StepBody::Recorded(output)) => {
                    let value = decode(what, &output);
                    let entry = JournalEntry {
                        step,
                        kind: kind.clone(),
                        outcome: StepOutcome::Completed { output: output.clone() },
                        recorded_ms: 0,
                    };
                    state.journal.insert(step, entry);
                    state.new_steps.push(NewStep { step, kind, body: StepBody::Recorded(output) });
                    Some(value)
                }
                Ok(body) => {
                    state.new_steps.push(NewStep { step, kind, body });
                    None
                }
                Err(e) => Some(Err(e)),
            },
        };
        match ready {
            Some(result) => Step { ready: Some(result), pending: None, number: Some(step) },
            None => Step {
                ready: None,
                pending: Some(Pending { ctx: self.clone(), step, what: what.to_string(), decode }),
                number: Some(step),
            },
        }
    }

    /// Calls an activity as a journaled step: it runs (with its retries) until one outcome is
    /// recorded, and a re-run of the workflow gets that outcome without running it again.
    pub fn call<H: FunctionHandle>(&self, activity: H, input: &H::Input) -> Step<H::Output> {
        self.call_with(activity, input, CallOptions::default())
    }

    /// `call` with options for this call only (they replace the function's defaults).
    pub fn call_with<H: FunctionHandle>(&self, activity: H, input: &H::Input, options: CallOptions) -> Step<H::Output> {
        let name = activity.name();
        self.step(StepKind::Call { function: name.to_string() }, name, decode, |ctx, _| {
            ctx.new_call(name, input, options)
        })
    }

    /// Calls `activity` once per item, all at once; results in input order. The first failure
    /// (in input order) is returned; [`Ctx::try_map`] returns every outcome.
    pub async fn map<H: FunctionHandle>(&self, activity: H, items: Vec<H::Input>) -> Result<Vec<H::Output>> {
        self.try_map(activity, items).await.into_iter().collect()
    }

    /// Awaits several steps created beforehand (so they run at once); outcomes in the order
    /// given.
    pub async fn join_all<T>(&self, steps: Vec<Step<T>>) -> Vec<Result<T>> {
        join_all(steps).await
    }

    /// Like [`Ctx::map`], returning each item's outcome.
    pub async fn try_map<H: FunctionHandle>(&self, activity: H, items: Vec<H::Input>) -> Vec<Result<H::Output>> {
        let steps: Vec<_> = items.iter().map(|item| self.call(activity, item)).collect();
        join_all(steps).await
    }

    /// A durable timer: the workflow resumes once the clock has passed `now + duration`,
    /// counted from when the sleep was first reached (a re-run sleeps only the remainder).
    pub fn sleep(&self, duration: impl Into<crate::api::DurationArg>) -> Step<()> {
        match duration.into().get() {
            Ok(d) => {
                let until = self.shared.inner.clock.now_ms().saturating_add(crate::storage::records::duration_ms(d));
                self.sleep_until(until)
            }
            Err(e) => {
                self.journal_state().next_step += 1; // Keep numbering stable whatever the input.
                Step::done(Err(e))
            }
        }
    }

    /// A durable timer to an absolute time (UTC milliseconds since the epoch).
    pub fn sleep_until(&self, until_ms: u64) -> Step<()> {
        self.step(StepKind::Sleep { until_ms }, SLEEP_FUNCTION, decode, |ctx, _| {
            Ok(StepBody::Task(ctx.timer_task(until_ms)))
        })
    }

    /// The execution counter `name`, shown by `state_of`. Each `add` is a journaled step, so a
    /// re-run of the workflow does not count again.
    pub fn counter(&self, name: &str) -> CounterRef<'_> {
        CounterRef { ctx: self, name: name.to_string() }
    }

    /// The execution's custom state value `key` (JSON), shown by `state_of`. Reads and writes
    /// are journaled steps.
    pub fn state(&self, key: &str) -> StateRef<'_> {
        StateRef { ctx: self, key: key.to_string() }
    }

    /// The current time (UTC ms), recorded so a re-run sees the same value.
    pub fn now(&self) -> Step<u64> {
        self.step(StepKind::Now, "now", decode, |ctx, _| {
            Ok(StepBody::Recorded(encode(&ctx.shared.inner.clock.now_ms())))
        })
    }

    /// A random number from the engine's seeded RNG, recorded so a re-run sees the same value.
    pub fn random(&self) -> Step<u64> {
        self.step(StepKind::Random, "random", decode, |ctx, _| {
            Ok(StepBody::Recorded(encode(&ctx.shared.inner.next_random())))
        })
    }

    /// Whether this execution runs the code behind patch `id`: true for an execution that
    /// reaches this point under code that has the patch (the decision is journaled, so its
    /// replays say true too), false for one whose journal shows it passed this point under
    /// the code before the patch. One body then serves both:
    ///
    /// ```
    /// # use stent::{Activity, Ctx};
    /// # const RESERVE: Activity<u32, u32> = Activity::new("reserve");
    /// # const AUDIT: Activity<u32, u32> = Activity::new("audit");
    /// # async fn order_body(ctx: Ctx, order: u32) -> stent::Result<bool> {
    /// ctx.call(RESERVE, &order).await?;
    /// if ctx.patched("audit") {
    ///     ctx.call(AUDIT, &order).await?; // New code: only executions that reach here now.
    /// }
    /// let go: bool = ctx.wait_for_signal("go").await?;
    /// # Ok(go) }
    /// ```
    ///
    /// An old execution's step numbers do not shift: a `false` takes no step. Once no
    /// execution from before the patch is left (`Engine::verify_replay` tells), replace the
    /// call with [`Ctx::deprecate_patch`] and keep only the patched branch; once no execution
    /// that recorded the patch is left either, remove that call too.
    pub fn patched(&self, id: &str) -> bool {
        let mut state = self.journal_state();
        let step = state.next_step;
        let kind = StepKind::Patch { id: id.to_string() };
        match state.journal.get(&step) {
            Some(entry) if entry.kind == kind => {
                state.next_step += 1;
                true
            }
            // The code before the patch went on to another step here.
            Some(_) => false,
            None => {
                state.next_step += 1;
                if !self.shared.verifying {
                    let output = b"true".to_vec();
                    let outcome = StepOutcome::Completed { output: output.clone() };
                    state.journal.insert(step, JournalEntry { step, kind: kind.clone(), outcome, recorded_ms: 0 });
                    state.new_steps.push(NewStep { step, kind, body: StepBody::Recorded(output) });
                }
                true
            }
        }
    }

    /// The cleanup phase of patch `id`: the patched branch is the only code left, and this
    /// call steps over the marker that executions started under [`Ctx::patched`] recorded
    /// here (recording nothing for new executions). Executions from before the patch must be
    /// gone by then: their replay would now diverge (`Engine::verify_replay` reports it).
    pub fn deprecate_patch(&self, id: &str) {
        let mut state = self.journal_state();
        let step = state.next_step;
        if state.journal.get(&step).is_some_and(|e| e.kind == StepKind::Patch { id: id.to_string() }) {
            state.next_step += 1;
        }
    }

    /// Waits for the next signal `name` sent to this execution (`Engine::send_signal`). Signals
    /// queue per name in order; each wait takes exactly one, and one sent before the wait is
    /// kept until a wait takes it.
    pub fn wait_for_signal<T: DeserializeOwned>(&self, name: &str) -> Step<T> {
        self.step(StepKind::Signal { name: name.to_string(), timed: false }, name, decode, |_, _| {
            Ok(StepBody::Signal { name: name.to_string(), timer: None })
        })
    }

    /// Like [`Ctx::wait_for_signal`], giving up after `timeout` with `None`. The journal records
    /// which came first, so a re-run takes the same branch.
    pub fn wait_for_signal_timeout<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: impl Into<crate::api::DurationArg>,
    ) -> Step<Option<T>> {
        let timeout = match timeout.into().get() {
            Ok(d) => crate::storage::records::duration_ms(d),
            Err(e) => {
                self.journal_state().next_step += 1;
                return Step::done(Err(e));
            }
        };
        let until = self.shared.inner.clock.now_ms().saturating_add(timeout);
        // Recorded as a list of at most one payload: empty when the timeout won.
        self.step(StepKind::Signal { name: name.to_string(), timed: true }, name, decode_last, |ctx, _| {
            Ok(StepBody::Signal { name: name.to_string(), timer: Some(ctx.timer_task(until)) })
        })
    }

    fn timer_task(&self, until_ms: u64) -> StepTask {
        StepTask {
            function: SLEEP_FUNCTION.to_string(),
            queue: self.queue(),
            priority: 0,
            input: b"null".to_vec(),
            retry: RetryRecord::from(&crate::api::RetryPolicy::default()),
            timeout_ms: None,
            due_ms: Some(until_ms.max(self.shared.inner.clock.now_ms())),
            cache: None,
            // The built-in timer function is version 1 in every engine.
            version: 1,
        }
    }

    fn queue(&self) -> String {
        // The workflow's own queue is where its timers fire; the workers serving it are there.
        self.shared.queue.clone()
    }

    fn new_call<I: serde::Serialize>(&self, name: &str, input: &I, options: CallOptions) -> Result<StepBody> {
        let inner = &self.shared.inner;
        let function = inner.registry.require(name)?;
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: name.to_string(), reason: e.to_string() })?;
        if input.len() as u64 > inner.payload_bytes_max {
            return Err(Error::PayloadTooLarge { bytes: input.len() as u64, limit: inner.payload_bytes_max });
        }
        let timeout = match options.timeout {
            Some(t) => Some(t.get()?),
            None => function.timeout,
        };
        Ok(StepBody::Task(StepTask {
            function: name.to_string(),
            queue: options.queue.unwrap_or_else(|| function.queue.clone()),
            priority: function.priority,
            input,
            retry: RetryRecord::from(options.retry.as_ref().unwrap_or(&function.retry)),
            timeout_ms: timeout.map(crate::storage::records::duration_ms),
            due_ms: None,
            cache: function.cache.filter(|c| c.ttl_ms > 0),
            version: function.version,
        }))
    }
}

/// Options for one [`Ctx::call_with`]; `None` keeps the function's default.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    pub retry: Option<crate::api::RetryPolicy>,
    /// Limit on each attempt of this call.
    pub timeout: Option<crate::api::DurationArg>,
    pub queue: Option<String>,
}

/// See [`Ctx::counter`].
pub struct CounterRef<'a> {
    ctx: &'a Ctx,
    name: String,
}

impl CounterRef<'_> {
    /// Adds `delta`; the step's value is the counter's new total.
    pub fn add(&self, delta: i64) -> Step<i64> {
        let name = self.name.clone();
        self.ctx.step(StepKind::Counter { name: name.clone() }, &self.name, decode, move |_, _| {
            Ok(StepBody::Counter { name, delta })
        })
    }
}

/// See [`Ctx::state`].
pub struct StateRef<'a> {
    ctx: &'a Ctx,
    key: String,
}

impl StateRef<'_> {
    pub fn set<T: serde::Serialize>(&self, value: &T) -> Step<()> {
        let key = self.key.clone();
        self.ctx.step(StepKind::SetState { key: key.clone() }, &self.key, decode, move |_, _| {
            let value = serde_json::to_vec(value)
                .map_err(|e| Error::Payload { function: format!("state {key:?}"), reason: e.to_string() })?;
            Ok(StepBody::SetState { key, value })
        })
    }

    pub fn get<T: DeserializeOwned>(&self) -> Step<Option<T>> {
        let key = self.key.clone();
        self.ctx.step(StepKind::GetState { key: key.clone() }, &self.key, decode_last, move |_, _| {
            Ok(StepBody::GetState { key })
        })
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain integers always serialise.
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

/// Awaits every step; outcomes in the order given. Steps numbered when created, so the order
/// of creation (not of completion) is what a re-run must repeat.
pub async fn join_all<T>(steps: Vec<Step<T>>) -> Vec<Result<T>> {
    JoinAll { steps: steps.into_iter().map(|s| (s, None)).collect() }.await
}

struct JoinAll<T> {
    steps: Vec<(Step<T>, Option<Result<T>>)>,
}

impl<T> Unpin for JoinAll<T> {}

impl<T> Future for JoinAll<T> {
    type Output = Vec<Result<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<Result<T>>> {
        let mut pending = false;
        for (step, out) in self.steps.iter_mut() {
            if out.is_none() {
                match Pin::new(step).poll(cx) {
                    Poll::Ready(r) => *out = Some(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(self.steps.drain(..).filter_map(|(_, out)| out).collect())
    }
}

/// Applies `updates` (the entries found for steps `asked`) to `journal`, if every asked step
/// was found with the kind already known; otherwise leaves `journal` as it was.
fn merge(journal: &mut BTreeMap<u32, JournalEntry>, asked: &[u32], updates: Vec<JournalEntry>) -> bool {
    let fits = updates.len() == asked.len()
        && updates
            .iter()
            .zip(asked)
            .all(|(u, &step)| u.step == step && journal.get(&step).is_some_and(|e| e.kind == u.kind));
    if fits {
        for u in updates {
            journal.insert(u.step, u);
        }
    }
    fits
}

/// A recorded list of at most one value (a state read, a signal wait with a timeout).
fn decode_last<T: DeserializeOwned>(function: &str, bytes: &[u8]) -> Result<Option<T>> {
    decode::<Vec<T>>(function, bytes).map(|mut v| v.pop())
}

pub(super) fn decode<T: DeserializeOwned>(function: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Payload {
        function: function.to_string(),
        reason: format!("recorded result does not decode: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ActivityError;

    fn entry(step: u32, function: &str, outcome: StepOutcome) -> (u32, JournalEntry) {
        (step, JournalEntry { step, kind: StepKind::Call { function: function.into() }, outcome, recorded_ms: 7 })
    }

    fn done(output: &[u8]) -> StepOutcome {
        StepOutcome::Completed { output: output.to_vec() }
    }

    #[test]
    fn a_parked_future_resumes_only_when_every_unsettled_step_is_found_as_it_was_asked() {
        let seen: BTreeMap<_, _> =
            [entry(0, "a", done(b"1")), entry(1, "b", StepOutcome::Scheduled { task_id: u64::MAX })].into();

        let mut journal = seen.clone();
        assert!(merge(&mut journal, &[1], vec![entry(1, "b", done(b"2")).1]), "a step settled");
        assert_eq!(journal[&1].outcome, done(b"2"));
        assert_eq!(journal[&0].outcome, done(b"1"));

        let failed = StepOutcome::Failed { error: ActivityError::permanent("no") };
        let mut journal = seen.clone();
        assert!(merge(&mut journal, &[1], vec![entry(1, "b", failed.clone()).1]), "a step failed");
        assert_eq!(journal[&1].outcome, failed);

        let mut journal = seen.clone();
        assert!(!merge(&mut journal, &[1], vec![]), "the step is gone (a DLQ replay removed it)");
        assert!(!merge(&mut journal, &[1], vec![entry(1, "x", done(b"2")).1]), "recorded as another function");
        assert_eq!(journal, seen, "a refused update changes nothing");
    }
}
