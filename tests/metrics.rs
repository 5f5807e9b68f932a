//! What stent reports through the `metrics` facade, captured by an in-memory recorder (one
//! test per binary: the recorder is process-global).

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use stent::{Activity, ActivityError, Engine, RetryPolicy, WorkerOptions};

const PAY: Activity<u32, u32> = Activity::new("pay");

#[tokio::test(flavor = "multi_thread")]
async fn attempts_commits_and_leases_are_counted_with_bounded_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let dir = tempfile::tempdir().unwrap();
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
            stent::FunctionOptions::new().retry(RetryPolicy::none()),
        )
        .open()
        .unwrap();
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    let ok = engine.dispatch(PAY, &5).await.unwrap();
    engine.wait_for(PAY, ok, Some(Duration::from_secs(10))).await.unwrap();
    let bad = engine.dispatch(PAY, &0).await.unwrap();
    assert!(engine.wait_for(PAY, bad, Some(Duration::from_secs(10))).await.is_err());
    pool.drain().await.unwrap();
    engine.close().await.unwrap();

    let mut counters = std::collections::BTreeMap::new();
    let mut histograms = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        assert!(
            key.labels().all(|l| ["function", "outcome"].contains(&l.key())),
            "unbounded label on {}: {labels:?}",
            key.name()
        );
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                counters.insert(name, n);
            }
            (MetricKind::Histogram, DebugValue::Histogram(samples)) => {
                histograms.insert(name, samples.len());
            }
            _ => {}
        }
    }
    assert_eq!(counters.get("stent_claims_total{function=pay}"), Some(&2), "{counters:?}");
    assert_eq!(counters.get("stent_attempts_total{function=pay,outcome=completed}"), Some(&1), "{counters:?}");
    assert_eq!(counters.get("stent_attempts_total{function=pay,outcome=failed}"), Some(&1), "{counters:?}");
    assert!(counters.get("stent_commits_total{}").is_some_and(|&n| n >= 4), "{counters:?}");
    assert!(histograms.get("stent_commit_seconds{}").is_some_and(|&n| n >= 4), "{histograms:?}");
    assert_eq!(histograms.get("stent_attempt_seconds{function=pay}"), Some(&2), "{histograms:?}");
}
