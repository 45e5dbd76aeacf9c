//! The persisted encodings: a version byte, then the body; round trips are exact.

mod common;

use common::*;
use gwmon_monitor::codec::{self, CodecError};
use gwmon_monitor::map::{Command, GatewayMap, MapConfig};
use gwmon_proto::domain::{Epoch, GatewayReport, ReportedAvailability};

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

/// A map at feature level 0 is written byte for byte as version 3 (what the previous
/// release writes and reads, so its monitors still take this one's snapshots during a
/// rolling upgrade); once the level is raised it is version 4, with the level.
#[test]
fn the_map_is_written_as_version_3_until_the_feature_level_is_raised() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct PreviousRelease {
        epoch: Epoch,
        time: gwmon_monitor::map::Timestamp,
        config: MapConfig,
        groups: std::collections::BTreeMap<
            gwmon_proto::domain::GroupKey,
            gwmon_monitor::map::GroupState,
        >,
    }
    impl codec::Versioned for PreviousRelease {
        const WHAT: &'static str = "gateway map";
        const VERSION: u8 = 3;
    }
    let map = busy_map();
    let bytes = codec::encode(&map).expect("encode");
    let previous: PreviousRelease = codec::decode(&bytes).expect("the previous release reads it");
    assert_eq!(previous.groups, *map.groups());
    assert_eq!(
        codec::encode(&previous).expect("encode as the previous release"),
        bytes,
        "the same bytes"
    );

    let mut h = Harness::new();
    h.map = map;
    h.ok(Command::SetFeatures(1));
    let raised = codec::encode(&h.map).expect("encode");
    assert_eq!(raised[0], 4);
    let back: GatewayMap = codec::decode(&raised).expect("decode");
    assert_eq!(back, h.map);
    assert_eq!(back.features(), 1);
    assert!(
        codec::decode::<PreviousRelease>(&raised).is_err(),
        "the previous release refuses it"
    );
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
            supported: 4,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "unknown format version 9 for gateway map; this build reads version 4"
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
