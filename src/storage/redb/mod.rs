//! The redb backend: [`RedbStore`], one redb file holding every record and index.
//!
//! - `mod.rs`: the store, its open (creation, schema, verification) and the `Store` impl;
//! - `records.rs`: `Records` over one write transaction, the only writer of the indexes;
//! - `commit.rs`: batches in transactions, the redo of a batch that met a corrupted record;
//! - `recover.rs`: recovery at open; `reads.rs`: the read side; `check.rs`: `check` and the
//!   live check of the default open; `schema.rs`: versions and migrations; `creation.rs`: a
//!   file whose creation never finished.
//!
//! See docs/design.md for the table layout and the commit protocol.

mod check;
mod commit;
mod creation;
mod export;
mod overlay;
mod reads;
mod records;
mod recover;
mod schedules;
mod schema;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ::redb::{Database, ReadableDatabase};

use super::effect::Effect;
use super::faults::Faults;
use super::guard::unpanic;
use super::op::{Op, OpResult};
use super::records::{DeadLetterRecord, ExecutionRecord, JournalEntry, RunRecord, ScheduleRecord, TaskRecord};
use super::store::{ExecutionContext, Store};
use super::transitions::Ids;
use super::StorageError;
use crate::api::{ActivityError, CleanupReport, ExecutionFilter, ExecutionState, Page, VerifyOnOpen};
use check::found_at_open;
pub use export::{ImportError, TransferReport};

/// Where the store lives and how it is opened.
pub struct OpenOptions {
    pub path: Option<PathBuf>,
    pub backend: Option<Box<dyn redb::StorageBackend>>,
    /// What the open verifies (docs/design.md, "Recovery at open").
    pub verify_on_open: VerifyOnOpen,
    pub faults: Arc<Faults>,
    /// Entries the cache of cached functions keeps at most; the soonest to expire go first.
    pub cache_entries_max: u64,
    /// redb's page cache; resident memory grows with the file up to this.
    pub page_cache_bytes: usize,
    /// Whether an existing file of zero bytes may become a new database. Off by default: an
    /// empty file is also what a failed copy, a full disk or a truncation leaves.
    pub init_empty_file: bool,
    /// Open without ever writing the file (`overlay.rs`): no recovery, no migration written,
    /// every op refused. The file must exist.
    pub read_only: bool,
    /// Permissions of a file the open creates (Unix); the file holds users' payloads, so the
    /// default is owner-only (0o600).
    pub file_mode: u32,
}

/// Permissions of a new database file (and of every file stent writes beside it): owner-only.
pub const FILE_MODE_DEFAULT: u32 = 0o600;

/// Lets a boxed backend be handed to redb, which takes backends by value.
#[derive(Debug)]
struct Boxed(Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for Boxed {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
}

/// A local step's closure on the redb backend: it runs on the batch's write transaction and may
/// read and write the application's own tables there (`Ctx::local`).
pub type RedbLocal = Box<dyn FnOnce(&::redb::WriteTransaction) -> Result<Vec<u8>, ActivityError> + Send>;

/// The redb store behind a [`Store`], for what only the redb backend offers (`Engine::read`).
pub fn as_redb(store: &dyn Store) -> Option<&RedbStore> {
    store.as_any().downcast_ref::<RedbStore>()
}

pub struct RedbStore {
    db: Database,
    /// The next ids, as of the last commit.
    ids: Mutex<Ids>,
    faults: Arc<Faults>,
    cache_entries_max: u64,
    /// Opened over the overlay (`overlay.rs`): every op is refused.
    read_only: bool,
    /// `trace_seed` in `meta`, read at open.
    trace_seed: u64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

fn corrupted(table: &'static str, key: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupted { table, key: key.to_string() }
}

impl RedbStore {
    /// Opens the file, migrates its schema, and verifies it as `verify_on_open` asks. Every step
    /// runs under `unpanic`: redb may panic on a damaged page it was not asked to verify (and
    /// documents that an unverified open may), and no input file may take the process down.
    pub fn open(options: OpenOptions) -> Result<Self, StorageError> {
        let OpenOptions {
            path,
            mut backend,
            verify_on_open,
            faults,
            cache_entries_max,
            page_cache_bytes,
            init_empty_file,
            read_only,
            file_mode,
        } = options;
        if read_only {
            let Some(path) = &path else {
                return Err(StorageError::Other("a read-only open needs a file path".into()));
            };
            match std::fs::metadata(path) {
                Ok(meta) if meta.len() == 0 => return Err(StorageError::EmptyFile(path.display().to_string())),
                Ok(_) => {}
                Err(e) => return Err(StorageError::Io(e)),
            }
            let overlay = overlay::Overlay::open(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::ResourceBusy => StorageError::InUse,
                _ => StorageError::Io(e),
            })?;
            backend = Some(Box::new(overlay));
        } else if let (Some(path), None) = (&path, &backend) {
            // A missing file is created; an existing one must be a database already, unless
            // the application said an empty one is its to initialise. (redb's `create` would
            // silently initialise any empty file.)
            match std::fs::metadata(path) {
                Ok(meta) if meta.len() == 0 && !init_empty_file => {
                    return Err(StorageError::EmptyFile(path.display().to_string()))
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_file(path, file_mode)?,
                Err(e) => return Err(StorageError::Io(e)),
            }
        }
        match (&path, &backend) {
            (_, Some(_)) if read_only => {}
            (_, Some(backend)) => creation::reset_unfinished(creation::Target::Backend(backend.as_ref()))?,
            (Some(path), None) => creation::reset_unfinished(creation::Target::Path(path))?,
            (None, None) => {}
        }
        let full = verify_on_open == VerifyOnOpen::Full;
        let mut builder = Database::builder();
        // Full: redb verifies every page's checksum and rebuilds its allocator state from the
        // trees. Either way, after an unclean shutdown redb does both by itself.
        builder.set_check_integrity_on_open(full);
        builder.set_cache_size(page_cache_bytes);
        let mut db = unpanic("opening the file", || {
            Ok(match (path, backend) {
                (_, Some(backend)) => builder.create_with_backend(Boxed(backend)),
                (Some(path), None) => builder.create(path),
                (None, None) => builder.create_with_backend(redb::backends::InMemoryBackend::new()),
            }?)
        })?;
        let (ids, trace_seed) = match unpanic("reading the schema", || Self::init_schema(&db)) {
            Ok(ids) => ids,
            // Under Live, a damaged `meta` page can read as any version: tell that apart from a
            // file a newer stent wrote before saying "upgrade stent".
            Err(e @ StorageError::SchemaTooNew { .. }) if !full => {
                unpanic("checking every page", || Ok(db.check_integrity()?))?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut store = RedbStore { db, ids: Mutex::new(ids), faults, cache_entries_max, read_only, trace_seed };
        if full {
            let problems = unpanic("checking every record", || store.check())?;
            if !problems.is_empty() {
                return Err(StorageError::CorruptFile(found_at_open("the full check", &problems)));
            }
        } else {
            store.verify_live()?;
        }
        Ok(store)
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// A read transaction on the file, for the application's own tables (`Engine::read`).
    pub fn begin_read(&self) -> Result<::redb::ReadTransaction, StorageError> {
        unpanic("starting a read", || Ok(self.db.begin_read()?))
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        // Poisoning only happens if a holder panicked; the ids are plain integers and stay
        // valid, so take them anyway.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates a new, empty database file with `mode` (Unix), never replacing one: a file that
/// appears meanwhile is left for redb to open or refuse.
fn create_file(path: &std::path::Path, mode: u32) -> Result<(), StorageError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StorageError::Io(e)),
    }
}

impl Store for RedbStore {
    fn apply_batch(&self, now_ms: u64, ops: Vec<Op>) -> Result<(Vec<OpResult>, Vec<Effect>), StorageError> {
        self.apply(now_ms, ops)
    }
    fn recover(&self, now_ms: u64) -> Result<Vec<Effect>, StorageError> {
        self.recover_at_open(now_ms)
    }
    fn execution(&self, id: u64) -> Result<Option<(ExecutionRecord, TaskRecord)>, StorageError> {
        self.read_execution(id)
    }
    fn list_executions(&self, filter: &ExecutionFilter, page: &Page) -> Result<Vec<ExecutionRecord>, StorageError> {
        self.read_executions(filter, page)
    }
    fn count_by_state(&self) -> Result<Vec<(ExecutionState, u64)>, StorageError> {
        self.read_counts()
    }
    fn queue_depth(&self, queue: &str) -> Result<u64, StorageError> {
        self.read_queue_depth(queue)
    }
    fn running_tasks(&self) -> Result<Vec<TaskRecord>, StorageError> {
        self.read_running_tasks()
    }
    fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetterRecord>, StorageError> {
        self.read_dead_letters(limit)
    }
    fn task(&self, id: u64) -> Result<Option<TaskRecord>, StorageError> {
        self.read_task(id)
    }
    fn dead_letter_count(&self) -> Result<u64, StorageError> {
        self.read_dead_letter_count()
    }
    fn dead_letter(&self, id: u64) -> Result<Option<DeadLetterRecord>, StorageError> {
        self.read_dead_letter(id)
    }
    fn journal(&self, execution_id: u64) -> Result<Vec<JournalEntry>, StorageError> {
        self.read_journal(execution_id)
    }
    fn runs(&self, execution_id: u64) -> Result<Vec<RunRecord>, StorageError> {
        self.read_runs(execution_id)
    }
    fn run_journal(&self, execution_id: u64, run: u32) -> Result<Vec<JournalEntry>, StorageError> {
        self.read_run_journal(execution_id, run)
    }
    fn cleanup_preview(&self, now_ms: u64, cutoff_ms: u64) -> Result<CleanupReport, StorageError> {
        self.read_cleanup_preview(now_ms, cutoff_ms)
    }
    fn journal_steps(&self, execution_id: u64, steps: &[u32]) -> Result<Vec<JournalEntry>, StorageError> {
        self.read_journal_steps(execution_id, steps)
    }
    fn heartbeat(&self, execution_id: u64, task_id: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(crate::storage::tables::HEARTBEATS)?;
        Ok(table.get((execution_id, task_id))?.map(|v| v.value().to_vec()))
    }
    fn context(&self, execution_id: u64) -> Result<ExecutionContext, StorageError> {
        self.read_context(execution_id)
    }
    fn pending_work(&self, now_ms: u64) -> Result<(u64, u64, u64), StorageError> {
        self.read_pending_work(now_ms)
    }
    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StorageError> {
        self.read_schedules()
    }
    fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, StorageError> {
        self.read_schedule(name)
    }
    fn schedule_fires(&self, name: &str, limit: usize) -> Result<Vec<(u64, u64)>, StorageError> {
        self.read_schedule_fires(name, limit)
    }
    fn key_slots(&self) -> Result<Vec<(String, String, u64)>, StorageError> {
        self.read_key_slots()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn trace_seed(&self) -> u64 {
        self.trace_seed
    }
    fn check(&self) -> Result<Vec<String>, StorageError> {
        self.check_all()
    }
}
