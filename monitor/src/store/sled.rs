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

use super::{FlushFuture, MetaKey, RawEntry, Store, StoreError};

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
            detail: format!("could not lock {}", path.join("db").display()),
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
        let empty = match (start, end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => {
                s >= e
            }
            (Bound::Excluded(s), Bound::Excluded(e)) => s >= e || s + 1 == e,
            _ => false,
        };
        if empty {
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

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE: u64 = 8 * 1024 * 1024;

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<RawEntry> {
        range
            .map(|i| (i, format!("entry {i}").into_bytes()))
            .collect()
    }

    fn indexes(raw: &[RawEntry]) -> Vec<u64> {
        raw.iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn log_keys_sort_numerically_across_byte_boundaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), CACHE).expect("open");
        store
            .append(vec![
                (256, b"c".to_vec()),
                (1, b"a".to_vec()),
                (255, b"b".to_vec()),
            ])
            .expect("append");
        let all = store
            .read_range(Bound::Unbounded, Bound::Unbounded)
            .expect("read");
        assert_eq!(indexes(&all), vec![1, 255, 256]);
        assert_eq!(store.last_entry().expect("last").map(|e| e.0), Some(256));
    }

    #[test]
    fn a_replication_batch_stops_at_its_byte_budget_but_always_holds_one_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), CACHE).expect("open");
        store
            .append((1..=6).map(|i| (i, vec![0; 100])).collect())
            .expect("append");
        let read = |s, e, max| indexes(&store.read_prefix(s, e, max).expect("read"));
        assert_eq!(read(1, 7, 250), vec![1, 2]);
        assert_eq!(read(1, 7, 300), vec![1, 2, 3]);
        assert_eq!(read(4, 7, usize::MAX), vec![4, 5, 6]);
        assert_eq!(
            read(3, 7, 10),
            vec![3],
            "an entry over the budget goes alone"
        );
        assert_eq!(read(5, 5, 1000), Vec::<u64>::new());
        assert_eq!(read(6, 2, 1000), Vec::<u64>::new());
        // The trait's own reading (the memory store's) agrees.
        let whole = store
            .read_range(Bound::Included(1), Bound::Excluded(7))
            .expect("read");
        assert_eq!(
            indexes(&crate::store::within_bytes(whole, 250).collect::<Vec<_>>()),
            vec![1, 2]
        );
    }

    #[test]
    fn ranges_truncate_and_purge_follow_index_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), CACHE).expect("open");
        store.append(entries(0..=9)).expect("append");
        let read = |s, e| indexes(&store.read_range(s, e).expect("read"));
        assert_eq!(read(Bound::Included(3), Bound::Excluded(6)), vec![3, 4, 5]);
        assert_eq!(read(Bound::Excluded(7), Bound::Unbounded), vec![8, 9]);
        assert_eq!(
            read(Bound::Included(5), Bound::Excluded(5)),
            Vec::<u64>::new()
        );
        assert_eq!(
            read(Bound::Included(6), Bound::Included(2)),
            Vec::<u64>::new()
        );

        store.truncate_from(7).expect("truncate");
        store.purge_upto(2).expect("purge");
        assert_eq!(read(Bound::Unbounded, Bound::Unbounded), vec![3, 4, 5, 6]);
        assert_eq!(store.last_entry().expect("last").map(|e| e.0), Some(6));
        store.truncate_from(0).expect("truncate all");
        assert_eq!(store.last_entry().expect("last"), None);
    }

    #[tokio::test]
    async fn flushed_writes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path(), CACHE).expect("open");
            store.append(entries(1..=3)).expect("append");
            store
                .put_meta(MetaKey::Vote, b"vote".to_vec())
                .expect("put");
            store.flush().await.expect("flush");
            assert!(store.size_on_disk().expect("size") > 0);
        }
        let store = open_unlocked(dir.path());
        assert_eq!(
            store
                .read_range(Bound::Unbounded, Bound::Unbounded)
                .expect("read"),
            entries(1..=3)
        );
        assert_eq!(
            store.get_meta(MetaKey::Vote).expect("get"),
            Some(b"vote".to_vec())
        );
        assert_eq!(store.get_meta(MetaKey::Snapshot).expect("get"), None);
    }

    #[test]
    fn a_second_open_of_a_live_store_is_a_lock_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = SledStore::open(dir.path(), CACHE).expect("open");
        let err = SledStore::open(dir.path(), CACHE).expect_err("second open");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("is locked"), "{err}");
    }

    /// Open a store whose previous handles were just dropped. sled's flusher thread lets go
    /// of the directory a moment after the last handle is dropped, not always at the very
    /// instant: wait for the lock, with a deadline.
    fn open_unlocked(path: &std::path::Path) -> SledStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match SledStore::open(path, CACHE) {
                Ok(s) => return s,
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Err(e) => panic!("open after drop: {e}"),
            }
        }
    }

    #[test]
    fn dropping_the_last_handle_releases_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..20 {
            let store = open_unlocked(dir.path());
            store.append(entries(1..=3)).expect("append");
            drop(store);
        }
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let err = SledStore::open(&file.join("store"), CACHE).expect_err("under a file");
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
        assert!(err.to_string().contains("a-file"), "{err}");
    }
}
