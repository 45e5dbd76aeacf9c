//! The gateway map and its one way of changing: [`GatewayMap::apply`].

use std::collections::BTreeMap;
use std::sync::Arc;

use gwmon_proto::domain::{Epoch, GatewayId, GatewayReport, GroupKey, MapSlice, Subsystem};
use serde::{Deserialize, Serialize};

use super::command::Command;
use super::config::{MapConfig, MapConfigV1};
use super::error::MapError;
use super::event::Event;
use super::gateway::Availability;
use super::group::{GroupState, GroupStateV2, GroupStateV4, GroupStateV4Ref};
use super::time::Timestamp;
use super::transition::Ctx;

/// The replicated gateway map: every `(pool, group)`, the tunables, the map epoch and the
/// feature level.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct GatewayMap {
    epoch: Epoch,
    /// The latest command time applied. A command stamped earlier (a new leader whose clock
    /// is a little behind) is applied at this time instead, so time in the map never runs
    /// backwards and deadlines stay ordered.
    time: Timestamp,
    config: MapConfig,
    groups: BTreeMap<GroupKey, GroupState>,
    /// Which rules apply (see [`super::features`]); written only from version 4, so that
    /// a map at level 0 is written exactly as the previous release wrote it and monitors of
    /// that release still read its snapshots during a rolling upgrade (in self-describing
    /// formats it is then absent, hence the default).
    #[serde(default)]
    features: u32,
}

/// The map as version 3 stores it: every field but the feature level, groups without
/// placements.
#[derive(Deserialize)]
struct GatewayMapV3 {
    epoch: Epoch,
    time: Timestamp,
    config: MapConfig,
    groups: BTreeMap<GroupKey, GroupStateV4>,
}

/// The map as version 4 stores it: groups without placements.
#[derive(Deserialize)]
struct GatewayMapV4 {
    epoch: Epoch,
    time: Timestamp,
    config: MapConfig,
    groups: BTreeMap<GroupKey, GroupStateV4>,
    features: u32,
}

/// The groups in version 4's layout, borrowed.
struct GroupsV4<'a>(&'a BTreeMap<GroupKey, GroupState>);

impl Serialize for GroupsV4<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, g)| (k, GroupStateV4Ref::from(g))))
    }
}

#[derive(Serialize)]
struct GatewayMapV3Ref<'a> {
    epoch: &'a Epoch,
    time: &'a Timestamp,
    config: &'a MapConfig,
    groups: GroupsV4<'a>,
}

#[derive(Serialize)]
struct GatewayMapV4Ref<'a> {
    epoch: &'a Epoch,
    time: &'a Timestamp,
    config: &'a MapConfig,
    groups: GroupsV4<'a>,
    features: u32,
}

#[derive(Serialize)]
struct GatewayMapV5Ref<'a> {
    epoch: &'a Epoch,
    time: &'a Timestamp,
    config: &'a MapConfig,
    groups: &'a BTreeMap<GroupKey, GroupState>,
    features: u32,
}

/// Version 3's layout while the level is 0, version 4's at levels 1 and 2, version 5's
/// from level 3 (see [`GatewayMap::written_version`]): a map is written as the oldest
/// release that may still be running beside this one reads it.
impl Serialize for GatewayMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.written_version() {
            3 => GatewayMapV3Ref {
                epoch: &self.epoch,
                time: &self.time,
                config: &self.config,
                groups: GroupsV4(&self.groups),
            }
            .serialize(s),
            4 => GatewayMapV4Ref {
                epoch: &self.epoch,
                time: &self.time,
                config: &self.config,
                groups: GroupsV4(&self.groups),
                features: self.features,
            }
            .serialize(s),
            _ => GatewayMapV5Ref {
                epoch: &self.epoch,
                time: &self.time,
                config: &self.config,
                groups: &self.groups,
                features: self.features,
            }
            .serialize(s),
        }
    }
}

/// A command that was applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// False when the command was valid but had nothing to do (an idempotent create, a
    /// tick with no timer due): the map epoch did not move.
    pub changed: bool,
    pub events: Vec<Event>,
}

/// What a beacon would do, as [`GatewayMap::check_beacon`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeaconCheck {
    /// It changes the map: its availability, subsystems or epochs differ.
    pub changes: bool,
    /// Its availability and subsystems are those the map holds and the feature level
    /// allows confirmations: the gateway's last committed beacon, which the confirmation
    /// is based on.
    pub confirms_from: Option<u64>,
}

impl BeaconCheck {
    /// As a [`Command::ConfirmApplied`] when only the beacon's epochs can be new (a few
    /// dozen bytes instead of the gateway's whole subsystem list), else as the
    /// [`Command::GatewayReport`] itself.
    pub fn command(self, key: &GroupKey, gateway: &GatewayId, report: GatewayReport) -> Command {
        match self.confirms_from {
            Some(based_on) => Command::ConfirmApplied {
                key: key.clone(),
                gateway: gateway.clone(),
                based_on,
                seq: report.seq,
                applied_epoch: report.applied_epoch,
                fence_epoch: report.fence_epoch,
            },
            None => Command::GatewayReport {
                key: key.clone(),
                gateway: gateway.clone(),
                report,
            },
        }
    }
}

/// The result of applying a command. A refusal leaves the map exactly as it was.
pub type Outcome = Result<Applied, MapError>;

/// The map as version 1 stored it (tunables without `max_groups` and `max_gateways`):
/// read, never written.
#[derive(Deserialize)]
struct GatewayMapV1 {
    epoch: Epoch,
    time: Timestamp,
    config: MapConfigV1,
    groups: BTreeMap<GroupKey, GroupStateV2>,
}

/// The map as version 2 stored it (groups without flap damping): read, never written.
#[derive(Deserialize)]
struct GatewayMapV2 {
    epoch: Epoch,
    time: Timestamp,
    config: MapConfig,
    groups: BTreeMap<GroupKey, GroupStateV2>,
}

fn groups_from_v2(groups: BTreeMap<GroupKey, GroupStateV2>) -> BTreeMap<GroupKey, GroupState> {
    groups.into_iter().map(|(k, g)| (k, g.into())).collect()
}

impl GatewayMap {
    /// Refuse a new gateway (and a new group) past `max_gateways` (`max_groups`); one that
    /// exists already, even draining, takes no more room.
    fn room_for(&self, key: &GroupKey, gateway: &GatewayId) -> Result<(), MapError> {
        let group = self.groups.get(key);
        if group.is_some_and(|g| g.gateways.contains_key(gateway)) {
            return Ok(());
        }
        let full = |what: &str, max: u32| MapError::ClusterFull {
            what: what.to_owned(),
            max,
        };
        if group.is_none() && self.groups.len() >= self.config.max_groups as usize {
            return Err(full("groups", self.config.max_groups));
        }
        let gateways: usize = self.groups.values().map(|g| g.gateways.len()).sum();
        if gateways >= self.config.max_gateways as usize {
            return Err(full("gateways", self.config.max_gateways));
        }
        Ok(())
    }

    /// Version 1 of the map, with the tunables it lacked at their defaults.
    pub(crate) fn decode_v1(body: &[u8]) -> Result<GatewayMap, crate::codec::CodecError> {
        let v1: GatewayMapV1 = crate::codec::decode_body("gateway map", body)?;
        Ok(GatewayMap {
            epoch: v1.epoch,
            time: v1.time,
            config: v1.config.into(),
            groups: groups_from_v2(v1.groups),
            features: 0,
        })
    }

    /// Version 2 of the map, with no gateway damped.
    pub(crate) fn decode_v2(body: &[u8]) -> Result<GatewayMap, crate::codec::CodecError> {
        let v2: GatewayMapV2 = crate::codec::decode_body("gateway map", body)?;
        Ok(GatewayMap {
            epoch: v2.epoch,
            time: v2.time,
            config: v2.config,
            groups: groups_from_v2(v2.groups),
            features: 0,
        })
    }

    /// Version 3 of the map: the feature level is 0, and nothing is placed.
    pub(crate) fn decode_v3(body: &[u8]) -> Result<GatewayMap, crate::codec::CodecError> {
        let v3: GatewayMapV3 = crate::codec::decode_body("gateway map", body)?;
        Ok(GatewayMap {
            epoch: v3.epoch,
            time: v3.time,
            config: v3.config,
            groups: v3.groups.into_iter().map(|(k, g)| (k, g.into())).collect(),
            features: 0,
        })
    }

    /// Version 4 of the map: nothing is placed.
    pub(crate) fn decode_v4(body: &[u8]) -> Result<GatewayMap, crate::codec::CodecError> {
        let v4: GatewayMapV4 = crate::codec::decode_body("gateway map", body)?;
        Ok(GatewayMap {
            epoch: v4.epoch,
            time: v4.time,
            config: v4.config,
            groups: v4.groups.into_iter().map(|(k, g)| (k, g.into())).collect(),
            features: v4.features,
        })
    }

    /// The version [`Serialize`] writes: 3 while the level is 0, 4 at levels 1 and 2,
    /// else 5.
    pub(crate) fn written_version(&self) -> u8 {
        match self.features {
            0 => 3,
            1 | 2 => 4,
            _ => 5,
        }
    }

    /// The feature level: which rules apply (see [`super::features`]).
    pub fn features(&self) -> u32 {
        self.features
    }

    pub fn new(config: MapConfig) -> Result<Self, MapError> {
        config.validate()?;
        Ok(GatewayMap {
            epoch: Epoch::ZERO,
            time: Timestamp::ZERO,
            config,
            groups: BTreeMap::new(),
            features: 0,
        })
    }

    /// Grows by one with every applied command that changed something.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn config(&self) -> &MapConfig {
        &self.config
    }

    pub fn groups(&self) -> &BTreeMap<GroupKey, GroupState> {
        &self.groups
    }

    pub fn group(&self, key: &GroupKey) -> Option<&GroupState> {
        self.groups.get(key)
    }

    /// Makes the equal fencing nonces of each gateway's namespaces one shared value again
    /// ([`gwmon_proto::domain::share_nonces`]), as applying a report does: a map decoded
    /// from a snapshot holds a copy per namespace, which at thousands of namespaces per
    /// gateway is most of its memory.
    pub fn share_nonces(&mut self) {
        for gw in self
            .groups
            .values_mut()
            .flat_map(|g| g.gateways.values_mut())
        {
            let subsystems: &mut Vec<_> = std::sync::Arc::make_mut(&mut gw.subsystems);
            gwmon_proto::domain::share_nonces(subsystems);
        }
    }

    /// The map slice for one gateway.
    pub fn slice(&self, key: &GroupKey, gateway: &GatewayId) -> Option<MapSlice> {
        self.groups.get(key)?.slice(gateway)
    }

    /// What a beacon would do to the map, in one look at the gateway: whether it changes
    /// anything (the leader asks before proposing, so an unchanged beacon costs no Raft
    /// write), and how it is committed if so (see [`BeaconCheck::command`]).
    pub fn check_beacon(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        report: &GatewayReport,
    ) -> BeaconCheck {
        self.check_beacon_with(key, gateway, report, |held| **held == report.subsystems)
    }

    /// [`GatewayMap::check_beacon`], with `same_subsystems` telling whether the subsystems
    /// the gateway holds in the map are those of the beacon (asked only if its availability
    /// is the map's). A session that remembers which list it last found equal answers
    /// without comparing them again.
    pub fn check_beacon_with(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        report: &GatewayReport,
        same_subsystems: impl FnOnce(&Arc<Vec<Subsystem>>) -> bool,
    ) -> BeaconCheck {
        let Some(gw) = self.groups.get(key).and_then(|g| g.gateways.get(gateway)) else {
            return BeaconCheck {
                changes: true,
                confirms_from: None,
            };
        };
        let same_report =
            gw.reported == Some(report.availability) && same_subsystems(&gw.subsystems);
        BeaconCheck {
            changes: !same_report
                || gw.applied_epoch != report.applied_epoch
                || gw.fence_epoch != report.fence_epoch,
            confirms_from: (same_report && self.features >= super::features::CONFIRMATIONS)
                .then_some(gw.last_seq),
        }
    }

    /// Whether a beacon would change the map ([`GatewayMap::check_beacon`]).
    pub fn report_changes(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        report: &GatewayReport,
    ) -> bool {
        self.check_beacon(key, gateway, report).changes
    }

    /// The command the leader commits for a beacon ([`GatewayMap::check_beacon`]).
    pub fn beacon_command(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        report: GatewayReport,
    ) -> Command {
        self.check_beacon(key, gateway, &report)
            .command(key, gateway, report)
    }

    /// Replace the tunables with `config` if every value is within its range and the grace
    /// is safe to switch to now.
    ///
    /// A raised grace goes at once. A lowered one may at most halve in one change while any
    /// gateway is available: gateways hold leases of up to half the grace in force when
    /// they were acked. Under the same leader its liveness loop keeps every timer until
    /// those have run out, and gateways adopt the shorter lease from their next ack; but a
    /// leader elected right after the change restarts its timers and fails a gateway over
    /// after the *new* grace, so the new grace must be at least half the old one for an old
    /// lease to end first. With the range capped at 120 s, any value is at most eight steps
    /// away. With no gateway available no lease is out, and anything in range goes.
    fn set_config(&mut self, config: MapConfig) -> Result<bool, MapError> {
        config.validate()?;
        let leases_out = self.groups.values().any(|g| {
            g.gateways
                .values()
                .any(|gw| gw.availability == Availability::Available)
        });
        let floor = self.config.beacon_grace_ms.div_ceil(2);
        if leases_out && config.beacon_grace_ms < floor {
            return Err(MapError::InvalidConfig {
                field: "beacon_grace_ms".to_owned(),
                reason: format!(
                    "may at most halve in one change while gateways are available (they hold \
                     leases of half the current {} ms, and a newly elected leader counts only \
                     the new grace): set {floor} first",
                    self.config.beacon_grace_ms
                ),
            });
        }
        let changed = config != self.config;
        self.config = config;
        Ok(changed)
    }

    /// Apply one committed command at the leader's time `now`. Deterministic: the same map,
    /// command and time give the same result on every replica.
    pub fn apply(&mut self, cmd: &Command, now: Timestamp) -> Outcome {
        let now = now.max(self.time);
        let mut events = Vec::new();
        let changed = match cmd {
            Command::SetConfig(config) => self.set_config(config.clone())?,
            Command::UpdateConfig(update) => self.set_config(update.merged(&self.config))?,
            Command::SetFeatures(level) => self.raise_features(*level)?,
            Command::TimerTick => {
                let keys: Vec<GroupKey> = self.groups.keys().cloned().collect();
                let mut any = false;
                for key in keys {
                    any |= self.transact(&key, now, &mut events, |_, _| Ok(()))?;
                }
                any
            }
            Command::CreateGateway { key, gateway } => {
                self.room_for(key, gateway)?;
                self.transact(key, now, &mut events, |g, ctx| {
                    g.create(gateway, ctx).map(drop)
                })?
            }
            Command::DeleteGateway { key, gateway } => {
                // Deleting what is not there succeeds and changes nothing, as in Ceph: a
                // delete whose answer was lost may be sent again, even once the gateway was
                // erased.
                let present = self
                    .groups
                    .get(key)
                    .is_some_and(|g| g.gateways.contains_key(gateway));
                present && self.transact(key, now, &mut events, |g, ctx| g.delete(gateway, ctx))?
            }
            Command::ConfirmApplied { key, .. } => {
                self.require(super::features::CONFIRMATIONS)?;
                self.apply_to_group(key, cmd, now, &mut events)?
            }
            Command::MoveNamespaces { key, .. } => {
                self.require(super::features::NAMESPACE_BALANCING)?;
                self.apply_to_group(key, cmd, now, &mut events)?
            }
            Command::SetAdminState { key, .. }
            | Command::SetLocation { key, .. }
            | Command::DisasterSet { key, .. }
            | Command::DisasterClear { key, .. }
            | Command::GatewayReport { key, .. }
            | Command::GatewayTimedOut { key, .. }
            | Command::FenceCompleted { key, .. } => {
                self.apply_to_group(key, cmd, now, &mut events)?
            }
        };
        if changed {
            self.epoch = self.epoch.next();
            self.time = now;
        }
        Ok(Applied { changed, events })
    }

    /// A command of one existing group (`key`'s), applied to a copy of the group that
    /// replaces it if the command changed it.
    fn apply_to_group(
        &mut self,
        key: &GroupKey,
        cmd: &Command,
        now: Timestamp,
        events: &mut Vec<Event>,
    ) -> Result<bool, MapError> {
        self.existing(key)?;
        self.transact(key, now, events, |g, ctx| match cmd {
            Command::SetAdminState {
                gateway, enabled, ..
            } => g.set_admin(gateway, *enabled, ctx),
            Command::SetLocation {
                gateway, location, ..
            } => g.set_location(gateway, location, ctx),
            Command::DisasterSet { location, .. } => g.disaster_set(location, ctx),
            Command::DisasterClear { location, .. } => g.disaster_clear(location, ctx),
            Command::GatewayReport {
                gateway, report, ..
            } => g.report(gateway, report, ctx),
            Command::GatewayTimedOut { gateway, .. } => g.timed_out(gateway, ctx),
            Command::ConfirmApplied {
                gateway,
                based_on,
                seq,
                applied_epoch,
                fence_epoch,
                ..
            } => g.confirm(gateway, *based_on, *seq, *applied_epoch, *fence_epoch, ctx),
            Command::FenceCompleted { gateway, epoch, .. } => {
                g.fence_completed(gateway, *epoch, ctx)
            }
            Command::MoveNamespaces { moves, .. } => g.start_moves(moves, ctx),
            // Commands of the whole map, or that make or erase a group's gateway: applied
            // by `apply` itself, never passed here.
            Command::SetConfig(_)
            | Command::UpdateConfig(_)
            | Command::SetFeatures(_)
            | Command::TimerTick
            | Command::CreateGateway { .. }
            | Command::DeleteGateway { .. } => Ok(()),
        })
    }

    /// Raise the feature level to `level` (never lower it); refused above what this build
    /// supports.
    fn raise_features(&mut self, level: u32) -> Result<bool, MapError> {
        if level > super::features::SUPPORTED {
            return Err(MapError::UnsupportedFeatures {
                level,
                supported: super::features::SUPPORTED,
            });
        }
        let raised = level > self.features;
        self.features = self.features.max(level);
        Ok(raised)
    }

    /// Refused unless the map's feature level is at least `needed`.
    fn require(&self, needed: u32) -> Result<(), MapError> {
        if self.features < needed {
            return Err(MapError::FeatureNotRaised {
                needed,
                level: self.features,
            });
        }
        Ok(())
    }

    /// Whether applying `cmd` at `now` would change the map, without changing it. The
    /// leader asks before proposing a timer tick, so an idle cluster writes nothing.
    pub fn would_change(&self, cmd: &Command, now: Timestamp) -> bool {
        let mut copy = self.clone();
        copy.apply(cmd, now).is_ok_and(|a| a.changed)
    }

    /// Whether a timer tick at `now` would change the map, as [`GatewayMap::would_change`]
    /// answers for [`Command::TimerTick`], without copying the map: each group is settled on
    /// a copy of its own, one at a time, until one changes. The leader asks every period.
    pub fn tick_would_change(&self, now: Timestamp) -> bool {
        let now = now.max(self.time);
        self.groups.iter().any(|(key, original)| {
            self.changed_copy(key, now, |_, _| Ok(()))
                .is_ok_and(|(group, _)| &group != original)
        })
    }

    /// The latest command time applied.
    pub fn time(&self) -> Timestamp {
        self.time
    }

    fn existing(&self, key: &GroupKey) -> Result<(), MapError> {
        if self.groups.contains_key(key) {
            Ok(())
        } else {
            Err(MapError::UnknownGroup(key.clone()))
        }
    }

    /// `f` and the settle pass on a copy of `key`'s group (an empty one if it has none): the
    /// copy, at the next epoch if what its gateways are told changed and checked against
    /// the invariants, with the events it produced. The map itself is left alone.
    fn changed_copy(
        &self,
        key: &GroupKey,
        now: Timestamp,
        f: impl FnOnce(&mut GroupState, &mut Ctx<'_>) -> Result<(), MapError>,
    ) -> Result<(GroupState, Vec<Event>), MapError> {
        let empty = GroupState::default();
        let before = self.groups.get(key).unwrap_or(&empty);
        let mut group = before.clone();
        let mut produced = Vec::new();
        let mut ctx = Ctx {
            now,
            config: &self.config,
            key,
            next_epoch: group.epoch.next(),
            events: &mut produced,
            features: self.features,
        };
        f(&mut group, &mut ctx)?;
        group.settle(&mut ctx);
        if !group.publishes_same(before) {
            group.epoch = before.epoch.next();
        }
        group.check()?;
        Ok((group, produced))
    }

    /// Run `f` and the settle pass on a copy of one group; keep the copy only if the
    /// invariants hold. A failed command leaves the map untouched, and a group is bumped to
    /// a new epoch only if what its gateways are told changed.
    fn transact(
        &mut self,
        key: &GroupKey,
        now: Timestamp,
        events: &mut Vec<Event>,
        f: impl FnOnce(&mut GroupState, &mut Ctx<'_>) -> Result<(), MapError>,
    ) -> Result<bool, MapError> {
        let (group, mut produced) = self.changed_copy(key, now, f)?;
        let unchanged = match self.groups.get(key) {
            Some(before) => *before == group,
            None => group == GroupState::default(),
        };
        if unchanged {
            return Ok(false);
        }
        events.append(&mut produced);
        // An emptied group is kept: its epoch must never restart, or storage that orders
        // writes by it would take a new gateway's writes for stale ones.
        self.groups.insert(key.clone(), group);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, Versioned};

    /// A map with one gateway created, to write in an older format.
    fn one_gateway() -> GatewayMap {
        let mut map = GatewayMap::default();
        let key = GroupKey::new("rbd".parse().expect("pool"), "g".parse().expect("group"));
        map.apply(
            &Command::CreateGateway {
                key,
                gateway: "gw1".parse().expect("id"),
            },
            Timestamp(5),
        )
        .expect("create");
        map
    }

    /// Its groups as versions 1 and 2 stored them.
    fn groups_as_v2(map: &GatewayMap) -> BTreeMap<GroupKey, GroupStateV2> {
        map.groups
            .iter()
            .map(|(k, g)| (k.clone(), g.into()))
            .collect()
    }

    /// The map as version 1 wrote it, to check that it still reads.
    #[derive(Serialize, Deserialize)]
    struct WrittenV1 {
        epoch: Epoch,
        time: Timestamp,
        config: MapConfigV1,
        groups: BTreeMap<GroupKey, GroupStateV2>,
    }

    impl Versioned for WrittenV1 {
        const WHAT: &'static str = "test";
        const VERSION: u8 = 1;
    }

    #[test]
    fn a_version_1_map_reads_with_the_new_limits_at_their_defaults() {
        let map = one_gateway();
        let d = MapConfig::default();
        let old = WrittenV1 {
            epoch: map.epoch,
            time: map.time,
            config: MapConfigV1 {
                max_gateways_per_group: 8,
                beacon_grace_ms: d.beacon_grace_ms,
                fence_timeout_ms: d.fence_timeout_ms,
                failback_prepare_ms: d.failback_prepare_ms,
                failback_delay_ms: d.failback_delay_ms,
                skip_failover_redeploy_ms: d.skip_failover_redeploy_ms,
                skip_failover_admin_ms: d.skip_failover_admin_ms,
                blocklist_expiry_ms: d.blocklist_expiry_ms,
                delete_grace_ms: d.delete_grace_ms,
            },
            groups: groups_as_v2(&map),
        };
        let bytes = codec::encode(&old).expect("encode v1");
        let read: GatewayMap = codec::decode(&bytes).expect("a version 1 map reads");
        assert_eq!(read.groups, map.groups);
        assert_eq!(read.epoch, map.epoch);
        assert_eq!(read.config.max_gateways_per_group, 8);
        assert_eq!(read.config.max_groups, d.max_groups);
        assert_eq!(read.config.max_gateways, d.max_gateways);
    }

    /// The map as version 2 wrote it.
    #[derive(Serialize, Deserialize)]
    struct WrittenV2 {
        epoch: Epoch,
        time: Timestamp,
        config: MapConfig,
        groups: BTreeMap<GroupKey, GroupStateV2>,
    }

    impl Versioned for WrittenV2 {
        const WHAT: &'static str = "test";
        const VERSION: u8 = 2;
    }

    #[test]
    fn a_version_2_map_reads_with_no_gateway_damped() {
        let map = one_gateway();
        let old = WrittenV2 {
            epoch: map.epoch,
            time: map.time,
            config: map.config.clone(),
            groups: groups_as_v2(&map),
        };
        let bytes = codec::encode(&old).expect("encode v2");
        let read: GatewayMap = codec::decode(&bytes).expect("a version 2 map reads");
        assert_eq!(read, map);
    }
}
