//! A gateway's beacon: `v1::Beacon` and its parts <-> [`GatewayReport`] and its parts.

use std::collections::HashSet;
use std::net::IpAddr;

use super::{
    at, bounded, echo, known_enum, MAX_LISTENERS, MAX_NAMESPACES, MAX_REPORT_LISTENERS,
    MAX_REPORT_NAMESPACES, MAX_SUBSYSTEMS,
};
use crate::domain::{
    AnaGroupId, Epoch, Field, FieldError, GatewayReport, Invalid, Listener, Namespace, Nonce, Nqn,
    ReportedAvailability, Subsystem,
};
use crate::v1;

/// Parse a listener port: protobuf carries it in 32 bits, TCP has 16, and port 0 cannot be
/// connected to.
fn port(raw: u32) -> Result<u16, Invalid> {
    match u16::try_from(raw) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Invalid::OutOfRange {
            value: raw.into(),
            min: 1,
            max: u16::MAX.into(),
        }),
    }
}

impl TryFrom<v1::Listener> for Listener {
    type Error = FieldError;

    fn try_from(wire: v1::Listener) -> Result<Self, FieldError> {
        let address: IpAddr = wire
            .address
            .parse()
            .map_err(|_| Invalid::Address(echo(&wire.address)))
            .field("address")?;
        Ok(Listener {
            address,
            port: port(wire.port).field("port")?,
        })
    }
}

impl From<Listener> for v1::Listener {
    fn from(l: Listener) -> Self {
        v1::Listener {
            address: l.address.to_string(),
            port: l.port.into(),
        }
    }
}

impl TryFrom<v1::Namespace> for Namespace {
    type Error = FieldError;

    fn try_from(wire: v1::Namespace) -> Result<Self, FieldError> {
        let nsid = Namespace::check_nsid(wire.nsid).field("nsid")?;
        let ana_group = AnaGroupId::new(wire.ana_group).field("ana_group")?;
        // Proto3 cannot tell an unset string from an empty one, so "" is "no nonce".
        let nonce = if wire.nonce.is_empty() {
            None
        } else {
            Some(Nonce::try_from(wire.nonce).field("nonce")?)
        };
        Ok(Namespace {
            nsid,
            ana_group,
            nonce,
        })
    }
}

impl From<Namespace> for v1::Namespace {
    fn from(ns: Namespace) -> Self {
        v1::Namespace {
            nsid: ns.nsid,
            ana_group: ns.ana_group.get(),
            nonce: ns.nonce.map(String::from).unwrap_or_default(),
        }
    }
}

impl TryFrom<v1::Subsystem> for Subsystem {
    type Error = FieldError;

    /// Refuses a listener or a namespace id listed twice: the map engine counts and compares
    /// them, and a duplicate would make two reports of the same state look different.
    fn try_from(wire: v1::Subsystem) -> Result<Self, FieldError> {
        let nqn = Nqn::try_from(wire.nqn).field("nqn")?;

        bounded(&wire.listeners, MAX_LISTENERS, "listeners")?;
        let mut listeners = Vec::with_capacity(wire.listeners.len());
        let mut seen_listeners = HashSet::with_capacity(wire.listeners.len());
        for (i, l) in wire.listeners.into_iter().enumerate() {
            let l = Listener::try_from(l).map_err(|e| e.within(at("listeners", i)))?;
            if !seen_listeners.insert(l.clone()) {
                return Err(FieldError::new(
                    at("listeners", i),
                    Invalid::Duplicate(l.to_string()),
                ));
            }
            listeners.push(l);
        }

        bounded(&wire.namespaces, MAX_NAMESPACES, "namespaces")?;
        let mut namespaces = Vec::with_capacity(wire.namespaces.len());
        let mut seen_nsids = HashSet::with_capacity(wire.namespaces.len());
        for (i, ns) in wire.namespaces.into_iter().enumerate() {
            let ns = Namespace::try_from(ns).map_err(|e| e.within(at("namespaces", i)))?;
            if !seen_nsids.insert(ns.nsid) {
                return Err(FieldError::new(
                    format!("{}.nsid", at("namespaces", i)),
                    Invalid::Duplicate(ns.nsid.to_string()),
                ));
            }
            namespaces.push(ns);
        }

        Ok(Subsystem {
            nqn,
            listeners,
            namespaces,
        })
    }
}

impl From<Subsystem> for v1::Subsystem {
    fn from(s: Subsystem) -> Self {
        v1::Subsystem {
            nqn: s.nqn.into(),
            listeners: s.listeners.into_iter().map(Into::into).collect(),
            namespaces: s.namespaces.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<v1::Availability> for ReportedAvailability {
    type Error = Invalid;

    fn try_from(wire: v1::Availability) -> Result<Self, Invalid> {
        match wire {
            v1::Availability::Unspecified => Err(Invalid::Unspecified),
            v1::Availability::Starting => Ok(ReportedAvailability::Starting),
            v1::Availability::Available => Ok(ReportedAvailability::Available),
            v1::Availability::Unavailable => Ok(ReportedAvailability::Unavailable),
        }
    }
}

impl From<ReportedAvailability> for v1::Availability {
    fn from(a: ReportedAvailability) -> Self {
        match a {
            ReportedAvailability::Starting => v1::Availability::Starting,
            ReportedAvailability::Available => v1::Availability::Available,
            ReportedAvailability::Unavailable => v1::Availability::Unavailable,
        }
    }
}

/// Parse the raw `availability` field of a beacon.
fn availability(raw: i32) -> Result<ReportedAvailability, Invalid> {
    known_enum::<v1::Availability>(raw)?.try_into()
}

/// Refuse subsystems whose `count`ed entries exceed `max` in all, before converting any.
fn in_all(
    subsystems: &[v1::Subsystem],
    count: impl Fn(&v1::Subsystem) -> usize,
    what: &'static str,
    max: usize,
) -> Result<(), FieldError> {
    let total = subsystems
        .iter()
        .map(count)
        .fold(0usize, usize::saturating_add);
    if total > max {
        return Err(FieldError::new(
            "subsystems",
            Invalid::TooMany {
                what,
                count: total,
                max,
            },
        ));
    }
    Ok(())
}

impl TryFrom<v1::Beacon> for GatewayReport {
    type Error = FieldError;

    /// Refuses an NQN listed twice: a gateway serves each subsystem once, and the map keys
    /// what it reports by NQN. The result is canonical ([`GatewayReport::canonicalize`]);
    /// error paths index the lists as the sender ordered them.
    fn try_from(wire: v1::Beacon) -> Result<Self, FieldError> {
        let availability = availability(wire.availability).field("availability")?;

        bounded(&wire.subsystems, MAX_SUBSYSTEMS, "subsystems")?;
        in_all(
            &wire.subsystems,
            |s| s.listeners.len(),
            "listeners",
            MAX_REPORT_LISTENERS,
        )?;
        in_all(
            &wire.subsystems,
            |s| s.namespaces.len(),
            "namespaces",
            MAX_REPORT_NAMESPACES,
        )?;
        let mut subsystems = Vec::with_capacity(wire.subsystems.len());
        let mut seen = HashSet::with_capacity(wire.subsystems.len());
        for (i, s) in wire.subsystems.into_iter().enumerate() {
            let s = Subsystem::try_from(s).map_err(|e| e.within(at("subsystems", i)))?;
            if !seen.insert(s.nqn.clone()) {
                return Err(FieldError::new(
                    format!("{}.nqn", at("subsystems", i)),
                    Invalid::Duplicate(s.nqn.to_string()),
                ));
            }
            subsystems.push(s);
        }

        let mut report = GatewayReport {
            seq: wire.seq,
            availability,
            subsystems,
            applied_epoch: Epoch(wire.applied_epoch),
            fence_epoch: Epoch(wire.fence_epoch),
        };
        report.canonicalize();
        Ok(report)
    }
}

impl From<GatewayReport> for v1::Beacon {
    fn from(r: GatewayReport) -> Self {
        v1::Beacon {
            seq: r.seq,
            availability: v1::Availability::from(r.availability).into(),
            subsystems: r.subsystems.into_iter().map(Into::into).collect(),
            applied_epoch: r.applied_epoch.0,
            fence_epoch: r.fence_epoch.0,
            // Not part of the report: the session envelope sets them.
            incarnation: 0,
            subsystems_unchanged: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

    fn listener(address: &str, port: u32) -> v1::Listener {
        v1::Listener {
            address: address.into(),
            port,
        }
    }

    fn namespace(nsid: u32, ana_group: u32, nonce: &str) -> v1::Namespace {
        v1::Namespace {
            nsid,
            ana_group,
            nonce: nonce.into(),
        }
    }

    fn subsystem(nqn: &str) -> v1::Subsystem {
        v1::Subsystem {
            nqn: nqn.into(),
            listeners: vec![listener("10.0.0.1", 4420)],
            namespaces: vec![namespace(1, 1, "10.0.0.1:0/42")],
        }
    }

    fn beacon(subsystems: Vec<v1::Subsystem>) -> v1::Beacon {
        v1::Beacon {
            seq: 7,
            availability: v1::Availability::Available.into(),
            subsystems,
            applied_epoch: 3,
            fence_epoch: 2,
            incarnation: 0,
            subsystems_unchanged: false,
        }
    }

    /// The refusal of `wire` as `(path, reason)`.
    fn refusal(wire: v1::Beacon) -> (String, Invalid) {
        let err = GatewayReport::try_from(wire).expect_err("must be refused");
        (err.field, err.reason)
    }

    #[test]
    fn a_valid_beacon_converts_field_by_field() {
        let report = GatewayReport::try_from(beacon(vec![subsystem(NQN)])).expect("valid");
        assert_eq!(report.seq, 7);
        assert_eq!(report.availability, ReportedAvailability::Available);
        assert_eq!(report.applied_epoch, Epoch(3));
        assert_eq!(report.fence_epoch, Epoch(2));
        let s = &report.subsystems[0];
        assert_eq!(s.nqn.as_str(), NQN);
        assert_eq!(s.listeners[0].to_string(), "10.0.0.1:4420");
        assert_eq!(s.namespaces[0].nsid, 1);
        assert_eq!(s.namespaces[0].ana_group.get(), 1);
        assert_eq!(
            s.namespaces[0].nonce.as_ref().map(Nonce::as_str),
            Some("10.0.0.1:0/42")
        );
        assert_eq!(v1::Beacon::from(report), beacon(vec![subsystem(NQN)]));
    }

    #[test]
    fn equal_nonces_of_a_report_are_one_shared_value() {
        let sub = |nqn: &str, nonces: &[&str]| v1::Subsystem {
            nqn: nqn.into(),
            listeners: vec![listener("10.0.0.1", 4420)],
            namespaces: nonces
                .iter()
                .enumerate()
                .map(|(i, n)| namespace(i as u32 + 1, 1, n))
                .collect(),
        };
        let report = GatewayReport::try_from(beacon(vec![
            sub(
                "nqn.2016-06.io.spdk:a",
                &["client.1", "client.1", "client.2"],
            ),
            sub("nqn.2016-06.io.spdk:b", &["client.2", ""]),
        ]))
        .expect("valid");
        let nonce = |s: usize, n: usize| {
            report.subsystems[s].namespaces[n]
                .nonce
                .clone()
                .expect("a nonce")
        };
        assert!(nonce(0, 0).is_shared_with(&nonce(0, 1)));
        assert!(nonce(0, 2).is_shared_with(&nonce(1, 0)));
        assert!(!nonce(0, 1).is_shared_with(&nonce(0, 2)));
        assert_eq!(nonce(1, 0).as_str(), "client.2");
        assert_eq!(report.subsystems[1].namespaces[1].nonce, None);
    }

    #[test]
    fn an_empty_nonce_means_none_and_goes_back_empty() {
        let ns = Namespace::try_from(namespace(4, 2, "")).expect("valid");
        assert_eq!(ns.nonce, None);
        assert_eq!(v1::Namespace::from(ns), namespace(4, 2, ""));
    }

    #[test]
    fn a_zero_ana_group_deep_in_the_beacon_is_named_by_its_path() {
        let mut bad = subsystem("nqn.2016-06.io.spdk:cnode3");
        bad.namespaces.push(namespace(2, 0, ""));
        let wire = beacon(vec![
            subsystem("nqn.2016-06.io.spdk:cnode1"),
            subsystem("nqn.2016-06.io.spdk:cnode2"),
            bad,
        ]);
        let err = GatewayReport::try_from(wire).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subsystems[2].namespaces[1].ana_group must not be zero"
        );
    }

    #[test]
    fn availability_must_be_known_and_specified() {
        let mut wire = beacon(vec![]);
        wire.availability = 0;
        assert_eq!(
            refusal(wire.clone()),
            ("availability".into(), Invalid::Unspecified)
        );
        wire.availability = 9;
        assert_eq!(
            refusal(wire),
            ("availability".into(), Invalid::UnknownEnum(9))
        );
        for (raw, want) in [
            (1, ReportedAvailability::Starting),
            (2, ReportedAvailability::Available),
            (3, ReportedAvailability::Unavailable),
        ] {
            assert_eq!(availability(raw), Ok(want));
        }
    }

    #[test]
    fn listener_errors_name_the_listener() {
        let mut s = subsystem(NQN);
        s.listeners.push(listener("10.0.0.1", 70000));
        assert_eq!(
            refusal(beacon(vec![s])),
            (
                "subsystems[0].listeners[1].port".into(),
                Invalid::OutOfRange {
                    value: 70000,
                    min: 1,
                    max: 65535
                }
            )
        );

        let mut s = subsystem(NQN);
        s.listeners[0].port = 0;
        assert!(matches!(
            refusal(beacon(vec![s])),
            (f, Invalid::OutOfRange { value: 0, .. }) if f == "subsystems[0].listeners[0].port"
        ));

        let mut s = subsystem(NQN);
        s.listeners[0].address = "10.0.0.256".into();
        assert_eq!(
            refusal(beacon(vec![s])),
            (
                "subsystems[0].listeners[0].address".into(),
                Invalid::Address("10.0.0.256".into())
            )
        );
    }

    #[test]
    fn addresses_are_plain_ips_and_v6_is_accepted() {
        for good in ["fd00::5", "::1", "192.168.1.10"] {
            assert!(Listener::try_from(listener(good, 4420)).is_ok(), "{good}");
        }
        for bad in [
            "",
            "[fd00::5]",
            "fe80::1%eth0",
            "host.example",
            "10.0.0.1:4420",
        ] {
            let err = Listener::try_from(listener(bad, 4420)).unwrap_err();
            assert_eq!(err.field, "address", "{bad}");
            assert_eq!(err.reason, Invalid::Address(bad.into()), "{bad}");
        }
        let v6 = Listener::try_from(listener("fd00:0:0::5", 4420)).expect("valid");
        assert_eq!(v1::Listener::from(v6).address, "fd00::5");
    }

    #[test]
    fn a_huge_bad_address_is_echoed_only_in_part() {
        let err = Listener::try_from(listener(&"x".repeat(10_000), 1)).unwrap_err();
        assert_eq!(
            err.reason,
            Invalid::Address(format!("{}...", "x".repeat(64)))
        );
    }

    #[test]
    fn a_duplicate_listener_is_refused() {
        let mut s = subsystem(NQN);
        s.listeners.push(listener("10.0.0.2", 4420));
        s.listeners.push(listener("10.0.0.1", 4420));
        assert_eq!(
            refusal(beacon(vec![s])),
            (
                "subsystems[0].listeners[2]".into(),
                Invalid::Duplicate("10.0.0.1:4420".into())
            )
        );
    }

    #[test]
    fn namespace_errors_name_the_namespace() {
        let cases = [
            (namespace(0, 1, ""), "nsid", Invalid::Zero),
            (
                namespace(u32::MAX, 1, ""),
                "nsid",
                Invalid::OutOfRange {
                    value: u32::MAX.into(),
                    min: 1,
                    max: 0xFFFF_FFFE,
                },
            ),
            (
                namespace(1, 129, ""),
                "ana_group",
                Invalid::OutOfRange {
                    value: 129,
                    min: 1,
                    max: 128,
                },
            ),
            (
                namespace(1, 1, "a b"),
                "nonce",
                Invalid::BadChar {
                    ch: ' ',
                    pos: 1,
                    allowed: "printable ASCII without spaces",
                },
            ),
        ];
        for (ns, field, reason) in cases {
            let mut s = subsystem(NQN);
            s.namespaces = vec![namespace(9, 1, ""), ns];
            assert_eq!(
                refusal(beacon(vec![s])),
                (format!("subsystems[0].namespaces[1].{field}"), reason)
            );
        }
    }

    #[test]
    fn a_duplicate_nsid_is_refused() {
        let mut s = subsystem(NQN);
        s.namespaces.push(namespace(1, 2, ""));
        assert_eq!(
            refusal(beacon(vec![s])),
            (
                "subsystems[0].namespaces[1].nsid".into(),
                Invalid::Duplicate("1".into())
            )
        );
    }

    #[test]
    fn a_bad_or_duplicate_nqn_is_named() {
        let err = GatewayReport::try_from(beacon(vec![
            subsystem(NQN),
            subsystem("iqn.2016-06.io.spdk:x"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "subsystems[1].nqn is not a valid NQN (must start with \"nqn.\")"
        );

        assert_eq!(
            refusal(beacon(vec![
                subsystem(NQN),
                subsystem("nqn.2016-06.io.spdk:other"),
                subsystem(NQN),
            ])),
            ("subsystems[2].nqn".into(), Invalid::Duplicate(NQN.into()))
        );
    }

    #[test]
    fn list_lengths_are_bounded() {
        let many: Vec<v1::Subsystem> = (0..=MAX_SUBSYSTEMS)
            .map(|i| subsystem(&format!("nqn.2016-06.io.spdk:c{i}")))
            .collect();
        assert_eq!(
            refusal(beacon(many)),
            (
                "subsystems".into(),
                Invalid::TooLong {
                    len: MAX_SUBSYSTEMS + 1,
                    max: MAX_SUBSYSTEMS
                }
            )
        );
        let at_limit: Vec<v1::Subsystem> = (0..MAX_SUBSYSTEMS)
            .map(|i| subsystem(&format!("nqn.2016-06.io.spdk:c{i}")))
            .collect();
        assert!(GatewayReport::try_from(beacon(at_limit)).is_ok());

        let mut s = subsystem(NQN);
        s.listeners = (0..=MAX_LISTENERS)
            .map(|i| listener("10.0.0.1", 1000 + i as u32))
            .collect();
        assert_eq!(
            refusal(beacon(vec![s])),
            (
                "subsystems[0].listeners".into(),
                Invalid::TooLong {
                    len: MAX_LISTENERS + 1,
                    max: MAX_LISTENERS
                }
            )
        );

        let mut s = subsystem(NQN);
        s.namespaces = (1..=MAX_NAMESPACES as u32 + 1)
            .map(|n| namespace(n, 1, ""))
            .collect();
        let err = GatewayReport::try_from(beacon(vec![s])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subsystems[0].namespaces has length 4097, more than the 4096 allowed"
        );
    }

    #[test]
    fn what_one_beacon_carries_in_all_is_bounded() {
        // Five subsystems of 4,000 namespaces each: every list within its own cap, 20,000
        // namespaces in all.
        let full = |i: u32, per: u32| {
            let mut s = subsystem(&format!("nqn.2016-06.io.spdk:c{i}"));
            s.namespaces = (1..=per).map(|n| namespace(n, 1, "")).collect();
            s
        };
        let err =
            GatewayReport::try_from(beacon((0..5).map(|i| full(i, 4000)).collect())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subsystems carry 20000 namespaces in all, more than the 8192 allowed"
        );
        let at_limit = (0..2).map(|i| full(i, 4096)).collect();
        assert!(GatewayReport::try_from(beacon(at_limit)).is_ok());

        let wide = |i: u32| {
            let mut s = subsystem(&format!("nqn.2016-06.io.spdk:c{i}"));
            s.listeners = (0..MAX_LISTENERS as u32)
                .map(|p| listener("10.0.0.1", 1000 + p))
                .collect();
            s
        };
        let per = MAX_LISTENERS;
        let n = MAX_REPORT_LISTENERS / per;
        assert!(GatewayReport::try_from(beacon((0..n as u32).map(wide).collect())).is_ok());
        assert_eq!(
            refusal(beacon((0..=n as u32).map(wide).collect())),
            (
                "subsystems".into(),
                Invalid::TooMany {
                    what: "listeners",
                    count: (n + 1) * per,
                    max: MAX_REPORT_LISTENERS
                }
            )
        );
    }

    /// The largest beacon the bounds allow, every string at its longest, fits in one client
    /// message: a gateway is never refused for serving what the checks accept.
    #[test]
    fn a_beacon_at_every_bound_fits_in_a_client_message() {
        use prost::Message;

        let nqn = |i: usize| {
            let head = format!("nqn.2016-06.io.spdk:{i:06}");
            format!("{head}{}", "x".repeat(Nqn::MAX_LEN - head.len()))
        };
        let nonce = "n".repeat(Nonce::MAX_LEN);
        let per_subsystem_listeners = MAX_REPORT_LISTENERS / MAX_SUBSYSTEMS;
        let per_subsystem_namespaces = MAX_REPORT_NAMESPACES / MAX_SUBSYSTEMS;
        let subsystems: Vec<v1::Subsystem> = (0..MAX_SUBSYSTEMS)
            .map(|i| v1::Subsystem {
                nqn: nqn(i),
                listeners: (0..per_subsystem_listeners)
                    .map(|p| listener("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 60_000 + p as u32))
                    .collect(),
                namespaces: (0..per_subsystem_namespaces)
                    .map(|n| namespace(Namespace::MAX_NSID - n as u32, AnaGroupId::MAX, &nonce))
                    .collect(),
            })
            .collect();
        let mut b = beacon(subsystems);
        b.seq = u64::MAX;
        b.applied_epoch = u64::MAX;
        b.fence_epoch = u64::MAX;
        b.incarnation = u64::MAX;
        let wire = v1::GatewayMessage {
            body: Some(v1::gateway_message::Body::Beacon(b.clone())),
        };
        let len = wire.encoded_len();
        assert!(
            len < crate::MAX_CLIENT_MESSAGE_BYTES * 3 / 4,
            "{len} bytes leave too little room under the client limit"
        );
        assert!(GatewayReport::try_from(b).is_ok());
    }

    #[test]
    fn reports_come_out_canonical_whatever_the_order_sent() {
        let mut a = subsystem("nqn.2016-06.io.spdk:b");
        a.listeners = vec![listener("10.0.0.2", 4420), listener("10.0.0.1", 4421)];
        a.namespaces = vec![namespace(7, 1, ""), namespace(3, 2, "")];
        let z = subsystem("nqn.2016-06.io.spdk:a");
        let report = GatewayReport::try_from(beacon(vec![a.clone(), z.clone()])).expect("valid");

        let nqns: Vec<&str> = report.subsystems.iter().map(|s| s.nqn.as_str()).collect();
        assert_eq!(nqns, ["nqn.2016-06.io.spdk:a", "nqn.2016-06.io.spdk:b"]);
        let b = &report.subsystems[1];
        let listeners: Vec<String> = b.listeners.iter().map(ToString::to_string).collect();
        assert_eq!(listeners, ["10.0.0.1:4421", "10.0.0.2:4420"]);
        let nsids: Vec<u32> = b.namespaces.iter().map(|n| n.nsid).collect();
        assert_eq!(nsids, [3, 7]);

        a.listeners.reverse();
        a.namespaces.reverse();
        let again = GatewayReport::try_from(beacon(vec![z, a])).expect("valid");
        assert_eq!(report, again);
    }

    #[test]
    fn the_first_bad_field_in_declaration_order_is_reported() {
        let mut wire = beacon(vec![subsystem("bad")]);
        wire.availability = 0;
        assert_eq!(refusal(wire).0, "availability");
    }
}
