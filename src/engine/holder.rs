//! Who holds a database file: the pid behind "in use", so an operator knows which process to
//! look at. Linux lists every file lock in `/proc/locks` with its holder's pid and the locked
//! file's device and inode; elsewhere the holder is not known.

use std::path::Path;

/// The pid of a process holding a lock on `path`, other than this one.
pub(super) fn holder_pid(path: &Path) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        holder_in(&locks, meta.dev(), meta.ino(), std::process::id())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// Reads `/proc/locks` lines such as `1: POSIX  ADVISORY  WRITE 4242 08:01:1234 0 EOF` (or
/// `FLOCK`, or a `->` prefix for a waiter): the pid, then `major:minor:inode` in hex:hex:dec.
#[cfg(any(target_os = "linux", test))]
fn holder_in(locks: &str, dev: u64, ino: u64, me: u32) -> Option<u32> {
    // Linux's dev_t: major in bits 8..20 and 32..44, minor in bits 0..8 and 20..32.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    locks.lines().filter(|l| !l.contains("->")).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = fields.iter().position(|f| f.matches(':').count() == 2)?;
        let pid: u32 = fields.get(at.checked_sub(1)?)?.parse().ok()?;
        let mut id = fields[at].split(':');
        let (ma, mi, inode) = (id.next()?, id.next()?, id.next()?);
        let matches = u64::from_str_radix(ma, 16).ok()? == major
            && u64::from_str_radix(mi, 16).ok()? == minor
            && inode.parse::<u64>().ok()? == ino;
        (matches && pid != me).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pid_that_locks_the_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 4242 08:01:1234 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 777 00:2f:99 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 778 00:2f:99 0 EOF\n";
        assert_eq!(holder_in(locks, (8 << 8) | 1, 1234, 1), Some(4242));
        assert_eq!(holder_in(locks, 0x2f, 99, 1), Some(777));
        assert_eq!(holder_in(locks, 0x2f, 99, 777), None, "this process is not 'another'");
        assert_eq!(holder_in(locks, 0x2f, 100, 1), None);
    }
}
