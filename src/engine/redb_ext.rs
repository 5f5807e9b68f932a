//! What only the redb backend offers: the application's own tables in the same file, written by
//! a local step inside the transaction that records it (`Ctx::local`) and read with
//! `Engine::read`. Everything else in the engine is backend-neutral (`storage::Store`).

use serde::de::DeserializeOwned;

use super::ctx::{decode, Ctx, Step};
use super::Engine;
use crate::api::ActivityError;
use crate::error::{Error, Result};
use crate::storage::records::StepKind;
use crate::storage::{as_redb, LocalFn, RedbLocal, StepBody};

impl Engine {
    /// Reads the application's own tables in the database file (those `Ctx::local` writes).
    pub fn read<R>(&self, f: impl FnOnce(&redb::ReadTransaction) -> R) -> Result<R> {
        let store = self.inner.store()?;
        let redb =
            as_redb(store.as_ref()).ok_or_else(|| Error::Config("Engine::read needs the redb backend".into()))?;
        let txn = redb.begin_read()?;
        Ok(f(&txn))
    }
}

impl Ctx {
    /// A transactional local step: `f` runs once, on the writer thread, inside the very
    /// transaction that records the step, and may read and write the application's own redb
    /// tables there. Its writes and the step's record commit together or not at all, so a
    /// local effect happens exactly once however often the workflow re-runs.
    ///
    /// Constraints: `f` must be short and synchronous (it holds the single writer); it must
    /// not open stent's own tables (names listed in `storage::tables`); if it returns an error
    /// or panics, everything it wrote is discarded and the step fails with that error. Each
    /// local step costs a suspension of the workflow (two commits), and local steps are a
    /// feature of the redb backend.
    pub fn local<T, F>(&self, name: &str, f: F) -> Step<T>
    where
        T: serde::Serialize + DeserializeOwned,
        F: FnOnce(&redb::WriteTransaction) -> std::result::Result<T, ActivityError> + Send + 'static,
    {
        self.step(StepKind::Local { name: name.to_string() }, name, decode, move |_, _| {
            let closure: RedbLocal = Box::new(move |txn| {
                let value = f(txn)?;
                serde_json::to_vec(&value)
                    .map_err(|e| ActivityError::permanent(format!("local step result does not encode: {e}")))
            });
            Ok(StepBody::Local(LocalFn::new(Box::new(closure))))
        })
    }
}
