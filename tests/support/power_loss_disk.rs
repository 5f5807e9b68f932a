//! `PowerLossDisk`: a `redb::StorageBackend` that can lose power at a chosen `sync_data`, or
//! run out of space after a chosen number of operations, so a test can see exactly the file
//! a machine would find when it boots again (the model is redb's `CrashBackend` in
//! `tests/crash_consistency.rs`).
//!
//! It keeps three things: the *live* image (what the running process reads back: the OS page
//! cache), the *durable* image (what survived the last successful `sync_data`), and the
//! *pending* operations since that sync, in the order they were issued.
//!
//! # Faults injected
//!
//! - **Power loss at sync N** ([`PowerLossDisk::lose_power_at_sync`]). The N-th `sync_data`
//!   does not complete: it returns an error, and from then on the disk is *frozen*: every
//!   write, `set_len` and `sync_data` fails and changes nothing, so the running engine can make
//!   no further progress durable and can never be told that a commit made at or after sync N
//!   succeeded (its commit fails, it poisons itself). The image the machine finds at boot is
//!   chosen at that moment, from the durable image and the pending operations, as one of
//!   [`Image`]: the durable image alone; plus a random prefix of the pending operations; plus a
//!   random subset of them (applied in issue order); or that subset with its last write of more
//!   than one sector torn at a 512-byte boundary (only its first sectors reached the platter;
//!   a one-sector write, such as a short header write, is atomic by the assumption below, so
//!   the last write that can tear is the one torn).
//!   Reads keep returning the live image after the crash, so the dead engine fails only when
//!   it tries to write: what a process sees if it is about to die anyway.
//! - **Out of space after N operations** ([`PowerLossDisk::fail_writes_after`]). Counting
//!   `write`, `set_len` and `sync_data` calls, every `write` after the N-th operation, and
//!   every `set_len` that would grow the file, fails with `ENOSPC` (`io::Error` from raw OS
//!   error 28, kind `StorageFull`) and writes nothing (short writes are not modelled).
//!   Shrinking and `sync_data` still succeed
//!   (they need no new blocks). There is no power loss: reopening sees the live image, as a
//!   process that restarts after freeing space would.
//! - **Rollback** ([`PowerLossDisk::rolled_back_image`], for the detector test only): the
//!   durable image as of the sync *before* the last one, i.e. a disk that lied about one
//!   fsync. A correct engine cannot survive that; the test uses it to show that its checks
//!   notice a lost commit.
//!
//! # Assumed of the disk (not injected)
//!
//! - `sync_data` is honest: when it returns `Ok`, every earlier write and length change is
//!   durable (the assumption redb's commit and stent's design both rest on).
//! - Reads return what was last written (no bit rot, no misdirected writes, no read errors).
//! - A 512-byte sector is written atomically: a lost write loses whole sectors, and only the
//!   one torn write in an [`Image::Torn`] image is cut short, at a sector boundary.
//! - `set_len` is treated like a write: it changes the live length at once and is pending
//!   until the next successful `sync_data`. In a partial image it is one of the pending
//!   operations, kept or lost like a write, and applied in order (a kept grow zero-fills, a
//!   kept shrink truncates). A kept write that reaches past the image's length extends it,
//!   zero-filled, as a write past the end of a file does. redb makes a grown length durable
//!   (it syncs right after growing) before it writes a header that names the new layout, and
//!   shrinks only after the smaller layout is durable; this model lets a test see whether
//!   that holds.
//! - The disk never reorders across a sync (writes after sync N cannot land before it) and
//!   never loses an operation that a completed sync covered.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Sector size assumed for atomic writes and tears.
pub const SECTOR_BYTES: usize = 512;

/// ENOSPC on Linux (and most Unixes).
pub const ENOSPC: i32 = 28;

/// Which bytes survive the power loss, built from the durable image and the operations
/// pending since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Image {
    /// Nothing written since the last sync survived.
    Durable,
    /// The first k pending operations survived (k uniform in 0..=pending).
    Prefix,
    /// Each pending operation survived or not (probability one half), applied in order.
    Subset,
    /// A subset as above whose last write of more than one sector is cut at a random interior
    /// sector boundary (only its leading sectors survived).
    Torn,
}

impl Image {
    pub const ALL: [Image; 4] = [Image::Durable, Image::Prefix, Image::Subset, Image::Torn];
}

/// What a power loss kept, for a sweep's summary (so a reader can see the images differ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Survival {
    /// Operations pending since the last sync when power was lost.
    pub pending: usize,
    /// How many of them survived.
    pub kept: usize,
    /// Whether a surviving write was torn.
    pub torn: bool,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

#[derive(Debug, Default)]
struct State {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// The durable image before the last successful sync (for `rolled_back_image`).
    durable_before: Vec<u8>,
    pending: Vec<Pending>,
    /// Completed (or, at the crash, attempted) `sync_data` calls.
    syncs: u64,
    /// `write`, `set_len` and `sync_data` calls.
    ops: u64,
    /// `ops` when each successful sync returned (index 0 is sync 1).
    ops_at_sync: Vec<u64>,
    crash_at: Option<(u64, Image, u64)>,
    /// The image chosen when power was lost; the disk is frozen from then on.
    crashed: Option<Vec<u8>>,
    survival: Survival,
    enospc_after: Option<u64>,
    /// Successful `set_len` calls that grew and that shrank the file.
    grows: u64,
    shrinks: u64,
    /// `ENOSPC` errors returned so far.
    enospc_errors: u64,
}

/// A `redb::StorageBackend` that can lose power or run out of space; see the module docs.
/// Clones share one disk.
#[derive(Debug, Clone, Default)]
pub struct PowerLossDisk {
    state: Arc<Mutex<State>>,
}

fn power_lost() -> io::Error {
    io::Error::other("power lost (PowerLossDisk is frozen)")
}

impl PowerLossDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk whose durable (and live) content is `image`, as found after a reboot.
    pub fn from_image(image: Vec<u8>) -> Self {
        let state = State { live: image.clone(), durable: image.clone(), durable_before: image, ..State::default() };
        PowerLossDisk { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Power is lost during the `sync`-th call of `sync_data` (counting from 1); the image that
    /// survives is built as `image` says, with `seed` for its random choices.
    pub fn lose_power_at_sync(&self, sync: u64, image: Image, seed: u64) {
        assert!(sync >= 1, "sync points count from 1");
        self.lock().crash_at = Some((sync, image, seed));
    }

    /// Loses power now (if it was not lost already), as at a sync that never completes.
    pub fn lose_power_now(&self, image: Image, seed: u64) {
        let mut state = self.lock();
        if state.crashed.is_none() {
            let (survived, survival) = survivor(&state, image, seed);
            state.crashed = Some(survived);
            state.survival = survival;
        }
    }

    /// Every write after `ops` operations (and every growing `set_len`) fails with `ENOSPC`.
    pub fn fail_writes_after(&self, ops: u64) {
        self.lock().enospc_after = Some(ops);
    }

    /// `sync_data` calls so far (the one that lost power included).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// `write`, `set_len` and `sync_data` calls so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// `ops()` as it was when the `sync`-th `sync_data` returned (0 if it never did).
    pub fn ops_at_sync(&self, sync: u64) -> u64 {
        let state = self.lock();
        sync.checked_sub(1).and_then(|i| state.ops_at_sync.get(i as usize)).copied().unwrap_or(0)
    }

    /// Successful `set_len` calls that grew the file, and that shrank it.
    pub fn resizes(&self) -> (u64, u64) {
        let state = self.lock();
        (state.grows, state.shrinks)
    }

    pub fn enospc_errors(&self) -> u64 {
        self.lock().enospc_errors
    }

    /// Whether power was lost.
    pub fn crashed(&self) -> bool {
        self.lock().crashed.is_some()
    }

    /// The bytes found after the power loss (`None` while power is on).
    pub fn crash_image(&self) -> Option<Vec<u8>> {
        self.lock().crashed.clone()
    }

    /// What the power loss kept of the operations pending at it.
    pub fn survival(&self) -> Survival {
        self.lock().survival
    }

    /// The bytes a restarted process reads when there was no power loss.
    pub fn live_image(&self) -> Vec<u8> {
        self.lock().live.clone()
    }

    /// The durable image as of the sync before the last successful one: a disk that lost one
    /// acknowledged sync. Only for showing that the checks detect a lost commit.
    pub fn rolled_back_image(&self) -> Vec<u8> {
        self.lock().durable_before.clone()
    }
}

/// The image that survives a power loss now, and what of the pending operations it kept.
fn survivor(state: &State, image: Image, seed: u64) -> (Vec<u8>, Survival) {
    let mut rng = StdRng::seed_from_u64(seed);
    let pending = &state.pending;
    let kept: Vec<Pending> = match image {
        Image::Durable => Vec::new(),
        Image::Prefix => {
            let k = rng.random_range(0..=pending.len());
            pending[..k].to_vec()
        }
        Image::Subset | Image::Torn => pending.iter().filter(|_| rng.random_bool(0.5)).cloned().collect(),
    };
    let mut kept = kept;
    let mut torn = false;
    if image == Image::Torn {
        let last_tearable =
            kept.iter().rposition(|op| matches!(op, Pending::Write { data, .. } if data.len() > SECTOR_BYTES));
        if let Some(i) = last_tearable {
            if let Pending::Write { offset, data } = &mut kept[i] {
                // Interior sector boundaries (file offsets that are multiples of 512) inside the
                // write; redb writes whole pages, so the write starts on one.
                let first = (*offset / SECTOR_BYTES + 1) * SECTOR_BYTES;
                let end = *offset + data.len();
                let boundaries: Vec<usize> = (first..end).step_by(SECTOR_BYTES).collect();
                if !boundaries.is_empty() {
                    let cut = boundaries[rng.random_range(0..boundaries.len())];
                    data.truncate(cut - *offset);
                    torn = true;
                }
            }
        }
    }
    let mut bytes = state.durable.clone();
    for op in &kept {
        apply(&mut bytes, op);
    }
    (bytes, Survival { pending: pending.len(), kept: kept.len(), torn })
}

fn apply(bytes: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { offset, data } => {
            let end = offset + data.len();
            if end > bytes.len() {
                bytes.resize(end, 0);
            }
            bytes[*offset..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => bytes.resize(*len, 0),
    }
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset beyond usize"))
}

impl redb::StorageBackend for PowerLossDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = self.lock();
        let offset = to_usize(offset)?;
        let end = offset.checked_add(out.len()).filter(|&e| e <= state.live.len());
        let Some(end) = end else {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        };
        out.copy_from_slice(&state.live[offset..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.lock();
        if state.crashed.is_some() {
            return Err(power_lost());
        }
        state.ops += 1;
        let len = to_usize(len)?;
        if len > state.live.len() && state.enospc_after.is_some_and(|n| state.ops > n) {
            state.enospc_errors += 1;
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        if len > state.live.len() {
            state.grows += 1;
        } else if len < state.live.len() {
            state.shrinks += 1;
        }
        state.live.resize(len, 0);
        state.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut state = self.lock();
        if state.crashed.is_some() {
            return Err(power_lost());
        }
        state.ops += 1;
        state.syncs += 1;
        if let Some((at, image, seed)) = state.crash_at {
            if state.syncs == at {
                let (survived, survival) = survivor(&state, image, seed);
                state.crashed = Some(survived);
                state.survival = survival;
                return Err(power_lost());
            }
        }
        let ops = state.ops;
        state.ops_at_sync.push(ops);
        let live = state.live.clone();
        state.durable_before = std::mem::replace(&mut state.durable, live);
        state.pending.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.lock();
        if state.crashed.is_some() {
            return Err(power_lost());
        }
        state.ops += 1;
        if state.enospc_after.is_some_and(|n| state.ops > n) {
            state.enospc_errors += 1;
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let op = Pending::Write { offset: to_usize(offset)?, data: data.to_vec() };
        apply(&mut state.live, &op);
        state.pending.push(op);
        Ok(())
    }
}
