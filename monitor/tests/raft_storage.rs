//! The Raft storage adapters on the sled store: openraft's own conformance suite, snapshots of
//! a real map, restarts, and corrupt bytes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{gw, key, subsystem};
use gwmon_monitor::codec;
use gwmon_monitor::map::{Command, GatewayMap, Timestamp};
use gwmon_monitor::raft::log_store::{encode_entry, LogStore};
use gwmon_monitor::raft::state_machine::{open_storage, MapReader, StateMachine};
use gwmon_monitor::raft::{Entry, Request, Response, StorageError, TypeConfig};
use gwmon_monitor::store::{self, MetaKey, Store, StoreError, StoreKind};
use gwmon_proto::domain::{Epoch, GatewayReport, ReportedAvailability};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, Vote};
use tempfile::TempDir;

const CACHE: u64 = 8 * 1024 * 1024;
/// The default backend; both are checked against openraft's suite and the `Store` contract.
const KIND: StoreKind = StoreKind::Redb;

async fn open_in(path: &Path) -> (Arc<dyn Store>, LogStore, StateMachine, MapReader) {
    open_kind(KIND, path).await
}

async fn open_kind(
    kind: StoreKind,
    path: &Path,
) -> (Arc<dyn Store>, LogStore, StateMachine, MapReader) {
    let store = store::open(Some(kind), path, CACHE).expect("open the store");
    let (log, sm, reader) = open_storage(store.clone()).await.expect("open storage");
    (store, log, sm, reader)
}

/// Opens a store whose previous handles were just dropped. sled's directory lock goes with
/// the last `Db` clone; wait for that, with a deadline, rather than sleeping a fixed time.
async fn open_when_unlocked(path: &Path) -> Arc<dyn Store> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store::open(Some(KIND), path, CACHE) {
            Ok(store) => return store,
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

async fn reopen(path: &Path) -> (Arc<dyn Store>, LogStore, StateMachine, MapReader) {
    let store = open_when_unlocked(path).await;
    let (log, sm, reader) = open_storage(store.clone()).await.expect("open storage");
    (store, log, sm, reader)
}

struct Builder(StoreKind);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, log, sm, _reader) = open_kind(self.0, &dir.path().join("store")).await;
        Ok((dir, log, sm))
    }
}

/// openraft's storage conformance suite. A plain `#[test]`: the suite builds a runtime per
/// case, and each case gets a fresh directory from the builder.
#[test]
fn openraft_storage_suite_passes_on_redb() {
    let started = Instant::now();
    Suite::test_all(Builder(StoreKind::Redb)).expect("openraft storage suite");
    eprintln!("openraft storage suite on redb: {:?}", started.elapsed());
}

#[test]
fn openraft_storage_suite_passes_on_sled() {
    let started = Instant::now();
    Suite::test_all(Builder(StoreKind::Sled)).expect("openraft storage suite");
    eprintln!("openraft storage suite on sled: {:?}", started.elapsed());
}

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload,
    }
}

fn cmd_entry(index: u64, now: u64, cmd: Command) -> Entry {
    entry(
        index,
        EntryPayload::Normal(Request::Map {
            now: Timestamp(now),
            cmd,
        }),
    )
}

fn membership(ids: &[u64]) -> Membership<u64, gwmon_monitor::raft::MonitorNode> {
    let voters: BTreeSet<u64> = ids.iter().copied().collect();
    let nodes: BTreeMap<u64, gwmon_monitor::raft::MonitorNode> = ids
        .iter()
        .map(|id| {
            (
                *id,
                gwmon_monitor::raft::MonitorNode::new(
                    format!("127.0.0.1:{}", 7000 + id),
                    format!("127.0.0.1:{}", 7002 + id),
                ),
            )
        })
        .collect();
    Membership::new(vec![voters], nodes)
}

/// A beacon from `id` as a gateway would send it after reading its slice of `map`.
fn report(
    map: &GatewayMap,
    id: &str,
    seq: u64,
    availability: ReportedAvailability,
    groups: &[u32],
) -> Command {
    let key = key("rbd", "grp1");
    let gateway = gw(id);
    let slice = map.slice(&key, &gateway);
    let subsystems = if groups.is_empty() {
        vec![]
    } else {
        vec![subsystem(&gateway, groups, 2)]
    };
    Command::GatewayReport {
        key,
        gateway,
        report: GatewayReport {
            seq,
            availability,
            subsystems,
            applied_epoch: slice.as_ref().map_or(Epoch::ZERO, |s| s.epoch),
            fence_epoch: slice
                .as_ref()
                .map_or(Epoch::ZERO, common::served_fence_epoch),
        },
    }
}

/// One command of a history, built from the map as it stands (beacons echo the map epoch).
type Step = dyn Fn(&GatewayMap) -> Command;

/// Applies a small but real history through the state machine: two gateways created and
/// booted, one timed out (failover with a fence), and one command the engine refuses. Checks
/// every response against the engine applied directly. Returns the last index applied.
async fn apply_history(sm: &mut StateMachine, reader: &MapReader, first: u64) -> u64 {
    let mut mirror = GatewayMap::default();
    let mut index = first;
    let mut now = 1_000_000;
    let mut changes = reader.changes();

    let replies = sm
        .apply([
            entry(index, EntryPayload::Blank),
            entry(index + 1, EntryPayload::Membership(membership(&[1, 2, 3]))),
        ])
        .await
        .expect("apply blank and membership");
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert_eq!(r.map_epoch, Epoch::ZERO);
        let applied = r.outcome.as_ref().expect("blank/membership is a no-op");
        assert!(!applied.changed);
    }
    index += 1;
    let (applied, mem) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 1, index)));
    assert_eq!(mem.log_id(), &Some(log_id(1, 1, index)));

    let steps: Vec<Box<Step>> = vec![
        Box::new(|_| Command::CreateGateway {
            key: key("rbd", "grp1"),
            gateway: gw("a"),
        }),
        Box::new(|_| Command::CreateGateway {
            key: key("rbd", "grp1"),
            gateway: gw("b"),
        }),
        Box::new(|m| report(m, "a", 0, ReportedAvailability::Starting, &[])),
        Box::new(|m| report(m, "a", 1, ReportedAvailability::Available, &[1, 2])),
        Box::new(|m| report(m, "b", 0, ReportedAvailability::Starting, &[])),
        Box::new(|m| report(m, "b", 1, ReportedAvailability::Available, &[1, 2])),
        Box::new(|m| report(m, "a", 2, ReportedAvailability::Available, &[1, 2])),
        Box::new(|_| Command::GatewayTimedOut {
            key: key("rbd", "grp1"),
            gateway: gw("a"),
        }),
        Box::new(|_| Command::SetAdminState {
            key: key("nope", "nope"),
            gateway: gw("a"),
            enabled: false,
        }),
        Box::new(|_| Command::TimerTick),
    ];
    let mut refused = 0;
    for step in steps {
        index += 1;
        now += 1_500;
        let cmd = reader.read(|m| step(m));
        let expected = mirror.apply(&cmd, Timestamp(now));
        let replies: Vec<Response> = sm
            .apply([cmd_entry(index, now, cmd)])
            .await
            .expect("apply command");
        assert_eq!(replies.len(), 1);
        let reply = &replies[0];
        assert_eq!(reply.map_epoch, mirror.epoch());
        match (&reply.outcome, expected) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got.changed, want.changed);
                assert_eq!(got.events, want.events);
            }
            (Err(got), Err(want)) => {
                assert_eq!(got, &want);
                refused += 1;
            }
            (got, want) => panic!("state machine gave {got:?}, the engine {want:?}"),
        }
        assert!(changes.has_changed().expect("sender alive"));
        assert_eq!(*changes.borrow_and_update(), index);
        assert_eq!(reader.last_applied_index(), index);
    }
    assert_eq!(
        refused, 1,
        "the unknown-group disable is refused, not a storage error"
    );
    assert!(mirror.epoch() > Epoch::ZERO);
    assert_eq!(
        reader.read(|m| codec::encode(m).expect("encode")),
        codec::encode(&mirror).expect("encode"),
        "apply only calls the engine"
    );
    index
}

#[tokio::test]
async fn a_snapshot_installed_on_a_fresh_state_machine_gives_the_same_map() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, _log, mut leader, leader_reader) = open_in(&dir.path().join("leader")).await;
    let last = apply_history(&mut leader, &leader_reader, 1).await;

    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, last)));
    assert_eq!(
        built.meta.last_membership.membership(),
        &membership(&[1, 2, 3])
    );

    let (_store_f, _log_f, mut follower, follower_reader) =
        open_in(&dir.path().join("follower")).await;
    let mut follower_changes = follower_reader.changes();
    let mut receiving = follower
        .begin_receiving_snapshot()
        .await
        .expect("begin receiving");
    *receiving = Cursor::new(built.snapshot.get_ref().clone());
    follower
        .install_snapshot(&built.meta, receiving)
        .await
        .expect("install snapshot");

    let leader_bytes = leader_reader.read(|m| codec::encode(m).expect("encode"));
    let follower_bytes = follower_reader.read(|m| codec::encode(m).expect("encode"));
    assert_eq!(leader_bytes, follower_bytes);
    assert_eq!(
        follower.applied_state().await.expect("applied"),
        leader.applied_state().await.expect("applied")
    );
    assert!(follower_changes.has_changed().expect("sender alive"));
    assert_eq!(*follower_changes.borrow_and_update(), last);
    let current = follower
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, built.meta);

    // Applying on after the install continues from the installed map.
    let replies = follower
        .apply([cmd_entry(last + 1, 9_000_000, Command::TimerTick)])
        .await
        .expect("apply after install");
    assert!(replies[0].outcome.is_ok());
    assert_eq!(follower_reader.last_applied_index(), last + 1);
}

#[tokio::test]
async fn a_reopened_store_returns_the_same_vote_log_committed_and_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let vote = Vote::new_committed(3, 2);
    let (map_bytes, snapshot_meta, entries) = {
        let (store, mut log, mut sm, reader) = open_in(&path).await;
        log.save_vote(&vote).await.expect("save vote");
        let last = apply_history(&mut sm, &reader, 1).await;
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot");
        // The log holds the snapshot's history and three entries after it.
        let mut entries: Vec<Entry> = (1..=last)
            .map(|i| cmd_entry(i, 1, Command::TimerTick))
            .collect();
        for i in last + 1..=last + 3 {
            entries.push(cmd_entry(
                i,
                5_000_000 + i,
                Command::CreateGateway {
                    key: key("rbd", "grp2"),
                    gateway: gw(&format!("g{i}")),
                },
            ));
        }
        log.blocking_append(entries.clone()).await.expect("append");
        log.save_committed(Some(log_id(1, 1, last + 2)))
            .await
            .expect("save committed");
        log.purge(log_id(1, 1, last - 2)).await.expect("purge");
        store.flush().await.expect("flush");
        assert!(store.size_on_disk().expect("size") > 0);
        let map_bytes = reader.read(|m| codec::encode(m).expect("encode"));
        let kept: Vec<Entry> = entries.split_off((last - 2) as usize);
        (map_bytes, snapshot.meta, kept)
    };

    let (_store, mut log, mut sm, reader) = reopen(&path).await;
    assert_eq!(log.read_vote().await.expect("read vote"), Some(vote));
    let state = log.get_log_state().await.expect("log state");
    let last_snapshot_index = snapshot_meta.last_log_id.expect("snapshot id").index;
    assert_eq!(
        state.last_purged_log_id,
        Some(log_id(1, 1, last_snapshot_index - 2))
    );
    assert_eq!(
        state.last_log_id,
        Some(log_id(1, 1, last_snapshot_index + 3))
    );
    let read = log
        .try_get_log_entries(last_snapshot_index - 1..)
        .await
        .expect("read log");
    assert_eq!(read, entries);
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 1, last_snapshot_index + 2))
    );

    // The state machine comes back from the snapshot; openraft replays the log after it.
    let (applied, membership_back) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, snapshot_meta.last_log_id);
    assert_eq!(membership_back, snapshot_meta.last_membership);
    assert_eq!(reader.last_applied_index(), last_snapshot_index);
    assert_eq!(
        reader.read(|m| codec::encode(m).expect("encode")),
        map_bytes
    );
    let current = sm
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, snapshot_meta);
}

#[tokio::test]
async fn corrupt_log_bytes_are_a_storage_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut log, _sm, _reader) = open_in(&dir.path().join("store")).await;
    let good = cmd_entry(1, 10, Command::TimerTick);
    let good_bytes = encode_entry(&good).expect("encode");
    let mut bad_version = good_bytes.clone();
    bad_version[0] = 99;
    let cut = good_bytes[..good_bytes.len() / 2].to_vec();
    let misplaced = encode_entry(&cmd_entry(9, 10, Command::TimerTick)).expect("encode");
    store
        .append(vec![
            (1, good_bytes),
            (2, b"\x01garbage".to_vec()),
            (3, bad_version),
            (4, cut),
            (5, Vec::new()),
            (6, misplaced),
        ])
        .expect("raw append");

    let read = log
        .try_get_log_entries(1..2)
        .await
        .expect("entry 1 is fine");
    assert_eq!(read, vec![good]);
    for index in 2..=6 {
        let err = log
            .try_get_log_entries(index..index + 1)
            .await
            .expect_err("corrupt entry");
        assert!(matches!(err, StorageError::IO { .. }), "{err}");
        eprintln!("entry {index}: {err}");
    }
    // The last entry is corrupt too (it claims index 9), so the log state is an error.
    assert!(log.get_log_state().await.is_err());

    store
        .put_meta(MetaKey::Vote, b"\x01\xff".to_vec())
        .expect("raw put");
    assert!(log.read_vote().await.is_err());
}

#[tokio::test]
async fn a_corrupt_or_inconsistent_snapshot_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let snapshot = {
        let (store, _log, mut sm, reader) = open_in(&path).await;
        apply_history(&mut sm, &reader, 1).await;
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        // Metadata that disagrees with the data is refused on install.
        let mut wrong = snapshot.meta.clone();
        wrong.last_log_id = Some(log_id(1, 1, 1));
        let data = Box::new(Cursor::new(snapshot.snapshot.get_ref().clone()));
        assert!(sm.install_snapshot(&wrong, data).await.is_err());
        // So is garbage.
        let garbage = Box::new(Cursor::new(b"\x01nonsense".to_vec()));
        assert!(sm.install_snapshot(&snapshot.meta, garbage).await.is_err());

        store
            .put_meta(MetaKey::Snapshot, b"\x01\x00\x01".to_vec())
            .expect("raw put");
        store.flush().await.expect("flush");
        snapshot
    };
    let store = open_when_unlocked(&path).await;
    let err = open_storage(store).await.expect_err("corrupt snapshot");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("loading the snapshot"), "{err}");
    drop(snapshot);
}

/// A command the leader decided in one term is applied only if it reached the log in that
/// term: a leader that lost and regained leadership between deciding a timeout and
/// proposing it (and restarted its timers meanwhile) must not act on what it saw before.
/// The refusal is the same on every replica, and the entry survives the log round trip.
#[tokio::test]
async fn a_leader_command_appended_in_another_term_is_refused_the_same_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, _log, mut sm, reader) = open_in(&dir.path().join("store")).await;
    let k = key("rbd", "g");
    let create = cmd_entry(
        1,
        1_000,
        Command::CreateGateway {
            key: k.clone(),
            gateway: gw("gw1"),
        },
    );
    let leader_entry = |index: u64, appended: u64, decided: u64| Entry {
        log_id: log_id(appended, 1, index),
        payload: EntryPayload::Normal(Request::Leader {
            now: Timestamp(2_000),
            term: decided,
            cmd: Command::GatewayTimedOut {
                key: k.clone(),
                gateway: gw("gw1"),
            },
        }),
    };
    // Decided in term 1, appended in term 2: refused, the map unchanged.
    let stale = leader_entry(2, 2, 1);
    let fresh = leader_entry(3, 2, 2);
    for e in [&create, &stale, &fresh] {
        let decoded =
            gwmon_monitor::raft::log_store::decode_entry(&encode_entry(e).expect("encode"))
                .expect("decode");
        assert_eq!(&decoded, e, "the log keeps a leader command as it was");
    }
    sm.apply([create]).await.expect("apply");
    let before = reader.read(GatewayMap::clone);
    let responses = sm.apply([stale]).await.expect("apply");
    assert!(
        matches!(
            &responses[0].outcome,
            Err(gwmon_monitor::map::MapError::StaleLeaderCommand {
                decided: 1,
                appended: 2
            })
        ),
        "{:?}",
        responses[0].outcome
    );
    assert_eq!(
        reader.read(GatewayMap::clone),
        before,
        "a refused command changes nothing"
    );
    // Decided and appended in term 2: applied.
    let responses = sm.apply([fresh]).await.expect("apply");
    assert!(responses[0].outcome.is_ok(), "{:?}", responses[0].outcome);
    let availability = reader.read(|m| {
        m.group(&k)
            .and_then(|g| g.gateways.get(&gw("gw1")))
            .map(|g| g.availability)
    });
    assert_eq!(
        availability,
        Some(gwmon_monitor::map::Availability::Unavailable)
    );
}

/// A batch entry (group commit) is kept in the log as it was written, and applying it gives
/// every command the outcome it would have had as an entry of its own at that index: a
/// refusal in the middle refuses that command alone, a leader command of another term is
/// refused by the term the batch was appended in, and a batch inside a batch is refused
/// without touching the map.
#[tokio::test]
async fn a_batch_applies_each_command_as_its_own_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, _log, mut sm, reader) = open_in(&dir.path().join("store")).await;
    let k = key("rbd", "g");
    let create = |id: &str| Request::Map {
        now: Timestamp(1_000),
        cmd: Command::CreateGateway {
            key: k.clone(),
            gateway: gw(id),
        },
    };
    let timeout = |term: u64| Request::Leader {
        now: Timestamp(2_000),
        term,
        cmd: Command::GatewayTimedOut {
            key: k.clone(),
            gateway: gw("gw1"),
        },
    };
    let batch = Entry {
        log_id: log_id(2, 1, 1),
        payload: EntryPayload::Normal(Request::Batch(vec![
            create("gw1"),
            // Refused: no such gateway to time out in another group.
            Request::Map {
                now: Timestamp(1_000),
                cmd: Command::GatewayTimedOut {
                    key: key("rbd", "other"),
                    gateway: gw("gw1"),
                },
            },
            create("gw2"),
            timeout(1),
            Request::Batch(vec![create("gw3")]),
            timeout(2),
        ])),
    };
    let decoded =
        gwmon_monitor::raft::log_store::decode_entry(&encode_entry(&batch).expect("encode"))
            .expect("decode");
    assert_eq!(decoded, batch, "the log keeps a batch as it was written");

    let responses = sm.apply([batch]).await.expect("apply");
    assert_eq!(responses.len(), 1, "one entry, one response");
    let each = &responses[0].batch;
    assert_eq!(each.len(), 6, "one response per command: {each:?}");
    assert!(each[0].outcome.as_ref().is_ok_and(|a| a.changed));
    assert!(
        matches!(
            each[1].outcome,
            Err(gwmon_monitor::map::MapError::UnknownGroup(_))
        ),
        "{:?}",
        each[1].outcome
    );
    assert!(each[2].outcome.as_ref().is_ok_and(|a| a.changed));
    assert!(
        matches!(
            each[3].outcome,
            Err(gwmon_monitor::map::MapError::StaleLeaderCommand {
                decided: 1,
                appended: 2
            })
        ),
        "{:?}",
        each[3].outcome
    );
    assert!(
        matches!(
            each[4].outcome,
            Err(gwmon_monitor::map::MapError::NestedBatch)
        ),
        "{:?}",
        each[4].outcome
    );
    assert!(each[5].outcome.as_ref().is_ok_and(|a| a.changed));
    assert!(
        each[0].map_epoch < each[2].map_epoch && each[2].map_epoch < each[5].map_epoch,
        "each command's epoch is the map's after it: {:?}",
        each.iter().map(|r| r.map_epoch).collect::<Vec<_>>()
    );
    assert_eq!(responses[0].map_epoch, each[5].map_epoch);
    let (gateways, availability) = reader.read(|m| {
        let g = m.group(&k).expect("group");
        (
            g.gateways.keys().cloned().collect::<Vec<_>>(),
            g.gateways.get(&gw("gw1")).map(|g| g.availability),
        )
    });
    assert_eq!(
        gateways,
        vec![gw("gw1"), gw("gw2")],
        "gw3 of the nested batch is not created"
    );
    assert_eq!(
        availability,
        Some(gwmon_monitor::map::Availability::Unavailable)
    );
}

/// Replication reads a byte-bounded prefix: openraft asks for up to `max_payload_entries`
/// entries whatever their size and gives the message one heartbeat interval, so a run of
/// large reports (a gateway with thousands of namespaces) must travel in several messages.
/// Without the bound, 300 such entries were one message of tens of MiB that never arrived
/// in time, and the cluster elected leaders over and over.
#[tokio::test]
async fn replication_reads_at_most_a_batch_of_bytes_and_always_one_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut log, _sm, _reader) = open_in(&dir.path().join("store")).await;
    // Reports of 2,048 namespaces: about 60 KiB each encoded.
    let big = |i: u64| {
        let gateway = gw(&format!("gw{i}"));
        cmd_entry(
            i,
            1,
            Command::GatewayReport {
                key: key("rbd", "grp1"),
                gateway: gateway.clone(),
                report: GatewayReport {
                    seq: 1,
                    availability: ReportedAvailability::Available,
                    subsystems: vec![subsystem(&gateway, &[1, 2, 3, 4], 512)],
                    applied_epoch: Epoch::ZERO,
                    fence_epoch: Epoch::ZERO,
                },
            },
        )
    };
    let entries: Vec<Entry> = (1..=100).map(big).collect();
    let sizes: Vec<usize> = entries
        .iter()
        .map(|e| encode_entry(e).expect("encode").len())
        .collect();
    log.blocking_append(entries).await.expect("append");

    let batch = log.limited_get_log_entries(1, 101).await.expect("read");
    let bytes: usize = sizes[..batch.len()].iter().sum();
    let limit = gwmon_monitor::raft::log_store::REPLICATION_BATCH_BYTES;
    assert!(
        batch.len() > 1 && batch.len() < 100,
        "{} entries in one message",
        batch.len()
    );
    assert!(bytes <= limit, "{bytes} bytes in one message");
    assert!(
        bytes + sizes[batch.len()] > limit,
        "the batch stopped early"
    );
    let indexes: Vec<u64> = batch.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (1..=batch.len() as u64).collect::<Vec<_>>());
    // A reader that asked for the range (not replication) still gets all of it.
    assert_eq!(
        log.try_get_log_entries(1..101).await.expect("read").len(),
        100
    );
    // The last entry on its own.
    let mut one_large = log.limited_get_log_entries(100, 101).await.expect("read");
    assert_eq!(one_large.pop().map(|e| e.log_id.index), Some(100));
}
