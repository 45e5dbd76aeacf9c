//! `volume create|show|list|replace` and `host list`: the replica registry of replicated
//! volumes (hosts building an MD RAID1 over NVMe-oF replicas). Ceph has no such commands,
//! so the JSON keys are gwmon's own, snake_case like `blocklist ls`, documented in
//! README.md.

use gwmon_proto::v1;
use serde::Serialize;

use super::{or_dash, View};
use crate::table::Table;
use crate::time::utc;

/// One volume with every replica and its health (`volume show`, `volume create`).
#[derive(Debug, Clone, Serialize)]
pub struct VolumeOut {
    pub volume_id: String,
    /// The host's md array is `/dev/md/<alias>`.
    pub alias: String,
    pub capacity_bytes: u64,
    /// How many replicas the volume should have.
    pub replica_count: u32,
    /// How long a replica must be missing or faulty before it may be replaced.
    pub grace_period_ms: u64,
    /// The in-sync generation; a replica whose `in_sync_generation` is older is stale.
    pub generation: u64,
    pub created_at_ms: u64,
    pub replicas: Vec<ReplicaOut>,
    /// The replacement under way; `null` when none is.
    pub replacement: Option<ReplacementOut>,
    /// The last replacement that finished (done or cancelled); `null` when none has.
    pub last_replacement: Option<ReplacementOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaOut {
    pub replica_id: String,
    /// `available`, `synchronizing`, `missing`, `faulty` or `terminating`.
    pub state: String,
    pub state_since_ms: u64,
    /// Since when it has been missing or faulty; `null` when it is neither.
    pub bad_since_ms: Option<u64>,
    pub in_sync_generation: u64,
    /// Older than the in-sync replicas: never used to build an array.
    pub stale: bool,
    /// Resync progress in per mille, while synchronizing and known.
    pub sync_permille: Option<u32>,
    /// The host whose report set the state; `null` before any report.
    pub reported_by: Option<String>,
    pub target_nqn: String,
    /// `transport://address:port`, e.g. `tcp://10.0.0.5:4420`.
    pub portals: Vec<String>,
    pub namespace_uuid: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplacementOut {
    pub replacement_id: u64,
    pub volume_id: String,
    pub old_replica_id: String,
    /// The new replica, once the backend has supplied it.
    pub new_replica_id: Option<String>,
    /// `requested`, `supplied`, `attached`, `synced`, `retired`, `done` or `cancelled`.
    pub stage: String,
    /// The host that asked; `null` when an operator or the backend did.
    pub requested_by: Option<String>,
    /// Whether an operator forced it past the grace period.
    pub forced: bool,
    pub requested_at_ms: u64,
    pub stage_since_ms: u64,
    pub cancel_reason: Option<String>,
}

/// `volume list`: every volume, in id order.
#[derive(Debug, Clone, Serialize)]
pub struct VolumesOut {
    pub volumes: Vec<VolumeOut>,
}

/// `volume replace`: the replacement requested (or the one already under way for that
/// replica).
#[derive(Debug, Clone, Serialize)]
pub struct ReplaceOut {
    pub replacement: ReplacementOut,
}

/// `host list`: every registered host, in NQN order.
#[derive(Debug, Clone, Serialize)]
pub struct HostsOut {
    pub hosts: Vec<HostOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostOut {
    pub host_nqn: String,
    pub host_id: Option<String>,
    pub name: Option<String>,
    pub registered_at_ms: u64,
    /// `null` until the host's agent sends its first heartbeat.
    pub last_heartbeat_ms: Option<u64>,
    /// The volumes the host said it has connected in its last heartbeat.
    pub volume_ids: Vec<String>,
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A state's name; a number this CLI does not know (a newer monitor) is shown as such
/// rather than hidden.
fn state_name(raw: i32) -> String {
    match v1::ReplicaState::try_from(raw) {
        Ok(v1::ReplicaState::Available) => "available".into(),
        Ok(v1::ReplicaState::Synchronizing) => "synchronizing".into(),
        Ok(v1::ReplicaState::Missing) => "missing".into(),
        Ok(v1::ReplicaState::Faulty) => "faulty".into(),
        Ok(v1::ReplicaState::Terminating) => "terminating".into(),
        Ok(v1::ReplicaState::Unspecified) | Err(_) => format!("unknown({raw})"),
    }
}

fn stage_name(raw: i32) -> String {
    match v1::ReplacementStage::try_from(raw) {
        Ok(v1::ReplacementStage::Requested) => "requested".into(),
        Ok(v1::ReplacementStage::Supplied) => "supplied".into(),
        Ok(v1::ReplacementStage::Attached) => "attached".into(),
        Ok(v1::ReplacementStage::Synced) => "synced".into(),
        Ok(v1::ReplacementStage::Retired) => "retired".into(),
        Ok(v1::ReplacementStage::Done) => "done".into(),
        Ok(v1::ReplacementStage::Cancelled) => "cancelled".into(),
        Ok(v1::ReplacementStage::Unspecified) | Err(_) => format!("unknown({raw})"),
    }
}

fn portal(p: &v1::Portal) -> String {
    let transport = match v1::Transport::try_from(p.transport) {
        Ok(v1::Transport::Tcp) => "tcp".to_owned(),
        Ok(v1::Transport::Rdma) => "rdma".to_owned(),
        Ok(v1::Transport::Unspecified) | Err(_) => format!("unknown({})", p.transport),
    };
    if p.address.contains(':') {
        format!("{transport}://[{}]:{}", p.address, p.port)
    } else {
        format!("{transport}://{}:{}", p.address, p.port)
    }
}

/// Bytes for people, in binary units as block devices are sized.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && n >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    let whole = 1u64 << (10 * unit);
    if n.is_multiple_of(whole) {
        format!("{} {}", n / whole, UNITS[unit])
    } else {
        // One decimal is enough to tell sizes apart at a glance; the JSON has the bytes.
        let tenths = u128::from(n) * 10 / u128::from(whole);
        format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
    }
}

impl ReplacementOut {
    pub fn from_wire(p: v1::Replacement) -> Self {
        ReplacementOut {
            replacement_id: p.replacement_id,
            volume_id: p.volume_id,
            old_replica_id: p.old_replica_id,
            new_replica_id: p.new_replica.map(|r| r.replica_id),
            stage: stage_name(p.stage),
            requested_by: some(p.requested_by),
            forced: p.forced,
            requested_at_ms: p.requested_at_ms,
            stage_since_ms: p.stage_since_ms,
            cancel_reason: some(p.cancel_reason),
        }
    }

    /// One line: what is replaced by what, and where it stands.
    fn line(&self) -> String {
        let by = match (&self.requested_by, self.forced) {
            (_, true) => "forced by an operator".to_owned(),
            (Some(h), false) => format!("requested by {h}"),
            (None, false) => "requested by an operator".to_owned(),
        };
        let new = self
            .new_replica_id
            .as_deref()
            .map_or_else(|| "a replica not yet supplied".to_owned(), str::to_owned);
        let mut line = format!(
            "replacement {} of replica {} by {new}: {} since {} ({by})",
            self.replacement_id,
            self.old_replica_id,
            self.stage,
            utc(self.stage_since_ms)
        );
        if let Some(reason) = &self.cancel_reason {
            line.push_str(&format!(", cancelled: {reason}"));
        }
        line
    }
}

impl VolumeOut {
    pub fn from_wire(v: v1::VolumeView) -> Self {
        let spec = v.volume.unwrap_or_default();
        VolumeOut {
            volume_id: spec.volume_id,
            alias: spec.alias,
            capacity_bytes: spec.capacity_bytes,
            replica_count: spec.replica_count,
            grace_period_ms: spec.grace_period_ms,
            generation: v.generation,
            created_at_ms: v.created_at_ms,
            replicas: v
                .replicas
                .into_iter()
                .map(|r| {
                    let spec = r.replica.unwrap_or_default();
                    ReplicaOut {
                        replica_id: spec.replica_id,
                        state: state_name(r.state),
                        state_since_ms: r.state_since_ms,
                        bad_since_ms: r.bad_since_ms,
                        in_sync_generation: r.in_sync_generation,
                        stale: r.stale,
                        sync_permille: r.sync_permille,
                        reported_by: some(r.reported_by),
                        target_nqn: spec.target_nqn,
                        portals: spec.portals.iter().map(portal).collect(),
                        namespace_uuid: some(spec.namespace_uuid),
                    }
                })
                .collect(),
            replacement: v.replacement.map(ReplacementOut::from_wire),
            last_replacement: v.last_replacement.map(ReplacementOut::from_wire),
        }
    }

    /// The replicas a host could build its array from now: in sync, not stale.
    fn in_sync(&self) -> usize {
        self.replicas
            .iter()
            .filter(|r| r.state == "available" && !r.stale)
            .count()
    }
}

impl View for VolumeOut {
    fn plain(&self) -> String {
        let mut out = format!(
            "volume {} (/dev/md/{}), {}, {} of {} replicas in sync, generation {}, grace {} s\n",
            self.volume_id,
            self.alias,
            bytes(self.capacity_bytes),
            self.in_sync(),
            self.replica_count,
            self.generation,
            self.grace_period_ms / 1000,
        );
        let mut t = Table::new(&[
            "REPLICA",
            "STATE",
            "SINCE",
            "GEN",
            "TARGET",
            "PORTALS",
            "REPORTED BY",
        ]);
        for r in &self.replicas {
            let mut state = r.state.clone();
            if r.stale {
                state.push_str(" (stale)");
            }
            if let Some(p) = r.sync_permille {
                state.push_str(&format!(" {}.{}%", p / 10, p % 10));
            }
            t.row(vec![
                r.replica_id.clone(),
                state,
                utc(r.state_since_ms),
                r.in_sync_generation.to_string(),
                r.target_nqn.clone(),
                r.portals.join(","),
                or_dash(r.reported_by.as_deref().unwrap_or("")),
            ]);
        }
        out.push_str(&t.render());
        if let Some(p) = &self.replacement {
            out.push_str(&p.line());
            out.push('\n');
        }
        out
    }
}

impl View for VolumesOut {
    fn plain(&self) -> String {
        if self.volumes.is_empty() {
            return "no volumes\n".to_owned();
        }
        let mut t = Table::new(&[
            "VOLUME",
            "ALIAS",
            "CAPACITY",
            "IN SYNC",
            "GEN",
            "REPLACEMENT",
        ]);
        for v in &self.volumes {
            t.row(vec![
                v.volume_id.clone(),
                v.alias.clone(),
                bytes(v.capacity_bytes),
                format!("{}/{}", v.in_sync(), v.replica_count),
                v.generation.to_string(),
                v.replacement.as_ref().map_or_else(
                    || "-".to_owned(),
                    |p| format!("{} {}", p.replacement_id, p.stage),
                ),
            ]);
        }
        t.render()
    }
}

impl View for ReplaceOut {
    fn plain(&self) -> String {
        format!("{}\n", self.replacement.line())
    }
}

impl HostsOut {
    pub fn from_wire(resp: v1::ListHostsResponse) -> Self {
        HostsOut {
            hosts: resp
                .hosts
                .into_iter()
                .map(|h| HostOut {
                    host_nqn: h.host_nqn,
                    host_id: some(h.host_id),
                    name: some(h.name),
                    registered_at_ms: h.registered_at_ms,
                    last_heartbeat_ms: h.last_heartbeat_ms,
                    volume_ids: h.volume_ids,
                })
                .collect(),
        }
    }
}

impl View for HostsOut {
    fn plain(&self) -> String {
        if self.hosts.is_empty() {
            return "no hosts\n".to_owned();
        }
        let mut t = Table::new(&["HOST NQN", "NAME", "LAST HEARTBEAT", "VOLUMES"]);
        for h in &self.hosts {
            t.row(vec![
                h.host_nqn.clone(),
                or_dash(h.name.as_deref().unwrap_or("")),
                h.last_heartbeat_ms.map_or_else(|| "never".to_owned(), utc),
                h.volume_ids.len().to_string(),
            ]);
        }
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(10 << 30), "10 GiB");
        assert_eq!(bytes((1 << 30) + (1 << 29)), "1.5 GiB");
        assert_eq!(bytes(u64::MAX), "16777215.9 TiB");
    }

    #[test]
    fn unknown_numbers_are_shown_not_hidden() {
        assert_eq!(state_name(42), "unknown(42)");
        assert_eq!(stage_name(0), "unknown(0)");
        let p = v1::Portal {
            transport: 1,
            address: "fd00::5".into(),
            port: 4420,
        };
        assert_eq!(portal(&p), "tcp://[fd00::5]:4420");
    }

    #[test]
    fn a_volume_prints_its_replicas_and_the_replacement() {
        let view = VolumeOut::from_wire(v1::VolumeView {
            volume: Some(v1::VolumeSpec {
                volume_id: "v1".into(),
                alias: "disk".into(),
                capacity_bytes: 1 << 30,
                replica_count: 2,
                grace_period_ms: 60_000,
            }),
            replicas: vec![v1::ReplicaView {
                replica: Some(v1::ReplicaSpec {
                    replica_id: "r1".into(),
                    target_nqn: "nqn.2016-06.io.spdk:r1".into(),
                    portals: vec![v1::Portal {
                        transport: 1,
                        address: "10.0.0.1".into(),
                        port: 4420,
                    }],
                    namespace_uuid: String::new(),
                }),
                state: v1::ReplicaState::Synchronizing.into(),
                in_sync_generation: 1,
                stale: true,
                sync_permille: Some(455),
                ..Default::default()
            }],
            generation: 2,
            replacement: Some(v1::Replacement {
                replacement_id: 7,
                old_replica_id: "r0".into(),
                stage: v1::ReplacementStage::Requested.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let text = view.plain();
        assert!(
            text.starts_with("volume v1 (/dev/md/disk), 1 GiB, 0 of 2 replicas in sync"),
            "{text}"
        );
        assert!(text.contains("synchronizing (stale) 45.5%"), "{text}");
        assert!(text.contains("tcp://10.0.0.1:4420"), "{text}");
        assert!(
            text.contains("replacement 7 of replica r0 by a replica not yet supplied: requested"),
            "{text}"
        );
        assert!(text.lines().all(|l| l == l.trim_end()));
    }
}
