//! Everything that changes the map. Each command is committed through Raft and applied by
//! every replica with the same timestamp.

use gwmon_proto::domain::{Epoch, GatewayId, GatewayReport, GroupKey, Location};
use serde::{Deserialize, Serialize};

use super::config::{ConfigUpdate, MapConfig};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a gateway to a group (`nvme-gw create`). Idempotent for an existing id.
    CreateGateway { key: GroupKey, gateway: GatewayId },
    /// Remove a gateway (`nvme-gw delete`): it fails over at once and is erased once no
    /// namespace is left in its ANA group.
    DeleteGateway { key: GroupKey, gateway: GatewayId },
    /// `nvme-gw enable` / `disable`.
    SetAdminState {
        key: GroupKey,
        gateway: GatewayId,
        enabled: bool,
    },
    /// `nvme-gw set-location`.
    SetLocation {
        key: GroupKey,
        gateway: GatewayId,
        location: Location,
    },
    /// `nvme-gw disaster-set`: the location's gateways are treated as failed.
    DisasterSet { key: GroupKey, location: Location },
    /// `nvme-gw disaster-clear`: let the location's gateways take their groups back.
    DisasterClear { key: GroupKey, location: Location },
    /// A beacon whose content differs from what the map holds.
    GatewayReport {
        key: GroupKey,
        gateway: GatewayId,
        report: GatewayReport,
    },
    /// The leader heard nothing from the gateway for the beacon grace.
    GatewayTimedOut { key: GroupKey, gateway: GatewayId },
    /// The fencer confirmed that `gateway` is cut off from storage as of fence `epoch`.
    FenceCompleted {
        key: GroupKey,
        gateway: GatewayId,
        epoch: Epoch,
    },
    /// Run expired timers and the repair pass on every group.
    TimerTick,
    /// Replace the engine's tunables.
    SetConfig(MapConfig),
    /// Change some tunables (`nvme-gw config set`), merged into the current ones.
    UpdateConfig(ConfigUpdate),
}

impl Command {
    /// The group a command is about; `None` for commands that span all groups.
    pub fn key(&self) -> Option<&GroupKey> {
        match self {
            Command::CreateGateway { key, .. }
            | Command::DeleteGateway { key, .. }
            | Command::SetAdminState { key, .. }
            | Command::SetLocation { key, .. }
            | Command::DisasterSet { key, .. }
            | Command::DisasterClear { key, .. }
            | Command::GatewayReport { key, .. }
            | Command::GatewayTimedOut { key, .. }
            | Command::FenceCompleted { key, .. } => Some(key),
            Command::TimerTick | Command::SetConfig(_) | Command::UpdateConfig(_) => None,
        }
    }
}
