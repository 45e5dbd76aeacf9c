//! The agent's view of what the cluster holds: volumes, their replicas, and a replacement.
//! Converted from the wire types in [`super::grpc`]; kept separate so the replacement logic
//! does not depend on field numbering. Ids, replica states, stages and reports are the
//! shared domain types of `gwmon-proto`; replicas are described with the host model's
//! transports and addresses, as `nvme connect` and sysfs spell them.

use std::fmt;
use std::time::Duration;

use gwmon_proto::domain::Nqn;
pub use gwmon_proto::domain::{
    HostId, HostIdentity, HostName, ReplacementId, ReplicaId, ReplicaReport, ReplicaState, Stage,
    VolumeId,
};

use crate::host::{Address, ArrayName, Transport};

/// One way to reach a replica's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    pub transport: Transport,
    pub address: Address,
}

impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.transport, self.address)
    }
}

/// One replica of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub id: ReplicaId,
    /// The subsystem that exports it.
    pub nqn: Nqn,
    pub portals: Vec<Portal>,
    /// The namespace UUID, lower case, when the backend gives one: how the replica's block
    /// device is recognised among the namespaces of its controller.
    pub ns_uuid: Option<String>,
    /// The cluster's record of its state.
    pub state: ReplicaState,
}

/// A volume as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub id: VolumeId,
    /// The md array's name: `/dev/md/<name>`.
    pub name: ArrayName,
    pub capacity_bytes: u64,
    /// How many replicas the volume should have.
    pub replica_count: u32,
    /// How long a replica may be missing or faulty before it is replaced.
    pub grace: Duration,
    /// For [`super::Cluster::connection_info`], only the replicas safe to use; for
    /// [`super::Cluster::volume`], every replica.
    pub replicas: Vec<ReplicaInfo>,
    /// Why replicas were left out of a connection, for the error message when too few
    /// remain.
    pub left_out: Vec<String>,
    /// The replacement under way, if any.
    pub replacement: Option<Replacement>,
}

impl VolumeInfo {
    pub fn replica(&self, id: &ReplicaId) -> Option<&ReplicaInfo> {
        self.replicas.iter().find(|r| &r.id == id)
    }
}

/// A replacement of one replica by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The cluster's id of this replacement; acknowledgements name it, so an
    /// acknowledgement meant for an earlier replacement of the same volume cannot advance a
    /// later one.
    pub id: ReplacementId,
    pub old: ReplicaId,
    /// The new replica, once supplied.
    pub new: Option<ReplicaInfo>,
    pub stage: Stage,
}
