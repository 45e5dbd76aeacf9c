//! The session stream's envelopes: `v1::GatewayMessage` and `v1::MonitorMessage` and what
//! they carry besides beacons and slices (`Hello`, `Ack`, `Shutdown`).
//!
//! Converting an envelope prefixes every error with the name of the `oneof` case
//! (`hello.gateway_id ...`, `beacon.subsystems[0].nqn ...`), so the one conversion the
//! services call per message already names the full path.

use std::time::Duration;

use super::required;
use crate::domain::{
    Ack, Epoch, Field, FieldError, GatewayMessage, GatewayReport, GroupKey, Hello, Invalid,
    MapSlice, MonitorMessage, ShutdownKind,
};
use crate::v1;
use crate::v1::gateway_message::Body as GatewayBody;
use crate::v1::monitor_message::Body as MonitorBody;

impl TryFrom<v1::Hello> for Hello {
    type Error = FieldError;

    fn try_from(wire: v1::Hello) -> Result<Self, FieldError> {
        let gateway = wire.gateway_id.try_into().field("gateway_id")?;
        let key = GroupKey::try_from(required(wire.key, "key")?).map_err(|e| e.within("key"))?;
        Hello::check_software_version(&wire.software_version).field("software_version")?;
        if wire.incarnation == 0 {
            return Err(FieldError::new("incarnation", Invalid::Zero));
        }
        Ok(Hello {
            gateway,
            key,
            software_version: wire.software_version,
            incarnation: wire.incarnation,
        })
    }
}

impl From<Hello> for v1::Hello {
    fn from(h: Hello) -> Self {
        v1::Hello {
            gateway_id: h.gateway.into(),
            key: Some(h.key.into()),
            software_version: h.software_version,
            incarnation: h.incarnation,
        }
    }
}

impl TryFrom<v1::GatewayMessage> for GatewayMessage {
    type Error = FieldError;

    fn try_from(wire: v1::GatewayMessage) -> Result<Self, FieldError> {
        match required(wire.body, "body")? {
            GatewayBody::Hello(h) => Hello::try_from(h)
                .map(GatewayMessage::Hello)
                .map_err(|e| e.within("hello")),
            GatewayBody::Beacon(b) => {
                let incarnation = b.incarnation;
                let subsystems_unchanged = b.subsystems_unchanged;
                if subsystems_unchanged && !b.subsystems.is_empty() {
                    return Err(FieldError::new(
                        "subsystems",
                        Invalid::NotAllowed("listed in a beacon that sets subsystems_unchanged"),
                    )
                    .within("beacon"));
                }
                GatewayReport::try_from(b)
                    .map(|report| GatewayMessage::Beacon {
                        incarnation,
                        report,
                        subsystems_unchanged,
                    })
                    .map_err(|e| e.within("beacon"))
            }
        }
    }
}

impl From<GatewayMessage> for v1::GatewayMessage {
    fn from(m: GatewayMessage) -> Self {
        match m {
            GatewayMessage::Hello(h) => v1::Hello::from(h).into(),
            GatewayMessage::Beacon {
                incarnation,
                report,
                subsystems_unchanged,
            } => v1::Beacon {
                incarnation,
                subsystems_unchanged,
                ..v1::Beacon::from(report)
            }
            .into(),
        }
    }
}

impl From<v1::Hello> for v1::GatewayMessage {
    fn from(h: v1::Hello) -> Self {
        v1::GatewayMessage {
            body: Some(GatewayBody::Hello(h)),
        }
    }
}

impl From<v1::Beacon> for v1::GatewayMessage {
    fn from(b: v1::Beacon) -> Self {
        v1::GatewayMessage {
            body: Some(GatewayBody::Beacon(b)),
        }
    }
}

impl TryFrom<v1::Ack> for Ack {
    type Error = FieldError;

    fn try_from(wire: v1::Ack) -> Result<Self, FieldError> {
        if wire.lease_ms == 0 {
            return Err(FieldError::new("lease_ms", Invalid::Zero));
        }
        Ok(Ack {
            seq: wire.seq,
            epoch: Epoch(wire.epoch),
            map_epoch: Epoch(wire.map_epoch),
            lease: Duration::from_millis(wire.lease_ms),
            unchanged_subsystems_accepted: wire.unchanged_subsystems_accepted,
        })
    }
}

impl From<Ack> for v1::Ack {
    /// The lease is rounded *up* to whole milliseconds, so that a non-zero lease never
    /// travels as the invalid 0.
    fn from(a: Ack) -> Self {
        let millis =
            a.lease.as_millis() + u128::from(!a.lease.subsec_nanos().is_multiple_of(1_000_000));
        v1::Ack {
            seq: a.seq,
            epoch: a.epoch.0,
            map_epoch: a.map_epoch.0,
            lease_ms: u64::try_from(millis).unwrap_or(u64::MAX),
            unchanged_subsystems_accepted: a.unchanged_subsystems_accepted,
        }
    }
}

/// Check a shutdown reason: it is only logged, so any text is fine, but bounded.
fn shutdown_reason(wire: v1::Shutdown) -> Result<String, FieldError> {
    let len = wire.reason.len();
    if len > MonitorMessage::MAX_REASON_LEN {
        return Err(FieldError::new(
            "reason",
            Invalid::TooLong {
                len,
                max: MonitorMessage::MAX_REASON_LEN,
            },
        ));
    }
    Ok(wire.reason)
}

impl TryFrom<v1::MonitorMessage> for MonitorMessage {
    type Error = FieldError;

    fn try_from(wire: v1::MonitorMessage) -> Result<Self, FieldError> {
        match required(wire.body, "body")? {
            MonitorBody::Ack(a) => Ack::try_from(a)
                .map(MonitorMessage::Ack)
                .map_err(|e| e.within("ack")),
            MonitorBody::MapSlice(s) => MapSlice::try_from(s)
                .map(MonitorMessage::MapSlice)
                .map_err(|e| e.within("map_slice")),
            MonitorBody::Shutdown(s) => {
                let kind = match v1::ShutdownKind::try_from(s.kind) {
                    Ok(v1::ShutdownKind::DeclaredFailed) => ShutdownKind::DeclaredFailed,
                    Ok(v1::ShutdownKind::Deleted) => ShutdownKind::Deleted,
                    // Older monitors send no kind: stopping for good is the safe reading.
                    _ => ShutdownKind::Removed,
                };
                shutdown_reason(s)
                    .map(|reason| MonitorMessage::Shutdown { kind, reason })
                    .map_err(|e| e.within("shutdown"))
            }
        }
    }
}

impl From<MonitorMessage> for v1::MonitorMessage {
    fn from(m: MonitorMessage) -> Self {
        match m {
            MonitorMessage::Ack(a) => v1::Ack::from(a).into(),
            MonitorMessage::MapSlice(s) => v1::MapSlice::from(s).into(),
            MonitorMessage::Shutdown { kind, reason } => v1::Shutdown {
                reason,
                kind: match kind {
                    ShutdownKind::DeclaredFailed => v1::ShutdownKind::DeclaredFailed,
                    ShutdownKind::Deleted => v1::ShutdownKind::Deleted,
                    ShutdownKind::Removed => v1::ShutdownKind::Removed,
                }
                .into(),
            }
            .into(),
        }
    }
}

impl From<v1::Ack> for v1::MonitorMessage {
    fn from(a: v1::Ack) -> Self {
        v1::MonitorMessage {
            body: Some(MonitorBody::Ack(a)),
        }
    }
}

impl From<v1::MapSlice> for v1::MonitorMessage {
    fn from(s: v1::MapSlice) -> Self {
        v1::MonitorMessage {
            body: Some(MonitorBody::MapSlice(s)),
        }
    }
}

impl From<v1::Shutdown> for v1::MonitorMessage {
    fn from(s: v1::Shutdown) -> Self {
        v1::MonitorMessage {
            body: Some(MonitorBody::Shutdown(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> v1::Hello {
        v1::Hello {
            gateway_id: "client.nvmeof.rbd.gw1".into(),
            key: Some(v1::GroupKey {
                pool: "rbd".into(),
                group: "grp1".into(),
            }),
            software_version: "1.4.0".into(),
            incarnation: 7,
        }
    }

    fn refusal(wire: impl Into<v1::GatewayMessage>) -> String {
        GatewayMessage::try_from(wire.into())
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn a_valid_hello_converts_and_round_trips() {
        let msg = GatewayMessage::try_from(v1::GatewayMessage::from(hello())).expect("valid");
        let GatewayMessage::Hello(h) = &msg else {
            panic!("expected a hello, got {msg:?}");
        };
        assert_eq!(h.gateway.as_str(), "client.nvmeof.rbd.gw1");
        assert_eq!(h.key.to_string(), "rbd/grp1");
        assert_eq!(h.software_version, "1.4.0");
        assert_eq!(v1::GatewayMessage::from(msg), hello().into());
    }

    #[test]
    fn hello_errors_carry_the_hello_prefix() {
        let mut h = hello();
        h.gateway_id = "gw 1".into();
        assert_eq!(
            refusal(h),
            "hello.gateway_id has the character ' ' at byte 2; \
             allowed: ASCII letters, digits and . _ - : @, not starting with '-'"
        );

        let mut h = hello();
        h.key = None;
        assert_eq!(refusal(h), "hello.key is missing");

        let mut h = hello();
        if let Some(k) = h.key.as_mut() {
            k.pool.clear();
        }
        assert_eq!(refusal(h), "hello.key.pool must not be empty");

        let mut h = hello();
        h.software_version = "x".repeat(65);
        assert_eq!(
            refusal(h),
            "hello.software_version has length 65, more than the 64 allowed"
        );

        let mut h = hello();
        h.software_version = "1.0\t".into();
        let err = GatewayMessage::try_from(v1::GatewayMessage::from(h)).unwrap_err();
        assert_eq!(err.field, "hello.software_version");
        assert!(matches!(
            err.reason,
            Invalid::BadChar {
                ch: '\t',
                pos: 3,
                ..
            }
        ));
    }

    #[test]
    fn beacon_errors_carry_the_beacon_prefix() {
        let beacon = v1::Beacon {
            availability: v1::Availability::Starting.into(),
            subsystems: vec![v1::Subsystem {
                nqn: "nqn.2016-06.io.spdk:a b".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = GatewayMessage::try_from(v1::GatewayMessage::from(beacon)).unwrap_err();
        assert_eq!(err.field, "beacon.subsystems[0].nqn");
        assert!(matches!(err.reason, Invalid::BadChar { ch: ' ', .. }));
    }

    #[test]
    fn a_beacon_that_keeps_its_subsystems_lists_none() {
        let unchanged = v1::Beacon {
            availability: v1::Availability::Available.into(),
            incarnation: 7,
            subsystems_unchanged: true,
            ..Default::default()
        };
        let msg =
            GatewayMessage::try_from(v1::GatewayMessage::from(unchanged.clone())).expect("valid");
        assert!(matches!(
            &msg,
            GatewayMessage::Beacon {
                incarnation: 7,
                subsystems_unchanged: true,
                report,
            } if report.subsystems.is_empty()
        ));
        assert_eq!(
            v1::GatewayMessage::from(msg),
            v1::GatewayMessage::from(unchanged.clone())
        );

        let both = v1::Beacon {
            subsystems: vec![v1::Subsystem {
                nqn: "nqn.2016-06.io.spdk:cnode1".into(),
                ..Default::default()
            }],
            ..unchanged
        };
        assert_eq!(
            refusal(both),
            "beacon.subsystems must not be listed in a beacon that sets subsystems_unchanged"
        );
    }

    #[test]
    fn an_empty_envelope_is_refused() {
        assert_eq!(
            refusal(v1::GatewayMessage { body: None }),
            "body is missing"
        );
        let err = MonitorMessage::try_from(v1::MonitorMessage { body: None }).unwrap_err();
        assert_eq!(err.to_string(), "body is missing");
    }

    #[test]
    fn acks_round_trip_and_a_zero_lease_is_refused() {
        let ack = Ack {
            seq: 5,
            epoch: Epoch(9),
            map_epoch: Epoch(40),
            lease: Duration::from_millis(4000),
            unchanged_subsystems_accepted: true,
        };
        let wire = v1::MonitorMessage::from(MonitorMessage::Ack(ack));
        assert_eq!(
            wire,
            v1::Ack {
                seq: 5,
                epoch: 9,
                map_epoch: 40,
                lease_ms: 4000,
                unchanged_subsystems_accepted: true,
            }
            .into()
        );
        assert_eq!(MonitorMessage::try_from(wire), Ok(MonitorMessage::Ack(ack)));

        let err =
            MonitorMessage::try_from(v1::MonitorMessage::from(v1::Ack::default())).unwrap_err();
        assert_eq!(err.to_string(), "ack.lease_ms must not be zero");
    }

    #[test]
    fn sub_millisecond_leases_round_up_never_to_zero() {
        let ack = |lease| Ack {
            seq: 0,
            epoch: Epoch::ZERO,
            map_epoch: Epoch::ZERO,
            lease,
            unchanged_subsystems_accepted: false,
        };
        assert_eq!(v1::Ack::from(ack(Duration::from_micros(1))).lease_ms, 1);
        assert_eq!(v1::Ack::from(ack(Duration::from_micros(1500))).lease_ms, 2);
        assert_eq!(v1::Ack::from(ack(Duration::MAX)).lease_ms, u64::MAX);
    }

    #[test]
    fn shutdowns_round_trip_and_long_reasons_are_refused() {
        let msg = MonitorMessage::Shutdown {
            kind: ShutdownKind::Deleted,
            reason: "gateway deleted".into(),
        };
        let wire = v1::MonitorMessage::from(msg.clone());
        assert_eq!(MonitorMessage::try_from(wire), Ok(msg));

        // An older monitor names no kind: the gateway stops for good.
        let wire = v1::MonitorMessage::from(v1::Shutdown {
            reason: "bye".into(),
            kind: 0,
        });
        assert_eq!(
            MonitorMessage::try_from(wire),
            Ok(MonitorMessage::Shutdown {
                kind: ShutdownKind::Removed,
                reason: "bye".into()
            })
        );

        let wire = v1::MonitorMessage::from(v1::Shutdown {
            reason: "x".repeat(1025),
            kind: 1,
        });
        let err = MonitorMessage::try_from(wire).unwrap_err();
        assert_eq!(err.field, "shutdown.reason");
        assert_eq!(
            err.reason,
            Invalid::TooLong {
                len: 1025,
                max: 1024
            }
        );
    }

    #[test]
    fn slice_errors_carry_the_map_slice_prefix() {
        let wire = v1::MonitorMessage::from(v1::MapSlice {
            ana_group: 1,
            availability: 77,
            ..Default::default()
        });
        let err = MonitorMessage::try_from(wire).unwrap_err();
        assert_eq!(err.field, "map_slice.availability");
        assert_eq!(err.reason, Invalid::UnknownEnum(77));
    }
}
