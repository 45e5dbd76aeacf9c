//! The engine's tunables. They are part of the replicated map, so every replica decides
//! with the same values; changing one is itself a command.
//!
//! Every tunable has a range ([`BOUNDS`]): `validate` checks it, the admin service sends it
//! to `nvme-gw config show`, and the READMEs list the same numbers. A value outside its range
//! is refused whole, at `config set` and when a map is built, because a single extreme value
//! (a grace of `u64::MAX`, a failback that never ends) silently disables the safety net.

use serde::{Deserialize, Serialize};

use super::error::MapError;

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The range a tunable must stay in. Durations are in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The setting's name, as `config set` and the README spell it.
    pub name: &'static str,
    pub min: u64,
    pub max: u64,
    /// Another setting whose value is a further lower bound: `blocklist_expiry_ms` may not
    /// be below `fence_timeout_ms`, or a fence could lapse before the promotion it protects.
    pub at_least: Option<&'static str>,
}

/// Every tunable's range, in the order of [`MapConfig`]'s fields (and of `config show`).
/// The reasons for each range are on the fields of [`MapConfig`].
pub const BOUNDS: [Bounds; SETTINGS] = [
    bounds(
        "max_gateways_per_group",
        1,
        gwmon_proto::domain::AnaGroupId::MAX as u64,
    ),
    bounds("beacon_grace_ms", 500, 2 * MINUTE_MS),
    bounds("fence_timeout_ms", SECOND_MS, HOUR_MS),
    bounds("failback_prepare_ms", 0, MINUTE_MS),
    bounds("failback_delay_ms", 0, HOUR_MS),
    bounds("skip_failover_redeploy_ms", 0, 10 * MINUTE_MS),
    bounds("skip_failover_admin_ms", 0, 10 * MINUTE_MS),
    Bounds {
        at_least: Some("fence_timeout_ms"),
        ..bounds("blocklist_expiry_ms", SECOND_MS, 30 * DAY_MS)
    },
    bounds("delete_grace_ms", MINUTE_MS, 30 * DAY_MS),
    bounds("max_groups", 1, MAX_CLUSTER_SIZE),
    bounds("max_gateways", 1, MAX_CLUSTER_SIZE),
];

/// How many tunables there are.
pub const SETTINGS: usize = 11;

/// The most groups, or gateways, `max_groups` and `max_gateways` may allow: far beyond any
/// deployment (every gateway holds a session and beacons every second), and still a map
/// whose snapshot a monitor ships in seconds.
const MAX_CLUSTER_SIZE: u64 = 65_536;

const fn bounds(name: &'static str, min: u64, max: u64) -> Bounds {
    Bounds {
        name,
        min,
        max,
        at_least: None,
    }
}

/// Timers and limits of the gateway map, in milliseconds where they are durations.
///
/// Each default says why it has that value; Ceph's equivalent is named where there is one.
/// Each range (checked by [`MapConfig::validate`], listed in [`BOUNDS`]) says why it ends
/// where it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapConfig {
    /// Gateways (and so ANA groups) per `(pool, group)`. Default 16, Ceph's
    /// `MAX_SUPPORTED_ANA_GROUPS`. Range 1 to 128: 128 is the ANA groups Linux nvmet offers
    /// per port.
    pub max_gateways_per_group: u32,
    /// Silence after which the leader declares a gateway failed. Default 4 s: 4 beacons at
    /// the 1 s default interval, against Ceph's 7 s. The gateway lease (half of it, see
    /// gwmon-client's session) must stay below it with margin, so an isolated owner has demoted itself
    /// before anyone else is promoted. Range 500 ms to 2 min: below half a second a lease
    /// cannot fit a beacon round trip and a scheduling hiccup; above two minutes hosts time
    /// out their I/O (Linux's default `nvme_core.io_timeout` is 30 s, multipath queueing
    /// aside) long before a dead gateway would be failed over, and a cut-off gateway keeps
    /// a lease that long.
    pub beacon_grace_ms: u64,
    /// How long a failover target may take, once every gateway that might still serve its
    /// ANA group is fenced or has confirmed it stopped, to confirm the fence epoch in a
    /// beacon. Past it the target itself is treated as failed. The wait counts from the
    /// fence's completion, not from the start of the failover: a slow fencer must not make a
    /// healthy target look broken. With the fence still pending the target keeps waiting:
    /// promoting without a fence is never an option. Default 30 s, Ceph's
    /// WAIT_BLOCKLIST_CMPL timer. Range 1 s to 1 h: a target needs at least a beacon
    /// interval to answer, and one silent for an hour is not coming back.
    pub fence_timeout_ms: u64,
    /// The longest a failback waits for the holder to confirm it stopped serving (break
    /// before make). The owner is promoted the moment the holder confirmed and the owner
    /// has the handover's map, with no timer; a holder that has not confirmed by then is
    /// fenced instead. Default 2 s: four beacon rounds, and the lease; Ceph waits a fixed
    /// 3 s. Range 0 (fence unless already confirmed) to 1 min: the ANA group has no
    /// optimized path while a silent holder is waited for.
    pub failback_prepare_ms: u64,
    /// Wait after an owner becomes available before failing back to it, to ride out a
    /// flapping gateway. Default 0 s, as Ceph's `mon_nvmeofgw_failback_delay`. Range 0 to
    /// 1 h: the group is served meanwhile, but a longer delay means failback never happens
    /// in practice, which is better said by not configuring failback at all.
    pub failback_delay_ms: u64,
    /// After a gateway restarted within the grace (fast reboot), its own ANA group is not
    /// failed over for this long: the owner will be back and take it, avoiding a
    /// failover/failback pair. Not for a gateway damped for flapping, and never the whole
    /// group (Ceph holds every failover of the group when a recently failed gateway starts;
    /// gwmon does not). Default 16 s, Ceph's `mon_nvmeofgw_skip_failovers_interval` (the
    /// longest redeploy of a gateway). Range 0 to 10 min: the held ANA group has no
    /// optimized path meanwhile.
    pub skip_failover_redeploy_ms: u64,
    /// The ANA groups of an available gateway that is disabled or deleted wait at most this
    /// long before they are failed over: it is alive, will confirm it stopped serving, and
    /// then needs no fence. A disabled gateway's groups move as soon as it confirms. Default 5 s, as Ceph (which holds the whole group; gwmon only that gateway's
    /// groups, so a real failure elsewhere meanwhile is not delayed). Range 0 to 10 min, for
    /// the same reason as the redeploy window.
    pub skip_failover_admin_ms: u64,
    /// How long a fence (blocklist entry) stays in force once complete. Default 1 h, Ceph's
    /// `mon_osd_blocklist_default_expire`; a fenced gateway restarts long before that.
    /// Range `fence_timeout_ms` to 30 days: shorter than the fence timeout a fence could
    /// lapse before the promotion it protects; longer, the blocklist only grows.
    pub blocklist_expiry_ms: u64,
    /// After this long in the Deleting state a gateway is reported by the health check as
    /// stuck. Default 15 min, Ceph's `mon_nvmeofgw_delete_grace`. Range 1 min to 30 days:
    /// draining namespaces takes a moment, and a warning a month late is no warning.
    pub delete_grace_ms: u64,
    /// `(pool, group)`s the cluster accepts: a `create` for a new group beyond it is
    /// refused (`RESOURCE_EXHAUSTED`). Default 1,024. Range 1 to 65,536. Every group is in
    /// the replicated map and in every snapshot, so even an admin's runaway script must
    /// not grow it without bound. Lowering it below the groups there are refuses new
    /// groups and removes none.
    pub max_groups: u32,
    /// Gateways the cluster accepts, over all groups, refused like `max_groups`. Default
    /// 4,096. Range 1 to 65,536: each gateway holds a session with the leader and beacons
    /// every second, so this also bounds the leader's work.
    pub max_gateways: u32,
}

/// The tunables as version 1 of the map stored them, before `max_groups` and
/// `max_gateways`: read, never written; those two take their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapConfigV1 {
    pub max_gateways_per_group: u32,
    pub beacon_grace_ms: u64,
    pub fence_timeout_ms: u64,
    pub failback_prepare_ms: u64,
    pub failback_delay_ms: u64,
    pub skip_failover_redeploy_ms: u64,
    pub skip_failover_admin_ms: u64,
    pub blocklist_expiry_ms: u64,
    pub delete_grace_ms: u64,
}

impl From<MapConfigV1> for MapConfig {
    fn from(v1: MapConfigV1) -> MapConfig {
        MapConfig {
            max_gateways_per_group: v1.max_gateways_per_group,
            beacon_grace_ms: v1.beacon_grace_ms,
            fence_timeout_ms: v1.fence_timeout_ms,
            failback_prepare_ms: v1.failback_prepare_ms,
            failback_delay_ms: v1.failback_delay_ms,
            skip_failover_redeploy_ms: v1.skip_failover_redeploy_ms,
            skip_failover_admin_ms: v1.skip_failover_admin_ms,
            blocklist_expiry_ms: v1.blocklist_expiry_ms,
            delete_grace_ms: v1.delete_grace_ms,
            ..MapConfig::default()
        }
    }
}

/// A [`ConfigUpdate`] as version 1 of the commands stored it: read, never written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigUpdateV1 {
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

impl From<ConfigUpdateV1> for ConfigUpdate {
    fn from(v1: ConfigUpdateV1) -> ConfigUpdate {
        ConfigUpdate {
            max_gateways_per_group: v1.max_gateways_per_group,
            beacon_grace_ms: v1.beacon_grace_ms,
            fence_timeout_ms: v1.fence_timeout_ms,
            failback_prepare_ms: v1.failback_prepare_ms,
            failback_delay_ms: v1.failback_delay_ms,
            skip_failover_redeploy_ms: v1.skip_failover_redeploy_ms,
            skip_failover_admin_ms: v1.skip_failover_admin_ms,
            blocklist_expiry_ms: v1.blocklist_expiry_ms,
            delete_grace_ms: v1.delete_grace_ms,
            max_groups: None,
            max_gateways: None,
        }
    }
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
            max_groups: 1_024,
            max_gateways: 4_096,
        }
    }
}

impl MapConfig {
    /// The values in the order of [`BOUNDS`].
    pub fn values(&self) -> [u64; SETTINGS] {
        [
            u64::from(self.max_gateways_per_group),
            self.beacon_grace_ms,
            self.fence_timeout_ms,
            self.failback_prepare_ms,
            self.failback_delay_ms,
            self.skip_failover_redeploy_ms,
            self.skip_failover_admin_ms,
            self.blocklist_expiry_ms,
            self.delete_grace_ms,
            u64::from(self.max_groups),
            u64::from(self.max_gateways),
        ]
    }

    /// The inverse of [`MapConfig::values`]; a gateway count too large for `u32` becomes
    /// `u32::MAX` (only ever reached from a caller's own numbers, never from [`BOUNDS`]).
    fn from_values(v: [u64; SETTINGS]) -> MapConfig {
        MapConfig {
            max_gateways_per_group: u32::try_from(v[0]).unwrap_or(u32::MAX),
            beacon_grace_ms: v[1],
            fence_timeout_ms: v[2],
            failback_prepare_ms: v[3],
            failback_delay_ms: v[4],
            skip_failover_redeploy_ms: v[5],
            skip_failover_admin_ms: v[6],
            blocklist_expiry_ms: v[7],
            delete_grace_ms: v[8],
            max_groups: u32::try_from(v[9]).unwrap_or(u32::MAX),
            max_gateways: u32::try_from(v[10]).unwrap_or(u32::MAX),
        }
    }

    /// The lowest value each setting may take next to the others' current values (a lower
    /// bound that depends on another setting is taken from `self`).
    pub fn lowest(&self) -> MapConfig {
        let values = self.values();
        MapConfig::from_values(BOUNDS.map(|b| self.min_of(&b, &values)))
    }

    /// The highest value each setting may take.
    pub fn highest() -> MapConfig {
        MapConfig::from_values(BOUNDS.map(|b| b.max))
    }

    fn min_of(&self, b: &Bounds, values: &[u64; SETTINGS]) -> u64 {
        let other = b.at_least.and_then(|name| {
            BOUNDS
                .iter()
                .position(|o| o.name == name)
                .and_then(|i| values.get(i).copied())
        });
        other.map_or(b.min, |o| b.min.max(o))
    }

    /// Refuse any value outside its range; the error names the first such setting, its
    /// value and the range.
    pub fn validate(&self) -> Result<(), MapError> {
        let values = self.values();
        for (b, value) in BOUNDS.iter().zip(values) {
            let min = self.min_of(b, &values);
            if value < min || value > b.max {
                let low = match b.at_least {
                    Some(other) if min > b.min => format!("{min} ({other})"),
                    _ => min.to_string(),
                };
                return Err(MapError::OutOfRange {
                    field: b.name.to_owned(),
                    value,
                    range: format!("{low} to {}", b.max),
                });
            }
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
    pub max_groups: Option<u32>,
    pub max_gateways: Option<u32>,
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
            max_groups: self.max_groups.unwrap_or(base.max_groups),
            max_gateways: self.max_gateways.unwrap_or(base.max_gateways),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == ConfigUpdate::default()
    }
}
