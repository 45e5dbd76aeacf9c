//! Everything that changes the replica registry. Each command is committed through Raft and
//! applied by every monitor with the leader's time, like the map's commands.

use gwmon_proto::domain::{
    HostIdentity, Nqn, ReplacementId, ReplicaId, ReplicaReport, ReplicaSpec, Stage, VolumeId,
    VolumeSpec,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaCommand {
    /// Register a host or update its id and name; not a heartbeat.
    RegisterHost {
        host: HostIdentity,
    },
    /// Register or refresh a host and record its heartbeat at the command's time, with the
    /// volumes it has connected (sorted, no duplicates).
    Heartbeat {
        host: HostIdentity,
        volumes: Vec<VolumeId>,
    },
    /// The backend registers a volume with its replicas, all in sync. Idempotent for the
    /// same content.
    CreateVolume {
        spec: VolumeSpec,
        replicas: Vec<ReplicaSpec>,
    },
    DeleteVolume {
        volume: VolumeId,
    },
    /// Record a larger capacity (equal: nothing to do).
    ExpandVolume {
        volume: VolumeId,
        capacity_bytes: u64,
    },
    /// What a host sees of some replicas of a volume (each replica at most once).
    ReportStates {
        host: Nqn,
        volume: VolumeId,
        reports: Vec<ReplicaReport>,
    },
    /// Ask for `replica` to be replaced. `by` is the asking host, `None` for an operator;
    /// `force` (operators) skips the grace period and the bad-state requirement.
    RequestReplacement {
        volume: VolumeId,
        replica: ReplicaId,
        by: Option<Nqn>,
        force: bool,
    },
    /// The backend supplies the new replica of a requested replacement.
    SupplyReplacement {
        volume: VolumeId,
        replacement: ReplacementId,
        replica: ReplicaSpec,
    },
    /// A host did `done` (attached, synced, retired) for a replacement.
    AcknowledgeReplacement {
        host: Nqn,
        volume: VolumeId,
        replacement: ReplacementId,
        done: Stage,
    },
    /// Give up a replacement no replica has been supplied for.
    CancelReplacement {
        volume: VolumeId,
        replacement: ReplacementId,
        reason: String,
    },
    /// The backend deleted the retired replica `replica`.
    ConfirmReplicaDeleted {
        volume: VolumeId,
        replica: ReplicaId,
    },
}

impl ReplicaCommand {
    /// The volume a command is about; `None` for host commands.
    pub fn volume(&self) -> Option<&VolumeId> {
        match self {
            ReplicaCommand::RegisterHost { .. } | ReplicaCommand::Heartbeat { .. } => None,
            ReplicaCommand::CreateVolume { spec, .. } => Some(&spec.id),
            ReplicaCommand::DeleteVolume { volume }
            | ReplicaCommand::ExpandVolume { volume, .. }
            | ReplicaCommand::ReportStates { volume, .. }
            | ReplicaCommand::RequestReplacement { volume, .. }
            | ReplicaCommand::SupplyReplacement { volume, .. }
            | ReplicaCommand::AcknowledgeReplacement { volume, .. }
            | ReplicaCommand::CancelReplacement { volume, .. }
            | ReplicaCommand::ConfirmReplicaDeleted { volume, .. } => Some(volume),
        }
    }
}
