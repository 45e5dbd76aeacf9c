//! The log's latest entries, kept decoded in memory next to the store.
//!
//! Every entry is read back soon after it is appended: by the leader's replication to each
//! follower, then by the state machine on every monitor. From the store that is a B-tree
//! read and two decodes (the entry, the command inside) each time. The latest entries are
//! what those reads ask for, so they are answered from here, and only a follower far behind
//! (or a restart) reads the store.
//!
//! The window is always a contiguous run of the log ending at its last entry: an append that
//! does not follow on starts it afresh, a truncation cuts its tail, a purge its head. A read
//! is answered from here only when the window holds the whole range, bounded at both ends;
//! otherwise the store answers, as before.

use std::collections::VecDeque;
use std::ops::Bound;

use super::Entry;

/// Entries kept at most.
pub const ENTRIES: usize = 4096;
/// Encoded bytes kept at most (the newest entry is kept whatever its size).
pub const BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Recent {
    /// Each entry with its encoded size; indexes consecutive.
    window: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    /// Records entries just appended to the log, in order, each with its encoded size.
    pub fn appended(&mut self, entries: impl IntoIterator<Item = (Entry, usize)>) {
        for (entry, size) in entries {
            if self
                .last_index()
                .is_some_and(|last| last.checked_add(1) != Some(entry.log_id.index))
            {
                self.window.clear();
                self.bytes = 0;
            }
            self.bytes = self.bytes.saturating_add(size);
            self.window.push_back((entry, size));
        }
        while self.window.len() > ENTRIES || (self.bytes > BYTES && self.window.len() > 1) {
            self.pop_front();
        }
    }

    /// The log lost every entry from `index` on.
    pub fn truncated(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some((_, size)) = self.window.pop_back() {
                self.bytes = self.bytes.saturating_sub(size);
            }
        }
    }

    /// The log lost every entry up to and including `index`.
    pub fn purged(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// The entries of `start..end`, if the window holds all of them.
    pub fn range(&self, start: Bound<u64>, end: Bound<u64>) -> Option<Vec<Entry>> {
        let (first, last) = (self.first_index()?, self.last_index()?);
        let from = match start {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.checked_add(1)?,
            Bound::Unbounded => return None,
        };
        // An open end ("to the end of the log") is left to the store, which knows the end.
        let to = match end {
            Bound::Included(i) => i.checked_add(1)?,
            Bound::Excluded(i) => i,
            Bound::Unbounded => return None,
        };
        if from >= to {
            return Some(Vec::new());
        }
        if from < first || to - 1 > last {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        let take = usize::try_from(to - from).ok()?;
        Some(
            self.window
                .iter()
                .skip(skip)
                .take(take)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// The entries from `start` before `end` whose encoded sizes add up to at most
    /// `max_bytes` (always the first), as the store's prefix read gives them; `None` unless
    /// the window holds `start` and either `end - 1` or enough entries to reach the bound.
    pub fn prefix(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        if start >= end {
            return Some(Vec::new());
        }
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut next = start;
        for (entry, size) in self.window.iter().skip(skip) {
            if next >= end {
                return Some(out);
            }
            total = total.saturating_add(*size);
            if !out.is_empty() && total > max_bytes {
                return Some(out);
            }
            out.push(entry.clone());
            next += 1;
        }
        // The window ran out before the range or the bound did: the store has the rest.
        (next >= end).then_some(out)
    }

    fn first_index(&self) -> Option<u64> {
        self.window.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.window.back().map(|(e, _)| e.log_id.index)
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.window.pop_front() {
            self.bytes = self.bytes.saturating_sub(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;
    use openraft::EntryPayload;

    fn entry(index: u64) -> (Entry, usize) {
        (
            Entry {
                log_id: log_id(1, 1, index),
                payload: EntryPayload::Blank,
            },
            10,
        )
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn reads_are_answered_only_when_the_window_holds_the_whole_range() {
        let mut r = Recent::default();
        assert_eq!(
            indexes(r.range(Bound::Included(1), Bound::Excluded(2))),
            None
        );
        r.appended((5..=9).map(entry));
        assert_eq!(
            indexes(r.range(Bound::Included(6), Bound::Excluded(9))),
            Some(vec![6, 7, 8])
        );
        assert_eq!(
            indexes(r.range(Bound::Included(7), Bound::Included(9))),
            Some(vec![7, 8, 9])
        );
        assert_eq!(indexes(r.range(Bound::Included(7), Bound::Unbounded)), None);
        assert_eq!(
            indexes(r.range(Bound::Included(4), Bound::Excluded(6))),
            None
        );
        assert_eq!(
            indexes(r.range(Bound::Included(8), Bound::Included(10))),
            None
        );
        assert_eq!(indexes(r.range(Bound::Unbounded, Bound::Excluded(7))), None);
        assert_eq!(
            indexes(r.range(Bound::Included(9), Bound::Excluded(9))),
            Some(vec![])
        );
    }

    #[test]
    fn truncation_purge_and_a_gap_keep_the_window_a_true_suffix_of_the_log() {
        let mut r = Recent::default();
        r.appended((1..=6).map(entry));
        r.truncated(5);
        assert_eq!(
            indexes(r.range(Bound::Included(5), Bound::Excluded(6))),
            None
        );
        assert_eq!(
            indexes(r.range(Bound::Included(1), Bound::Excluded(5))),
            Some(vec![1, 2, 3, 4])
        );
        r.purged(2);
        assert_eq!(
            indexes(r.range(Bound::Included(2), Bound::Excluded(4))),
            None
        );
        // A new leader's entries after the truncation follow on.
        r.appended([entry(5)]);
        assert_eq!(
            indexes(r.range(Bound::Included(3), Bound::Excluded(6))),
            Some(vec![3, 4, 5])
        );
        // An append that does not follow on (a snapshot installed, the log restarted
        // further on) starts the window afresh.
        r.appended([entry(20)]);
        assert_eq!(
            indexes(r.range(Bound::Included(5), Bound::Excluded(6))),
            None
        );
        assert_eq!(
            indexes(r.range(Bound::Included(20), Bound::Excluded(21))),
            Some(vec![20])
        );
    }

    #[test]
    fn a_prefix_is_bounded_by_bytes_as_the_store_bounds_it() {
        let mut r = Recent::default();
        r.appended((1..=10).map(entry));
        // 10 bytes each: 35 bytes hold three, one entry always goes.
        assert_eq!(indexes(r.prefix(2, 11, 35)), Some(vec![2, 3, 4]));
        assert_eq!(indexes(r.prefix(2, 11, 1)), Some(vec![2]));
        assert_eq!(indexes(r.prefix(8, 11, 1_000)), Some(vec![8, 9, 10]));
        assert_eq!(indexes(r.prefix(8, 12, 1_000)), None, "11 is not here");
        assert_eq!(indexes(r.prefix(0, 3, 1_000)), None, "0 is not here");
        assert_eq!(indexes(r.prefix(3, 3, 1_000)), Some(vec![]));
    }

    #[test]
    fn the_window_is_bounded_in_entries_and_bytes() {
        let mut r = Recent::default();
        r.appended((1..=(ENTRIES as u64 + 10)).map(entry));
        assert_eq!(r.window.len(), ENTRIES);
        assert_eq!(r.first_index(), Some(11));
        let mut r = Recent::default();
        r.appended([(entry(1).0, BYTES), (entry(2).0, BYTES)]);
        assert_eq!(r.window.len(), 1, "the newest is kept whatever its size");
        assert_eq!(r.first_index(), Some(2));
    }
}
