//! What stent reports through the `metrics` facade, captured by an in-memory recorder (one
//! test per binary: the recorder is process-global).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use stent::{Activity, ActivityError, Ctx, Engine, RetryPolicy, WorkerOptions, Workflow};
use tokio::sync::Notify;

const PAY: Activity<u32, u32> = Activity::new("pay");
const FLAKY: Activity<u32, u32> = Activity::new("flaky");
const BLOCK: Activity<u32, u32> = Activity::new("block");
const FLIP: Activity<u32, u32> = Activity::new("flip");
const SWITCHY: Workflow<u32, u32> = Workflow::new("switchy");
const AWAIT_GO: Workflow<u32, String> = Workflow::new("await_go");

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);
static FLIPPED: AtomicBool = AtomicBool::new(false);
static STARTED: Notify = Notify::const_new();
static GATE: Notify = Notify::const_new();

/// Fails its first attempt (retryably), then succeeds.
async fn flaky(n: u32) -> Result<u32, ActivityError> {
    if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        Err(ActivityError::retryable("first attempt"))
    } else {
        Ok(n)
    }
}

/// Runs until the test opens the gate.
async fn block(n: u32) -> Result<u32, ActivityError> {
    STARTED.notify_one();
    GATE.notified().await;
    Ok(n)
}

/// A workflow body that changes under its running execution: its replay asks for another
/// step than the journal holds.
async fn switchy(ctx: Ctx, n: u32) -> stent::Result<u32> {
    if FLIPPED.load(Ordering::SeqCst) {
        ctx.call(PAY, &n).await
    } else {
        ctx.call(FLIP, &n).await
    }
}

/// A recorder that keeps what it is given (the `debugging` one drains on every snapshot,
/// gauges included, which cannot show a gauge that stayed put).
#[derive(Clone)]
struct Kept(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Kept {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0.get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0.get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// Counters and gauges by `name{labels}`, histograms by their sample counts.
#[derive(Debug)]
struct Seen {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
    histograms: BTreeMap<String, usize>,
}

/// Reads everything recorded so far; fails on a label outside the bounded set.
fn seen(kept: &Kept) -> Seen {
    fn name(key: &Key) -> String {
        assert!(
            key.labels().all(|l| ["function", "outcome", "queue"].contains(&l.key())),
            "unbounded label on {}: {key:?}",
            key.name()
        );
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }
    let mut seen = Seen { counters: BTreeMap::new(), gauges: BTreeMap::new(), histograms: BTreeMap::new() };
    kept.0.visit_counters(|key, c| {
        seen.counters.insert(name(key), c.load(Ordering::SeqCst));
    });
    kept.0.visit_gauges(|key, g| {
        seen.gauges.insert(name(key), f64::from_bits(g.load(Ordering::SeqCst)));
    });
    kept.0.visit_histograms(|key, h| {
        seen.histograms.insert(name(key), h.data().len());
    });
    seen
}

/// Waits until the gauge `name` reads `want` (its change happens on an engine task).
async fn until_gauge(kept: &Kept, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let gauges = seen(kept).gauges;
        if gauges.get(name) == Some(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never reached {want}: {gauges:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_engine_does_is_counted_and_gauged_with_bounded_labels() {
    let kept = Kept(Arc::new(Registry::atomic()));
    metrics::set_global_recorder(kept.clone()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let no_retry = stent::FunctionOptions::new().retry(RetryPolicy::none());
    let engine = Engine::builder()
        .path(dir.path().join("m.stent"))
        .activity_with(
            PAY,
            |n: u32| async move {
                if n == 0 {
                    Err(ActivityError::permanent("zero"))
                } else {
                    Ok(n)
                }
            },
            no_retry.clone(),
        )
        .activity_with(
            FLAKY,
            flaky,
            stent::FunctionOptions::new().retry(RetryPolicy::exponential(3, Duration::from_millis(10))),
        )
        .activity(BLOCK, block)
        .activity(FLIP, |n: u32| async move {
            FLIPPED.store(true, Ordering::SeqCst);
            Ok(n)
        })
        .workflow_with(SWITCHY, switchy, no_retry)
        // Every workflow attempt replays its journal, so the changed body is seen.
        .parked_workflows_max(0)
        .open()
        .unwrap();
    let pool = engine.serve(WorkerOptions::default()).unwrap();

    let ok = engine.dispatch(PAY, &5).await.unwrap();
    engine.wait_for(PAY, ok, WAIT).await.unwrap();
    let bad = engine.dispatch(PAY, &0).await.unwrap();
    assert!(engine.wait_for(PAY, bad, WAIT).await.is_err());
    let first = engine.dispatch(PAY, &6).idempotency_key("once").await.unwrap();
    let again = engine.dispatch(PAY, &6).idempotency_key("once").await.unwrap();
    assert_eq!(first, again);
    let flaked = engine.dispatch(FLAKY, &7).await.unwrap();
    assert_eq!(engine.wait_for(FLAKY, flaked, WAIT).await.unwrap(), 7);
    let switched = engine.dispatch(SWITCHY, &8).await.unwrap();
    assert!(engine.wait_for(SWITCHY, switched, WAIT).await.is_err());

    // Gauges while work waits: one attempt running, one task sleeping, one queued where no
    // pool serves.
    let blocked = engine.dispatch(BLOCK, &9).await.unwrap();
    STARTED.notified().await;
    engine.dispatch(PAY, &10).delay("1h").await.unwrap();
    engine.dispatch(PAY, &11).queue("unserved").await.unwrap();
    let during = seen(&kept);
    assert_eq!(during.gauges.get("stent_running_attempts{}"), Some(&1.0), "{during:?}");
    assert_eq!(during.gauges.get("stent_sleeping_tasks{}"), Some(&1.0), "{during:?}");
    assert_eq!(during.gauges.get("stent_queue_depth{queue=unserved}"), Some(&1.0), "{during:?}");
    GATE.notify_one();
    engine.wait_for(BLOCK, blocked, WAIT).await.unwrap();
    pool.drain().await.unwrap();
    engine.close().await.unwrap();

    let Seen { counters, gauges, histograms } = seen(&kept);
    assert_eq!(counters.get("stent_claims_total{function=pay}"), Some(&3), "{counters:?}");
    assert_eq!(counters.get("stent_attempts_total{function=pay,outcome=completed}"), Some(&2), "{counters:?}");
    assert_eq!(counters.get("stent_attempts_total{function=pay,outcome=failed}"), Some(&1), "{counters:?}");
    assert_eq!(counters.get("stent_dispatches_total{function=pay,outcome=created}"), Some(&5), "{counters:?}");
    assert_eq!(counters.get("stent_dispatches_total{function=pay,outcome=existing}"), Some(&1), "{counters:?}");
    assert_eq!(counters.get("stent_retries_total{function=flaky}"), Some(&1), "{counters:?}");
    assert_eq!(counters.get("stent_retries_total{function=pay}"), None, "{counters:?}");
    assert_eq!(counters.get("stent_dead_letters_total{function=pay}"), Some(&1), "{counters:?}");
    assert_eq!(counters.get("stent_dead_letters_total{function=switchy}"), Some(&1), "{counters:?}");
    assert_eq!(counters.get("stent_nondeterminism_total{function=switchy}"), Some(&1), "{counters:?}");
    assert!(counters.get("stent_commits_total{}").is_some_and(|&n| n >= 8), "{counters:?}");
    assert!(histograms.get("stent_commit_seconds{}").is_some_and(|&n| n >= 8), "{histograms:?}");
    assert_eq!(histograms.get("stent_attempt_seconds{function=pay}"), Some(&3), "{histograms:?}");
    // The retry's backoff went through a timer.
    assert!(histograms.get("stent_wakeup_lateness_seconds{}").is_some_and(|&n| n >= 1), "{histograms:?}");
    assert_eq!(gauges.get("stent_running_attempts{}"), Some(&0.0), "{gauges:?}");

    // A workflow blocked on a signal is parked in memory until the signal wakes it.
    let parking = Engine::builder()
        .path(dir.path().join("p.stent"))
        .workflow(AWAIT_GO, |ctx: Ctx, _n: u32| async move { ctx.wait_for_signal::<String>("go").await })
        .open()
        .unwrap();
    let pool = parking.serve(WorkerOptions::default()).unwrap();
    let waiting = parking.dispatch(AWAIT_GO, &1).await.unwrap();
    until_gauge(&kept, "stent_parked_workflows{}", 1.0).await;
    parking.send_signal(waiting, "go", &"now".to_string()).await.unwrap();
    assert_eq!(parking.wait_for(AWAIT_GO, waiting, WAIT).await.unwrap(), "now");
    until_gauge(&kept, "stent_parked_workflows{}", 0.0).await;
    pool.drain().await.unwrap();
    parking.close().await.unwrap();
}
