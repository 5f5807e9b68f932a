//! Starting executions: `Engine::dispatch`, `schedule` and `signal_with_start`, and the
//! `DispatchBuilder`.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use super::worker::{self};

use super::{unexpected, Engine};
use crate::api::{DurationArg, ExecutionId, FunctionHandle, Workflow};
use crate::error::{Error, Result};
use crate::storage::records::{duration_ms, ExecutionKeys, RetryRecord};
use crate::storage::{EagerClaim, Flow, NewExecution, Op, OpOutput};
use serde::Serialize;

/// A dispatch being prepared; `.await` it to commit.
#[must_use = "a dispatch does nothing until awaited"]
pub struct DispatchBuilder<'e, F: FunctionHandle> {
    engine: &'e Engine,
    function: F,
    input: Result<Vec<u8>>,
    delay: Option<DurationArg>,
    max_duration: Option<DurationArg>,
    queue: Option<String>,
    priority: Option<i32>,
    tags: Vec<String>,
    idempotency_key: Option<String>,
    /// `Engine::signal_with_start`: the signal (name, payload) for the key's execution.
    signal: Option<(String, Result<Vec<u8>>)>,
    concurrency_key: Option<String>,
    rate_key: Option<String>,
    flow: Option<FlowArg>,
}

/// `debounce` or `throttle`, as given (durations checked when the dispatch runs).
enum FlowArg {
    Debounce { key: String, window: DurationArg, max_wait: Option<DurationArg> },
    Throttle { key: String, window: DurationArg },
}

impl<F: FunctionHandle> DispatchBuilder<'_, F> {
    /// Start no earlier than this from now.
    pub fn delay(mut self, delay: impl Into<DurationArg>) -> Self {
        self.delay = Some(delay.into());
        self
    }

    /// The execution times out this long after it is due to start (dispatch time plus delay).
    pub fn max_duration(mut self, d: impl Into<DurationArg>) -> Self {
        self.max_duration = Some(d.into());
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// A second dispatch with the same key returns the first execution's id and creates
    /// nothing.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Runs it under concurrency key `key`: with `FunctionOptions::max_concurrent_per_key(n)`,
    /// at most `n` executions of the function with this key run at once.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Counts its attempts against `FunctionOptions::rate_limit_per_key` under `key`.
    pub fn rate_key(mut self, key: impl Into<String>) -> Self {
        self.rate_key = Some(key.into());
        self
    }

    /// Debounce: the execution starts `window` after the last of a burst of dispatches with
    /// `key`. A dispatch with the key while the execution the burst started has not started
    /// yet replaces its input and moves its start to `window` from now (but no later than
    /// `debounce_max_wait` after the burst's first dispatch), and returns its id.
    pub fn debounce(mut self, key: impl Into<String>, window: impl Into<DurationArg>) -> Self {
        let max_wait = match self.flow.take() {
            Some(FlowArg::Debounce { max_wait, .. }) => max_wait,
            _ => None,
        };
        self.flow = Some(FlowArg::Debounce { key: key.into(), window: window.into(), max_wait });
        self
    }

    /// With `debounce`: the start moves no later than this after the burst's first dispatch,
    /// so a steady stream of dispatches still runs.
    pub fn debounce_max_wait(mut self, max_wait: impl Into<DurationArg>) -> Self {
        if let Some(FlowArg::Debounce { max_wait: m, .. }) = &mut self.flow {
            *m = Some(max_wait.into());
        }
        self
    }

    /// Throttle: the first dispatch with `key` starts an execution at once; later ones inside
    /// `window` of it return its id and start nothing.
    pub fn throttle(mut self, key: impl Into<String>, window: impl Into<DurationArg>) -> Self {
        self.flow = Some(FlowArg::Throttle { key: key.into(), window: window.into() });
        self
    }

    pub(super) async fn run(self) -> Result<ExecutionId> {
        let inner = &self.engine.inner;
        let function = inner.registry.require(self.function.name())?;
        let input = self.input?;
        self.engine.check_payload(&input)?;
        let signal = match self.signal {
            Some((name, payload)) => {
                let payload = payload?;
                self.engine.check_payload(&payload)?;
                Some((name, payload))
            }
            None => None,
        };
        let delay_ms = self.delay.map(|d| d.get()).transpose()?.map_or(0, duration_ms);
        let max_duration_ms = self.max_duration.map(|d| d.get()).transpose()?.map(duration_ms);
        let queue = self.queue.unwrap_or_else(|| function.queue.clone());
        let flow = match self.flow {
            None => None,
            Some(FlowArg::Throttle { key, window }) => {
                Some(Flow::Throttle { key, window_ms: duration_ms(window.get()?) })
            }
            Some(FlowArg::Debounce { key, window, max_wait }) => Some(Flow::Debounce {
                key,
                window_ms: duration_ms(window.get()?),
                max_wait_ms: max_wait.map(|d| d.get()).transpose()?.map(duration_ms),
            }),
        };
        // An idle worker may take the task in the dispatch's own transaction, unless the claim
        // must go through flow control.
        let plain = flow.is_none() && function.limits.is_none();
        let reservation =
            if delay_ms == 0 && plain { worker::reserve_idle(inner, function, &queue, &self.tags) } else { None };
        let new = NewExecution {
            function: function.name.to_string(),
            kind: function.handler.kind(),
            claim: reservation.as_ref().map(|r| EagerClaim {
                worker: r.worker.clone(),
                lease_ms: r.lease_ms,
                serial: r.serial,
            }),
            queue,
            priority: self.priority.unwrap_or(function.priority),
            tags: self.tags,
            input,
            delay_ms,
            max_duration_ms,
            idempotency_key: self.idempotency_key,
            retry: RetryRecord::from(&function.retry),
            timeout_ms: function.timeout.map(duration_ms),
            cache: function.cache.filter(|c| c.ttl_ms > 0),
            version: function.version,
            schedule: None,
            keys: ExecutionKeys { concurrency: self.concurrency_key, rate: self.rate_key, flow: None },
            flow: flow.map(Box::new),
        };
        let op = match (signal, new.idempotency_key.clone()) {
            // A cached result would finish the execution before the signal could be taken.
            (Some((name, payload)), Some(key)) => {
                Op::SignalWithStart { key, new: NewExecution { cache: None, ..new }, name, payload }
            }
            _ => Op::Dispatch(new),
        };
        let result = inner.submit(op).await;
        match result {
            Ok(OpOutput::Dispatched { execution_id, created, claimed }) => {
                super::metrics::dispatch(function.name, created);
                if let Some(r) = reservation {
                    r.finish(claimed);
                }
                Ok(ExecutionId(execution_id))
            }
            other => {
                if let Some(r) = reservation {
                    r.finish(None);
                }
                match other {
                    Ok(output) => Err(unexpected(output)),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

impl<'e, F: FunctionHandle> IntoFuture for DispatchBuilder<'e, F> {
    type Output = Result<ExecutionId>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<ExecutionId>> + Send + 'e>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl Engine {
    pub(super) fn check_payload(&self, bytes: &[u8]) -> Result<()> {
        let len = bytes.len() as u64;
        if len > self.inner.payload_bytes_max {
            return Err(Error::PayloadTooLarge { bytes: len, limit: self.inner.payload_bytes_max });
        }
        Ok(())
    }

    /// Starts an execution of `function`; `.await` the returned builder.
    ///
    /// The handle's input type is checked at compile time:
    ///
    /// ```compile_fail
    /// # async fn demo(engine: stent::Engine) {
    /// const CHARGE: stent::Activity<u64, String> = stent::Activity::new("charge_card");
    /// engine.dispatch(CHARGE, &"forty-two").await; // a &str is not a u64
    /// # }
    /// ```
    pub fn dispatch<F: FunctionHandle>(&self, function: F, input: &F::Input) -> DispatchBuilder<'_, F> {
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::Payload { function: function.name().to_string(), reason: e.to_string() });
        DispatchBuilder {
            engine: self,
            function,
            input,
            delay: None,
            max_duration: None,
            queue: None,
            priority: None,
            tags: Vec::new(),
            idempotency_key: None,
            signal: None,
            concurrency_key: None,
            rate_key: None,
            flow: None,
        }
    }

    /// Sends signal `signal` to the execution of `workflow` that holds `idempotency_key`,
    /// starting it with `input` first if no execution holds the key, in one transaction: two
    /// calls (or a call and a `dispatch` with the same key) racing make one execution, and the
    /// signal is in its mailbox before it runs. `.await` the returned builder (its options
    /// apply only when the execution is created); it gives the execution's id. Fails with
    /// `Error::ExecutionFinished` (nothing changed) when the key's execution has finished.
    ///
    /// ```no_run
    /// # async fn demo(engine: stent::Engine) -> stent::Result<()> {
    /// const CART: stent::Workflow<String, u32> = stent::Workflow::new("cart");
    /// // Each "add" goes to the customer's one cart, started by the first.
    /// let id = engine.signal_with_start(CART, "cart-ada", &"ada".to_string(), "add", &"book").await?;
    /// # Ok(()) }
    /// ```
    pub fn signal_with_start<I, O, T: Serialize>(
        &self,
        workflow: Workflow<I, O>,
        idempotency_key: impl Into<String>,
        input: &I,
        signal: &str,
        payload: &T,
    ) -> DispatchBuilder<'_, Workflow<I, O>>
    where
        Workflow<I, O>: FunctionHandle<Input = I>,
    {
        let payload = serde_json::to_vec(payload)
            .map_err(|e| Error::Payload { function: format!("signal {signal:?}"), reason: e.to_string() });
        let mut builder = self.dispatch(workflow, input).idempotency_key(idempotency_key);
        builder.signal = Some((signal.to_string(), payload));
        builder
    }

    /// `dispatch` with a delay.
    pub fn schedule<F: FunctionHandle>(
        &self,
        function: F,
        input: &F::Input,
        delay: impl Into<DurationArg>,
    ) -> DispatchBuilder<'_, F> {
        self.dispatch(function, input).delay(delay)
    }
}
