//! Namespace balancing: the monitors move namespaces between ANA groups so that every ANA
//! group served by its own gateway holds about as many namespaces as the others, and
//! namespaces leave the ANA group of a deleted gateway (feature level 3).
//!
//! A move is a hand-over of one namespace, made as safe as a failback: the gateway that
//! serves the namespace's ANA group is told to put the namespace in the new group first,
//! where it does not serve it, and the gateway that serves the new group is told only once
//! the old one has shown it did so (or was fenced). The namespace is never optimized on two
//! gateways at once, and a host retrying an I/O on the new path cannot race one still in
//! flight on the old. The cost is a short dark window per moved namespace, the time the old
//! gateway's confirmation takes to commit, as in a failback. A move that is not confirmed
//! within the beacon grace is given up, and every gateway is told the old group again.
//!
//! Every placement stays in the map while a gateway reports the namespace: a restarted
//! gateway, whatever its target was provisioned with, puts it where the others have it
//! before it serves anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gwmon_proto::domain::{AnaGroupId, Epoch, GatewayId, NamespacePlacement, Nqn};
use gwmon_proto::mutation::{self, Mutation};
use serde::{Deserialize, Serialize};

use super::error::MapError;
use super::gateway::{AdminState, Availability};
use super::group::{DisasterState, GroupState, Holder};
use super::time::Timestamp;
use super::transition::Ctx;

/// After a move was given up, no new ones are planned in its group for this long: a
/// gateway that cannot move namespaces (an older release, or a target without the
/// operation) would otherwise be asked again and again.
pub const PAUSE_AFTER_GIVING_UP_MS: u64 = 60_000;

/// One namespace of a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NsKey {
    pub nqn: Nqn,
    pub nsid: u32,
}

/// One move the leader proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsMove {
    pub ns: NsKey,
    pub from: AnaGroupId,
    pub to: AnaGroupId,
}

/// A move whose source may still serve the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    pub from: AnaGroupId,
    /// The group epoch whose map told the source to let go.
    pub since: Epoch,
    /// Given up if the source has not let go by then.
    pub deadline: Timestamp,
}

/// The namespaces of one group that the monitors placed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    /// Where each placed namespace belongs (for a moving one: where it goes).
    pub assigned: BTreeMap<NsKey, AnaGroupId>,
    /// Moves whose source has not yet let go.
    pub moving: BTreeMap<NsKey, Moving>,
    /// No new move is planned before this time (see [`PAUSE_AFTER_GIVING_UP_MS`]).
    pub paused_until: Timestamp,
}

/// Where each placed namespace counts, by NQN and namespace id (borrowed: looking a
/// reported namespace up costs no allocation).
pub type PlacementIndex<'a> = HashMap<(&'a Nqn, u32), AnaGroupId>;

impl Placement {
    /// The ANA group each placed namespace counts in: its source while it moves, else
    /// where it was placed.
    pub fn index(&self) -> PlacementIndex<'_> {
        let mut out: PlacementIndex<'_> = self
            .assigned
            .iter()
            .map(|(ns, g)| ((&ns.nqn, ns.nsid), *g))
            .collect();
        for (ns, m) in &self.moving {
            out.insert((&ns.nqn, ns.nsid), m.from);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.assigned.is_empty() && self.moving.is_empty() && self.paused_until == Timestamp::ZERO
    }
}

impl GroupState {
    /// Whether `gw` serves ANA group `g`, or is about to: its optimized holder, or the
    /// gateway a hand-over goes to.
    fn serves_or_takes(&self, gw: &GatewayId, g: AnaGroupId) -> bool {
        match self.ana.get(&g).map(|a| &a.holder) {
            Some(Holder::Active(h)) | Some(Holder::WaitFence { gateway: h, .. }) => h == gw,
            Some(Holder::Handover { to, .. }) => to == gw,
            Some(Holder::None) | None => false,
        }
    }

    /// The placements `gateway`'s slice carries, for the subsystems it serves. While a
    /// namespace moves, the gateway that serves (or takes) its new ANA group is still told
    /// the old one, so it does not serve the namespace before the old server let go.
    pub(crate) fn placements_for(
        &self,
        gateway: &GatewayId,
        nqns: &[Nqn],
    ) -> Vec<NamespacePlacement> {
        self.placement
            .assigned
            .iter()
            .filter(|(ns, _)| nqns.binary_search(&ns.nqn).is_ok())
            .map(|(ns, to)| {
                let ana_group = match self.placement.moving.get(ns) {
                    Some(m)
                        if self.serves_or_takes(gateway, *to)
                            && !mutation::active(Mutation::MoveBeforeRelease) =>
                    {
                        m.from
                    }
                    _ => *to,
                };
                NamespacePlacement {
                    nqn: ns.nqn.clone(),
                    nsid: ns.nsid,
                    ana_group,
                }
            })
            .collect()
    }

    /// Served by exactly one gateway that nobody else may still be serving it beside.
    fn settled(&self, g: AnaGroupId) -> bool {
        self.ana
            .get(&g)
            .is_some_and(|a| matches!(a.holder, Holder::Active(_)) && a.unreleased.is_empty())
    }

    /// ANA groups namespaces are balanced over: settled and served by their own gateway,
    /// which is available, enabled and not in a disaster location.
    pub fn balance_targets(&self) -> BTreeSet<AnaGroupId> {
        self.gateways
            .iter()
            .filter(|(id, gw)| {
                gw.availability == Availability::Available
                    && gw.admin == AdminState::Enabled
                    && self.location_state(&gw.location) != Some(DisasterState::Disaster)
                    && self.settled(gw.ana_group)
                    && self
                        .ana
                        .get(&gw.ana_group)
                        .is_some_and(|a| a.holder == Holder::Active((*id).clone()))
            })
            .map(|(_, gw)| gw.ana_group)
            .collect()
    }

    /// Every namespace the group's gateways report, with the ANA group it counts in. An
    /// available gateway's report is taken before a down one's. Gateways of a group report
    /// the same subsystems, so a subsystem already read is not read again.
    pub fn namespace_locations(&self) -> BTreeMap<NsKey, AnaGroupId> {
        let index = self.placement.index();
        let mut reporters: Vec<_> = self.gateways.values().collect();
        reporters.sort_by_key(|gw| gw.availability != Availability::Available);
        let mut read: Vec<&gwmon_proto::domain::Subsystem> = Vec::new();
        let mut found: BTreeMap<(&Nqn, u32), AnaGroupId> = BTreeMap::new();
        for gw in reporters {
            for s in gw.subsystems.iter() {
                if read.contains(&s) {
                    continue;
                }
                read.push(s);
                for n in &s.namespaces {
                    let at = index.get(&(&s.nqn, n.nsid)).copied().unwrap_or(n.ana_group);
                    found.entry((&s.nqn, n.nsid)).or_insert(at);
                }
            }
        }
        found
            .into_iter()
            .map(|((nqn, nsid), at)| {
                (
                    NsKey {
                        nqn: nqn.clone(),
                        nsid,
                    },
                    at,
                )
            })
            .collect()
    }

    /// The next step of balancing, at most `max` moves: first out of ANA groups that are
    /// not balance targets but settled and owned by a deleted gateway, then from the
    /// fullest target to the emptiest until their counts are within one. Nothing while a
    /// move is under way or balancing is paused.
    pub fn plan_moves(&self, max: usize, now: Timestamp) -> Vec<NsMove> {
        if !self.placement.moving.is_empty() || now < self.placement.paused_until {
            return Vec::new();
        }
        let targets = self.balance_targets();
        if targets.is_empty() {
            return Vec::new();
        }
        let draining: BTreeSet<AnaGroupId> = self
            .gateways
            .values()
            .filter(|gw| gw.availability == Availability::Deleting && self.settled(gw.ana_group))
            .map(|gw| gw.ana_group)
            .collect();
        let mut by_group: BTreeMap<AnaGroupId, Vec<NsKey>> =
            targets.iter().map(|g| (*g, Vec::new())).collect();
        for (ns, g) in self.namespace_locations() {
            if targets.contains(&g) || draining.contains(&g) {
                by_group.entry(g).or_default().push(ns);
            }
        }
        let emptiest = |by: &BTreeMap<AnaGroupId, Vec<NsKey>>| {
            targets
                .iter()
                .min_by_key(|g| (by.get(g).map_or(0, Vec::len), **g))
                .copied()
        };
        let mut moves = Vec::new();
        for from in &draining {
            while moves.len() < max {
                let Some(ns) = by_group.get_mut(from).and_then(Vec::pop) else {
                    break;
                };
                let Some(to) = emptiest(&by_group) else {
                    break;
                };
                by_group.entry(to).or_default().push(ns.clone());
                moves.push(NsMove {
                    ns,
                    from: *from,
                    to,
                });
            }
        }
        while moves.len() < max {
            let Some(from) = targets
                .iter()
                .max_by_key(|g| (by_group.get(g).map_or(0, Vec::len), std::cmp::Reverse(**g)))
                .copied()
            else {
                break;
            };
            let Some(to) = emptiest(&by_group) else {
                break;
            };
            let count = |g| by_group.get(&g).map_or(0, Vec::len);
            if count(from) <= count(to) + 1 {
                break;
            }
            let Some(ns) = by_group.get_mut(&from).and_then(Vec::pop) else {
                break;
            };
            by_group.entry(to).or_default().push(ns.clone());
            moves.push(NsMove { ns, from, to });
        }
        moves
    }

    /// Start `moves` (a [`super::Command::MoveNamespaces`]): each namespace must be reported,
    /// not already moving and in `from`, and both ANA groups settled, `to` a balance target.
    /// All or nothing.
    pub(crate) fn start_moves(&mut self, moves: &[NsMove], ctx: &Ctx<'_>) -> Result<(), MapError> {
        let locations = self.namespace_locations();
        let targets = self.balance_targets();
        let refuse = |m: &NsMove, why: &str| MapError::MoveRefused {
            nqn: m.ns.nqn.clone(),
            nsid: m.ns.nsid,
            reason: why.to_owned(),
        };
        let mut seen = BTreeSet::new();
        for m in moves {
            if !seen.insert(&m.ns) || self.placement.moving.contains_key(&m.ns) {
                return Err(refuse(m, "it is already moving"));
            }
            match locations.get(&m.ns) {
                None => return Err(refuse(m, "no gateway reports it")),
                Some(g) if *g != m.from => {
                    return Err(refuse(
                        m,
                        &format!("it is in ANA group {g}, not {}", m.from),
                    ))
                }
                Some(_) => {}
            }
            if m.from == m.to || !self.settled(m.from) || !targets.contains(&m.to) {
                return Err(refuse(
                    m,
                    &format!(
                        "ANA group {} cannot take it from {} now (both must be served, {} by its own gateway)",
                        m.to, m.from, m.to
                    ),
                ));
            }
        }
        let deadline = ctx.now.after(ctx.config.beacon_grace_ms);
        for m in moves {
            self.placement.assigned.insert(m.ns.clone(), m.to);
            self.placement.moving.insert(
                m.ns.clone(),
                Moving {
                    from: m.from,
                    since: ctx.next_epoch,
                    deadline,
                },
            );
        }
        Ok(())
    }

    /// Whether no gateway but the one serving (or taking) `to` may still serve the
    /// namespace in `m.from`: each that serves `m.from`, or may still, has applied the map
    /// that moved it and no longer reports it there, or was fenced (and so is no longer
    /// among them).
    fn source_let_go(&self, ns: &NsKey, m: &Moving, to: AnaGroupId) -> bool {
        let Some(source) = self.ana.get(&m.from) else {
            return true;
        };
        let mut servers: BTreeSet<&GatewayId> = source.unreleased.keys().collect();
        if let Some(h) = source.holder.optimized() {
            servers.insert(h);
        }
        servers
            .into_iter()
            .filter(|gw| !self.serves_or_takes(gw, to))
            .all(|id| {
                self.gateways.get(id).is_none_or(|gw| {
                    gw.applied_epoch >= m.since
                        && gw
                            .subsystems
                            .iter()
                            .filter(|s| s.nqn == ns.nqn)
                            .flat_map(|s| &s.namespaces)
                            .all(|n| n.nsid != ns.nsid || n.ana_group != m.from)
                })
            })
    }

    /// Moves whose source let go are done, and the new server is told; moves past their
    /// deadline are given up, every gateway told the old group again, and balancing is
    /// paused; placements of namespaces no gateway reports any more are dropped. Run in
    /// the settle pass from feature level 3.
    pub(crate) fn settle_moves(&mut self, ctx: &Ctx<'_>) {
        let moving: Vec<(NsKey, Moving)> = self
            .placement
            .moving
            .iter()
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect();
        for (ns, m) in moving {
            let to = self.placement.assigned.get(&ns).copied().unwrap_or(m.from);
            if self.source_let_go(&ns, &m, to) {
                self.placement.moving.remove(&ns);
            } else if ctx.now >= m.deadline {
                self.placement.moving.remove(&ns);
                self.placement.assigned.insert(ns, m.from);
                self.placement.paused_until = ctx.now.after(PAUSE_AFTER_GIVING_UP_MS);
            }
        }
        if self.placement.assigned.is_empty() {
            return;
        }
        let reported: BTreeSet<NsKey> = self.namespace_locations().into_keys().collect();
        self.placement
            .assigned
            .retain(|ns, _| reported.contains(ns));
    }
}
