//! Bad files and bad input: what a user sees when the database file, or a request, is wrong.
//!
//! Goal: every kind of damage a user can meet (a flipped byte in a record, a truncated file, a
//! file of garbage, a file written by a newer stent, a file already open, a payload that is too
//! large, an unknown function, a duration that does not parse) gives one clear `Err` naming the
//! problem: never a panic, never garbage returned as data, never a write to a file that is
//! refused, and nothing lost that was not damaged.
//!
//! Method: build real databases on temporary files through the public API, close the engine,
//! damage the file from outside (with redb directly for one record or the schema version, with
//! `std::fs` for truncation and garbage), reopen, and match on the exact error variant and its
//! fields. Bad-input cases use an in-memory engine and check that nothing was created: the counts
//! stay zero and the next good dispatch still gets execution id 1.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use stent::storage::StorageError;
use stent::{
    Activity, ActivityError, Engine, Error, ExecutionFilter, ExecutionId, ExecutionState, Page, VerifyOnOpen,
    WorkerOptions,
};

const ECHO: Activity<u32, u32> = Activity::new("echo");
const TEXT_LEN: Activity<String, usize> = Activity::new("text_len");

/// The on-disk tables these tests damage, spelled out here rather than taken from
/// `stent::storage::tables`, so a renamed table fails these tests.
const EXECUTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("executions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The schema version this build of stent writes.
const SUPPORTED_SCHEMA: u64 = 6;

fn open(path: &Path) -> stent::Result<Engine> {
    open_verified(path, VerifyOnOpen::default())
}

fn open_verified(path: &Path, verify: VerifyOnOpen) -> stent::Result<Engine> {
    Engine::builder()
        .path(path)
        .verify_on_open(verify)
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .open()
}

fn open_in_memory(payload_bytes_max: u64) -> stent::Result<Engine> {
    Engine::builder()
        .in_memory()
        .payload_bytes_max(payload_bytes_max)
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .activity(TEXT_LEN, |s: String| async move { Ok::<_, ActivityError>(s.len()) })
        .open()
}

/// Executions in any state.
fn total(engine: &Engine) -> stent::Result<u64> {
    Ok(engine.counts_by_state()?.iter().map(|(_, n)| n).sum())
}

fn count_of(engine: &Engine, state: ExecutionState) -> stent::Result<u64> {
    Ok(engine.counts_by_state()?.into_iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| n))
}

/// A closed database file holding executions of `ECHO` with inputs `inputs`, ids 1, 2, ...
async fn database_with(path: &Path, inputs: &[u32]) -> anyhow::Result<()> {
    let engine = open(path)?;
    for (i, input) in inputs.iter().enumerate() {
        let id = engine.dispatch(ECHO, input).await?;
        assert_eq!(id, ExecutionId(i as u64 + 1));
    }
    engine.close().await?;
    Ok(())
}

/// Flips one bit in the middle of an execution record, behind stent's back. redb's own page
/// checksums are updated by the write, so only stent's record envelope can notice.
fn flip_bit_in_execution(path: &Path, id: u64) -> anyhow::Result<()> {
    let db = redb::Database::open(path)?;
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(EXECUTIONS)?;
        let mut bytes = table.get(id)?.with_context(|| format!("execution {id} is not in the file"))?.value().to_vec();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        table.insert(id, bytes.as_slice())?;
    }
    txn.commit()?;
    Ok(())
}

fn read_schema_version(path: &Path) -> anyhow::Result<Option<u64>> {
    let db = redb::Database::open(path)?;
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let version = meta.get("schema_version")?.map(|v| v.value());
    Ok(version)
}

fn write_schema_version(path: &Path, version: u64) -> anyhow::Result<()> {
    let db = redb::Database::open(path)?;
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert("schema_version", version)?;
    txn.commit()?;
    Ok(())
}

/// The ways redb refuses a file that is not a whole database.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The header is intact but the file is shorter than the layout it records.
    Truncated,
    /// The file ends inside the header.
    ShortHeader,
    /// The file does not start with redb's magic number.
    NotADatabase,
}

fn assert_refused(err: &Error, expected: Refusal, case: &str) {
    match (expected, err) {
        (Refusal::Truncated, Error::Storage(StorageError::CorruptFile(msg))) => {
            assert!(msg.contains("truncated"), "{case}: {msg}");
        }
        (Refusal::ShortHeader, Error::Storage(StorageError::CorruptFile(msg))) => {
            assert!(msg.contains("fill whole buffer"), "{case}: {msg}");
        }
        // redb reports "not a redb database" as an I/O error of kind InvalidData, which
        // src/storage/error.rs maps to `CorruptFile`; the message is what the user reads.
        (Refusal::NotADatabase, Error::Storage(StorageError::CorruptFile(msg))) => {
            assert!(msg.contains("Not a redb database"), "{case}: {msg}");
        }
        (expected, other) => panic!("{case}: expected {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_record_is_reported_by_id_and_other_records_survive() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    database_with(&path, &[10, 20, 30]).await?;
    flip_bit_in_execution(&path, 2)?;

    // The file itself is sound, so it opens; only the damaged record is refused.
    let engine = open(&path)?;
    match engine.state_of(ExecutionId(2)) {
        Err(Error::Storage(StorageError::Corrupted { table, key })) => {
            assert_eq!(table, "executions");
            assert_eq!(key, "2");
        }
        other => panic!("expected Corrupted {{ executions, 2 }}, got {other:?}"),
    }
    assert!(matches!(
        engine.result_of(ECHO, ExecutionId(2)),
        Err(Error::Storage(StorageError::Corrupted { table: "executions", ref key })) if key == "2"
    ));

    // Nothing else is lost: the neighbours read back exactly, and the index still counts all 3.
    for (id, input) in [(1, 10), (3, 30)] {
        let info = engine.state_of(ExecutionId(id))?;
        assert_eq!(info.id, ExecutionId(id));
        assert_eq!(info.function, "echo");
        assert_eq!(info.state, ExecutionState::Pending);
        assert_eq!(info.input, serde_json::json!(input));
    }
    assert_eq!(count_of(&engine, ExecutionState::Pending)?, 3);

    // `check` names the record; every problem it reports is about execution 2.
    let problems = engine.check()?;
    assert!(problems.iter().any(|p| p == "corrupted record in table \"executions\" at key 2"), "{problems:?}");
    assert!(problems.iter().all(|p| p.contains(" 2") || p.contains(", 2)")), "{problems:?}");

    // A listing that reaches the damaged record refuses (it never skips it silently); a page
    // that stops before it still works.
    let all = engine.list_executions(&ExecutionFilter::default(), &Page::default());
    assert!(
        matches!(&all, Err(Error::Storage(StorageError::Corrupted { table: "executions", key })) if key == "2"),
        "{all:?}"
    );
    let older =
        engine.list_executions(&ExecutionFilter::default(), &Page { limit: 10, before: Some(ExecutionId(2)) })?;
    assert_eq!(older.iter().map(|e| e.id).collect::<Vec<_>>(), [ExecutionId(1)]);

    // New work is still accepted and gets the next id.
    assert_eq!(engine.dispatch(ECHO, &40).await?, ExecutionId(4));
    assert_eq!(engine.state_of(ExecutionId(4))?.input, serde_json::json!(40));
    engine.close().await?;
    Ok(())
}

/// The same damage on sound pages, opened with `VerifyOnOpen::Full`: the whole-file record
/// check at open finds it and refuses the file, naming the record; the default open (above)
/// opens it and refuses only the damaged record's operations.
#[tokio::test]
async fn full_verification_refuses_a_file_with_a_corrupt_record() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    database_with(&path, &[10, 20, 30]).await?;
    flip_bit_in_execution(&path, 2)?;

    let err = open_verified(&path, VerifyOnOpen::Full).expect_err("Full refuses a corrupt record");
    match &err {
        Error::Storage(StorageError::CorruptFile(msg)) => {
            assert!(msg.contains("the full check at open found"), "{msg}");
            assert!(msg.contains("corrupted record in table \"executions\" at key 2"), "{msg}");
        }
        other => panic!("expected CorruptFile, got {other:?}"),
    }
    assert!(!err.is_retryable());
    let engine = open(&path)?;
    assert_eq!(engine.state_of(ExecutionId(3))?.input, serde_json::json!(30));
    engine.close().await?;
    Ok(())
}

/// A worker that meets the damaged record must not stop the healthy executions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_does_not_stop_other_executions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    database_with(&path, &[10, 20, 30]).await?;
    flip_bit_in_execution(&path, 2)?;

    let engine = open(&path)?;
    let workers = engine.serve(WorkerOptions::default())?;
    let limit = Some(Duration::from_secs(5));
    let first = engine.wait_for(ECHO, ExecutionId(1), limit).await;
    let third = engine.wait_for(ECHO, ExecutionId(3), limit).await;
    let poisoned = engine.poisoned();
    let dispatched = engine.dispatch(ECHO, &40).await;
    workers.drain().await?;
    engine.close().await?;

    assert_eq!(poisoned, None);
    assert_eq!(first?, 10);
    assert_eq!(third?, 30);
    assert_eq!(dispatched?, ExecutionId(4));
    Ok(())
}

#[tokio::test]
async fn truncated_file_is_refused_and_left_as_it_is() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    let inputs: Vec<u32> = (1..=20).collect();
    database_with(&path, &inputs).await?;
    let full = std::fs::read(&path)?;
    assert!(full.len() > 8192, "file of {} bytes", full.len());

    let cases = [
        ("one byte short", full.len() - 1, Refusal::Truncated),
        ("half", full.len() / 2, Refusal::Truncated),
        ("header page only", 4096, Refusal::Truncated),
        ("100 bytes", 100, Refusal::ShortHeader),
        ("8 bytes", 8, Refusal::NotADatabase),
        ("1 byte", 1, Refusal::NotADatabase),
    ];
    for (case, len, expected) in cases {
        std::fs::write(&path, &full[..len])?;
        for verify in [VerifyOnOpen::Live, VerifyOnOpen::Full] {
            let case = format!("{case} ({verify:?})");
            let err = Engine::builder()
                .path(&path)
                .verify_on_open(verify)
                .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
                .open()
                .expect_err(&case);
            assert_refused(&err, expected, &case);
            assert!(!err.is_retryable(), "{case}");
            // A refused file is not written to: the user can still copy it away and repair it.
            assert_eq!(std::fs::read(&path)?, &full[..len], "{case}");
        }
    }

    // The bytes were fine before they were cut: put them back and everything is there.
    std::fs::write(&path, &full)?;
    let engine = open(&path)?;
    assert_eq!(count_of(&engine, ExecutionState::Pending)?, 20);
    assert_eq!(engine.state_of(ExecutionId(20))?.input, serde_json::json!(20));
    assert_eq!(engine.check()?, Vec::<String>::new());
    engine.close().await?;
    Ok(())
}

/// An existing file of zero bytes is what a truncation, a failed copy or a full disk leaves.
/// redb's `create` would initialise it as a new database, so all data would be gone without an
/// error: it is refused and left as it is, unless the builder allows initialising it
/// (`init_empty_file`, for files made empty on purpose, as `tempfile::NamedTempFile` does).
#[tokio::test]
async fn zero_byte_file_is_refused_unless_allowed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    database_with(&path, &[1, 2, 3]).await?;
    std::fs::write(&path, b"")?;

    match open(&path) {
        Err(Error::Storage(StorageError::EmptyFile(p))) => assert_eq!(p, path.display().to_string()),
        Err(other) => panic!("expected EmptyFile, got {other:?}"),
        Ok(_) => panic!("an empty file opened as a database"),
    }
    assert_eq!(std::fs::metadata(&path)?.len(), 0, "the refused file is left as it is");

    let engine = Engine::builder()
        .path(&path)
        .init_empty_file(true)
        .activity(ECHO, |x: u32| async move { Ok::<_, ActivityError>(x) })
        .open()?;
    assert_eq!(total(&engine)?, 0);
    assert_eq!(engine.dispatch(ECHO, &7).await?, ExecutionId(1));
    engine.close().await?;
    assert_eq!(read_schema_version(&path)?, Some(SUPPORTED_SCHEMA));
    // Once it is a database, it opens without the flag.
    open(&path)?.close().await?;
    Ok(())
}

/// A missing file is created: the usual first run.
#[tokio::test]
async fn missing_file_is_created() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("new.db");
    let engine = open(&path)?;
    assert_eq!(engine.dispatch(ECHO, &1).await?, ExecutionId(1));
    engine.close().await?;
    assert!(std::fs::metadata(&path)?.len() > 0);
    Ok(())
}

#[tokio::test]
async fn garbage_file_is_refused_and_left_as_it_is() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    // xorshift64: fixed, reproducible garbage.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for len in [10, 4096, garbage.len()] {
        std::fs::write(&path, &garbage[..len])?;
        let case = format!("{len} bytes of garbage");
        let err = open(&path).expect_err(&case);
        assert_refused(&err, Refusal::NotADatabase, &case);
        assert_eq!(std::fs::read(&path)?, &garbage[..len], "{case}");
    }
    Ok(())
}

/// Damage inside the file (not at a record, so redb's page checksums see it): every page gets
/// bytes flipped in turn. The open is either refused as a corrupt file or, when the damage hit
/// bytes nothing uses, every execution reads back exactly. Never a panic, never wrong data.
/// With both kinds of verification: every execution here is pending, so the live check reads
/// every record, and damage it meets makes it check every page as `Full` does.
#[tokio::test]
async fn damaged_page_is_refused_or_harmless() -> anyhow::Result<()> {
    const PAGE: usize = 4096;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    let inputs: Vec<u32> = (1..=50).collect();
    database_with(&path, &inputs).await?;
    let full = std::fs::read(&path)?;

    let mut refused = 0;
    for page in 0..full.len() / PAGE {
        for within in [0, 100, 2000] {
            let at = page * PAGE + within;
            let mut damaged = full.clone();
            for b in &mut damaged[at..at + 16] {
                *b ^= 0xA5;
            }
            for verify in [VerifyOnOpen::Live, VerifyOnOpen::Full] {
                std::fs::write(&path, &damaged)?;
                let case = format!("16 bytes flipped at {at} ({verify:?})");
                match open_verified(&path, verify) {
                    Err(Error::Storage(StorageError::CorruptFile(_))) => refused += 1,
                    Err(err) if at == 0 => {
                        assert_refused(&err, Refusal::NotADatabase, &case);
                        refused += 1;
                    }
                    Err(other) => panic!("{case}: unexpected {other:?}"),
                    Ok(engine) => {
                        for &input in &inputs {
                            let info = engine.state_of(ExecutionId(u64::from(input)))?;
                            assert_eq!(info.input, serde_json::json!(input), "{case}");
                        }
                        assert_eq!(engine.check()?, Vec::<String>::new(), "{case}");
                        engine.close().await?;
                    }
                }
            }
        }
    }
    // The header and the b-tree pages were hit, so some of these must have been refused.
    assert!(refused > 0);
    Ok(())
}

/// The default open reads only the live part of the file, so damage to the history (finished
/// executions) can go unnoticed at open. This sweep flips bytes in every page of a file of 120
/// finished and 5 pending executions, and pins down what that costs. Whenever the open succeeds:
/// the pending executions read back exactly (the open verified them); a finished one reads back
/// exactly or fails with one clear error (`Corrupted`, or `CorruptFile` where redb would have
/// panicked on the damaged page), or, when the damage hit a key that routes lookups, is reported
/// unknown; and whatever went wrong, `check` reports it and a `Full` open of the same bytes is
/// refused. A retention cleanup then rewrites the history: where it meets a damaged page it
/// fails and poisons the engine. Never a panic, never a wrong record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_history_page_is_refused_or_met_as_an_error_and_found_by_check() -> anyhow::Result<()> {
    const PAGE: usize = 4096;
    const FINISHED: u32 = 120;
    const PENDING: u32 = 5;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    {
        let engine = open(&path)?;
        let workers = engine.serve(WorkerOptions::default())?;
        for input in 1..=FINISHED {
            let id = engine.dispatch(ECHO, &input).await?;
            engine.wait_for(ECHO, id, Some(Duration::from_secs(20))).await?;
        }
        workers.drain().await?;
        for input in FINISHED + 1..=FINISHED + PENDING {
            engine.dispatch(ECHO, &input).await?;
        }
        engine.close().await?;
    }
    let full = std::fs::read(&path)?;

    let (mut refused, mut met, mut poisoned) = (0, 0, 0);
    for page in 0..full.len() / PAGE {
        for within in [0, 100, 2000] {
            let at = page * PAGE + within;
            let mut damaged = full.clone();
            for b in &mut damaged[at..at + 16] {
                *b ^= 0xA5;
            }
            std::fs::write(&path, &damaged)?;
            let case = format!("16 bytes flipped at {at}");
            let engine = match open(&path) {
                Err(Error::Storage(StorageError::CorruptFile(_))) => {
                    refused += 1;
                    continue;
                }
                Err(err) if at == 0 => {
                    assert_refused(&err, Refusal::NotADatabase, &case);
                    refused += 1;
                    continue;
                }
                Err(other) => panic!("{case}: unexpected {other:?}"),
                Ok(engine) => engine,
            };
            let mut wrong = Vec::new();
            for input in 1..=FINISHED + PENDING {
                let id = ExecutionId(u64::from(input));
                match engine.state_of(id) {
                    Ok(info) => assert_eq!(info.input, serde_json::json!(input), "{case}: never a wrong record"),
                    Err(e) if input > FINISHED => panic!("{case}: pending execution {id} was verified at open: {e:?}"),
                    Err(Error::Storage(StorageError::Corrupted { .. } | StorageError::CorruptFile(_)))
                    | Err(Error::UnknownExecution(_)) => wrong.push(input),
                    Err(other) => panic!("{case}: execution {id}: unexpected {other:?}"),
                }
            }
            let problems = engine.check();
            // Retention rewrites the history's pages: a write that meets a damaged page fails
            // with one clear error and poisons the engine, never panics.
            match engine.cleanup("1ms").await {
                Ok(_) => assert_eq!(engine.poisoned(), None, "{case}"),
                Err(Error::Storage(StorageError::Poisoned(why))) => {
                    assert!(why.contains("corrupt"), "{case}: {why}");
                    poisoned += 1;
                }
                Err(other) => panic!("{case}: cleanup: unexpected {other:?}"),
            }
            engine.close().await?;
            if wrong.is_empty() && matches!(&problems, Ok(p) if p.is_empty()) {
                continue; // Harmless: nothing reads the damaged bytes.
            }
            met += 1;
            assert!(
                !matches!(&problems, Ok(p) if p.is_empty()),
                "{case}: executions {wrong:?} failed, check saw nothing"
            );
            std::fs::write(&path, &damaged)?;
            assert!(
                matches!(open_verified(&path, VerifyOnOpen::Full), Err(Error::Storage(StorageError::CorruptFile(_)))),
                "{case}: a Full open must refuse what the default open let through"
            );
        }
    }
    eprintln!("{refused} refused at open, {met} met after it, {poisoned} poisoned the engine");
    // Each outcome must have happened, or the sweep tested less than it says.
    assert!(refused > 0 && met > 0 && poisoned > 0, "{refused} refused, {met} met, {poisoned} poisoned");
    Ok(())
}

#[tokio::test]
async fn newer_schema_is_refused_and_the_file_left_untouched() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    database_with(&path, &[5]).await?;
    assert_eq!(read_schema_version(&path)?, Some(SUPPORTED_SCHEMA));
    write_schema_version(&path, 999)?;

    for attempt in 1..=2 {
        let err = open(&path).expect_err("a newer schema must be refused");
        match &err {
            Error::Storage(StorageError::SchemaTooNew { found, supported }) => {
                assert_eq!((*found, *supported), (999, SUPPORTED_SCHEMA));
            }
            other => panic!("attempt {attempt}: expected SchemaTooNew, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("999"), "{message}");
        assert!(message.contains("upgrade stent"), "{message}");
        // Not downgraded, not migrated: still 999 after the refused open.
        assert_eq!(read_schema_version(&path)?, Some(999));
    }

    // And the data is still in it for a newer stent.
    let db = redb::Database::open(&path)?;
    let txn = db.begin_read()?;
    assert!(txn.open_table(EXECUTIONS)?.get(1)?.is_some());
    Ok(())
}

#[tokio::test]
async fn second_open_of_an_open_file_is_in_use() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    let first = open(&path)?;
    let id = first.dispatch(ECHO, &1).await?;

    let err = open(&path).expect_err("the file is already open");
    assert!(matches!(err, Error::Storage(StorageError::InUse)), "expected InUse, got {err:?}");
    assert!(err.to_string().contains("already open"), "{err}");

    // The refused open took nothing from the engine that has the file.
    assert_eq!(first.dispatch(ECHO, &2).await?, ExecutionId(2));
    first.close().await?;

    // Once the first engine is closed the file opens, with everything in it.
    let second = open(&path)?;
    assert_eq!(second.state_of(id)?.input, serde_json::json!(1));
    assert_eq!(total(&second)?, 2);
    second.close().await?;
    Ok(())
}

#[tokio::test]
async fn oversized_payload_is_rejected_and_creates_nothing() -> anyhow::Result<()> {
    let engine = open_in_memory(16)?;
    let long = "x".repeat(100);
    let err = engine.dispatch(TEXT_LEN, &long).await.expect_err("100 characters exceed 16 bytes");
    match &err {
        // The limit is on the JSON payload: the string plus its two quotes.
        Error::PayloadTooLarge { bytes, limit } => assert_eq!((*bytes, *limit), (102, 16)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("limit of 16 bytes"), "{err}");
    assert_eq!(total(&engine)?, 0);

    // Exactly at the limit is accepted, and is the first execution ever created.
    assert_eq!(engine.dispatch(TEXT_LEN, &"x".repeat(14)).await?, ExecutionId(1));
    engine.close().await?;
    Ok(())
}

#[tokio::test]
async fn unknown_function_is_named_with_the_registered_ones() -> anyhow::Result<()> {
    const SEND_EMAIL: Activity<String, ()> = Activity::new("send_email");
    let engine = open_in_memory(1024)?;
    let err =
        engine.dispatch(SEND_EMAIL, &"a@example.com".to_string()).await.expect_err("send_email is not registered");
    match &err {
        Error::UnknownFunction { name, registered } => {
            assert_eq!(name, "send_email");
            assert_eq!(registered, &["echo", "text_len"]);
        }
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("\"send_email\""), "{message}");
    assert!(message.contains("echo, text_len"), "{message}");
    assert_eq!(total(&engine)?, 0);
    assert_eq!(engine.dispatch(ECHO, &1).await?, ExecutionId(1));
    engine.close().await?;
    Ok(())
}

#[tokio::test]
async fn unparsable_duration_is_quoted_and_creates_nothing() -> anyhow::Result<()> {
    let engine = open_in_memory(1024)?;
    let err = engine.dispatch(ECHO, &1).delay("10x").await.expect_err("10x is not a duration");
    match &err {
        Error::InvalidDuration { input, reason } => {
            assert_eq!(input, "10x");
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidDuration, got {other:?}"),
    }
    assert!(err.to_string().contains("\"10x\""), "{err}");

    let err = engine.dispatch(ECHO, &1).max_duration("1h 30m").await.expect_err("whitespace is refused");
    assert!(matches!(&err, Error::InvalidDuration { input, .. } if input == "1h 30m"), "{err:?}");

    assert_eq!(total(&engine)?, 0);
    assert_eq!(engine.dispatch(ECHO, &1).delay("10ms").await?, ExecutionId(1));
    engine.close().await?;
    Ok(())
}

/// A file whose creation never finished (no magic number yet) is created anew, but only when
/// it provably held nothing: a real database whose first bytes were damaged the same way has
/// tables, so it is refused and left exactly as it is. (The unfinished creation itself is
/// covered by `tests/power_loss.rs`.)
#[tokio::test]
async fn database_with_a_zeroed_magic_number_is_refused_and_left_as_it_is() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stent.db");
    database_with(&path, &[1, 2, 3]).await?;
    let mut bytes = std::fs::read(&path)?;
    bytes[..9].fill(0);
    std::fs::write(&path, &bytes)?;
    let err = open(&path).expect_err("a damaged database opened");
    assert_refused(&err, Refusal::NotADatabase, "zeroed magic number");
    assert_eq!(std::fs::read(&path)?, bytes, "the damaged file was changed");
    Ok(())
}

#[test]
fn a_runtime_without_timers_is_refused_at_open() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = runtime.block_on(async { open(&dir.path().join("stent.db")) }).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("enable_time"), "{err}");
}
