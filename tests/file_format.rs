//! The file format holds still: records written by this format (committed as bytes in
//! `tests/fixtures/records_v1.hex`) decode to exactly the values they were made from, and
//! encoding those values gives exactly those bytes. A change to a stored type (a field added
//! to a record, or to an API type a record embeds) fails here, instead of silently changing
//! what is on users' disks; such a change needs a new format or schema version and a
//! migration (docs/design.md).
//!
//! Method: one sample of every record kind, with every optional field set and every enum
//! variant that a record can hold. `STENT_WRITE_FIXTURE=1 cargo test --test file_format`
//! rewrites the fixture (only when the format is changed on purpose).

use stent::storage::codec::{append_fields, decode, encode};
use stent::storage::records::{
    CachePolicy, CacheRecord, DeadLetterRecord, ExecutionKeys, ExecutionRecord, ExecutionTemplate, JournalEntry,
    LeaseRecord, ParentStep, RetryRecord, ScheduleOrigin, ScheduleRecord, StepKind, StepOutcome, TaskKind, TaskRecord,
    SCHEMA5_EXECUTION_DEFAULTS, SCHEMA5_TASK_DEFAULTS, SCHEMA6_EXECUTION_DEFAULTS, SCHEMA6_TASK_DEFAULTS,
};
use stent::{ActivityError, AttemptRecord, CatchUp, ExecutionState, Overlap, ScheduleSpec, TaskState};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/records_v1.hex");

fn error() -> ActivityError {
    ActivityError::permanent("card declined")
        .with_code("declined")
        .with_details(&serde_json::json!({ "card": "visa", "retry": false }))
}

fn attempt() -> AttemptRecord {
    AttemptRecord { attempt: 2, worker: "w-1".into(), started_ms: 1_000, ended_ms: 1_250, error: error() }
}

fn retry() -> RetryRecord {
    RetryRecord {
        max_attempts: 5,
        initial_delay_ms: 1_000,
        backoff_factor: 2.0,
        max_delay_ms: 60_000,
        jitter: 0.25,
        retry_codes: vec!["timeout".into()],
        permanent_codes: vec!["declined".into()],
    }
}

fn execution() -> ExecutionRecord {
    ExecutionRecord {
        id: 42,
        function: "checkout".into(),
        queue: "orders".into(),
        priority: -3,
        tags: vec!["eu".into(), "gpu".into()],
        state: ExecutionState::Failed,
        root_task: 7,
        created_ms: 1_700_000_000_000,
        scheduled_ms: 1_700_000_000_500,
        started_ms: Some(1_700_000_000_600),
        finished_ms: Some(1_700_000_009_000),
        max_duration_ms: Some(3_600_000),
        deadline_ms: Some(1_700_003_600_500),
        output: Some(b"\"ok\"".to_vec()),
        error: Some(error()),
        idempotency_key: Some("order-42".into()),
        parent: Some(ParentStep { execution_id: 41, step: 3 }),
        version: 3,
        run: 2,
        cancel_requested_ms: Some(1_700_000_005_000),
        schedule: Some(ScheduleOrigin { name: "nightly".into(), nominal_ms: 1_700_000_000_000, triggered: true }),
        keys: ExecutionKeys {
            concurrency: Some("customer-7".into()),
            rate: Some("account-3".into()),
            flow: Some("debounce:sync-7".into()),
        },
    }
}

fn task() -> TaskRecord {
    TaskRecord {
        id: 7,
        execution_id: 42,
        kind: TaskKind::Workflow,
        step: Some(2),
        function: "charge".into(),
        queue: "orders".into(),
        priority: 5,
        tags: vec!["eu".into()],
        input: b"{\"cents\":4200}".to_vec(),
        state: TaskState::Running,
        due_ms: Some(1_700_000_001_000),
        ready_ms: 1_700_000_000_900,
        attempt: 3,
        round_start: 1,
        lease: Some(LeaseRecord { worker: "w-2".into(), token: 3, started_ms: 2_000, expires_ms: 32_000 }),
        retry: retry(),
        timeout_ms: Some(30_000),
        cache: Some(CachePolicy { version: 2, ttl_ms: 3_600_000 }),
        history: vec![attempt()],
        created_ms: 1_700_000_000_000,
        version: 3,
        rate_slot_ms: Some(1_700_000_002_000),
    }
}

fn journal() -> Vec<JournalEntry> {
    let kinds = [
        StepKind::Call { function: "charge".into() },
        StepKind::Sleep { until_ms: 99 },
        StepKind::Now,
        StepKind::Random,
        StepKind::Signal { name: "approval".into(), timed: true },
        StepKind::Child { function: "ship".into() },
        StepKind::Counter { name: "items".into() },
        StepKind::SetState { key: "stage".into() },
        StepKind::GetState { key: "stage".into() },
        StepKind::Local { name: "ledger".into() },
        // Appended later: the variants before keep their tags, so older entries' bytes hold.
        StepKind::Patch { id: "audit".into() },
        StepKind::StartChild { function: "report".into() },
        StepKind::Race { steps: vec![3, 4] },
        StepKind::Cancel { step: 2 },
    ];
    let outcomes = [
        StepOutcome::Scheduled { task_id: 8 },
        StepOutcome::AwaitingSignal { timer: Some(9) },
        StepOutcome::AwaitingSignal { timer: None },
        StepOutcome::Child { execution_id: 43 },
        StepOutcome::Completed { output: b"12".to_vec() },
        StepOutcome::Failed { error: error() },
    ];
    let mut entries = Vec::new();
    for (step, kind) in kinds.iter().enumerate() {
        let outcome = outcomes[step % outcomes.len()].clone();
        entries.push(JournalEntry {
            step: step as u32,
            kind: kind.clone(),
            outcome,
            recorded_ms: 1_700_000_000_000 + step as u64,
        });
    }
    entries
}

fn dead_letter() -> DeadLetterRecord {
    DeadLetterRecord {
        id: 3,
        execution_id: 42,
        task_id: 7,
        function: "charge".into(),
        queue: "orders".into(),
        input: b"{\"cents\":4200}".to_vec(),
        error: error(),
        attempts: 3,
        history: vec![attempt()],
        failed_ms: 1_700_000_009_000,
    }
}

/// Two schedules: every field set, and each variant of the spec and the policies between them.
fn schedules() -> [ScheduleRecord; 4] {
    let one = ScheduleRecord {
        name: "nightly".into(),
        template: ExecutionTemplate {
            function: "report".into(),
            kind: TaskKind::Workflow,
            queue: "reports".into(),
            priority: 2,
            retry: retry(),
            timeout_ms: Some(30_000),
            cache: Some(CachePolicy { version: 2, ttl_ms: 60_000 }),
            version: 3,
        },
        input: b"{\"region\":\"eu\"}".to_vec(),
        spec: ScheduleSpec::Cron { expr: "0 9 * * MON-FRI".into(), tz: "Europe/Berlin".into() },
        catch_up: CatchUp::All { max: 7 },
        overlap: Overlap::BufferOne,
        jitter_ms: 5_000,
        paused: true,
        after_ms: 1_700_000_000_000,
        next_ms: Some(1_700_086_400_000),
        buffered: Some(1_700_000_000_000),
        last_execution: Some(42),
        last_fire_ms: Some(1_699_913_600_000),
        fires: 12,
        skipped: 3,
        created_ms: 1_690_000_000_000,
        updated_ms: 1_699_000_000_000,
    };
    let every = ScheduleRecord {
        spec: ScheduleSpec::Every { period_ms: 900_000 },
        catch_up: CatchUp::Skip,
        overlap: Overlap::Skip,
        ..one.clone()
    };
    let allow = ScheduleRecord { catch_up: CatchUp::One, overlap: Overlap::Allow, ..one.clone() };
    let cancel = ScheduleRecord {
        overlap: Overlap::CancelPrevious,
        next_ms: None,
        buffered: None,
        last_execution: None,
        last_fire_ms: None,
        ..one.clone()
    };
    [one, every, allow, cancel]
}

fn cache() -> CacheRecord {
    CacheRecord { output: b"\"cached\"".to_vec(), expires_ms: 1_700_003_600_000 }
}

/// Every sample, by name, encoded.
fn samples() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("execution".to_string(), encode(&execution())),
        ("task".to_string(), encode(&task())),
        ("dead_letter".to_string(), encode(&dead_letter())),
        ("cache".to_string(), encode(&cache())),
    ];
    for entry in journal() {
        out.push((format!("journal_{}", entry.step), encode(&entry)));
    }
    for (i, schedule) in schedules().iter().enumerate() {
        out.push((format!("schedule_{i}"), encode(schedule)));
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

/// Records as files of older schemas hold them (schema 4: before schema 5 appended versions
/// and runs; schema 5: before schema 6 appended an execution's schedule and keys and a task's
/// reserved rate slot): kept
/// in the fixture as they were committed, and migrated, not re-encoded.
const OLDER_RECORDS: [&str; 4] = ["execution_schema4", "task_schema4", "execution_schema5", "task_schema5"];

fn fixture() -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(FIXTURE).expect("tests/fixtures/records_v1.hex is committed");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, bytes) = l.split_once(' ').expect("`name hex` per line");
            (name.to_string(), unhex(bytes))
        })
        .collect()
}

#[test]
fn records_written_by_the_current_format_decode_unchanged() {
    if std::env::var_os("STENT_WRITE_FIXTURE").is_some() {
        let older: Vec<_> = fixture().into_iter().filter(|(n, _)| OLDER_RECORDS.contains(&n.as_str())).collect();
        let mut text = String::from("# Records in stent's file format v1 (see tests/file_format.rs). Do not edit.\n");
        for (name, bytes) in older.iter().cloned().chain(samples()) {
            text.push_str(&format!("{name} {}\n", hex(&bytes)));
        }
        std::fs::write(FIXTURE, text).expect("write fixture");
    }
    let (older, fixture): (Vec<_>, Vec<_>) =
        fixture().into_iter().partition(|(name, _)| OLDER_RECORDS.contains(&name.as_str()));
    let names: Vec<_> = fixture.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, samples().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), "fixture lists every sample");

    for (name, bytes) in &fixture {
        let key = &name.as_str();
        match name.as_str() {
            "execution" => assert_eq!(decode::<ExecutionRecord>("executions", key, bytes).unwrap(), execution()),
            "task" => assert_eq!(decode::<TaskRecord>("tasks", key, bytes).unwrap(), task()),
            "dead_letter" => assert_eq!(decode::<DeadLetterRecord>("dead_letters", key, bytes).unwrap(), dead_letter()),
            "cache" => assert_eq!(decode::<CacheRecord>("cache", key, bytes).unwrap(), cache()),
            s if s.starts_with("schedule_") => {
                let i: usize = s.trim_start_matches("schedule_").parse().expect("schedule_N");
                assert_eq!(decode::<ScheduleRecord>("schedules", key, bytes).unwrap(), schedules()[i]);
            }
            other => {
                let step: usize = other.trim_start_matches("journal_").parse().expect("journal_N");
                assert_eq!(decode::<JournalEntry>("journal", key, bytes).unwrap(), journal()[step]);
            }
        }
    }
    // And the other way: today's encoder writes exactly the committed bytes.
    for ((name, committed), (_, now)) in fixture.iter().zip(samples()) {
        assert_eq!(hex(committed), hex(&now), "{name}: the encoding changed");
    }

    // Older schemas' records: refused as they are, and the migrations make them today's
    // records with the defaults (version 1, run 1, no schedule), nothing else changed.
    assert_eq!(older.len(), OLDER_RECORDS.len(), "the fixture keeps the older schemas' records");
    for (name, bytes) in &older {
        let key = &name.as_str();
        if name == "execution_schema4" {
            assert!(decode::<ExecutionRecord>("executions", key, bytes).is_err(), "an unmigrated record is refused");
            let migrated = append_fields("executions", key, bytes, &SCHEMA5_EXECUTION_DEFAULTS).unwrap();
            assert!(decode::<ExecutionRecord>("executions", key, &migrated).is_err(), "schema 6 is still missing");
            let migrated = append_fields("executions", key, &migrated, &SCHEMA6_EXECUTION_DEFAULTS).unwrap();
            let expected = ExecutionRecord {
                version: 1,
                run: 1,
                cancel_requested_ms: None,
                schedule: None,
                keys: ExecutionKeys::default(),
                ..execution()
            };
            assert_eq!(decode::<ExecutionRecord>("executions", key, &migrated).unwrap(), expected);
        } else if name == "execution_schema5" {
            assert!(decode::<ExecutionRecord>("executions", key, bytes).is_err(), "an unmigrated record is refused");
            let migrated = append_fields("executions", key, bytes, &SCHEMA6_EXECUTION_DEFAULTS).unwrap();
            let expected = ExecutionRecord { schedule: None, keys: ExecutionKeys::default(), ..execution() };
            assert_eq!(decode::<ExecutionRecord>("executions", key, &migrated).unwrap(), expected);
        } else if name == "task_schema5" {
            assert!(decode::<TaskRecord>("tasks", key, bytes).is_err(), "an unmigrated record is refused");
            let migrated = append_fields("tasks", key, bytes, &SCHEMA6_TASK_DEFAULTS).unwrap();
            let expected = TaskRecord { rate_slot_ms: None, ..task() };
            assert_eq!(decode::<TaskRecord>("tasks", key, &migrated).unwrap(), expected);
        } else {
            assert!(decode::<TaskRecord>("tasks", key, bytes).is_err(), "an unmigrated record is refused");
            let migrated = append_fields("tasks", key, bytes, &SCHEMA5_TASK_DEFAULTS).unwrap();
            let migrated = append_fields("tasks", key, &migrated, &SCHEMA6_TASK_DEFAULTS).unwrap();
            let expected = TaskRecord { version: 1, rate_slot_ms: None, ..task() };
            assert_eq!(decode::<TaskRecord>("tasks", key, &migrated).unwrap(), expected);
        }
    }
}
