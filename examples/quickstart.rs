//! A real run on a real file: dispatch work, watch a retry succeed, watch another execution
//! fail into the dead-letter queue, repair its input and replay it, and leave one more failure
//! in the queue for the `stent` CLI to look at. Run it twice: the second run finds the first
//! run's executions in the file.
//!
//!     cargo run --release --example quickstart [-- --db PATH]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stent::{Activity, ActivityError, Engine, ExecutionFilter, Page, RetryPolicy, WorkerOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    cents: u64,
    address: String,
}

const CHARGE: Activity<Order, String> = Activity::new("charge_card");
const SHIP: Activity<Order, String> = Activity::new("ship_order");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let db = match args.iter().position(|a| a == "--db") {
        Some(i) => args.get(i + 1).cloned().ok_or_else(|| anyhow::anyhow!("--db needs a path"))?,
        None => "quickstart.stent".to_string(),
    };

    // The card processor fails the first attempt of every charge with a retryable error.
    let charge_attempts = Arc::new(AtomicU32::new(0));
    let attempts = charge_attempts.clone();
    let engine = Engine::builder()
        .path(&db)
        .activity_with(
            CHARGE,
            move |order: Order| {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        return Err(ActivityError::retryable("card processor timed out").with_code("timeout"));
                    }
                    Ok(format!("charged {} cents for order {}", order.cents, order.id))
                }
            },
            stent::FunctionOptions::new().retry(RetryPolicy::exponential(3, Duration::from_millis(200))),
        )
        .activity(SHIP, |order: Order| async move {
            if order.address.trim().is_empty() {
                return Err(ActivityError::permanent("no shipping address").with_code("bad_address"));
            }
            Ok(format!("order {} shipped to {}", order.id, order.address))
        })
        .open()?;

    let earlier = engine.list_executions(&ExecutionFilter::default(), &Page { limit: 20, before: None })?;
    println!("database {db}: {} executions from earlier runs", earlier.len());
    for e in earlier.iter().take(6) {
        println!("  #{} {} {}", e.id, e.function, e.state);
    }

    let workers = engine.serve(WorkerOptions::default())?;
    workers.wait_until_ready().await;

    let run = earlier.len() as u32;
    let order = Order { id: 100 + run, cents: 4_200, address: "1 Main St".into() };
    let charge = engine.dispatch(CHARGE, &order).idempotency_key(format!("charge-{}", order.id)).await?;
    println!("dispatched charge_card as execution #{charge}");
    let receipt = engine.wait_for(CHARGE, charge, Some(Duration::from_secs(30))).await?;
    let info = engine.state_of(charge)?;
    println!("  -> {receipt} (after {} attempts; first error: {})", info.attempts, info.history[0].error);

    let bad = Order { id: 200 + run, cents: 999, address: String::new() };
    let ship = engine.dispatch(SHIP, &bad).await?;
    println!("dispatched ship_order with no address as execution #{ship}");
    match engine.wait_for(SHIP, ship, Some(Duration::from_secs(30))).await {
        Err(stent::Error::ExecutionFailed { error, .. }) => println!("  -> failed: {error}"),
        other => anyhow::bail!("expected a failure, got {other:?}"),
    }
    let letter = engine
        .dead_letters(50)?
        .into_iter()
        .find(|l| l.execution_id == ship)
        .ok_or_else(|| anyhow::anyhow!("the failure is not in the dead-letter queue"))?;
    println!("  dead letter #{}: {} after {} attempt(s)", letter.id, letter.error.message, letter.attempts);

    let fixed = Order { address: "221B Baker St".into(), ..bad };
    engine.replay_dead_letter_with_input(letter.id, &fixed).await?;
    println!("replayed dead letter #{} with the address filled in", letter.id);
    let shipped = engine.wait_for(SHIP, ship, Some(Duration::from_secs(30))).await?;
    println!("  -> {shipped}");

    // One more failure, left in the dead-letter queue for the CLI.
    let lost = Order { id: 300 + run, cents: 150, address: " ".into() };
    let left = engine.dispatch(SHIP, &lost).await?;
    let _ = engine.wait_for(SHIP, left, Some(Duration::from_secs(30))).await;
    println!("dispatched ship_order #{left} with a blank address: left in the dead-letter queue");

    let counts = engine.counts_by_state()?;
    let summary: Vec<String> = counts.iter().filter(|(_, n)| *n > 0).map(|(s, n)| format!("{s}={n}")).collect();
    println!("executions in {db}: {}", summary.join(" "));
    println!("dead letters left: {}", engine.dead_letters(1000)?.len());

    workers.drain().await?;
    engine.close().await?;

    println!();
    println!("look at the file with the CLI (cargo build --release puts it at target/release/stent):");
    println!("  stent --db {db} list");
    println!("  stent --db {db} show {charge}");
    println!("  stent --db {db} stats");
    println!("  stent --db {db} dlq list");
    println!(
        "  stent --db {db} dlq replay <ID> --input '{{\"id\":{},\"cents\":150,\"address\":\"1 Elm St\"}}'",
        300 + run
    );
    println!("  stent --db {db} check");
    Ok(())
}
