//! Races: `Ctx::race` (two steps of any types) and `Ctx::select` (any number of one type)
//! settle with the first of their steps to settle. The winner is journaled as a step of its
//! own (`StepKind::Race`, outcome the winner's index), taken when the race is created and
//! recorded when it is decided, so a replay takes the same branch whatever has settled since;
//! the same record cancels the losers (their tasks cancelled, timers dropped, signal waits
//! ended, children cancelled: each loser's step fails with code `cancelled`).
//!
//! Deciding: the steps are looked at in order, and the first that has its outcome wins; when
//! several settled while the workflow was not looking, the first listed of them wins.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{Ctx, Step};
use crate::error::{Error, Result};
use crate::storage::records::{JournalEntry, StepKind, StepOutcome};
use crate::storage::{NewStep, StepBody};

/// The outcome of [`Ctx::race`]: which of the two steps won, with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// One step of a race, whatever its type.
trait Contender {
    fn number(&self) -> Option<u32>;
    /// Whether it has its outcome (kept for `take`); a blocked one is noted as awaited.
    fn settled(&mut self) -> bool;
}

/// A step and, once looked at, its outcome.
struct Entrant<T> {
    step: Step<T>,
    outcome: Option<Result<T>>,
}

impl<T> Entrant<T> {
    fn new(step: Step<T>) -> Self {
        Entrant { step, outcome: None }
    }

    fn take(&mut self) -> Result<T> {
        self.outcome.take().unwrap_or_else(|| Err(Error::Internal("a race's winner has no outcome".into())))
    }
}

impl<T> Contender for Entrant<T> {
    fn number(&self) -> Option<u32> {
        self.step.number
    }

    fn settled(&mut self) -> bool {
        if self.outcome.is_none() {
            self.outcome = self.step.check();
        }
        self.outcome.is_some()
    }
}

/// The race's own journal step, taken when the race is created.
struct Marker {
    ctx: Ctx,
    step: u32,
}

impl Marker {
    fn new(ctx: &Ctx) -> Self {
        let mut state = ctx.journal_state();
        let step = state.next_step;
        state.next_step += 1;
        Marker { ctx: ctx.clone(), step }
    }

    /// The winner's index: the recorded one on a replay, else the first contender settled now
    /// (recorded with the next commit, which cancels the others). `Pending` while none is.
    fn decide(&self, contenders: &mut [&mut dyn Contender]) -> Poll<Result<usize>> {
        let steps: Vec<u32> = contenders.iter().filter_map(|c| c.number()).collect();
        let kind = StepKind::Race { steps: steps.clone() };
        let recorded = self.ctx.journal_state().journal.get(&self.step).cloned();
        match recorded {
            Some(entry) if !entry.kind.matches(&kind) => {
                let recorded = entry.kind.to_string();
                let mut state = self.ctx.journal_state();
                state.nondeterminism.get_or_insert((self.step, recorded.clone(), kind.to_string()));
                Poll::Ready(Err(Error::NonDeterminism { step: self.step, recorded, requested: kind.to_string() }))
            }
            Some(JournalEntry { outcome: StepOutcome::Completed { output }, .. }) => {
                let winner = std::str::from_utf8(&output).ok().and_then(|s| s.parse::<usize>().ok());
                match winner.filter(|&i| i < contenders.len()) {
                    Some(i) if contenders[i].settled() => Poll::Ready(Ok(i)),
                    Some(_) => Poll::Pending,
                    None => Poll::Ready(Err(Error::Internal(format!(
                        "step {}: a race's recorded winner {:?} is not one of its {} steps",
                        self.step,
                        String::from_utf8_lossy(&output),
                        contenders.len()
                    )))),
                }
            }
            Some(_) => Poll::Pending,
            None => {
                let winner = (0..contenders.len()).find(|&i| contenders[i].settled());
                let Some(winner) = winner else { return Poll::Pending };
                if self.ctx.shared.verifying {
                    // A replay check stops where the journal does.
                    return Poll::Pending;
                }
                let losers: Vec<u32> = contenders
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != winner)
                    .filter_map(|(_, c)| c.number())
                    .collect();
                let output = winner.to_string().into_bytes();
                let mut state = self.ctx.journal_state();
                for loser in &losers {
                    // Noted while looking; the race no longer waits for them.
                    state.awaiting.remove(loser);
                }
                let entry = JournalEntry {
                    step: self.step,
                    kind: kind.clone(),
                    outcome: StepOutcome::Completed { output: output.clone() },
                    recorded_ms: 0,
                };
                state.journal.insert(self.step, entry);
                state.new_steps.push(NewStep { step: self.step, kind, body: StepBody::Race { output, losers } });
                Poll::Ready(Ok(winner))
            }
        }
    }
}

/// See [`Ctx::race`].
#[must_use = "a race does nothing until awaited"]
pub struct Race<A, B> {
    marker: Marker,
    a: Entrant<A>,
    b: Entrant<B>,
}

impl<A, B> Unpin for Race<A, B> {}

impl<A, B> Future for Race<A, B> {
    type Output = Result<Either<A, B>>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let winner = this.marker.decide(&mut [&mut this.a, &mut this.b]);
        winner.map(|w| match w? {
            0 => this.a.take().map(Either::Left),
            _ => this.b.take().map(Either::Right),
        })
    }
}

/// See [`Ctx::select`].
#[must_use = "a select does nothing until awaited"]
pub struct Select<T> {
    marker: Marker,
    entrants: Vec<Entrant<T>>,
}

impl<T> Unpin for Select<T> {}

impl<T> Future for Select<T> {
    type Output = Result<(usize, T)>;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut contenders: Vec<&mut dyn Contender> =
            this.entrants.iter_mut().map(|e| e as &mut dyn Contender).collect();
        let winner = this.marker.decide(&mut contenders);
        winner.map(|w| {
            let w = w?;
            this.entrants[w].take().map(|value| (w, value))
        })
    }
}

impl Ctx {
    /// Settles with whichever of `a` and `b` settles first (its value, or its error), and
    /// cancels the other: its task is cancelled (a running attempt aborted), a timer dropped,
    /// a signal wait ended (later signals stay in the mailbox), a child cancelled. The winner
    /// is journaled, so a re-run takes the same branch.
    ///
    /// ```
    /// # use stent::{Activity, Ctx, Either};
    /// # const CHARGE: Activity<u32, u32> = Activity::new("charge");
    /// async fn charge_or_give_up(ctx: Ctx) -> stent::Result<Option<u32>> {
    ///     let charge = ctx.call(CHARGE, &42);
    ///     let timeout = ctx.sleep("1h");
    ///     Ok(match ctx.race(charge, timeout).await? {
    ///         Either::Left(receipt) => Some(receipt),
    ///         Either::Right(()) => None, // the charge was cancelled
    ///     })
    /// }
    /// ```
    pub fn race<A, B>(&self, a: Step<A>, b: Step<B>) -> Race<A, B> {
        Race { marker: Marker::new(self), a: Entrant::new(a), b: Entrant::new(b) }
    }

    /// Cancels a step this workflow started and no longer needs (an activity call, a timer,
    /// a signal wait, a child): journaled, so a re-run cancels it at the same point. The
    /// step, if it had no outcome yet, fails with code `cancelled` (a running attempt is
    /// aborted, a child execution cancelled); one that has its outcome keeps it.
    ///
    /// ```
    /// # use stent::{Ctx, Workflow};
    /// # const REPORT: Workflow<u32, u32> = Workflow::new("report");
    /// async fn maybe_report(ctx: Ctx) -> stent::Result<()> {
    ///     let report = ctx.child(REPORT, &7);
    ///     let needed: bool = ctx.wait_for_signal("still_needed").await?;
    ///     if !needed {
    ///         ctx.cancel(&report).await?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn cancel<T>(&self, step: &Step<T>) -> Step<()> {
        let Some(target) = step.number else {
            // Refused before it took a step: nothing to cancel, and no step taken either.
            return Step::done(Ok(()));
        };
        self.step(StepKind::Cancel { step: target }, "cancel", super::decode, move |_, _| {
            Ok(StepBody::Cancel { step: target })
        })
    }

    /// [`race`](Self::race) over any number of steps of one type: the index of the first to
    /// settle and its value; the others are cancelled. An empty list never settles.
    pub fn select<T>(&self, steps: Vec<Step<T>>) -> Select<T> {
        Select { marker: Marker::new(self), entrants: steps.into_iter().map(Entrant::new).collect() }
    }
}
