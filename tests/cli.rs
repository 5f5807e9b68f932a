//! The `stent` binary on real files: every command's output shape and exit code, reads that
//! leave the file byte-identical, `check` on a flipped byte, export/import, and changes made
//! through the CLI that an engine then runs, and the schedule commands on a file.

#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stent::{
    Activity, ActivityError, Ctx, Engine, ExecutionState, ManualClock, Schedule, ScheduleSpec, WorkerOptions, Workflow,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    address: String,
}

const SHIP: Activity<Order, String> = Activity::new("ship");

async fn ship(order: Order) -> Result<String, ActivityError> {
    if order.address.is_empty() {
        Err(ActivityError::permanent("no address"))
    } else {
        Ok(format!("order {} to {}", order.id, order.address))
    }
}

fn engine(db: &Path) -> Engine {
    Engine::builder().path(db).activity(SHIP, ship).open().unwrap()
}

/// A file with one completed execution (id 1) and one dead letter (execution 2).
async fn sample(dir: &Path) -> PathBuf {
    let db = dir.join("shop.stent");
    let engine = engine(&db);
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    let ok = engine.dispatch(SHIP, &Order { id: 1, address: "1 Main St".into() }).await.unwrap();
    engine.wait_for(SHIP, ok, Some(Duration::from_secs(10))).await.unwrap();
    let bad = engine.dispatch(SHIP, &Order { id: 2, address: String::new() }).await.unwrap();
    assert!(engine.wait_for(SHIP, bad, Some(Duration::from_secs(10))).await.is_err());
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
    db
}

fn stent(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stent")).arg("--db").arg(db).args(args).output().unwrap()
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn ids(list: &Value) -> Vec<u64> {
    list.as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn read_commands_print_the_documented_json_and_leave_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    let before = std::fs::read(&db).unwrap();

    let list = json(&stent(&db, &["list", "--json"]));
    assert_eq!(ids(&list), vec![2, 1], "newest first");
    for item in list.as_array().unwrap() {
        for field in ["id", "function", "state", "created_at"] {
            assert!(item.get(field).is_some(), "list item lacks {field}: {item}");
        }
    }
    assert_eq!(ids(&json(&stent(&db, &["list", "--json", "--state", "failed"]))), vec![2]);
    assert_eq!(ids(&json(&stent(&db, &["list", "--json", "--limit", "1"]))), vec![2]);
    assert_eq!(ids(&json(&stent(&db, &["list", "--json", "--before", "2"]))), vec![1]);

    let shown = json(&stent(&db, &["show", "1", "--json"]));
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["result"], "order 1 to 1 Main St");
    assert!(shown["steps"].is_array());
    let failed = json(&stent(&db, &["show", "2", "--json"]));
    assert_eq!(failed["error"]["message"], "no address");

    let stats = json(&stent(&db, &["stats", "--json"]));
    assert_eq!(stats["executions"]["completed"], 1);
    assert_eq!(stats["executions"]["failed"], 1);
    assert_eq!(stats["dead_letters"], 1);

    let dlq = json(&stent(&db, &["dlq", "list", "--json"]));
    let letter = &dlq.as_array().unwrap()[0];
    assert_eq!(letter["execution_id"], 2);
    assert_eq!(letter["function"], "ship");
    assert!(letter.get("task_id").is_some() && letter.get("error").is_some());
    let id = letter["id"].as_u64().unwrap().to_string();
    assert_eq!(json(&stent(&db, &["dlq", "show", &id, "--json"]))["input"]["id"], 2);

    let task = json(&stent(&db, &["tasks", "show", &letter["task_id"].to_string(), "--json"]));
    assert_eq!((task["execution_id"].as_u64(), task["state"].as_str()), (Some(2), Some("failed")));
    assert_eq!(task["input"]["address"], "");
    assert!(json(&stent(&db, &["tasks", "list", "--json"])).as_array().unwrap().is_empty());
    assert_eq!(stent(&db, &["tasks", "show", "999"]).status.code(), Some(1));

    // Human output works too.
    let human = stent(&db, &["list"]);
    assert!(human.status.success() && String::from_utf8_lossy(&human.stdout).contains("ship"));

    assert_eq!(std::fs::read(&db).unwrap(), before, "a read changed the file");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_are_0_ok_1_not_found_or_bad_input_2_usage() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    assert_eq!(stent(&db, &["show", "999"]).status.code(), Some(1));
    assert_eq!(stent(&db, &["dlq", "show", "999"]).status.code(), Some(1));
    assert_eq!(stent(&db, &["list", "--state", "sleeping"]).status.code(), Some(1));
    assert_eq!(stent(&db, &["signal", "1", "go", "{not json"]).status.code(), Some(1));
    assert_eq!(stent(&dir.path().join("missing.stent"), &["list"]).status.code(), Some(1));
    assert!(!dir.path().join("missing.stent").exists(), "a read created a file");
    assert_eq!(stent(&db, &["frobnicate"]).status.code(), Some(2));
    assert_eq!(stent(&db, &["show"]).status.code(), Some(2));
    let err = stent(&db, &["show", "999"]);
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_a_sound_file_and_fails_a_flipped_byte_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    assert_eq!(stent(&db, &["check"]).status.code(), Some(0));
    let mut bytes = std::fs::read(&db).unwrap();
    // Every copy of the payload (older page versions may hold it too, besides the live one).
    let copies: Vec<usize> = bytes.windows(9).enumerate().filter(|(_, w)| *w == b"1 Main St").map(|(i, _)| i).collect();
    assert!(!copies.is_empty(), "the payload is in the file");
    for at in copies {
        bytes[at] ^= 0x01;
    }
    std::fs::write(&db, &bytes).unwrap();
    let out = stent(&db, &["check"]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("damage"));
}

#[tokio::test(flavor = "multi_thread")]
async fn export_then_import_reproduces_every_record_and_a_damaged_export_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    let export = dir.path().join("backup.stentx");
    assert!(stent(&db, &["export", export.to_str().unwrap()]).status.success());
    let copy = dir.path().join("copy.stent");
    assert!(stent(&copy, &["import", export.to_str().unwrap()]).status.success());
    for args in [&["list", "--json"][..], &["dlq", "list", "--json"], &["show", "1", "--json"], &["stats", "--json"]] {
        assert_eq!(json(&stent(&copy, args)), json(&stent(&db, args)), "{args:?} differs after import");
    }
    assert_eq!(stent(&copy, &["check"]).status.code(), Some(0));
    // Importing twice is refused: the database is no longer empty.
    assert_eq!(stent(&copy, &["import", export.to_str().unwrap()]).status.code(), Some(1));
    // An export is never replaced.
    assert_eq!(stent(&db, &["export", export.to_str().unwrap()]).status.code(), Some(1));

    let mut bytes = std::fs::read(&export).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let damaged = dir.path().join("damaged.stentx");
    std::fs::write(&damaged, &bytes).unwrap();
    let fresh = dir.path().join("fresh.stent");
    let out = stent(&fresh, &["import", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("offset"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ids(&json(&stent(&fresh, &["list", "--json"]))), Vec::<u64>::new(), "nothing was imported");
    let truncated = dir.path().join("truncated.stentx");
    std::fs::write(&truncated, &std::fs::read(&export).unwrap()[..middle]).unwrap();
    let out = stent(&fresh, &["import", truncated.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_database_and_its_exports_are_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    let export = dir.path().join("backup.stentx");
    assert!(stent(&db, &["export", export.to_str().unwrap()]).status.success());
    let copy = dir.path().join("copy.stent");
    assert!(stent(&copy, &["import", export.to_str().unwrap()]).status.success());
    for file in [&db, &export, &copy] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_replayed_with_a_new_input_through_the_cli_then_completes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    let letter = json(&stent(&db, &["dlq", "list", "--json"]))[0]["id"].as_u64().unwrap().to_string();
    let out = stent(&db, &["dlq", "replay", &letter, "--input", r#"{"id":2,"address":"9 Elm St"}"#, "--json"]);
    assert_eq!(json(&out)["execution"], 2);
    assert!(json(&stent(&db, &["dlq", "list", "--json"])).as_array().unwrap().is_empty());

    let engine = engine(&db);
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    let result = engine.wait_for(SHIP, stent::ExecutionId(2), Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!(result, "order 2 to 9 Elm St");
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_discard_and_cleanup_change_the_file_and_a_dry_run_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    // A pending execution no worker takes, to cancel.
    let engine = engine(&db);
    let pending = engine.dispatch(SHIP, &Order { id: 3, address: "x".into() }).await.unwrap();
    engine.close().await.unwrap();
    let out = json(&stent(&db, &["cancel", &pending.to_string(), "--json", "--yes"]));
    assert_eq!(out["state"], ExecutionState::Cancelled.as_str());

    let before = std::fs::read(&db).unwrap();
    let preview = json(&stent(&db, &["cleanup", "--older-than", "0s", "--dry-run", "--json"]));
    assert_eq!(preview["executions"], 3);
    assert_eq!(std::fs::read(&db).unwrap(), before, "a dry run changed the file");

    let letter = json(&stent(&db, &["dlq", "list", "--json"]))[0]["id"].as_u64().unwrap().to_string();
    assert!(stent(&db, &["dlq", "discard", &letter, "--yes"]).status.success());
    assert_eq!(json(&stent(&db, &["stats", "--json"]))["dead_letters"], 0);

    let removed = json(&stent(&db, &["cleanup", "--older-than", "0s", "--executions", "--json", "--yes"]));
    assert_eq!(removed["executions"], 3);
    assert_eq!(ids(&json(&stent(&db, &["list", "--json"]))), Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_engine_without_its_control_socket_is_reported_in_use_with_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;
    let running = Engine::builder().path(&db).activity(SHIP, ship).control_socket(false).open().unwrap();
    let before = std::fs::read(&db).unwrap();
    for args in [&["list"][..], &["cancel", "1", "--yes"]] {
        let out = stent(&db, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("in use"), "{stderr}");
        assert!(stderr.contains("cannot be reached"), "{stderr}");
        #[cfg(target_os = "linux")]
        assert!(stderr.contains(&format!("pid {}", std::process::id())), "{stderr}");
    }
    assert_eq!(std::fs::read(&db).unwrap(), before, "a refused command changed the file");
    running.close().await.unwrap();
}

/// Holds the file's lock from another process, as a CLI read does, for `seconds` (or until
/// killed); returns once the lock is taken (`flock` runs the command only then).
#[cfg(target_os = "linux")]
fn hold_lock(db: &Path, seconds: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut holder = Command::new("flock")
        .args(["--exclusive", "--close"])
        .arg(db)
        .args(["sh", "-c", &format!("echo locked; exec sleep {seconds}")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `flock` runs");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "locked\n");
    holder
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn an_application_starting_during_a_cli_read_waits_for_it_and_another_engine_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path()).await;

    // A read that lets go within the wait (2 s by default): the lock is held when the open
    // starts, so an open that succeeds is one that waited.
    let mut short = tokio::task::block_in_place(|| hold_lock(&db, "0.3"));
    let engine = tokio::task::block_in_place(|| engine(&db));
    short.wait().unwrap();
    assert_eq!(engine.state_of(stent::ExecutionId(1)).unwrap().state, ExecutionState::Completed);
    engine.close().await.unwrap();

    // A holder that keeps the file: after the wait, the error names its pid.
    let mut long = tokio::task::block_in_place(|| hold_lock(&db, "30"));
    let refused = Engine::builder().path(&db).wait_for_file("200ms").open().unwrap_err();
    long.kill().unwrap();
    long.wait().unwrap();
    match refused {
        stent::Error::InUseBy { pid, .. } => assert_eq!(pid, long.id()),
        other => panic!("expected in use by the holder, got {other}"),
    }
}

const REPORT: Workflow<String, String> = Workflow::new("report");

async fn report(_ctx: Ctx, what: String) -> stent::Result<String> {
    Ok(format!("report on {what}"))
}

/// 2100-01-01T00:00:00Z, the engine's (manual) clock: far ahead of the real clock the CLI's
/// own opens run on, so no CLI open finds the schedule due and fires it.
const START_MS: u64 = 4_102_444_800_000;

/// A file with the schedule `nightly` (09:00 UTC daily, of `report` on "sales"), created at
/// `START_MS`; nothing fired yet.
async fn scheduled(dir: &Path) -> PathBuf {
    let db = dir.join("reports.stent");
    let spec = ScheduleSpec::cron("0 9 * * *", "UTC").unwrap();
    let engine = Engine::builder()
        .path(&db)
        .clock(ManualClock::new(START_MS))
        .workflow(REPORT, report)
        .schedule(Schedule::new("nightly", REPORT, &"sales".to_string(), spec))
        .open()
        .unwrap();
    engine.close().await.unwrap();
    db
}

fn text(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn ms_of(rfc3339: &Value) -> u64 {
    let t = humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn schedule_commands_list_pause_resume_trigger_and_delete_on_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = scheduled(dir.path()).await;
    let before = std::fs::read(&db).unwrap();

    // Reads: the schedule with its next fire time, and no fires yet; the file untouched.
    let list = json(&stent(&db, &["schedule", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let nightly = &list[0];
    assert_eq!(nightly["name"], "nightly");
    assert_eq!(nightly["function"], "report");
    assert_eq!(nightly["input"], "sales");
    assert_eq!(nightly["spec"], serde_json::json!({"kind": "cron", "expr": "0 9 * * *", "tz": "UTC"}));
    assert_eq!((nightly["catch_up"].as_str(), nightly["overlap"].as_str()), (Some("one"), Some("skip")));
    assert_eq!(nightly["paused"], false);
    assert_eq!(nightly["next_fire_at"], "2100-01-01T09:00:00.000Z");
    assert_eq!((nightly["last_fire_at"].is_null(), nightly["fires"].as_u64()), (true, Some(0)));
    assert_eq!(nightly["created_at"], "2100-01-01T00:00:00.000Z");
    let shown = json(&stent(&db, &["schedule", "show", "nightly", "--json"]));
    assert_eq!(shown["next_fire_at"], nightly["next_fire_at"]);
    assert_eq!(shown["recent_fires"], serde_json::json!([]));
    let table = text(&stent(&db, &["schedule", "list"]));
    assert!(table.contains("NEXT FIRE") && table.contains("nightly"), "{table}");
    assert!(table.contains("2100-01-01T09:00:00.000Z") && table.contains("active"), "{table}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "a schedule read changed the file");

    // Pause: no next fire, in the command's answer and in the listing.
    let paused = json(&stent(&db, &["schedule", "pause", "nightly", "--json"]));
    assert_eq!((paused["paused"].as_bool(), paused["next_fire_at"].is_null()), (Some(true), true), "{paused}");
    let listed = &json(&stent(&db, &["schedule", "list", "--json"]))[0];
    assert_eq!((listed["paused"].as_bool(), listed["next_fire_at"].is_null()), (Some(true), true));
    let human = text(&stent(&db, &["schedule", "show", "nightly"]));
    assert!(human.contains("state      paused") && human.contains("next fire  none"), "{human}");

    // Resume: the next 09:00 after the schedule's cursor or now, whichever is later (the CLI's
    // own engine runs on the real clock, behind the cursor the application's clock set).
    let resumed = json(&stent(&db, &["schedule", "resume", "nightly", "--json"]));
    assert_eq!(
        (resumed["paused"].as_bool(), resumed["next_fire_at"].as_str()),
        (Some(false), Some("2100-01-01T09:00:00.000Z"))
    );
    let asked = now_ms();

    // Trigger: an execution, which `show` and `list` report with its schedule.
    let triggered = json(&stent(&db, &["schedule", "trigger", "nightly", "--json"]));
    assert_eq!(triggered["started"], true, "{triggered}");
    let id = triggered["execution"].as_u64().unwrap();
    let execution = json(&stent(&db, &["show", &id.to_string(), "--json"]));
    assert_eq!((execution["function"].as_str(), execution["state"].as_str()), (Some("report"), Some("pending")));
    assert_eq!(execution["input"], "sales");
    assert_eq!(execution["schedule"]["name"], "nightly");
    assert_eq!(execution["schedule"]["triggered"], true);
    assert!(ms_of(&execution["schedule"]["fire_time_at"]) >= asked);
    let human = text(&stent(&db, &["show", &id.to_string()]));
    assert!(human.contains("schedule   nightly (triggered at "), "{human}");
    assert_eq!(json(&stent(&db, &["list", "--json"]))[0]["schedule"]["name"], "nightly");
    let table = text(&stent(&db, &["list"]));
    assert!(table.lines().next().unwrap().ends_with("SCHEDULE"), "{table}");

    // Again while that one is pending: the overlap policy (skip) starts none, and says why.
    let skipped = json(&stent(&db, &["schedule", "trigger", "nightly", "--json"]));
    assert_eq!((skipped["started"].as_bool(), skipped["execution"].is_null()), (Some(false), true), "{skipped}");
    assert_eq!(skipped["running"], id);
    let human = text(&stent(&db, &["schedule", "trigger", "nightly"]));
    assert!(human.contains(&format!("no execution started: execution {id} is still running")), "{human}");
    let shown = json(&stent(&db, &["schedule", "show", "nightly", "--json"]));
    assert_eq!((shown["fires"].as_u64(), shown["skipped"].as_u64()), (Some(1), Some(2)));
    assert_eq!(shown["last_execution"], id);
    let fires = shown["recent_fires"].as_array().unwrap();
    assert_eq!(fires.len(), 1, "{shown}");
    assert_eq!((fires[0]["execution"].as_u64(), fires[0]["state"].as_str()), (Some(id), Some("pending")));
    assert_eq!(fires[0]["fire_time_at"], execution["schedule"]["fire_time_at"]);
    let human = text(&stent(&db, &["schedule", "show", "nightly"]));
    assert!(human.contains("fires      1 started, 2 skipped"), "{human}");
    assert!(human.contains(&format!("execution {id} pending")), "{human}");

    // Delete: gone from the listing; the execution it started is kept, with its origin.
    let deleted = json(&stent(&db, &["schedule", "delete", "nightly", "--yes", "--json"]));
    assert_eq!(deleted, serde_json::json!({"schedule": "nightly", "deleted": true}));
    assert_eq!(json(&stent(&db, &["schedule", "list", "--json"])), serde_json::json!([]));
    assert_eq!(stent(&db, &["schedule", "show", "nightly"]).status.code(), Some(1));
    assert_eq!(json(&stent(&db, &["show", &id.to_string(), "--json"]))["schedule"]["name"], "nightly");

    // The application runs the execution the CLI's trigger started.
    let engine = Engine::builder().path(&db).clock(ManualClock::new(START_MS)).workflow(REPORT, report).open().unwrap();
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    let result = engine.wait_for(REPORT, stent::ExecutionId(id), Some(Duration::from_secs(10))).await.unwrap();
    assert_eq!(result, "report on sales");
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_schedule_exits_1_with_one_clear_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = scheduled(dir.path()).await;
    let before = json(&stent(&db, &["schedule", "list", "--json"]));
    for command in ["show", "pause", "resume", "trigger", "delete"] {
        let out = stent(&db, &["schedule", command, "weekly", "--yes"]);
        assert_eq!(out.status.code(), Some(1), "schedule {command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end(), r#"error: schedule "weekly" does not exist"#, "schedule {command}");
    }
    assert_eq!(json(&stent(&db, &["schedule", "list", "--json"])), before);
    assert_eq!(json(&stent(&db, &["list", "--json"])), serde_json::json!([]), "an execution was started");
    assert_eq!(stent(&db, &["schedule"]).status.code(), Some(2));
    assert_eq!(stent(&db, &["schedule", "show"]).status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_shows_the_schedules_and_the_concurrency_keys_in_use() {
    const SYNC: Workflow<u32, u32> = Workflow::new("sync");
    let dir = tempfile::tempdir().unwrap();
    let db = scheduled(dir.path()).await;
    let engine = Engine::builder()
        .path(&db)
        .clock(ManualClock::new(START_MS))
        .workflow(REPORT, report)
        .workflow_with(
            SYNC,
            |ctx: Ctx, n: u32| async move { Ok(n + ctx.wait_for_signal::<u32>("go").await?) },
            stent::FunctionOptions::new().max_concurrent_per_key(1),
        )
        .open()
        .unwrap();
    let pool = engine.serve(stent::WorkerOptions::default()).unwrap();
    let id = engine.dispatch(SYNC, &1).concurrency_key("customer-7").await.unwrap();
    let waiting = || engine.steps(id).unwrap().iter().any(|s| s.outcome == "waiting");
    stent::testing::wait_until(Duration::from_secs(20), "the workflow waits", waiting).await;
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
    let stats = json(&stent(&db, &["stats", "--json"]));
    assert_eq!(stats["concurrency_keys"], serde_json::json!([{"function": "sync", "key": "customer-7", "running": 1}]));
    assert_eq!(stats["schedules"]["count"], 1);
    assert_eq!(stats["schedules"]["paused"], 0);
    assert_eq!(ms_of(&stats["schedules"]["next_fire_at"]), START_MS + 9 * 3_600_000);
    let human = text(&stent(&db, &["stats"]));
    assert!(human.contains("key sync/customer-7") && human.contains("1 running"), "{human}");
}
