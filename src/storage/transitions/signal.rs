//! Signals: delivered to the oldest step waiting for one, else kept in the FIFO mailbox; a
//! signal with start creates the execution its idempotency key names when none holds it.

use super::*;

impl<R: Records> Batch<'_, R> {
    pub(super) fn signal(&mut self, execution_id: u64, name: &str, payload: Vec<u8>) -> OpRes<OpOutput> {
        let Some(exec) = reject!(soft(self.r.execution(execution_id))?) else {
            return Ok(Err(Rejection::UnknownExecution(execution_id)));
        };
        if exec.state.is_terminal() {
            return Ok(Err(Rejection::ExecutionFinished { id: execution_id, state: exec.state }));
        }
        let journal = reject!(soft(self.r.journal(execution_id))?);
        let waiting = journal.iter().find_map(|e| match (&e.outcome, &e.kind) {
            (StepOutcome::AwaitingSignal { timer }, StepKind::Signal { name: n, .. }) if n == name => {
                Some((e.step, *timer))
            }
            _ => None,
        });
        match waiting {
            Some((step, timer)) => {
                // The signal wins the race: the timer is cancelled in the same transaction.
                let output = match timer {
                    Some(timer) => {
                        self.cancel_task(timer)?;
                        wrap_one(&payload)
                    }
                    None => payload,
                };
                self.settle_step(&exec, step, StepOutcome::Completed { output })?
            }
            None => {
                self.r.push_signal(execution_id, name, &payload)?;
            }
        }
        Ok(Ok(OpOutput::Done))
    }

    /// The execution holding idempotency key `key` gets the signal, as `signal` would give it
    /// (refused unchanged if that execution has finished); with no holder, the execution is
    /// created from `new` under that key and the signal waits in its mailbox for its first
    /// wait, in the same transaction, so no start with the same key (in this batch or
    /// another) can slip between.
    pub(super) fn signal_with_start(
        &mut self,
        key: String,
        mut new: NewExecution,
        name: String,
        payload: Vec<u8>,
    ) -> OpRes<OpOutput> {
        if let Some(existing) = self.r.idempotent(&key)? {
            return Ok(self.signal(existing, &name, payload)?.map(|_| OpOutput::Dispatched {
                execution_id: existing,
                created: false,
                claimed: None,
            }));
        }
        new.idempotency_key = Some(key);
        let created = self.dispatch(new)?;
        if let Ok(OpOutput::Dispatched { execution_id, .. }) = &created {
            self.r.push_signal(*execution_id, &name, &payload)?;
        }
        Ok(created)
    }
}
