//! The persisted encodings: a version byte, then the body; round trips are exact.

mod common;

use common::*;
use gwmon_monitor::codec::{self, CodecError};
use gwmon_monitor::map::{Command, GatewayMap, MapConfig};
use std::collections::BTreeMap;

use gwmon_proto::domain::{
    AnaGroupId, Epoch, GatewayId, GatewayReport, GroupKey, Location, ReportedAvailability,
};

/// A map with something in every part: gateways in every availability, holders in every
/// state, fences pending and complete, a disaster location, damping records.
fn busy_map() -> GatewayMap {
    let mut h = Harness::new();
    for id in ["a", "b", "c", "d"] {
        h.create(id);
    }
    h.ok(Command::SetLocation {
        key: h.key.clone(),
        gateway: gw("d"),
        location: loc("west"),
    });
    for id in ["a", "b", "c"] {
        h.boot(id, &[1, 2, 3]);
    }
    h.time_out("a");
    h.complete_fences();
    h.time_out("b");
    h.ok(Command::DisasterSet {
        key: h.key.clone(),
        location: loc("west"),
    });
    let mut other = key("rbd", "");
    std::mem::swap(&mut h.key, &mut other);
    h.create("x");
    h.map
}

#[test]
fn the_map_round_trips_with_its_version_byte() {
    let map = busy_map();
    let bytes = codec::encode(&map).expect("encode");
    // At feature level 0 the map is written as the previous release wrote it.
    assert_eq!(bytes[0], 3, "format version first");
    let back: GatewayMap = codec::decode(&bytes).expect("decode");
    assert_eq!(back, map);
    assert_eq!(back.groups().len(), 2);
    let group = back.group(&key("rbd", "grp1")).expect("group");
    assert_eq!(group.fences.len(), 2);
    assert!(group.fences.iter().any(|f| f.completed_at.is_some()));
    assert!(group.fences.iter().any(|f| f.completed_at.is_none()));
    assert_eq!(group.damping.len(), 2, "the two gateways that went down");
}

/// A group as the previous releases wrote it: no namespace placements.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct PreviousGroup {
    epoch: Epoch,
    gateways: BTreeMap<GatewayId, gwmon_monitor::map::Gateway>,
    ana: BTreeMap<AnaGroupId, gwmon_monitor::map::AnaGroup>,
    fences: Vec<gwmon_monitor::map::Fence>,
    disaster: BTreeMap<Location, gwmon_monitor::map::DisasterState>,
    allow_failovers_at: gwmon_monitor::map::Timestamp,
    damping: BTreeMap<GatewayId, gwmon_monitor::map::damping::Damping>,
}

impl PreviousGroup {
    fn same_as(&self, g: &gwmon_monitor::map::GroupState) -> bool {
        self.epoch == g.epoch
            && self.gateways == g.gateways
            && self.ana == g.ana
            && self.fences == g.fences
            && self.disaster == g.disaster
            && self.allow_failovers_at == g.allow_failovers_at
            && self.damping == g.damping
    }
}

fn same_groups(
    previous: &BTreeMap<GroupKey, PreviousGroup>,
    now: &BTreeMap<GroupKey, gwmon_monitor::map::GroupState>,
) -> bool {
    previous.len() == now.len()
        && previous
            .iter()
            .zip(now)
            .all(|((ka, a), (kb, b))| ka == kb && a.same_as(b))
}

/// A map at feature level 0 is written byte for byte as version 3 (what the release before
/// feature levels writes and reads, so its monitors still take this one's snapshots during
/// a rolling upgrade); at levels 1 and 2 as version 4, which the release before namespace
/// balancing reads; from level 3 as version 5, with the placements.
#[test]
fn the_map_is_written_as_the_oldest_release_that_may_run_beside_it_reads_it() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Version3 {
        epoch: Epoch,
        time: gwmon_monitor::map::Timestamp,
        config: MapConfig,
        groups: BTreeMap<GroupKey, PreviousGroup>,
    }
    impl codec::Versioned for Version3 {
        const WHAT: &'static str = "gateway map";
        const VERSION: u8 = 3;
    }
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Version4 {
        epoch: Epoch,
        time: gwmon_monitor::map::Timestamp,
        config: MapConfig,
        groups: BTreeMap<GroupKey, PreviousGroup>,
        features: u32,
    }
    impl codec::Versioned for Version4 {
        const WHAT: &'static str = "gateway map";
        const VERSION: u8 = 4;
    }
    let map = busy_map();
    let bytes = codec::encode(&map).expect("encode");
    let previous: Version3 = codec::decode(&bytes).expect("the release before levels reads it");
    assert!(same_groups(&previous.groups, map.groups()));
    assert_eq!(
        codec::encode(&previous).expect("encode as that release"),
        bytes,
        "the same bytes"
    );

    let mut h = Harness::new();
    h.map = map;
    h.ok(Command::SetFeatures(2));
    let raised = codec::encode(&h.map).expect("encode");
    assert_eq!(raised[0], 4);
    let back: GatewayMap = codec::decode(&raised).expect("decode");
    assert_eq!(back, h.map);
    assert_eq!(back.features(), 2);
    assert!(
        codec::decode::<Version3>(&raised).is_err(),
        "the release before levels refuses it"
    );
    let v4: Version4 = codec::decode(&raised).expect("the release before balancing reads it");
    assert!(same_groups(&v4.groups, h.map.groups()));
    assert_eq!(
        codec::encode(&v4).expect("encode"),
        raised,
        "the same bytes"
    );

    h.ok(Command::SetFeatures(3));
    let balancing = codec::encode(&h.map).expect("encode");
    assert_eq!(balancing[0], 5);
    assert!(
        codec::decode::<Version4>(&balancing).is_err(),
        "the release before balancing refuses it"
    );
    let back: GatewayMap = codec::decode(&balancing).expect("decode");
    assert_eq!(back, h.map);
}

#[test]
fn an_unknown_version_or_a_cut_body_is_refused_clearly() {
    let mut bytes = codec::encode(&busy_map()).expect("encode");
    bytes[0] = 9;
    let err = codec::decode::<GatewayMap>(&bytes).expect_err("version 9");
    assert!(matches!(
        err,
        CodecError::Version {
            found: 9,
            supported: 5,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "unknown format version 9 for gateway map; this build reads version 5"
    );
    bytes[0] = 3;
    bytes.truncate(bytes.len() / 2);
    assert!(matches!(
        codec::decode::<GatewayMap>(&bytes),
        Err(CodecError::Decode { .. })
    ));
    assert!(matches!(
        codec::decode::<GatewayMap>(&[]),
        Err(CodecError::Empty)
    ));
}

#[test]
fn every_command_round_trips() {
    let k = key("rbd", "grp1");
    let report = GatewayReport {
        seq: 7,
        availability: ReportedAvailability::Available,
        subsystems: vec![subsystem(&gw("a"), &[1, 2], 2)],
        applied_epoch: Epoch(3),
        fence_epoch: Epoch(2),
    };
    let commands = [
        Command::CreateGateway {
            key: k.clone(),
            gateway: gw("a"),
        },
        Command::DeleteGateway {
            key: k.clone(),
            gateway: gw("a"),
        },
        Command::SetAdminState {
            key: k.clone(),
            gateway: gw("a"),
            enabled: false,
        },
        Command::SetLocation {
            key: k.clone(),
            gateway: gw("a"),
            location: loc("east"),
        },
        Command::DisasterSet {
            key: k.clone(),
            location: loc("east"),
        },
        Command::DisasterClear {
            key: k.clone(),
            location: loc("east"),
        },
        Command::GatewayReport {
            key: k.clone(),
            gateway: gw("a"),
            report,
        },
        Command::GatewayTimedOut {
            key: k.clone(),
            gateway: gw("a"),
        },
        Command::FenceCompleted {
            key: k.clone(),
            gateway: gw("a"),
            epoch: Epoch(4),
        },
        Command::TimerTick,
        Command::SetConfig(MapConfig::default()),
        Command::MoveNamespaces {
            key: k.clone(),
            moves: vec![gwmon_monitor::map::placement::NsMove {
                ns: gwmon_monitor::map::placement::NsKey {
                    nqn: "nqn.2016-06.io.spdk:cnode1".parse().expect("nqn"),
                    nsid: 3,
                },
                from: ana(1),
                to: ana(2),
            }],
        },
    ];
    for cmd in commands {
        let bytes = codec::encode(&cmd).expect("encode");
        assert_eq!(bytes[0], 2);
        assert_eq!(codec::decode::<Command>(&bytes).expect("decode"), cmd);
    }
}

#[test]
fn decoding_revalidates_ids() {
    // A gateway id is validated when decoded, not trusted because it came from disk.
    let cmd = Command::CreateGateway {
        key: key("rbd", "g"),
        gateway: gw("ab"),
    };
    let mut bytes = codec::encode(&cmd).expect("encode");
    let pos = bytes
        .windows(2)
        .position(|w| w == b"ab")
        .expect("id in the encoding");
    bytes[pos] = b' ';
    assert!(codec::decode::<Command>(&bytes).is_err());
}
