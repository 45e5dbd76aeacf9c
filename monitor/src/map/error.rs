//! Why the engine refused a command. A refused command changes nothing.

use gwmon_proto::domain::{Epoch, GatewayId, GroupKey, Location, Nqn};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MapError {
    #[error("no gateway group {0}")]
    UnknownGroup(GroupKey),
    #[error("no gateway {gateway} in group {key}")]
    UnknownGateway { key: GroupKey, gateway: GatewayId },
    #[error("group {key} already has {max} gateways, the most allowed")]
    GroupFull { key: GroupKey, max: u32 },
    #[error("gateway {gateway} in group {key} is being deleted")]
    GatewayDeleting { key: GroupKey, gateway: GatewayId },
    #[error("stale beacon from {gateway}: sequence {seq} is not after {last}")]
    StaleBeacon {
        gateway: GatewayId,
        seq: u64,
        last: u64,
    },
    #[error("no fence of {gateway} with epoch {epoch} in group {key}")]
    UnknownFence {
        key: GroupKey,
        gateway: GatewayId,
        epoch: Epoch,
    },
    #[error("no gateway of group {key} is at location \"{location}\"")]
    NoGatewaysAtLocation { key: GroupKey, location: Location },
    #[error("gateway {gateway} at location \"{location}\" is available; a disaster can only be declared for a location that is down")]
    LocationAvailable {
        location: Location,
        gateway: GatewayId,
    },
    #[error("location \"{location}\" of group {key} is not in disaster")]
    NotInDisaster { key: GroupKey, location: Location },
    #[error("location \"{location}\" of group {key} is being recovered; wait until it completes")]
    DisasterRecovering { key: GroupKey, location: Location },
    #[error("invalid configuration: {field} {reason}")]
    InvalidConfig { field: String, reason: String },
    /// The command would break a safety invariant. This is a bug in the engine, caught before
    /// it reaches the map; the command is refused and the map stays as it was.
    #[error("refused: the result would break an invariant: {0}")]
    Invariant(String),
    /// A command the leader decided from its own observations in one term reached the log
    /// in another: what it saw then no longer counts.
    #[error("refused: decided by the leader of term {decided} but appended in term {appended}")]
    StaleLeaderCommand { decided: u64, appended: u64 },
    /// A batch of commands inside a batch: never written by a monitor, refused at apply.
    #[error("refused: a batch of commands may not hold another batch")]
    NestedBatch,
    /// A feature level above what this build applies: the cluster was raised by a newer
    /// release, and this one must not rejoin it.
    #[error(
        "feature level {level} is above the {supported} this release applies: run the \
         release that raised it"
    )]
    UnsupportedFeatures { level: u32, supported: u32 },
    /// A command of a feature level the cluster has not reached.
    #[error("refused: needs feature level {needed}, and the cluster is at {level}")]
    FeatureNotRaised { needed: u32, level: u32 },
    /// A confirmation compared with a beacon that is no longer the gateway's last.
    #[error(
        "refused: the confirmation of {gateway} was based on its beacon {based_on}, and the \
         map holds {last}"
    )]
    ConfirmationOutdated {
        gateway: GatewayId,
        based_on: u64,
        last: u64,
    },
    /// A tunable outside its documented range (see `config::BOUNDS`).
    #[error("invalid configuration: {field} {value} is out of range; it must be {range}")]
    OutOfRange {
        field: String,
        value: u64,
        range: String,
    },
    /// The cluster holds as many groups, or gateways, as `max_groups` or `max_gateways`
    /// allow. (Added last: a reply encoded by an older monitor still decodes.)
    #[error("the cluster already has {max} {what}, the most max_{what} allows; delete some or raise it (nvme-gw config set max_{what}=N)")]
    ClusterFull { what: String, max: u32 },
    /// A namespace move the group cannot make now (the leader plans again).
    #[error("refused: namespace {nsid} of {nqn} cannot move: {reason}")]
    MoveRefused { nqn: Nqn, nsid: u32, reason: String },
}
