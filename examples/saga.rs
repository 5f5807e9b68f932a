//! A saga: a trip books a flight, then a hotel, then charges the card; if a step fails or the
//! trip is cancelled, what was done is undone in reverse order (cancel the hotel, then the
//! flight), each undo a durable step of its own. Two trips run on a real file: one whose card
//! is declined, and one cancelled by an operator while the charge is in flight (the workflow
//! is registered with `cancel_grace`, so the cancel lets it compensate).
//!
//!     cargo run --release --example saga [-- --db PATH]

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stent::{Activity, ActivityError, Ctx, Engine, Error, ExecutionState, FunctionOptions, WorkerOptions, Workflow};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trip {
    traveller: String,
    card: String,
}

const BOOK_FLIGHT: Activity<Trip, String> = Activity::new("book_flight");
const BOOK_HOTEL: Activity<Trip, String> = Activity::new("book_hotel");
const CHARGE: Activity<Trip, String> = Activity::new("charge");
const CANCEL_FLIGHT: Activity<String, ()> = Activity::new("cancel_flight");
const CANCEL_HOTEL: Activity<String, ()> = Activity::new("cancel_hotel");
const BOOK_TRIP: Workflow<Trip, String> = Workflow::new("book_trip");

/// Books the trip; on a failure or a cancel, undoes the bookings made so far, newest first.
async fn book_trip(ctx: Ctx, trip: Trip) -> stent::Result<String> {
    let mut undo: Vec<(Activity<String, ()>, String)> = Vec::new();
    let outcome = async {
        let flight = ctx.call(BOOK_FLIGHT, &trip).await?;
        undo.push((CANCEL_FLIGHT, flight.clone()));
        let hotel = ctx.call(BOOK_HOTEL, &trip).await?;
        undo.push((CANCEL_HOTEL, hotel.clone()));
        let receipt = ctx.call(CHARGE, &trip).await?;
        Ok::<_, Error>(format!("{flight}, {hotel}, paid ({receipt})"))
    }
    .await;
    match outcome {
        Ok(summary) => Ok(summary),
        Err(error) => {
            // Compensation: journaled steps like any other, so a crash here resumes the undo
            // where it stood, and a cancel does not stop it (only its grace bounds it).
            for (cancel, booking) in undo.iter().rev() {
                ctx.call(*cancel, booking).await?;
            }
            Err(error)
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let db = match args.iter().position(|a| a == "--db") {
        Some(i) => args.get(i + 1).cloned().ok_or_else(|| anyhow::anyhow!("--db needs a path"))?,
        None => "saga.stent".to_string(),
    };
    // The charge of a card named "slow" waits until the operator has cancelled the trip.
    let cancelled = Arc::new(Notify::new());
    let charging = Arc::new(Notify::new());
    let (wait_cancel, started) = (cancelled.clone(), charging.clone());
    let engine = Engine::builder()
        .path(&db)
        .activity(BOOK_FLIGHT, |t: Trip| async move {
            println!("  booked a flight for {}", t.traveller);
            Ok::<_, ActivityError>(format!("flight for {}", t.traveller))
        })
        .activity(BOOK_HOTEL, |t: Trip| async move {
            println!("  booked a hotel for {}", t.traveller);
            Ok::<_, ActivityError>(format!("hotel for {}", t.traveller))
        })
        .activity(CHARGE, move |t: Trip| {
            let (wait_cancel, started) = (wait_cancel.clone(), started.clone());
            async move {
                match t.card.as_str() {
                    "declined" => Err(ActivityError::permanent("card declined").with_code("declined")),
                    "slow" => {
                        started.notify_one();
                        wait_cancel.notified().await;
                        Ok(format!("charged {}", t.traveller))
                    }
                    _ => Ok(format!("charged {}", t.traveller)),
                }
            }
        })
        .activity(CANCEL_HOTEL, |booking: String| async move {
            println!("  cancelled the {booking}");
            Ok::<_, ActivityError>(())
        })
        .activity(CANCEL_FLIGHT, |booking: String| async move {
            println!("  cancelled the {booking}");
            Ok::<_, ActivityError>(())
        })
        .workflow_with(BOOK_TRIP, book_trip, FunctionOptions::new().cancel_grace("1m"))
        .open()?;
    let pool = engine.serve(WorkerOptions::default())?;

    println!("trip 1: ada's card is declined");
    let ada = engine.dispatch(BOOK_TRIP, &Trip { traveller: "ada".into(), card: "declined".into() }).await?;
    match engine.wait_for(BOOK_TRIP, ada, Some(Duration::from_secs(30))).await {
        Err(e) => println!("trip 1 ended: {e}"),
        Ok(summary) => println!("trip 1 ended: {summary}"),
    }

    println!("trip 2: grace's trip is cancelled while her card is being charged");
    let grace = engine.dispatch(BOOK_TRIP, &Trip { traveller: "grace".into(), card: "slow".into() }).await?;
    charging.notified().await;
    let state = engine.cancel(grace).await?;
    println!("  cancel asked for: the execution is {state} while it compensates");
    cancelled.notify_one();
    let result = engine.wait_for(BOOK_TRIP, grace, Some(Duration::from_secs(30))).await;
    let info = engine.state_of(grace)?;
    println!("trip 2 ended {}: {}", info.state, result.unwrap_or_else(|e| e.to_string()));
    anyhow::ensure!(info.state == ExecutionState::Cancelled, "trip 2 should end cancelled");
    let steps: Vec<String> = engine.steps(grace)?.iter().map(|s| format!("{} {}", s.kind, s.outcome)).collect();
    println!("  its journal: {}", steps.join("; "));
    pool.drain().await?;
    engine.close().await?;
    Ok(())
}
