//! The result cache of cached functions: lookups, writes, and eviction (expired entries, then
//! beyond `cache_entries_max` those expiring soonest).

use super::*;
use crate::storage::records::CachePolicy;

/// Expired entries removed per write at most (beyond those over the size bound).
const EXPIRED_PER_CALL: usize = 16;

impl<R: Records> Batch<'_, R> {
    /// A cached function's unexpired result for `input`, if any.
    pub(super) fn cached(
        &self,
        policy: Option<CachePolicy>,
        function: &str,
        input: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(policy) = policy else { return Ok(None) };
        let key = CacheKey { function, version: policy.version, input };
        let record = match self.r.cache_entry(&key) {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            // A damaged cache entry is only a miss: the function runs again.
            Err(StorageError::Corrupted { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok((record.expires_ms > self.now).then_some(record.output))
    }

    pub(super) fn cache_put(
        &mut self,
        policy: CachePolicy,
        function: &str,
        input: &[u8],
        output: &[u8],
    ) -> Result<(), StorageError> {
        let key = CacheKey { function, version: policy.version, input };
        // A damaged old entry is overwritten (its expiry entry, if any, is left to `check`).
        let old = match self.r.cache_entry(&key) {
            Ok(old) => old,
            Err(StorageError::Corrupted { .. }) => None,
            Err(e) => return Err(e),
        };
        let record = CacheRecord { output: output.to_vec(), expires_ms: self.now.saturating_add(policy.ttl_ms) };
        self.r.put_cache_entry(&key, &record, old.as_ref())?;
        self.evict_cache()
    }

    /// Removes expired entries (a few per call) and, beyond `cache_entries_max`, the entries
    /// that expire soonest.
    pub(super) fn evict_cache(&mut self) -> Result<(), StorageError> {
        let over = self.r.cache_len()?.saturating_sub(self.cache_entries_max) as usize;
        let mut victims = Vec::new();
        for entry in self.r.cache_by_expiry(None, EXPIRED_PER_CALL + over)? {
            let expired = entry.expires_ms <= self.now;
            if !(expired || victims.len() < over) {
                break;
            }
            victims.push(entry);
        }
        self.remove_cache_entries(&victims)
    }

    /// Removes cache entries named by their expiry index keys, with those keys.
    pub(super) fn remove_cache_entries(&mut self, victims: &[CacheExpiry]) -> Result<(), StorageError> {
        for victim in victims {
            self.r.remove_cache_entry(victim)?;
        }
        Ok(())
    }
}
