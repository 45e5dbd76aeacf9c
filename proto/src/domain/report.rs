//! What a gateway reports about itself in a beacon, after validation.
//!
//! These are the domain forms of the beacon payload: every id is typed, every address is
//! parsed, and duplicates are refused at the edge, so the map engine never sees a bad value.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::error::Invalid;
use super::ids::{AnaGroupId, Epoch, Nonce};
use super::nqn::Nqn;

/// A transport address a subsystem listens on, as SPDK's `nvmf_listen_address` has it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Listener {
    pub address: IpAddr,
    /// The transport service id: the TCP port for NVMe/TCP.
    pub port: u16,
}

impl Listener {
    /// `IPv4` or `IPv6`, the address-family names SPDK and Ceph print.
    pub fn family(&self) -> &'static str {
        match self.address {
            IpAddr::V4(_) => "IPv4",
            IpAddr::V6(_) => "IPv6",
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// A namespace of a subsystem: which ANA group it belongs to, and the fencing nonce of the
/// storage client its I/O goes through (what the fencer must cut off if this gateway fails).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Namespace {
    /// The namespace id within its subsystem, 1-based.
    pub nsid: u32,
    pub ana_group: AnaGroupId,
    pub nonce: Option<Nonce>,
}

impl Namespace {
    /// The largest valid namespace id. The NVMe Base Specification reserves 0 (no
    /// namespace) and `0xFFFFFFFF` (all namespaces, the broadcast value).
    pub const MAX_NSID: u32 = 0xFFFF_FFFE;

    /// Check a namespace id against the range the specification allows.
    pub fn check_nsid(nsid: u32) -> Result<u32, Invalid> {
        match nsid {
            0 => Err(Invalid::Zero),
            n if n > Self::MAX_NSID => Err(Invalid::OutOfRange {
                value: n.into(),
                min: 1,
                max: Self::MAX_NSID.into(),
            }),
            n => Ok(n),
        }
    }
}

/// One NVMe subsystem as a gateway serves it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subsystem {
    pub nqn: Nqn,
    pub listeners: Vec<Listener>,
    pub namespaces: Vec<Namespace>,
}

/// Makes namespaces that carry equal nonces share one: a gateway usually gives all of its
/// namespaces (thousands) the same one or a few, and a nonce shared is counted, not copied,
/// when the list is cloned and held. Equal nonces next to each other are found, which is
/// every repeat when the nonces are one per gateway or one per run of namespaces.
pub fn share_nonces(subsystems: &mut [Subsystem]) {
    let mut last: Option<Nonce> = None;
    for ns in subsystems.iter_mut().flat_map(|s| s.namespaces.iter_mut()) {
        match (&mut ns.nonce, &last) {
            (Some(n), Some(l)) if n == l => n.clone_from(l),
            (Some(n), _) => last = Some(n.clone()),
            (None, _) => {}
        }
    }
}

impl Subsystem {
    /// Sort the listeners and the namespaces (by nsid); see [`GatewayReport::canonicalize`].
    pub fn canonicalize(&mut self) {
        self.listeners.sort();
        self.namespaces.sort();
    }
}

/// What the gateway says of its own health in a beacon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReportedAvailability {
    /// Just started, not yet holding its first map (Ceph's CREATED beacon). A gateway the map
    /// holds as available that reports this has restarted: a fast reboot.
    Starting,
    /// Serving: its target is up and answering.
    Available,
    /// Alive but its local target does not answer (SPDK or configfs failed).
    Unavailable,
}

/// The content of one beacon. The monitor compares it with what the map holds and commits a
/// [`GatewayReport`] only when something other than the sequence number changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayReport {
    /// Increases by one per beacon; 0 restarts the sequence (a new process or a resend after
    /// the monitor asked for one).
    pub seq: u64,
    pub availability: ReportedAvailability,
    pub subsystems: Vec<Subsystem>,
    /// The newest group epoch whose map slice the gateway has applied to its target.
    pub applied_epoch: Epoch,
    /// The newest fence epoch the gateway has seen and waited for before serving optimized.
    pub fence_epoch: Epoch,
}

impl GatewayReport {
    /// Put the lists in one order: subsystems by NQN, each one's listeners by address and
    /// namespaces by nsid. The order a gateway lists things in carries no meaning, but a
    /// gateway that lists them from a hash map or a directory may change it between
    /// beacons; without one order that would look like a change and cost a Raft write per
    /// beacon. Reports converted from the wire are already canonical.
    pub fn canonicalize(&mut self) {
        for s in &mut self.subsystems {
            s.canonicalize();
        }
        self.subsystems.sort();
        share_nonces(&mut self.subsystems);
    }

    /// Whether `other` says the same thing, ignoring the sequence number: an unchanged beacon
    /// needs no Raft write. Lists are compared in order, so both reports should be
    /// canonical (see [`GatewayReport::canonicalize`]).
    pub fn same_content(&self, other: &GatewayReport) -> bool {
        self.availability == other.availability
            && self.applied_epoch == other.applied_epoch
            && self.fence_epoch == other.fence_epoch
            && self.subsystems == other.subsystems
    }
}

/// How a host may use the paths of one ANA group through one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AnaAccess {
    Optimized,
    Inaccessible,
}

impl fmt::Display for AnaAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnaAccess::Optimized => "optimized",
            AnaAccess::Inaccessible => "inaccessible",
        })
    }
}

/// One ANA group as a gateway must expose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnaGroupView {
    pub ana_group: AnaGroupId,
    pub access: AnaAccess,
    /// For an optimized group taken over from a failed gateway: the fence epoch the gateway
    /// must report in `fence_epoch` once it serves the group; zero otherwise.
    pub fence_epoch: Epoch,
    /// False while that fence has not yet been confirmed: the gateway must hold the group
    /// inaccessible until the map says the old owner is fenced.
    pub fence_complete: bool,
}

/// What the monitors tell the gateway about its availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SliceAvailability {
    Created,
    Available,
    /// The map has declared this gateway failed: it must stop serving and exit.
    Unavailable,
}

/// The part of the map one gateway receives: its own `(pool, group)` only. Every subsystem
/// it serves gets the same ANA states, so they are sent once and apply to each NQN listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSlice {
    /// The group epoch: it grows with every change of this group, and the gateway echoes it
    /// back as `applied_epoch` once it has applied the slice.
    pub epoch: Epoch,
    pub ana_group: AnaGroupId,
    pub availability: SliceAvailability,
    pub nqns: Vec<Nqn>,
    /// Every ANA group of the `(pool, group)`, in id order.
    pub ana_groups: Vec<AnaGroupView>,
    /// Namespaces the monitors moved between ANA groups, in `(nqn, nsid)` order: each must
    /// be in the ANA group given before the slice counts as applied.
    pub placements: Vec<NamespacePlacement>,
}

/// The ANA group one namespace must be in on a gateway's target (namespace balancing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamespacePlacement {
    pub nqn: Nqn,
    pub nsid: u32,
    pub ana_group: AnaGroupId,
}

impl MapSlice {
    /// Put the lists in one order: NQNs sorted, ANA groups by id (the order the map engine
    /// builds them in). Slices converted from the wire are already canonical, so a gateway
    /// can compare a new slice with the one it holds by `==`.
    pub fn canonicalize(&mut self) {
        self.nqns.sort();
        self.ana_groups.sort_by_key(|v| v.ana_group);
        self.placements.sort();
    }

    /// The ANA group namespace `nsid` of `nqn` must be in, if the monitors placed it.
    pub fn placement(&self, nqn: &Nqn, nsid: u32) -> Option<AnaGroupId> {
        self.placements
            .binary_search_by(|p| (&p.nqn, p.nsid).cmp(&(nqn, nsid)))
            .ok()
            .and_then(|i| self.placements.get(i))
            .map(|p| p.ana_group)
    }

    /// The view of one ANA group, if the group exists.
    pub fn ana(&self, id: AnaGroupId) -> Option<&AnaGroupView> {
        self.ana_groups.iter().find(|v| v.ana_group == id)
    }
}
