//! `stent watch`: a live terminal dashboard of a database, beside a running application or not.
//!
//! Each refresh reads a fresh snapshot through a `Target` opened for that read alone, so the
//! dashboard never keeps the file from an application that starts meanwhile, and follows it
//! when it does (reads then go through its control socket). `app.rs` is the state and the keys,
//! `draw.rs` the frame; this file runs the terminal.

mod app;
mod draw;

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use stent::{ExecutionFilter, Page};

use crate::target::Target;
use crate::{Failure, Outcome};
use app::{Action, App, Detail, Snapshot, LISTED_MAX};

pub(crate) async fn run(db: &Path, interval: Duration) -> Outcome {
    if !std::io::stdout().is_terminal() {
        return Err(Failure("watch needs a terminal; for scripts use `stats --json`".into()));
    }
    let mut terminal = ratatui::try_init().map_err(|e| Failure(format!("cannot set up the terminal: {e}")))?;
    let result = event_loop(&mut terminal, db, interval.max(Duration::from_millis(100))).await;
    ratatui::restore();
    result
}

async fn event_loop(terminal: &mut ratatui::DefaultTerminal, db: &Path, interval: Duration) -> Outcome {
    let io = |e: std::io::Error| Failure(format!("terminal: {e}"));
    let mut app = App::new(db.display().to_string());
    let mut next_read = Instant::now();
    loop {
        if Instant::now() >= next_read {
            match snapshot(db).await {
                Ok(s) => app.update(s),
                Err(Failure(why)) => app.status = why,
            }
            next_read = Instant::now() + interval;
        }
        terminal.draw(|frame| draw::draw(frame, &app)).map_err(io)?;
        if !event::poll(next_read.saturating_duration_since(Instant::now())).map_err(io)? {
            continue;
        }
        let Event::Key(key) = event::read().map_err(io)? else { continue };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        let key = match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => 'q',
            KeyCode::Char('k') | KeyCode::Up => app::UP,
            KeyCode::Char('j') | KeyCode::Down => app::DOWN,
            KeyCode::Char(c) => c,
            KeyCode::Esc => app::ESC,
            KeyCode::Enter => app::ENTER,
            KeyCode::Tab | KeyCode::BackTab => app::TAB,
            _ => continue,
        };
        match app.on_key(key) {
            Action::Quit => return Ok(()),
            Action::None => {}
            action => {
                perform(db, &mut app, action).await;
                next_read = Instant::now();
            }
        }
    }
}

/// Reads what the dashboard shows, letting go of the file at once.
async fn snapshot(db: &Path) -> Result<Snapshot, Failure> {
    let mut target = Target::read(db, false).await?;
    let held_by = target.remote_pid();
    let read = async {
        let counts = target.counts_by_state().await?;
        let dead_letters = target.dead_letter_count().await?;
        let running = target.running_tasks().await?;
        let recent =
            target.list_executions(&ExecutionFilter::default(), &Page { limit: LISTED_MAX, before: None }).await?;
        let letters = target.dead_letters(LISTED_MAX, None).await?;
        // The queues of the newest work, and the default one.
        let mut names: Vec<String> = recent.iter().map(|e| e.queue.clone()).collect();
        names.push("default".into());
        names.sort();
        names.dedup();
        let mut queues = Vec::new();
        for name in names.into_iter().take(8) {
            let depth = target.queue_depth(&name).await?;
            queues.push((name, depth));
        }
        Ok(Snapshot { taken_ms: now_ms(), held_by, counts, dead_letters, queues, running, recent, letters })
    }
    .await;
    target.finish(read).await
}

/// Carries out what a key asked for, reporting the outcome in the status line.
async fn perform(db: &Path, app: &mut App, action: Action) {
    let outcome = match action {
        Action::None | Action::Quit => return,
        Action::Open(id) => match Target::read(db, false).await {
            Ok(mut target) => {
                let read = async {
                    let info = target.state_of(id).await?;
                    let steps = target.steps(id).await?;
                    Ok(Detail { info, steps })
                }
                .await;
                target.finish(read).await.map(|detail| {
                    app.detail = Some(detail);
                    format!("execution {id}")
                })
            }
            Err(failure) => Err(failure),
        },
        Action::Replay(id) => match Target::write(db).await {
            Ok(mut target) => {
                let replayed = target.replay(id, None).await;
                target.finish(replayed).await.map(|e| format!("dead letter {id} replayed: execution {e} runs again"))
            }
            Err(failure) => Err(failure),
        },
        Action::Discard(id) => match Target::write(db).await {
            Ok(mut target) => {
                let discarded = target.discard(id).await;
                target.finish(discarded).await.map(|()| format!("dead letter {id} discarded"))
            }
            Err(failure) => Err(failure),
        },
    };
    app.status = match outcome {
        Ok(done) => done,
        Err(Failure(why)) => format!("error: {why}"),
    };
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests;
