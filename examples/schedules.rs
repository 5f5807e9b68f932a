//! A cron schedule in a real time zone, on a real file, driven by a manual clock:
//!
//!     cargo run --release --example schedules -- --db PATH --cron EXPR --tz ZONE \
//!         --start RFC3339 --run-for DURATION [--down START..END] [--catch-up skip|one|all]
//!
//! Opens an engine on PATH with its clock at `--start`, declares the schedule `contract` (a
//! workflow that completes at once) with the cron expression in the zone, and moves the clock
//! from fire to fire through `--run-for`, running everything due. With `--down`, the engine
//! is closed without draining when the clock reaches START (a fire at START is missed), the
//! clock jumps to END, and a new engine is opened with the `--catch-up` policy (default
//! `one`), which decides the fires missed meanwhile. Then it prints one JSON line per
//! execution the schedule started, by nominal fire time (UTC):
//! `{"fire_time":"2026-03-23T08:00:00Z","execution":1}`.
//!
//! Run again on the same file, it starts nothing new (the schedule's cursor is on disk and
//! every fire has an idempotency key) and prints the same lines.

use std::time::Duration;

use anyhow::{bail, Context as _};
use jiff::Timestamp;
use stent::{CatchUp, Ctx, Engine, ManualClock, Schedule, ScheduleSpec, WorkerOptions, Workflow};

const TICK: Workflow<(), ()> = Workflow::new("tick");
const NAME: &str = "contract";
/// Real time allowed for the work of one fire; a hang fails with a message, never a wrong line.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// One output line; the fields in this order.
#[derive(serde::Serialize)]
struct Line {
    fire_time: String,
    execution: u64,
}

struct Args {
    db: String,
    spec: ScheduleSpec,
    start_ms: u64,
    end_ms: u64,
    down: Option<(u64, u64)>,
    catch_up: CatchUp,
}

fn ms(rfc3339: &str) -> anyhow::Result<u64> {
    let t: Timestamp = rfc3339.parse().with_context(|| format!("{rfc3339:?} is not RFC 3339"))?;
    u64::try_from(t.as_millisecond()).with_context(|| format!("{rfc3339} is before 1970"))
}

fn parse() -> anyhow::Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let need = |flag: &str| value(flag).with_context(|| format!("{flag} is required"));
    let spec = ScheduleSpec::cron(need("--cron")?, need("--tz")?)?;
    let start_ms = ms(&need("--start")?)?;
    let run_for = humantime::parse_duration(&need("--run-for")?).context("--run-for")?;
    let end_ms = start_ms.saturating_add(u64::try_from(run_for.as_millis())?);
    let down = match value("--down") {
        Some(d) => {
            let (a, b) = d.split_once("..").context("--down is START..END")?;
            let (a, b) = (ms(a)?, ms(b)?);
            if a > b {
                bail!("--down {d}: START is after END");
            }
            Some((a, b))
        }
        None => None,
    };
    let catch_up = value("--catch-up").as_deref().unwrap_or("one").parse::<CatchUp>()?;
    Ok(Args { db: need("--db")?, spec, start_ms, end_ms, down, catch_up })
}

fn open(args: &Args, clock: &ManualClock) -> stent::Result<Engine> {
    let schedule = Schedule::new(NAME, TICK, &(), args.spec.clone()).catch_up(args.catch_up);
    Engine::builder()
        .path(&args.db)
        .clock(clock.clone())
        .workflow(TICK, |_ctx: Ctx, ()| async { Ok(()) })
        .schedule(schedule)
        .open()
}

/// Moves the clock to each next fire before `until` (or at it, with `inclusive`), running
/// what each fire starts, then to `until`.
async fn run(engine: &Engine, clock: &ManualClock, until: u64, inclusive: bool) -> anyhow::Result<()> {
    loop {
        stent::testing::run_until_idle(engine, IDLE_LIMIT).await?;
        let schedule = engine.schedules().get(NAME)?.context("the schedule is declared")?;
        match schedule.next_fire_ms {
            Some(next) if next < until || (inclusive && next == until) => clock.set_ms(next),
            _ => break,
        }
    }
    clock.set_ms(until);
    stent::testing::run_until_idle(engine, IDLE_LIMIT).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("schedules: {e:#}");
            std::process::exit(2);
        }
    };
    let clock = ManualClock::new(args.start_ms);
    let mut engine = open(&args, &clock)?;
    let mut pool = engine.serve(WorkerOptions::default())?;
    if let Some((down_ms, up_ms)) = args.down {
        run(&engine, &clock, down_ms.min(args.end_ms), false).await?;
        // Closed as a crash would leave it: no drain.
        engine.close().await?;
        drop(pool);
        let clock_after = ManualClock::new(up_ms.max(args.start_ms));
        engine = open(&args, &clock_after)?;
        pool = engine.serve(WorkerOptions::default())?;
        run(&engine, &clock_after, args.end_ms.max(up_ms), true).await?;
    } else {
        run(&engine, &clock, args.end_ms, true).await?;
    }
    for fire in engine.schedules().fires(NAME, usize::MAX)? {
        let at = Timestamp::from_millisecond(i64::try_from(fire.fire_time_ms)?).context("a fire time in range")?;
        // RFC 3339 in UTC: `2026-03-23T08:00:00Z` (fractions of a second only when there are).
        let line = Line { fire_time: at.to_string(), execution: fire.execution.0 };
        println!("{}", serde_json::to_string(&line)?);
    }
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}
