//! The dashboard on a real file, rendered to ratatui's test backend: what an operator sees,
//! and the keys that open an execution and replay or discard a dead letter.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use stent::{Activity, ActivityError, Engine, ExecutionState, WorkerOptions};

use super::app::{self, Action, App, Panel, Snapshot};
use super::{draw, perform, snapshot};

const SHIP: Activity<String, String> = Activity::new("ship");

async fn ship(address: String) -> Result<String, ActivityError> {
    if address.is_empty() {
        Err(ActivityError::permanent("no address"))
    } else {
        Ok(format!("shipped to {address}"))
    }
}

/// A file with one completed execution (id 1) and one dead letter (execution 2).
async fn sample(dir: &Path) -> PathBuf {
    let db = dir.join("shop.stent");
    let engine = Engine::builder().path(&db).activity(SHIP, ship).open().unwrap();
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    let ok = engine.dispatch(SHIP, &"1 Main St".to_string()).await.unwrap();
    engine.wait_for(SHIP, ok, Some(Duration::from_secs(10))).await.unwrap();
    let bad = engine.dispatch(SHIP, &String::new()).await.unwrap();
    assert!(engine.wait_for(SHIP, bad, Some(Duration::from_secs(10))).await.is_err());
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
    db
}

/// The frame as text, one line per row.
fn render(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(120, 36)).unwrap();
    terminal.draw(|frame| draw::draw(frame, app)).unwrap();
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    let cells: Vec<&str> = buffer.content().iter().map(|c| c.symbol()).collect();
    cells.chunks(width).map(|row| row.concat()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_counts_executions_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    let mut app = App::new(db.display().to_string());
    app.update(snapshot(&db).await.map_err(|f| f.0).unwrap());
    let screen = render(&app);
    assert!(screen.contains("no application holds the file"), "{screen}");
    // The counts block: each state's name, then its count.
    let completed = screen.lines().find(|l| l.contains("completed")).unwrap();
    let mut words = completed.split(|c: char| c.is_whitespace() || c == '│').filter(|w| !w.is_empty());
    assert_eq!(words.find(|w| *w == "completed").and(words.next()), Some("1"), "{completed}");
    assert!(screen.contains("dead letters: 1"), "{screen}");
    assert!(screen.contains("no address"), "{screen}");
    assert!(screen.contains("ship"), "{screen}");
    assert!(screen.contains("running tasks: 0"), "{screen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn enter_opens_an_execution_and_escape_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    let mut app = App::new(db.display().to_string());
    app.update(snapshot(&db).await.map_err(|f| f.0).unwrap());
    // Newest first: execution 2 (the dead letter), then execution 1.
    assert_eq!(app.on_key(app::DOWN), Action::None);
    let action = app.on_key(app::ENTER);
    assert_eq!(action, Action::Open(stent::ExecutionId(1)));
    perform(&db, &mut app, action).await;
    let screen = render(&app);
    assert!(screen.contains("execution 1 (esc closes)"), "{screen}");
    assert!(screen.contains("shipped to 1 Main St"), "{screen}");
    assert_eq!(app.on_key(app::ESC), Action::None);
    assert!(!render(&app).contains("esc closes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_is_discarded_or_replayed_only_after_yes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    let mut app = App::new(db.display().to_string());
    app.update(snapshot(&db).await.map_err(|f| f.0).unwrap());
    app.on_key(app::TAB);
    assert_eq!(app.panel, Panel::DeadLetters);

    // `d` asks; anything but `y` changes nothing.
    assert_eq!(app.on_key('d'), Action::None);
    assert!(render(&app).contains("discard dead letter 1 (execution 2)? y/n"));
    assert_eq!(app.on_key('n'), Action::None);
    assert_eq!(snapshot(&db).await.map_err(|f| f.0).unwrap().dead_letters, 1);

    // `r` then `y` replays it (the file's next application runs it again).
    app.on_key('r');
    let action = app.on_key('y');
    assert_eq!(action, Action::Replay(stent::DeadLetterId(1)));
    perform(&db, &mut app, action).await;
    assert!(app.status.contains("replayed"), "{}", app.status);
    app.update(snapshot(&db).await.map_err(|f| f.0).unwrap());
    assert_eq!(app.snapshot.dead_letters, 0);
    assert_eq!(app.snapshot.count(ExecutionState::Pending), 1);
    let screen = render(&app);
    assert!(screen.contains("dead letters: 0"), "{screen}");
    // The replayed task waits in its queue until an application serves it.
    let ready = screen.lines().find(|l| l.contains("ready")).unwrap();
    assert!(ready.contains("default 1"), "{screen}");
}

#[test]
fn throughput_is_finished_executions_per_second_between_readings() {
    let mut app = App::new("x".into());
    let reading = |ms, completed| Snapshot {
        taken_ms: ms,
        counts: vec![(ExecutionState::Completed, completed), (ExecutionState::Pending, 7)],
        ..Snapshot::default()
    };
    app.update(reading(10_000, 100));
    assert!(app.throughput.is_empty(), "one reading has no rate yet");
    app.update(reading(12_000, 300));
    app.update(reading(13_000, 300));
    assert_eq!(app.throughput.iter().copied().collect::<Vec<_>>(), vec![100, 0]);
    for i in 0..200 {
        app.update(reading(14_000 + i * 1000, 300));
    }
    assert_eq!(app.throughput.len(), app::HISTORY_MAX);
}
