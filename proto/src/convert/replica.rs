//! The replica service's messages: `v1::Portal`, `v1::ReplicaSpec`, `v1::VolumeSpec`,
//! `v1::ReplicaStateReport` and the enums <-> their domain forms in
//! [`crate::domain::replica`], plus the list and identity helpers the service and its
//! clients share, so that both sides refuse the same inputs with the same field paths.

use std::collections::HashSet;
use std::net::IpAddr;

use super::{at, bounded, echo, known_enum};
use crate::domain::{
    Field, FieldError, HostId, HostIdentity, HostName, Invalid, Nqn, Portal, ReplicaId,
    ReplicaReport, ReplicaSpec, ReplicaState, Stage, Transport, Uuid, VolumeAlias, VolumeId,
    VolumeSpec,
};
use crate::v1;

/// At most this many volume ids in one heartbeat: far more volumes than one host attaches.
pub const MAX_HOST_VOLUMES: usize = 4096;

/// Parse a listener-style port: protobuf carries 32 bits, TCP has 16, and 0 cannot be
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

impl TryFrom<v1::Transport> for Transport {
    type Error = Invalid;
    fn try_from(wire: v1::Transport) -> Result<Self, Invalid> {
        match wire {
            v1::Transport::Unspecified => Err(Invalid::Unspecified),
            v1::Transport::Tcp => Ok(Transport::Tcp),
            v1::Transport::Rdma => Ok(Transport::Rdma),
        }
    }
}

impl From<Transport> for v1::Transport {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Tcp => v1::Transport::Tcp,
            Transport::Rdma => v1::Transport::Rdma,
        }
    }
}

impl TryFrom<v1::ReplicaState> for ReplicaState {
    type Error = Invalid;
    fn try_from(wire: v1::ReplicaState) -> Result<Self, Invalid> {
        match wire {
            v1::ReplicaState::Unspecified => Err(Invalid::Unspecified),
            v1::ReplicaState::Available => Ok(ReplicaState::Available),
            v1::ReplicaState::Synchronizing => Ok(ReplicaState::Synchronizing),
            v1::ReplicaState::Missing => Ok(ReplicaState::Missing),
            v1::ReplicaState::Faulty => Ok(ReplicaState::Faulty),
            v1::ReplicaState::Terminating => Ok(ReplicaState::Terminating),
        }
    }
}

impl From<ReplicaState> for v1::ReplicaState {
    fn from(s: ReplicaState) -> Self {
        match s {
            ReplicaState::Available => v1::ReplicaState::Available,
            ReplicaState::Synchronizing => v1::ReplicaState::Synchronizing,
            ReplicaState::Missing => v1::ReplicaState::Missing,
            ReplicaState::Faulty => v1::ReplicaState::Faulty,
            ReplicaState::Terminating => v1::ReplicaState::Terminating,
        }
    }
}

impl TryFrom<v1::ReplacementStage> for Stage {
    type Error = Invalid;
    fn try_from(wire: v1::ReplacementStage) -> Result<Self, Invalid> {
        match wire {
            v1::ReplacementStage::Unspecified => Err(Invalid::Unspecified),
            v1::ReplacementStage::Requested => Ok(Stage::Requested),
            v1::ReplacementStage::Supplied => Ok(Stage::Supplied),
            v1::ReplacementStage::Attached => Ok(Stage::Attached),
            v1::ReplacementStage::Synced => Ok(Stage::Synced),
            v1::ReplacementStage::Retired => Ok(Stage::Retired),
            v1::ReplacementStage::Done => Ok(Stage::Done),
            v1::ReplacementStage::Cancelled => Ok(Stage::Cancelled),
        }
    }
}

impl From<Stage> for v1::ReplacementStage {
    fn from(s: Stage) -> Self {
        match s {
            Stage::Requested => v1::ReplacementStage::Requested,
            Stage::Supplied => v1::ReplacementStage::Supplied,
            Stage::Attached => v1::ReplacementStage::Attached,
            Stage::Synced => v1::ReplacementStage::Synced,
            Stage::Retired => v1::ReplacementStage::Retired,
            Stage::Done => v1::ReplacementStage::Done,
            Stage::Cancelled => v1::ReplacementStage::Cancelled,
        }
    }
}

/// Parse the raw `state` field of a message.
pub fn replica_state(raw: i32) -> Result<ReplicaState, Invalid> {
    known_enum::<v1::ReplicaState>(raw)?.try_into()
}

/// Parse the raw `stage` (or `done`) field of a message.
pub fn stage(raw: i32) -> Result<Stage, Invalid> {
    known_enum::<v1::ReplacementStage>(raw)?.try_into()
}

/// Parse the raw `transport` field of a portal.
pub fn transport(raw: i32) -> Result<Transport, Invalid> {
    known_enum::<v1::Transport>(raw)?.try_into()
}

impl TryFrom<v1::Portal> for Portal {
    type Error = FieldError;

    fn try_from(wire: v1::Portal) -> Result<Self, FieldError> {
        let transport = transport(wire.transport).field("transport")?;
        let address: IpAddr = wire
            .address
            .parse()
            .map_err(|_| Invalid::Address(echo(&wire.address)))
            .field("address")?;
        Ok(Portal {
            transport,
            address,
            port: port(wire.port).field("port")?,
        })
    }
}

impl From<Portal> for v1::Portal {
    fn from(p: Portal) -> Self {
        v1::Portal {
            transport: v1::Transport::from(p.transport).into(),
            address: p.address.to_string(),
            port: p.port.into(),
        }
    }
}

impl TryFrom<v1::ReplicaSpec> for ReplicaSpec {
    type Error = FieldError;

    /// Refuses a replica without portals (a host could not reach it) and a portal listed
    /// twice; the portals come out sorted, so two specs of one replica compare equal.
    fn try_from(wire: v1::ReplicaSpec) -> Result<Self, FieldError> {
        let id = wire.replica_id.parse::<ReplicaId>().field("replica_id")?;
        let target_nqn = Nqn::try_from(wire.target_nqn).field("target_nqn")?;
        if wire.portals.is_empty() {
            return Err(FieldError::new("portals", Invalid::Empty));
        }
        bounded(&wire.portals, ReplicaSpec::MAX_PORTALS, "portals")?;
        let mut portals = Vec::with_capacity(wire.portals.len());
        let mut seen = HashSet::with_capacity(wire.portals.len());
        for (i, p) in wire.portals.into_iter().enumerate() {
            let p = Portal::try_from(p).map_err(|e| e.within(at("portals", i)))?;
            if !seen.insert(p.clone()) {
                return Err(FieldError::new(
                    at("portals", i),
                    Invalid::Duplicate(p.to_string()),
                ));
            }
            portals.push(p);
        }
        portals.sort();
        // Proto3 cannot tell unset from empty, so "" is "no namespace UUID".
        let namespace_uuid = if wire.namespace_uuid.is_empty() {
            None
        } else {
            Some(
                wire.namespace_uuid
                    .parse::<Uuid>()
                    .field("namespace_uuid")?,
            )
        };
        Ok(ReplicaSpec {
            id,
            target_nqn,
            portals,
            namespace_uuid,
        })
    }
}

impl From<ReplicaSpec> for v1::ReplicaSpec {
    fn from(r: ReplicaSpec) -> Self {
        v1::ReplicaSpec {
            replica_id: r.id.to_string(),
            target_nqn: r.target_nqn.into(),
            portals: r.portals.into_iter().map(Into::into).collect(),
            namespace_uuid: r.namespace_uuid.map(String::from).unwrap_or_default(),
        }
    }
}

impl TryFrom<v1::VolumeSpec> for VolumeSpec {
    type Error = FieldError;

    fn try_from(wire: v1::VolumeSpec) -> Result<Self, FieldError> {
        let capacity_bytes = match wire.capacity_bytes {
            0 => return Err(FieldError::new("capacity_bytes", Invalid::Zero)),
            n => n,
        };
        Ok(VolumeSpec {
            id: wire.volume_id.parse::<VolumeId>().field("volume_id")?,
            alias: VolumeAlias::try_from(wire.alias).field("alias")?,
            capacity_bytes,
            replica_count: VolumeSpec::check_replica_count(wire.replica_count)
                .field("replica_count")?,
            grace_period_ms: VolumeSpec::check_grace_ms(wire.grace_period_ms)
                .field("grace_period_ms")?,
        })
    }
}

impl From<VolumeSpec> for v1::VolumeSpec {
    fn from(v: VolumeSpec) -> Self {
        v1::VolumeSpec {
            volume_id: v.id.to_string(),
            alias: v.alias.into(),
            capacity_bytes: v.capacity_bytes,
            replica_count: v.replica_count,
            grace_period_ms: v.grace_period_ms,
        }
    }
}

impl TryFrom<v1::ReplicaStateReport> for ReplicaReport {
    type Error = FieldError;

    /// Refuses `TERMINATING`: only the registry retires a replica, a host cannot.
    fn try_from(wire: v1::ReplicaStateReport) -> Result<Self, FieldError> {
        let replica = wire.replica_id.parse::<ReplicaId>().field("replica_id")?;
        let state = replica_state(wire.state).field("state")?;
        if state == ReplicaState::Terminating {
            return Err(FieldError::new(
                "state",
                Invalid::NotAllowed("TERMINATING: only the monitors retire a replica"),
            ));
        }
        let sync_permille = wire
            .sync_permille
            .map(ReplicaReport::check_permille)
            .transpose()
            .field("sync_permille")?;
        Ok(ReplicaReport {
            replica,
            state,
            sync_permille,
        })
    }
}

impl From<ReplicaReport> for v1::ReplicaStateReport {
    fn from(r: ReplicaReport) -> Self {
        v1::ReplicaStateReport {
            replica_id: r.replica.to_string(),
            state: v1::ReplicaState::from(r.state).into(),
            sync_permille: r.sync_permille.map(u32::from),
        }
    }
}

/// The replicas of a volume as a backend lists them (`field` names the list): at least one,
/// at most `max`, each id at most once.
pub fn replica_specs(
    wire: Vec<v1::ReplicaSpec>,
    max: usize,
    field: &str,
) -> Result<Vec<ReplicaSpec>, FieldError> {
    if wire.is_empty() {
        return Err(FieldError::new(field, Invalid::Empty));
    }
    bounded(&wire, max, field)?;
    let mut out = Vec::with_capacity(wire.len());
    let mut seen = HashSet::with_capacity(wire.len());
    for (i, r) in wire.into_iter().enumerate() {
        let r = ReplicaSpec::try_from(r).map_err(|e| e.within(at(field, i)))?;
        if !seen.insert(r.id) {
            return Err(FieldError::new(
                format!("{}.replica_id", at(field, i)),
                Invalid::Duplicate(r.id.to_string()),
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// A host's replica reports (the `reports` field): at most
/// [`ReplicaReport::MAX_PER_REQUEST`], each replica at most once (two different states of one
/// replica in one report would make its outcome depend on their order).
pub fn replica_reports(
    wire: Vec<v1::ReplicaStateReport>,
) -> Result<Vec<ReplicaReport>, FieldError> {
    bounded(&wire, ReplicaReport::MAX_PER_REQUEST, "reports")?;
    let mut out = Vec::with_capacity(wire.len());
    let mut seen = HashSet::with_capacity(wire.len());
    for (i, r) in wire.into_iter().enumerate() {
        let r = ReplicaReport::try_from(r).map_err(|e| e.within(at("reports", i)))?;
        if !seen.insert(r.replica) {
            return Err(FieldError::new(
                format!("{}.replica_id", at("reports", i)),
                Invalid::Duplicate(r.replica.to_string()),
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// The volume ids of a heartbeat (`volume_ids`): bounded, no duplicates, sorted.
pub fn volume_ids(wire: Vec<String>) -> Result<Vec<VolumeId>, FieldError> {
    bounded(&wire, MAX_HOST_VOLUMES, "volume_ids")?;
    let mut out = Vec::with_capacity(wire.len());
    for (i, s) in wire.iter().enumerate() {
        out.push(s.parse::<VolumeId>().field(&at("volume_ids", i))?);
    }
    out.sort();
    if let Some(w) = out.windows(2).find(|w| w[0] == w[1]) {
        return Err(FieldError::new(
            "volume_ids",
            Invalid::Duplicate(w[0].to_string()),
        ));
    }
    Ok(out)
}

/// A host's identity from the `host_nqn`, `host_id` and `name` fields of a request. An
/// empty host id is "unknown".
pub fn host_identity(nqn: String, id: &str, name: String) -> Result<HostIdentity, FieldError> {
    Ok(HostIdentity {
        nqn: Nqn::try_from(nqn).field("host_nqn")?,
        id: if id.is_empty() {
            None
        } else {
            Some(id.parse::<HostId>().field("host_id")?)
        },
        name: HostName::try_from(name).field("name")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: &str = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
    const R2: &str = "0b5e4c1e-2c7a-4f2e-9a47-6a9d7f3d2c11";

    fn portal(addr: &str, port: u32) -> v1::Portal {
        v1::Portal {
            transport: v1::Transport::Tcp.into(),
            address: addr.into(),
            port,
        }
    }

    fn spec(id: &str) -> v1::ReplicaSpec {
        v1::ReplicaSpec {
            replica_id: id.into(),
            target_nqn: "nqn.2016-06.io.spdk:cnode1".into(),
            portals: vec![portal("10.0.0.2", 4420), portal("10.0.0.1", 4420)],
            namespace_uuid: String::new(),
        }
    }

    #[test]
    fn replica_specs_round_trip_with_sorted_portals() {
        let r = ReplicaSpec::try_from(spec(R1)).expect("valid");
        assert_eq!(r.portals[0].address.to_string(), "10.0.0.1");
        assert_eq!(r.namespace_uuid, None);
        let back = v1::ReplicaSpec::from(r.clone());
        assert_eq!(ReplicaSpec::try_from(back), Ok(r));
    }

    #[test]
    fn bad_replicas_are_named_by_path() {
        let mut s = spec(R1);
        s.portals[1].port = 0;
        let err = replica_specs(vec![spec(R2), s], 16, "replicas").unwrap_err();
        assert_eq!(err.field, "replicas[1].portals[1].port");

        let err = replica_specs(vec![spec(R1), spec(R1)], 16, "replicas").unwrap_err();
        assert_eq!(err.field, "replicas[1].replica_id");

        let mut s = spec(R1);
        s.portals.clear();
        assert_eq!(ReplicaSpec::try_from(s).unwrap_err().field, "portals");

        let mut s = spec(R1);
        s.portals[0].transport = 0;
        let err = ReplicaSpec::try_from(s).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.reason),
            ("portals[0].transport", Invalid::Unspecified)
        );

        assert!(replica_specs(Vec::new(), 16, "replicas").is_err());
    }

    #[test]
    fn hosts_cannot_report_terminating_or_a_replica_twice() {
        let report = |id: &str, state: v1::ReplicaState| v1::ReplicaStateReport {
            replica_id: id.into(),
            state: state.into(),
            sync_permille: None,
        };
        let err = replica_reports(vec![report(R1, v1::ReplicaState::Terminating)]).unwrap_err();
        assert_eq!(err.field, "reports[0].state");
        assert!(matches!(err.reason, Invalid::NotAllowed(_)));

        let err = replica_reports(vec![
            report(R1, v1::ReplicaState::Missing),
            report(R1, v1::ReplicaState::Available),
        ])
        .unwrap_err();
        assert_eq!(err.field, "reports[1].replica_id");

        let mut r = report(R1, v1::ReplicaState::Synchronizing);
        r.sync_permille = Some(1001);
        assert_eq!(
            ReplicaReport::try_from(r).unwrap_err().field,
            "sync_permille"
        );
        let ok = replica_reports(vec![report(R2, v1::ReplicaState::Faulty)]).expect("valid");
        assert_eq!(ok[0].state, ReplicaState::Faulty);
    }

    #[test]
    fn volume_specs_check_every_bound() {
        let good = v1::VolumeSpec {
            volume_id: R1.into(),
            alias: "vol1".into(),
            capacity_bytes: 1 << 30,
            replica_count: 2,
            grace_period_ms: 60_000,
        };
        let v = VolumeSpec::try_from(good.clone()).expect("valid");
        assert_eq!(v1::VolumeSpec::from(v), good);
        for (field, bad) in [
            (
                "capacity_bytes",
                v1::VolumeSpec {
                    capacity_bytes: 0,
                    ..good.clone()
                },
            ),
            (
                "replica_count",
                v1::VolumeSpec {
                    replica_count: 17,
                    ..good.clone()
                },
            ),
            (
                "grace_period_ms",
                v1::VolumeSpec {
                    grace_period_ms: u64::MAX,
                    ..good.clone()
                },
            ),
            (
                "alias",
                v1::VolumeSpec {
                    alias: "../x".into(),
                    ..good.clone()
                },
            ),
            (
                "volume_id",
                v1::VolumeSpec {
                    volume_id: "v".into(),
                    ..good.clone()
                },
            ),
        ] {
            assert_eq!(VolumeSpec::try_from(bad).unwrap_err().field, field);
        }
    }

    #[test]
    fn heartbeat_lists_and_identities() {
        assert_eq!(
            volume_ids(vec![R2.into(), R1.into()]).expect("valid").len(),
            2
        );
        assert!(volume_ids(vec![R1.into(), R1.to_uppercase()]).is_err());
        assert_eq!(
            volume_ids(vec!["x".into()]).unwrap_err().field,
            "volume_ids[0]"
        );

        let h = host_identity(
            "nqn.2014-08.org.nvmexpress:uuid:".to_owned() + R1,
            "",
            "c1".into(),
        )
        .expect("valid");
        assert_eq!(h.id, None);
        assert_eq!(
            host_identity("nqn.x".into(), "", String::new())
                .unwrap_err()
                .field,
            "host_nqn"
        );
        assert_eq!(
            host_identity("nqn.2016-06.io.spdk:h".into(), "not-a-uuid", String::new())
                .unwrap_err()
                .field,
            "host_id"
        );
    }

    #[test]
    fn stages_and_states_refuse_unspecified_and_unknown_numbers() {
        assert_eq!(stage(0), Err(Invalid::Unspecified));
        assert_eq!(stage(99), Err(Invalid::UnknownEnum(99)));
        assert_eq!(
            stage(v1::ReplacementStage::Synced.into()),
            Ok(Stage::Synced)
        );
        assert_eq!(replica_state(0), Err(Invalid::Unspecified));
        for s in [
            ReplicaState::Available,
            ReplicaState::Synchronizing,
            ReplicaState::Missing,
            ReplicaState::Faulty,
            ReplicaState::Terminating,
        ] {
            assert_eq!(replica_state(v1::ReplicaState::from(s).into()), Ok(s));
        }
    }
}
