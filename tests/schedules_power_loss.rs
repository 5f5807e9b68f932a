//! Power loss at every sync point around schedule fires: whatever survives a power cut, the
//! file opens, `check()` finds nothing, every fire the crashed engine was seen to start is
//! still there with the same execution, and finishing the run on the recovered file gives
//! each nominal time of each schedule exactly one execution, completed: no fire doubled, none
//! lost.
//!
//! Method: `support::power_loss_disk::PowerLossDisk` (its fault model is at its top). Two
//! schedules on a `ManualClock`: `hourly` (overlap `allow`) of a workflow that completes at
//! once, and `half` (every 30 minutes, overlap `buffer_one`) of a workflow that calls an
//! activity, both catching up `all` so a fire the crash delayed is still due after it. The
//! driver moves the clock to each next fire for six hours, waiting until the engine is idle
//! each time. A reference run counts the sync points; then for every sync point from the end
//! of the file's creation to the last, and for the durable and the torn images, power is lost
//! there, a new engine opens on what survived at the clock's time, and the driver finishes.
//! `the_checks_notice_a_doubled_fire` shows the check fails on a second execution of a time.

mod support;

use std::collections::BTreeMap;

use stent::testing::ManualClock;
use stent::{Activity, ActivityError, CatchUp, Ctx, Engine, ExecutionState, Overlap, Schedule, ScheduleSpec, Workflow};
use support::power_loss_disk::{Image, PowerLossDisk};
use support::settle;

const TICK: Workflow<(), ()> = Workflow::new("tick");
const REPORT: Workflow<(), u32> = Workflow::new("report");
const STEP: Activity<(), u32> = Activity::new("step");

const START_MS: u64 = 1_780_000_000_000 / 3_600_000 * 3_600_000;
const HOURS: u64 = 6;
/// redb's creation of the file (see tests/power_loss.rs).
const CREATION_SYNCS: u64 = 2;

fn open(disk: &PowerLossDisk, clock: &ManualClock) -> stent::Result<Engine> {
    let hourly = Schedule::new("hourly", TICK, &(), ScheduleSpec::every("1h")?)
        .overlap(Overlap::Allow)
        .catch_up(CatchUp::All { max: 100 });
    let half = Schedule::new("half", REPORT, &(), ScheduleSpec::every("30m")?)
        .overlap(Overlap::BufferOne)
        .catch_up(CatchUp::All { max: 100 });
    Engine::builder()
        .backend(disk.clone())
        .clock(clock.clone())
        .seed(7)
        .workflow(TICK, |_ctx: Ctx, ()| async { Ok(()) })
        .workflow(REPORT, |ctx: Ctx, ()| async move { ctx.call(STEP, &()).await })
        .activity(STEP, |()| async { Ok::<_, ActivityError>(7) })
        .schedule(hourly)
        .schedule(half)
        .open()
}

/// Fires seen, by schedule: nominal time -> execution ids.
type Seen = BTreeMap<(String, u64), Vec<u64>>;

fn seen(engine: &Engine) -> stent::Result<Seen> {
    let mut out = Seen::new();
    for name in ["hourly", "half"] {
        for f in engine.schedules().fires(name, usize::MAX)? {
            out.entry((name.to_string(), f.fire_time_ms)).or_default().push(f.execution.0);
        }
    }
    Ok(out)
}

/// Moves the clock from fire to fire to the end, recording the fires seen whenever idle.
async fn drive(engine: &Engine, clock: &ManualClock, facts: &mut Seen) -> Result<(), String> {
    let end = START_MS + HOURS * 3_600_000;
    loop {
        settle(engine).await?;
        *facts = seen(engine).map_err(|e| e.to_string())?;
        let list = engine.schedules().list().map_err(|e| e.to_string())?;
        match list.iter().filter_map(|s| s.next_fire_ms).min() {
            Some(next) if next <= end => clock.set_ms(next),
            _ => return Ok(()),
        }
    }
}

/// What must hold at the end: each nominal time of each schedule once, completed.
fn final_problems(engine: &Engine) -> stent::Result<Vec<String>> {
    let mut problems = Vec::new();
    let fires = seen(engine)?;
    for (name, period) in [("hourly", 3_600_000), ("half", 1_800_000)] {
        let want: Vec<u64> = (1..=HOURS * 3_600_000 / period).map(|k| START_MS + k * period).collect();
        let got: Vec<u64> = fires.keys().filter(|(n, _)| n == name).map(|(_, t)| *t).collect();
        if got != want {
            problems.push(format!("{name}: fired at {got:?}, want {want:?}"));
        }
    }
    for ((name, t), ids) in &fires {
        if ids.len() != 1 {
            problems.push(format!("{name} at {t}: {} executions {ids:?}", ids.len()));
        }
        for &id in ids {
            let state = engine.state_of(stent::ExecutionId(id))?.state;
            if state != ExecutionState::Completed {
                problems.push(format!("{name} at {t}: execution {id} is {state}"));
            }
        }
    }
    Ok(problems)
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(test: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(test)
}

/// One run to the end with power lost at sync `point` (none: `None`); the problems found.
async fn case(point: Option<u64>, image: Image) -> anyhow::Result<(Vec<String>, u64)> {
    let (disk, clock) = (PowerLossDisk::new(), ManualClock::new(START_MS));
    if let Some(point) = point {
        disk.lose_power_at_sync(point, image, point);
    }
    let mut before = Seen::new();
    match open(&disk, &clock) {
        Ok(engine) => {
            let pool = engine.serve(support::options("w"))?;
            if let Err(stop) = drive(&engine, &clock, &mut before).await {
                anyhow::ensure!(disk.crashed(), "the run stopped without a power loss: {stop}");
            }
            drop(pool);
            engine.close().await?;
        }
        Err(e) => anyhow::ensure!(disk.crashed(), "open failed without a power loss: {e}"),
    }
    let syncs = disk.syncs();
    if point.is_none() {
        let engine = open(&PowerLossDisk::from_image(disk.live_image()), &clock)?;
        let problems = final_problems(&engine)?;
        engine.close().await?;
        return Ok((problems, syncs));
    }
    disk.lose_power_now(image, 0);
    let image = disk.crash_image().expect("power was lost");
    let engine = match open(&PowerLossDisk::from_image(image), &clock) {
        Ok(engine) => engine,
        Err(e) => return Ok((vec![format!("the recovered file does not open: {e}")], syncs)),
    };
    let mut problems: Vec<String> = engine.check()?.into_iter().map(|p| format!("check() at reopen: {p}")).collect();
    let recovered = seen(&engine)?;
    for (fire, ids) in &before {
        if recovered.get(fire) != Some(ids) {
            problems.push(format!("fire {fire:?} was seen as {ids:?}, after the crash {:?}", recovered.get(fire)));
        }
    }
    let pool = engine.serve(support::options("w"))?;
    let mut after = Seen::new();
    if let Err(stop) = drive(&engine, &clock, &mut after).await {
        problems.push(format!("finishing after the crash failed: {stop}"));
    }
    problems.extend(final_problems(&engine)?);
    problems.extend(engine.check()?.into_iter().map(|p| format!("check() at the end: {p}")));
    pool.drain().await?;
    engine.close().await?;
    Ok((problems, syncs))
}

fn sweep(image: Image) -> anyhow::Result<()> {
    block_on(async move {
        let (problems, syncs) = case(None, image).await?;
        assert!(problems.is_empty(), "the run without a crash is wrong: {problems:#?}");
        let mut failures = Vec::new();
        for point in CREATION_SYNCS + 1..=syncs {
            let (problems, _) = case(Some(point), image).await?;
            if !problems.is_empty() {
                failures
                    .push(format!("power lost at sync {point} of {syncs} ({image:?}):\n  {}", problems.join("\n  ")));
            }
        }
        eprintln!("schedules_power_loss {image:?}: sync points {}..={syncs}", CREATION_SYNCS + 1);
        assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
        Ok(())
    })
}

#[test]
fn power_loss_at_every_sync_keeping_only_the_durable_image() -> anyhow::Result<()> {
    sweep(Image::Durable)
}

#[test]
fn power_loss_at_every_sync_keeping_a_torn_subset() -> anyhow::Result<()> {
    sweep(Image::Torn)
}

#[test]
fn the_checks_notice_a_doubled_fire() -> anyhow::Result<()> {
    block_on(async {
        let (disk, clock) = (PowerLossDisk::new(), ManualClock::new(START_MS));
        let engine = open(&disk, &clock)?;
        let pool = engine.serve(support::options("w"))?;
        drive(&engine, &clock, &mut Seen::new()).await.map_err(anyhow::Error::msg)?;
        assert!(final_problems(&engine)?.is_empty());
        // A second execution for a time already fired (as a schedule that fired twice would
        // leave): the trigger's nominal time is now, the last hour's.
        engine.schedules().trigger("hourly").await?;
        settle(&engine).await.map_err(anyhow::Error::msg)?;
        let problems = final_problems(&engine)?;
        assert!(problems.iter().any(|p| p.contains("2 executions")), "{problems:#?}");
        pool.drain().await?;
        engine.close().await?;
        Ok(())
    })
}
