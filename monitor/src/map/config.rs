//! The engine's tunables. They are part of the replicated map, so every replica decides
//! with the same values; changing one is itself a command.

use serde::{Deserialize, Serialize};

use super::error::MapError;

/// Timers and limits of the gateway map, in milliseconds where they are durations.
///
/// Each default says why it has that value; Ceph's equivalent is named where there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapConfig {
    /// Gateways (and so ANA groups) per `(pool, group)`. Default 16, Ceph's
    /// `MAX_SUPPORTED_ANA_GROUPS`; at most 128, the ANA groups Linux nvmet offers per port.
    pub max_gateways_per_group: u32,
    /// Silence after which the leader declares a gateway failed. Default 4 s: 4 beacons at
    /// the 1 s default interval, against Ceph's 7 s. The gateway lease (issue "gateway
    /// sessions") must stay below it with margin, so an isolated owner has demoted itself
    /// before anyone else is promoted.
    pub beacon_grace_ms: u64,
    /// How long a failover target may wait for its fence to complete and for its own beacon
    /// confirming the fence epoch. Past it, with the fence complete but no confirmation, the
    /// target itself is treated as failed. With the fence still pending the target keeps
    /// waiting: promoting without a fence is never an option. Default 30 s, Ceph's
    /// WAIT_BLOCKLIST_CMPL timer.
    pub fence_timeout_ms: u64,
    /// The least time a failback holder spends inaccessible before the owner becomes
    /// optimized again (break before make), and both must also have confirmed the epoch.
    /// Default 2 s: one round of beacons plus margin; Ceph uses 3 s.
    pub failback_prepare_ms: u64,
    /// Wait after an owner becomes available before failing back to it, to ride out a
    /// flapping gateway. Default 0 s, as Ceph's `mon_nvmeofgw_failback_delay`.
    pub failback_delay_ms: u64,
    /// After a gateway restarted within the grace (fast reboot), its own ANA group is not
    /// failed over for this long: the owner will be back and take it, avoiding a
    /// failover/failback pair. When a gateway that was failed recently starts again (a
    /// redeploy restarting gateways one after another), the whole group holds failovers for
    /// this long, as Ceph does. Default 16 s, Ceph's `mon_nvmeofgw_skip_failovers_interval`
    /// (the longest redeploy of a gateway).
    pub skip_failover_redeploy_ms: u64,
    /// The ANA groups of an available gateway that is disabled or deleted are not failed
    /// over for this long: it is alive, will confirm it stopped serving, and then needs no
    /// fence. Default 5 s, as Ceph (which holds the whole group; gwmon only that gateway's
    /// groups, so a real failure elsewhere meanwhile is not delayed).
    pub skip_failover_admin_ms: u64,
    /// How long a fence (blocklist entry) stays in force once complete. Default 1 h, Ceph's
    /// `mon_osd_blocklist_default_expire`; a fenced gateway restarts long before that.
    pub blocklist_expiry_ms: u64,
    /// After this long in the Deleting state a gateway is reported by the health check as
    /// stuck. Default 15 min, Ceph's `mon_nvmeofgw_delete_grace`.
    pub delete_grace_ms: u64,
}

impl Default for MapConfig {
    fn default() -> Self {
        MapConfig {
            max_gateways_per_group: 16,
            beacon_grace_ms: 4_000,
            fence_timeout_ms: 30_000,
            failback_prepare_ms: 2_000,
            failback_delay_ms: 0,
            skip_failover_redeploy_ms: 16_000,
            skip_failover_admin_ms: 5_000,
            blocklist_expiry_ms: 3_600_000,
            delete_grace_ms: 900_000,
        }
    }
}

impl MapConfig {
    /// Refuse values that would make the engine unsafe or useless.
    pub fn validate(&self) -> Result<(), MapError> {
        let bad = |field: &'static str, reason: &'static str| {
            Err(MapError::InvalidConfig {
                field: field.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if self.max_gateways_per_group == 0
            || self.max_gateways_per_group > gwmon_proto::domain::AnaGroupId::MAX
        {
            return bad("max_gateways_per_group", "must be 1 to 128");
        }
        if self.beacon_grace_ms == 0 {
            return bad("beacon_grace_ms", "must be more than zero");
        }
        if self.fence_timeout_ms == 0 {
            return bad("fence_timeout_ms", "must be more than zero");
        }
        if self.blocklist_expiry_ms < self.fence_timeout_ms {
            return bad(
                "blocklist_expiry_ms",
                "must be at least fence_timeout_ms, or a fence could lapse before it is used",
            );
        }
        Ok(())
    }
}

/// A change to some tunables, merged into the current ones when it is applied, so two
/// operators changing different settings at once do not undo each other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigUpdate {
    pub max_gateways_per_group: Option<u32>,
    pub beacon_grace_ms: Option<u64>,
    pub fence_timeout_ms: Option<u64>,
    pub failback_prepare_ms: Option<u64>,
    pub failback_delay_ms: Option<u64>,
    pub skip_failover_redeploy_ms: Option<u64>,
    pub skip_failover_admin_ms: Option<u64>,
    pub blocklist_expiry_ms: Option<u64>,
    pub delete_grace_ms: Option<u64>,
}

impl ConfigUpdate {
    /// `base` with the given settings replaced.
    pub fn merged(&self, base: &MapConfig) -> MapConfig {
        MapConfig {
            max_gateways_per_group: self
                .max_gateways_per_group
                .unwrap_or(base.max_gateways_per_group),
            beacon_grace_ms: self.beacon_grace_ms.unwrap_or(base.beacon_grace_ms),
            fence_timeout_ms: self.fence_timeout_ms.unwrap_or(base.fence_timeout_ms),
            failback_prepare_ms: self.failback_prepare_ms.unwrap_or(base.failback_prepare_ms),
            failback_delay_ms: self.failback_delay_ms.unwrap_or(base.failback_delay_ms),
            skip_failover_redeploy_ms: self
                .skip_failover_redeploy_ms
                .unwrap_or(base.skip_failover_redeploy_ms),
            skip_failover_admin_ms: self
                .skip_failover_admin_ms
                .unwrap_or(base.skip_failover_admin_ms),
            blocklist_expiry_ms: self.blocklist_expiry_ms.unwrap_or(base.blocklist_expiry_ms),
            delete_grace_ms: self.delete_grace_ms.unwrap_or(base.delete_grace_ms),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == ConfigUpdate::default()
    }
}
