//! Signals: delivered to the oldest step waiting for one, else kept in the FIFO mailbox.

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
}
