/// Errors of the storage layer. Corruption is a value, never a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A record failed its checksum, version or decoding. Nothing is returned in its place.
    #[error("corrupted record in table {table:?} at key {key}")]
    Corrupted { table: &'static str, key: String },
    /// The file was written by a newer stent; this build refuses to touch it.
    #[error(
        "database schema version {found} is newer than this build of stent supports ({supported}); \
         upgrade stent to open it"
    )]
    SchemaTooNew { found: u64, supported: u64 },
    /// redb found the file itself damaged (truncated, bad page checksums).
    #[error("database file is corrupt or truncated: {0}")]
    CorruptFile(String),
    /// The file exists but holds nothing: what a truncation, a failed copy or a full disk
    /// leaves. Refused rather than initialised, unless `EngineBuilder::init_empty_file`.
    #[error(
        "database file {0} exists but is empty (0 bytes); refusing to treat it as a new database. \
         Remove it, or allow it with EngineBuilder::init_empty_file(true)"
    )]
    EmptyFile(String),
    #[error("database file is already open (by this or another process)")]
    InUse,
    /// The store was opened read-only (`OpenOptions::read_only`); nothing is written.
    #[error("the database is open read-only; nothing was changed")]
    ReadOnly,
    /// The disk failed a read, write or sync (the source is kept: kind, OS error code).
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
    #[error("storage error: {0}")]
    Other(String),
    /// A commit failed earlier; nothing more is written until the database is reopened.
    #[error("engine poisoned by a failed commit ({0}); reopen the database")]
    Poisoned(String),
    /// A fault injected by a test (`stent::testing`).
    #[error("injected fault: {0}")]
    Injected(&'static str),
}

impl StorageError {
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl From<redb::Error> for StorageError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => StorageError::InUse,
            redb::Error::Corrupted(msg) => StorageError::CorruptFile(msg),
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                StorageError::CorruptFile(io.to_string())
            }
            // redb reports a file that is not a redb database (bad magic) as InvalidData.
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                StorageError::CorruptFile(io.to_string())
            }
            redb::Error::Io(io) => StorageError::Io(io),
            other => StorageError::Other(other.to_string()),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                StorageError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Why storage refused one op. A refused op wrote nothing; its batch goes on. The engine turns
/// it into `stent::Error` (ids typed there), so storage imports nothing from the API's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("execution {0} does not exist")]
    UnknownExecution(u64),
    #[error("task {0} does not exist")]
    UnknownTask(u64),
    #[error("dead letter {0} does not exist")]
    UnknownDeadLetter(u64),
    /// The claim lost a race: the task was cancelled, re-queued or already taken.
    #[error("task {0} is not claimable")]
    TaskNotClaimable(u64),
    /// The task's attempt counter (its fencing token) is at `u32::MAX`.
    #[error("task {0} has used every fencing token")]
    TokensExhausted(u64),
    #[error("execution {execution_id}: the journal is full ({steps_max} steps)")]
    JournalFull { execution_id: u64, steps_max: u32 },
    /// The journal recorded another operation at this step than the attempt asks for.
    #[error("non-determinism at step {step}: journal has {recorded}, workflow asked for {requested}")]
    NonDeterminism { step: u32, recorded: String, requested: String },
    #[error("execution {id} is {state}; it takes no more signals")]
    ExecutionFinished { id: u64, state: crate::api::ExecutionState },
    #[error("dead letter {id} cannot be replayed: {reason}")]
    NotReplayable { id: u64, reason: String },
    /// A local step's closure failed or panicked; its transaction is dropped.
    #[error("local step {step} failed: {error}")]
    LocalStepFailed { step: u32, error: crate::api::ActivityError },
    #[error("schedule {0:?} does not exist")]
    UnknownSchedule(String),
    /// A schedule's stored spec no longer compiles (this build's time-zone database lacks its
    /// zone, say).
    #[error("invalid schedule {spec}: {reason}")]
    InvalidSchedule { spec: String, reason: String },
    /// A stale fencing token, or a lease that is gone.
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
    /// A record the op read does not decode (`StorageError::Corrupted`).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A bug in stent (an invariant did not hold); the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}
