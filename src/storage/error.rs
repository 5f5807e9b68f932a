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
