//! Schedules as a user sees them: fire times in a real time zone across both daylight-saving
//! changes (a local time the spring change skips, one the autumn change repeats), downtime
//! caught up by each policy, each overlap policy, restarts that neither repeat nor lose a
//! fire, pause, resume, trigger and delete, jitter, and definitions refused whole.
//!
//! Time is a `ManualClock`: the driver moves it to each next fire and waits until the engine
//! is idle, as `examples/schedules.rs` does. Nothing sleeps for timing.

mod support;

use jiff::Timestamp;
use stent::testing::{run_until_idle, ManualClock, MemoryDisk};
use stent::{CatchUp, Ctx, Engine, Error, ExecutionState, Overlap, Schedule, ScheduleSpec, Workflow};
use support::LIMIT;

const QUICK: Workflow<(), ()> = Workflow::new("quick");
/// Runs until signalled `done`: an execution that is still running when the next fire comes.
const SLOW: Workflow<(), ()> = Workflow::new("slow");

fn ms(rfc3339: &str) -> u64 {
    rfc3339.parse::<Timestamp>().expect("RFC 3339").as_millisecond() as u64
}

fn utc(ms: u64) -> String {
    Timestamp::from_millisecond(ms as i64).expect("in range").to_string()
}

fn open(disk: &MemoryDisk, clock: &ManualClock, schedules: Vec<Schedule>) -> Engine {
    let mut builder = support::builder(disk, clock).workflow(QUICK, |_ctx: Ctx, ()| async { Ok(()) }).workflow(
        SLOW,
        |ctx: Ctx, ()| async move {
            let () = ctx.wait_for_signal("done").await?;
            Ok(())
        },
    );
    for s in schedules {
        builder = builder.schedule(s);
    }
    builder.open().expect("open")
}

fn cron(expr: &str, tz: &str) -> ScheduleSpec {
    ScheduleSpec::cron(expr, tz).expect("a valid spec")
}

/// Moves the clock to each next fire of any schedule up to `until` (included), running
/// everything due, then to `until`. (`name` must exist.)
async fn run_to(engine: &Engine, clock: &ManualClock, name: &str, until: u64) {
    assert!(engine.schedules().get(name).expect("get").is_some(), "{name} exists");
    loop {
        run_until_idle(engine, LIMIT).await.expect("idle");
        let next = engine.schedules().list().expect("list").iter().filter_map(|s| s.next_fire_ms).min();
        match next {
            Some(at) if at <= until => clock.set_ms(at),
            _ => break,
        }
    }
    clock.set_ms(until);
    run_until_idle(engine, LIMIT).await.expect("idle");
}

/// The nominal times of the executions `name` started, in UTC.
fn fired(engine: &Engine, name: &str) -> Vec<String> {
    engine.schedules().fires(name, usize::MAX).expect("fires").iter().map(|f| utc(f.fire_time_ms)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekday_morning_stays_at_nine_local_across_both_changes() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-03-23T00:00:00Z")));
    let spec = cron("0 9 * * MON-FRI", "Europe/Berlin");
    let engine = open(&disk, &clock, vec![Schedule::new("standup", QUICK, &(), spec)]);
    let _pool = engine.serve(support::options("w")).unwrap();
    run_to(&engine, &clock, "standup", ms("2026-04-06T00:00:00Z")).await;
    let spring = fired(&engine, "standup");
    // Summer time starts on Sunday 29 March: 09:00 is 08:00Z before, 07:00Z after.
    assert_eq!(
        spring,
        [
            "2026-03-23T08:00:00Z",
            "2026-03-24T08:00:00Z",
            "2026-03-25T08:00:00Z",
            "2026-03-26T08:00:00Z",
            "2026-03-27T08:00:00Z",
            "2026-03-30T07:00:00Z",
            "2026-03-31T07:00:00Z",
            "2026-04-01T07:00:00Z",
            "2026-04-02T07:00:00Z",
            "2026-04-03T07:00:00Z",
        ]
    );
    // And back on Sunday 25 October.
    clock.set_ms(ms("2026-10-21T00:00:00Z"));
    engine.schedules().pause("standup").await.unwrap();
    engine.schedules().resume("standup").await.unwrap();
    run_to(&engine, &clock, "standup", ms("2026-10-28T00:00:00Z")).await;
    let autumn: Vec<_> = fired(&engine, "standup").split_off(spring.len());
    assert_eq!(
        autumn,
        [
            "2026-10-21T07:00:00Z",
            "2026-10-22T07:00:00Z",
            "2026-10-23T07:00:00Z",
            "2026-10-26T08:00:00Z",
            "2026-10-27T08:00:00Z",
        ]
    );
    for f in engine.schedules().fires("standup", usize::MAX).unwrap() {
        assert_eq!(support::state(&engine, f.execution), ExecutionState::Completed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_local_time_fires_after_the_gap_and_a_repeated_one_fires_once() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-03-27T12:00:00Z")));
    // 02:30 does not exist in Berlin on 29 March (02:00 -> 03:00) and exists twice on 25
    // October (03:00 -> 02:00). A stepped schedule inside the repeated hour fires in both.
    let engine = open(
        &disk,
        &clock,
        vec![
            Schedule::new("fixed", QUICK, &(), cron("30 2 * * *", "Europe/Berlin")),
            Schedule::new("stepped", QUICK, &(), cron("*/30 2 * * *", "Europe/Berlin")),
        ],
    );
    let _pool = engine.serve(support::options("w")).unwrap();
    run_to(&engine, &clock, "fixed", ms("2026-03-30T12:00:00Z")).await;
    assert_eq!(
        fired(&engine, "fixed"),
        [
            "2026-03-28T01:30:00Z",
            // 03:00 local, the first time after the gap, that day.
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
        ]
    );
    engine.schedules().delete("fixed").await.unwrap();
    engine.schedules().delete("stepped").await.unwrap();
    clock.set_ms(ms("2026-10-24T12:00:00Z"));
    let fixed = Schedule::new("fixed", QUICK, &(), cron("30 2 * * *", "Europe/Berlin"));
    let stepped = Schedule::new("stepped", QUICK, &(), cron("*/30 2 * * *", "Europe/Berlin"));
    engine.schedules().upsert(fixed).await.unwrap();
    engine.schedules().upsert(stepped).await.unwrap();
    run_to(&engine, &clock, "fixed", ms("2026-10-26T12:00:00Z")).await;
    // The executions of the deleted schedules keep their place under its name.
    let autumn =
        |name: &str| -> Vec<String> { fired(&engine, name).into_iter().filter(|t| t.as_str() > "2026-10").collect() };
    // The first 02:30 (summer time, 00:30Z) only; the next day in winter time.
    assert_eq!(autumn("fixed"), ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
    // 02:00 and 02:30 in each pass of the repeated hour, then once the next day.
    assert_eq!(
        autumn("stepped"),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-26T01:00:00Z",
            "2026-10-26T01:30:00Z",
        ]
    );
}

/// Fires of a daily 09:00 UTC schedule with the engine closed from Tuesday 12:00 to Saturday
/// 12:00 (Wednesday to Saturday's fires missed), caught up by `policy`, then run to Monday.
async fn downtime(policy: CatchUp) -> Vec<String> {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-06-01T00:00:00Z")));
    let daily = || Schedule::new("daily", QUICK, &(), cron("0 9 * * *", "UTC"));
    let engine = open(&disk, &clock, vec![daily()]);
    let pool = engine.serve(support::options("w")).unwrap();
    run_to(&engine, &clock, "daily", ms("2026-06-02T12:00:00Z")).await;
    drop(pool);
    engine.close().await.unwrap();
    let clock = ManualClock::new(ms("2026-06-06T12:00:00Z"));
    let engine = open(&disk, &clock, vec![daily().catch_up(policy)]);
    let _pool = engine.serve(support::options("w")).unwrap();
    run_to(&engine, &clock, "daily", ms("2026-06-08T12:00:00Z")).await;
    support::assert_consistent(&engine);
    fired(&engine, "daily")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downtime_is_caught_up_as_the_policy_says() {
    let before = ["2026-06-01T09:00:00Z", "2026-06-02T09:00:00Z"];
    let after = ["2026-06-07T09:00:00Z", "2026-06-08T09:00:00Z"];
    let with = |missed: &[&str]| -> Vec<String> {
        before.iter().chain(missed).chain(after.iter()).map(|s| s.to_string()).collect()
    };
    assert_eq!(downtime(CatchUp::Skip).await, with(&[]));
    assert_eq!(downtime(CatchUp::One).await, with(&["2026-06-06T09:00:00Z"]));
    let all = ["2026-06-03T09:00:00Z", "2026-06-04T09:00:00Z", "2026-06-05T09:00:00Z", "2026-06-06T09:00:00Z"];
    assert_eq!(downtime(CatchUp::All { max: 100 }).await, with(&all));
    // The bound keeps the latest.
    assert_eq!(downtime(CatchUp::All { max: 2 }).await, with(&all[2..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_reached_within_the_grace_is_on_time_even_under_skip() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-06-01T08:00:00Z")));
    let s = Schedule::new("daily", QUICK, &(), cron("0 9 * * *", "UTC")).catch_up(CatchUp::Skip);
    let engine = open(&disk, &clock, vec![s]);
    let _pool = engine.serve(support::options("w")).unwrap();
    // A busy machine reaches the fire 30 s late: it is not a missed fire.
    clock.set_ms(ms("2026-06-01T09:00:30Z"));
    run_until_idle(&engine, LIMIT).await.unwrap();
    assert_eq!(fired(&engine, "daily"), ["2026-06-01T09:00:00Z"]);
    // Two minutes late it is, and `skip` skips it.
    clock.set_ms(ms("2026-06-02T09:02:00Z"));
    run_until_idle(&engine, LIMIT).await.unwrap();
    assert_eq!(fired(&engine, "daily"), ["2026-06-01T09:00:00Z"]);
    let info = engine.schedules().get("daily").unwrap().unwrap();
    assert_eq!(info.next_fire_ms, Some(ms("2026-06-03T09:00:00Z")));
}

/// An hourly schedule of `SLOW` under `overlap`: fires at 01:00 and 02:00 and 03:00 while the
/// first execution still runs. Returns the engine, its clock and its pool.
async fn overlapping(overlap: Overlap) -> (Engine, ManualClock, stent::WorkerPool) {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-06-01T00:00:00Z")));
    let s = Schedule::new("hourly", SLOW, &(), ScheduleSpec::every("1h").unwrap()).overlap(overlap);
    let engine = open(&disk, &clock, vec![s]);
    let pool = engine.serve(support::options("w")).unwrap();
    run_to(&engine, &clock, "hourly", ms("2026-06-01T03:00:00Z")).await;
    (engine, clock, pool)
}

fn states(engine: &Engine) -> Vec<(String, ExecutionState)> {
    let fires = engine.schedules().fires("hourly", usize::MAX).unwrap();
    fires.iter().map(|f| (utc(f.fire_time_ms), support::state(engine, f.execution))).collect()
}

async fn finish_first(engine: &Engine) {
    let first = engine.schedules().fires("hourly", 1_000).unwrap()[0].execution;
    engine.send_signal(first, "done", &()).await.unwrap();
    support::until_state(engine, first, ExecutionState::Completed).await;
    run_until_idle(engine, LIMIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_starts_nothing_while_the_last_one_runs() {
    let (engine, clock, _pool) = overlapping(Overlap::Skip).await;
    assert_eq!(states(&engine), [("2026-06-01T01:00:00Z".into(), ExecutionState::Running)]);
    let info = engine.schedules().get("hourly").unwrap().unwrap();
    assert_eq!((info.fires, info.skipped), (1, 2));
    finish_first(&engine).await;
    run_to(&engine, &clock, "hourly", ms("2026-06-01T04:00:00Z")).await;
    assert_eq!(fired(&engine, "hourly"), ["2026-06-01T01:00:00Z", "2026-06-01T04:00:00Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_buffer_one_starts_the_newest_waiting_fire_when_the_last_one_ends() {
    let (engine, _clock, _pool) = overlapping(Overlap::BufferOne).await;
    let info = engine.schedules().get("hourly").unwrap().unwrap();
    // 02:00 was buffered, then replaced by 03:00.
    assert_eq!((info.fires, info.skipped, info.buffered_fire_ms), (1, 1, Some(ms("2026-06-01T03:00:00Z"))));
    finish_first(&engine).await;
    // Started in the transaction that ended the first one, clock unmoved.
    assert_eq!(
        states(&engine),
        [
            ("2026-06-01T01:00:00Z".into(), ExecutionState::Completed),
            ("2026-06-01T03:00:00Z".into(), ExecutionState::Running),
        ]
    );
    assert_eq!(engine.schedules().get("hourly").unwrap().unwrap().buffered_fire_ms, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_allow_runs_them_side_by_side() {
    let (engine, _clock, _pool) = overlapping(Overlap::Allow).await;
    let running = ExecutionState::Running;
    assert_eq!(
        states(&engine),
        [
            ("2026-06-01T01:00:00Z".into(), running),
            ("2026-06-01T02:00:00Z".into(), running),
            ("2026-06-01T03:00:00Z".into(), running),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_cancel_previous_cancels_the_running_one_first() {
    let (engine, _clock, _pool) = overlapping(Overlap::CancelPrevious).await;
    assert_eq!(
        states(&engine),
        [
            ("2026-06-01T01:00:00Z".into(), ExecutionState::Cancelled),
            ("2026-06-01T02:00:00Z".into(), ExecutionState::Cancelled),
            ("2026-06-01T03:00:00Z".into(), ExecutionState::Running),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_repeats_nor_loses_a_fire() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-06-01T00:00:00Z")));
    let every = || Schedule::new("quarter", QUICK, &(), ScheduleSpec::every("15m").unwrap());
    let engine = open(&disk, &clock, vec![every()]);
    let pool = engine.serve(support::options("w")).unwrap();
    run_to(&engine, &clock, "quarter", ms("2026-06-01T01:00:00Z")).await;
    let first = engine.schedules().fires("quarter", usize::MAX).unwrap();
    assert_eq!(first.len(), 4);
    drop(pool);
    engine.close().await.unwrap();
    // Reopened at the same time, declared again: nothing new.
    let engine = open(&disk, &clock, vec![every()]);
    let _pool = engine.serve(support::options("w")).unwrap();
    run_until_idle(&engine, LIMIT).await.unwrap();
    assert_eq!(engine.schedules().fires("quarter", usize::MAX).unwrap(), first);
    run_to(&engine, &clock, "quarter", ms("2026-06-01T01:30:00Z")).await;
    assert_eq!(fired(&engine, "quarter")[4..], ["2026-06-01T01:15:00Z", "2026-06-01T01:30:00Z"]);
    assert_eq!(engine.list_executions(&Default::default(), &Default::default()).unwrap().len(), 6);
    support::assert_consistent(&engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_trigger_and_delete() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-06-01T00:00:00Z")));
    let engine = open(&disk, &clock, vec![Schedule::new("hourly", QUICK, &(), ScheduleSpec::every("1h").unwrap())]);
    let _pool = engine.serve(support::options("w")).unwrap();
    let paused = engine.schedules().pause("hourly").await.unwrap();
    assert!(paused.paused);
    assert_eq!(paused.next_fire_ms, None);
    clock.set_ms(ms("2026-06-01T05:30:00Z"));
    run_until_idle(&engine, LIMIT).await.unwrap();
    assert!(fired(&engine, "hourly").is_empty(), "a paused schedule does not fire");
    // A trigger fires it now, paused or not, and the execution says where it came from.
    let id = engine.schedules().trigger("hourly").await.unwrap().expect("nothing runs, so it starts");
    support::until_state(&engine, id, ExecutionState::Completed).await;
    let by = engine.state_of(id).unwrap().schedule.expect("started by the schedule");
    assert_eq!((by.schedule.as_str(), by.fire_time_ms, by.triggered), ("hourly", ms("2026-06-01T05:30:00Z"), true));
    // Resumed, it goes on from now: the hours it was paused over are not fired.
    let resumed = engine.schedules().resume("hourly").await.unwrap();
    assert_eq!(resumed.next_fire_ms, Some(ms("2026-06-01T06:00:00Z")));
    run_to(&engine, &clock, "hourly", ms("2026-06-01T07:00:00Z")).await;
    assert_eq!(fired(&engine, "hourly"), ["2026-06-01T05:30:00Z", "2026-06-01T06:00:00Z", "2026-06-01T07:00:00Z"]);
    let last = engine.schedules().fires("hourly", 1).unwrap()[0].execution;
    let by = engine.state_of(last).unwrap().schedule.unwrap();
    assert_eq!((by.fire_time_ms, by.triggered), (ms("2026-06-01T07:00:00Z"), false));
    // Deleted, it is gone; its executions stay, and say which schedule started them.
    engine.schedules().delete("hourly").await.unwrap();
    assert!(engine.schedules().get("hourly").unwrap().is_none());
    assert!(matches!(engine.schedules().pause("hourly").await, Err(Error::UnknownSchedule(n)) if n == "hourly"));
    assert!(matches!(engine.schedules().fires("hourly", 10), Err(Error::UnknownSchedule(_))));
    clock.set_ms(ms("2026-06-01T12:00:00Z"));
    run_until_idle(&engine, LIMIT).await.unwrap();
    assert_eq!(engine.state_of(last).unwrap().schedule.unwrap().schedule, "hourly");
    assert_eq!(engine.list_executions(&Default::default(), &Default::default()).unwrap().len(), 3);
    support::assert_consistent(&engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_fires_inside_their_bound_and_keeps_their_nominal_time() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-06-01T00:00:00Z")));
    let schedules = (0..20)
        .map(|i| Schedule::new(format!("s{i}"), QUICK, &(), ScheduleSpec::every("1h").unwrap()).jitter("10m"))
        .collect();
    let engine = open(&disk, &clock, schedules);
    let _pool = engine.serve(support::options("w")).unwrap();
    let nominal = ms("2026-06-01T01:00:00Z");
    for minute in 0..=10 {
        clock.set_ms(nominal + minute * 60_000);
        run_until_idle(&engine, LIMIT).await.unwrap();
    }
    let mut started = std::collections::BTreeSet::new();
    for i in 0..20 {
        let fires = engine.schedules().fires(&format!("s{i}"), 10).unwrap();
        assert_eq!(fires.len(), 1, "s{i} fired once by the end of its jitter");
        assert_eq!(fires[0].fire_time_ms, nominal);
        let created = engine.state_of(fires[0].execution).unwrap().created_ms;
        assert!((nominal..=nominal + 10 * 60_000).contains(&created));
        started.insert(created);
    }
    // The same moment for all twenty would be no jitter at all.
    assert!(started.len() > 1, "jitter spread the starts: {started:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_fires_wait_for_their_moment() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-06-01T00:00:00Z")));
    let engine = open(&disk, &clock, vec![]);
    let _pool = engine.serve(support::options("w")).unwrap();
    let s = Schedule::new("j", QUICK, &(), ScheduleSpec::every("1h").unwrap()).jitter("30m");
    engine.schedules().upsert(s).await.unwrap();
    // Find the moment from the engine's own fire: step a minute at a time.
    let nominal = ms("2026-06-01T01:00:00Z");
    let mut at = nominal;
    while fired(&engine, "j").is_empty() {
        assert!(at <= nominal + 30 * 60_000, "fired within its jitter");
        clock.set_ms(at);
        run_until_idle(&engine, LIMIT).await.unwrap();
        at += 60_000;
    }
    let created = engine.state_of(engine.schedules().fires("j", 1).unwrap()[0].execution).unwrap().created_ms;
    // Each step before that one found nothing due: it fired at its moment, not before.
    assert_eq!(created, at - 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_whole() {
    let (disk, clock) = (MemoryDisk::new(), ManualClock::new(ms("2026-06-01T00:00:00Z")));
    let engine = open(&disk, &clock, vec![]);
    const GONE: Workflow<(), ()> = Workflow::new("not_registered");
    const TAKES_NUMBER: Workflow<u32, ()> = Workflow::new("quick");
    let every = ScheduleSpec::every("1h").unwrap();
    let unknown = engine.schedules().upsert(Schedule::new("a", GONE, &(), every.clone())).await;
    assert!(matches!(unknown, Err(Error::UnknownFunction { .. })), "{unknown:?}");
    let wrong = engine.schedules().upsert(Schedule::new("b", TAKES_NUMBER, &7, every.clone())).await;
    assert!(matches!(wrong, Err(Error::Payload { .. })), "{wrong:?}");
    let no_max = Schedule::new("c", QUICK, &(), every).catch_up(CatchUp::All { max: 0 });
    assert!(matches!(engine.schedules().upsert(no_max).await, Err(Error::InvalidOptions { .. })));
    let bad = ScheduleSpec::cron("0 25 * * *", "UTC");
    assert!(matches!(bad, Err(Error::InvalidSchedule { .. })), "{bad:?}");
    let zone = ScheduleSpec::cron("0 9 * * *", "Europe/Atlantis").unwrap_err().to_string();
    assert!(zone.contains("unknown time zone \"Europe/Atlantis\""), "{zone}");
    assert!(engine.schedules().list().unwrap().is_empty());
    // A bad declaration fails the open, and the file is as it was.
    drop(engine);
    let opened = support::builder(&disk, &clock)
        .schedule(Schedule::new("d", GONE, &(), ScheduleSpec::every("1h").unwrap()))
        .open();
    assert!(matches!(opened, Err(Error::UnknownFunction { .. })));
}
