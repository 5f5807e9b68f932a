//! What the dashboard shows and how keys change it: plain state, no terminal, so tests drive
//! it key by key and render it to ratatui's test backend.

use std::collections::VecDeque;

use stent::{DeadLetter, DeadLetterId, ExecutionId, ExecutionInfo, ExecutionState, RunningTask, StepInfo};

/// Samples of the throughput history kept (one per refresh).
pub(crate) const HISTORY_MAX: usize = 120;
/// Executions and dead letters a snapshot lists at most.
pub(crate) const LISTED_MAX: u32 = 50;

/// One reading of the database, taken each refresh.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// When it was read (ms since the epoch).
    pub(crate) taken_ms: u64,
    /// The application whose engine answered, if one holds the file.
    pub(crate) held_by: Option<u32>,
    pub(crate) counts: Vec<(ExecutionState, u64)>,
    pub(crate) dead_letters: u64,
    pub(crate) queues: Vec<(String, u64)>,
    pub(crate) running: Vec<RunningTask>,
    /// The newest executions.
    pub(crate) recent: Vec<ExecutionInfo>,
    /// The newest dead letters.
    pub(crate) letters: Vec<DeadLetter>,
}

impl Snapshot {
    pub(crate) fn count(&self, state: ExecutionState) -> u64 {
        self.counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n)
    }

    /// Executions that reached an end state so far (the throughput counts their growth).
    fn finished(&self) -> u64 {
        [ExecutionState::Completed, ExecutionState::Failed, ExecutionState::TimedOut, ExecutionState::Cancelled]
            .into_iter()
            .map(|s| self.count(s))
            .sum()
    }
}

/// The list the arrow keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Panel {
    Executions,
    DeadLetters,
}

/// What a key asks the loop to do beyond redrawing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    None,
    Quit,
    Open(ExecutionId),
    Replay(DeadLetterId),
    Discard(DeadLetterId),
}

/// An execution opened with Enter: what `show` prints, in a popup.
#[derive(Debug, Clone)]
pub(crate) struct Detail {
    pub(crate) info: ExecutionInfo,
    pub(crate) steps: Vec<StepInfo>,
}

/// A change waiting for `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    Replay(DeadLetterId),
    Discard(DeadLetterId),
}

#[derive(Debug)]
pub(crate) struct App {
    pub(crate) db: String,
    pub(crate) snapshot: Snapshot,
    /// Executions finished per second, one sample per refresh, oldest first.
    pub(crate) throughput: VecDeque<u64>,
    pub(crate) panel: Panel,
    pub(crate) selected_execution: usize,
    pub(crate) selected_letter: usize,
    pub(crate) detail: Option<Detail>,
    pub(crate) confirm: Option<Pending>,
    /// The last thing that happened (a change made, a read that failed).
    pub(crate) status: String,
}

impl App {
    pub(crate) fn new(db: String) -> App {
        App {
            db,
            snapshot: Snapshot::default(),
            throughput: VecDeque::new(),
            panel: Panel::Executions,
            selected_execution: 0,
            selected_letter: 0,
            detail: None,
            confirm: None,
            status: String::from("q quit · tab switch list · ↑↓ select · enter open · r replay · d discard"),
        }
    }

    /// Takes a new reading; the throughput sample is the finished executions since the last
    /// one, per second.
    pub(crate) fn update(&mut self, snapshot: Snapshot) {
        if self.snapshot.taken_ms > 0 && snapshot.taken_ms > self.snapshot.taken_ms {
            let finished = snapshot.finished().saturating_sub(self.snapshot.finished());
            let elapsed_ms = snapshot.taken_ms - self.snapshot.taken_ms;
            self.throughput.push_back(finished * 1000 / elapsed_ms);
            if self.throughput.len() > HISTORY_MAX {
                self.throughput.pop_front();
            }
        }
        self.selected_execution = self.selected_execution.min(snapshot.recent.len().saturating_sub(1));
        self.selected_letter = self.selected_letter.min(snapshot.letters.len().saturating_sub(1));
        self.snapshot = snapshot;
    }

    /// Handles one key; what it returns is for the loop to carry out.
    pub(crate) fn on_key(&mut self, key: char) -> Action {
        if let Some(pending) = self.confirm.take() {
            return match (key, pending) {
                ('y', Pending::Replay(id)) => Action::Replay(id),
                ('y', Pending::Discard(id)) => Action::Discard(id),
                _ => {
                    self.status = "nothing was changed".into();
                    Action::None
                }
            };
        }
        if self.detail.is_some() {
            if matches!(key, ESC | ENTER | 'q') {
                self.detail = None;
            }
            return Action::None;
        }
        match key {
            'q' | ESC => return Action::Quit,
            TAB => {
                self.panel = match self.panel {
                    Panel::Executions => Panel::DeadLetters,
                    Panel::DeadLetters => Panel::Executions,
                }
            }
            UP => *self.selection() = self.selection().saturating_sub(1),
            DOWN => {
                let len = match self.panel {
                    Panel::Executions => self.snapshot.recent.len(),
                    Panel::DeadLetters => self.snapshot.letters.len(),
                };
                let selection = self.selection();
                *selection = (*selection + 1).min(len.saturating_sub(1));
            }
            ENTER => {
                let id = match self.panel {
                    Panel::Executions => self.snapshot.recent.get(self.selected_execution).map(|e| e.id),
                    Panel::DeadLetters => self.snapshot.letters.get(self.selected_letter).map(|l| l.execution_id),
                };
                if let Some(id) = id {
                    return Action::Open(id);
                }
            }
            'r' | 'd' if self.panel == Panel::DeadLetters => {
                if let Some(letter) = self.snapshot.letters.get(self.selected_letter) {
                    let (pending, verb) = if key == 'r' {
                        (Pending::Replay(letter.id), "replay")
                    } else {
                        (Pending::Discard(letter.id), "discard")
                    };
                    self.confirm = Some(pending);
                    self.status = format!("{verb} dead letter {} (execution {})? y/n", letter.id, letter.execution_id);
                }
            }
            _ => {}
        }
        Action::None
    }

    fn selection(&mut self) -> &mut usize {
        match self.panel {
            Panel::Executions => &mut self.selected_execution,
            Panel::DeadLetters => &mut self.selected_letter,
        }
    }
}

/// Keys that are not characters, as the loop passes them.
pub(crate) const ESC: char = '\u{1b}';
pub(crate) const ENTER: char = '\n';
pub(crate) const TAB: char = '\t';
pub(crate) const UP: char = '\u{2191}';
pub(crate) const DOWN: char = '\u{2193}';
