//! The monitor's errors, and the one place they become gRPC statuses.
//!
//! Clients branch on the code: `FAILED_PRECONDITION` with the `gwmon-leader` header means
//! "not the leader, ask that one"; `NOT_FOUND` an unknown gateway or group;
//! `INVALID_ARGUMENT` a bad id or value; `ABORTED` a stale beacon or epoch;
//! `UNAVAILABLE` no leader known, a leader not confirmed by a quorum, or the cluster
//! shutting down; `ALREADY_EXISTS` a second process for a gateway id whose first one holds
//! a lease; `OUT_OF_RANGE` an event watch resuming from an epoch the monitor no longer keeps.
//!
//! The replica registry's refusals ([`ReplicaError`]) follow the same scheme:
//! `NOT_FOUND` an unknown host, volume, replica or replacement; `ALREADY_EXISTS` a create or
//! supply that conflicts with what is registered; `FAILED_PRECONDITION` (without the leader
//! header) "not now": grace period, stage order, nothing safe to connect; `ABORTED` another
//! replacement of the volume under way.

use gwmon_proto::domain::FieldError;
use gwmon_proto::leader;
use tonic::{Code, Status};

use crate::codec::CodecError;
use crate::config::ConfigError;
use crate::events::WatchError;
use crate::map::MapError;
use crate::replica::ReplicaError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The request itself is malformed.
    #[error("invalid request: {0}")]
    Invalid(#[from] FieldError),
    /// The map engine refused the command.
    #[error("refused: {0}")]
    Refused(#[from] MapError),
    /// The replica registry refused the command or read.
    #[error("{0}")]
    Replica(#[from] ReplicaError),
    /// This monitor is not the leader; `leader` is the leader's address when known.
    #[error("not the leader{}", leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    /// Raft could not complete the request (no quorum, shutting down, membership busy).
    #[error("replication: {0}")]
    Raft(String),
    /// This monitor is the Raft leader by its own account, but no quorum has confirmed it
    /// recently enough (or it has not yet applied its own first entry), so it grants no
    /// lease and decides nothing: another monitor may be leading already.
    #[error("this monitor has no leadership confirmed by a quorum; try another monitor")]
    Unconfirmed,
    /// Another process serves this gateway id and holds a lease.
    #[error("gateway {gateway} of group {key} is already served by another process (incarnation {holder:016x}) whose lease runs another {remaining_ms} ms; stop that process or give this one another id")]
    Duplicate {
        key: gwmon_proto::domain::GroupKey,
        gateway: gwmon_proto::domain::GatewayId,
        holder: u64,
        remaining_ms: u64,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Serve(String),
    #[error("shutting down")]
    ShuttingDown,
    /// An event watcher cannot be served from the retained window.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// `gwmon recover` could not rewrite the store (see [`crate::recover`]).
    #[error("{0}")]
    Recover(String),
    /// A caller went over one of the monitor's fixed limits (see [`Limit`]).
    #[error("{0}")]
    Limit(Limit),
    /// The caller's certificate does not allow the request (see [`crate::auth`]).
    #[error(transparent)]
    Denied(#[from] crate::auth::Denied),
}

/// A bound the monitor keeps on what one caller may make it do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    #[error("more than {per_second} beacons a second (bursts of up to {burst}) on one session: the session is closed; beacon at a steady interval")]
    BeaconRate { per_second: u32, burst: u32 },
    #[error(
        "{max} event streams are open on this monitor already; close one or watch another monitor"
    )]
    Watchers { max: usize },
    #[error("{max} event streams are open for {client} on this monitor already; close one")]
    WatchersPerClient { max: usize, client: String },
}

impl From<MonitorError> for Status {
    fn from(e: MonitorError) -> Status {
        let message = e.to_string();
        match e {
            // Without a known leader there is nobody to redirect to: a client should wait and
            // try again, exactly as for a lost quorum.
            MonitorError::NotLeader { leader: None } => Status::unavailable(message),
            MonitorError::NotLeader { leader: l } => leader::not_leader(l.as_deref()),
            MonitorError::Invalid(_) => Status::invalid_argument(message),
            MonitorError::Refused(m) => Status::new(map_code(&m), message),
            MonitorError::Replica(r) => Status::new(replica_code(&r), message),
            MonitorError::Duplicate { .. } => Status::already_exists(message),
            MonitorError::Raft(_)
            | MonitorError::Unconfirmed
            | MonitorError::ShuttingDown
            | MonitorError::Watch(WatchError::Closed) => Status::unavailable(message),
            MonitorError::Watch(WatchError::Gone { .. } | WatchError::Overrun { .. }) => {
                Status::out_of_range(message)
            }
            MonitorError::Limit(_) => Status::resource_exhausted(message),
            MonitorError::Denied(_) => Status::permission_denied(message),
            MonitorError::Config(_)
            | MonitorError::Store(_)
            | MonitorError::Codec(_)
            | MonitorError::Listen { .. }
            | MonitorError::Recover(_)
            | MonitorError::Serve(_) => Status::internal(message),
        }
    }
}

fn map_code(e: &MapError) -> Code {
    match e {
        MapError::UnknownGroup(_)
        | MapError::UnknownGateway { .. }
        | MapError::UnknownFence { .. }
        | MapError::NoGatewaysAtLocation { .. } => Code::NotFound,
        MapError::GroupFull { .. } | MapError::ClusterFull { .. } => Code::ResourceExhausted,
        MapError::StaleBeacon { .. } => Code::Aborted,
        MapError::InvalidConfig { .. } | MapError::OutOfRange { .. } => Code::InvalidArgument,
        MapError::GatewayDeleting { .. }
        | MapError::LocationAvailable { .. }
        | MapError::NotInDisaster { .. }
        | MapError::DisasterRecovering { .. } => Code::FailedPrecondition,
        MapError::StaleLeaderCommand { .. } => Code::Aborted,
        MapError::UnsupportedFeatures { .. } | MapError::FeatureNotRaised { .. } => {
            Code::FailedPrecondition
        }
        MapError::ConfirmationOutdated { .. } | MapError::MoveRefused { .. } => Code::Aborted,
        MapError::Invariant(_) | MapError::NestedBatch => Code::Internal,
    }
}

fn replica_code(e: &ReplicaError) -> Code {
    match e {
        ReplicaError::UnknownHost(_)
        | ReplicaError::UnknownVolume(_)
        | ReplicaError::UnknownAlias(_)
        | ReplicaError::UnknownReplica { .. }
        | ReplicaError::UnknownReplacement { .. } => Code::NotFound,
        ReplicaError::VolumeExists(_)
        | ReplicaError::AliasTaken { .. }
        | ReplicaError::ReplicaIdTaken { .. }
        | ReplicaError::ConflictingSupply { .. } => Code::AlreadyExists,
        ReplicaError::TooManyReplicas { .. }
        | ReplicaError::ShrinkRefused { .. }
        | ReplicaError::NotAcknowledgeable(_) => Code::InvalidArgument,
        ReplicaError::ReplicaNotBad { .. }
        | ReplicaError::GraceNotPassed { .. }
        | ReplicaError::AlreadyTerminating { .. }
        | ReplicaError::NoSyncSource { .. }
        | ReplicaError::StageOutOfOrder { .. }
        | ReplicaError::ReplacementFinished { .. }
        | ReplicaError::NotRetiring { .. }
        | ReplicaError::NoSafeReplica { .. } => Code::FailedPrecondition,
        ReplicaError::ReplacementBusy { .. } => Code::Aborted,
        ReplicaError::Invariant(_) => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_carries_the_leader_address() {
        let status = Status::from(MonitorError::NotLeader {
            leader: Some("10.0.0.2:7400".into()),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(leader::leader_hint(&status), Some("10.0.0.2:7400"));
    }

    #[test]
    fn refusals_get_codes_a_client_can_branch_on() {
        let key = gwmon_proto::domain::GroupKey::new(
            "rbd".parse().expect("pool"),
            "g".parse().expect("group"),
        );
        let status = Status::from(MonitorError::Refused(MapError::UnknownGroup(key)));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "refused: no gateway group rbd/g");
    }

    #[test]
    fn replica_refusals_are_not_leader_redirects() {
        let volume: gwmon_proto::domain::VolumeId = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
            .parse()
            .expect("volume id");
        let status = Status::from(MonitorError::Replica(ReplicaError::UnknownVolume(volume)));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            "unknown volume f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
        );
        let status = Status::from(MonitorError::Replica(ReplicaError::NoSyncSource { volume }));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(leader::leader_hint(&status), None);
    }
}
