//! Property tests: every valid domain value survives domain -> wire -> (bytes ->) domain
//! unchanged, so nothing the monitor or a gateway sends can be misread by the other side.

use std::net::IpAddr;
use std::time::Duration;

use gwmon_proto::domain::{
    Ack, AnaAccess, AnaGroupId, AnaGroupView, Epoch, GatewayId, GatewayMessage, GatewayReport,
    Group, GroupKey, Hello, Listener, MapSlice, MonitorMessage, Namespace, NamespacePlacement,
    Nonce, Nqn, Pool, ReportedAvailability, ShutdownKind, SliceAvailability, Subsystem,
};
use gwmon_proto::v1;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use prost::Message;

fn gateway_id() -> impl Strategy<Value = GatewayId> {
    "[a-zA-Z0-9][a-zA-Z0-9._:@-]{0,40}".prop_filter_map("valid id", |s| s.parse().ok())
}

fn group_key() -> impl Strategy<Value = GroupKey> {
    (
        "[a-zA-Z0-9._][a-zA-Z0-9._:@-]{0,20}"
            .prop_filter_map("valid pool", |s| s.parse::<Pool>().ok()),
        "([a-zA-Z0-9_][a-zA-Z0-9._:@-]{0,20})?"
            .prop_filter_map("valid group", |s| s.parse::<Group>().ok()),
    )
        .prop_map(|(pool, group)| GroupKey::new(pool, group))
}

fn nqn() -> impl Strategy<Value = Nqn> {
    prop_oneof![
        "nqn\\.20[0-9]{2}-(0[1-9]|1[0-2])\\.[a-z0-9][a-z0-9.-]{0,20}(:[a-zA-Z0-9._:-]{1,40})?",
        "nqn\\.2014-08\\.org\\.nvmexpress:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    ]
    .prop_filter_map("valid NQN", |s| s.parse().ok())
}

fn ana_group() -> impl Strategy<Value = AnaGroupId> {
    (1..=AnaGroupId::MAX).prop_filter_map("valid ANA group", |n| AnaGroupId::new(n).ok())
}

fn listener() -> impl Strategy<Value = Listener> {
    (any::<IpAddr>(), 1..=u16::MAX).prop_map(|(address, port)| Listener { address, port })
}

fn nonce() -> impl Strategy<Value = Option<Nonce>> {
    proptest::option::of("[!-~]{1,60}".prop_filter_map("valid nonce", |s| s.parse().ok()))
}

fn subsystem() -> impl Strategy<Value = Subsystem> {
    (
        nqn(),
        btree_set(listener(), 0..4),
        btree_map(1..=Namespace::MAX_NSID, (ana_group(), nonce()), 0..6),
    )
        .prop_map(|(nqn, listeners, namespaces)| Subsystem {
            nqn,
            listeners: listeners.into_iter().collect(),
            namespaces: namespaces
                .into_iter()
                .map(|(nsid, (ana_group, nonce))| Namespace {
                    nsid,
                    ana_group,
                    nonce,
                })
                .collect(),
        })
}

fn reported_availability() -> impl Strategy<Value = ReportedAvailability> {
    prop_oneof![
        Just(ReportedAvailability::Starting),
        Just(ReportedAvailability::Available),
        Just(ReportedAvailability::Unavailable),
    ]
}

/// A valid report in canonical order (what a conversion from the wire produces).
fn report() -> impl Strategy<Value = GatewayReport> {
    (
        any::<u64>(),
        reported_availability(),
        btree_map(nqn(), subsystem(), 0..5),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(seq, availability, subsystems, applied, fence)| {
            let mut report = GatewayReport {
                seq,
                availability,
                // The map keys make the NQNs unique; the subsystem's own NQN is replaced.
                subsystems: subsystems
                    .into_iter()
                    .map(|(nqn, s)| Subsystem { nqn, ..s })
                    .collect(),
                applied_epoch: Epoch(applied),
                fence_epoch: Epoch(fence),
            };
            report.canonicalize();
            report
        })
}

fn hello() -> impl Strategy<Value = Hello> {
    (gateway_id(), group_key(), "[ -~]{1,64}", 1u64..).prop_map(
        |(gateway, key, software_version, incarnation)| Hello {
            gateway,
            key,
            software_version,
            incarnation,
        },
    )
}

fn ana_access() -> impl Strategy<Value = AnaAccess> {
    prop_oneof![Just(AnaAccess::Optimized), Just(AnaAccess::Inaccessible)]
}

fn slice_availability() -> impl Strategy<Value = SliceAvailability> {
    prop_oneof![
        Just(SliceAvailability::Created),
        Just(SliceAvailability::Available),
        Just(SliceAvailability::Unavailable),
    ]
}

/// A valid slice in canonical order.
fn map_slice() -> impl Strategy<Value = MapSlice> {
    (
        any::<u64>(),
        ana_group(),
        slice_availability(),
        btree_set(nqn(), 0..5),
        btree_map(
            ana_group(),
            (ana_access(), any::<u64>(), any::<bool>()),
            0..8,
        ),
        btree_map((nqn(), 1..=Namespace::MAX_NSID), ana_group(), 0..6),
    )
        .prop_map(
            |(epoch, ana_group, availability, nqns, views, placed)| MapSlice {
                epoch: Epoch(epoch),
                ana_group,
                availability,
                nqns: nqns.into_iter().collect(),
                ana_groups: views
                    .into_iter()
                    .map(|(ana_group, (access, fence, complete))| AnaGroupView {
                        ana_group,
                        access,
                        fence_epoch: Epoch(fence),
                        fence_complete: complete,
                    })
                    .collect(),
                placements: placed
                    .into_iter()
                    .map(|((nqn, nsid), ana_group)| NamespacePlacement {
                        nqn,
                        nsid,
                        ana_group,
                    })
                    .collect(),
            },
        )
}

fn ack() -> impl Strategy<Value = Ack> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        1..=u64::MAX,
        any::<bool>(),
    )
        .prop_map(|(seq, epoch, map_epoch, lease_ms, accepted)| Ack {
            seq,
            epoch: Epoch(epoch),
            map_epoch: Epoch(map_epoch),
            lease: Duration::from_millis(lease_ms),
            unchanged_subsystems_accepted: accepted,
        })
}

fn monitor_message() -> impl Strategy<Value = MonitorMessage> {
    prop_oneof![
        ack().prop_map(MonitorMessage::Ack),
        map_slice().prop_map(MonitorMessage::MapSlice),
        (
            prop_oneof![
                Just(ShutdownKind::DeclaredFailed),
                Just(ShutdownKind::Deleted),
                Just(ShutdownKind::Removed)
            ],
            ".{0,200}"
        )
            .prop_map(|(kind, reason)| MonitorMessage::Shutdown { kind, reason }),
    ]
}

fn gateway_message() -> impl Strategy<Value = GatewayMessage> {
    prop_oneof![
        hello().prop_map(GatewayMessage::Hello),
        (any::<u64>(), report()).prop_map(|(incarnation, report)| GatewayMessage::Beacon {
            incarnation,
            report,
            subsystems_unchanged: false,
        }),
        (any::<u64>(), report()).prop_map(|(incarnation, mut report)| {
            report.subsystems.clear();
            GatewayMessage::Beacon {
                incarnation,
                report,
                subsystems_unchanged: true,
            }
        }),
    ]
}

/// Encode to protobuf bytes and decode again: the wire form a peer would really receive.
fn through_bytes<M: Message + Default>(m: &M) -> M {
    M::decode(m.encode_to_vec().as_slice()).expect("our own encoding decodes")
}

proptest! {
    #[test]
    fn reports_round_trip(report in report()) {
        let wire = v1::Beacon::from(report.clone());
        prop_assert_eq!(GatewayReport::try_from(through_bytes(&wire)), Ok(report));
    }

    #[test]
    fn report_order_on_the_wire_does_not_matter(report in report()) {
        let mut wire = v1::Beacon::from(report.clone());
        wire.subsystems.reverse();
        for s in &mut wire.subsystems {
            s.listeners.reverse();
            s.namespaces.reverse();
        }
        let back = GatewayReport::try_from(wire);
        prop_assert!(back.as_ref().is_ok_and(|b| b.same_content(&report)));
        prop_assert_eq!(back, Ok(report));
    }

    #[test]
    fn slices_round_trip(slice in map_slice()) {
        let wire = v1::MapSlice::from(slice.clone());
        prop_assert_eq!(MapSlice::try_from(through_bytes(&wire)), Ok(slice));
    }

    #[test]
    fn ana_group_views_round_trip(
        ana_group in ana_group(),
        access in ana_access(),
        fence in any::<u64>(),
        complete in any::<bool>(),
    ) {
        let view = AnaGroupView { ana_group, access, fence_epoch: Epoch(fence), fence_complete: complete };
        prop_assert_eq!(AnaGroupView::try_from(v1::AnaGroupView::from(view.clone())), Ok(view));
    }

    #[test]
    fn group_keys_round_trip(key in group_key()) {
        prop_assert_eq!(GroupKey::try_from(through_bytes(&v1::GroupKey::from(key.clone()))), Ok(key));
    }

    #[test]
    fn gateway_messages_round_trip(msg in gateway_message()) {
        let wire = v1::GatewayMessage::from(msg.clone());
        prop_assert_eq!(GatewayMessage::try_from(through_bytes(&wire)), Ok(msg));
    }

    #[test]
    fn monitor_messages_round_trip(msg in monitor_message()) {
        let wire = v1::MonitorMessage::from(msg.clone());
        prop_assert_eq!(MonitorMessage::try_from(through_bytes(&wire)), Ok(msg));
    }

    #[test]
    fn listeners_round_trip_through_their_text_form(l in listener()) {
        let wire = v1::Listener::from(l.clone());
        prop_assert_eq!(wire.port, u32::from(l.port));
        prop_assert_eq!(Listener::try_from(wire), Ok(l));
    }

    #[test]
    fn subsystems_round_trip(s in subsystem()) {
        prop_assert_eq!(Subsystem::try_from(v1::Subsystem::from(s.clone())), Ok(s));
    }

    #[test]
    fn namespaces_keep_the_absence_of_a_nonce(
        nsid in 1..=Namespace::MAX_NSID,
        ana_group in ana_group(),
        nonce in nonce(),
    ) {
        let ns = Namespace { nsid, ana_group, nonce };
        let wire = v1::Namespace::from(ns.clone());
        prop_assert_eq!(wire.nonce.is_empty(), ns.nonce.is_none());
        prop_assert_eq!(Namespace::try_from(wire), Ok(ns));
    }

    #[test]
    fn vectors_of_subsystems_with_repeated_nqns_are_refused(s in subsystem(), extra in vec(subsystem(), 0..3)) {
        let mut wire = v1::Beacon {
            availability: v1::Availability::Available.into(),
            ..Default::default()
        };
        wire.subsystems.push(v1::Subsystem::from(s.clone()));
        wire.subsystems.extend(extra.into_iter().filter(|e| e.nqn != s.nqn).map(Into::into));
        let dup_at = wire.subsystems.len();
        wire.subsystems.push(v1::Subsystem::from(s.clone()));
        let err = GatewayReport::try_from(wire).expect_err("duplicate NQN");
        prop_assert_eq!(err.field, format!("subsystems[{dup_at}].nqn"));
        prop_assert_eq!(err.reason, gwmon_proto::domain::Invalid::Duplicate(s.nqn.to_string()));
    }
}
