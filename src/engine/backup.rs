//! Backups: an export of every record to a portable file, and its import into a new database
//! (the format is in storage/export.rs; docs/operations.md has the procedure).

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Engine;
use crate::error::{Error, Result};
use crate::storage::{as_redb, OpenOptions, RedbStore, Store, TransferReport, FILE_MODE_DEFAULT};

impl Engine {
    /// Writes every stent record to a new file at `path` (owner-only; an existing file is not
    /// replaced), from one read transaction: a consistent snapshot, taken while work goes on.
    /// The file appears only once complete (written beside it, synced, then renamed). The
    /// application's own tables (`Ctx::local`) are not exported.
    pub async fn export(&self, path: impl AsRef<Path>) -> Result<TransferReport> {
        let store = self.inner.store()?;
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || export_store(&store, &path))
            .await
            .map_err(|e| Error::Internal(format!("the export stopped: {e}")))?
    }

    /// Reads an export into the database at `db`, which must be new or hold no records, in
    /// one transaction: a damaged or truncated export is refused (with the byte offset of the
    /// damage) and the database is left as it was. No engine may have `db` open meanwhile.
    pub fn import(db: impl AsRef<Path>, export: impl AsRef<Path>) -> Result<TransferReport> {
        let file = std::fs::File::open(export.as_ref())
            .map_err(|e| Error::Config(format!("cannot read the export {}: {e}", export.as_ref().display())))?;
        let store = RedbStore::open(OpenOptions {
            path: Some(db.as_ref().to_path_buf()),
            backend: None,
            verify_on_open: crate::api::VerifyOnOpen::Live,
            faults: Default::default(),
            cache_entries_max: 10_000,
            page_cache_bytes: 16 * 1024 * 1024,
            init_empty_file: false,
            read_only: false,
            file_mode: FILE_MODE_DEFAULT,
        })?;
        Ok(store.import_from(BufReader::new(file))?)
    }
}

fn export_store(store: &Arc<dyn Store>, path: &Path) -> Result<TransferReport> {
    let redb = as_redb(store.as_ref()).ok_or_else(|| Error::Config("export needs the redb backend".into()))?;
    write_new_file(path, |file| Ok(redb.export_to(BufWriter::new(file))?))
}

/// Writes a new owner-only file at `path` through `write`: into `<path>.partial`, synced,
/// then renamed, so `path` never holds half a file. An existing `path` is refused.
pub(crate) fn write_new_file<T>(path: &Path, write: impl FnOnce(&std::fs::File) -> Result<T>) -> Result<T> {
    if path.exists() {
        return Err(Error::Config(format!("{} exists; it is not replaced", path.display())));
    }
    let mut partial = PathBuf::from(path);
    partial.as_mut_os_string().push(".partial");
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE_DEFAULT);
    let io = |what: &str, e: std::io::Error| Error::Config(format!("cannot {what} {}: {e}", partial.display()));
    let mut file = options.open(&partial).map_err(|e| io("create", e))?;
    let result = write(&file).and_then(|value| {
        file.flush().map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("sync", e))?;
        Ok(value)
    });
    drop(file);
    match result {
        Ok(value) => {
            std::fs::rename(&partial, path).map_err(|e| io("rename", e))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                // The rename is durable once the directory is synced.
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(value)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
