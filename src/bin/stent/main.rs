//! `stent`: look at and repair a stent database from the command line.
//!
//! Reads open the file read-only (nothing is written, not even by redb's repair after a crash;
//! see storage/redb/overlay.rs); changes open it as an engine with no workers. Exit codes: 0
//! ok, 1 not found / bad input / damage / the file in use, 2 usage. docs/operations.md has
//! every command and the JSON each prints.

mod dlq;
mod human;
mod views;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use stent::{
    CleanupParts, DurationArg, Engine, Error, ExecutionFilter, ExecutionId, ExecutionInfo, ExecutionState, Page,
    VerifyOnOpen,
};

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
        Command::List(args) => list(&open_read(db, false)?, &args, cli.json),
        Command::Show { id } => show(&open_read(db, false)?, ExecutionId(id), cli.json),
        Command::Tasks { command: TasksCommand::List } => tasks(&open_read(db, false)?, cli.json),
        Command::Tasks { command: TasksCommand::Show { id } } => {
            task(&open_read(db, false)?, stent::TaskId(id), cli.json)
        }
        Command::Stats { queue } => stats(&open_read(db, false)?, &queue, cli.json),
        Command::Dlq { command } => dlq::run(db, command, cli.json, cli.yes).await,
        Command::Cancel { id } => {
            confirm(cli.yes, &format!("cancel execution {id}"))?;
            let engine = open_write(db)?;
            let state = engine.cancel(ExecutionId(id)).await;
            finish(engine, state).await.map(|state| say(cli.json, json!({"id": id, "state": state.as_str()})))
        }
        Command::Signal { id, name, payload } => {
            let payload: Value =
                serde_json::from_str(&payload).map_err(|e| Failure(format!("the payload is not JSON: {e}")))?;
            let engine = open_write(db)?;
            let sent = engine.send_signal(ExecutionId(id), &name, &payload).await;
            finish(engine, sent).await.map(|()| say(cli.json, json!({"id": id, "signal": name, "sent": true})))
        }
        Command::Cleanup { older_than, executions, dlq, cache, dry_run } => {
            let parts = if executions || dlq || cache {
                CleanupParts { executions, dead_letters: dlq, cache }
            } else {
                CleanupParts::ALL
            };
            let older_than = DurationArg::from(older_than.as_str()).get().map_err(Failure::from)?;
            let report = if dry_run {
                open_read(db, false)?.cleanup_preview_parts(older_than, parts)?
            } else {
                confirm(cli.yes, &format!("remove what finished more than {older_than:?} ago"))?;
                let engine = open_write(db)?;
                let report = engine.cleanup_parts(older_than, parts).await;
                finish(engine, report).await?
            };
            say(
                cli.json,
                json!({"dry_run": dry_run, "executions": report.executions,
                "dead_letters": report.dead_letters, "cache_entries": report.cache_entries}),
            );
            Ok(())
        }
        Command::Check => check(db, cli.json),
        Command::Export { file } => {
            let engine = open_read(db, false)?;
            let report = engine.export(&file).await?;
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

fn missing(db: &Path) -> Result<(), Failure> {
    if db.exists() {
        Ok(())
    } else {
        Err(Failure(format!("no database at {}", db.display())))
    }
}

/// Read-only: nothing in the file changes (docs/operations.md).
pub(crate) fn open_read(db: &Path, full: bool) -> Result<Engine, Failure> {
    missing(db)?;
    let verify = if full { VerifyOnOpen::Full } else { VerifyOnOpen::Live };
    Engine::builder()
        .path(db)
        .read_only(true)
        .verify_on_open(verify)
        .page_cache_bytes(16 * 1024 * 1024)
        .open()
        .map_err(|e| in_use(db, e))
}

/// For a change: an engine with no workers.
pub(crate) fn open_write(db: &Path) -> Result<Engine, Failure> {
    missing(db)?;
    Engine::builder().path(db).page_cache_bytes(16 * 1024 * 1024).open().map_err(|e| in_use(db, e))
}

/// The CLI does not yet reach a running engine (docs/operations.md): say so plainly.
fn in_use(db: &Path, e: Error) -> Failure {
    match e {
        Error::InUseBy { pid, .. } => Failure(format!(
            "{} is in use by a running application (pid {pid}); the CLI cannot reach a running engine yet",
            db.display()
        )),
        Error::Storage(stent::StorageError::InUse) => Failure(format!(
            "{} is in use by a running application; the CLI cannot reach a running engine yet",
            db.display()
        )),
        e => Failure(e.to_string()),
    }
}

/// Closes the engine a change opened, then hands back the change's result.
pub(crate) async fn finish<T>(engine: Engine, result: stent::Result<T>) -> Result<T, Failure> {
    let closed = engine.close().await;
    let value = result?;
    closed?;
    Ok(value)
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

fn list(engine: &Engine, args: &ListArgs, json: bool) -> Outcome {
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
    let (found, _) = collect(engine, &filter, args.before.map(ExecutionId), args.limit as usize, keep)?;
    if json {
        println!("{}", Value::Array(found.iter().map(views::execution_summary).collect()));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.function.clone(),
                e.state.to_string(),
                e.queue.clone(),
                e.attempts.to_string(),
                human::ago(e.created_ms),
                human::opt_ago(e.finished_ms),
            ]
        })
        .collect();
    human::table(&["ID", "FUNCTION", "STATE", "QUEUE", "ATTEMPTS", "CREATED", "FINISHED"], &rows);
    if found.len() == args.limit as usize {
        if let Some(last) = found.last() {
            println!("more: --before {}", last.id);
        }
    }
    Ok(())
}

/// Pages through executions newest first, keeping those `keep` accepts, until `limit` are
/// kept or `SCAN_MAX` looked at. Returns them and whether the scan stopped at its bound.
fn collect(
    engine: &Engine,
    filter: &ExecutionFilter,
    mut before: Option<ExecutionId>,
    limit: usize,
    keep: impl Fn(&ExecutionInfo) -> bool,
) -> Result<(Vec<ExecutionInfo>, bool), Failure> {
    let mut found = Vec::new();
    let mut seen = 0;
    while found.len() < limit {
        let page = engine.list_executions(filter, &Page { limit: 500, before })?;
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

fn show(engine: &Engine, id: ExecutionId, json: bool) -> Outcome {
    let info = engine.state_of(id)?;
    let steps = engine.steps(id)?;
    // Children are created after their parent: look at the executions newer than it.
    let (children, _) = collect(engine, &ExecutionFilter::default(), None, 1000, |e| e.parent == Some(id))
        .map(|(c, full)| (c.into_iter().filter(|c| c.id > id).collect::<Vec<_>>(), full))?;
    if json {
        println!("{}", views::execution_detail(&info, &steps, &children));
        return Ok(());
    }
    println!("execution {} ({})", info.id, info.function);
    println!("  state      {}", info.state);
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

fn tasks(engine: &Engine, json: bool) -> Outcome {
    let running = engine.running_tasks()?;
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

fn task(engine: &Engine, id: stent::TaskId, json: bool) -> Outcome {
    let t = engine.task(id)?;
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

fn stats(engine: &Engine, queues: &[String], json: bool) -> Outcome {
    let counts = engine.counts_by_state()?;
    let dead_letters = engine.dead_letter_count()?;
    let running = engine.running_tasks()?;
    let default = ["default".to_string()];
    let queues = if queues.is_empty() { &default[..] } else { queues };
    let mut depths = serde_json::Map::new();
    for q in queues {
        depths.insert(q.clone(), json!(engine.queue_depth(q)?));
    }
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

fn check(db: &Path, json: bool) -> Outcome {
    // The full open verifies every page's checksum (in memory: the file is not written), then
    // every record and index.
    let problems = match open_read(db, true) {
        Ok(engine) => engine.check()?,
        Err(Failure(why)) => vec![why],
    };
    if json {
        println!("{}", json!({"ok": problems.is_empty(), "problems": problems}));
    } else if problems.is_empty() {
        println!("{}: every page, record and index is sound", db.display());
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
