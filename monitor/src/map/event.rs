//! What happened when a command was applied: for logs, metrics and the event stream.

use gwmon_proto::domain::{AnaGroupId, Epoch, GatewayId, GroupKey};
use serde::{Deserialize, Serialize};

use super::gateway::Availability;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    GatewayCreated {
        key: GroupKey,
        gateway: GatewayId,
        ana_group: AnaGroupId,
    },
    /// The gateway record is gone for good.
    GatewayRemoved {
        key: GroupKey,
        gateway: GatewayId,
    },
    AvailabilityChanged {
        key: GroupKey,
        gateway: GatewayId,
        from: Availability,
        to: Availability,
    },
    /// A gateway that was declared failed beaconed without restarting; it stays failed.
    ZombieRefused {
        key: GroupKey,
        gateway: GatewayId,
    },
    /// `gateway` stopped being optimized for `ana_group` without handing it over.
    Released {
        key: GroupKey,
        gateway: GatewayId,
        ana_group: AnaGroupId,
    },
    /// A fence of `gateway` was issued; the leader's fencer runs it.
    FenceIssued {
        key: GroupKey,
        gateway: GatewayId,
        epoch: Epoch,
    },
    FenceCompleted {
        key: GroupKey,
        gateway: GatewayId,
        epoch: Epoch,
    },
    /// Failover: `to` is published optimized for `ana_group` and waits for the fence.
    FailoverStarted {
        key: GroupKey,
        ana_group: AnaGroupId,
        to: GatewayId,
        fence_epoch: Epoch,
    },
    /// `gateway` is now the active, serving owner of `ana_group`.
    Promoted {
        key: GroupKey,
        ana_group: AnaGroupId,
        gateway: GatewayId,
    },
    /// Failback or relocation: `from` stops serving so `to` can take the group.
    FailbackStarted {
        key: GroupKey,
        ana_group: AnaGroupId,
        from: GatewayId,
        to: GatewayId,
    },
    /// A failover target did not confirm its fence in time and was itself failed.
    FenceWaitExpired {
        key: GroupKey,
        ana_group: AnaGroupId,
        gateway: GatewayId,
    },
    FenceExpired {
        key: GroupKey,
        gateway: GatewayId,
        epoch: Epoch,
    },
    DisasterRecovered {
        key: GroupKey,
        location: String,
    },
}

impl Event {
    /// The group the event is about.
    pub fn key(&self) -> &GroupKey {
        match self {
            Event::GatewayCreated { key, .. }
            | Event::GatewayRemoved { key, .. }
            | Event::AvailabilityChanged { key, .. }
            | Event::ZombieRefused { key, .. }
            | Event::Released { key, .. }
            | Event::FenceIssued { key, .. }
            | Event::FenceCompleted { key, .. }
            | Event::FailoverStarted { key, .. }
            | Event::Promoted { key, .. }
            | Event::FailbackStarted { key, .. }
            | Event::FenceWaitExpired { key, .. }
            | Event::FenceExpired { key, .. }
            | Event::DisasterRecovered { key, .. } => key,
        }
    }
}
