//! The read side of schedules and concurrency keys in the redb backend, and the timers
//! recovery sets for schedules.

use ::redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use super::RedbStore;
use crate::storage::codec::decode;
use crate::storage::effect::Effect;
use crate::storage::records::{ExecutionRecord, ScheduleRecord};
use crate::storage::tables::*;
use crate::storage::StorageError;

impl RedbStore {
    /// Every schedule, by name.
    pub(super) fn read_schedules(&self) -> Result<Vec<ScheduleRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in read.open_table(SCHEDULES)?.iter()? {
            let (k, v) = entry?;
            out.push(decode(SCHEDULES_NAME, &k.value(), v.value())?);
        }
        Ok(out)
    }

    pub(super) fn read_schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, StorageError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(SCHEDULES)?;
        let found = table.get(name)?;
        found.map(|v| decode(SCHEDULES_NAME, &name, v.value())).transpose()
    }

    /// The latest `limit` executions schedule `name` started: (nominal time, execution id),
    /// oldest first.
    pub(super) fn read_schedule_fires(&self, name: &str, limit: usize) -> Result<Vec<(u64, u64)>, StorageError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(SCHEDULE_FIRES)?;
        let mut out = Vec::new();
        for entry in table.range((name, 0, 0)..=(name, u64::MAX, u64::MAX))?.rev().take(limit) {
            let (k, _) = entry?;
            let (_, nominal, id) = k.value();
            out.push((nominal, id));
        }
        out.reverse();
        Ok(out)
    }

    /// The concurrency keys in use, with how many running executions hold each.
    pub(super) fn read_key_slots(&self) -> Result<Vec<(String, String, u64)>, StorageError> {
        let read = self.db.begin_read()?;
        let mut out: Vec<(String, String, u64)> = Vec::new();
        for entry in read.open_table(KEY_SLOTS)?.iter()? {
            let key = entry?.0;
            let (function, k, _) = key.value();
            match out.last_mut() {
                Some((f, last, n)) if f == function && last == k => *n += 1,
                _ => out.push((function.to_string(), k.to_string(), 1)),
            }
        }
        Ok(out)
    }

    /// Schedules whose next fire is due at `now_ms` (for `pending_work`).
    pub(super) fn schedules_due(read: &ReadTransaction, now_ms: u64) -> Result<u64, StorageError> {
        let mut due = 0;
        for entry in read.open_table(SCHEDULE_DUE)?.range((0, "")..(now_ms.saturating_add(1), ""))? {
            entry?;
            due += 1;
        }
        Ok(due)
    }

    /// The timer of every schedule, as recovery rebuilds memory. A schedule whose record is
    /// unreadable gets none (`check` reports it); the others go on.
    pub(super) fn schedule_timers(read: &ReadTransaction, now_ms: u64) -> Result<Vec<Effect>, StorageError> {
        let executions = read.open_table(EXECUTIONS)?;
        let mut effects = Vec::new();
        for entry in read.open_table(SCHEDULES)?.iter()? {
            let (k, v) = entry?;
            let name = k.value();
            let rec: ScheduleRecord = match decode(SCHEDULES_NAME, &name, v.value()) {
                Ok(rec) => rec,
                Err(e @ StorageError::Corrupted { .. }) => {
                    tracing::error!(schedule = name, error = %e, "schedule unreadable; it does not fire");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let running = match rec.last_execution {
                Some(id) => match executions.get(id)? {
                    Some(v) => decode::<ExecutionRecord>(EXECUTIONS_NAME, &id, v.value())
                        .map(|e| !e.state.is_terminal())
                        .unwrap_or(false),
                    None => false,
                },
                None => false,
            };
            let at_ms = rec.wake_ms(now_ms, running);
            effects.push(Effect::Schedule { name: rec.name, function: rec.template.function, at_ms });
        }
        Ok(effects)
    }
}
