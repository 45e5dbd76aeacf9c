//! [`Store`] in memory, with a crash that loses what was not flushed.
//!
//! For simulation and tests: every write is visible at once and journaled; [`Store::flush`]
//! makes the journal durable; [`MemStore::crash`] throws away the journal (or keeps a prefix of
//! it, as a disk that wrote some of its cache before power went). A monitor restarted on the
//! same `MemStore` then sees exactly what a restarted process would have found on disk.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{FlushFuture, MetaKey, RawEntry, Store, StoreError};

#[derive(Debug, Clone, Default)]
struct Contents {
    log: BTreeMap<u64, Vec<u8>>,
    meta: BTreeMap<&'static str, Vec<u8>>,
}

/// One write, journaled until the next flush.
#[derive(Debug, Clone)]
enum Write {
    Append(Vec<RawEntry>),
    TruncateFrom(u64),
    PurgeUpto(u64),
    PutMeta(MetaKey, Vec<u8>),
}

impl Contents {
    fn apply(&mut self, w: &Write) {
        match w {
            Write::Append(entries) => {
                for (i, b) in entries {
                    self.log.insert(*i, b.clone());
                }
            }
            Write::TruncateFrom(i) => {
                self.log.split_off(i);
            }
            Write::PurgeUpto(i) => {
                self.log = match i.checked_add(1) {
                    Some(next) => self.log.split_off(&next),
                    None => BTreeMap::new(),
                };
            }
            Write::PutMeta(k, v) => {
                self.meta.insert(k.name(), v.clone());
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    live: Contents,
    durable: Contents,
    /// Writes since the last flush, each with its sequence number.
    journal: Vec<(u64, Write)>,
    next_seq: u64,
    /// How long a flush takes (a slow disk); zero by default.
    flush_delay: std::time::Duration,
}

impl Inner {
    /// Make durable every journaled write numbered up to `upto`.
    fn persist(&mut self, upto: u64) {
        let keep = self.journal.split_off(
            self.journal
                .iter()
                .position(|(seq, _)| *seq > upto)
                .unwrap_or(self.journal.len()),
        );
        let done = std::mem::replace(&mut self.journal, keep);
        for (_, w) in &done {
            self.durable.apply(w);
        }
    }
}

/// An in-memory store. Clones share the same contents (like a data directory that outlives
/// the process using it).
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, w: Write) {
        let mut inner = self.lock();
        inner.live.apply(&w);
        inner.next_seq += 1;
        let seq = inner.next_seq;
        inner.journal.push((seq, w));
    }

    /// From now on every flush takes `delay` (on tokio's clock) before it returns, and
    /// makes nothing durable until then: a disk whose fsync stalls.
    pub fn set_flush_delay(&self, delay: std::time::Duration) {
        self.lock().flush_delay = delay;
    }

    /// Writes not yet flushed.
    pub fn unflushed(&self) -> usize {
        self.lock().journal.len()
    }

    /// The process died: of the writes since the last flush, only the first `keep` reached the
    /// disk. The next user of this store sees the durable state plus those.
    pub fn crash(&self, keep: usize) {
        let mut inner = self.lock();
        let journal = std::mem::take(&mut inner.journal);
        for (_, w) in journal.iter().take(keep) {
            inner.durable.apply(w);
        }
        inner.live = inner.durable.clone();
    }
}

impl Store for MemStore {
    fn append(&self, entries: Vec<RawEntry>) -> Result<(), StoreError> {
        self.write(Write::Append(entries));
        Ok(())
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<RawEntry>, StoreError> {
        let empty =
            match (start, end) {
                (
                    Bound::Included(s) | Bound::Excluded(s),
                    Bound::Included(e) | Bound::Excluded(e),
                ) if s > e => true,
                (Bound::Excluded(s), Bound::Excluded(e)) => s == e,
                (Bound::Included(s), Bound::Excluded(e))
                | (Bound::Excluded(s), Bound::Included(e)) => s == e,
                _ => false,
            };
        if empty {
            return Ok(Vec::new());
        }
        Ok(self
            .lock()
            .live
            .log
            .range((start, end))
            .map(|(i, b)| (*i, b.clone()))
            .collect())
    }

    fn last_entry(&self) -> Result<Option<RawEntry>, StoreError> {
        Ok(self
            .lock()
            .live
            .log
            .last_key_value()
            .map(|(i, b)| (*i, b.clone())))
    }

    fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        self.write(Write::TruncateFrom(index));
        Ok(())
    }

    fn purge_upto(&self, index: u64) -> Result<(), StoreError> {
        self.write(Write::PurgeUpto(index));
        Ok(())
    }

    fn get_meta(&self, key: MetaKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().live.meta.get(key.name()).cloned())
    }

    fn put_meta(&self, key: MetaKey, value: Vec<u8>) -> Result<(), StoreError> {
        self.write(Write::PutMeta(key, value));
        Ok(())
    }

    fn flush(&self) -> FlushFuture<'_> {
        let mut inner = self.lock();
        let upto = inner.next_seq;
        let delay = inner.flush_delay;
        if delay.is_zero() {
            inner.persist(upto);
            return Box::pin(std::future::ready(Ok(())));
        }
        drop(inner);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            self.lock().persist(upto);
            Ok(())
        })
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let inner = self.lock();
        let log: usize = inner.durable.log.values().map(Vec::len).sum();
        let meta: usize = inner.durable.meta.values().map(Vec::len).sum();
        Ok(u64::try_from(log + meta).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &MemStore) -> Vec<u64> {
        s.read_range(Bound::Unbounded, Bound::Unbounded)
            .expect("read")
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_crash_loses_what_was_not_flushed() {
        let s = MemStore::new();
        s.append(vec![(1, vec![1]), (2, vec![2])]).expect("append");
        s.put_meta(MetaKey::Vote, vec![7]).expect("meta");
        assert_eq!(all(&s), vec![1, 2]);
        let flushed = futures_ready(s.flush());
        assert!(flushed.is_ok());
        s.append(vec![(3, vec![3])]).expect("append");
        s.truncate_from(2).expect("truncate");
        assert_eq!(all(&s), vec![1]);
        assert_eq!(s.unflushed(), 2);
        s.crash(0);
        assert_eq!(all(&s), vec![1, 2]);
        assert_eq!(s.get_meta(MetaKey::Vote).expect("meta"), Some(vec![7]));
    }

    #[test]
    fn a_crash_may_keep_a_prefix_of_the_unflushed_writes() {
        let s = MemStore::new();
        s.append(vec![(1, vec![1])]).expect("append");
        s.append(vec![(2, vec![2])]).expect("append");
        s.purge_upto(1).expect("purge");
        s.crash(2);
        assert_eq!(all(&s), vec![1, 2]);
        assert_eq!(
            s.read_range(Bound::Excluded(2), Bound::Included(2))
                .expect("read"),
            vec![]
        );
    }

    #[test]
    fn a_replication_batch_is_read_within_its_byte_budget() {
        let s = MemStore::new();
        s.append((1..=4).map(|i| (i, vec![0; 10])).collect())
            .expect("append");
        let read = |start, end, max| -> Vec<u64> {
            s.read_prefix(start, end, max)
                .expect("read")
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(read(2, 5, 25), vec![2, 3]);
        assert_eq!(read(2, 5, 5), vec![2]);
        assert_eq!(read(4, 4, 100), Vec::<u64>::new());
    }

    fn futures_ready(f: FlushFuture<'_>) -> Result<(), StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(f)
    }
}
