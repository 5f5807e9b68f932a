//! The export format: a portable, versioned, checksummed log of every record, for backups and
//! for moving a database (`stent export` / `stent import`). Backend-neutral: a backend writes
//! (table, key, value) triples in its own key and value encodings, which are stent's and
//! independent of the platform (redb's fixed-width integers are little-endian, records are
//! postcard with a CRC), and reads them back.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header   "STENTEXP"  format: u32  schema_version: u64  crc32(previous 20 bytes): u32
//! record   'R'  name_len: u8  name  key_len: u32  key  value_len: u32  value  crc32(frame): u32
//! ...
//! trailer  'E'  records: u64  crc32(every byte before this trailer's 'E'): u32
//! ```
//!
//! Each record carries its own checksum, so damage is reported at the offset of the first bad
//! frame; the trailer's count and whole-file checksum catch a truncation at a frame boundary,
//! a dropped or reordered frame, and anything appended. A reader never trusts a length before
//! it has read that many bytes, so a damaged length cannot make it allocate without bound.

use std::io::{Read, Write};

/// The first bytes of every export.
pub const MAGIC: &[u8; 8] = b"STENTEXP";
/// The layout above. A reader refuses a format it does not know.
pub const FORMAT: u32 = 1;
const HEADER_LEN: u64 = 24;
/// Longest table name a frame may carry.
const NAME_MAX: usize = 64;

/// Why an export cannot be read. Offsets count bytes from the start of the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("not a stent export (no STENTEXP header)")]
    NotAnExport,
    #[error("export format {0} is not supported by this build (it reads format {FORMAT})")]
    UnsupportedFormat(u32),
    #[error("the export is damaged at byte offset {offset}: {reason}")]
    Damaged { offset: u64, reason: String },
    #[error("the export is truncated at byte offset {offset}: {reason}")]
    Truncated { offset: u64, reason: String },
    #[error("I/O error on the export: {0}")]
    Io(#[source] std::io::Error),
}

/// Writes an export: a header, then `record` per record, then `finish`.
pub struct ExportWriter<W: Write> {
    out: W,
    whole: crc32fast::Hasher,
    records: u64,
}

impl<W: Write> ExportWriter<W> {
    pub fn new(mut out: W, schema_version: u64) -> std::io::Result<Self> {
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT.to_le_bytes());
        header.extend_from_slice(&schema_version.to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        out.write_all(&header)?;
        let mut whole = crc32fast::Hasher::new();
        whole.update(&header);
        Ok(ExportWriter { out, whole, records: 0 })
    }

    pub fn record(&mut self, table: &str, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        if table.len() > NAME_MAX {
            return Err(std::io::Error::other(format!("table name {table:?} is too long for an export")));
        }
        let too_long = |what: &str| std::io::Error::other(format!("a {what} of more than 4 GiB cannot be exported"));
        let key_len = u32::try_from(key.len()).map_err(|_| too_long("key"))?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_long("value"))?;
        let mut frame = Vec::with_capacity(14 + table.len() + key.len() + value.len());
        frame.push(b'R');
        frame.push(table.len() as u8);
        frame.extend_from_slice(table.as_bytes());
        frame.extend_from_slice(&key_len.to_le_bytes());
        frame.extend_from_slice(key);
        frame.extend_from_slice(&value_len.to_le_bytes());
        frame.extend_from_slice(value);
        let crc = crc32fast::hash(&frame);
        frame.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&frame)?;
        self.whole.update(&frame);
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer; returns the number of records and the writer.
    pub fn finish(mut self) -> std::io::Result<(u64, W)> {
        let crc = self.whole.clone().finalize();
        let mut trailer = vec![b'E'];
        trailer.extend_from_slice(&self.records.to_le_bytes());
        trailer.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        Ok((self.records, self.out))
    }
}

/// One record of an export, with where its frame starts.
#[derive(Debug)]
pub struct ExportRecord {
    pub offset: u64,
    pub table: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Reads an export back, checking every frame as it goes. Iterate with `next`; `Ok(None)`
/// comes only after a trailer that matches everything read.
pub struct ExportReader<R: Read> {
    input: R,
    offset: u64,
    whole: crc32fast::Hasher,
    records: u64,
    pub schema_version: u64,
    done: bool,
}

impl<R: Read> ExportReader<R> {
    pub fn new(mut input: R) -> Result<Self, ExportError> {
        let mut header = [0u8; HEADER_LEN as usize];
        let got = read_up_to(&mut input, &mut header)?;
        if got < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
            return Err(ExportError::NotAnExport);
        }
        if got < header.len() {
            return Err(ExportError::Truncated { offset: got as u64, reason: "the header is incomplete".into() });
        }
        let crc = u32::from_le_bytes(header[20..24].try_into().unwrap_or_default());
        if crc32fast::hash(&header[..20]) != crc {
            return Err(ExportError::Damaged { offset: 0, reason: "the header fails its checksum".into() });
        }
        let format = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
        if format != FORMAT {
            return Err(ExportError::UnsupportedFormat(format));
        }
        let schema_version = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
        let mut whole = crc32fast::Hasher::new();
        whole.update(&header);
        Ok(ExportReader { input, offset: HEADER_LEN, whole, records: 0, schema_version, done: false })
    }

    /// The next record, `Ok(None)` after a sound trailer, or where and why the file is bad.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<ExportRecord>, ExportError> {
        if self.done {
            return Ok(None);
        }
        let start = self.offset;
        let mut frame = Vec::new();
        let kind = self.take(&mut frame, 1, start, "a record or the trailer")?[0];
        match kind {
            b'R' => {
                let name_len = self.take(&mut frame, 1, start, "a table name's length")?[0] as usize;
                if name_len > NAME_MAX {
                    return Err(ExportError::Damaged {
                        offset: start,
                        reason: format!("table name of {name_len} bytes"),
                    });
                }
                let table = self.take(&mut frame, name_len, start, "a table name")?.to_vec();
                let key_len = self.take_u32(&mut frame, start, "a key's length")?;
                let key = self.take(&mut frame, key_len as usize, start, "a key")?.to_vec();
                let value_len = self.take_u32(&mut frame, start, "a value's length")?;
                let value = self.take(&mut frame, value_len as usize, start, "a value")?.to_vec();
                let body_len = frame.len();
                let crc = self.take_u32(&mut frame, start, "a record's checksum")?;
                if crc32fast::hash(&frame[..body_len]) != crc {
                    return Err(ExportError::Damaged { offset: start, reason: "a record fails its checksum".into() });
                }
                let table = String::from_utf8(table)
                    .map_err(|_| ExportError::Damaged { offset: start, reason: "a table name is not UTF-8".into() })?;
                self.whole.update(&frame);
                self.records += 1;
                Ok(Some(ExportRecord { offset: start, table, key, value }))
            }
            b'E' => {
                let whole = self.whole.clone().finalize();
                let mut trailer = Vec::new();
                let records = u64::from_le_bytes(
                    self.take(&mut trailer, 8, start, "the trailer's record count")?.try_into().unwrap_or_default(),
                );
                let crc = self.take_u32(&mut trailer, start, "the trailer's checksum")?;
                if crc != whole {
                    return Err(ExportError::Damaged {
                        offset: start,
                        reason: "the file's checksum in the trailer does not match its contents".into(),
                    });
                }
                if records != self.records {
                    return Err(ExportError::Damaged {
                        offset: start,
                        reason: format!("the trailer counts {records} records, the file holds {}", self.records),
                    });
                }
                let mut extra = [0u8; 1];
                if read_up_to(&mut self.input, &mut extra)? != 0 {
                    return Err(ExportError::Damaged {
                        offset: self.offset,
                        reason: "bytes follow the trailer".into(),
                    });
                }
                self.done = true;
                Ok(None)
            }
            other => Err(ExportError::Damaged { offset: start, reason: format!("unknown frame kind 0x{other:02x}") }),
        }
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Appends `n` bytes of input to `frame` and returns them. Reads in steps, so a damaged
    /// length fails at the end of the file instead of allocating it up front.
    fn take<'f>(&mut self, frame: &'f mut Vec<u8>, n: usize, start: u64, what: &str) -> Result<&'f [u8], ExportError> {
        let from = frame.len();
        let got = (&mut self.input).take(n as u64).read_to_end(frame).map_err(ExportError::Io)?;
        self.offset += got as u64;
        if got < n {
            return Err(ExportError::Truncated {
                offset: self.offset,
                reason: format!("the file ends inside {what} (frame at offset {start}; no trailer)"),
            });
        }
        Ok(&frame[from..])
    }

    fn take_u32(&mut self, frame: &mut Vec<u8>, start: u64, what: &str) -> Result<u32, ExportError> {
        let bytes = self.take(frame, 4, start, what)?;
        Ok(u32::from_le_bytes(bytes.try_into().unwrap_or_default()))
    }
}

fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, ExportError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ExportError::Io(e)),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = ExportWriter::new(Vec::new(), 3).unwrap();
        w.record("executions", &1u64.to_le_bytes(), b"first").unwrap();
        w.record("meta", b"next_execution_id", &2u64.to_le_bytes()).unwrap();
        w.finish().unwrap().1
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<ExportRecord>, ExportError> {
        let mut r = ExportReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn a_sound_export_reads_back_every_record() {
        let bytes = sample();
        let records = read_all(&bytes).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].table.as_str(), records[0].value.as_slice()), ("executions", &b"first"[..]));
        assert_eq!(ExportReader::new(&bytes[..]).unwrap().schema_version, 3);
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused_with_an_offset() {
        let bytes = sample();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(read_all(&bad).is_err(), "a flip at byte {at} was accepted");
        }
        for len in 0..bytes.len() {
            match read_all(&bytes[..len]) {
                Err(ExportError::Truncated { offset, .. }) => assert!(offset <= len as u64),
                Err(ExportError::NotAnExport) => assert!(len < MAGIC.len()),
                other => panic!("a cut at {len} gave {other:?}"),
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(ExportError::Damaged { .. })));
    }

    #[test]
    fn a_damaged_length_fails_without_allocating_it() {
        let mut bytes = sample();
        // The first record's key length, set to 4 GiB - 1.
        let at = HEADER_LEN as usize + 2 + "executions".len();
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_all(&bytes), Err(ExportError::Truncated { .. })));
    }
}
