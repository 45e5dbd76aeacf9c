//! The protocol two processes share over a file adapter's target file: the gateway's file
//! adapter writes its ANA states there, and the monitor leader's file fencer rewrites it to
//! cut a failed gateway off. Both sides must agree on two things, kept here so they cannot
//! drift apart:
//!
//! * **The lock.** Every read-modify-write of `TARGET` holds an exclusive `flock` on the
//!   sibling file `TARGET.lock` (created on first use, never removed: removing it would let
//!   two writers lock two different files). Without it, a fence written between a stale
//!   gateway's read and its rename would be overwritten with "optimized".
//! * **The replacement.** The new document is written to a temporary file in the same
//!   directory, flushed, and renamed over the target, so a reader sees the old file or the
//!   new one, never half of one. Readers therefore need no lock.
//!
//! The document's format is the adapter's (`gwmon_client::adapters::file`); the key the
//! fencer adds is [`FENCED_EPOCH_KEY`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fs2::FileExt;

/// The top-level key recording the newest group epoch a fence was issued at. The adapter
/// refuses to make a group optimized for states of that epoch or older.
pub const FENCED_EPOCH_KEY: &str = "fenced_epoch";

/// How often a busy lock is tried again while waiting for it.
const RETRY: Duration = Duration::from_millis(10);

/// Why the lock could not be taken. One line.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else held it for the whole wait.
    #[error("{} is held by another process; gave up after {} ms", path.display(), waited.as_millis())]
    Busy { path: PathBuf, waited: Duration },
    /// The lock file could not be opened or locked at all.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The lock file of `target`: `TARGET.lock`, next to it.
pub fn lock_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// An exclusive lock on a target file, held until dropped (closing the file releases it,
/// and so does the process's death: a crashed holder never blocks the other side).
#[derive(Debug)]
pub struct TargetLock {
    _file: File,
}

/// Take the exclusive lock of `target`, waiting at most `wait`. Blocking: call it from a
/// blocking thread.
pub fn lock(target: &Path, wait: Duration) -> Result<TargetLock, LockError> {
    let path = lock_path(target);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
    let start = Instant::now();
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => return Ok(TargetLock { _file: file }),
            Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
                let waited = start.elapsed();
                if waited >= wait {
                    return Err(LockError::Busy { path, waited });
                }
                std::thread::sleep(RETRY.min(wait - waited));
            }
            Err(source) => return Err(LockError::Io { path, source }),
        }
    }
}

/// Distinguishes the temporary files of concurrent writers within one process; the process
/// id distinguishes processes.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Replace `target` with `bytes` atomically: a temporary file in the same directory,
/// flushed, renamed over it. On error the temporary file is removed and `target` is as it
/// was. Blocking.
pub fn replace(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target.file_name().map_or_else(
        || "target.json".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable. Not every platform can open a directory for this, and
    // the new content is already in place for readers, so a failure here is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_and_bounded() {
        let dir = std::env::temp_dir().join(format!("gwmon-target-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let target = dir.join("gw1.json");
        assert_eq!(lock_path(&target), dir.join("gw1.json.lock"));
        let held = lock(&target, Duration::from_secs(1)).expect("free lock");
        // flock locks belong to the open file, so a second open in this process conflicts.
        let err = lock(&target, Duration::from_millis(30)).expect_err("held");
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("held by another process"), "{err}");
        drop(held);
        lock(&target, Duration::from_millis(30)).expect("released");

        replace(&target, b"{}\n").expect("replace");
        assert_eq!(std::fs::read(&target).expect("read"), b"{}\n");
        let err = replace(&dir.join("missing/gw2.json"), b"{}").expect_err("no directory");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
