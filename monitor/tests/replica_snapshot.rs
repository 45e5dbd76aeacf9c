//! The replica registry inside the Raft state machine: replica commands applied through
//! openraft's storage adapter give the engine's answers, their log entries round-trip, the
//! registry survives a snapshot, a restart and a snapshot install, and a snapshot written
//! before the registry existed still loads.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gwmon_monitor::codec;
use gwmon_monitor::map::{GatewayMap, Timestamp};
use gwmon_monitor::raft::log_store::{decode_entry, encode_entry};
use gwmon_monitor::raft::state_machine::{
    open_storage, MapReader, SnapshotPayload, SnapshotPayloadV1, StateMachine, StoredSnapshotV1,
};
use gwmon_monitor::raft::{Entry, MonitorNode, Request, TypeConfig};
use gwmon_monitor::replica::{ReplicaCommand, ReplicaError, ReplicaRegistry};
use gwmon_monitor::store::{self, MetaKey, Store, StoreError, StoreKind};
use gwmon_proto::domain::{
    HostIdentity, HostName, Nqn, Portal, ReplicaReport, ReplicaSpec, ReplicaState, Stage,
    Transport, VolumeId, VolumeSpec,
};
use openraft::storage::{RaftStateMachine, SnapshotMeta};
use openraft::testing::log_id;
use openraft::{EntryPayload, Membership, RaftSnapshotBuilder, StoredMembership};

const CACHE: u64 = 8 * 1024 * 1024;
/// The default backend; both are checked against openraft's suite and the `Store` contract.
const KIND: StoreKind = StoreKind::Redb;

async fn open_in(path: &Path) -> (Arc<dyn Store>, StateMachine, MapReader) {
    let store = open_when_unlocked(path).await;
    let (_log, sm, reader) = open_storage(store.clone()).await.expect("open storage");
    (store, sm, reader)
}

/// sled's directory lock goes with the last handle; wait for it with a deadline.
async fn open_when_unlocked(path: &Path) -> Arc<dyn Store> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store::open(Some(KIND), path, CACHE) {
            Ok(store) => return store,
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("open {}: {e}", path.display()),
        }
    }
}

fn volume() -> VolumeId {
    "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
        .parse()
        .expect("volume id")
}

fn host() -> Nqn {
    "nqn.2014-08.org.nvmexpress:uuid:0b5e4c1e-2c7a-4f2e-9a47-6a9d7f3d2c11"
        .parse()
        .expect("host nqn")
}

fn replica(n: u8) -> ReplicaSpec {
    ReplicaSpec {
        id: format!("00000000-0000-4000-8000-0000000000{n:02x}")
            .parse()
            .expect("replica id"),
        target_nqn: format!("nqn.2016-06.io.spdk:r{n}").parse().expect("nqn"),
        portals: vec![Portal {
            transport: Transport::Tcp,
            address: format!("10.0.0.{n}").parse().expect("address"),
            port: 4420,
        }],
        namespace_uuid: None,
    }
}

fn commands() -> Vec<ReplicaCommand> {
    vec![
        ReplicaCommand::Heartbeat {
            host: HostIdentity {
                nqn: host(),
                id: None,
                name: "compute-1".parse::<HostName>().expect("name"),
            },
            volumes: vec![volume()],
        },
        ReplicaCommand::CreateVolume {
            spec: VolumeSpec {
                id: volume(),
                alias: "vol1".parse().expect("alias"),
                capacity_bytes: 1 << 30,
                replica_count: 2,
                grace_period_ms: 1_000,
            },
            replicas: vec![replica(1), replica(2)],
        },
        ReplicaCommand::ReportStates {
            host: host(),
            volume: volume(),
            reports: vec![ReplicaReport {
                replica: replica(1).id,
                state: ReplicaState::Faulty,
                sync_permille: None,
            }],
        },
        ReplicaCommand::RequestReplacement {
            volume: volume(),
            replica: replica(1).id,
            by: Some(host()),
            force: false,
        },
        ReplicaCommand::SupplyReplacement {
            volume: volume(),
            replacement: gwmon_proto::domain::ReplacementId::FIRST,
            replica: replica(3),
        },
        // Refused, and committed as a refusal: `synced` before `attached`.
        ReplicaCommand::AcknowledgeReplacement {
            host: host(),
            volume: volume(),
            replacement: gwmon_proto::domain::ReplacementId::FIRST,
            done: Stage::Synced,
        },
    ]
}

fn replica_entry(index: u64, now: u64, cmd: ReplicaCommand) -> Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Request::Replica {
            now: Timestamp(now),
            cmd,
        }),
    }
}

fn membership() -> Membership<u64, gwmon_monitor::raft::MonitorNode> {
    Membership::new(
        vec![[1u64].into_iter().collect()],
        [(
            1u64,
            gwmon_monitor::raft::MonitorNode::new("127.0.0.1:7001", "127.0.0.1:7003"),
        )]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>(),
    )
}

/// Applies the commands through the state machine, checking each response against the
/// engine applied directly. Returns the registry the engine computed and the last index.
async fn apply_all(sm: &mut StateMachine) -> (ReplicaRegistry, u64) {
    let mut mirror = ReplicaRegistry::default();
    sm.apply([Entry {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::<TypeConfig>::Membership(membership()),
    }])
    .await
    .expect("apply membership");
    let mut index = 1;
    let mut now = 1_000;
    for cmd in commands() {
        index += 1;
        now += 5_000;
        let want = mirror.apply(&cmd, Timestamp(now));
        let entry = replica_entry(index, now, cmd);
        let decoded = decode_entry(&encode_entry(&entry).expect("encode entry")).expect("decode");
        assert_eq!(decoded, entry, "a replica entry survives the log encoding");
        let replies = sm.apply([entry]).await.expect("apply");
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].replica.as_ref(), Some(&want));
        assert!(replies[0].outcome.as_ref().is_ok_and(|a| !a.changed));
    }
    (mirror, index)
}

#[tokio::test]
async fn replica_commands_apply_through_raft_and_survive_snapshot_restart_and_install() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leader");
    let (mirror, last, built) = {
        let (_store, mut sm, reader) = open_in(&path).await;
        let (mirror, last) = apply_all(&mut sm).await;
        assert_eq!(reader.read_registry(|r| r.clone()), mirror);
        // The refused acknowledgement was committed and refused the same way everywhere.
        assert!(matches!(
            mirror
                .volume(&volume())
                .map(|v| v.replacement.as_ref().map(|p| p.stage)),
            Ok(Some(Stage::Supplied))
        ));
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot");
        (mirror, last, built)
    };
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 1, last)));

    // A restart loads the snapshot with the registry.
    let (_store, _sm, reader) = open_in(&path).await;
    assert_eq!(reader.read_registry(|r| r.clone()), mirror);
    assert_eq!(reader.last_applied_index(), last);

    // A fresh monitor installing the snapshot gets the same registry.
    let (_store_f, mut follower, follower_reader) = open_in(&dir.path().join("follower")).await;
    let mut receiving = follower
        .begin_receiving_snapshot()
        .await
        .expect("begin receiving");
    *receiving = Cursor::new(built.snapshot.get_ref().clone());
    follower
        .install_snapshot(&built.meta, receiving)
        .await
        .expect("install snapshot");
    assert_eq!(follower_reader.read_registry(|r| r.clone()), mirror);

    // And goes on from there: the next stage is accepted, a repeat is not a change.
    let ack = |index, stage| {
        replica_entry(
            index,
            100_000,
            ReplicaCommand::AcknowledgeReplacement {
                host: host(),
                volume: volume(),
                replacement: gwmon_proto::domain::ReplacementId::FIRST,
                done: stage,
            },
        )
    };
    let replies = follower
        .apply([
            ack(last + 1, Stage::Attached),
            ack(last + 2, Stage::Attached),
        ])
        .await
        .expect("apply after install");
    assert!(matches!(&replies[0].replica, Some(Ok(a)) if a.changed));
    assert!(matches!(&replies[1].replica, Some(Ok(a)) if !a.changed));
    let unknown: VolumeId = "00000000-0000-4000-8000-0000000000ff"
        .parse()
        .expect("volume id");
    let replies = follower
        .apply([replica_entry(
            last + 3,
            100_000,
            ReplicaCommand::DeleteVolume { volume: unknown },
        )])
        .await
        .expect("apply a refused command");
    assert_eq!(
        replies[0].replica,
        Some(Err(ReplicaError::UnknownVolume(unknown)))
    );
}

/// A membership as releases before the peer port stored it: one address per monitor.
fn old_membership() -> Membership<u64, openraft::BasicNode> {
    Membership::new(
        vec![[1u64].into_iter().collect()],
        [(1u64, openraft::BasicNode::new("127.0.0.1:7001"))]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
}

#[tokio::test]
async fn a_snapshot_from_before_the_registry_and_the_peer_port_loads_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let last = Some(log_id(1, 1, 7));
    let membership = StoredMembership::new(Some(log_id(1, 1, 1)), old_membership());
    let map = GatewayMap::default();
    let v1 = SnapshotPayloadV1 {
        last_applied: last,
        membership: membership.clone(),
        map: codec::encode(&map).expect("encode map"),
    };
    let data = codec::encode(&v1).expect("encode v1 payload");
    assert_eq!(data[0], 1, "the old format's version byte");
    let decoded = SnapshotPayload::decode(&data).expect("v1 decodes");
    assert_eq!(
        codec::decode::<ReplicaRegistry>(&decoded.registry).expect("registry"),
        ReplicaRegistry::default()
    );
    {
        let store = open_when_unlocked(&path).await;
        let stored = StoredSnapshotV1 {
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
                snapshot_id: "1-1-7-0".into(),
            },
            data,
        };
        store
            .put_meta(
                MetaKey::Snapshot,
                codec::encode(&stored).expect("encode snapshot"),
            )
            .expect("put snapshot");
        store.flush().await.expect("flush");
    }
    let (_store, mut sm, reader) = open_in(&path).await;
    assert_eq!(reader.last_applied_index(), 7);
    // The member's Raft moved to the default peer port, where an upgraded monitor with
    // default settings serves it.
    let (_, members) = sm.applied_state().await.expect("applied state");
    assert_eq!(
        members.membership().get_node(&1),
        Some(&MonitorNode::new("127.0.0.1:7001", "127.0.0.1:7003"))
    );
    assert_eq!(
        reader.read_registry(|r| r.clone()),
        ReplicaRegistry::default()
    );
    assert_eq!(reader.read(|m| m.clone()), map);

    // A payload of an unknown future version is refused with its version, not misread.
    let mut future = codec::encode(&decoded).expect("encode v2");
    future[0] = 9;
    let err = SnapshotPayload::decode(&future).expect_err("unknown version");
    assert!(err.to_string().contains("version 9"), "{err}");
}

#[test]
fn a_membership_entry_from_before_the_peer_port_decodes_upgraded() {
    use gwmon_monitor::raft::log_store::{StoredEntry, StoredPayload};
    let old = StoredEntry {
        log_id: log_id(1, 1, 3),
        payload: StoredPayload::Membership(old_membership()),
    };
    let entry = decode_entry(&codec::encode(&old).expect("encode")).expect("decodes");
    let EntryPayload::Membership(m) = entry.payload.clone() else {
        panic!("a membership entry expected, got {:?}", entry.payload)
    };
    assert_eq!(
        m.get_node(&1),
        Some(&MonitorNode::new("127.0.0.1:7001", "127.0.0.1:7003"))
    );
    // Written back, it takes the new form, which decodes to the same.
    let again = decode_entry(&encode_entry(&entry).expect("encode")).expect("decodes");
    assert_eq!(again.payload, EntryPayload::Membership(m));
}
