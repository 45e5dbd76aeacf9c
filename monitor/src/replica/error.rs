//! Why the replica registry refused a command or a read. A refused command changes nothing.
//!
//! The variants are grouped by what a client should do about them; `crate::error` maps each
//! group to one gRPC code (unknown → NOT_FOUND, conflicting content → ALREADY_EXISTS, "not
//! now" → FAILED_PRECONDITION, another replacement under way → ABORTED).

use gwmon_proto::domain::{
    Nqn, ReplacementId, ReplicaId, ReplicaState, Stage, VolumeAlias, VolumeId,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ReplicaError {
    // ---- unknown: NOT_FOUND ----
    #[error("unknown host {0}: register it first (RegisterHost or Heartbeat)")]
    UnknownHost(Nqn),
    #[error("unknown volume {0}")]
    UnknownVolume(VolumeId),
    #[error("no volume has the alias {0}")]
    UnknownAlias(VolumeAlias),
    #[error("volume {volume} has no replica {replica}")]
    UnknownReplica {
        volume: VolumeId,
        replica: ReplicaId,
    },
    #[error("volume {volume} has no replacement {replacement}")]
    UnknownReplacement {
        volume: VolumeId,
        replacement: ReplacementId,
    },

    // ---- conflicting content: ALREADY_EXISTS ----
    #[error("volume {0} is already registered with different settings or replicas")]
    VolumeExists(VolumeId),
    #[error("the alias {alias} is already used by volume {volume}")]
    AliasTaken {
        alias: VolumeAlias,
        volume: VolumeId,
    },
    #[error("replica {replica} already belongs to volume {volume}")]
    ReplicaIdTaken {
        replica: ReplicaId,
        volume: VolumeId,
    },
    #[error("replacement {replacement} was already supplied with replica {supplied}")]
    ConflictingSupply {
        replacement: ReplacementId,
        supplied: ReplicaId,
    },

    // ---- malformed for this registry: INVALID_ARGUMENT ----
    #[error("{given} replicas given, but the volume is to have {replica_count}")]
    TooManyReplicas { given: usize, replica_count: u32 },
    #[error("volume {volume} has {capacity} bytes; it can grow but not shrink to {requested}")]
    ShrinkRefused {
        volume: VolumeId,
        capacity: u64,
        requested: u64,
    },
    #[error("a host acknowledges only the stages attached, synced and retired, not {0}")]
    NotAcknowledgeable(Stage),

    // ---- not now: FAILED_PRECONDITION ----
    #[error("replica {replica} of volume {volume} is {state}; only a missing or faulty replica is replaced (an operator may force it)")]
    ReplicaNotBad {
        volume: VolumeId,
        replica: ReplicaId,
        state: ReplicaState,
    },
    #[error("replica {replica} of volume {volume} has been bad for {bad_for_ms} ms of the {grace_ms} ms grace period; ask again in {} ms", grace_ms.saturating_sub(*bad_for_ms))]
    GraceNotPassed {
        volume: VolumeId,
        replica: ReplicaId,
        bad_for_ms: u64,
        grace_ms: u64,
    },
    #[error("replica {replica} of volume {volume} is already being retired")]
    AlreadyTerminating {
        volume: VolumeId,
        replica: ReplicaId,
    },
    #[error(
        "volume {volume} has no other available, in-sync replica a new leg could be synced from"
    )]
    NoSyncSource { volume: VolumeId },
    #[error("replacement {replacement} is {stage}; {requested} does not follow it")]
    StageOutOfOrder {
        replacement: ReplacementId,
        stage: Stage,
        requested: Stage,
    },
    #[error("replacement {replacement} is already {stage}")]
    ReplacementFinished {
        replacement: ReplacementId,
        stage: Stage,
    },
    #[error("replica {replica} of volume {volume} is not being retired by a replacement")]
    NotRetiring {
        volume: VolumeId,
        replica: ReplicaId,
    },
    #[error("volume {volume} has no replica safe to connect: {}", reasons.join("; "))]
    NoSafeReplica {
        volume: VolumeId,
        reasons: Vec<String>,
    },

    // ---- another replacement: ABORTED ----
    #[error("volume {volume} already has replacement {active} of replica {old} under way")]
    ReplacementBusy {
        volume: VolumeId,
        active: ReplacementId,
        old: ReplicaId,
    },

    // ---- a bug: INTERNAL ----
    /// The command would break an invariant of the registry. A bug in the engine, caught
    /// before it reaches the registry; the command is refused.
    #[error("refused: the result would break an invariant: {0}")]
    Invariant(String),
}

impl ReplicaError {
    /// Whether the error names something that does not exist (NOT_FOUND), so that the one
    /// place mapping errors to codes and the tests agree.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ReplicaError::UnknownHost(_)
                | ReplicaError::UnknownVolume(_)
                | ReplicaError::UnknownAlias(_)
                | ReplicaError::UnknownReplica { .. }
                | ReplicaError::UnknownReplacement { .. }
        )
    }
}
