//! [`Store`] on redb: copy-on-write B-trees in one file, fsync on a durable commit.
//!
//! Layout: one file, [`FILE`], in the store directory; the log in a table keyed by index, the
//! metadata in a second table keyed by [`MetaKey::name`].
//!
//! Durability: every write is its own transaction committed without an fsync
//! (`Durability::None`), visible to reads at once; [`Store::flush`] commits an empty
//! transaction with `Durability::Immediate`, which makes it and every earlier commit durable.
//! That fsync runs on tokio's blocking pool, not on the async runtime's threads.
//!
//! Space: redb frees the pages a commit replaced once no reader needs them and reuses them
//! for later commits, so a log purged behind each snapshot holds the file at about the size
//! of the live data. The file is locked for as long as the store is open; opening a locked
//! one is [`StoreError::Locked`], not a wait.

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{is_empty_range, FlushFuture, MetaKey, RawEntry, Store, StoreError};

/// The database file inside the store directory.
pub const FILE: &str = "gwmon.redb";

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// A redb database holding one monitor's Raft log and metadata.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store in directory `path`, with a page cache of at
    /// most `cache_capacity_bytes`.
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;
        let file = path.join(FILE);
        let cache = usize::try_from(cache_capacity_bytes).unwrap_or(usize::MAX);
        let db = Database::builder()
            .set_cache_size(cache)
            .create(&file)
            .map_err(|e| match e {
                ::redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                    path: path.to_path_buf(),
                    detail: format!("could not lock {}", file.display()),
                },
                other => StoreError::Open {
                    path: path.to_path_buf(),
                    source: Box::new(::redb::Error::from(other)),
                },
            })?;
        let store = RedbStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
        };
        // Both tables exist from the start, so a reader never meets a missing one.
        store.write("create the tables", Durability::Immediate, |tx| {
            tx.open_table(LOG)?;
            tx.open_table(META)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn backend(&self, op: &'static str, e: impl Into<::redb::Error>) -> StoreError {
        StoreError::Backend {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    /// One write transaction: `body`, then a commit at `durability`.
    fn write(
        &self,
        op: &'static str,
        durability: Durability,
        body: impl FnOnce(&::redb::WriteTransaction) -> Result<(), ::redb::Error>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.backend(op, e))?;
        tx.set_durability(durability)
            .map_err(|e| self.backend(op, ::redb::Error::from(e)))?;
        body(&tx).map_err(|e| self.backend(op, e))?;
        tx.commit().map_err(|e| self.backend(op, e))
    }

    /// One durable transaction writing `entries` (none: a flush of what earlier
    /// transactions wrote), run on the blocking pool: it ends in an `fdatasync`.
    fn durable(&self, op: &'static str, entries: Vec<RawEntry>) -> FlushFuture<'_> {
        Box::pin(async move {
            let db = self.db.clone();
            let commit = move || -> Result<(), ::redb::Error> {
                let mut tx = db.begin_write()?;
                tx.set_durability(Durability::Immediate)?;
                if !entries.is_empty() {
                    let mut log = tx.open_table(LOG)?;
                    for (index, bytes) in &entries {
                        log.insert(index, bytes.as_slice())?;
                    }
                }
                tx.commit()?;
                Ok(())
            };
            match tokio::task::spawn_blocking(commit).await {
                Ok(r) => r.map_err(|e| self.backend(op, e)),
                Err(e) => Err(StoreError::Backend {
                    path: self.path.clone(),
                    op,
                    source: Box::new(e),
                }),
            }
        })
    }

    fn log_table(
        &self,
        op: &'static str,
    ) -> Result<::redb::ReadOnlyTable<u64, &'static [u8]>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.backend(op, e))?;
        tx.open_table(LOG).map_err(|e| self.backend(op, e))
    }

    /// Removes every log entry in `range`, in one transaction.
    fn remove_range(
        &self,
        op: &'static str,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<(), StoreError> {
        if is_empty_range(range.0, range.1) {
            return Ok(());
        }
        self.write(op, Durability::None, |tx| {
            let mut log = tx.open_table(LOG)?;
            log.retain_in(range, |_, _| false)?;
            Ok(())
        })
    }
}

impl Store for RedbStore {
    fn append(&self, entries: Vec<RawEntry>) -> Result<(), StoreError> {
        // One transaction: a crash leaves all of the entries or none, never a hole.
        self.write("append log entries", Durability::None, |tx| {
            let mut log = tx.open_table(LOG)?;
            for (index, bytes) in &entries {
                log.insert(index, bytes.as_slice())?;
            }
            Ok(())
        })
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<RawEntry>, StoreError> {
        if is_empty_range(start, end) {
            return Ok(Vec::new());
        }
        let op = "read log entries";
        let log = self.log_table(op)?;
        let range = log.range((start, end)).map_err(|e| self.backend(op, e))?;
        range
            .map(|item| {
                let (k, v) = item.map_err(|e| self.backend(op, e))?;
                Ok((k.value(), v.value().to_vec()))
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
        let op = "read log entries";
        let log = self.log_table(op)?;
        let mut out = Vec::new();
        let mut total = 0usize;
        for item in log.range(start..end).map_err(|e| self.backend(op, e))? {
            let (k, v) = item.map_err(|e| self.backend(op, e))?;
            total = total.saturating_add(v.value().len());
            if !out.is_empty() && total > max_bytes {
                break;
            }
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn last_entry(&self) -> Result<Option<RawEntry>, StoreError> {
        let op = "read the last log entry";
        let log = self.log_table(op)?;
        let last = log.last().map_err(|e| self.backend(op, e))?;
        Ok(last.map(|(k, v)| (k.value(), v.value().to_vec())))
    }

    fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        self.remove_range(
            "truncate the log",
            (Bound::Included(index), Bound::Unbounded),
        )
    }

    fn purge_upto(&self, index: u64) -> Result<(), StoreError> {
        self.remove_range("purge the log", (Bound::Unbounded, Bound::Included(index)))
    }

    fn get_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StoreError> {
        let op = "read metadata";
        let tx = self.db.begin_read().map_err(|e| self.backend(op, e))?;
        let meta = tx.open_table(META).map_err(|e| self.backend(op, e))?;
        let value = meta.get(key.name()).map_err(|e| self.backend(op, e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn put_meta(&self, key: MetaKey, value: Vec<u8>) -> Result<(), StoreError> {
        self.write("write metadata", Durability::None, |tx| {
            tx.open_table(META)?.insert(key.name(), value.as_slice())?;
            Ok(())
        })
    }

    fn flush(&self) -> FlushFuture<'_> {
        self.durable("flush to disk", Vec::new())
    }

    fn append_durable(&self, entries: Vec<RawEntry>) -> FlushFuture<'_> {
        self.durable("append log entries", entries)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        std::fs::metadata(self.path.join(FILE))
            .map(|m| m.len())
            .map_err(|e| self.backend("measure size on disk", ::redb::StorageError::from(e)))
    }
}
