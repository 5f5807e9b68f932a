//! `stent dlq`: the dead-letter queue from the command line.

use std::path::Path;

use serde_json::{json, Value};
use stent::DeadLetterId;

use crate::target::Target;
use crate::{confirm, human, say, views, DlqCommand, Failure, Outcome};

pub(crate) async fn run(db: &Path, command: DlqCommand, json: bool, yes: bool) -> Outcome {
    match command {
        DlqCommand::List { limit, function } => {
            let mut target = Target::read(db, false).await?;
            let letters = target.dead_letters(limit, function.as_deref()).await;
            let letters = target.finish(letters).await?;
            if json {
                println!("{}", Value::Array(letters.iter().map(|l| views::dead_letter(l, false)).collect()));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|l| {
                    vec![
                        l.id.to_string(),
                        l.execution_id.to_string(),
                        l.task_id.to_string(),
                        l.function.clone(),
                        l.attempts.to_string(),
                        human::ago(l.failed_ms),
                        human::clip(&l.error.to_string(), 60),
                    ]
                })
                .collect();
            human::table(&["ID", "EXECUTION", "TASK", "FUNCTION", "ATTEMPTS", "FAILED", "ERROR"], &rows);
            Ok(())
        }
        DlqCommand::Show { id } => {
            let mut target = Target::read(db, false).await?;
            let letter = target.dead_letter(DeadLetterId(id)).await;
            let letter = target.finish(letter).await?;
            if json {
                println!("{}", views::dead_letter(&letter, true));
            } else {
                println!("dead letter {} (execution {}, task {})", letter.id, letter.execution_id, letter.task_id);
                println!("  function   {} (queue {})", letter.function, letter.queue);
                println!("  failed     {} ({})", views::time(letter.failed_ms), human::ago(letter.failed_ms));
                println!("  attempts   {}", letter.attempts);
                println!("  error      {}", letter.error);
                println!("  input      {}", letter.input);
                for a in &letter.history {
                    println!("    attempt {} on {}: {}", a.attempt, a.worker, a.error);
                }
            }
            Ok(())
        }
        DlqCommand::Replay { id, input } => {
            let input: Option<Value> = input
                .map(|i| serde_json::from_str(&i).map_err(|e| Failure(format!("--input is not JSON: {e}"))))
                .transpose()?;
            let mut target = Target::write(db).await?;
            let replayed = target.replay(DeadLetterId(id), input).await;
            let execution = target.finish(replayed).await?;
            say(json, json!({"dead_letter": id, "execution": execution.0, "replayed": true}));
            Ok(())
        }
        DlqCommand::Discard { id } => {
            confirm(yes, &format!("discard dead letter {id}"))?;
            let mut target = Target::write(db).await?;
            let discarded = target.discard(DeadLetterId(id)).await;
            target.finish(discarded).await?;
            say(json, json!({"dead_letter": id, "discarded": true}));
            Ok(())
        }
        DlqCommand::ReplayAll { function } => {
            let what =
                function.as_ref().map_or("every dead letter".to_string(), |f| format!("every dead letter of {f}"));
            confirm(yes, &format!("replay {what}"))?;
            let mut target = Target::write(db).await?;
            let mut replayed = Vec::new();
            let mut failed = Vec::new();
            let letters = match target.dead_letters(u32::MAX, function.as_deref()).await {
                Ok(l) => l,
                Err(e) => return target.finish(Err(e)).await,
            };
            for l in letters {
                match target.replay(l.id, None).await {
                    Ok(execution) => replayed.push(json!({"dead_letter": l.id.0, "execution": execution.0})),
                    Err(e) => failed.push(json!({"dead_letter": l.id.0, "error": e.to_string()})),
                }
            }
            target.finish(Ok(())).await?;
            let n = failed.len();
            say(json, json!({"replayed": replayed, "failed": failed}));
            if n > 0 {
                return Err(Failure(format!("{n} dead letter(s) could not be replayed")));
            }
            Ok(())
        }
    }
}
