//! A read-only open that never writes the file: redb over a copy-on-write overlay.
//!
//! An operator's `stent list` on the file of a stopped application must not change it: not
//! by stent's recovery (which re-queues running tasks), not by a schema migration (which would
//! lock an older application out), and not by redb's own repair after an unclean shutdown.
//! redb's read-only handle refuses a file that needs that repair, which is exactly the file
//! an operator most wants to read (the application crashed). So the read-only store opens an
//! ordinary redb `Database` over this backend instead: reads come from the file, and every
//! write redb makes (its repair, the schema commit of the open) lands in memory, page by page,
//! and is dropped with the store. What the store then reads is what the next writable open
//! would see, and the file's bytes are never touched.
//!
//! Locks go to redb's own file backend, so the overlay excludes a writer (and is excluded by
//! one) exactly as a writable open would: an engine that starts meanwhile is told the file is
//! in use, never reads a file someone else half-repaired. Memory grows with what redb writes,
//! which for an open is its allocator state: small beside the page cache.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What `open` says when a writer holds the file (mapped to `StorageError::InUse`).
pub(super) const IN_USE: &str = "the database file is in use";

/// The unit the overlay copies on a write; independent of redb's page size.
const CHUNK: u64 = 4096;

#[derive(Debug)]
pub(super) struct Overlay {
    file: FileBackend,
    /// Holds the whole-file lock a writer's open takes too (an `flock` on Linux), for as
    /// long as the overlay lives: redb does not lock through a custom backend's range locks
    /// the way it locks its own file, so the overlay takes this one itself.
    _lock: File,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The length redb sees (set_len changes it here only).
    len: u64,
    /// The file's length at open: bytes at or past it read as zeros unless written.
    file_len: u64,
    /// Written chunks by index, each CHUNK bytes.
    chunks: HashMap<u64, Box<[u8]>>,
}

impl Overlay {
    /// Opens the file for reading under the overlay. The handle is opened for writing only so
    /// that redb may take its exclusive locks on it (POSIX write locks need a writable handle);
    /// nothing is ever written through it.
    pub(super) fn open(path: &Path) -> std::io::Result<Overlay> {
        let file = File::options().read(true).write(true).open(path)?;
        let lock = File::options().read(true).open(path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(std::io::ErrorKind::ResourceBusy, IN_USE));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let file_len = file.metadata()?.len();
        let file = FileBackend::new(file).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Overlay { file, _lock: lock, state: Mutex::new(State { len: file_len, file_len, chunks: HashMap::new() }) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills `out` from the file at `offset`, zeros past its end.
    fn read_file(&self, state: &State, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let end = offset + out.len() as u64;
        if offset >= state.file_len {
            out.fill(0);
            return Ok(());
        }
        let from_file = (end.min(state.file_len) - offset) as usize;
        self.file.read(offset, &mut out[..from_file])?;
        out[from_file..].fill(0);
        Ok(())
    }
}

impl StorageBackend for Overlay {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = self.lock();
        if offset + out.len() as u64 > state.len {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the file"));
        }
        let mut done = 0usize;
        while done < out.len() {
            let at = offset + done as u64;
            let (index, within) = (at / CHUNK, (at % CHUNK) as usize);
            let n = (CHUNK as usize - within).min(out.len() - done);
            match state.chunks.get(&index) {
                Some(chunk) => out[done..done + n].copy_from_slice(&chunk[within..within + n]),
                None => self.read_file(&state, at, &mut out[done..done + n])?,
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut state = self.lock();
        if len < state.len {
            // Bytes cut off read as zeros if the file grows again.
            let first_gone = len.div_ceil(CHUNK);
            state.chunks.retain(|&i, _| i < first_gone);
            if !len.is_multiple_of(CHUNK) {
                let index = len / CHUNK;
                let within = (len % CHUNK) as usize;
                if let Some(chunk) = state.chunks.get_mut(&index) {
                    chunk[within..].fill(0);
                }
            }
            state.file_len = state.file_len.min(len);
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut state = self.lock();
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, within) = (at / CHUNK, (at % CHUNK) as usize);
            let n = (CHUNK as usize - within).min(data.len() - done);
            if !state.chunks.contains_key(&index) {
                let mut chunk = vec![0u8; CHUNK as usize].into_boxed_slice();
                self.read_file(&state, index * CHUNK, &mut chunk)?;
                state.chunks.insert(index, chunk);
            }
            if let Some(chunk) = state.chunks.get_mut(&index) {
                chunk[within..within + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        state.len = state.len.max(offset + data.len() as u64);
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_memory_and_reads_merge_them_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let overlay = Overlay::open(&path).unwrap();
        overlay.write(4090, &[7; 20]).unwrap();
        overlay.set_len(12_000).unwrap();
        overlay.write(11_990, &[9; 10]).unwrap();
        let mut all = vec![0u8; 12_000];
        overlay.read(0, &mut all).unwrap();
        let mut want = original.clone();
        want[4090..4110].fill(7);
        want.resize(12_000, 0);
        want[11_990..].fill(9);
        assert_eq!(all, want);
        overlay.set_len(5_000).unwrap();
        overlay.set_len(6_000).unwrap();
        let mut tail = vec![1u8; 1_000];
        overlay.read(5_000, &mut tail).unwrap();
        assert!(tail.iter().all(|&b| b == 0), "bytes cut off read as zeros");
        assert!(overlay.read(5_999, &mut [0; 2]).is_err(), "a read past the end fails");
        drop(overlay);
        assert_eq!(std::fs::read(&path).unwrap(), original, "the file is untouched");
    }
}
