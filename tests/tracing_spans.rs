//! The tracing spans an operator sees: one `execution` span per execution while it is in this
//! process's memory, and inside it one `attempt` span per attempt, with the execution id, task
//! id, function and attempt number. A replay (a workflow re-run over its journal after a
//! restart) runs no finished step again, so it adds no span for one.
//!
//! Method: a capturing `tracing` layer installed once for the binary; each test uses its own
//! function names and reads only the spans of those.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use stent::{Activity, Ctx, Engine, ExecutionId, WorkerOptions, Workflow};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// One span as the subscriber saw it.
#[derive(Clone, Debug)]
struct Seen {
    serial: usize,
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<usize>,
    closed: bool,
}

impl Seen {
    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

static SPANS: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

/// Records every span's fields and parent (by serial, kept in the span's extensions).
struct Capture;

struct Serial(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span is registered");
        let parent = span.parent().and_then(|p| p.extensions().get::<Serial>().map(|s| s.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = SPANS.lock().unwrap();
        let serial = spans.len();
        spans.push(Seen { serial, name: attrs.metadata().name(), fields, parent, closed: false });
        span.extensions_mut().insert(Serial(serial));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).expect("a closing span is registered");
        let serial = span.extensions().get::<Serial>().map(|s| s.0);
        if let Some(serial) = serial {
            SPANS.lock().unwrap()[serial].closed = true;
        }
    }
}

fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture)).unwrap();
    });
}

/// The spans of `functions`' executions and attempts, in creation order.
fn spans_of(functions: &[&str]) -> Vec<Seen> {
    SPANS.lock().unwrap().iter().filter(|s| functions.contains(&s.field("function"))).cloned().collect()
}

fn id_field(id: ExecutionId) -> String {
    id.0.to_string()
}

const A1: Activity<u32, u32> = Activity::new("a1");
const B1: Activity<u32, u32> = Activity::new("b1");
const ORDER1: Workflow<u32, u32> = Workflow::new("order1");

#[tokio::test(flavor = "multi_thread")]
async fn an_executions_attempts_are_children_of_its_one_execution_span() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .path(dir.path().join("spans.stent"))
        .activity(A1, |n: u32| async move { Ok(n + 1) })
        .activity(B1, |n: u32| async move { Ok(n * 2) })
        .workflow(ORDER1, |ctx: Ctx, n: u32| async move {
            let a = ctx.call(A1, &n).await?;
            ctx.call(B1, &a).await
        })
        .open()
        .unwrap();
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    let id = engine.dispatch(ORDER1, &3).await.unwrap();
    assert_eq!(engine.wait_for(ORDER1, id, WAIT).await.unwrap(), 8);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();

    let spans = spans_of(&["order1", "a1", "b1"]);
    let executions: Vec<&Seen> = spans.iter().filter(|s| s.name == "execution").collect();
    assert_eq!(executions.len(), 1, "one execution span: {spans:#?}");
    let execution = executions[0];
    assert_eq!(execution.field("execution_id"), id_field(id));
    assert_eq!(execution.field("function"), "order1");
    assert_eq!(execution.parent, None, "an execution span is a root");
    assert!(execution.closed, "the finished execution's span is closed");

    let attempts: Vec<&Seen> = spans.iter().filter(|s| s.name == "attempt").collect();
    let count = |f: &str| attempts.iter().filter(|s| s.field("function") == f).count();
    assert_eq!((count("a1"), count("b1")), (1, 1), "{attempts:#?}");
    assert!(count("order1") >= 1, "{attempts:#?}");
    for attempt in &attempts {
        assert_eq!(attempt.parent, Some(execution.serial), "attempt outside its execution: {attempt:#?}");
        assert_eq!(attempt.field("execution_id"), id_field(id));
        assert!(attempt.field("task_id").parse::<u64>().is_ok(), "{attempt:#?}");
        assert!(attempt.closed);
    }
    // `attempt` is the task's claim number: 1 for each step, and one more for each time the
    // workflow resumed (each resume claims its task again).
    let numbers = |f: &str| -> Vec<String> {
        attempts.iter().filter(|s| s.field("function") == f).map(|s| s.field("attempt").to_string()).collect()
    };
    assert_eq!((numbers("a1"), numbers("b1")), (vec!["1".to_string()], vec!["1".to_string()]));
    let expected: Vec<String> = (1..=count("order1")).map(|n| n.to_string()).collect();
    assert_eq!(numbers("order1"), expected);
    // Each step is its own task; the workflow's attempts share the root task.
    let task = |f: &str| attempts.iter().find(|s| s.field("function") == f).unwrap().field("task_id");
    assert_ne!(task("a1"), task("b1"));
    assert_ne!(task("a1"), task("order1"));
}

const A2: Activity<u32, u32> = Activity::new("a2");
const B2: Activity<u32, u32> = Activity::new("b2");
const ORDER2: Workflow<u32, u32> = Workflow::new("order2");

fn order2(path: &std::path::Path) -> Engine {
    Engine::builder()
        .path(path)
        .activity(A2, |n: u32| async move { Ok(n + 1) })
        .activity(B2, |n: u32| async move { Ok(n * 2) })
        .workflow(ORDER2, |ctx: Ctx, n: u32| async move {
            let a = ctx.call(A2, &n).await?;
            let go: u32 = ctx.wait_for_signal("go").await?;
            ctx.call(B2, &(a + go)).await
        })
        .open()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_restart_adds_no_span_for_a_finished_step() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.stent");

    let engine = order2(&path);
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    let id = engine.dispatch(ORDER2, &3).await.unwrap();
    stent::testing::wait_until(Duration::from_secs(20), "the workflow waits for the signal", || {
        engine.state_of(id).unwrap().progress.iter().any(|line| line.contains("go"))
    })
    .await;
    pool.drain().await.unwrap();
    engine.close().await.unwrap();
    let before = spans_of(&["order2", "a2", "b2"]).len();

    let engine = order2(&path);
    let pool = engine.serve(WorkerOptions::default()).unwrap();
    engine.send_signal(id, "go", &10u32).await.unwrap();
    assert_eq!(engine.wait_for(ORDER2, id, WAIT).await.unwrap(), 28);
    pool.drain().await.unwrap();
    engine.close().await.unwrap();

    let spans = spans_of(&["order2", "a2", "b2"]);
    let attempts = |f: &str| spans.iter().filter(|s| s.name == "attempt" && s.field("function") == f).count();
    assert_eq!((attempts("a2"), attempts("b2")), (1, 1), "{spans:#?}");
    let executions: Vec<&Seen> = spans.iter().filter(|s| s.name == "execution").collect();
    assert_eq!(executions.len(), 2, "one execution span per process life: {spans:#?}");
    assert!(executions.iter().all(|s| s.closed && s.field("execution_id") == id_field(id)));
    // After the restart: the workflow's replaying attempt and the new step, in the new span.
    let after = &spans[before..];
    assert!(after.iter().any(|s| s.name == "attempt" && s.field("function") == "order2"), "{after:#?}");
    for attempt in after.iter().filter(|s| s.name == "attempt") {
        assert_eq!(attempt.parent, Some(executions[1].serial), "{attempt:#?}");
    }
}
