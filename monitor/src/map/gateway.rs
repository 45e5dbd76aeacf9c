//! One gateway as the map holds it.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use gwmon_proto::domain::{
    AnaGroupId, Epoch, Location, Nonce, Nqn, ReportedAvailability, Subsystem,
};
use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// The life-cycle of a gateway in the map (Ceph's `gw_availability_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Availability {
    /// Created by an admin, or alive but not able to serve (starting, no subsystem with a
    /// listener, or disabled).
    Created,
    /// Beaconing and serving.
    Available,
    /// Declared failed: timed out or reported its target down. Only a restarted process
    /// (a `Starting` beacon) brings it back.
    Unavailable,
    /// Deleted by an admin; kept until no namespace is left in its ANA group, so that group
    /// is never orphaned.
    Deleting,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Created => "CREATED",
            Availability::Available => "AVAILABLE",
            Availability::Unavailable => "UNAVAILABLE",
            Availability::Deleting => "DELETING",
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an admin lets the gateway serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdminState {
    Enabled,
    Disabled,
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminState::Enabled => "ENABLED",
            AdminState::Disabled => "DISABLED",
        })
    }
}

/// A gateway's state for one ANA group, as Ceph shows it per gateway. The map does not store
/// this matrix: it stores one state per ANA group (see `AnaGroup`), which cannot hold two
/// optimized gateways, and derives this view from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AnaState {
    Standby,
    /// Optimized and serving.
    Active,
    /// Chosen as failover target, published optimized, but holding I/O until the old holder
    /// is fenced and this gateway confirmed the fence epoch (Ceph's WAIT_BLOCKLIST_CMPL).
    WaitFenceComplete,
    /// Failback: the current holder, published inaccessible, waiting to hand over.
    WaitFailbackPrepared,
    /// Failback: the gateway taking the group, waiting for the holder to let go.
    OwnerWaitFailbackPrepared,
}

impl AnaState {
    /// Ceph's names, as `nvme-gw show` prints them.
    pub fn as_str(self) -> &'static str {
        match self {
            AnaState::Standby => "STANDBY",
            AnaState::Active => "ACTIVE",
            AnaState::WaitFenceComplete => "WAIT_BLOCKLIST_CMPL",
            AnaState::WaitFailbackPrepared => "WAIT_FAILBACK_PREPARED",
            AnaState::OwnerWaitFailbackPrepared => "OWNER_FAILBACK_PREPARED",
        }
    }

    /// Published as optimized in the gateway's map slice.
    pub fn is_optimized(self) -> bool {
        matches!(self, AnaState::Active | AnaState::WaitFenceComplete)
    }
}

impl fmt::Display for AnaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One gateway of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    /// The ANA group this gateway owns: its home, where failback returns it.
    pub ana_group: AnaGroupId,
    pub availability: Availability,
    pub admin: AdminState,
    pub location: Location,
    /// What the gateway last reported. Kept so that enable, delete and fencing can decide
    /// from it without waiting for another beacon.
    pub reported: Option<ReportedAvailability>,
    /// Shared, not copied: every command works on a copy of its group, and the subsystems
    /// are by far its largest part while they rarely change.
    pub subsystems: Arc<Vec<Subsystem>>,
    /// The newest group epoch the gateway says it has applied.
    pub applied_epoch: Epoch,
    /// The newest fence epoch the gateway says it has waited for.
    pub fence_epoch: Epoch,
    /// The sequence number of the last committed report.
    pub last_seq: u64,
    /// Set by a `Starting` report, cleared when the gateway is declared failed. A failed
    /// gateway that keeps beaconing without restarting is a zombie and stays unavailable.
    pub performed_full_startup: bool,
    /// When the gateway last became available (for the failback delay).
    pub available_since: Timestamp,
    /// When the gateway was last declared failed or restarted.
    pub last_down_at: Option<Timestamp>,
    /// When it was deleted.
    pub deleting_since: Option<Timestamp>,
    /// Until then, ANA groups this gateway owns or has just stopped serving are not failed
    /// over: it restarted and will take its own group back, or it is alive and about to
    /// confirm it stopped (which spares a fence).
    pub hold_failovers_until: Timestamp,
}

impl Gateway {
    pub(crate) fn new(ana_group: AnaGroupId) -> Self {
        Gateway {
            ana_group,
            availability: Availability::Created,
            admin: AdminState::Enabled,
            location: Location::default(),
            reported: None,
            subsystems: Arc::new(Vec::new()),
            applied_epoch: Epoch::ZERO,
            fence_epoch: Epoch::ZERO,
            last_seq: 0,
            performed_full_startup: false,
            available_since: Timestamp::ZERO,
            last_down_at: None,
            deleting_since: None,
            hold_failovers_until: Timestamp::ZERO,
        }
    }

    /// The availability the last report earns: a gateway that is disabled, or has no
    /// subsystem with a listener, cannot serve and counts as `Created` (as in Ceph).
    pub(crate) fn earned_availability(&self) -> Availability {
        match self.reported {
            None | Some(ReportedAvailability::Starting) => Availability::Created,
            Some(ReportedAvailability::Unavailable) => Availability::Unavailable,
            Some(ReportedAvailability::Available) => {
                if self.admin == AdminState::Enabled && self.has_listener() {
                    Availability::Available
                } else {
                    Availability::Created
                }
            }
        }
    }

    fn has_listener(&self) -> bool {
        self.subsystems.iter().any(|s| !s.listeners.is_empty())
    }

    /// Namespaces this gateway reports in ANA group `g`.
    pub fn namespaces_in(&self, g: AnaGroupId) -> usize {
        self.subsystems
            .iter()
            .flat_map(|s| &s.namespaces)
            .filter(|n| n.ana_group == g)
            .count()
    }

    pub fn num_namespaces(&self) -> usize {
        self.subsystems.iter().map(|s| s.namespaces.len()).sum()
    }

    pub fn num_listeners(&self) -> usize {
        self.subsystems.iter().map(|s| s.listeners.len()).sum()
    }

    /// Every fencing nonce the gateway reported: a fence cuts off all of them, whatever
    /// ANA group they serve, because a failed gateway is fenced whole.
    pub(crate) fn nonces(&self) -> BTreeSet<Nonce> {
        self.subsystems
            .iter()
            .flat_map(|s| &s.namespaces)
            .filter_map(|n| n.nonce.clone())
            .collect()
    }

    pub fn nqns(&self) -> impl Iterator<Item = &Nqn> {
        self.subsystems.iter().map(|s| &s.nqn)
    }
}
