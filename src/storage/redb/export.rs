//! Export and import (`storage/export.rs` has the format): every stent table, record by record,
//! in redb's own key and value encodings. An export reads one read transaction, so it is a
//! consistent snapshot of a live database; an import writes one write transaction, so a file
//! refused half way leaves the database as it was.

use std::io::{Read, Write};

use ::redb::{
    Key, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, Value,
    WriteTransaction,
};

use super::schema::{migrate, SCHEMA_VERSION};
use super::RedbStore;
use crate::storage::export::{ExportError, ExportReader, ExportWriter};
use crate::storage::guard::unpanic;
use crate::storage::tables::*;
use crate::storage::transitions::Ids;
use crate::storage::StorageError;

/// Calls `$each!(TABLE)` for every table an export carries: all of stent's.
macro_rules! every_table {
    ($each:ident) => {
        $each!(META);
        $each!(EXECUTIONS);
        $each!(TASKS);
        $each!(READY);
        $each!(TIMERS);
        $each!(LEASES);
        $each!(EXEC_BY_STATE);
        $each!(EXEC_COUNTS);
        $each!(DEADLINES);
        $each!(EXEC_TASKS);
        $each!(JOURNAL);
        $each!(SIGNALS);
        $each!(COUNTERS);
        $each!(STATE);
        $each!(CACHE);
        $each!(CACHE_BY_EXPIRY);
        $each!(STEP_INPUTS);
        $each!(HEARTBEATS);
        $each!(RUNS);
        $each!(RUN_STEPS);
        $each!(SCHEDULES);
        $each!(SCHEDULE_DUE);
        $each!(SCHEDULE_FIRES);
        $each!(RATE_STATE);
        $each!(KEY_SLOTS);
        $each!(FLOW_KEYS);
        $each!(IDEMPOTENCY);
        $each!(DEAD_LETTERS);
        $each!(DLQ_BY_TIME);
    };
}

/// What an export or an import carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransferReport {
    pub records: u64,
    pub executions: u64,
    pub dead_letters: u64,
    pub schema_version: u64,
}

/// Why an import was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("the database already holds records (table {0:?}); import only into a new, empty database")]
    NotEmpty(&'static str),
    #[error("the export's schema version {found} is newer than this build of stent supports ({supported})")]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("record at byte offset {offset}: {reason}")]
    BadRecord { offset: u64, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn export_table<K: Key + 'static, V: Value + 'static, W: Write>(
    read: &ReadTransaction,
    def: TableDefinition<K, V>,
    out: &mut ExportWriter<W>,
) -> Result<u64, StorageError> {
    let table = read.open_table(def)?;
    let mut n = 0;
    for entry in table.iter()? {
        let (k, v) = entry?;
        let (k, v) = (k.value(), v.value());
        out.record(def.name(), K::as_bytes(&k).as_ref(), V::as_bytes(&v).as_ref()).map_err(StorageError::Io)?;
        n += 1;
    }
    Ok(n)
}

fn import_record<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
    key: &[u8],
    value: &[u8],
) -> Result<(), StorageError> {
    if let Some(width) = K::fixed_width() {
        if key.len() != width {
            return Err(StorageError::Other(format!("a key of {} bytes where {} are fixed", key.len(), width)));
        }
    }
    if let Some(width) = V::fixed_width() {
        if value.len() != width {
            return Err(StorageError::Other(format!("a value of {} bytes where {} are fixed", value.len(), width)));
        }
    }
    let mut table = txn.open_table(def)?;
    // redb decodes keys it compares; a malformed tuple key may panic inside it (`unpanic`).
    table.insert(K::from_bytes(key), V::from_bytes(value))?;
    Ok(())
}

impl RedbStore {
    /// Writes every record to `out` from one read transaction (a consistent snapshot).
    pub fn export_to(&self, out: impl Write) -> Result<TransferReport, StorageError> {
        let read = self.db.begin_read()?;
        let mut writer = ExportWriter::new(out, SCHEMA_VERSION).map_err(StorageError::Io)?;
        let mut report = TransferReport { records: 0, executions: 0, dead_letters: 0, schema_version: SCHEMA_VERSION };
        macro_rules! each {
            ($t:ident) => {
                let n = unpanic("exporting", || export_table(&read, $t, &mut writer))?;
                if $t.name() == EXECUTIONS.name() {
                    report.executions = n;
                }
                if $t.name() == DEAD_LETTERS.name() {
                    report.dead_letters = n;
                }
            };
        }
        every_table!(each);
        let (records, _) = writer.finish().map_err(StorageError::Io)?;
        report.records = records;
        Ok(report)
    }

    /// Reads an export into this store, which must hold no records yet, in one transaction:
    /// any damage in the file refuses the whole import (with its offset) and writes nothing.
    /// An export of an older schema is migrated in the same transaction.
    pub fn import_from(&self, input: impl Read) -> Result<TransferReport, ImportError> {
        if self.read_only {
            return Err(StorageError::ReadOnly.into());
        }
        let mut reader = ExportReader::new(input)?;
        if reader.schema_version > SCHEMA_VERSION {
            return Err(ImportError::SchemaTooNew { found: reader.schema_version, supported: SCHEMA_VERSION });
        }
        let txn = self.db.begin_write().map_err(StorageError::from)?;
        {
            let read = &txn;
            macro_rules! each {
                ($t:ident) => {
                    if $t.name() != META.name()
                        && !read.open_table($t).map_err(StorageError::from)?.is_empty().map_err(StorageError::from)?
                    {
                        return Err(ImportError::NotEmpty($t.name()));
                    }
                };
            }
            every_table!(each);
        }
        let mut report =
            TransferReport { records: 0, executions: 0, dead_letters: 0, schema_version: reader.schema_version };
        while let Some(record) = reader.next()? {
            let (key, value) = (&record.key[..], &record.value[..]);
            let mut found = false;
            let result = unpanic("importing a record", || {
                macro_rules! each {
                    ($t:ident) => {
                        if !found && record.table == $t.name() {
                            found = true;
                            import_record(&txn, $t, key, value)?;
                        }
                    };
                }
                every_table!(each);
                Ok(())
            });
            if let Err(e) = result {
                return Err(ImportError::BadRecord { offset: record.offset, reason: e.to_string() });
            }
            if !found {
                return Err(ImportError::BadRecord {
                    offset: record.offset,
                    reason: format!("unknown table {:?} (written by another version of stent?)", record.table),
                });
            }
            report.executions += u64::from(record.table == EXECUTIONS.name());
            report.dead_letters += u64::from(record.table == DEAD_LETTERS.name());
        }
        report.records = reader.records();
        let ids = {
            let mut meta = txn.open_table(META).map_err(StorageError::from)?;
            if reader.schema_version < SCHEMA_VERSION {
                migrate(&txn, reader.schema_version)?;
            }
            meta.insert("schema_version", SCHEMA_VERSION).map_err(StorageError::from)?;
            let get = |name: &str| -> Result<u64, StorageError> { Ok(meta.get(name)?.map_or(1, |v| v.value())) };
            Ids {
                next_execution: get("next_execution_id")?,
                next_task: get("next_task_id")?,
                next_dead_letter: get("next_dead_letter_id")?,
            }
        };
        txn.commit().map_err(StorageError::from)?;
        *self.lock_ids() = ids;
        Ok(report)
    }
}
