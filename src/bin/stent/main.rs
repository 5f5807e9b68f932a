//! `stent`: look at and repair a stent database from the command line.
//!
//! Reads open the file read-only (nothing is written, not even by redb's repair after a crash;
//! see storage/redb/overlay.rs); changes open it as an engine with no workers. Exit codes: 0
//! ok, 1 not found / bad input / damage / the file in use, 2 usage. docs/operations.md has
//! every command and the JSON each prints.

mod dlq;
mod human;
mod schedules;
mod target;
mod views;
mod watch;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use stent::{
    CleanupParts, DurationArg, Engine, Error, ExecutionFilter, ExecutionId, ExecutionInfo, ExecutionState, Page,
};
use target::Target;

#[derive(Parser)]
#[command(name = "stent", version, about = "Inspect and repair a stent database")]
struct Cli {
    /// The database file.
    #[arg(long, env = "STENT_DB", global = true)]
    db: Option<PathBuf>,
    /// Print JSON instead of tables (every read command).
    #[arg(long, global = true)]
    json: bool,
    /// Do not ask before a destructive command.
    #[arg(long, short = 'y', global = true)]
    yes: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Executions, newest first.
    List(ListArgs),
    /// One execution: state, timing, attempts, steps, result or error, children.
    Show { id: u64 },
    /// Tasks being run now, with their lease expiry.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Counts per state, dead letters, running tasks, queue depths.
    Stats {
        /// Queues whose depth to show (default: "default").
        #[arg(long)]
        queue: Vec<String>,
    },
    /// The dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Schedules: list, show, pause, resume, trigger, delete.
    Schedule {
        #[command(subcommand)]
        command: schedules::ScheduleCommand,
    },
    /// Cancels a pending or running execution.
    Cancel { id: u64 },
    /// Sends a signal (a JSON payload) to a workflow execution.
    Signal { id: u64, name: String, payload: String },
    /// Removes what finished before a time: executions, dead letters, expired cache entries.
    Cleanup {
        #[arg(long)]
        older_than: String,
        #[arg(long)]
        executions: bool,
        #[arg(long)]
        dlq: bool,
        #[arg(long)]
        cache: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// A live dashboard: counts, throughput, running tasks, newest executions, dead letters.
    Watch {
        /// How often it reads the database.
        #[arg(long, default_value = "1s")]
        interval: String,
    },
    /// Verifies every page checksum, every record and every index; exit 1 on damage.
    Check,
    /// Writes every record to a new file (a consistent snapshot, also of a live database).
    Export { file: PathBuf },
    /// Reads an export into a new, empty database.
    Import { file: PathBuf },
}

#[derive(Args)]
struct ListArgs {
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    function: Option<String>,
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    #[arg(long = "key")]
    idempotency_key: Option<String>,
    #[arg(long)]
    parent: Option<u64>,
    /// Created at or after (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Created before (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue below this id (the last id of the previous page).
    #[arg(long)]
    before: Option<u64>,
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Tasks running now.
    List,
    /// One task: state, attempts, lease, history.
    Show { id: u64 },
}

#[derive(Subcommand)]
pub(crate) enum DlqCommand {
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        function: Option<String>,
    },
    Show {
        id: u64,
    },
    /// Re-opens the failed execution with a fresh retry budget; `--input` replaces its input.
    Replay {
        id: u64,
        #[arg(long)]
        input: Option<String>,
    },
    Discard {
        id: u64,
    },
    ReplayAll {
        #[arg(long)]
        function: Option<String>,
    },
}

/// What went wrong, and the exit code it gets.
pub(crate) struct Failure(pub(crate) String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure(e.to_string())
    }
}

pub(crate) type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(db) = cli.db.clone().filter(|d| !d.as_os_str().is_empty()) else {
        eprintln!("error: no database: pass --db FILE or set STENT_DB");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&db, cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

async fn run(db: &Path, cli: Cli) -> Outcome {
    match cli.command {
        Command::List(args) => list(Target::read(db, false).await?, &args, cli.json).await,
        Command::Show { id } => show(Target::read(db, false).await?, ExecutionId(id), cli.json).await,
        Command::Tasks { command: TasksCommand::List } => tasks(Target::read(db, false).await?, cli.json).await,
        Command::Tasks { command: TasksCommand::Show { id } } => {
            task(Target::read(db, false).await?, stent::TaskId(id), cli.json).await
        }
        Command::Stats { queue } => stats(Target::read(db, false).await?, &queue, cli.json).await,
        Command::Dlq { command } => dlq::run(db, command, cli.json, cli.yes).await,
        Command::Schedule { command } => schedules::run(db, command, cli.json, cli.yes).await,
        Command::Cancel { id } => {
            confirm(cli.yes, &format!("cancel execution {id}"))?;
            let mut target = Target::write(db).await?;
            let state = target.cancel(ExecutionId(id)).await;
            let state = target.finish(state).await?;
            say(cli.json, json!({"id": id, "state": state.as_str()}));
            Ok(())
        }
        Command::Signal { id, name, payload } => {
            let payload: Value =
                serde_json::from_str(&payload).map_err(|e| Failure(format!("the payload is not JSON: {e}")))?;
            let mut target = Target::write(db).await?;
            let sent = target.signal(ExecutionId(id), &name, payload).await;
            target.finish(sent).await?;
            say(cli.json, json!({"id": id, "signal": name, "sent": true}));
            Ok(())
        }
        Command::Cleanup { older_than, executions, dlq, cache, dry_run } => {
            let parts = if executions || dlq || cache {
                CleanupParts { executions, dead_letters: dlq, cache }
            } else {
                CleanupParts::ALL
            };
            let older_than = DurationArg::from(older_than.as_str()).get().map_err(Failure::from)?;
            let mut target = if dry_run {
                Target::read(db, false).await?
            } else {
                confirm(cli.yes, &format!("remove what finished more than {older_than:?} ago"))?;
                Target::write(db).await?
            };
            let report = target.cleanup(older_than, parts, dry_run).await;
            let report = target.finish(report).await?;
            say(
                cli.json,
                json!({"dry_run": dry_run, "executions": report.executions,
                "dead_letters": report.dead_letters, "cache_entries": report.cache_entries}),
            );
            Ok(())
        }
        Command::Watch { interval } => {
            let interval = DurationArg::from(interval.as_str()).get().map_err(Failure::from)?;
            watch::run(db, interval).await
        }
        Command::Check => check(db, cli.json).await,
        Command::Export { file } => {
            let mut target = Target::read(db, false).await?;
            let report = target.export(&file).await;
            let report = target.finish(report).await?;
            say(
                cli.json,
                json!({"file": file, "records": report.records, "executions": report.executions,
                "dead_letters": report.dead_letters, "schema_version": report.schema_version}),
            );
            Ok(())
        }
        Command::Import { file } => {
            let report = Engine::import(db, &file)?;
            say(
                cli.json,
                json!({"file": file, "records": report.records, "executions": report.executions,
                "dead_letters": report.dead_letters}),
            );
            Ok(())
        }
    }
}

/// Prints a command's result: JSON, or its fields one per line.
pub(crate) fn say(json: bool, value: Value) {
    if json {
        println!("{value}");
    } else if let Value::Object(m) = value {
        for (k, v) in m {
            println!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_string));
        }
    }
}

/// Asks on a terminal; `--yes` (or no terminal) goes ahead.
pub(crate) fn confirm(yes: bool, what: &str) -> Result<(), Failure> {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprint!("{what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure("not confirmed; nothing was changed".into()))
    }
}

fn parse_state(s: &str) -> Result<ExecutionState, Failure> {
    ExecutionState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
        let names: Vec<_> = ExecutionState::ALL.iter().map(|s| s.as_str()).collect();
        Failure(format!("unknown state {s:?}; one of {}", names.join(", ")))
    })
}

fn parse_time(s: &str) -> Result<u64, Failure> {
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| Failure(format!("{s:?} is not an RFC 3339 time: {e}")))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

/// Executions at most this far down are looked at for filters the store has no index for.
const SCAN_MAX: usize = 100_000;

async fn list(mut target: Target, args: &ListArgs, json: bool) -> Outcome {
    let filter = ExecutionFilter {
        state: args.state.as_deref().map(parse_state).transpose()?,
        function: args.function.clone(),
        queue: args.queue.clone(),
    };
    let since = args.since.as_deref().map(parse_time).transpose()?;
    let until = args.until.as_deref().map(parse_time).transpose()?;
    let keep = |e: &ExecutionInfo| {
        args.tag.as_ref().is_none_or(|t| e.tags.contains(t))
            && args.idempotency_key.as_ref().is_none_or(|k| e.idempotency_key.as_ref() == Some(k))
            && args.parent.is_none_or(|p| e.parent == Some(ExecutionId(p)))
            && since.is_none_or(|s| e.created_ms >= s)
            && until.is_none_or(|u| e.created_ms < u)
    };
    let found = collect(&mut target, &filter, args.before.map(ExecutionId), args.limit as usize, keep).await;
    let (found, _) = target.finish(found).await?;
    if json {
        println!("{}", Value::Array(found.iter().map(views::execution_summary).collect()));
        return Ok(());
    }
    // A SCHEDULE column only when a listed execution was started by one.
    let scheduled = found.iter().any(|e| e.schedule.is_some());
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|e| {
            let mut row = vec![
                e.id.to_string(),
                e.function.clone(),
                e.state.to_string(),
                e.queue.clone(),
                e.attempts.to_string(),
                human::ago(e.created_ms),
                human::opt_ago(e.finished_ms),
            ];
            if scheduled {
                row.push(e.schedule.as_ref().map_or_else(|| "-".into(), |s| s.schedule.clone()));
            }
            row
        })
        .collect();
    let header = ["ID", "FUNCTION", "STATE", "QUEUE", "ATTEMPTS", "CREATED", "FINISHED", "SCHEDULE"];
    human::table(&header[..if scheduled { 8 } else { 7 }], &rows);
    if found.len() == args.limit as usize {
        if let Some(last) = found.last() {
            println!("more: --before {}", last.id);
        }
    }
    Ok(())
}

/// Pages through executions newest first, keeping those `keep` accepts, until `limit` are
/// kept or `SCAN_MAX` looked at. Returns them and whether the scan stopped at its bound.
async fn collect(
    target: &mut Target,
    filter: &ExecutionFilter,
    mut before: Option<ExecutionId>,
    limit: usize,
    keep: impl Fn(&ExecutionInfo) -> bool,
) -> stent::Result<(Vec<ExecutionInfo>, bool)> {
    let mut found = Vec::new();
    let mut seen = 0;
    while found.len() < limit {
        let page = target.list_executions(filter, &Page { limit: 500, before }).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen += page.len();
        found.extend(page.into_iter().filter(|e| keep(e)).take(limit - found.len()));
        if seen >= SCAN_MAX {
            return Ok((found, true));
        }
    }
    Ok((found, false))
}

async fn show(mut target: Target, id: ExecutionId, json: bool) -> Outcome {
    let read = async {
        let info = target.state_of(id).await?;
        let steps = target.steps(id).await?;
        // Children are created after their parent: look at the executions newer than it.
        let (children, _) =
            collect(&mut target, &ExecutionFilter::default(), None, 1000, |e| e.parent == Some(id) && e.id > id)
                .await?;
        Ok((info, steps, children))
    }
    .await;
    let (info, steps, children) = target.finish(read).await?;
    if json {
        println!("{}", views::execution_detail(&info, &steps, &children));
        return Ok(());
    }
    println!("execution {} ({})", info.id, info.function);
    println!("  state      {}", info.state);
    println!("  version    {} (run {})", info.version, info.run);
    println!("  queue      {} (priority {})", info.queue, info.priority);
    if !info.tags.is_empty() {
        println!("  tags       {}", info.tags.join(", "));
    }
    if let Some(key) = &info.idempotency_key {
        println!("  key        {key}");
    }
    if let Some(parent) = info.parent {
        println!("  parent     {parent}");
    }
    if let Some(s) = &info.schedule {
        let how = if s.triggered { "triggered at" } else { "fire of" };
        println!("  schedule   {} ({how} {})", s.schedule, views::time(s.fire_time_ms));
    }
    println!("  created    {} ({})", views::time(info.created_ms), human::ago(info.created_ms));
    if let Some(t) = info.started_ms {
        println!("  started    {} ({})", views::time(t), human::ago(t));
    }
    if let Some(t) = info.finished_ms {
        println!("  finished   {} ({})", views::time(t), human::ago(t));
    }
    println!("  attempts   {}", info.attempts);
    for a in &info.history {
        println!("    attempt {} on {}: {}", a.attempt, a.worker, a.error);
    }
    println!("  input      {}", human::clip(&info.input.to_string(), 200));
    if let Some(out) = &info.output {
        println!("  result     {}", human::clip(&out.to_string(), 200));
    }
    if let Some(err) = &info.error {
        println!("  error      {err}");
    }
    for (name, value) in &info.counters {
        println!("  counter    {name} = {value}");
    }
    for (key, value) in &info.custom_state {
        println!("  state      {key} = {}", human::clip(&value.to_string(), 200));
    }
    if !steps.is_empty() {
        println!("  steps");
        for s in &steps {
            let detail = match (&s.error, &s.output) {
                (Some(e), _) => format!(": {e}"),
                (None, Some(o)) => format!(" -> {}", human::clip(&o.to_string(), 80)),
                _ => String::new(),
            };
            println!("    {:>4}  {} {}{detail}", s.step, s.kind, s.outcome);
        }
    }
    for c in &children {
        println!("  child      {} {} {}", c.id, c.function, c.state);
    }
    Ok(())
}

async fn tasks(mut target: Target, json: bool) -> Outcome {
    let running = target.running_tasks().await;
    let running = target.finish(running).await?;
    if json {
        println!("{}", Value::Array(running.iter().map(views::running_task).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = running
        .iter()
        .map(|t| {
            vec![
                t.task_id.to_string(),
                t.execution_id.to_string(),
                t.function.clone(),
                t.worker.clone(),
                t.attempt.to_string(),
                human::ago(t.lease_expires_ms),
            ]
        })
        .collect();
    human::table(&["TASK", "EXECUTION", "FUNCTION", "WORKER", "ATTEMPT", "LEASE EXPIRES"], &rows);
    Ok(())
}

async fn task(mut target: Target, id: stent::TaskId, json: bool) -> Outcome {
    let t = target.task(id).await;
    let t = target.finish(t).await?;
    if json {
        println!("{}", views::task(&t));
        return Ok(());
    }
    let state = serde_json::to_value(t.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    println!("task {} ({} {}, execution {})", t.id, t.kind, t.function, t.execution_id);
    if let Some(step) = t.step {
        println!("  step       {step}");
    }
    println!("  state      {state}");
    println!("  queue      {} (priority {})", t.queue, t.priority);
    if let Some(due) = t.due_ms {
        println!("  due        {} ({})", views::time(due), human::ago(due));
    }
    println!("  attempt    {}", t.attempt);
    if let (Some(worker), Some(expires)) = (&t.worker, t.lease_expires_ms) {
        println!("  lease      {worker}, expires {}", human::ago(expires));
    }
    for a in &t.history {
        println!("    attempt {} on {}: {}", a.attempt, a.worker, a.error);
    }
    println!("  input      {}", human::clip(&t.input.to_string(), 200));
    Ok(())
}

async fn stats(mut target: Target, queues: &[String], json: bool) -> Outcome {
    let default = ["default".to_string()];
    let queues = if queues.is_empty() { &default[..] } else { queues };
    let read = async {
        let counts = target.counts_by_state().await?;
        let dead_letters = target.dead_letter_count().await?;
        let running = target.running_tasks().await?;
        let mut depths = serde_json::Map::new();
        for q in queues {
            depths.insert(q.clone(), json!(target.queue_depth(q).await?));
        }
        let keys = target.concurrency_keys().await?;
        let schedules = target.schedules().await?;
        Ok((counts, dead_letters, running, depths, keys, schedules))
    }
    .await;
    let (counts, dead_letters, running, depths, keys, schedules) = target.finish(read).await?;
    let paused = schedules.iter().filter(|s| s.paused).count();
    let next_fire = schedules.iter().filter_map(|s| s.next_fire_ms).min();
    let executions: serde_json::Map<String, Value> = ExecutionState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), json!(counts.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n))))
        .collect();
    if json {
        let value = json!({
            "executions": executions,
            "dead_letters": dead_letters,
            "queues": depths,
            "running_tasks": running.iter().map(views::running_task).collect::<Vec<_>>(),
            "concurrency_keys": keys.iter().map(|k| json!({"function": k.function, "key": k.key, "running": k.running})).collect::<Vec<_>>(),
            "schedules": {"count": schedules.len(), "paused": paused, "next_fire_at": next_fire.map(views::time)},
        });
        println!("{value}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = executions.iter().map(|(s, n)| vec![s.clone(), n.to_string()]).collect();
    human::table(&["STATE", "EXECUTIONS"], &rows);
    println!();
    println!("dead letters   {dead_letters}");
    for (q, d) in &depths {
        println!("queue {q:<8} {d} ready");
    }
    match next_fire {
        Some(t) => println!("schedules      {} ({paused} paused), next fire {}", schedules.len(), views::time(t)),
        None => println!("schedules      {} ({paused} paused)", schedules.len()),
    }
    for k in &keys {
        println!("key {}/{:<12} {} running", k.function, k.key, k.running);
    }
    println!("running tasks  {}", running.len());
    for t in &running {
        println!(
            "  task {} ({}) on {}, lease expires {}",
            t.task_id,
            t.function,
            t.worker,
            human::ago(t.lease_expires_ms)
        );
    }
    Ok(())
}

async fn check(db: &Path, json: bool) -> Outcome {
    // A local full open verifies every page's checksum (in memory: the file is not written),
    // then every record and index. A running engine checks the records and indexes in one
    // snapshot; redb's page check needs the file to itself.
    let (problems, held_by) = match Target::read(db, true).await {
        Ok(mut target) => {
            let held_by = target.remote_pid();
            let problems = target.check().await;
            (target.finish(problems).await?, held_by)
        }
        // A file the open refuses (damaged pages, not a stent file) is the damage to report.
        Err(Failure(why)) => (vec![why], None),
    };
    if json {
        println!("{}", json!({"ok": problems.is_empty(), "problems": problems, "pages_checked": held_by.is_none()}));
    } else if problems.is_empty() {
        match held_by {
            None => println!("{}: every page, record and index is sound", db.display()),
            Some(pid) => println!(
                "{}: every record and index is sound (pages not checked: pid {pid} holds the file; \
                 stop it, or check an import of an export)",
                db.display()
            ),
        }
    } else {
        for p in &problems {
            println!("damage: {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure(format!("{} problem(s) found in {}", problems.len(), db.display())))
    }
}
