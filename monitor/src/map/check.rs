//! The safety invariants, checked on every command's result before it replaces the map.

use std::collections::BTreeSet;

use super::error::MapError;
use super::gateway::Availability;
use super::group::{GroupState, Holder};

impl GroupState {
    /// Refuse a state that breaks a safety rule. The holder-per-ANA-group representation
    /// already makes two optimized gateways impossible; these checks guard the rules that
    /// the representation alone does not enforce.
    pub(crate) fn check(&self) -> Result<(), MapError> {
        let fail = |msg: String| Err(MapError::Invariant(msg));
        let mut owned = BTreeSet::new();
        for (id, gw) in &self.gateways {
            if !owned.insert(gw.ana_group) {
                return fail(format!("ANA group {} has two owners", gw.ana_group));
            }
            if !self.ana.contains_key(&gw.ana_group) {
                return fail(format!(
                    "{id} owns ANA group {} that does not exist",
                    gw.ana_group
                ));
            }
        }
        for (g, a) in &self.ana {
            if !owned.contains(g) {
                return fail(format!("ANA group {g} has no owner (orphaned)"));
            }
            for gw in [a.holder.optimized(), handover_target(&a.holder)]
                .into_iter()
                .flatten()
            {
                let available = self
                    .gateways
                    .get(gw)
                    .is_some_and(|x| x.availability == Availability::Available);
                if !available {
                    return fail(format!(
                        "ANA group {g} is held by {gw}, which is not available"
                    ));
                }
            }
            // Fence before promote: a gateway serves only when nobody else may.
            if let Holder::Active(h) = &a.holder {
                if a.unreleased_except(h) {
                    return fail(format!(
                        "{h} is active for ANA group {g} while another gateway may still serve it"
                    ));
                }
            }
            if let Holder::Handover { from, to, .. } = &a.holder {
                if from == to {
                    return fail(format!(
                        "ANA group {g} is handed over from {from} to itself"
                    ));
                }
            }
            if let Some(r) = a.unreleased.values().find(|r| r.epoch > self.epoch) {
                return fail(format!(
                    "ANA group {g} has a release at epoch {} after the group epoch {}",
                    r.epoch, self.epoch
                ));
            }
        }
        if let Some(f) = self.fences.iter().find(|f| f.epoch > self.epoch) {
            return fail(format!(
                "fence of {} at epoch {} is after the group epoch {}",
                f.gateway, f.epoch, self.epoch
            ));
        }
        Ok(())
    }
}

fn handover_target(h: &Holder) -> Option<&gwmon_proto::domain::GatewayId> {
    match h {
        Holder::Handover { to, .. } => Some(to),
        _ => None,
    }
}
