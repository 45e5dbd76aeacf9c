//! The group-level effect of each command, before the settle pass runs.

use std::sync::Arc;

use gwmon_proto::domain::{
    AnaGroupId, Epoch, GatewayId, GatewayReport, Location, ReportedAvailability,
};

use super::error::MapError;
use super::event::Event;
use super::gateway::{AdminState, Availability, Gateway};
use super::group::{AnaGroup, DisasterState, GroupState};
use super::transition::Ctx;

impl GroupState {
    fn gateway_mut(&mut self, id: &GatewayId, ctx: &Ctx<'_>) -> Result<&mut Gateway, MapError> {
        self.gateways
            .get_mut(id)
            .ok_or_else(|| MapError::UnknownGateway {
                key: ctx.key.clone(),
                gateway: id.clone(),
            })
    }

    /// `nvme-gw create`. Returns `false` when the gateway already exists (idempotent).
    pub(crate) fn create(&mut self, id: &GatewayId, ctx: &mut Ctx<'_>) -> Result<bool, MapError> {
        if let Some(gw) = self.gateways.get(id) {
            if gw.availability != Availability::Deleting {
                return Ok(false);
            }
            // Re-created while draining: it keeps its ANA group and starts over.
            self.set_availability(id, Availability::Created, ctx);
            if let Some(gw) = self.gateways.get_mut(id) {
                gw.deleting_since = None;
            }
            return Ok(true);
        }
        let max = ctx.config.max_gateways_per_group;
        let live = self
            .gateways
            .values()
            .filter(|gw| gw.availability != Availability::Deleting)
            .count();
        if live >= max as usize {
            return Err(MapError::GroupFull {
                key: ctx.key.clone(),
                max,
            });
        }
        // A deleted gateway still draining hands its ANA group, with its namespaces, to the
        // new one, as in Ceph: the namespaces get an owner again at once instead of waiting
        // to be moved out. From feature level 1, one that has let go of everything does so
        // even when ids are free; one that may still serve only when no id is free (before
        // level 1, the only case), since its record then goes and it is fenced rather than
        // heard confirming (a live gateway fenced sees I/O errors).
        let deleting = |settled: bool| {
            self.gateways
                .iter()
                .filter(|(_, gw)| gw.availability == Availability::Deleting)
                .find(|(gid, _)| !settled || self.let_go(gid))
                .map(|(gid, gw)| (gid.clone(), gw.ana_group))
        };
        let free = (1..=max).find_map(|n| {
            let g = AnaGroupId::new(n).ok()?;
            (!self.ana.contains_key(&g)).then_some(g)
        });
        let parity = ctx.features >= super::features::CEPH_PARITY;
        let heir_of = match (deleting(true).filter(|_| parity), free) {
            (Some(settled), _) => Some(settled),
            (None, Some(_)) => None,
            (None, None) => Some(deleting(false).ok_or_else(|| MapError::GroupFull {
                key: ctx.key.clone(),
                max,
            })?),
        };
        let ana_group = match (heir_of, free) {
            (Some((heir_of, g)), _) => {
                self.gateways.remove(&heir_of);
                self.damping.remove(&heir_of);
                ctx.events.push(Event::GatewayRemoved {
                    key: ctx.key.clone(),
                    gateway: heir_of,
                });
                g
            }
            (None, Some(g)) => {
                self.ana.insert(g, AnaGroup::new());
                g
            }
            (None, None) => {
                return Err(MapError::GroupFull {
                    key: ctx.key.clone(),
                    max,
                })
            }
        };
        self.gateways.insert(id.clone(), Gateway::new(ana_group));
        // Gateways created together come up together: each gets the grace to take its own
        // group, instead of the first one up taking every group and handing them back.
        self.hold_failovers(id, ctx.config.beacon_grace_ms, ctx);
        ctx.events.push(Event::GatewayCreated {
            key: ctx.key.clone(),
            gateway: id.clone(),
            ana_group,
        });
        Ok(true)
    }

    /// `nvme-gw delete`: an immediate failover of everything it holds, then erasure once
    /// its ANA group has drained.
    pub(crate) fn delete(&mut self, id: &GatewayId, ctx: &mut Ctx<'_>) -> Result<(), MapError> {
        let gw = self.gateway_mut(id, ctx)?;
        match gw.availability {
            Availability::Deleting => return Ok(()),
            Availability::Available => {
                // It is alive and will confirm it stopped serving: give it the time to, so
                // its groups move without fencing (fencing a live gateway causes I/O errors).
                self.hold_failovers(id, ctx.config.skip_failover_admin_ms, ctx);
            }
            _ => {}
        }
        self.take_down(id, Availability::Deleting, ctx);
        Ok(())
    }

    pub(crate) fn set_admin(
        &mut self,
        id: &GatewayId,
        enabled: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), MapError> {
        let gw = self.gateway_mut(id, ctx)?;
        if gw.availability == Availability::Deleting {
            return Err(MapError::GatewayDeleting {
                key: ctx.key.clone(),
                gateway: id.clone(),
            });
        }
        let admin = if enabled {
            AdminState::Enabled
        } else {
            AdminState::Disabled
        };
        if gw.admin == admin {
            return Ok(());
        }
        gw.admin = admin;
        let was = gw.availability;
        if enabled {
            // Decide from the last report: an unchanged beacon is never committed, so
            // waiting for the next one could wait forever.
            let earned = gw.earned_availability();
            if was == Availability::Created
                && gw.performed_full_startup
                && earned == Availability::Available
            {
                self.set_availability(id, Availability::Available, ctx);
            }
        } else if was == Availability::Available {
            self.hold_failovers(id, ctx.config.skip_failover_admin_ms, ctx);
            self.take_down(id, Availability::Created, ctx);
        }
        Ok(())
    }

    pub(crate) fn set_location(
        &mut self,
        id: &GatewayId,
        location: &Location,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), MapError> {
        let gw = self.gateway_mut(id, ctx)?;
        let old = std::mem::replace(&mut gw.location, location.clone());
        if old != *location && !self.gateways.values().any(|gw| gw.location == old) {
            self.disaster.remove(&old);
        }
        Ok(())
    }

    pub(crate) fn disaster_set(
        &mut self,
        location: &Location,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), MapError> {
        match self.disaster.get(location) {
            Some(DisasterState::Disaster) => return Ok(()),
            Some(DisasterState::Recovering) => {
                return Err(MapError::DisasterRecovering {
                    key: ctx.key.clone(),
                    location: location.clone(),
                })
            }
            None => {}
        }
        let mut at = self
            .gateways
            .iter()
            .filter(|(_, gw)| &gw.location == location)
            .peekable();
        if at.peek().is_none() {
            return Err(MapError::NoGatewaysAtLocation {
                key: ctx.key.clone(),
                location: location.clone(),
            });
        }
        if let Some((id, _)) = at.find(|(_, gw)| gw.availability == Availability::Available) {
            return Err(MapError::LocationAvailable {
                location: location.clone(),
                gateway: id.clone(),
            });
        }
        self.disaster
            .insert(location.clone(), DisasterState::Disaster);
        Ok(())
    }

    pub(crate) fn disaster_clear(
        &mut self,
        location: &Location,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), MapError> {
        match self.disaster.get(location) {
            None => Err(MapError::NotInDisaster {
                key: ctx.key.clone(),
                location: location.clone(),
            }),
            Some(DisasterState::Recovering) => Ok(()),
            Some(DisasterState::Disaster) => {
                let any_up = self.gateways.values().any(|gw| {
                    &gw.location == location && gw.availability == Availability::Available
                });
                if any_up {
                    self.disaster
                        .insert(location.clone(), DisasterState::Recovering);
                } else {
                    self.disaster.remove(location);
                }
                Ok(())
            }
        }
    }

    /// A beacon whose content changed.
    pub(crate) fn report(
        &mut self,
        id: &GatewayId,
        report: &GatewayReport,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), MapError> {
        let key = ctx.key.clone();
        let grace = ctx.config.beacon_grace_ms;
        let gw = self.gateway_mut(id, ctx)?;
        let starting = report.availability == ReportedAvailability::Starting;
        if gw.availability == Availability::Deleting {
            return self.report_of_deleted(id, report, ctx);
        }
        // A new process may start its sequence anywhere; otherwise sequence numbers only grow,
        // and an older beacon delivered late must not undo a newer one.
        if !starting && report.seq != 0 && gw.reported.is_some() && report.seq <= gw.last_seq {
            return Err(MapError::StaleBeacon {
                gateway: id.clone(),
                seq: report.seq,
                last: gw.last_seq,
            });
        }
        gw.reported = Some(report.availability);
        if *gw.subsystems != report.subsystems {
            let mut subsystems = report.subsystems.clone();
            // Decoded from the log, equal nonces are separate copies again.
            gwmon_proto::domain::share_nonces(&mut subsystems);
            gw.subsystems = Arc::new(subsystems);
        }
        gw.applied_epoch = report.applied_epoch;
        gw.fence_epoch = report.fence_epoch;
        gw.last_seq = report.seq;
        let was = gw.availability;
        let applied: Epoch = gw.applied_epoch;

        if starting {
            self.reported_start(id, was, grace, ctx);
        } else if was == Availability::Unavailable && !gw.performed_full_startup {
            // Declared failed but still beaconing: a zombie. It must restart before it
            // serves again; its slice tells it so.
            ctx.events.push(Event::ZombieRefused {
                key,
                gateway: id.clone(),
            });
        } else {
            let earned = gw.earned_availability();
            if earned != was {
                if was == Availability::Available {
                    if earned == Availability::Created
                        && ctx.features >= super::features::CEPH_PARITY
                    {
                        // Alive and enabled but without a listener: it will confirm it
                        // stopped serving, as a disabled gateway does, so its groups move
                        // on that confirmation instead of a fence (which would cut a
                        // healthy gateway off from storage). The hold ends when it confirms.
                        self.hold_failovers(id, ctx.config.skip_failover_admin_ms, ctx);
                    }
                    self.take_down(id, earned, ctx);
                } else {
                    self.set_availability(id, earned, ctx);
                }
            }
        }
        self.confirm_applied(id, applied, ctx);
        Ok(())
    }

    /// A deleted gateway's beacon. Its session stays open until it confirms it stopped
    /// serving, so its groups move on that confirmation instead of a fence; its beacons
    /// say only that, and nothing else about it changes any more.
    fn report_of_deleted(
        &mut self,
        id: &GatewayId,
        report: &GatewayReport,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), MapError> {
        let key = ctx.key.clone();
        let gw = self.gateway_mut(id, ctx)?;
        if report.availability == ReportedAvailability::Starting {
            return Err(MapError::GatewayDeleting {
                key,
                gateway: id.clone(),
            });
        }
        if report.seq != 0 && report.seq <= gw.last_seq {
            return Err(MapError::StaleBeacon {
                gateway: id.clone(),
                seq: report.seq,
                last: gw.last_seq,
            });
        }
        gw.applied_epoch = report.applied_epoch;
        gw.fence_epoch = report.fence_epoch;
        gw.last_seq = report.seq;
        let applied = gw.applied_epoch;
        self.confirm_applied(id, applied, ctx);
        Ok(())
    }

    /// A new process of a gateway that `was` available, failed or never up reported in.
    fn reported_start(&mut self, id: &GatewayId, was: Availability, grace: u64, ctx: &mut Ctx<'_>) {
        let Some(gw) = self.gateways.get_mut(id) else {
            return;
        };
        // The first start of a gateway that was never up: whoever comes up beside it
        // must not take its group only to hand it back a moment later.
        let first_start = !gw.performed_full_startup && gw.last_down_at.is_none();
        gw.performed_full_startup = true;
        if first_start && was == Availability::Created {
            self.hold_failovers(id, grace, ctx);
        }
        match was {
            Availability::Available => {
                // Fast reboot: the owner is back before the grace ran out. Its groups are
                // not failed over; it takes them back when it reports in. Unless it keeps
                // doing this: a flapping gateway's groups go to a steady one at once.
                self.take_down(id, Availability::Created, ctx);
                self.went_down(id, ctx);
                if !self.damped(id, ctx.now) {
                    self.hold_failovers(id, ctx.config.skip_failover_redeploy_ms, ctx);
                }
                if let Some(gw) = self.gateways.get_mut(id) {
                    gw.last_down_at = Some(ctx.now);
                }
            }
            Availability::Unavailable => {
                // No group-wide hold (Ceph holds every failover of the group for 16 s
                // whenever a recently failed gateway starts, which let a flapping gateway
                // hold up a real failure elsewhere): flap damping handles the returning
                // gateway, per gateway.
                self.set_availability(id, Availability::Created, ctx);
            }
            Availability::Created | Availability::Deleting => {}
        }
    }

    /// A beacon that only confirms epochs ([`super::Command::ConfirmApplied`]): applied as
    /// the whole beacon, its report and subsystems being those the map holds.
    pub(crate) fn confirm(
        &mut self,
        id: &GatewayId,
        based_on: u64,
        seq: u64,
        applied_epoch: Epoch,
        fence_epoch: Epoch,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), MapError> {
        let gw = self.gateway_mut(id, ctx)?;
        let availability = match gw.reported {
            Some(a) if gw.last_seq == based_on => a,
            _ => {
                return Err(MapError::ConfirmationOutdated {
                    gateway: id.clone(),
                    based_on,
                    last: gw.last_seq,
                })
            }
        };
        let report = GatewayReport {
            seq,
            availability,
            subsystems: (*gw.subsystems).clone(),
            applied_epoch,
            fence_epoch,
        };
        self.report(id, &report, ctx)
    }

    /// The leader heard nothing from the gateway within the grace.
    pub(crate) fn timed_out(&mut self, id: &GatewayId, ctx: &mut Ctx<'_>) -> Result<(), MapError> {
        let gw = self.gateway_mut(id, ctx)?;
        match gw.availability {
            Availability::Unavailable | Availability::Deleting => Ok(()),
            Availability::Created | Availability::Available => {
                self.take_down(id, Availability::Unavailable, ctx);
                Ok(())
            }
        }
    }

    pub(crate) fn fence_completed(
        &mut self,
        id: &GatewayId,
        epoch: Epoch,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), MapError> {
        let index = self
            .fences
            .iter()
            .position(|f| &f.gateway == id && f.epoch == epoch)
            .ok_or_else(|| MapError::UnknownFence {
                key: ctx.key.clone(),
                gateway: id.clone(),
                epoch,
            })?;
        if self.fences[index].completed_at.is_none() {
            self.complete_fence(index, ctx);
        }
        Ok(())
    }
}
