//! What can go wrong in the agent, and the exit codes of `nvmeof-agent`.

use crate::cluster::{ClusterError, ReplicaId, VolumeId};
use crate::host::HostError;
use crate::state::StateError;

/// The exit codes: scripts and systemd branch on them.
pub mod exit {
    /// Done (or, for `run`, stopped by a signal).
    pub const OK: u8 = 0;
    /// The command failed at run time: a tool failed, the cluster refused or could not be
    /// reached, the host is not in the state the command needs.
    pub const FAILURE: u8 = 1;
    /// Bad command line or configuration (clap's own code for usage errors).
    pub const USAGE: u8 = 2;
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    State(#[from] StateError),
    /// Not one replica of the volume could be connected.
    #[error("volume {volume}: no replica could be connected: {details}")]
    NothingConnected { volume: VolumeId, details: String },
    /// A new array needs every replica; os-brick refuses the same way, since an array
    /// created over fewer legs would never get the missing ones.
    #[error(
        "volume {volume}: a new array needs all {expected} replicas, only {found} are connected{details}"
    )]
    TooFewLegs {
        volume: VolumeId,
        expected: u32,
        found: usize,
        details: String,
    },
    #[error("volume {volume} is not connected on this host (no running array {array})")]
    NotConnected { volume: VolumeId, array: String },
    /// A connected replica's namespace did not show up in sysfs in time.
    #[error("replica {replica}: no block device appeared within {seconds} s of connecting")]
    NoDevice { replica: ReplicaId, seconds: u64 },
    /// The cluster's answer does not make sense (a supplied replacement without its
    /// replica); a bug on one side, reported rather than acted on.
    #[error("unexpected answer from the cluster: {0}")]
    Protocol(String),
}

impl AgentError {
    pub fn exit_code(&self) -> u8 {
        exit::FAILURE
    }
}
