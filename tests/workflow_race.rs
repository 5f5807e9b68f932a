//! Races: `ctx.race(a, b)` and `ctx.select(steps)` settle with the first step to settle; the
//! winner is journaled (a replay takes the same branch) and the losers are cancelled: an
//! activity's attempt aborted and its step failed `cancelled`, a timer dropped, a signal wait
//! ended (the signal stays for a later wait), a child execution cancelled.
//!
//! Method: `MemoryDisk` + `ManualClock`; activities that hang until the test ends them.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::testing::{crash, wait_until, ManualClock, MemoryDisk};
use stent::WorkerOptions;
use stent::{Activity, ActivityError, Ctx, Either, Engine, ExecutionFilter, ExecutionState, Page, Workflow};
use support::*;

const HANG: Activity<u32, u32> = Activity::new("hang");
const QUICK: Activity<u32, u32> = Activity::new("quick");
const NOTE: Activity<String, String> = Activity::new("note");

#[derive(Clone, Default)]
struct World {
    disk: MemoryDisk,
    clock: ManualClock,
    hangs: Arc<AtomicU64>,
    notes: Arc<AtomicU64>,
}

impl World {
    fn builder(&self) -> stent::EngineBuilder {
        let (hangs, notes) = (self.hangs.clone(), self.notes.clone());
        builder(&self.disk, &self.clock)
            .activity(HANG, move |_: u32| {
                hangs.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<u32, ActivityError>>()
            })
            .activity(QUICK, |n: u32| async move { Ok::<_, ActivityError>(n * 2) })
            .activity(NOTE, move |s: String| {
                notes.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, ActivityError>(s) }
            })
    }
}

fn running(engine: &Engine, function: &str) -> usize {
    engine.running_tasks().unwrap().iter().filter(|t| t.function == function).count()
}

const TIMEOUT: Workflow<u32, String> = Workflow::new("timeout");

/// An activity raced against a one-hour timer; the branch taken is noted by an activity.
async fn with_timeout(ctx: Ctx, n: u32) -> stent::Result<String> {
    let branch = match ctx.race(ctx.call(HANG, &n), ctx.sleep("1h")).await? {
        Either::Left(v) => format!("done {v}"),
        Either::Right(()) => "timed out".to_string(),
    };
    let branch = ctx.call(NOTE, &branch).await?;
    let _: bool = ctx.wait_for_signal("finish").await?;
    Ok(branch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_beats_an_activity_which_is_then_cancelled_and_a_replay_keeps_the_branch() {
    let world = World::default();
    let engine = world.builder().workflow(TIMEOUT, with_timeout).open().unwrap();
    // The clock jumps an hour: a lease shorter than that would expire in the same jump, and
    // re-run the hanging attempt if its expiry were applied before the race's record.
    let long_lease = WorkerOptions { lease_duration: Duration::from_secs(7_200), ..options("w") };
    let pool = engine.serve(long_lease).unwrap();
    let id = engine.dispatch(TIMEOUT, &1).await.unwrap();
    wait_until(LIMIT, "the activity runs", || running(&engine, "hang") == 1).await;
    world.clock.advance(Duration::from_secs(3_600));
    wait_until(LIMIT, "the branch is noted", || world.notes.load(Ordering::SeqCst) == 1).await;
    wait_until(LIMIT, "the losing attempt is aborted", || running(&engine, "hang") == 0).await;
    let steps = engine.steps(id).unwrap();
    assert_eq!(steps[0].kind, "call \"hang\"");
    assert_eq!(steps[0].outcome, "failed");
    assert_eq!(steps[0].error.as_ref().and_then(|e| e.code.as_deref()), Some("cancelled"));
    assert_eq!(steps[2].kind, "race of steps [0, 1]");
    drop(pool);
    crash(engine).await.unwrap();

    // Replayed from the journal (no parked future survives a crash): the same branch, the
    // loser not run again, the note not taken again.
    let engine = world.builder().workflow(TIMEOUT, with_timeout).open().unwrap();
    let pool = engine.serve(options("w2")).unwrap();
    engine.send_signal(id, "finish", &true).await.unwrap();
    assert_eq!(finished(&engine, TIMEOUT, id).await.unwrap(), "timed out");
    assert_eq!(world.hangs.load(Ordering::SeqCst), 1);
    assert_eq!(world.notes.load(Ordering::SeqCst), 1);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

const SIGNAL_OR_TIMER: Workflow<u32, String> = Workflow::new("signal_or_timer");

/// The timer listed first: a replay that re-decided instead of reading the journal would see
/// the cancelled timer as settled and take the other branch.
async fn signal_or_timer(ctx: Ctx, _: u32) -> stent::Result<String> {
    let branch = match ctx.race(ctx.sleep("1h"), ctx.wait_for_signal::<u32>("go")).await? {
        Either::Left(()) => "timer".to_string(),
        Either::Right(v) => format!("signal {v}"),
    };
    let _: bool = ctx.wait_for_signal("finish").await?;
    // A later wait for the same name as a lost wait gets the next signal.
    let late: u32 = ctx.wait_for_signal("late").await?;
    Ok(format!("{branch}, late {late}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_beats_a_timer_which_is_dropped() {
    let world = World::default();
    let engine = world.builder().workflow(SIGNAL_OR_TIMER, signal_or_timer).open().unwrap();
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(SIGNAL_OR_TIMER, &0).await.unwrap();
    wait_until(LIMIT, "it races", || engine.steps(id).unwrap().len() == 2).await;
    engine.send_signal(id, "go", &7).await.unwrap();
    wait_until(LIMIT, "it waits to finish", || engine.steps(id).unwrap().len() == 4).await;
    let steps = engine.steps(id).unwrap();
    assert_eq!(steps[0].error.as_ref().and_then(|e| e.code.as_deref()), Some("cancelled"), "{steps:?}");
    drop(pool);
    crash(engine).await.unwrap();

    let engine = world.builder().workflow(SIGNAL_OR_TIMER, signal_or_timer).open().unwrap();
    let pool = engine.serve(options("w2")).unwrap();
    // Past the timer's due time: nothing fires, it was dropped.
    world.clock.advance(Duration::from_secs(7_200));
    engine.send_signal(id, "finish", &true).await.unwrap();
    engine.send_signal(id, "late", &3).await.unwrap();
    assert_eq!(finished(&engine, SIGNAL_OR_TIMER, id).await.unwrap(), "signal 7, late 3");
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

const FIRST_OF_THREE: Workflow<u32, (u64, u32)> = Workflow::new("first_of_three");
const CHILD: Workflow<u32, u32> = Workflow::new("child");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_takes_the_first_of_many_and_cancels_the_rest_children_included() {
    let world = World::default();
    let engine = world
        .builder()
        .workflow(CHILD, |ctx: Ctx, n: u32| async move {
            let _: bool = ctx.wait_for_signal("never").await?;
            Ok(n)
        })
        .workflow(FIRST_OF_THREE, |ctx: Ctx, n: u32| async move {
            let child = ctx.child(CHILD, &n);
            let contenders = vec![ctx.call(HANG, &n), ctx.call(QUICK, &n), ctx.call(HANG, &(n + 1))];
            let (winner, value) = ctx.select(contenders).await?;
            // The child loses against a timer.
            let lost = ctx.race(child, ctx.sleep("1m")).await?;
            assert!(matches!(lost, Either::Right(())));
            Ok((winner as u64, value))
        })
        .open()
        .unwrap();
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(FIRST_OF_THREE, &5).await.unwrap();
    wait_until(LIMIT, "the second race waits on its timer", || engine.steps(id).unwrap().len() == 6).await;
    world.clock.advance(Duration::from_secs(60));
    assert_eq!(finished(&engine, FIRST_OF_THREE, id).await.unwrap(), (1, 10));
    wait_until(LIMIT, "the losing attempts are aborted", || running(&engine, "hang") == 0).await;
    let steps = engine.steps(id).unwrap();
    for lost in [1, 3] {
        assert_eq!(steps[lost].error.as_ref().and_then(|e| e.code.as_deref()), Some("cancelled"), "{steps:?}");
    }
    let all = engine.list_executions(&ExecutionFilter::default(), &Page::default()).unwrap();
    let child = all.iter().find(|e| e.parent == Some(id)).expect("the child execution");
    assert_eq!(child.state, ExecutionState::Cancelled);
    assert_eq!(steps[0].outcome, "failed", "the child's step ended with it: {steps:?}");
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

const CANCELS: Workflow<u32, String> = Workflow::new("cancels");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_cancels_one_step_or_one_child_it_started() {
    let world = World::default();
    let engine = world
        .builder()
        .workflow(CHILD, |ctx: Ctx, n: u32| async move {
            let _: bool = ctx.wait_for_signal("never").await?;
            Ok(n)
        })
        .workflow(CANCELS, |ctx: Ctx, n: u32| async move {
            let call = ctx.call(HANG, &n);
            let child = ctx.child(CHILD, &n);
            let _: bool = ctx.wait_for_signal("stop").await?;
            ctx.cancel(&call).await?;
            ctx.cancel(&child).await?;
            let code = |r: stent::Result<u32>| match r {
                Err(stent::Error::StepFailed { error, .. }) => error.code.unwrap_or_default(),
                other => format!("{other:?}"),
            };
            Ok(format!("{} {}", code(call.await), code(child.await)))
        })
        .open()
        .unwrap();
    let pool = engine.serve(options("w")).unwrap();
    let id = engine.dispatch(CANCELS, &1).await.unwrap();
    wait_until(LIMIT, "the activity runs", || running(&engine, "hang") == 1).await;
    engine.send_signal(id, "stop", &true).await.unwrap();
    assert_eq!(finished(&engine, CANCELS, id).await.unwrap(), "cancelled cancelled");
    wait_until(LIMIT, "the cancelled attempt is aborted", || running(&engine, "hang") == 0).await;
    let all = engine.list_executions(&ExecutionFilter::default(), &Page::default()).unwrap();
    let child = all.iter().find(|e| e.parent == Some(id)).expect("the child execution");
    assert_eq!(child.state, ExecutionState::Cancelled);
    let kinds: Vec<String> = engine.steps(id).unwrap().into_iter().map(|s| s.kind).collect();
    assert_eq!(kinds[3..], ["cancel step 0".to_string(), "cancel step 1".to_string()]);
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}
