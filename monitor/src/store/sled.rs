//! [`Store`] on sled 0.34.
//!
//! Layout: the log in its own tree keyed by the big-endian index, so sled's byte order is log
//! order and range scans, "last entry", truncation and purging are plain key-range operations;
//! metadata in a second tree keyed by [`MetaKey::name`].
//!
//! Durability: sled buffers writes and fsyncs on its own only every 500 ms. Raft must not tell
//! anyone a vote or an entry is saved before it is on disk, so callers await
//! [`Store::flush`] (sled's `flush_async`, which runs the fsync on sled's own thread pool and
//! so does not block the async runtime).
//!
//! sled takes an exclusive lock on its directory for as long as any clone of the `Db` is
//! alive, in this process or another. Opening a locked directory is an error
//! ([`StoreError::Locked`]), not a wait.

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::{is_empty_range, FlushFuture, MetaKey, RawEntry, Store, StoreError};

/// The file sled keeps its data in, inside the store directory.
pub const DB_FILE: &str = "db";

const LOG_TREE: &[u8] = b"raft_log";
const META_TREE: &[u8] = b"raft_meta";

/// The text sled puts in the I/O error when another handle holds the directory lock.
const LOCK_ERROR_TEXT: &str = "could not acquire lock";

/// A sled database holding one monitor's Raft log and metadata.
pub struct SledStore {
    db: ::sled::Db,
    log: ::sled::Tree,
    meta: ::sled::Tree,
    path: PathBuf,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path`.
    ///
    /// `cache_capacity_bytes` caps sled's page cache; sled's default is 1 GiB, far more than a
    /// monitor's map and log need, so the caller sets it.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<SledStore, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
        let db = ::sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .open()
            .map_err(|e| open_error(path, e))?;
        let log = db.open_tree(LOG_TREE).map_err(|e| open_error(path, e))?;
        let meta = db.open_tree(META_TREE).map_err(|e| open_error(path, e))?;
        Ok(SledStore {
            db,
            log,
            meta,
            path: path.to_path_buf(),
        })
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn backend(&self, op: &'static str, e: ::sled::Error) -> StoreError {
        StoreError::Backend {
            path: self.path.clone(),
            op,
            source: Box::new(e),
        }
    }

    fn index_of(&self, key: &[u8]) -> Result<u64, StoreError> {
        let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::BadKey {
            path: self.path.clone(),
            len: key.len(),
        })?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// Removes every log key in `range` in one atomic batch.
    fn remove_range(
        &self,
        op: &'static str,
        range: (Bound<[u8; 8]>, Bound<[u8; 8]>),
    ) -> Result<(), StoreError> {
        let mut batch = ::sled::Batch::default();
        for item in self.log.range(range) {
            let (k, _) = item.map_err(|e| self.backend(op, e))?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(|e| self.backend(op, e))
    }
}

fn open_error(path: &Path, e: ::sled::Error) -> StoreError {
    match e {
        // sled's message carries the io::Error's debug text: say it plainly instead.
        ::sled::Error::Io(io) if io.to_string().contains(LOCK_ERROR_TEXT) => StoreError::Locked {
            path: path.to_path_buf(),
            detail: format!("could not lock {}", path.join(DB_FILE).display()),
        },
        other => StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(other),
        },
    }
}

/// Big-endian, so that sled's lexicographic key order is numeric index order.
fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_bound(b: Bound<u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(log_key(i)),
        Bound::Excluded(i) => Bound::Excluded(log_key(i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Store for SledStore {
    fn append(&self, entries: Vec<RawEntry>) -> Result<(), StoreError> {
        // One batch: a crash leaves all of the entries or none, never a hole.
        let mut batch = ::sled::Batch::default();
        for (index, bytes) in entries {
            batch.insert(&log_key(index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| self.backend("append log entries", e))
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<RawEntry>, StoreError> {
        // sled panics on an inverted range; an empty answer is what a reader expects.
        if is_empty_range(start, end) {
            return Ok(Vec::new());
        }
        self.log
            .range((key_bound(start), key_bound(end)))
            .map(|item| {
                let (k, v) = item.map_err(|e| self.backend("read log entries", e))?;
                Ok((self.index_of(&k)?, v.to_vec()))
            })
            .collect()
    }

    fn read_prefix(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<RawEntry>, StoreError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        for item in self.log.range(log_key(start)..log_key(end)) {
            let (k, v) = item.map_err(|e| self.backend("read log entries", e))?;
            total = total.saturating_add(v.len());
            if !out.is_empty() && total > max_bytes {
                break;
            }
            out.push((self.index_of(&k)?, v.to_vec()));
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<RawEntry>, StoreError> {
        match self
            .log
            .last()
            .map_err(|e| self.backend("read the last log entry", e))?
        {
            Some((k, v)) => Ok(Some((self.index_of(&k)?, v.to_vec()))),
            None => Ok(None),
        }
    }

    fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        self.remove_range(
            "truncate the log",
            (Bound::Included(log_key(index)), Bound::Unbounded),
        )
    }

    fn purge_upto(&self, index: u64) -> Result<(), StoreError> {
        self.remove_range(
            "purge the log",
            (Bound::Unbounded, Bound::Included(log_key(index))),
        )
    }

    fn get_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .meta
            .get(key.name())
            .map_err(|e| self.backend("read metadata", e))?
            .map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: MetaKey, value: Vec<u8>) -> Result<(), StoreError> {
        self.meta
            .insert(key.name(), value)
            .map(drop)
            .map_err(|e| self.backend("write metadata", e))
    }

    fn flush(&self) -> FlushFuture<'_> {
        // The trees share one page cache, so flushing the Db makes both durable.
        Box::pin(async move {
            self.db
                .flush_async()
                .await
                .map(drop)
                .map_err(|e| self.backend("flush to disk", e))
        })
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db
            .size_on_disk()
            .map_err(|e| self.backend("measure size on disk", e))
    }
}
