//! Property tests: arbitrary wire input, including arbitrary bytes, never panics a
//! conversion. Whatever is accepted is a fixed point (converting it back and forth changes
//! nothing), and whatever is refused names a field of the message converted.

use gwmon_proto::domain::{
    AnaGroupView, FieldError, GatewayMessage, GatewayReport, GroupKey, Hello, Listener, MapSlice,
    MonitorMessage, Namespace, Subsystem,
};
use gwmon_proto::v1;
use gwmon_proto::v1::gateway_message::Body as GatewayBody;
use gwmon_proto::v1::monitor_message::Body as MonitorBody;
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message;

/// Strings that are sometimes almost valid, sometimes anything at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9.:_ -]{0,12}",
        "nqn\\.20[0-9]{2}-[0-9]{2}\\.[a-z.]{0,6}(:[a-z0-9 ]{0,6})?",
        "([0-9]{1,3}\\.){3}[0-9]{1,3}",
        "[0-9a-f:]{0,20}",
        any::<String>(),
    ]
}

/// Small numbers (where zero and the limits live) and anything at all.
fn num32() -> impl Strategy<Value = u32> {
    prop_oneof![0..5u32, 125..135u32, 65530..65540u32, any::<u32>()]
}

/// Known enum values, zero, and anything at all.
fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![-1..6i32, any::<i32>()]
}

fn group_key() -> impl Strategy<Value = v1::GroupKey> {
    (text(), text()).prop_map(|(pool, group)| v1::GroupKey { pool, group })
}

fn listener() -> impl Strategy<Value = v1::Listener> {
    (text(), num32()).prop_map(|(address, port)| v1::Listener { address, port })
}

fn namespace() -> impl Strategy<Value = v1::Namespace> {
    (num32(), num32(), text()).prop_map(|(nsid, ana_group, nonce)| v1::Namespace {
        nsid,
        ana_group,
        nonce,
    })
}

fn subsystem() -> impl Strategy<Value = v1::Subsystem> {
    (text(), vec(listener(), 0..4), vec(namespace(), 0..4)).prop_map(
        |(nqn, listeners, namespaces)| v1::Subsystem {
            nqn,
            listeners,
            namespaces,
        },
    )
}

fn beacon() -> impl Strategy<Value = v1::Beacon> {
    (
        any::<u64>(),
        enum_value(),
        vec(subsystem(), 0..4),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(seq, availability, subsystems, applied_epoch, fence_epoch)| v1::Beacon {
                seq,
                availability,
                subsystems,
                applied_epoch,
                fence_epoch,
                incarnation: seq.rotate_left(7),
                subsystems_unchanged: seq % 5 == 0,
            },
        )
}

fn hello() -> impl Strategy<Value = v1::Hello> {
    (
        text(),
        proptest::option::of(group_key()),
        text(),
        any::<u64>(),
    )
        .prop_map(
            |(gateway_id, key, software_version, incarnation)| v1::Hello {
                gateway_id,
                key,
                software_version,
                incarnation,
            },
        )
}

fn ana_view() -> impl Strategy<Value = v1::AnaGroupView> {
    (num32(), enum_value(), any::<u64>(), any::<bool>()).prop_map(
        |(ana_group, access, fence_epoch, fence_complete)| v1::AnaGroupView {
            ana_group,
            access,
            fence_epoch,
            fence_complete,
        },
    )
}

fn map_slice() -> impl Strategy<Value = v1::MapSlice> {
    (
        any::<u64>(),
        num32(),
        enum_value(),
        vec(text(), 0..4),
        vec(ana_view(), 0..4),
        vec((text(), num32(), num32()), 0..4),
    )
        .prop_map(
            |(epoch, ana_group, availability, nqns, ana_groups, placed)| v1::MapSlice {
                epoch,
                ana_group,
                availability,
                nqns,
                ana_groups,
                placements: placed
                    .into_iter()
                    .map(|(nqn, nsid, ana_group)| v1::NamespacePlacement {
                        nqn,
                        nsid,
                        ana_group,
                    })
                    .collect(),
            },
        )
}

fn gateway_message() -> impl Strategy<Value = v1::GatewayMessage> {
    proptest::option::of(prop_oneof![
        hello().prop_map(GatewayBody::Hello),
        beacon().prop_map(GatewayBody::Beacon),
    ])
    .prop_map(|body| v1::GatewayMessage { body })
}

fn monitor_message() -> impl Strategy<Value = v1::MonitorMessage> {
    proptest::option::of(prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            prop_oneof![Just(0u64), any::<u64>()],
            any::<bool>()
        )
            .prop_map(
                |(seq, epoch, map_epoch, lease_ms, accepted)| MonitorBody::Ack(v1::Ack {
                    seq,
                    epoch,
                    map_epoch,
                    lease_ms,
                    unchanged_subsystems_accepted: accepted
                })
            ),
        map_slice().prop_map(MonitorBody::MapSlice),
        (text(), enum_value())
            .prop_map(|(reason, kind)| MonitorBody::Shutdown(v1::Shutdown { reason, kind })),
    ])
    .prop_map(|body| v1::MonitorMessage { body })
}

/// An accepted value is a fixed point; a refusal names a field, starting with one of
/// `roots` (the message's own fields), and prints as "<path> <reason>".
fn check<W, D>(wire: W, roots: &[&str]) -> Result<(), TestCaseError>
where
    W: Clone,
    D: TryFrom<W, Error = FieldError> + Into<W> + Clone + PartialEq + std::fmt::Debug,
{
    match D::try_from(wire) {
        Ok(domain) => {
            let again = D::try_from(domain.clone().into());
            prop_assert_eq!(again, Ok(domain));
        }
        Err(err) => {
            prop_assert!(
                roots.iter().any(|r| err.field == *r
                    || err.field.starts_with(&format!("{r}."))
                    || err.field.starts_with(&format!("{r}["))),
                "unexpected path {:?}",
                err.field
            );
            let prefix = format!("{} ", err.field);
            let printed = err.to_string();
            prop_assert!(printed.starts_with(&prefix), "printed as {:?}", printed);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn garbage_group_keys(w in group_key()) {
        check::<_, GroupKey>(w, &["pool", "group"])?;
    }

    #[test]
    fn garbage_listeners(w in listener()) {
        check::<_, Listener>(w, &["address", "port"])?;
    }

    #[test]
    fn garbage_namespaces(w in namespace()) {
        check::<_, Namespace>(w, &["nsid", "ana_group", "nonce"])?;
    }

    #[test]
    fn garbage_subsystems(w in subsystem()) {
        check::<_, Subsystem>(w, &["nqn", "listeners", "namespaces"])?;
    }

    #[test]
    fn garbage_beacons(w in beacon()) {
        check::<_, GatewayReport>(w, &["availability", "subsystems"])?;
    }

    #[test]
    fn garbage_hellos(w in hello()) {
        check::<_, Hello>(w, &["gateway_id", "key", "software_version"])?;
    }

    #[test]
    fn garbage_ana_views(w in ana_view()) {
        check::<_, AnaGroupView>(w, &["ana_group", "access"])?;
    }

    #[test]
    fn garbage_slices(w in map_slice()) {
        check::<_, MapSlice>(w, &["ana_group", "availability", "nqns", "ana_groups", "placements"])?;
    }

    #[test]
    fn garbage_gateway_messages(w in gateway_message()) {
        check::<_, GatewayMessage>(w, &["body", "hello", "beacon"])?;
    }

    #[test]
    fn garbage_monitor_messages(w in monitor_message()) {
        check::<_, MonitorMessage>(w, &["body", "ack", "map_slice", "shutdown"])?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        if let Ok(w) = v1::GatewayMessage::decode(bytes.as_slice()) {
            check::<_, GatewayMessage>(w, &["body", "hello", "beacon"])?;
        }
        if let Ok(w) = v1::MonitorMessage::decode(bytes.as_slice()) {
            check::<_, MonitorMessage>(w, &["body", "ack", "map_slice", "shutdown"])?;
        }
        if let Ok(w) = v1::Beacon::decode(bytes.as_slice()) {
            check::<_, GatewayReport>(w, &["availability", "subsystems"])?;
        }
        if let Ok(w) = v1::MapSlice::decode(bytes.as_slice()) {
            check::<_, MapSlice>(w, &["ana_group", "availability", "nqns", "ana_groups", "placements"])?;
        }
    }

    /// Mutating one byte of a valid encoding explores the inputs close to valid ones,
    /// which random bytes rarely reach.
    #[test]
    fn mutated_valid_messages_never_panic(b in beacon(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = v1::GatewayMessage::from(b).encode_to_vec();
        if !bytes.is_empty() {
            let i = pos.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(w) = v1::GatewayMessage::decode(bytes.as_slice()) {
            check::<_, GatewayMessage>(w, &["body", "hello", "beacon"])?;
        }
    }
}

// ---- the replica service's messages ----

/// UUIDs, near-UUIDs, and the other strings.
fn uuid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        "[0-9a-f-]{30,40}",
        text(),
    ]
}

fn portal() -> impl Strategy<Value = v1::Portal> {
    (enum_value(), text(), num32()).prop_map(|(transport, address, port)| v1::Portal {
        transport,
        address,
        port,
    })
}

fn replica_spec() -> impl Strategy<Value = v1::ReplicaSpec> {
    (uuid_text(), text(), vec(portal(), 0..4), uuid_text()).prop_map(
        |(replica_id, target_nqn, portals, namespace_uuid)| v1::ReplicaSpec {
            replica_id,
            target_nqn,
            portals,
            namespace_uuid,
        },
    )
}

fn volume_spec() -> impl Strategy<Value = v1::VolumeSpec> {
    (uuid_text(), text(), any::<u64>(), num32(), any::<u64>()).prop_map(
        |(volume_id, alias, capacity_bytes, replica_count, grace_period_ms)| v1::VolumeSpec {
            volume_id,
            alias,
            capacity_bytes,
            replica_count,
            grace_period_ms,
        },
    )
}

fn state_report() -> impl Strategy<Value = v1::ReplicaStateReport> {
    (uuid_text(), enum_value(), proptest::option::of(num32())).prop_map(
        |(replica_id, state, sync_permille)| v1::ReplicaStateReport {
            replica_id,
            state,
            sync_permille,
        },
    )
}

proptest! {
    #[test]
    fn garbage_portals(w in portal()) {
        check::<_, gwmon_proto::domain::Portal>(w, &["transport", "address", "port"])?;
    }

    #[test]
    fn garbage_replica_specs(w in replica_spec()) {
        check::<_, gwmon_proto::domain::ReplicaSpec>(
            w,
            &["replica_id", "target_nqn", "portals", "namespace_uuid"],
        )?;
    }

    #[test]
    fn garbage_volume_specs(w in volume_spec()) {
        check::<_, gwmon_proto::domain::VolumeSpec>(
            w,
            &["volume_id", "alias", "capacity_bytes", "replica_count", "grace_period_ms"],
        )?;
    }

    #[test]
    fn garbage_state_reports(w in state_report()) {
        check::<_, gwmon_proto::domain::ReplicaReport>(w, &["replica_id", "state", "sync_permille"])?;
    }

    #[test]
    fn arbitrary_replica_requests_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        use gwmon_proto::convert::replica::{replica_reports, replica_specs, volume_ids};
        if let Ok(w) = v1::CreateVolumeRequest::decode(bytes.as_slice()) {
            let _ = replica_specs(w.replicas, 16, "replicas");
            if let Some(v) = w.volume {
                check::<_, gwmon_proto::domain::VolumeSpec>(
                    v,
                    &["volume_id", "alias", "capacity_bytes", "replica_count", "grace_period_ms"],
                )?;
            }
        }
        if let Ok(w) = v1::ReportReplicaStatesRequest::decode(bytes.as_slice()) {
            let _ = replica_reports(w.reports);
        }
        if let Ok(w) = v1::HeartbeatRequest::decode(bytes.as_slice()) {
            let _ = volume_ids(w.volume_ids);
        }
    }
}
