//! Arbitrary bytes into the record decoders: never a panic, and anything that decodes
//! re-encodes stably.
//!
//! Two inputs per run: the raw bytes (exercises the length, CRC and version checks, which almost
//! every input fails), and the same bytes as the body of a valid envelope (version byte in front,
//! correct CRC-32 behind), so postcard itself sees arbitrary bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use stent::storage::codec::{decode, encode, FORMAT_VERSION};
use stent::storage::records::{DeadLetterRecord, ExecutionRecord, TaskRecord};
use stent::storage::StorageError;

fn envelope(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn check<T: Serialize + DeserializeOwned>(table: &'static str, bytes: &[u8]) {
    match decode::<T>(table, &7u64, bytes) {
        Ok(value) => {
            // Compare bytes, not values: records hold f64s, and NaN != NaN.
            let once = encode(&value);
            let again: T = decode(table, &7u64, &once).expect("encoded record must decode");
            assert_eq!(encode(&again), once, "{table}: re-encoding is not stable");
        }
        Err(StorageError::Corrupted { table: t, key }) => {
            assert_eq!(t, table);
            assert_eq!(key, "7");
        }
        Err(other) => panic!("{table}: decode returned {other:?}, not Corrupted"),
    }
}

fn all(bytes: &[u8]) {
    check::<ExecutionRecord>("executions", bytes);
    check::<TaskRecord>("tasks", bytes);
    check::<DeadLetterRecord>("dead_letters", bytes);
}

fuzz_target!(|data: &[u8]| {
    all(data);
    all(&envelope(data));
});
