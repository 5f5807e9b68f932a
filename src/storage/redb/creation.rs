//! A file whose creation never finished opens as a new database.
//!
//! redb creates a file in two syncs: the header without its magic number, then the magic
//! number (so a torn creation is never mistaken for a database). But a later open of such a
//! file is refused for ever ("Not a redb database: magic number mismatch"), so a power cut or
//! a full disk in the first moments of an application's first start would keep it from ever
//! starting again, although nothing was committed. `tests/power_loss.rs` found it.
//!
//! Before redb opens a file, this looks for exactly that state and only that: a small file
//! whose first bytes (where the magic number goes) are zero, which either holds nothing at all
//! (every byte zero: the file was sized and nothing more) or is a redb file, once its magic
//! number is restored in a copy in memory, without a single table (stent's first commit
//! creates all of its tables, so no stent data was ever in it). Such a file is emptied, and
//! redb then creates the database afresh. Anything else is left exactly as it is, for redb to
//! open or refuse: a file of another kind is never written to.

use std::io::{Read, Seek};
use std::path::Path;

use redb::{ReadableDatabase, StorageBackend};

use crate::storage::StorageError;

/// redb's magic number (its file format, `tree_store/page_store/header.rs`).
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// A file that never got past creation is redb's initial layout, far below this.
const UNFINISHED_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Zeros a short copy is padded to before it is tried: more than redb's initial layout
/// (72 KiB with its default page size).
const REDB_INITIAL_BYTES: usize = 1024 * 1024;

/// Where the database is, seen as bytes.
pub(super) enum Target<'a> {
    Path(&'a Path),
    Backend(&'a dyn StorageBackend),
}

/// Empties the file if its creation never finished (see the module's comment).
pub(super) fn reset_unfinished(target: Target<'_>) -> Result<(), StorageError> {
    let Some(bytes) = read_small(&target)? else { return Ok(()) };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != [0; MAGIC.len()] {
        return Ok(());
    }
    if !(bytes.iter().all(|&b| b == 0) || holds_no_table(&bytes)) {
        return Ok(());
    }
    tracing::warn!("the database file's creation never finished (nothing was committed); creating it anew");
    match target {
        Target::Path(path) => {
            let file = std::fs::OpenOptions::new().write(true).open(path).map_err(StorageError::Io)?;
            // Another process creating it right now holds redb's lock: leave it to them (redb
            // then reports the file in use).
            if file.try_lock().is_err() {
                return Ok(());
            }
            file.set_len(0).map_err(StorageError::Io)?;
            file.sync_all().map_err(StorageError::Io)?;
        }
        Target::Backend(backend) => {
            backend.set_len(0).map_err(StorageError::Io)?;
            backend.sync_data().map_err(StorageError::Io)?;
        }
    }
    Ok(())
}

/// The whole file, if it exists and is small enough to be an unfinished creation.
fn read_small(target: &Target<'_>) -> Result<Option<Vec<u8>>, StorageError> {
    match target {
        Target::Path(path) => {
            let mut file = match std::fs::File::open(path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StorageError::Io(e)),
            };
            let len = file.metadata().map_err(StorageError::Io)?.len();
            if len == 0 || len > UNFINISHED_BYTES_MAX {
                return Ok(None);
            }
            let mut bytes = Vec::with_capacity(len as usize);
            file.rewind().map_err(StorageError::Io)?;
            file.read_to_end(&mut bytes).map_err(StorageError::Io)?;
            Ok(Some(bytes))
        }
        Target::Backend(backend) => {
            let len = backend.len().map_err(StorageError::Io)?;
            if len == 0 || len > UNFINISHED_BYTES_MAX {
                return Ok(None);
            }
            let mut bytes = vec![0; len as usize];
            backend.read(0, &mut bytes).map_err(StorageError::Io)?;
            Ok(Some(bytes))
        }
    }
}

/// Whether the bytes, with the magic number restored, open as a redb database without any
/// table. Runs on a copy in memory; nothing here touches the file.
fn holds_no_table(bytes: &[u8]) -> bool {
    let copy = redb::backends::InMemoryBackend::new();
    let mut patched = bytes.to_vec();
    patched[..MAGIC.len()].copy_from_slice(&MAGIC);
    // The header may be there without the length redb gave the file (the resize was lost):
    // what would follow it is zeros, as in a fresh file.
    if patched.len() < REDB_INITIAL_BYTES {
        patched.resize(REDB_INITIAL_BYTES, 0);
    }
    if copy.set_len(patched.len() as u64).is_err() || copy.write(0, &patched).is_err() {
        return false;
    }
    // redb may panic on a damaged file it has not verified; this is a guess about a copy, so a
    // panic only means "not an unfinished creation".
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = redb::Database::builder().create_with_backend(copy).ok()?;
        let read = db.begin_read().ok()?;
        let tables = read.list_tables().ok()?.count();
        let multimaps = read.list_multimap_tables().ok()?.count();
        Some(tables + multimaps == 0)
    }));
    matches!(opened, Ok(Some(true)))
}
