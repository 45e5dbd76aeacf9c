//! Replication of the gateway map and the replica registry with openraft.
//!
//! * [`TypeConfig`]: the openraft type configuration: what is proposed and what comes back.
//! * `log_store`, `state_machine`: the storage adapters over the narrow [`crate::store::Store`].
//! * `network`, `service`: the Raft RPCs over tonic.
//! * [`handoff`]: the leadership handed to another voter before a planned stop.

use std::collections::BTreeMap;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::map::{Command, Event, MapError, Timestamp};
use crate::replica::{self, ReplicaCommand};

/// What the leader proposes: a map or replica-registry command with the leader's time.
/// Every replica applies it with that time, so every replica computes the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Map {
        now: Timestamp,
        cmd: Command,
    },
    Replica {
        now: Timestamp,
        cmd: ReplicaCommand,
    },
    /// A map command the leader decided from its own timers and observations (a gateway
    /// timed out, a timer is due, a fence completed) in `term`. It is applied only if the
    /// entry was appended in that same term: a leader that lost and regained leadership
    /// between deciding and proposing (and so restarted its timers meanwhile) must not act
    /// on what it saw in the earlier term. Appended last, so entries of the other variants
    /// written by earlier releases still decode.
    Leader {
        now: Timestamp,
        term: u64,
        cmd: Command,
    },
    /// Commands of several proposers committed as one entry (see [`batch`]), applied in
    /// order, each with its own outcome, as if each were an entry of its own at this index.
    /// Holds only the other variants, never a batch. Written only once the map's feature
    /// level is [`crate::map::features::BATCHED_WRITES`], since older releases cannot read it.
    Batch(Vec<Request>),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Map { now, cmd } => write!(f, "map command at {now}: {cmd:?}"),
            Request::Replica { now, cmd } => write!(f, "replica command at {now}: {cmd:?}"),
            Request::Leader { now, term, cmd } => {
                write!(f, "leader command of term {term} at {now}: {cmd:?}")
            }
            Request::Batch(requests) => write!(f, "a batch of {} commands", requests.len()),
        }
    }
}

/// What applying a [`Request`] gave, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The map epoch after the entry.
    pub map_epoch: gwmon_proto::domain::Epoch,
    /// The map engine's outcome; an unchanged success for entries that are not map
    /// commands (blank, membership, replica commands).
    pub outcome: Result<Applied, MapError>,
    /// The replica registry's outcome for a [`Request::Replica`]; `None` for every other
    /// entry.
    pub replica: Option<replica::Outcome>,
    /// For a [`Request::Batch`], each command's response, in order; empty for every other
    /// entry.
    pub batch: Vec<Response>,
}

/// A command the engine accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub changed: bool,
    pub events: Vec<Event>,
}

/// A monitor as the membership records it: the address clients (gateways, `nvme-gw`,
/// agents) reach it at, and the address the other monitors send Raft to (its peer port,
/// which serves nothing else).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MonitorNode {
    pub addr: String,
    pub peer_addr: String,
}

impl MonitorNode {
    pub fn new(addr: impl Into<String>, peer_addr: impl Into<String>) -> Self {
        MonitorNode {
            addr: addr.into(),
            peer_addr: peer_addr.into(),
        }
    }
}

impl std::fmt::Display for MonitorNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (peers: {})", self.addr, self.peer_addr)
    }
}

/// The peer port when none is named: the client port plus [`PEER_PORT_OFFSET`], on the
/// same host (`10.0.0.1:7400` → `10.0.0.1:7402`, next to HTTP on 7401). `None` when `addr`
/// has no port or the sum leaves the port range.
pub fn default_peer_addr(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let peer = port.checked_add(PEER_PORT_OFFSET)?;
    Some(format!("{host}:{peer}"))
}

/// See [`default_peer_addr`].
pub const PEER_PORT_OFFSET: u16 = 2;

/// A member recorded before monitors had a peer port (by openraft's `BasicNode`, one
/// address for everything): its peer port is taken to be the default one, where an
/// upgraded monitor with default settings serves Raft.
pub fn upgrade_node(old: &openraft::BasicNode) -> MonitorNode {
    let peer = default_peer_addr(&old.addr).unwrap_or_else(|| old.addr.clone());
    MonitorNode::new(old.addr.clone(), peer)
}

/// [`upgrade_node`] for every member of `old`.
pub fn upgrade_membership(
    old: &openraft::Membership<NodeId, openraft::BasicNode>,
) -> openraft::Membership<NodeId, MonitorNode> {
    let nodes: BTreeMap<NodeId, MonitorNode> =
        old.nodes().map(|(id, n)| (*id, upgrade_node(n))).collect();
    openraft::Membership::new(old.get_joint_config().clone(), nodes)
}

/// [`upgrade_membership`] of a stored membership, keeping its log id.
pub fn upgrade_stored_membership(
    old: &openraft::StoredMembership<NodeId, openraft::BasicNode>,
) -> StoredMembership {
    StoredMembership::new(*old.log_id(), upgrade_membership(old.membership()))
}

openraft::declare_raft_types!(
    /// gwmon's openraft types: node ids are [`gwmon_proto::domain::MonitorId`] values,
    /// nodes are known by their client and peer addresses ([`MonitorNode`]).
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = MonitorNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MonitorNode>;
pub type Membership = openraft::Membership<NodeId, MonitorNode>;

pub mod batch;
pub mod contact;
pub mod features;
pub mod handoff;
pub mod log_store;
pub mod network;
pub mod recent;
pub mod service;
pub mod signals;
pub mod state_machine;
