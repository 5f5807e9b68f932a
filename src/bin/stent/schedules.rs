//! `stent schedule`: a file's schedules from the command line (`Engine::schedules`).

use std::path::Path;

use clap::Subcommand;
use serde_json::{json, Value};
use stent::{Error, ExecutionState, ScheduleFire, ScheduleInfo};

use crate::target::Target;
use crate::{confirm, human, say, views, Outcome};

#[derive(Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Every schedule, by name, with its next fire time.
    List,
    /// One schedule: its definition, state, counts and latest fires.
    Show {
        name: String,
        /// How many of its latest fires to show.
        #[arg(long, default_value_t = 20)]
        fires: u32,
    },
    /// Stops the schedule firing until `resume` (`trigger` still fires it).
    Pause { name: String },
    /// Fires again from its next time after now (times passed while paused are not fired).
    Resume { name: String },
    /// Fires the schedule now, under its overlap policy.
    Trigger { name: String },
    /// Removes the schedule; the executions it started are kept.
    Delete { name: String },
}

pub(crate) async fn run(db: &Path, command: ScheduleCommand, json: bool, yes: bool) -> Outcome {
    match command {
        ScheduleCommand::List => {
            let mut target = Target::read(db, false).await?;
            let listed = target.schedules().await;
            let schedules = target.finish(listed).await?;
            if json {
                println!("{}", Value::Array(schedules.iter().map(views::schedule).collect()));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = schedules
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.function.clone(),
                        s.spec.to_string(),
                        state(s).to_string(),
                        s.next_fire_ms
                            .map_or_else(|| "-".into(), |t| format!("{} ({})", views::time(t), human::ago(t))),
                        s.last_fire_ms.map_or_else(|| "-".into(), views::time),
                        s.fires.to_string(),
                        s.skipped.to_string(),
                    ]
                })
                .collect();
            human::table(&["NAME", "FUNCTION", "SPEC", "STATE", "NEXT FIRE", "LAST FIRE", "FIRES", "SKIPPED"], &rows);
            Ok(())
        }
        ScheduleCommand::Show { name, fires } => show(db, &name, fires, json).await,
        ScheduleCommand::Pause { name } => {
            let mut target = Target::write(db).await?;
            let paused = target.pause_schedule(&name).await;
            let info = target.finish(paused).await?;
            changed(json, &info, "paused");
            Ok(())
        }
        ScheduleCommand::Resume { name } => {
            let mut target = Target::write(db).await?;
            let resumed = target.resume_schedule(&name).await;
            let info = target.finish(resumed).await?;
            changed(json, &info, "resumed");
            Ok(())
        }
        ScheduleCommand::Trigger { name } => {
            let mut target = Target::write(db).await?;
            let triggered = async {
                let fired = target.trigger_schedule(&name).await?;
                // Why none started: the execution that still runs, and whether the fire waits.
                let info = match fired {
                    Some(_) => None,
                    None => target.schedule(&name).await?,
                };
                Ok((fired, info))
            }
            .await;
            let (fired, info) = target.finish(triggered).await?;
            let running = info.as_ref().and_then(|i| i.last_execution);
            let buffered = info.as_ref().is_some_and(|i| i.buffered_fire_ms.is_some());
            if json {
                let mut out = json!({"schedule": name, "started": fired.is_some(), "execution": fired.map(|e| e.0)});
                if fired.is_none() {
                    out["running"] = json!(running.map(|e| e.0));
                    out["buffered"] = json!(buffered);
                }
                println!("{out}");
            } else if let Some(id) = fired {
                println!("schedule {name}: started execution {id}");
            } else {
                let running =
                    running.map_or_else(|| "the execution it started last".to_string(), |e| format!("execution {e}"));
                let then = if buffered { "; the fire starts when that one ends" } else { "" };
                println!("schedule {name}: no execution started: {running} is still running{then}");
            }
            Ok(())
        }
        ScheduleCommand::Delete { name } => {
            confirm(yes, &format!("delete schedule {name} (the executions it started are kept)"))?;
            let mut target = Target::write(db).await?;
            let deleted = target.delete_schedule(&name).await;
            target.finish(deleted).await?;
            say(json, json!({"schedule": name, "deleted": true}));
            Ok(())
        }
    }
}

fn state(s: &ScheduleInfo) -> &'static str {
    if s.paused {
        "paused"
    } else {
        "active"
    }
}

/// What `pause` and `resume` print: the schedule as `list --json` shows it, or one line.
fn changed(json: bool, info: &ScheduleInfo, what: &str) {
    if json {
        println!("{}", views::schedule(info));
        return;
    }
    let next = info.next_fire_ms.map_or_else(|| "none".into(), |t| format!("{} ({})", views::time(t), human::ago(t)));
    println!("schedule {} {what}; next fire: {next}", info.name);
}

async fn show(db: &Path, name: &str, limit: u32, json: bool) -> Outcome {
    let mut target = Target::read(db, false).await?;
    let read = async {
        let info = target.schedule(name).await?.ok_or_else(|| Error::UnknownSchedule(name.to_string()))?;
        let mut fires: Vec<(ScheduleFire, Option<ExecutionState>)> = Vec::new();
        for fire in target.schedule_fires(name, limit).await?.into_iter().rev() {
            let state = match target.state_of(fire.execution).await {
                Ok(e) => Some(e.state),
                // Removed meanwhile (retention): the fire is still worth showing.
                Err(Error::UnknownExecution(_)) => None,
                Err(Error::Remote { kind, .. }) if kind == "not_found" => None,
                Err(e) => return Err(e),
            };
            fires.push((fire, state));
        }
        Ok((info, fires))
    }
    .await;
    let (info, fires) = target.finish(read).await?;
    if json {
        println!("{}", views::schedule_detail(&info, &fires));
        return Ok(());
    }
    let at = |t: u64| format!("{} ({})", views::time(t), human::ago(t));
    println!("schedule {} ({})", info.name, info.function);
    println!("  spec       {}", info.spec);
    println!("  state      {}", state(&info));
    println!("  next fire  {}", info.next_fire_ms.map_or_else(|| "none".into(), at));
    if let Some(t) = info.last_fire_ms {
        let execution = info.last_execution.map_or_else(String::new, |e| format!(", execution {e}"));
        println!("  last fire  {}{execution}", at(t));
    }
    if let Some(t) = info.buffered_fire_ms {
        println!(
            "  buffered   {} (starts when execution {} ends)",
            views::time(t),
            info.last_execution.map_or(0, |e| e.0)
        );
    }
    let (catch_up, max) = views::catch_up(info.catch_up);
    println!("  catch-up   {catch_up}{}", max.map_or_else(String::new, |m| format!(" (at most {m})")));
    println!("  overlap    {}", views::overlap(info.overlap));
    if info.jitter_ms > 0 {
        println!("  jitter     {}", humantime::format_duration(std::time::Duration::from_millis(info.jitter_ms)));
    }
    println!("  fires      {} started, {} skipped", info.fires, info.skipped);
    println!("  input      {}", human::clip(&info.input.to_string(), 200));
    println!("  created    {}", at(info.created_ms));
    println!("  updated    {}", at(info.updated_ms));
    if !fires.is_empty() {
        println!("  latest fires");
        for (f, state) in &fires {
            let state = state.map_or("removed", |s| s.as_str());
            println!("    {}  execution {} {state}", views::time(f.fire_time_ms), f.execution);
        }
    }
    Ok(())
}
