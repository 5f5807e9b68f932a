//! Focused micro benches (criterion). The end-to-end figures on a real file are in
//! `examples/bench.rs`; these isolate the CPU side: record codec, the engine's dispatch →
//! claim → complete path on an in-memory store (no fsync), and retry delay arithmetic.
//!
//!     cargo bench --bench engine

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use redb::backends::InMemoryBackend;
use redb::{Database, Durability, TableDefinition};
use stent::storage::codec::{decode, encode};
use stent::storage::records::{LeaseRecord, RetryRecord, TaskRecord};
use stent::storage::tables::TASKS_NAME;
use stent::storage::{Faults, NewExecution, Op, OpOutput, OpenOptions, RedbStore, Store};
use stent::{Activity, ActivityError, Engine, RetryPolicy, TaskState, WorkerOptions};

const ECHO: Activity<u64, u64> = Activity::new("echo");
const BATCH: u64 = 1_000;

fn task_record() -> TaskRecord {
    TaskRecord {
        id: 123_456,
        execution_id: 123_456,
        kind: stent::storage::records::TaskKind::Activity,
        step: None,
        function: "charge_card".into(),
        queue: "default".into(),
        priority: 0,
        tags: vec!["eu".into()],
        input: br#"{"id":42,"cents":4200,"address":"1 Main St"}"#.to_vec(),
        state: TaskState::Running,
        due_ms: None,
        ready_ms: 1_700_000_000_000,
        attempt: 1,
        round_start: 0,
        lease: Some(LeaseRecord {
            worker: "worker-1234".into(),
            token: 1,
            started_ms: 1_700_000_000_010,
            expires_ms: 1_700_000_030_010,
        }),
        retry: RetryRecord::from(&RetryPolicy::default()),
        timeout_ms: None,
        cache: None,
        history: Vec::new(),
        created_ms: 1_700_000_000_000,
        version: 1,
        rate_slot_ms: None,
    }
}

fn codec(c: &mut Criterion) {
    let task = task_record();
    let bytes = encode(&task);
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode_task_record", |b| b.iter(|| encode(black_box(&task))));
    group.bench_function("decode_task_record", |b| {
        b.iter(|| decode::<TaskRecord>(TASKS_NAME, &123_456u64, black_box(&bytes)).expect("the record decodes"))
    });
    group.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

fn in_memory_engine(rt: &tokio::runtime::Runtime) -> Engine {
    let _guard = rt.enter();
    Engine::builder()
        .in_memory()
        .activity_with(
            ECHO,
            |x: u64| async move { Ok::<_, ActivityError>(x) },
            stent::FunctionOptions::new().retry(RetryPolicy::none()),
        )
        .open()
        .expect("the in-memory engine opens")
}

fn in_memory(c: &mut Criterion) {
    let rt = runtime();
    let engine = in_memory_engine(&rt);
    let workers = rt.block_on(async {
        let workers = engine
            .serve(WorkerOptions { worker_id: "bench".into(), max_concurrency: 512, ..WorkerOptions::default() })
            .expect("serve");
        workers.wait_until_ready().await;
        workers
    });

    let mut group = c.benchmark_group("in_memory");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));

    // 1,000 concurrent dispatch + wait_for, run by one pool: group commit without fsync.
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("dispatch_complete_batch_1000", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..BATCH {
                    let engine = engine.clone();
                    tasks.spawn(async move {
                        let id = engine.dispatch(ECHO, &i).await.expect("dispatch");
                        engine.wait_for(ECHO, id, None).await.expect("completes")
                    });
                }
                while let Some(out) = tasks.join_next().await {
                    black_box(out.expect("no panic"));
                }
            })
        })
    });

    // One execution at a time: the engine's own latency (three commits, no fsync).
    group.throughput(Throughput::Elements(1));
    group.bench_function("dispatch_to_completion_one", |b| {
        b.iter(|| {
            rt.block_on(async {
                let id = engine.dispatch(ECHO, &7).await.expect("dispatch");
                engine.wait_for(ECHO, id, None).await.expect("completes")
            })
        })
    });
    group.finish();

    rt.block_on(async {
        workers.drain().await.expect("drain");
        engine.close().await.expect("close");
    });
}

/// The storage work of one execution without the engine's threads: the three single-op
/// transactions (dispatch, claim, complete) the writer commits for it, on an in-memory store.
fn store(c: &mut Criterion) {
    let store = RedbStore::open(OpenOptions {
        init_empty_file: false,
        read_only: false,
        file_mode: stent::storage::FILE_MODE_DEFAULT,
        path: None,
        backend: None,
        verify_on_open: stent::VerifyOnOpen::Live,
        faults: Arc::new(Faults::default()),
        cache_entries_max: 10_000,
        page_cache_bytes: 64 << 20,
    })
    .expect("an in-memory store");
    let new = NewExecution {
        claim: None,
        schedule: None,
        keys: Default::default(),
        flow: None,
        cache: None,
        kind: stent::storage::records::TaskKind::Activity,
        function: "echo".into(),
        queue: "default".into(),
        priority: 0,
        tags: Vec::new(),
        input: b"7".to_vec(),
        delay_ms: 0,
        max_duration_ms: None,
        idempotency_key: None,
        retry: RetryRecord::from(&RetryPolicy::none()),
        timeout_ms: None,
        version: 1,
    };
    let mut now = 1_700_000_000_000u64;
    let mut one = |op: Op| {
        now += 1;
        let (mut results, _effects) = store.apply_batch(now, vec![op]).expect("commit");
        results.pop().expect("one result").expect("op accepted")
    };
    c.bench_function("store/dispatch_claim_complete_one", |b| {
        b.iter(|| {
            let OpOutput::Dispatched { execution_id, .. } = one(Op::Dispatch(new.clone())) else {
                panic!("dispatch answered something else")
            };
            // A fresh execution's root task has the same id as the execution.
            let OpOutput::Claimed(claimed) = one(Op::Claim {
                task_id: execution_id,
                worker: "bench".into(),
                lease_ms: 30_000,
                version: 1,
                limits: Default::default(),
            }) else {
                panic!("claim answered something else")
            };
            one(Op::Complete {
                task_id: claimed.task_id,
                token: claimed.token,
                output: b"7".to_vec(),
                local: Default::default(),
                next: None,
            })
        })
    });
}

/// Raw redb on its in-memory backend: the floor under one engine commit without fsync.
fn redb_in_memory(c: &mut Criterion) {
    const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");
    let db = Database::builder().create_with_backend(InMemoryBackend::new()).expect("an in-memory redb");
    let value = [7u8; 100];
    let mut key = 0u64;
    c.bench_function("redb_in_memory/commit_one_record", |b| {
        b.iter(|| {
            let mut txn = db.begin_write().expect("begin_write");
            txn.set_durability(Durability::Immediate).expect("durability");
            {
                let mut table = txn.open_table(RAW).expect("open_table");
                table.insert(key, value.as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
            key += 1;
        })
    });
}

fn retry(c: &mut Criterion) {
    let policy = RetryPolicy::exponential(10, Duration::from_millis(200))
        .with_jitter(0.2)
        .with_max_delay(Duration::from_secs(60));
    // Ten consecutive delays, as a task that exhausts its budget would draw them.
    c.bench_function("retry/delay_after_x10", |b| {
        b.iter(|| {
            (1u32..=10).map(|n| policy.delay_after(black_box(n), black_box(f64::from(n) / 11.0))).sum::<Duration>()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec, in_memory, store, redb_in_memory, retry
}
criterion_main!(benches);
