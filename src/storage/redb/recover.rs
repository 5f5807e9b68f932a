//! Recovery at open: the leases a stopped process left are revoked (`transitions/recover.rs`),
//! then memory is rebuilt from the indexes: ready tasks, timers, deadlines.

use ::redb::{ReadableDatabase, ReadableTable};

use super::{corrupted, RedbStore};
use crate::storage::codec::decode;
use crate::storage::effect::Effect;
use crate::storage::index::ready_item;
use crate::storage::records::TaskRecord;
use crate::storage::tables::*;
use crate::storage::StorageError;

impl RedbStore {
    pub(super) fn recover_at_open(&self, now_ms: u64) -> Result<Vec<Effect>, StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly);
        }
        let txn = self.db.begin_write()?;
        let mut ids = self.lock_ids();
        let mut working = *ids;
        {
            let mut batch = self.batch(&txn, &mut working, now_ms)?;
            batch.revoke_leases()?;
            batch.r.finish(batch.ids)?;
        }
        txn.commit()?;
        *ids = working;
        drop(ids);

        // Rebuild memory from the indexes.
        let read = self.db.begin_read()?;
        let tasks = read.open_table(TASKS)?;
        let load = |id: u64| -> Result<TaskRecord, StorageError> {
            match tasks.get(id)? {
                Some(v) => decode(TASKS_NAME, &id, v.value()),
                None => Err(corrupted(TASKS_NAME, format!("{id} (indexed but missing)"))),
            }
        };
        let mut effects = Vec::new();
        let skip =
            |id: u64, e: StorageError| tracing::error!(task_id = id, error = %e, "pending task unreadable; not queued");
        for entry in read.open_table(READY)?.iter()? {
            let (key, _) = entry?;
            let id = key.value().3;
            match load(id) {
                Ok(task) => effects.push(Effect::Ready(ready_item(&task))),
                Err(e @ StorageError::Corrupted { .. }) => skip(id, e),
                Err(e) => return Err(e),
            }
        }
        for entry in read.open_table(TIMERS)?.iter()? {
            let (key, _) = entry?;
            let (due_ms, id) = key.value();
            match load(id) {
                Ok(task) => effects.push(Effect::Timer { due_ms, item: ready_item(&task) }),
                Err(e @ StorageError::Corrupted { .. }) => skip(id, e),
                Err(e) => return Err(e),
            }
        }
        for entry in read.open_table(DEADLINES)?.iter()? {
            let (key, _) = entry?;
            let (deadline_ms, execution_id) = key.value();
            effects.push(Effect::Deadline { execution_id, deadline_ms });
        }
        effects.extend(Self::schedule_timers(&read, now_ms)?);
        Ok(effects)
    }
}
