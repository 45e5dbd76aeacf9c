//! The moves of ANA groups between gateways: release, fence, promote, failback, repair.
//!
//! Every function here works on one group inside a command's transaction; the caller
//! checks the invariants afterwards and throws the copy away if they do not hold.

use std::collections::{BTreeMap, BTreeSet};

use gwmon_proto::domain::{AnaGroupId, Epoch, GatewayId, GroupKey, Location, ReportedAvailability};

use super::config::MapConfig;
use super::damping::Damping;
use super::event::Event;
use super::gateway::{AdminState, Availability};
use super::group::{DisasterState, Fence, GroupState, Holder, Release};
use super::time::Timestamp;

/// What one command's transitions share: the time, the tunables, the epoch the group will
/// have once the command is applied, and the events produced so far.
pub(crate) struct Ctx<'a> {
    pub now: Timestamp,
    pub config: &'a MapConfig,
    pub key: &'a GroupKey,
    /// The group epoch after this command. Releases and fences are stamped with it: it is
    /// the first map in which the change is visible.
    pub next_epoch: Epoch,
    pub events: &'a mut Vec<Event>,
    /// The map's feature level: which rules apply (see [`super::features`]).
    pub features: u32,
}

impl Ctx<'_> {
    fn emit(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// The available gateways' namespace counts per ANA group ([`GroupState::namespace_counts`])
/// for one settle pass, taken again only when an availability changed.
#[derive(Default)]
pub(crate) struct NamespaceCounts {
    taken: Option<(Vec<Availability>, BTreeMap<AnaGroupId, usize>)>,
}

impl NamespaceCounts {
    fn of(&mut self, group: &GroupState, g: AnaGroupId) -> usize {
        let now: Vec<Availability> = group.gateways.values().map(|gw| gw.availability).collect();
        if self.taken.as_ref().is_none_or(|(then, _)| *then != now) {
            self.taken = Some((now, group.namespace_counts(false)));
        }
        self.taken
            .as_ref()
            .and_then(|(_, counts)| counts.get(&g).copied())
            .unwrap_or(0)
    }
}

impl GroupState {
    /// Record that `gateway` stopped being optimized for `g` and may still be serving it.
    fn release(&mut self, g: AnaGroupId, gateway: &GatewayId, ctx: &Ctx<'_>) {
        let nonces = self
            .gateways
            .get(gateway)
            .map(|gw| gw.nonces())
            .unwrap_or_default();
        if let Some(a) = self.ana.get_mut(&g) {
            a.unreleased
                .entry(gateway.clone())
                .and_modify(|r| r.nonces.extend(nonces.iter().cloned()))
                .or_insert(Release {
                    epoch: ctx.next_epoch,
                    nonces,
                });
        }
    }

    /// Take every ANA group away from a gateway that can no longer serve, and set its
    /// availability. Failover itself happens in [`GroupState::settle`], so the skip windows
    /// and the choice of target live in one place.
    pub(crate) fn take_down(&mut self, gateway: &GatewayId, to: Availability, ctx: &mut Ctx<'_>) {
        let ids: Vec<AnaGroupId> = self.ana.keys().copied().collect();
        for g in ids {
            let holder = self.ana.get(&g).map(|a| a.holder.clone());
            match holder {
                Some(Holder::Active(h)) | Some(Holder::WaitFence { gateway: h, .. })
                    if &h == gateway =>
                {
                    self.release(g, gateway, ctx);
                    self.set_holder(g, Holder::None);
                    ctx.emit(Event::Released {
                        key: ctx.key.clone(),
                        gateway: gateway.clone(),
                        ana_group: g,
                    });
                }
                // The side leaving is already recorded as unreleased; whoever was to take
                // the group is chosen again by the repair pass.
                Some(Holder::Handover { from, to, .. }) if &from == gateway || &to == gateway => {
                    self.set_holder(g, Holder::None);
                }
                _ => {}
            }
        }
        self.set_availability(gateway, to, ctx);
    }

    pub(crate) fn set_availability(
        &mut self,
        gateway: &GatewayId,
        to: Availability,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(gw) = self.gateways.get_mut(gateway) else {
            return;
        };
        let from = gw.availability;
        if from == to {
            return;
        }
        gw.availability = to;
        match to {
            Availability::Available => {
                gw.available_since = ctx.now;
                // A hold waits for the gateway to come up (after its creation or a fast
                // reboot) or to confirm a planned stop; up and serving, it has nothing left
                // to wait for, and a failure from now on is failed over at once.
                gw.hold_failovers_until = gw.hold_failovers_until.min(ctx.now);
            }
            Availability::Unavailable => {
                gw.performed_full_startup = false;
                gw.last_down_at = Some(ctx.now);
                if from == Availability::Available {
                    self.went_down(gateway, ctx);
                }
            }
            Availability::Deleting => gw.deleting_since = Some(ctx.now),
            Availability::Created => {}
        }
        ctx.emit(Event::AvailabilityChanged {
            key: ctx.key.clone(),
            gateway: gateway.clone(),
            from,
            to,
        });
    }

    fn set_holder(&mut self, g: AnaGroupId, holder: Holder) {
        if let Some(a) = self.ana.get_mut(&g) {
            a.holder = holder;
        }
    }

    /// A serving gateway went down (declared failed, or restarted): one more flap.
    pub(crate) fn went_down(&mut self, gateway: &GatewayId, ctx: &Ctx<'_>) {
        let previous = self.damping.get(gateway).copied();
        self.damping
            .insert(gateway.clone(), Damping::down(previous, ctx.now));
    }

    /// Whether `gateway` is damped for flapping (see [`super::damping`]).
    pub fn damped(&self, gateway: &GatewayId, now: Timestamp) -> bool {
        self.damping.get(gateway).is_some_and(|d| d.damped(now))
    }

    /// No failover before `now + ms` of the ANA groups `gateway` owns or just stopped
    /// serving. Unlike Ceph, which holds the whole group, a real failure of another gateway
    /// meanwhile is failed over at once.
    pub(crate) fn hold_failovers(&mut self, gateway: &GatewayId, ms: u64, ctx: &Ctx<'_>) {
        if let Some(gw) = self.gateways.get_mut(gateway) {
            gw.hold_failovers_until = gw.hold_failovers_until.max(ctx.now.after(ms));
        }
    }

    /// Whether failing `g` over must wait: a group-wide window, or a hold on its owner or on
    /// a gateway that may still be serving it.
    fn failover_held(&self, g: AnaGroupId, now: Timestamp) -> bool {
        let held = |id: &GatewayId| {
            self.gateways
                .get(id)
                .is_some_and(|gw| gw.hold_failovers_until > now)
        };
        now < self.allow_failovers_at
            || self.owner(g).is_some_and(|(id, _)| held(id))
            || self
                .ana
                .get(&g)
                .is_some_and(|a| a.unreleased.keys().any(held))
    }

    /// Make `target` optimized for `g`: at once if nobody else may still be serving it,
    /// otherwise after fencing every such gateway.
    fn promote(&mut self, g: AnaGroupId, target: &GatewayId, ctx: &mut Ctx<'_>) {
        let others: Vec<(GatewayId, Release)> = match self.ana.get_mut(&g) {
            Some(a) => {
                a.unreleased.remove(target);
                a.unreleased
                    .iter()
                    .map(|(id, r)| (id.clone(), r.clone()))
                    .collect()
            }
            None => return,
        };
        if others.is_empty() {
            self.set_holder(g, Holder::Active(target.clone()));
            ctx.emit(Event::Promoted {
                key: ctx.key.clone(),
                ana_group: g,
                gateway: target.clone(),
            });
            return;
        }
        let mut fence_epoch = Epoch::ZERO;
        for (id, release) in others {
            let epoch = match self.fence_covering(&id, release.epoch) {
                Some(f) => f.epoch,
                None => self.issue_fence(&id, release.nonces, ctx),
            };
            fence_epoch = fence_epoch.max(epoch);
        }
        self.set_holder(
            g,
            Holder::WaitFence {
                gateway: target.clone(),
                fence_epoch,
                // Replaced by the fence's completion time plus the timeout once the last
                // blocker is cleared (`AnaGroup::start_fence_wait`): a slow fencer must not
                // use up the target's time to confirm.
                deadline: ctx.now.after(ctx.config.fence_timeout_ms),
            },
        );
        ctx.emit(Event::FailoverStarted {
            key: ctx.key.clone(),
            ana_group: g,
            to: target.clone(),
            fence_epoch,
        });
    }

    fn issue_fence(
        &mut self,
        gateway: &GatewayId,
        mut nonces: BTreeSet<gwmon_proto::domain::Nonce>,
        ctx: &mut Ctx<'_>,
    ) -> Epoch {
        if let Some(gw) = self.gateways.get(gateway) {
            nonces.extend(gw.nonces());
        }
        self.fences.push(Fence {
            gateway: gateway.clone(),
            epoch: ctx.next_epoch,
            nonces: nonces.into_iter().collect(),
            issued_at: ctx.now,
            completed_at: None,
            expires_at: None,
        });
        ctx.emit(Event::FenceIssued {
            key: ctx.key.clone(),
            gateway: gateway.clone(),
            epoch: ctx.next_epoch,
        });
        ctx.next_epoch
    }

    /// A fence took effect: the gateway can no longer write, so it no longer blocks a
    /// promotion for anything it released up to that fence.
    pub(crate) fn complete_fence(&mut self, index: usize, ctx: &mut Ctx<'_>) {
        let Some(fence) = self.fences.get_mut(index) else {
            return;
        };
        fence.completed_at = Some(ctx.now);
        fence.expires_at = Some(ctx.now.after(ctx.config.blocklist_expiry_ms));
        let (gateway, epoch) = (fence.gateway.clone(), fence.epoch);
        let fence_wait_ends = ctx.now.after(ctx.config.fence_timeout_ms);
        for a in self.ana.values_mut() {
            if a.unreleased.get(&gateway).is_some_and(|r| r.epoch <= epoch) {
                a.unreleased.remove(&gateway);
                a.start_fence_wait(fence_wait_ends);
            }
        }
        ctx.emit(Event::FenceCompleted {
            key: ctx.key.clone(),
            gateway,
            epoch,
        });
    }

    /// A beacon says the gateway applied the map of `applied`: every group it was told to
    /// stop serving at or before that epoch is released.
    pub(crate) fn confirm_applied(&mut self, gateway: &GatewayId, applied: Epoch, ctx: &Ctx<'_>) {
        let fence_wait_ends = ctx.now.after(ctx.config.fence_timeout_ms);
        for a in self.ana.values_mut() {
            if a.unreleased
                .get(gateway)
                .is_some_and(|r| r.epoch <= applied)
            {
                a.unreleased.remove(gateway);
                a.start_fence_wait(fence_wait_ends);
            }
        }
        // A gateway an operator disabled or deleted, or a live one that lost its listeners,
        // was held (`skip_failover_admin_ms`) only so that it could confirm it stopped
        // serving. Once it has released everything the hold has done its work: its groups
        // move now, without a fence, instead of staying dark for the rest of the window.
        let released_all = !self.releasing(gateway);
        if let Some(gw) = self.gateways.get_mut(gateway) {
            let no_listener = ctx.features >= super::features::CEPH_PARITY
                && gw.availability == Availability::Created
                && gw.reported == Some(ReportedAvailability::Available);
            let planned = gw.admin == AdminState::Disabled
                || gw.availability == Availability::Deleting
                || no_listener;
            if released_all && planned {
                gw.hold_failovers_until = gw.hold_failovers_until.min(ctx.now);
            }
        }
    }

    /// Everything that depends only on the map and the time: promotions whose conditions are
    /// met, timers that ran out, failbacks, the repair of unowned ANA groups, removal of
    /// drained deleted gateways, the end of disaster recovery and lapsed fences. Run after
    /// every command on its group and on every tick on all groups.
    pub(crate) fn settle(&mut self, ctx: &mut Ctx<'_>) {
        let ids: Vec<AnaGroupId> = self.ana.keys().copied().collect();
        // Counted only if an ANA group is unowned, and again only if an availability
        // changed since: a pass over every report.
        let mut counts = NamespaceCounts::default();
        for g in ids {
            self.settle_ana_group(g, ctx, &mut counts);
        }
        if ctx.features >= super::features::NAMESPACE_BALANCING {
            self.settle_moves(ctx);
        }
        self.reap_deleted(ctx);
        self.finish_recoveries(ctx);
        self.expire_fences(ctx);
    }

    fn settle_ana_group(&mut self, g: AnaGroupId, ctx: &mut Ctx<'_>, counts: &mut NamespaceCounts) {
        let Some(a) = self.ana.get(&g) else {
            return;
        };
        match a.holder.clone() {
            Holder::WaitFence {
                gateway,
                fence_epoch,
                deadline,
            } => {
                let fenced = !a.unreleased_except(&gateway);
                let confirmed = self
                    .gateways
                    .get(&gateway)
                    .is_some_and(|gw| gw.fence_epoch >= fence_epoch);
                if fenced && confirmed {
                    self.set_holder(g, Holder::Active(gateway.clone()));
                    ctx.emit(Event::Promoted {
                        key: ctx.key.clone(),
                        ana_group: g,
                        gateway,
                    });
                } else if fenced && ctx.now >= deadline {
                    // The fence is done but the target never said it serves: it is not
                    // working, so it is failed like a silent gateway (Ceph does the same).
                    // With the fence still pending it keeps waiting: no promotion without it.
                    ctx.emit(Event::FenceWaitExpired {
                        key: ctx.key.clone(),
                        ana_group: g,
                        gateway: gateway.clone(),
                    });
                    self.take_down(&gateway, Availability::Unavailable, ctx);
                    self.settle_unowned(g, ctx, counts);
                }
            }
            Holder::Handover {
                from,
                to,
                deadline,
                since,
            } => {
                if !self.can_serve(&to) {
                    self.set_holder(g, Holder::None);
                    self.settle_unowned(g, ctx, counts);
                    return;
                }
                let released = !a.unreleased.contains_key(&from);
                let target_current = self
                    .gateways
                    .get(&to)
                    .is_some_and(|gw| gw.applied_epoch >= since);
                // Break before make on confirmations, not on a timer: the owner takes its
                // group the moment the holder says it stopped serving and the owner has
                // the map that says so. A holder that has not confirmed by the deadline
                // is fenced instead (`promote` fences whoever is still unreleased).
                if target_current && (released || ctx.now >= deadline) {
                    self.set_holder(g, Holder::None);
                    self.promote(g, &to, ctx);
                }
            }
            Holder::Active(holder) => {
                if let Some(home) = self.preferred_holder(g, Some(&holder), ctx) {
                    if home != holder {
                        self.release(g, &holder, ctx);
                        self.set_holder(
                            g,
                            Holder::Handover {
                                from: holder.clone(),
                                to: home.clone(),
                                deadline: ctx.now.after(ctx.config.failback_prepare_ms),
                                since: ctx.next_epoch,
                            },
                        );
                        ctx.emit(Event::FailbackStarted {
                            key: ctx.key.clone(),
                            ana_group: g,
                            from: holder,
                            to: home,
                        });
                    }
                }
            }
            Holder::None => self.settle_unowned(g, ctx, counts),
        }
    }

    /// An ANA group optimized nowhere: give it to its owner, or (outside a skip window, and
    /// only if it has namespaces) fail it over to the least-loaded gateway that can serve.
    /// This is also the repair pass that finds ANA groups abandoned by any path. An empty
    /// group is not failed over: nothing needs a path, and moving it would only cost a
    /// failback when its owner comes up (as at every first deployment).
    fn settle_unowned(&mut self, g: AnaGroupId, ctx: &mut Ctx<'_>, counts: &mut NamespaceCounts) {
        if let Some(home) = self.preferred_holder(g, None, ctx) {
            self.promote(g, &home, ctx);
        } else if !self.failover_held(g, ctx.now) && counts.of(self, g) > 0 {
            if let Some(target) = self.failover_target(g, ctx.now) {
                self.promote(g, &target, ctx);
            }
        }
    }

    /// Where `g` belongs when its current holder is `holder`: its owner once it can serve
    /// (after the failback delay, if someone else is serving meanwhile), or, while the
    /// owner's location is recovering from a disaster and the owner is still down, the
    /// least-loaded gateway of that location. `None` means "leave it where it is".
    fn preferred_holder(
        &self,
        g: AnaGroupId,
        holder: Option<&GatewayId>,
        ctx: &Ctx<'_>,
    ) -> Option<GatewayId> {
        let (owner_id, owner) = self.owner(g)?;
        if self.can_serve(owner_id) && !self.in_handover(owner_id) {
            // With nobody else serving, the owner takes its group at once, damped or not:
            // a flapping path beats none. Otherwise it gets it back only once settled.
            let settled = holder.is_none()
                || (ctx.now >= owner.available_since.after(ctx.config.failback_delay_ms)
                    && !self.damped(owner_id, ctx.now));
            return settled.then(|| owner_id.clone());
        }
        if self.location_state(&owner.location) != Some(DisasterState::Recovering) {
            return None;
        }
        let at_home = |id: &GatewayId| {
            self.gateways
                .get(id)
                .is_some_and(|gw| gw.location == owner.location)
        };
        if holder.is_some_and(at_home) {
            return None;
        }
        self.least_loaded(|id, _| at_home(id))
    }

    /// The failover target for `g`: the least-loaded gateway that can serve, in the owner's
    /// location first, then anywhere; ties go to the lowest gateway id. A gateway damped
    /// for flapping is chosen only when no other can serve.
    fn failover_target(&self, g: AnaGroupId, now: Timestamp) -> Option<GatewayId> {
        let location = self.owner(g).map(|(_, o)| o.location.clone());
        let steady = |id: &GatewayId| !self.damped(id, now);
        self.least_loaded(|id, gw| steady(id) && Some(&gw.location) == location.as_ref())
            .or_else(|| self.least_loaded(|id, _| steady(id)))
            .or_else(|| self.least_loaded(|_, gw| Some(&gw.location) == location.as_ref()))
            .or_else(|| self.least_loaded(|_, _| true))
    }

    fn least_loaded(
        &self,
        filter: impl Fn(&GatewayId, &super::gateway::Gateway) -> bool,
    ) -> Option<GatewayId> {
        self.gateways
            .iter()
            .filter(|(id, gw)| self.can_serve(id) && !self.in_handover(id) && filter(id, gw))
            .min_by_key(|(id, _)| self.load(id))
            .map(|(id, _)| id.clone())
    }

    /// Erase deleted gateways whose ANA group has drained. A group with namespaces left is
    /// kept (and keeps being served by a failover holder) so it is never orphaned.
    fn reap_deleted(&mut self, ctx: &mut Ctx<'_>) {
        let drained: Vec<(GatewayId, AnaGroupId)> = self
            .gateways
            .iter()
            .filter(|(_, gw)| gw.availability == Availability::Deleting)
            .filter(|(_, gw)| self.own_namespaces(gw) == 0)
            .map(|(id, gw)| (id.clone(), gw.ana_group))
            .collect();
        for (id, g) in drained {
            self.gateways.remove(&id);
            self.damping.remove(&id);
            self.ana.remove(&g);
            ctx.emit(Event::GatewayRemoved {
                key: ctx.key.clone(),
                gateway: id,
            });
        }
    }

    /// A recovering location is done once every ANA group its gateways own is served there.
    fn finish_recoveries(&mut self, ctx: &mut Ctx<'_>) {
        let done: Vec<Location> = self
            .disaster
            .iter()
            .filter(|(_, s)| **s == DisasterState::Recovering)
            .map(|(l, _)| l)
            .filter(|l| {
                self.gateways
                    .values()
                    .filter(|gw| &gw.location == *l)
                    .all(|gw| {
                        let holder = self.ana.get(&gw.ana_group).and_then(|a| match &a.holder {
                            Holder::Active(h) => Some(h),
                            _ => None,
                        });
                        holder
                            .and_then(|h| self.gateways.get(h))
                            .is_some_and(|h| &h.location == *l)
                    })
            })
            .cloned()
            .collect();
        for l in done {
            self.disaster.remove(&l);
            ctx.emit(Event::DisasterRecovered {
                key: ctx.key.clone(),
                location: l.to_string(),
            });
        }
    }

    /// Completed fences lapse after the blocklist expiry; pending ones never do.
    fn expire_fences(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut expired = Vec::new();
        self.fences.retain(|f| match f.expires_at {
            Some(t) if now >= t => {
                expired.push((f.gateway.clone(), f.epoch));
                false
            }
            _ => true,
        });
        for (gateway, epoch) in expired {
            ctx.emit(Event::FenceExpired {
                key: ctx.key.clone(),
                gateway,
                epoch,
            });
        }
    }
}
