//! The `stent` CLI beside a running application: this test process runs an engine on a file
//! (the application), and the real `stent` binary, in other processes, reads the file and
//! changes it through the engine's control socket: a signal, a cancel and a dead-letter replay
//! sent from the CLI take effect in the running engine, a replay input of the wrong shape is
//! refused by that engine, the schedule commands act on the running engine's schedules, and
//! only the file's owner is served (a CLI run as another uid is refused, whether the socket's
//! mode stops it or the engine's peer check does).

#![cfg(all(feature = "cli", unix))]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stent::{
    Activity, ActivityError, Ctx, Engine, ExecutionId, ExecutionState, ManualClock, Schedule, ScheduleInfo,
    ScheduleSpec, WorkerOptions, Workflow,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    address: String,
}

const SHIP: Activity<Order, String> = Activity::new("ship");
const AWAIT_GO: Workflow<u32, String> = Workflow::new("await_go");

async fn ship(order: Order) -> Result<String, ActivityError> {
    if order.address.is_empty() {
        Err(ActivityError::permanent("no address"))
    } else {
        Ok(format!("order {} to {}", order.id, order.address))
    }
}

async fn await_go(ctx: Ctx, _n: u32) -> stent::Result<String> {
    ctx.wait_for_signal::<String>("go").await
}

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// The application: an engine serving both functions on `db`.
async fn application(db: &Path) -> (Engine, stent::WorkerPool) {
    let engine = Engine::builder().path(db).activity(SHIP, ship).workflow(AWAIT_GO, await_go).open().unwrap();
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    (engine, pool)
}

async fn cli(bin: &Path, db: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(bin).arg("--db").arg(db).args(args).output().await.unwrap()
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Waits until execution `id`'s workflow is blocked on its signal (its last step `waiting`).
async fn until_waiting(engine: &Engine, id: ExecutionId) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let steps = engine.steps(id).unwrap();
        if steps.last().is_some_and(|s| s.outcome == "waiting") {
            return;
        }
        assert!(Instant::now() < deadline, "execution {id} never reached its signal wait: {steps:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_stent");

#[tokio::test(flavor = "multi_thread")]
async fn reads_and_changes_from_the_cli_reach_the_running_engine() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.stent");
    let bin = Path::new(BIN);
    let (engine, pool) = application(&db).await;
    let done = engine.dispatch(SHIP, &Order { id: 1, address: "1 Main St".into() }).await.unwrap();
    engine.wait_for(SHIP, done, WAIT).await.unwrap();
    let buried = engine.dispatch(SHIP, &Order { id: 2, address: String::new() }).await.unwrap();
    assert!(engine.wait_for(SHIP, buried, WAIT).await.is_err());
    let signalled = engine.dispatch(AWAIT_GO, &1).await.unwrap();
    let cancelled = engine.dispatch(AWAIT_GO, &2).await.unwrap();
    until_waiting(&engine, signalled).await;
    until_waiting(&engine, cancelled).await;

    // Reads, answered by the engine that holds the file.
    let stats = json(&cli(bin, &db, &["stats", "--json"]).await);
    assert_eq!(stats["dead_letters"], 1);
    assert_eq!(stats["executions"]["completed"], 1);
    assert_eq!(stats["executions"]["failed"], 1);
    let list = json(&cli(bin, &db, &["list", "--json"]).await);
    let ids: Vec<u64> = list.as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![cancelled.0, signalled.0, buried.0, done.0]);
    let shown = json(&cli(bin, &db, &["show", &signalled.to_string(), "--json"]).await);
    assert_eq!(shown["steps"][0]["outcome"], "waiting");
    assert_eq!(cli(bin, &db, &["show", "999"]).await.status.code(), Some(1));
    let check = cli(bin, &db, &["check"]).await;
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    assert!(String::from_utf8_lossy(&check.stdout).contains("pages not checked"));

    // A signal sent from the CLI wakes the workflow in this process.
    let sent = Instant::now();
    let out = cli(bin, &db, &["signal", &signalled.to_string(), "go", r#""from the cli""#, "--json"]).await;
    assert_eq!(json(&out)["sent"], true);
    assert_eq!(engine.wait_for(AWAIT_GO, signalled, WAIT).await.unwrap(), "from the cli");
    eprintln!("signal from the CLI to a completed workflow: {:?}", sent.elapsed());

    // A cancel from the CLI ends the waiting execution here.
    let out = json(&cli(bin, &db, &["cancel", &cancelled.to_string(), "--yes", "--json"]).await);
    assert_eq!(out["state"], ExecutionState::Cancelled.as_str());
    assert_eq!(engine.state_of(cancelled).unwrap().state, ExecutionState::Cancelled);

    // A replay input of the wrong shape is refused by this engine, which declares the type.
    let letter = json(&cli(bin, &db, &["dlq", "list", "--json"]).await)[0]["id"].as_u64().unwrap().to_string();
    let refused = cli(bin, &db, &["dlq", "replay", &letter, "--input", r#"{"id":2}"#]).await;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("missing field `address`"), "{stderr}");
    assert_eq!(engine.dead_letter_count().unwrap(), 1, "a refused replay changed the queue");

    // A good one is replayed and run by this engine's workers.
    let out = cli(bin, &db, &["dlq", "replay", &letter, "--input", r#"{"id":2,"address":"9 Elm St"}"#, "--json"]).await;
    assert_eq!(json(&out)["execution"], buried.0);
    assert_eq!(engine.wait_for(SHIP, buried, WAIT).await.unwrap(), "order 2 to 9 Elm St");

    // An export of the live file, written by the engine's process, imports elsewhere.
    let export = dir.path().join("shop.export");
    assert!(cli(bin, &db, &["export", export.to_str().unwrap()]).await.status.success());
    let copy = dir.path().join("copy.stent");
    assert!(cli(bin, &copy, &["import", export.to_str().unwrap()]).await.status.success());
    let copied = json(&cli(bin, &copy, &["list", "--json"]).await);
    assert_eq!(copied.as_array().unwrap().len(), 4);

    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_socket_is_owner_only_and_gone_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.stent");
    let (engine, pool) = application(&db).await;
    let socket = stent::control_socket::socket_path(&db);
    let mode = std::fs::symlink_metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
    assert!(!socket.exists(), "the socket outlived its engine");

    // A socket left by a killed engine is replaced by the next one.
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    let (engine, pool) = application(&db).await;
    let out = cli(Path::new(BIN), &db, &["stats", "--json"]).await;
    assert_eq!(json(&out)["dead_letters"], 0);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

const REPORT: Workflow<String, String> = Workflow::new("report");

async fn report(_ctx: Ctx, what: String) -> stent::Result<String> {
    Ok(format!("report on {what}"))
}

/// 2100-01-01T00:00:00Z: where the application's manual clock starts.
const START_MS: u64 = 4_102_444_800_000;
const HOUR_MS: u64 = 3_600_000;

#[tokio::test(flavor = "multi_thread")]
async fn schedule_commands_reach_the_running_engines_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reports.stent");
    let bin = Path::new(BIN);
    let clock = ManualClock::new(START_MS);
    let spec = ScheduleSpec::cron("0 9 * * *", "UTC").unwrap();
    let engine = Engine::builder()
        .path(&db)
        .clock(clock.clone())
        .workflow(REPORT, report)
        .schedule(Schedule::new("nightly", REPORT, &"sales".to_string(), spec))
        .open()
        .unwrap();
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    let nightly = || engine.schedules().get("nightly").unwrap().unwrap();

    // Read through the socket: the next fire on the application's clock.
    let list = json(&cli(bin, &db, &["schedule", "list", "--json"]).await);
    assert_eq!(list[0]["name"], "nightly");
    assert_eq!(list[0]["next_fire_at"], "2100-01-01T09:00:00.000Z");

    // Pause and resume from the CLI change the engine's schedule; both run on its clock.
    let paused = json(&cli(bin, &db, &["schedule", "pause", "nightly", "--json"]).await);
    assert_eq!((paused["paused"].as_bool(), paused["next_fire_at"].is_null()), (Some(true), true));
    assert!(nightly().paused);
    clock.set_ms(START_MS + 10 * HOUR_MS);
    let resumed = json(&cli(bin, &db, &["schedule", "resume", "nightly", "--json"]).await);
    assert_eq!(resumed["next_fire_at"], "2100-01-02T09:00:00.000Z", "the 09:00 passed while paused is not fired");
    assert_eq!(nightly().next_fire_ms, Some(START_MS + 33 * HOUR_MS));

    // A trigger from the CLI starts an execution this engine's workers run.
    let triggered = json(&cli(bin, &db, &["schedule", "trigger", "nightly", "--json"]).await);
    let id = ExecutionId(triggered["execution"].as_u64().unwrap());
    assert_eq!(engine.wait_for(REPORT, id, WAIT).await.unwrap(), "report on sales");
    let shown = json(&cli(bin, &db, &["show", &id.to_string(), "--json"]).await);
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["schedule"]["name"], "nightly");
    assert_eq!(shown["schedule"]["triggered"], true);
    assert_eq!(shown["schedule"]["fire_time_at"], "2100-01-01T10:00:00.000Z", "the engine's clock");

    // The schedule's own next fire, reached on the application's clock, shows beside it.
    clock.set_ms(START_MS + 33 * HOUR_MS);
    stent::testing::wait_until(Duration::from_secs(20), "the 09:00 fire ran", || {
        nightly().fires == 2
            && nightly().last_execution.is_some_and(|e| engine.state_of(e).unwrap().state == ExecutionState::Completed)
    })
    .await;
    let shown = json(&cli(bin, &db, &["schedule", "show", "nightly", "--json"]).await);
    let fires: Vec<(&str, &str)> = shown["recent_fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["fire_time_at"].as_str().unwrap(), f["state"].as_str().unwrap()))
        .collect();
    assert_eq!(fires, [("2100-01-02T09:00:00.000Z", "completed"), ("2100-01-01T10:00:00.000Z", "completed")]);
    let fired = shown["last_execution"].to_string();
    let human = String::from_utf8_lossy(&cli(bin, &db, &["show", &fired]).await.stdout).into_owned();
    assert!(human.contains("schedule   nightly (fire of 2100-01-02T09:00:00.000Z)"), "{human}");

    // An unknown name: exit 1 with the engine's message; the socket answers `not_found`.
    let out = cli(bin, &db, &["schedule", "pause", "weekly"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim_end(), r#"error: schedule "weekly" does not exist"#);
    let mut client = stent::control_socket::Client::connect(&db).await.unwrap();
    let request = stent::control_socket::Request::PauseSchedule { name: "weekly".into() };
    match client.call::<ScheduleInfo>(request).await {
        Err(stent::Error::Remote { kind, .. }) => assert_eq!(kind, "not_found"),
        other => panic!("expected not_found, got {other:?}"),
    }
    drop(client);

    // Delete from the CLI removes it from the engine; its executions stay.
    let deleted = json(&cli(bin, &db, &["schedule", "delete", "nightly", "--yes", "--json"]).await);
    assert_eq!(deleted["deleted"], true);
    assert!(engine.schedules().get("nightly").unwrap().is_none());
    assert_eq!(json(&cli(bin, &db, &["schedule", "list", "--json"]).await), serde_json::json!([]));
    assert_eq!(engine.state_of(id).unwrap().schedule.unwrap().schedule, "nightly");

    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

/// The uid this process runs as (the owner of `/proc/self`).
#[cfg(target_os = "linux")]
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn another_user_is_refused_by_the_socket_mode_and_by_the_engine() {
    use std::os::unix::process::CommandExt;
    if my_uid() != 0 {
        eprintln!("skipped: running the CLI as another uid needs root (this test runs as uid {})", my_uid());
        return;
    }
    // Everything the other user needs to reach is opened up, except what is under test: a
    // directory it may enter, a copy of the binary it may run, and the database file itself.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin: PathBuf = dir.path().join("stent");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.path().join("app.stent");
    let (engine, pool) = application(&db).await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o666)).unwrap();
    let waiting = engine.dispatch(AWAIT_GO, &1).await.unwrap();
    until_waiting(&engine, waiting).await;

    let as_nobody = |args: &[&str]| {
        let mut command = std::process::Command::new(&bin);
        command.uid(65534).gid(65534).arg("--db").arg(&db).args(args);
        command.output().unwrap()
    };
    let signal = ["signal", &waiting.to_string(), "go", r#""from another user""#];

    // The socket is 0600: the kernel refuses the connection.
    let out = tokio::task::block_in_place(|| as_nobody(&signal));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // Widened by mistake, the socket still serves no one but the owner: the engine checks the
    // peer's uid before it reads a request.
    let socket = stent::control_socket::socket_path(&db);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = tokio::task::block_in_place(|| as_nobody(&signal));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused: uid 65534"), "{stderr}");

    // Neither signal arrived: the one the owner sends now is the one the workflow returns.
    engine.send_signal(waiting, "go", &"from the owner").await.unwrap();
    assert_eq!(engine.wait_for(AWAIT_GO, waiting, WAIT).await.unwrap(), "from the owner");
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}
