//! One `(pool, group)`: its gateways, its ANA groups and who holds each, and its fences.

use std::collections::{BTreeMap, BTreeSet};

use gwmon_proto::domain::{AnaGroupId, Epoch, GatewayId, Location, Nonce};
use serde::{Deserialize, Serialize};

use super::config::MapConfig;
use super::damping::Damping;
use super::gateway::{AdminState, AnaState, Availability, Gateway};
use super::placement::{Placement, PlacementIndex};
use super::time::Timestamp;

/// Who is optimized for an ANA group. Storing one holder per ANA group, instead of Ceph's
/// matrix of per-gateway states, makes "two gateways optimized for one ANA group"
/// unrepresentable; the per-gateway view is derived ([`GroupState::ana_state`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holder {
    /// Optimized nowhere: waiting for a failover target or its owner.
    None,
    /// `0` serves the group.
    Active(GatewayId),
    /// Failover: `gateway` is published optimized but must hold I/O until every gateway that
    /// may still serve the group has been fenced or has confirmed it stopped, and it has
    /// echoed `fence_epoch` back in a beacon.
    WaitFence {
        gateway: GatewayId,
        fence_epoch: Epoch,
        deadline: Timestamp,
    },
    /// Failback (or relocation after a disaster): `from` has been told to stop serving;
    /// `to` becomes active once it has applied the map from `since` and `from` confirmed
    /// it stopped; past `deadline` without that confirmation, `from` is fenced instead.
    Handover {
        from: GatewayId,
        to: GatewayId,
        deadline: Timestamp,
        since: Epoch,
    },
}

impl Holder {
    /// The gateway published optimized, if any.
    pub fn optimized(&self) -> Option<&GatewayId> {
        match self {
            Holder::Active(g) | Holder::WaitFence { gateway: g, .. } => Some(g),
            Holder::None | Holder::Handover { .. } => None,
        }
    }
}

/// A gateway that was published optimized for an ANA group and has not yet been shown to
/// have stopped: it may still be writing. Another gateway is promoted only once this entry
/// is gone, cleared by a completed fence or by the gateway's own confirmation (a beacon
/// saying it applied the map of `epoch` or later). This is the fence-before-promote rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The group epoch whose map told the gateway to stop.
    pub epoch: Epoch,
    /// Its fencing nonces when it stopped.
    pub nonces: BTreeSet<Nonce>,
}

/// One ANA group of the `(pool, group)`. Its owner is the gateway whose `ana_group` it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnaGroup {
    pub holder: Holder,
    pub unreleased: BTreeMap<GatewayId, Release>,
}

impl AnaGroup {
    pub(crate) fn new() -> Self {
        AnaGroup {
            holder: Holder::None,
            unreleased: BTreeMap::new(),
        }
    }

    /// Whether any gateway other than `except` may still be serving this group.
    pub fn unreleased_except(&self, except: &GatewayId) -> bool {
        self.unreleased.keys().any(|g| g != except)
    }

    /// The last gateway that might still serve this group was just fenced or confirmed it
    /// stopped: a failover target waiting here gets until `ends` (the completion plus the
    /// fence timeout) to confirm the fence epoch. The deadline set at the failover's start
    /// is only kept if it is later: a fence that took longer than the timeout must not
    /// make a healthy target fail in the very command that lets it serve. Reusing the
    /// holder's deadline keeps the persisted map's layout unchanged.
    pub(crate) fn start_fence_wait(&mut self, ends: Timestamp) {
        if let Holder::WaitFence {
            gateway, deadline, ..
        } = &mut self.holder
        {
            if !self.unreleased.keys().any(|g| g != gateway) {
                *deadline = (*deadline).max(ends);
            }
        }
    }
}

/// A blocklist entry: the fencer must cut `gateway` (all of `nonces`) off from storage.
/// Storage that checks epochs rejects writes tagged with a group epoch below `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub gateway: GatewayId,
    pub epoch: Epoch,
    pub nonces: Vec<Nonce>,
    pub issued_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// Set on completion: the entry lapses after the blocklist expiry.
    pub expires_at: Option<Timestamp>,
}

/// A location declared lost by an admin, or being given back its ANA groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisasterState {
    /// Its gateways are never failover targets and never get groups back.
    Disaster,
    /// Cleared: its gateways take their groups back, then the entry goes away.
    Recovering,
}

/// The state of one `(pool, group)`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupState {
    /// Bumped whenever anything a gateway of this group is told changes. It orders map
    /// slices and is the fencing token.
    pub epoch: Epoch,
    pub gateways: BTreeMap<GatewayId, Gateway>,
    pub ana: BTreeMap<AnaGroupId, AnaGroup>,
    /// Pending and in-force fences, in issue order.
    pub fences: Vec<Fence>,
    pub disaster: BTreeMap<Location, DisasterState>,
    /// No failover to a non-owner before this time. Only maps written before flap damping
    /// set it (Ceph's group-wide redeploy hold); it is still honoured until it passes.
    pub allow_failovers_at: Timestamp,
    /// Flap damping of the gateways that went down recently (see [`super::damping`]).
    pub damping: BTreeMap<GatewayId, Damping>,
    /// Namespaces the monitors moved between ANA groups (see [`super::placement`]); stored
    /// from map version 5, which is written from feature level 3.
    pub placement: Placement,
}

/// A group as versions 3 and 4 of the map store it: every field but the placements. Read,
/// and written while the feature level is below 3, so that the previous release still
/// reads the map during a rolling upgrade.
#[derive(Deserialize)]
pub(crate) struct GroupStateV4 {
    epoch: Epoch,
    gateways: BTreeMap<GatewayId, Gateway>,
    ana: BTreeMap<AnaGroupId, AnaGroup>,
    fences: Vec<Fence>,
    disaster: BTreeMap<Location, DisasterState>,
    allow_failovers_at: Timestamp,
    damping: BTreeMap<GatewayId, Damping>,
}

impl From<GroupStateV4> for GroupState {
    fn from(v4: GroupStateV4) -> Self {
        GroupState {
            epoch: v4.epoch,
            gateways: v4.gateways,
            ana: v4.ana,
            fences: v4.fences,
            disaster: v4.disaster,
            allow_failovers_at: v4.allow_failovers_at,
            damping: v4.damping,
            placement: Placement::default(),
        }
    }
}

/// [`GroupStateV4`]'s layout, borrowed from a group.
#[derive(Serialize)]
pub(crate) struct GroupStateV4Ref<'a> {
    epoch: &'a Epoch,
    gateways: &'a BTreeMap<GatewayId, Gateway>,
    ana: &'a BTreeMap<AnaGroupId, AnaGroup>,
    fences: &'a Vec<Fence>,
    disaster: &'a BTreeMap<Location, DisasterState>,
    allow_failovers_at: &'a Timestamp,
    damping: &'a BTreeMap<GatewayId, Damping>,
}

impl<'a> From<&'a GroupState> for GroupStateV4Ref<'a> {
    fn from(g: &'a GroupState) -> Self {
        GroupStateV4Ref {
            epoch: &g.epoch,
            gateways: &g.gateways,
            ana: &g.ana,
            fences: &g.fences,
            disaster: &g.disaster,
            allow_failovers_at: &g.allow_failovers_at,
            damping: &g.damping,
        }
    }
}

/// A group as versions 1 and 2 of the map stored it, before flap damping: read, never
/// written (but by tests of that reading).
#[derive(Serialize, Deserialize)]
pub(crate) struct GroupStateV2 {
    epoch: Epoch,
    gateways: BTreeMap<GatewayId, Gateway>,
    ana: BTreeMap<AnaGroupId, AnaGroup>,
    fences: Vec<Fence>,
    disaster: BTreeMap<Location, DisasterState>,
    allow_failovers_at: Timestamp,
}

#[cfg(test)]
impl From<&GroupState> for GroupStateV2 {
    fn from(g: &GroupState) -> Self {
        GroupStateV2 {
            epoch: g.epoch,
            gateways: g.gateways.clone(),
            ana: g.ana.clone(),
            fences: g.fences.clone(),
            disaster: g.disaster.clone(),
            allow_failovers_at: g.allow_failovers_at,
        }
    }
}

impl From<GroupStateV2> for GroupState {
    fn from(v2: GroupStateV2) -> Self {
        GroupStateV4 {
            epoch: v2.epoch,
            gateways: v2.gateways,
            ana: v2.ana,
            fences: v2.fences,
            disaster: v2.disaster,
            allow_failovers_at: v2.allow_failovers_at,
            damping: BTreeMap::new(),
        }
        .into()
    }
}

impl GroupState {
    /// The gateway that owns ANA group `g`.
    pub fn owner(&self, g: AnaGroupId) -> Option<(&GatewayId, &Gateway)> {
        self.gateways.iter().find(|(_, gw)| gw.ana_group == g)
    }

    /// Ceph's per-gateway, per-ANA-group state, derived from the holders.
    pub fn ana_state(&self, gateway: &GatewayId, g: AnaGroupId) -> AnaState {
        match self.ana.get(&g).map(|a| &a.holder) {
            Some(Holder::Active(h)) if h == gateway => AnaState::Active,
            Some(Holder::WaitFence { gateway: h, .. }) if h == gateway => {
                AnaState::WaitFenceComplete
            }
            Some(Holder::Handover { from, .. }) if from == gateway => {
                AnaState::WaitFailbackPrepared
            }
            Some(Holder::Handover { to, .. }) if to == gateway => {
                AnaState::OwnerWaitFailbackPrepared
            }
            _ => AnaState::Standby,
        }
    }

    /// ANA groups the gateway is published optimized for: its load.
    pub fn load(&self, gateway: &GatewayId) -> usize {
        self.ana
            .values()
            .filter(|a| a.holder.optimized() == Some(gateway))
            .count()
    }

    /// Whether `gateway` may still be serving an ANA group it was told to stop serving:
    /// neither its confirmation nor a fence has cleared it yet.
    pub fn releasing(&self, gateway: &GatewayId) -> bool {
        self.ana
            .values()
            .any(|a| a.unreleased.contains_key(gateway))
    }

    /// In a failback handover, as either side: such a gateway is not picked for anything
    /// else until the handover ends, which keeps concurrent moves apart.
    pub fn in_handover(&self, gateway: &GatewayId) -> bool {
        self.ana.values().any(|a| {
            matches!(&a.holder, Holder::Handover { from, to, .. } if from == gateway || to == gateway)
        })
    }

    /// Whether `gateway` holds no ANA group, takes part in no handover and owes no group a
    /// confirmation or fence: nothing anyone waits on involves it.
    pub(crate) fn let_go(&self, gateway: &GatewayId) -> bool {
        self.ana.values().all(|a| {
            !a.unreleased.contains_key(gateway)
                && match &a.holder {
                    Holder::None => true,
                    Holder::Active(h) => h != gateway,
                    Holder::WaitFence { gateway: h, .. } => h != gateway,
                    Holder::Handover { from, to, .. } => from != gateway && to != gateway,
                }
        })
    }

    pub(crate) fn location_state(&self, location: &Location) -> Option<DisasterState> {
        self.disaster.get(location).copied()
    }

    /// Able to serve an ANA group: available, enabled and not in a disaster location.
    pub(crate) fn can_serve(&self, id: &GatewayId) -> bool {
        self.gateways.get(id).is_some_and(|gw| {
            gw.availability == Availability::Available
                && gw.admin == AdminState::Enabled
                && self.location_state(&gw.location) != Some(DisasterState::Disaster)
        })
    }

    /// Namespaces in ANA group `g` as the group's gateways report them. Gateways of a group
    /// serve the same subsystems, so the largest count of any reporter is taken; a deleted
    /// or failed gateway's stale report is not used unless `include_down`. One pass over
    /// every report: in a loop over ANA groups, take [`GroupState::namespace_counts`] once.
    pub fn namespaces_in(&self, g: AnaGroupId, include_down: bool) -> usize {
        self.namespace_counts(include_down)
            .get(&g)
            .copied()
            .unwrap_or(0)
    }

    /// [`GroupState::namespaces_in`] of every ANA group that has namespaces, in one pass.
    pub fn namespace_counts(&self, include_down: bool) -> BTreeMap<AnaGroupId, usize> {
        let index = self.placement.index();
        let mut out: BTreeMap<AnaGroupId, usize> = BTreeMap::new();
        for gw in self
            .gateways
            .values()
            .filter(|gw| include_down || gw.availability == Availability::Available)
        {
            for (g, n) in placed_counts(gw, &index) {
                let max = out.entry(g).or_default();
                *max = (*max).max(n);
            }
        }
        out
    }

    /// The namespaces of `gw`'s own ANA group (Ceph's per-gateway count): as the group's
    /// available gateways report them, or `gw`'s own report while none is available. A
    /// deleting gateway is erased once this is 0.
    pub fn own_namespaces(&self, gw: &Gateway) -> usize {
        self.own_namespaces_of(gw, &self.namespace_counts(false))
    }

    /// [`GroupState::own_namespaces`] with the available gateways' counts taken already.
    pub fn own_namespaces_of(&self, gw: &Gateway, counts: &BTreeMap<AnaGroupId, usize>) -> usize {
        let others_serving = self
            .gateways
            .values()
            .any(|o| o.availability == Availability::Available);
        if others_serving {
            counts.get(&gw.ana_group).copied().unwrap_or(0)
        } else {
            placed_counts(gw, &self.placement.index())
                .get(&gw.ana_group)
                .copied()
                .unwrap_or(0)
        }
    }

    /// The group's namespaces, as the best-informed available gateway reports them.
    pub fn num_namespaces(&self) -> usize {
        self.gateways
            .values()
            .filter(|gw| gw.availability == Availability::Available)
            .map(Gateway::num_namespaces)
            .max()
            .unwrap_or(0)
    }

    /// The fence of `gateway` that covers a release at `epoch`, if one was issued.
    pub(crate) fn fence_covering(&self, gateway: &GatewayId, epoch: Epoch) -> Option<&Fence> {
        self.fences
            .iter()
            .filter(|f| &f.gateway == gateway && f.epoch >= epoch)
            .max_by_key(|f| f.epoch)
    }

    /// Since when ANA group `g` has had no gateway allowed to serve it (no holder, a
    /// failback handover, or a failover target still waiting for its fence), or `None` if it
    /// is served or the map holds no time for it.
    ///
    /// The map keeps no "dark since" field (adding one would change the persisted layout),
    /// so this is derived, and errs late rather than early, so that a health warning never
    /// claims a longer outage than there was: a waiting failover counts from its fence's
    /// issue (at or after the old holder stopped), a handover from its start (its deadline
    /// less the current `failback_prepare_ms`), and an ANA group with no holder from the
    /// latest time its owner, or a gateway that may still be serving it, went down, was
    /// deleted or was disabled. A holder that stopped for a reason the map keeps no time of
    /// (it lost its listeners) is only seen once one of those times is later.
    pub fn dark_since(&self, g: AnaGroupId, config: &MapConfig) -> Option<Timestamp> {
        let a = self.ana.get(&g)?;
        match &a.holder {
            Holder::Active(_) => None,
            Holder::WaitFence {
                gateway,
                fence_epoch,
                deadline,
            } => {
                if !a.unreleased_except(gateway) {
                    return None;
                }
                let issued = self
                    .fences
                    .iter()
                    .find(|f| f.epoch == *fence_epoch)
                    .map(|f| f.issued_at);
                Some(issued.unwrap_or_else(|| deadline.before(config.fence_timeout_ms)))
            }
            Holder::Handover { deadline, .. } => Some(deadline.before(config.failback_prepare_ms)),
            Holder::None => {
                let owner = self.owner(g).map(|(id, _)| id);
                owner
                    .into_iter()
                    .chain(a.unreleased.keys())
                    .filter_map(|id| self.gateways.get(id))
                    .flat_map(|gw| {
                        let disabled = (gw.hold_failovers_until > Timestamp::ZERO).then(|| {
                            gw.hold_failovers_until
                                .before(config.skip_failover_admin_ms)
                        });
                        [gw.last_down_at, gw.deleting_since, disabled]
                    })
                    .flatten()
                    .max()
            }
        }
    }

    /// Whether anything a gateway of this group is told differs between `self` and `other`:
    /// if not, the group epoch stays, so bookkeeping (sequence numbers, confirmations)
    /// does not make every gateway re-apply its slice.
    pub(crate) fn publishes_same(&self, other: &GroupState) -> bool {
        let gateways_same = self.gateways.len() == other.gateways.len()
            && self
                .gateways
                .iter()
                .zip(other.gateways.iter())
                .all(|((ia, a), (ib, b))| {
                    ia == ib
                        && a.ana_group == b.ana_group
                        && a.availability == b.availability
                        && a.nqns().eq(b.nqns())
                });
        let ana_same = self.ana.len() == other.ana.len()
            && self
                .ana
                .iter()
                .zip(other.ana.iter())
                .all(|((ga, a), (gb, b))| {
                    ga == gb && a.holder == b.holder && fence_done(a) == fence_done(b)
                });
        gateways_same
            && ana_same
            && self.placement.assigned == other.placement.assigned
            && self.placement.moving.len() == other.placement.moving.len()
            && self
                .placement
                .moving
                .iter()
                .zip(other.placement.moving.iter())
                .all(|((na, a), (nb, b))| na == nb && a.from == b.from)
    }
}

/// The namespaces `gw` reports per ANA group they count in: where the monitors placed them
/// (their source while they move, see [`Placement::index`]), else where the gateway has them.
fn placed_counts(gw: &Gateway, index: &PlacementIndex<'_>) -> BTreeMap<AnaGroupId, usize> {
    let mut out: BTreeMap<AnaGroupId, usize> = BTreeMap::new();
    for s in gw.subsystems.iter() {
        for n in &s.namespaces {
            let g = index.get(&(&s.nqn, n.nsid)).copied().unwrap_or(n.ana_group);
            *out.entry(g).or_default() += 1;
        }
    }
    out
}

/// For a group in failover, whether its target may serve yet (published in the slice).
pub(crate) fn fence_done(a: &AnaGroup) -> bool {
    match &a.holder {
        Holder::WaitFence { gateway, .. } => !a.unreleased_except(gateway),
        _ => true,
    }
}
