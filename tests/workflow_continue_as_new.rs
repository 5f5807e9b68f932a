//! Continue-as-new: `ctx.continue_as_new(input)` ends the current run and starts the next
//! run of the same execution (same id, run + 1, empty journal) with the signals not yet taken
//! carried over; the previous runs' journals are kept for inspection (the latest
//! `runs_kept`), so a workflow that loops forever keeps a bounded journal and a bounded file.
//! A journal that reaches its step cap fails the workflow with an error that suggests it.
//!
//! Method: `MemoryDisk` + `ManualClock`; the file's size is the in-memory backend's length.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::StorageBackend;
use stent::testing::{crash, wait_until, ManualClock, MemoryDisk};
use stent::{Activity, ActivityError, Ctx, ExecutionState, FunctionOptions, TaskId, Workflow};
use support::*;

const COUNT: Workflow<u32, u32> = Workflow::new("count");
const STEP: Activity<u32, u32> = Activity::new("step");

/// Each run calls `step` once with its round, and continues with the next round until `last`.
async fn count(ctx: Ctx, round: u32) -> stent::Result<u32> {
    let last: u32 = 5;
    ctx.call(STEP, &round).await?;
    if round < last {
        return ctx.continue_as_new(&(round + 1));
    }
    Ok(round)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_starts_with_an_empty_journal_and_the_past_runs_are_kept_for_inspection() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let rounds = Arc::new(AtomicU64::new(0));
    let seen = rounds.clone();
    let engine = builder(&disk, &clock)
        .workflow(COUNT, count)
        .activity(STEP, move |round: u32| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ActivityError>(round) }
        })
        .open()
        .unwrap();
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(COUNT, &0).await.unwrap();
    assert_eq!(finished(&engine, COUNT, id).await.unwrap(), 5);
    assert_eq!(rounds.load(Ordering::SeqCst), 6, "one step per run, none run twice");

    let info = engine.state_of(id).unwrap();
    assert_eq!((info.state, info.run), (ExecutionState::Completed, 6));
    assert_eq!(info.input, serde_json::json!(5), "the current run's input");
    assert_eq!(engine.steps(id).unwrap().len(), 1, "the last run's journal only");
    let runs = engine.runs(id).unwrap();
    assert_eq!(runs.iter().map(|r| r.run).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    for r in &runs {
        assert_eq!(r.input, serde_json::json!(r.run - 1));
        assert_eq!((r.steps, r.version), (1, 1));
    }
    let first = engine.run_steps(id, 1).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].kind.as_str(), first[0].output.clone()), ("call \"step\"", Some(serde_json::json!(0))));
    assert_eq!(engine.stats().runs_continued, 5);
    pool.drain().await.unwrap();
    assert_consistent(&engine);

    // Retention removes the past runs with the execution.
    clock.advance(std::time::Duration::from_secs(7_200));
    assert_eq!(engine.cleanup("1h").await.unwrap().executions, 1);
    engine.close().await.unwrap();
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db = redb::Database::builder().create_with_backend(disk.clone()).unwrap();
    let read = db.begin_read().unwrap();
    assert_eq!(read.open_table(stent::storage::tables::RUNS).unwrap().len().unwrap(), 0);
    assert_eq!(read.open_table(stent::storage::tables::RUN_STEPS).unwrap().len().unwrap(), 0);
}

const TICKS: Workflow<u32, u32> = Workflow::new("ticks");

/// Adds one "tick" signal per run; a tick of 0 ends the execution with the total.
async fn ticks(ctx: Ctx, total: u32) -> stent::Result<u32> {
    let tick: u32 = ctx.wait_for_signal("tick").await?;
    if tick == 0 {
        return Ok(total);
    }
    ctx.continue_as_new(&(total + tick))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_left_in_the_mailbox_are_taken_by_the_next_runs() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock).workflow(TICKS, ticks).open().unwrap();
    // Buffered before any run takes one: each run takes the oldest.
    let id = engine.dispatch(TICKS, &0).await.unwrap();
    for tick in [1u32, 2, 3, 0] {
        engine.send_signal(id, "tick", &tick).await.unwrap();
    }
    let pool = engine.serve(options("w")).unwrap();
    assert_eq!(finished(&engine, TICKS, id).await.unwrap(), 6);
    assert_eq!(engine.state_of(id).unwrap().run, 4);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

const FOREVER: Workflow<u32, u32> = Workflow::new("forever");

/// Loops until `ROUNDS` runs have passed: each run records a clock read (a local step,
/// committed with the run's end), then continues.
const ROUNDS: u32 = 10_000;

async fn forever(ctx: Ctx, round: u32) -> stent::Result<u32> {
    ctx.now().await?;
    if round < ROUNDS {
        return ctx.continue_as_new(&(round + 1));
    }
    Ok(round)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_looping_ten_thousand_times_keeps_a_bounded_file() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock).runs_kept(3).workflow(FOREVER, forever).open().unwrap();
    let id = engine.dispatch(FOREVER, &1).await.unwrap();
    let pool = engine.serve(options("w")).unwrap();
    wait_until(LIMIT * 6, "a thousand runs", || engine.state_of(id).unwrap().run >= 1_000).await;
    let early = disk.len().unwrap();
    assert_eq!(finished_within(&engine, FOREVER, id, LIMIT * 6).await.unwrap(), ROUNDS);
    let late = disk.len().unwrap();
    let info = engine.state_of(id).unwrap();
    assert_eq!(info.run, ROUNDS);
    assert_eq!(
        engine.runs(id).unwrap().iter().map(|r| r.run).collect::<Vec<_>>(),
        [ROUNDS - 3, ROUNDS - 2, ROUNDS - 1]
    );
    assert!(engine.run_steps(id, 1).unwrap().is_empty(), "runs older than the kept ones are gone");
    // Nine thousand more runs after the first thousand: the file did not grow with them.
    assert!(late <= early + early / 4, "file grew from {early} to {late} bytes over 9,000 runs");
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

const WIDE: Workflow<u32, u32> = Workflow::new("wide");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_fails_the_workflow_with_an_error_that_suggests_continue_as_new() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(WIDE, |ctx: Ctx, _: u32| async move {
            loop {
                ctx.now().await?;
            }
        })
        .open()
        .unwrap();
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(WIDE, &0).await.unwrap();
    let err = finished(&engine, WIDE, id).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("journal is full") && message.contains("continue_as_new"), "{message}");
    assert_eq!(engine.state_of(id).unwrap().state, ExecutionState::Failed);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

const PARALLEL: Workflow<u32, u32> = Workflow::new("parallel");
const HANG: Activity<u32, u32> = Activity::new("hang");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_a_run_left_running_are_cancelled_and_removed_with_it() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let engine = builder(&disk, &clock)
        .workflow(PARALLEL, |ctx: Ctx, round: u32| async move {
            if round == 0 {
                // Started, never awaited: it ends with the run.
                let _left = ctx.call(HANG, &round);
                let _: bool = ctx.wait_for_signal("next").await?;
                return ctx.continue_as_new(&1);
            }
            Ok(round)
        })
        .activity(HANG, |_: u32| std::future::pending::<Result<u32, ActivityError>>())
        .open()
        .unwrap();
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(PARALLEL, &0).await.unwrap();
    wait_until(LIMIT, "the activity runs", || engine.running_tasks().unwrap().iter().any(|t| t.function == "hang"))
        .await;
    engine.send_signal(id, "next", &true).await.unwrap();
    assert_eq!(finished(&engine, PARALLEL, id).await.unwrap(), 1);
    wait_until(LIMIT, "the activity's attempt is aborted", || engine.running_tasks().unwrap().is_empty()).await;
    assert_eq!(engine.runs(id).unwrap()[0].steps, 2);
    // Task 1 is the root; task 2 the activity's: removed with the run.
    assert!(matches!(engine.task(TaskId(2)), Err(stent::Error::UnknownTask { .. })), "{:?}", engine.task(TaskId(2)));
    assert_eq!(engine.task(TaskId(1)).unwrap().function, "parallel");
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

const LOOP: Workflow<u32, u32> = Workflow::new("loop");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_run_starts_under_the_code_that_continued_it() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::default());
    let body = |ctx: Ctx, round: u32| async move {
        let _: bool = ctx.wait_for_signal("next").await?;
        if round == 0 {
            return ctx.continue_as_new(&1);
        }
        Ok(round)
    };
    let engine = builder(&disk, &clock).workflow(LOOP, body).open().unwrap();
    let pool = engine.serve(options("v1")).unwrap();
    let id = engine.dispatch(LOOP, &0).await.unwrap();
    wait_until(LIMIT, "run 1 waits", || engine.steps(id).unwrap().len() == 1).await;
    drop(pool);
    crash(engine).await.unwrap();

    let engine = builder(&disk, &clock).workflow_with(LOOP, body, FunctionOptions::new().version(2)).open().unwrap();
    let pool = engine.serve(options("v2")).unwrap();
    engine.send_signal(id, "next", &true).await.unwrap();
    wait_until(LIMIT, "run 2 waits", || engine.state_of(id).unwrap().run == 2).await;
    let info = engine.state_of(id).unwrap();
    assert_eq!(info.version, 2, "the new run is the new code's");
    assert_eq!(engine.runs(id).unwrap()[0].version, 1, "the past run keeps its own");
    engine.send_signal(id, "next", &true).await.unwrap();
    assert_eq!(finished(&engine, LOOP, id).await.unwrap(), 1);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}
