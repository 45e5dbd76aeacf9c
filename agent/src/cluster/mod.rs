//! What the agent needs from the monitor cluster, as a trait.
//!
//! The daemon and the connector are written against [`Cluster`], not against gRPC, so that
//! their tests run against an in-memory fake with the simulated host, and so that the wire
//! format can change without touching the replacement logic.
//!
//! * [`types`]: the agent's view of volumes, replicas and replacements.
//! * [`memory`]: an in-memory cluster that keeps the same rules (grace, stage order) for
//!   tests.
//! * [`grpc`]: the real one, over `ReplicaService`, following the leader.

pub mod grpc;
pub mod memory;
pub mod types;

use std::future::Future;

pub use types::{
    HostId, HostIdentity, HostName, Portal, Replacement, ReplacementId, ReplicaId, ReplicaInfo,
    ReplicaReport, ReplicaState, Stage, VolumeId, VolumeInfo,
};

/// Why the cluster did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// No monitor could answer (all down, no quorum, an election running): try again next
    /// period.
    #[error("no monitor could answer: {0}")]
    Unavailable(String),
    /// The cluster's considered answer: the request will not succeed as it is.
    #[error("{message}")]
    Refused { why: Refusal, message: String },
    /// An answer that does not fit the protocol (a field missing or out of range): a
    /// version mismatch or a bug on one side; never acted on.
    #[error("unexpected answer from the cluster: {0}")]
    BadAnswer(String),
}

/// The refusals the agent branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown volume, replica or replacement.
    NotFound,
    /// Not now: the grace period has not passed, a replacement is already under way, a
    /// stage acknowledged out of order.
    NotYet,
    /// The request itself is wrong (a bad id, a replica not of this volume).
    Invalid,
    Other,
}

impl ClusterError {
    pub fn refused(why: Refusal, message: impl Into<String>) -> Self {
        ClusterError::Refused {
            why,
            message: message.into(),
        }
    }

    pub fn is(&self, want: Refusal) -> bool {
        matches!(self, ClusterError::Refused { why, .. } if *why == want)
    }
}

/// The cluster, as the agent uses it. Every call may be retried: the cluster treats a
/// repeated report, request or acknowledgement as the same one.
pub trait Cluster: Send + Sync + 'static {
    /// Register this host (or update its id and name). Needed once before anything else
    /// names the host; `connect` calls it first.
    fn register(
        &self,
        host: &HostIdentity,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Register this host, or refresh its registration; the heartbeat the cluster
    /// measures the host's liveness by. `volumes` are the volumes it has connected.
    fn heartbeat(
        &self,
        host: &HostIdentity,
        volumes: &[VolumeId],
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// What to connect: the volume with only the replicas that are safe to build the array
    /// from (never a faulty one, never one older than the in-sync ones). A refusal says
    /// why none is.
    fn connection_info(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
    ) -> impl Future<Output = Result<VolumeInfo, ClusterError>> + Send;

    /// The volume as the cluster holds it: every replica with its state, and the
    /// replacement under way, if any.
    fn volume(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
    ) -> impl Future<Output = Result<VolumeInfo, ClusterError>> + Send;

    /// Report what this host sees of some replicas of a volume.
    fn report(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        reports: &[ReplicaReport],
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Ask for `replica` to be replaced. The cluster accepts once the volume's grace period
    /// has passed since the replica went bad (measured by the cluster); before that it
    /// refuses with [`Refusal::NotYet`]. Asking again for the same replica returns the
    /// replacement already under way.
    fn request_replacement(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        replica: &ReplicaId,
    ) -> impl Future<Output = Result<Replacement, ClusterError>> + Send;

    /// Acknowledge that this host has done what `done` names (the new leg attached, synced,
    /// the old one retired). The cluster commits it and returns the replacement as it now
    /// stands. Acknowledging a stage already committed returns the current state, so an
    /// acknowledgement whose answer was lost can be sent again.
    fn acknowledge(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        replacement: &Replacement,
        done: Stage,
    ) -> impl Future<Output = Result<Replacement, ClusterError>> + Send;
}

impl<C: Cluster> Cluster for std::sync::Arc<C> {
    fn register(
        &self,
        host: &HostIdentity,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send {
        (**self).register(host)
    }

    fn heartbeat(
        &self,
        host: &HostIdentity,
        volumes: &[VolumeId],
    ) -> impl Future<Output = Result<(), ClusterError>> + Send {
        (**self).heartbeat(host, volumes)
    }

    fn connection_info(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
    ) -> impl Future<Output = Result<VolumeInfo, ClusterError>> + Send {
        (**self).connection_info(host, volume)
    }

    fn volume(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
    ) -> impl Future<Output = Result<VolumeInfo, ClusterError>> + Send {
        (**self).volume(host, volume)
    }

    fn report(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        reports: &[ReplicaReport],
    ) -> impl Future<Output = Result<(), ClusterError>> + Send {
        (**self).report(host, volume, reports)
    }

    fn request_replacement(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        replica: &ReplicaId,
    ) -> impl Future<Output = Result<Replacement, ClusterError>> + Send {
        (**self).request_replacement(host, volume, replica)
    }

    fn acknowledge(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        replacement: &Replacement,
        done: Stage,
    ) -> impl Future<Output = Result<Replacement, ClusterError>> + Send {
        (**self).acknowledge(host, volume, replacement, done)
    }
}
