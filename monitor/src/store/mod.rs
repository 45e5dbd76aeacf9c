//! The narrow, byte-oriented storage the Raft adapters sit on.
//!
//! * [`Store`]: a log of byte blobs keyed by `u64` index, a few named metadata values, and an
//!   explicit [`Store::flush`] that makes every earlier write durable.
//! * [`redb`]: the implementation on redb (the default for a new data directory).
//! * [`sled`]: the implementation on sled 0.34 (`--store sled`, and the data directories
//!   of releases before 0.3.0).
//! * [`open`]: the one a monitor's `store` setting names, refusing a directory the other
//!   one wrote.
//!
//! Why a trait of our own instead of implementing openraft's storage traits on sled directly:
//! sled's disk growth is a known weakness, so the backend must stay swappable (redb is the
//! likely next one) and measurable, and the openraft adapters (`crate::raft::log_store`,
//! `crate::raft::state_machine`) must not change when it is swapped. The trait knows nothing of
//! openraft or of the encodings: values are opaque bytes, already versioned by
//! [`crate::codec`].
//!
//! Writes are visible to reads as soon as they return, but they are durable only once a later
//! [`Store::flush`] has returned `Ok`. Keeping the two apart lets a multi-step update (write the
//! purge marker, then delete entries) pay for one fsync, and lets the caller decide which
//! writes Raft's safety depends on (vote, appended entries, snapshots) and wait for those.

pub mod memory;
pub mod redb;
pub mod sled;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

pub use self::memory::MemStore;
pub use self::redb::RedbStore;
pub use self::sled::SledStore;

/// Which backend holds a monitor's log and snapshots (the `store` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// sled 0.34: a log-structured store. The backend of releases before 0.3.0, kept for
    /// their data directories.
    Sled,
    /// redb: copy-on-write B-trees in one file, made durable with `fdatasync`; the default
    /// for a new data directory, since its size holds flat where sled's grows (BENCHMARKS.md,
    /// "Disk").
    #[default]
    Redb,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sled => "sled",
            StoreKind::Redb => "redb",
        }
    }

    /// The backend that wrote the store directory `path`, if any did.
    pub fn found_in(path: &Path) -> Option<StoreKind> {
        if path.join(self::redb::FILE).exists() {
            Some(StoreKind::Redb)
        } else if path.join(self::sled::DB_FILE).exists() {
            Some(StoreKind::Sled)
        } else {
            None
        }
    }
}

/// Open (creating if needed) the store in directory `path`: of the backend `asked` for, or
/// if none is, the one the directory holds (redb for a new one). A directory another backend
/// wrote is refused: the two formats do not convert into each other in place (take a backup
/// and restore it into a new data directory instead).
pub fn open(
    asked: Option<StoreKind>,
    path: &Path,
    cache_bytes: u64,
) -> Result<Arc<dyn Store>, StoreError> {
    let found = StoreKind::found_in(path);
    if let (Some(asked), Some(found)) = (asked, found) {
        if asked != found {
            return Err(StoreError::OtherBackend {
                path: path.to_path_buf(),
                found: found.name(),
                asked: asked.name(),
            });
        }
    }
    Ok(match asked.or(found).unwrap_or_default() {
        StoreKind::Sled => Arc::new(SledStore::open(path, cache_bytes)?),
        StoreKind::Redb => Arc::new(RedbStore::open(path, cache_bytes)?),
    })
}

/// Whether a range of log indexes holds no index at all (an inverted one included).
pub(crate) fn is_empty_range(start: Bound<u64>, end: Bound<u64>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => {
            s >= e
        }
        (Bound::Excluded(s), Bound::Excluded(e)) => s >= e || s.saturating_add(1) == e,
        _ => false,
    }
}

/// The future returned by [`Store::flush`]. Boxed so that [`Store`] stays object safe and the
/// Raft adapters can hold an `Arc<dyn Store>` whatever the backend; one allocation per fsync is
/// nothing next to the fsync.
pub type FlushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// One log entry as stored: its index and its encoded bytes.
pub type RawEntry = (u64, Vec<u8>);

/// A named metadata value. A closed set, so a typo cannot create a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// The last vote this node cast or saw (Raft's `currentTerm` + `votedFor`).
    Vote,
    /// The last log id known to be committed, so a restart replays the log up to it.
    Committed,
    /// The last log id removed from the front of the log by compaction.
    LastPurged,
    /// The current snapshot: its metadata and data, as one value so they cannot disagree.
    Snapshot,
}

impl MetaKey {
    /// The key's persisted name. Never change one: it is what is on disk.
    pub fn name(self) -> &'static str {
        match self {
            MetaKey::Vote => "vote",
            MetaKey::Committed => "committed",
            MetaKey::LastPurged => "last_purged",
            MetaKey::Snapshot => "snapshot",
        }
    }
}

/// The leading `entries` whose sizes add up to at most `max_bytes`, and always the first.
pub fn within_bytes<I>(entries: I, max_bytes: usize) -> impl Iterator<Item = RawEntry>
where
    I: IntoIterator<Item = RawEntry>,
{
    let mut total = 0usize;
    entries
        .into_iter()
        .enumerate()
        .map_while(move |(i, entry)| {
            total = total.saturating_add(entry.1.len());
            (i == 0 || total <= max_bytes).then_some(entry)
        })
}

/// Storage for the Raft log and its metadata. Implementations must be cheap to share
/// (`Arc<dyn Store>`) and safe to call from several tasks; each method is one atomic step.
pub trait Store: Send + Sync + 'static {
    /// Writes the entries in one atomic batch, replacing any entry with the same index.
    /// Visible to reads on return; durable after the next [`Store::flush`].
    fn append(&self, entries: Vec<RawEntry>) -> Result<(), StoreError>;

    /// The entries whose index lies in the range, in index order. Missing indexes are skipped.
    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<RawEntry>, StoreError>;

    /// The entries from `start` (inclusive) to `end` (exclusive), in index order, as far as
    /// their encoded sizes add up to at most `max_bytes`, and always the first: one
    /// replication message's worth, so a run of large entries is sent in several messages
    /// that each arrive within openraft's heartbeat timeout. Implementations that read
    /// lazily should override it; this one reads the whole range first.
    fn read_prefix(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let entries = self.read_range(Bound::Included(start), Bound::Excluded(end))?;
        Ok(within_bytes(entries, max_bytes).collect())
    }

    /// The entry with the greatest index, if any.
    fn last_entry(&self) -> Result<Option<RawEntry>, StoreError>;

    /// Removes every entry with an index `>= index` (a conflicting suffix).
    fn truncate_from(&self, index: u64) -> Result<(), StoreError>;

    /// Removes every entry with an index `<= index` (compaction after a snapshot).
    fn purge_upto(&self, index: u64) -> Result<(), StoreError>;

    /// A metadata value, if it was ever written.
    fn get_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Writes a metadata value. Visible on return; durable after the next [`Store::flush`].
    fn put_meta(&self, key: MetaKey, value: Vec<u8>) -> Result<(), StoreError>;

    /// Makes every write that returned before this call durable (fsync). Async because it is
    /// the slow part: the caller awaits it before reporting anything durable to Raft.
    fn flush(&self) -> FlushFuture<'_>;

    /// [`Store::append`] then [`Store::flush`]: the entries, and every write before them,
    /// durable when the future completes. A backend whose every commit costs a transaction
    /// does both in one.
    fn append_durable(&self, entries: Vec<RawEntry>) -> FlushFuture<'_> {
        match self.append(entries) {
            Ok(()) => self.flush(),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// Bytes the store occupies on disk, to watch growth (sled's known weakness).
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// A storage failure. Raft treats any of them as fatal for the node (it stops rather than risk
/// acting on lost or corrupt state), so each says which store and which operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create store directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path} is locked by another process or another open handle; stop it or wait for it to close: {detail}")]
    Locked { path: PathBuf, detail: String },
    #[error("cannot open store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store {path}: {op} failed: {source}")]
    Backend {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("store {path} was written by {found}, and the store setting asks for {asked}: set store = \"{found}\", or restore a backup into a new data directory to change")]
    OtherBackend {
        path: PathBuf,
        found: &'static str,
        asked: &'static str,
    },
    #[error("store {path}: log key of {len} bytes is not an 8-byte index")]
    BadKey { path: PathBuf, len: usize },
    /// Stored bytes that do not decode; the codec error names what was being decoded.
    #[error("{op} failed: {source}")]
    Corrupt {
        op: &'static str,
        source: crate::codec::CodecError,
    },
    #[error("{op} failed: {source}")]
    Encode {
        op: &'static str,
        source: crate::codec::CodecError,
    },
    #[error("stored {what} is inconsistent while {op}: {detail}")]
    Inconsistent {
        what: &'static str,
        op: &'static str,
        detail: String,
    },
}
