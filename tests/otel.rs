//! With the `otel` feature and the `tracing-opentelemetry` layer installed, an execution's
//! spans form one OpenTelemetry trace, whatever restarts it lives through: every span of it
//! carries the trace id `Engine::trace_id` names, and another execution's spans another one.
//!
//! Method: an SDK tracer provider exporting to memory (one test: the subscriber is global).
#![cfg(feature = "otel")]

use std::collections::BTreeSet;
use std::time::Duration;

use opentelemetry::trace::TracerProvider;
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use stent::{Activity, Ctx, Engine, ExecutionId, WorkerOptions, Workflow};
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Option<Duration> = Some(Duration::from_secs(20));
const STEP: Activity<u32, u32> = Activity::new("step");
const FLOW: Workflow<u32, u32> = Workflow::new("flow");

fn engine(path: &std::path::Path) -> Engine {
    Engine::builder()
        .path(path)
        .activity(STEP, |n: u32| async move { Ok(n + 1) })
        .workflow(FLOW, |ctx: Ctx, n: u32| async move {
            let a = ctx.call(STEP, &n).await?;
            let go: u32 = ctx.wait_for_signal("go").await?;
            ctx.call(STEP, &(a + go)).await
        })
        .open()
        .unwrap()
}

fn execution_of(span: &SpanData) -> Option<u64> {
    span.attributes.iter().find(|kv| kv.key.as_str() == "execution_id").and_then(|kv| match &kv.value {
        Value::I64(n) => u64::try_from(*n).ok(),
        Value::String(s) => s.as_str().parse().ok(),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executions_spans_share_one_trace_across_a_restart() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("stent-test"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otel.stent");
    let first = engine(&path);
    let pool = first.serve(WorkerOptions::default()).unwrap();
    let (one, two) = (first.dispatch(FLOW, &1).await.unwrap(), first.dispatch(FLOW, &2).await.unwrap());
    let waiting = |id: ExecutionId| first.state_of(id).unwrap().progress.iter().any(|l| l.contains("go"));
    stent::testing::wait_until(Duration::from_secs(20), "both wait for the signal", || waiting(one) && waiting(two))
        .await;
    let trace_before = first.trace_id(one);
    pool.drain().await.unwrap();
    first.close().await.unwrap();

    let second = engine(&path);
    assert_eq!(second.trace_id(one), trace_before, "the trace id is the file's, not the process's");
    assert_ne!(second.trace_id(one), second.trace_id(two));
    let pool = second.serve(WorkerOptions::default()).unwrap();
    for id in [one, two] {
        second.send_signal(id, "go", &10u32).await.unwrap();
        second.wait_for(FLOW, id, WAIT).await.unwrap();
    }
    pool.drain().await.unwrap();
    second.close().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    for id in [one, two] {
        let mine: Vec<&SpanData> = spans.iter().filter(|s| execution_of(s) == Some(id.0)).collect();
        let executions: Vec<&&SpanData> = mine.iter().filter(|s| s.name == "execution").collect();
        assert_eq!(executions.len(), 2, "one execution span per process life: {mine:#?}");
        // Per execution: 2 steps, the workflow's attempts before and after the restart.
        assert!(mine.iter().filter(|s| s.name == "attempt").count() >= 4, "{mine:#?}");
        let traces: BTreeSet<String> = mine.iter().map(|s| s.span_context.trace_id().to_string()).collect();
        assert_eq!(traces, BTreeSet::from([second.trace_id(id)]), "{mine:#?}");
        let execution_span_ids: Vec<_> = executions.iter().map(|s| s.span_context.span_id()).collect();
        for span in &mine {
            if span.name == "attempt" {
                assert!(execution_span_ids.contains(&span.parent_span_id), "attempt outside its execution: {span:#?}");
            } else {
                assert!(span.parent_span_is_remote, "an execution span hangs under the trace's root: {span:#?}");
            }
        }
    }
}
