//! The part of the map one gateway is sent.

use gwmon_proto::domain::{
    AnaAccess, AnaGroupView, Epoch, GatewayId, MapSlice, Nqn, SliceAvailability,
};

use super::gateway::Availability;
use super::group::{fence_done, GroupState, Holder};

impl GroupState {
    /// The slice for `gateway`, or `None` if the group has no such gateway.
    pub fn slice(&self, gateway: &GatewayId) -> Option<MapSlice> {
        let gw = self.gateways.get(gateway)?;
        let availability = match gw.availability {
            Availability::Created => SliceAvailability::Created,
            Availability::Available => SliceAvailability::Available,
            // A deleted gateway must stop like a failed one (Ceph sends UNAVAILABLE too).
            Availability::Unavailable | Availability::Deleting => SliceAvailability::Unavailable,
        };
        let mut nqns: Vec<Nqn> = gw.nqns().cloned().collect();
        nqns.sort();
        nqns.dedup();
        let ana_groups = self
            .ana
            .iter()
            .map(|(g, a)| {
                let (access, fence_epoch) = match &a.holder {
                    Holder::Active(h) if h == gateway => (AnaAccess::Optimized, Epoch::ZERO),
                    Holder::WaitFence {
                        gateway: h,
                        fence_epoch,
                        ..
                    } if h == gateway => (AnaAccess::Optimized, *fence_epoch),
                    _ => (AnaAccess::Inaccessible, Epoch::ZERO),
                };
                AnaGroupView {
                    ana_group: *g,
                    access,
                    fence_epoch,
                    fence_complete: access == AnaAccess::Optimized && fence_done(a),
                }
            })
            .collect();
        let placements = self.placements_for(gateway, &nqns);
        Some(MapSlice {
            epoch: self.epoch,
            ana_group: gw.ana_group,
            availability,
            nqns,
            ana_groups,
            placements,
        })
    }
}
