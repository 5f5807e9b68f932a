//! The only place that decides byte layouts of stored values.
//!
//! Envelope: `[format version: u8][postcard body][crc32 (LE) of the preceding bytes]`.
//! Decoding checks length, checksum and version before postcard sees a byte, and that postcard
//! used every byte, so a torn or flipped value (or one of another layout) is
//! `Corrupted { table, key }`, never a panic and never garbage.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StorageError;

pub const FORMAT_VERSION: u8 = 1;
const TRAILER_BYTES: usize = 4;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Serialising our own record types into a Vec cannot fail: no maps with non-string keys,
    // no `serialize_any`. A failure would be a programming error caught by the tests.
    out = postcard::to_extend(value, out).expect("records always serialise");
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &dyn std::fmt::Display,
    bytes: &[u8],
) -> Result<T, StorageError> {
    let body = checked_body(table, key, bytes)?;
    // The whole body is the record: bytes left over mean a layout other than this type's (a
    // record written by another format, or migrated twice), never something to ignore.
    match postcard::take_from_bytes(&body[1..]) {
        Ok((value, [])) => Ok(value),
        _ => Err(StorageError::Corrupted { table, key: key.to_string() }),
    }
}

/// The envelope's body (version byte and postcard), once length, checksum and version hold.
fn checked_body<'b>(
    table: &'static str,
    key: &dyn std::fmt::Display,
    bytes: &'b [u8],
) -> Result<&'b [u8], StorageError> {
    let corrupted = || StorageError::Corrupted { table, key: key.to_string() };
    if bytes.len() < 1 + TRAILER_BYTES {
        return Err(corrupted());
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER_BYTES);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32fast::hash(body) != stored || body[0] != FORMAT_VERSION {
        return Err(corrupted());
    }
    Ok(body)
}

/// Brings a record written before fields were appended to its type up to date: `appended`
/// (the new fields' values, in order) is encoded after the old body, which is what encoding
/// the whole new record gives, since postcard writes a struct as its fields in order. The old
/// record is checked as `decode` checks it; the result has a fresh checksum.
pub fn append_fields<T: Serialize>(
    table: &'static str,
    key: &dyn std::fmt::Display,
    bytes: &[u8],
    appended: &T,
) -> Result<Vec<u8>, StorageError> {
    let body = checked_body(table, key, bytes)?;
    let mut out = postcard::to_extend(appended, body.to_vec()).expect("records always serialise");
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Encode, and in debug builds prove the bytes decode back (TigerBeetle's pair assertion).
pub fn encode_checked<T: Serialize + DeserializeOwned>(table: &'static str, value: &T) -> Vec<u8> {
    let bytes = encode(value);
    debug_assert!(decode::<T>(table, &"<just encoded>", &bytes).is_ok());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_bit_flip_is_caught() {
        let value = (7u64, "hello".to_string(), vec![1u8, 2, 3]);
        let bytes = encode(&value);
        let back: (u64, String, Vec<u8>) = decode("t", &1, &bytes).unwrap();
        assert_eq!(back, value);
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            let err = decode::<(u64, String, Vec<u8>)>("t", &1, &flipped).unwrap_err();
            assert!(matches!(err, StorageError::Corrupted { table: "t", .. }));
        }
        for len in 0..bytes.len() {
            assert!(decode::<(u64, String, Vec<u8>)>("t", &1, &bytes[..len]).is_err());
        }
    }

    #[test]
    fn appending_fields_gives_the_bytes_of_the_longer_record_and_leftovers_are_refused() {
        let old = encode(&(7u64, "hello".to_string()));
        let appended = append_fields("t", &1, &old, &(1u32, 300u32)).unwrap();
        assert_eq!(appended, encode(&(7u64, "hello".to_string(), 1u32, 300u32)));
        // Decoding the old type from the longer record, or migrating twice, is refused.
        assert!(decode::<(u64, String)>("t", &1, &appended).is_err());
        let twice = append_fields("t", &1, &appended, &(1u32, 300u32)).unwrap();
        assert!(decode::<(u64, String, u32, u32)>("t", &1, &twice).is_err());
        let mut flipped = old.clone();
        flipped[2] ^= 1;
        assert!(append_fields("t", &1, &flipped, &(1u32,)).is_err(), "a torn record is not migrated");
    }
}
