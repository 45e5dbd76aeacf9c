//! Feature levels: which version of the engine's rules the replicas apply.
//!
//! Every replica must compute the same map from the same log. A release that changes what a
//! command does (not only what it is told) cannot apply its new rule while monitors of the
//! previous release still apply the old one beside it, in a rolling upgrade: their maps
//! would part. So new rules wait for a level recorded in the map itself. The leader raises
//! it, with a committed [`Command::SetFeatures`](super::Command::SetFeatures), only once
//! every member of the cluster has said it supports the level (older releases, which do not
//! know the question, count as level 0). From that entry on every replica applies the new
//! rules; none before. A level is never lowered: a release older than the level cannot
//! rejoin, and a monitor that does not support it is refused as a new member.

/// The highest level this build applies.
pub const SUPPORTED: u32 = 4;

/// Level 1, Ceph parity:
/// - a gateway created while another is deleting and has let go of every ANA group inherits
///   that one's ANA group, with its namespaces, even when ids are free;
/// - a live gateway that lost its listeners is given the window a disabled one gets to
///   confirm it stopped serving, instead of being fenced at once.
pub const CEPH_PARITY: u32 = 1;

/// Level 2: a beacon that only confirms epochs (what the gateway applied, the fence it
/// echoes) is committed as [`Command::ConfirmApplied`](super::Command::ConfirmApplied),
/// without the subsystem list the map already holds.
pub const CONFIRMATIONS: u32 = 2;

/// Level 3: namespace balancing. The leader moves namespaces between ANA groups
/// ([`Command::MoveNamespaces`](super::Command::MoveNamespaces)) and the map keeps where it
/// placed them (map version 5, see [`super::placement`]).
pub const NAMESPACE_BALANCING: u32 = 3;

/// Level 4: batched writes. The leader may commit the commands of several proposers as one
/// log entry ([`crate::raft::Request::Batch`], see [`crate::raft::batch`]); every replica
/// applies them in order, as entries of their own. No rule of the map changes, but a
/// release below this level cannot read such an entry.
pub const BATCHED_WRITES: u32 = 4;
