//! Workflow code changing under executions in flight: `ctx.patched` lets one body serve the
//! executions that passed the patch point under the old code (false: the old branch, their
//! step numbers unchanged) and those that reach it under the new code (true, journaled, so
//! their replays agree); `Engine::verify_replay` tells before a deploy which executions the
//! new code can take over, naming the first step that diverges, and changes nothing.
//!
//! Method: `MemoryDisk` + `ManualClock`; an upgrade is a crash of the engine running the old
//! code (`testing::crash`: attempts in flight are lost) and an engine with the new code on the
//! same bytes.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stent::testing::{crash, run_until_idle, wait_until, ManualClock, MemoryDisk};
use stent::{Activity, Ctx, Engine, EngineBuilder, ExecutionId, ReplayOutcome, Workflow};
use support::*;
use tokio::sync::Semaphore;

const ORDER: Workflow<u32, bool> = Workflow::new("order");
const HELPER: Workflow<u32, u32> = Workflow::new("helper");
const PREP: Activity<u32, u32> = Activity::new("prep");
const EXTRA: Activity<u32, u32> = Activity::new("extra");
const SLOW: Activity<u32, u32> = Activity::new("slow");
const FINISH: Activity<u32, u32> = Activity::new("finish");

/// The four kinds of wait an execution can be parked at when the code changes.
const TIMER: u32 = 0;
const SIGNAL: u32 = 1;
const CHILD: u32 = 2;
const ACTIVITY: u32 = 3;

async fn wait(ctx: &Ctx, kind: u32) -> stent::Result<()> {
    match kind {
        TIMER => ctx.sleep("1h").await,
        SIGNAL => ctx.wait_for_signal::<bool>("go").await.map(drop),
        CHILD => ctx.child(HELPER, &kind).await.map(drop),
        _ => ctx.call(SLOW, &kind).await.map(drop),
    }
}

async fn order_old(ctx: Ctx, kind: u32) -> stent::Result<bool> {
    ctx.call(PREP, &kind).await?;
    wait(&ctx, kind).await?;
    ctx.call(FINISH, &kind).await?;
    Ok(false)
}

/// The new code: an `extra` step behind a patch, between `prep` and the wait.
async fn order_new(ctx: Ctx, kind: u32) -> stent::Result<bool> {
    ctx.call(PREP, &kind).await?;
    let patched = ctx.patched("extra");
    if patched {
        ctx.call(EXTRA, &kind).await?;
    }
    wait(&ctx, kind).await?;
    ctx.call(FINISH, &kind).await?;
    Ok(patched)
}

/// The cleanup phase: only the patched branch is left.
async fn order_deprecated(ctx: Ctx, kind: u32) -> stent::Result<bool> {
    ctx.call(PREP, &kind).await?;
    ctx.deprecate_patch("extra");
    ctx.call(EXTRA, &kind).await?;
    wait(&ctx, kind).await?;
    ctx.call(FINISH, &kind).await?;
    Ok(true)
}

#[derive(Clone)]
struct World {
    disk: MemoryDisk,
    /// A real file instead of `disk` (a read-only open needs one).
    path: Option<std::path::PathBuf>,
    clock: ManualClock,
    /// `slow` waits for a permit.
    gate: Arc<Semaphore>,
    /// Runs of each activity, by name: prep, extra, slow, finish.
    runs: Arc<[AtomicU64; 4]>,
}

impl World {
    fn new() -> Self {
        World {
            path: None,
            disk: MemoryDisk::new(),
            clock: ManualClock::default(),
            gate: Arc::new(Semaphore::new(0)),
            runs: Arc::new(Default::default()),
        }
    }

    fn on_file(path: std::path::PathBuf) -> Self {
        World { path: Some(path), ..World::new() }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.path.as_ref().expect("a world on a file")).unwrap()
    }

    fn runs(&self, which: usize) -> u64 {
        self.runs[which].load(Ordering::SeqCst)
    }

    fn builder(&self) -> EngineBuilder {
        let counted = |which: usize| {
            let runs = self.runs.clone();
            move |n: u32| {
                runs[which].fetch_add(1, Ordering::SeqCst);
                async move { Ok(n) }
            }
        };
        let (gate, runs) = (self.gate.clone(), self.runs.clone());
        let base = match &self.path {
            Some(path) => Engine::builder().path(path).clock(self.clock.clone()).seed(7),
            None => builder(&self.disk, &self.clock),
        };
        base.activity(PREP, counted(0))
            .activity(EXTRA, counted(1))
            .activity(FINISH, counted(3))
            .activity(SLOW, move |n: u32| {
                let (gate, runs) = (gate.clone(), runs.clone());
                async move {
                    gate.acquire().await.expect("gate open").forget();
                    runs[2].fetch_add(1, Ordering::SeqCst);
                    Ok(n)
                }
            })
            .workflow(HELPER, |ctx: Ctx, n: u32| async move {
                let _: bool = ctx.wait_for_signal("helper-go").await?;
                Ok(n)
            })
    }

    fn open(&self, order: fn(Ctx, u32) -> OrderFuture) -> Engine {
        self.builder().workflow(ORDER, order).open().expect("open")
    }
}

type OrderFuture = std::pin::Pin<Box<dyn std::future::Future<Output = stent::Result<bool>> + Send>>;

fn old(ctx: Ctx, kind: u32) -> OrderFuture {
    Box::pin(order_old(ctx, kind))
}
fn new(ctx: Ctx, kind: u32) -> OrderFuture {
    Box::pin(order_new(ctx, kind))
}
fn deprecated(ctx: Ctx, kind: u32) -> OrderFuture {
    Box::pin(order_deprecated(ctx, kind))
}

/// The journal's steps, as `state_of` lists them ("call \"prep\"", ...).
fn kinds(engine: &Engine, id: ExecutionId) -> Vec<String> {
    engine.steps(id).unwrap().into_iter().map(|s| s.kind).collect()
}

/// Runs the old code until one execution of each kind waits at its wait (the `slow`
/// activity running), then crashes.
async fn old_executions(world: &World) -> Vec<ExecutionId> {
    let engine = world.open(old);
    let pool = engine.serve(options("old")).unwrap();
    let mut ids = Vec::new();
    for kind in [TIMER, SIGNAL, CHILD, ACTIVITY] {
        ids.push(engine.dispatch(ORDER, &kind).await.unwrap());
    }
    wait_until(LIMIT, "every execution waits at its wait", || {
        ids.iter().all(|&id| engine.steps(id).unwrap().len() == 2) && engine.running_tasks().unwrap().len() == 1
    })
    .await;
    drop(pool);
    crash(engine).await.unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_parked_at_every_kind_of_wait_keep_the_old_branch_after_an_upgrade() {
    let world = World::new();
    let old_ids = old_executions(&world).await;

    let engine = world.open(new);
    for check in engine.verify_replay().await.unwrap() {
        assert!(check.ok(), "{check:?}");
    }
    let pool = engine.serve(options("new")).unwrap();
    let fresh = engine.dispatch(ORDER, &SIGNAL).await.unwrap();
    wait_until(LIMIT, "the new execution reaches its wait", || engine.steps(fresh).unwrap().len() == 4).await;
    assert_eq!(kinds(&engine, fresh)[1..3], ["patch \"extra\"".to_string(), "call \"extra\"".to_string()]);

    // Release every wait: the activity in flight first (a clock moved past its lease while
    // it runs would end its attempt as expired, and the retry's backoff would wait for the
    // clock again), then the timer, the signals and the child.
    world.gate.add_permits(1);
    assert!(!finished(&engine, ORDER, old_ids[3]).await.unwrap(), "the activity's execution kept the old branch");
    world.clock.advance(Duration::from_secs(2 * 3600));
    engine.send_signal(old_ids[1], "go", &true).await.unwrap();
    engine.send_signal(fresh, "go", &true).await.unwrap();
    let child = engine.steps(old_ids[2]).unwrap()[1].child.expect("the child step names its execution");
    engine.send_signal(child, "helper-go", &true).await.unwrap();
    for &id in &old_ids {
        assert!(!finished(&engine, ORDER, id).await.unwrap(), "execution {id} took the patched branch");
        assert_eq!(kinds(&engine, id).len(), 3, "old step numbers unchanged: {:?}", kinds(&engine, id));
    }
    assert!(finished(&engine, ORDER, fresh).await.unwrap(), "the new execution took the patched branch");
    assert_eq!(world.runs(1), 1, "extra ran for the new execution only");
    assert_eq!(world.runs(0), 5, "prep ran once per execution: nothing redone");
    assert_eq!(world.runs(2), 1, "the slow activity lost in the crash ran once more, to completion");
    pool.drain().await.unwrap();
    assert_consistent(&engine);
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_check_names_the_first_diverging_step_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::on_file(dir.path().join("upgrade.stent"));
    let ids = old_executions(&world).await;
    let runs_before: Vec<u64> = (0..4).map(|i| world.runs(i)).collect();
    let bytes_before = world.bytes();

    // The patched code replays every old execution; so does the old code itself.
    for code in [old as fn(Ctx, u32) -> OrderFuture, new] {
        let engine = world.builder().workflow(ORDER, code).read_only(true).open().unwrap();
        let checks = engine.verify_replay().await.unwrap();
        assert_eq!(checks.len(), 5, "4 orders and the child: {checks:#?}");
        assert!(checks.iter().all(|c| c.ok()), "{checks:#?}");
        // Each order replayed prep and its wait.
        assert!(checks.iter().filter(|c| c.function == "order").all(|c| c.steps_replayed == 2), "{checks:#?}");
        engine.close().await.unwrap();
    }

    // The cleanup phase's code, deployed too early: every old execution diverges at step 1,
    // where it recorded its wait and the code now asks for `extra`.
    let engine = world.builder().workflow(ORDER, deprecated).read_only(true).open().unwrap();
    let checks = engine.verify_replay().await.unwrap();
    let orders: Vec<_> = checks.iter().filter(|c| c.function == "order").collect();
    assert_eq!(orders.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    for (check, recorded) in orders.iter().zip(["sleep", "wait for signal \"go\"", "child workflow", "call \"slow\""]) {
        match &check.outcome {
            ReplayOutcome::Diverged { step: 1, recorded: r, requested } => {
                assert!(r.starts_with(recorded), "{check:?}");
                assert_eq!(requested, "call \"extra\"");
            }
            other => panic!("execution {}: expected a divergence at step 1, got {other:?}", check.id),
        }
        assert_eq!(check.diverging_step(), Some(1));
    }
    engine.close().await.unwrap();

    // A body that ends after `prep`: the recorded wait is a step the code no longer asks for.
    let engine = world
        .builder()
        .workflow(ORDER, |ctx: Ctx, kind: u32| async move {
            ctx.call(PREP, &kind).await?;
            Ok(false)
        })
        .read_only(true)
        .open()
        .unwrap();
    let check = engine.verify_replay().await.unwrap().into_iter().find(|c| c.id == ids[0]).unwrap();
    assert_eq!(check.diverging_step(), Some(1), "{check:?}");
    assert!(matches!(&check.outcome, ReplayOutcome::Diverged { requested, .. } if requested == "the workflow's end"));
    engine.close().await.unwrap();

    // An engine without the workflow says so instead of guessing.
    let engine = world.builder().read_only(true).open().unwrap();
    let checks = engine.verify_replay().await.unwrap();
    assert!(checks.iter().filter(|c| c.function == "order").all(|c| c.outcome == ReplayOutcome::NotRegistered));
    engine.close().await.unwrap();

    let runs_after: Vec<u64> = (0..4).map(|i| world.runs(i)).collect();
    assert_eq!(runs_after, runs_before, "the checks ran no activity");
    assert!(world.bytes() == bytes_before, "the checks left the file byte for byte as it was");
    // Nothing was written: the old code still takes the executions over where they stood.
    let engine = world.open(old);
    world.gate.add_permits(1);
    let pool = engine.serve(options("after")).unwrap();
    engine.send_signal(ids[1], "go", &true).await.unwrap();
    assert!(!finished(&engine, ORDER, ids[1]).await.unwrap());
    assert_eq!(kinds(&engine, ids[1]).len(), 3);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_that_recorded_the_patch_replay_under_the_cleanup_code() {
    let world = World::new();
    let engine = world.open(new);
    let pool = engine.serve(options("patched")).unwrap();
    let id = engine.dispatch(ORDER, &SIGNAL).await.unwrap();
    wait_until(LIMIT, "it waits for the signal", || engine.steps(id).unwrap().len() == 4).await;
    drop(pool);
    crash(engine).await.unwrap();

    let engine = world.open(deprecated);
    let checks = engine.verify_replay().await.unwrap();
    assert!(checks.iter().all(|c| c.ok()), "{checks:#?}");
    let pool = engine.serve(options("cleanup")).unwrap();
    engine.send_signal(id, "go", &true).await.unwrap();
    assert!(finished(&engine, ORDER, id).await.unwrap());
    // And a new execution under the cleanup code records no marker.
    let fresh = engine.dispatch(ORDER, &TIMER).await.unwrap();
    // At its sleep (prep, extra, sleep) before the clock moves, so no attempt runs meanwhile.
    wait_until(LIMIT, "the new execution sleeps", || engine.steps(fresh).unwrap().len() == 3).await;
    world.clock.advance(Duration::from_secs(2 * 3600));
    run_until_idle(&engine, LIMIT).await.unwrap();
    world.clock.advance(Duration::from_secs(2 * 3600));
    assert!(finished(&engine, ORDER, fresh).await.unwrap());
    assert!(!kinds(&engine, fresh).iter().any(|k| k.starts_with("patch")), "{:?}", kinds(&engine, fresh));
    assert_eq!(world.runs(1), 2, "extra ran once for each execution");
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
}
