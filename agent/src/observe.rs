//! What the host shows of a volume's replicas: a pure function from the cluster's replica
//! list and a host snapshot to a per-replica view.
//!
//! A replica's block device is found through its controller (subsystem NQN, transport and
//! address of one of its portals) and, when the backend gave one, the namespace UUID; the
//! device's md leg, if any, gives its sync state. Nothing is assumed from device names.

use gwmon_proto::domain::Nqn;

use crate::cluster::{ReplicaId, ReplicaInfo, ReplicaReport, ReplicaState, VolumeInfo};
use crate::host::{Controller, CtrlState, LegState, MdArray, Snapshot};

/// One replica as seen on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub id: ReplicaId,
    /// The state the cluster holds.
    pub recorded: ReplicaState,
    /// The controller carrying it, if connected.
    pub controller: Option<String>,
    pub controller_state: Option<CtrlState>,
    /// Its namespace block device, if found.
    pub device: Option<String>,
    /// Its leg in the volume's array, if it is one.
    pub leg: Option<LegState>,
    /// What to report.
    pub state: ReplicaState,
    pub sync_permille: Option<u16>,
}

impl ReplicaView {
    /// The report this view amounts to.
    pub fn report(&self) -> ReplicaReport {
        ReplicaReport {
            replica: self.id,
            state: self.state,
            sync_permille: self.sync_permille,
        }
    }
}

/// A volume as seen on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    /// The volume's array, if running here.
    pub array: Option<MdArray>,
    pub replicas: Vec<ReplicaView>,
}

impl VolumeView {
    pub fn replica(&self, id: &ReplicaId) -> Option<&ReplicaView> {
        self.replicas.iter().find(|r| &r.id == id)
    }
}

/// The controller that carries `replica` for this host (`host`, its NQN): one reaching the
/// replica's subsystem through one of its portals, preferring a live one, never one being
/// deleted, and never one another host NQN connected. Hosts that share a kernel (containers,
/// kind clusters) all see every controller in sysfs; Mayastor's agents each reported the
/// others' paths as their own until they filtered on the host NQN.
pub fn controller_of<'a>(
    replica: &ReplicaInfo,
    snap: &'a Snapshot,
    host: &Nqn,
) -> Option<&'a Controller> {
    let mut found: Vec<&Controller> = snap
        .controllers
        .iter()
        .filter(|c| !c.state.is_going())
        .filter(|c| c.hostnqn.as_deref().is_none_or(|h| h == host.as_str()))
        .filter(|c| {
            replica
                .portals
                .iter()
                .any(|p| c.reaches(&replica.nqn, &p.transport, &p.address))
        })
        .filter(|c| namespace_of(replica, c).is_some())
        .collect();
    found.sort_by_key(|c| !c.state.is_live());
    found.first().copied()
}

/// The block device of `replica` on controller `c`: the namespace with its UUID, or the
/// only namespace when the backend gave no UUID.
pub fn namespace_of(replica: &ReplicaInfo, c: &Controller) -> Option<String> {
    match &replica.ns_uuid {
        Some(uuid) => c
            .namespaces
            .iter()
            .find(|n| n.uuid.as_deref() == Some(uuid.as_str()))
            .map(|n| n.device.clone()),
        None => match c.namespaces.as_slice() {
            [only] => Some(only.device.clone()),
            _ => None,
        },
    }
}

/// The block device of `replica` on this host, if connected.
pub fn device_of(replica: &ReplicaInfo, snap: &Snapshot, host: &Nqn) -> Option<String> {
    controller_of(replica, snap, host).and_then(|c| namespace_of(replica, c))
}

/// See the module documentation.
pub fn observe(volume: &VolumeInfo, snap: &Snapshot, host: &Nqn) -> VolumeView {
    let array = snap.array_named(volume.name.as_str()).cloned();
    let replicas = volume
        .replicas
        .iter()
        .map(|r| view_one(r, snap, array.as_ref(), host))
        .collect();
    VolumeView { array, replicas }
}

fn view_one(
    replica: &ReplicaInfo,
    snap: &Snapshot,
    array: Option<&MdArray>,
    host: &Nqn,
) -> ReplicaView {
    let controller = controller_of(replica, snap, host);
    let device = controller.and_then(|c| namespace_of(replica, c));
    let leg = match (array, &device) {
        (Some(a), Some(d)) => a.leg(d).map(|l| l.state()),
        _ => None,
    };
    let live = controller.is_some_and(|c| c.state.is_live());
    let state = match leg {
        // md has not failed it yet, but nothing reaches it: it is not serving.
        Some(LegState::InSync) if !live => ReplicaState::Missing,
        Some(LegState::InSync) => ReplicaState::Available,
        Some(LegState::Recovering) => ReplicaState::Synchronizing,
        Some(LegState::Faulty) => ReplicaState::Faulty,
        // A spare without a slot holds nothing; not in the array at all is the same.
        Some(LegState::Spare) | None => ReplicaState::Missing,
    };
    let sync_permille = match state {
        ReplicaState::Synchronizing => Some(
            array
                .and_then(|a| a.sync)
                .map(|s| u16::try_from(s.permille()).unwrap_or(1000))
                .unwrap_or(0),
        ),
        _ => None,
    };
    ReplicaView {
        id: replica.id,
        recorded: replica.state,
        controller: controller.map(|c| c.name.clone()),
        controller_state: controller.map(|c| c.state.clone()),
        device,
        leg,
        state,
        sync_permille,
    }
}
