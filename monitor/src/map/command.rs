//! Everything that changes the map. Each command is committed through Raft and applied by
//! every replica with the same timestamp.

use gwmon_proto::domain::{Epoch, GatewayId, GatewayReport, GroupKey, Location};
use serde::{Deserialize, Serialize};

use super::config::{ConfigUpdate, ConfigUpdateV1, MapConfig, MapConfigV1};
use super::placement::NsMove;
use crate::codec::{self, CodecError};

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
    /// Raise the feature level (see [`super::features`]): proposed by the leader once every
    /// member supports it. Older releases cannot read it, which is why it waits for them.
    SetFeatures(u32),
    /// A beacon whose availability and subsystems are those the map holds, and whose
    /// epochs are new: the gateway applied a map or echoes a fence. Committed without the
    /// subsystem list (from feature level 2), and applied as that beacon would be. Refused
    /// unless the gateway's last committed beacon is `based_on`, the one the leader compared
    /// it with, so a report committed in between is never taken for the gateway's.
    ConfirmApplied {
        key: GroupKey,
        gateway: GatewayId,
        based_on: u64,
        seq: u64,
        applied_epoch: Epoch,
        fence_epoch: Epoch,
    },
    /// Start moving namespaces between ANA groups (namespace balancing, feature level 3):
    /// proposed by the leader, all or nothing.
    MoveNamespaces { key: GroupKey, moves: Vec<NsMove> },
}

/// The variant indexes (bincode's `u32` tag) of the two commands whose payload changed in
/// version 2; every other variant reads the same in both versions.
const SET_CONFIG_V1: u32 = 10;
const UPDATE_CONFIG_V1: u32 = 11;

impl Command {
    /// Version 1 of a command: as now, except that the tunables of `SetConfig` and
    /// `UpdateConfig` lacked `max_groups` and `max_gateways` (which take their defaults, or
    /// stay unchanged).
    pub(crate) fn decode_v1(body: &[u8]) -> Result<Command, CodecError> {
        const WHAT: &str = "map command";
        let tag = body
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes);
        let rest = body.get(4..).unwrap_or_default();
        match tag {
            Some(SET_CONFIG_V1) => {
                codec::decode_body::<MapConfigV1>(WHAT, rest).map(|c| Command::SetConfig(c.into()))
            }
            Some(UPDATE_CONFIG_V1) => codec::decode_body::<ConfigUpdateV1>(WHAT, rest)
                .map(|u| Command::UpdateConfig(u.into())),
            _ => codec::decode_body(WHAT, body),
        }
    }

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
            | Command::FenceCompleted { key, .. }
            | Command::ConfirmApplied { key, .. }
            | Command::MoveNamespaces { key, .. } => Some(key),
            Command::TimerTick
            | Command::SetConfig(_)
            | Command::UpdateConfig(_)
            | Command::SetFeatures(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 1's decoding relies on where the two config commands sit in the enum.
    #[test]
    fn the_config_commands_keep_their_variant_index() {
        let tag = |c: &Command| {
            let bytes = codec::encode(c).unwrap_or_default();
            bytes
                .get(1..5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        assert_eq!(
            tag(&Command::SetConfig(MapConfig::default())),
            Some(SET_CONFIG_V1)
        );
        assert_eq!(
            tag(&Command::UpdateConfig(ConfigUpdate::default())),
            Some(UPDATE_CONFIG_V1)
        );
    }

    #[test]
    fn version_1_config_commands_read_with_the_new_settings_unset() {
        let v1 = MapConfigV1 {
            max_gateways_per_group: 8,
            beacon_grace_ms: 3_000,
            fence_timeout_ms: 30_000,
            failback_prepare_ms: 2_000,
            failback_delay_ms: 0,
            skip_failover_redeploy_ms: 16_000,
            skip_failover_admin_ms: 5_000,
            blocklist_expiry_ms: 3_600_000,
            delete_grace_ms: 900_000,
        };
        let mut bytes = vec![1u8];
        bytes.extend(SET_CONFIG_V1.to_le_bytes());
        bytes.extend(
            codec::encode(&SetConfigBody(v1))
                .unwrap_or_default()
                .get(1..)
                .unwrap_or_default(),
        );
        let Ok(Command::SetConfig(c)) = codec::decode::<Command>(&bytes) else {
            panic!("a version 1 SetConfig decodes")
        };
        assert_eq!(c.max_gateways_per_group, 8);
        assert_eq!(c.beacon_grace_ms, 3_000);
        assert_eq!(c.max_groups, MapConfig::default().max_groups);

        let u1 = ConfigUpdateV1 {
            beacon_grace_ms: Some(2_000),
            ..ConfigUpdateV1::default()
        };
        let mut bytes = vec![1u8];
        bytes.extend(UPDATE_CONFIG_V1.to_le_bytes());
        bytes.extend(
            codec::encode(&UpdateBody(u1))
                .unwrap_or_default()
                .get(1..)
                .unwrap_or_default(),
        );
        let Ok(Command::UpdateConfig(u)) = codec::decode::<Command>(&bytes) else {
            panic!("a version 1 UpdateConfig decodes")
        };
        assert_eq!(u.beacon_grace_ms, Some(2_000));
        assert_eq!(u.max_groups, None);

        // Any other command reads as it always did.
        let tick = codec::encode(&Command::TimerTick).unwrap_or_default();
        let mut old = tick.clone();
        old[0] = 1;
        assert_eq!(
            codec::decode::<Command>(&old).ok(),
            Some(Command::TimerTick)
        );
    }

    /// The bodies above, encoded as version 1 wrote them (the codec's options).
    #[derive(Serialize, Deserialize)]
    struct SetConfigBody(MapConfigV1);
    #[derive(Serialize, Deserialize)]
    struct UpdateBody(ConfigUpdateV1);

    impl codec::Versioned for SetConfigBody {
        const WHAT: &'static str = "test";
        const VERSION: u8 = 1;
    }
    impl codec::Versioned for UpdateBody {
        const WHAT: &'static str = "test";
        const VERSION: u8 = 1;
    }
}
