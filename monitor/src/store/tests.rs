//! The [`Store`] contract, checked on each backend on disk.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::{open, MetaKey, RawEntry, Store, StoreError, StoreKind};

const CACHE: u64 = 8 * 1024 * 1024;
const KINDS: [StoreKind; 2] = [StoreKind::Sled, StoreKind::Redb];

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<RawEntry> {
    range
        .map(|i| (i, format!("entry {i}").into_bytes()))
        .collect()
}

fn indexes(raw: &[RawEntry]) -> Vec<u64> {
    raw.iter().map(|(i, _)| *i).collect()
}

fn fresh(kind: StoreKind) -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(Some(kind), dir.path(), CACHE).expect("open");
    (dir, store)
}

/// Open a store whose previous handles were just dropped. sled's flusher thread lets go of
/// the directory a moment after the last handle is dropped, not always at the very instant:
/// wait for the lock, with a deadline.
fn open_unlocked(kind: StoreKind, path: &Path) -> Arc<dyn Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open(Some(kind), path, CACHE) {
            Ok(s) => return s,
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            Err(e) => panic!("{kind:?}: open after drop: {e}"),
        }
    }
}

#[test]
fn log_keys_sort_numerically_across_byte_boundaries() {
    for kind in KINDS {
        let (_dir, store) = fresh(kind);
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
        assert_eq!(indexes(&all), vec![1, 255, 256], "{kind:?}");
        assert_eq!(
            store.last_entry().expect("last").map(|e| e.0),
            Some(256),
            "{kind:?}"
        );
    }
}

#[test]
fn a_replication_batch_stops_at_its_byte_budget_but_always_holds_one_entry() {
    for kind in KINDS {
        let (_dir, store) = fresh(kind);
        store
            .append((1..=6).map(|i| (i, vec![0; 100])).collect())
            .expect("append");
        let read = |s, e, max| indexes(&store.read_prefix(s, e, max).expect("read"));
        assert_eq!(read(1, 7, 250), vec![1, 2], "{kind:?}");
        assert_eq!(read(1, 7, 300), vec![1, 2, 3], "{kind:?}");
        assert_eq!(read(4, 7, usize::MAX), vec![4, 5, 6], "{kind:?}");
        assert_eq!(
            read(3, 7, 10),
            vec![3],
            "{kind:?}: an entry over the budget goes alone"
        );
        assert_eq!(read(5, 5, 1000), Vec::<u64>::new(), "{kind:?}");
        assert_eq!(read(6, 2, 1000), Vec::<u64>::new(), "{kind:?}");
        // The trait's own reading (the memory store's) agrees.
        let whole = store
            .read_range(Bound::Included(1), Bound::Excluded(7))
            .expect("read");
        assert_eq!(
            indexes(&super::within_bytes(whole, 250).collect::<Vec<_>>()),
            vec![1, 2],
            "{kind:?}"
        );
    }
}

#[test]
fn ranges_truncate_and_purge_follow_index_bounds() {
    for kind in KINDS {
        let (_dir, store) = fresh(kind);
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
        assert_eq!(
            read(Bound::Excluded(6), Bound::Excluded(7)),
            Vec::<u64>::new()
        );
        assert_eq!(
            read(Bound::Excluded(u64::MAX), Bound::Excluded(u64::MAX)),
            Vec::<u64>::new()
        );

        store.truncate_from(7).expect("truncate");
        store.purge_upto(2).expect("purge");
        assert_eq!(
            read(Bound::Unbounded, Bound::Unbounded),
            vec![3, 4, 5, 6],
            "{kind:?}"
        );
        assert_eq!(
            store.last_entry().expect("last").map(|e| e.0),
            Some(6),
            "{kind:?}"
        );
        store.append(entries(6..=8)).expect("append over the end");
        assert_eq!(
            read(Bound::Unbounded, Bound::Unbounded),
            vec![3, 4, 5, 6, 7, 8]
        );
        store.truncate_from(0).expect("truncate all");
        assert_eq!(store.last_entry().expect("last"), None, "{kind:?}");
    }
}

#[tokio::test]
async fn flushed_writes_survive_a_reopen() {
    for kind in KINDS {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(Some(kind), dir.path(), CACHE).expect("open");
            store.append(entries(1..=3)).expect("append");
            store
                .put_meta(MetaKey::Vote, b"vote".to_vec())
                .expect("put");
            store
                .put_meta(MetaKey::Snapshot, vec![7; 3 << 20])
                .expect("put a large value");
            store.flush().await.expect("flush");
            store
                .append_durable(entries(4..=5))
                .await
                .expect("append durably");
            assert!(store.size_on_disk().expect("size") > 3 << 20, "{kind:?}");
        }
        // Which backend wrote it is read from the directory.
        let store = open_unlocked(kind, dir.path());
        assert_eq!(StoreKind::found_in(dir.path()), Some(kind));
        assert_eq!(
            store
                .read_range(Bound::Unbounded, Bound::Unbounded)
                .expect("read"),
            entries(1..=5),
            "{kind:?}"
        );
        assert_eq!(
            store.get_meta(MetaKey::Vote).expect("get"),
            Some(b"vote".to_vec()),
            "{kind:?}"
        );
        assert_eq!(
            store
                .get_meta(MetaKey::Snapshot)
                .expect("get")
                .map(|v| v.len()),
            Some(3 << 20),
            "{kind:?}"
        );
        assert_eq!(store.get_meta(MetaKey::LastPurged).expect("get"), None);
    }
}

#[test]
fn a_second_open_of_a_live_store_is_a_lock_error() {
    for kind in KINDS {
        let (dir, _first) = fresh(kind);
        let err = match open(Some(kind), dir.path(), CACHE) {
            Ok(_) => panic!("{kind:?}: a second open of a live store succeeded"),
            Err(e) => e,
        };
        assert!(matches!(err, StoreError::Locked { .. }), "{kind:?}: {err}");
        assert!(err.to_string().contains("is locked"), "{err}");
    }
}

#[test]
fn dropping_the_last_handle_releases_the_lock() {
    for kind in KINDS {
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..20 {
            let store = open_unlocked(kind, dir.path());
            store.append(entries(1..=3)).expect("append");
            drop(store);
        }
    }
}

#[test]
fn a_directory_that_cannot_be_created_is_an_error() {
    for kind in KINDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let err = match open(Some(kind), &file.join("store"), CACHE) {
            Ok(_) => panic!("{kind:?}: opened a store under a file"),
            Err(e) => e,
        };
        assert!(
            matches!(err, StoreError::CreateDir { .. }),
            "{kind:?}: {err}"
        );
        assert!(err.to_string().contains("a-file"), "{err}");
    }
}

#[test]
fn a_directory_the_other_backend_wrote_is_refused_and_found_when_not_named() {
    for (wrote, asked) in [
        (StoreKind::Sled, StoreKind::Redb),
        (StoreKind::Redb, StoreKind::Sled),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(Some(wrote), dir.path(), CACHE).expect("open");
            store.append(entries(1..=2)).expect("append");
        }
        let err = match open(Some(asked), dir.path(), CACHE) {
            Ok(_) => panic!("{asked:?} opened a store {wrote:?} wrote"),
            Err(e) => e,
        };
        assert!(matches!(err, StoreError::OtherBackend { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("written by {}", wrote.name())) && text.contains(asked.name()),
            "{text}"
        );
        // Not named: the directory's own backend, with its entries.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match open(None, dir.path(), CACHE) {
                Ok(s) => break s,
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Err(e) => panic!("open {wrote:?} unnamed: {e}"),
            }
        };
        assert_eq!(store.last_entry().expect("last").map(|e| e.0), Some(2));
    }
    let empty = tempfile::tempdir().expect("tempdir");
    assert_eq!(StoreKind::found_in(empty.path()), None, "a new directory");
}
