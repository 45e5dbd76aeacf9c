//! What happened when a registry command was applied: for logs (the leader logs the events
//! of every command it commits) and, later, the event stream.

use gwmon_proto::domain::{
    Nqn, ReplacementId, ReplicaId, ReplicaState, Stage, VolumeAlias, VolumeId,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaEvent {
    HostRegistered {
        host: Nqn,
    },
    /// A registered host changed its host id or name.
    HostUpdated {
        host: Nqn,
    },
    VolumeCreated {
        volume: VolumeId,
        alias: VolumeAlias,
        replicas: usize,
    },
    VolumeDeleted {
        volume: VolumeId,
    },
    VolumeExpanded {
        volume: VolumeId,
        from: u64,
        to: u64,
    },
    /// A host's report changed a replica's state. Only a change is an event: repeating a
    /// report produces none.
    ReplicaStateChanged {
        volume: VolumeId,
        replica: ReplicaId,
        from: ReplicaState,
        to: ReplicaState,
        host: Option<Nqn>,
    },
    /// Some replicas dropped out of the in-sync set while others kept receiving writes: the
    /// ones dropped are stale from now on and never used to build an array.
    GenerationAdvanced {
        volume: VolumeId,
        generation: u64,
        dropped: Vec<ReplicaId>,
    },
    /// A stale (or new) replica was reported in sync beside an in-sync one: it is trusted
    /// again, at the current generation.
    ReplicaTrusted {
        volume: VolumeId,
        replica: ReplicaId,
        generation: u64,
    },
    /// A stale replica was reported in sync while no in-sync replica is available, so it
    /// cannot have been synced from current data: it stays stale. This is the seed-001
    /// scenario of a host seeing only the legs that were lost earlier.
    StaleReplicaNotTrusted {
        volume: VolumeId,
        replica: ReplicaId,
        replica_generation: u64,
        volume_generation: u64,
    },
    ReplacementRequested {
        volume: VolumeId,
        replacement: ReplacementId,
        old: ReplicaId,
        by: Option<Nqn>,
        forced: bool,
    },
    /// A replacement reached a new stage (`Supplied`, ..., `Done`, `Cancelled`).
    ReplacementAdvanced {
        volume: VolumeId,
        replacement: ReplacementId,
        stage: Stage,
    },
    /// The retired replica of a finished replacement left the registry.
    ReplicaRemoved {
        volume: VolumeId,
        replica: ReplicaId,
    },
}
