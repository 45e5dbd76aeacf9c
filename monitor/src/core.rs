//! What every service of a monitor shares: proposing commands through Raft and reading the
//! replicated map, with leader forwarding expressed as one error.

use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};

use crate::clock::Clock;
use crate::error::MonitorError;
use crate::events::EventLog;
use crate::map::{Command, GatewayMap};
use crate::metrics::Telemetry;
use crate::raft::state_machine::MapReader;
use crate::raft::{Applied, NodeId, Raft, Request};
use crate::replica::{self, ReplicaCommand, ReplicaRegistry};
use gwmon_proto::domain::Epoch;

/// A committed command's result.
#[derive(Debug, Clone)]
pub struct Committed {
    pub map_epoch: Epoch,
    pub applied: Applied,
    pub log_index: u64,
}

/// A committed replica-registry command's result.
#[derive(Debug, Clone)]
pub struct ReplicaCommitted {
    pub applied: replica::Applied,
    pub log_index: u64,
}

/// Cheap to clone; one per monitor.
#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    reader: MapReader,
    clock: Arc<dyn Clock>,
    telemetry: Telemetry,
    events: EventLog,
}

impl Core {
    pub fn new(
        id: NodeId,
        raft: Raft,
        reader: MapReader,
        clock: Arc<dyn Clock>,
        events: EventLog,
    ) -> Self {
        Core {
            inner: Arc::new(Inner {
                id,
                raft,
                reader,
                clock,
                telemetry: Telemetry::default(),
                events,
            }),
        }
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn reader(&self) -> &MapReader {
        &self.inner.reader
    }

    /// This monitor's counters: every service that counts something holds a `Core` already.
    pub fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// The window of applied events that `WatchEvents` serves.
    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    /// Whether this monitor is the leader right now, by its own latest metrics.
    pub fn is_leader(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.id)
    }

    /// The leader's advertised address, if one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Commit a map command through Raft, stamped with this leader's time. Returns once the
    /// command is applied here, so a following read sees it.
    pub async fn propose(&self, cmd: Command) -> Result<Committed, MonitorError> {
        let now = self.inner.clock.now();
        let resp = self
            .inner
            .raft
            .client_write(Request::Map { now, cmd })
            .await
            .map_err(write_error)?;
        let log_index = resp.log_id.index;
        let map_epoch = resp.data.map_epoch;
        let applied = resp.data.outcome?;
        Ok(Committed {
            map_epoch,
            applied,
            log_index,
        })
    }

    /// Commit a replica-registry command through Raft, stamped with this leader's time.
    /// Returns once the command is applied here, so a following read sees it. A refusal by
    /// the registry is [`MonitorError::Replica`].
    pub async fn propose_replica(
        &self,
        cmd: ReplicaCommand,
    ) -> Result<ReplicaCommitted, MonitorError> {
        let now = self.inner.clock.now();
        let resp = self
            .inner
            .raft
            .client_write(Request::Replica { now, cmd })
            .await
            .map_err(write_error)?;
        let log_index = resp.log_id.index;
        let applied = resp.data.replica.ok_or_else(|| {
            MonitorError::Raft("a replica command came back without its outcome".into())
        })??;
        Ok(ReplicaCommitted { applied, log_index })
    }

    /// Read the replica registry, linearizable unless `stale` (as [`Core::read`]).
    pub async fn read_replicas<T>(
        &self,
        stale: bool,
        f: impl FnOnce(&ReplicaRegistry) -> T,
    ) -> Result<T, MonitorError> {
        if !stale {
            self.inner
                .raft
                .ensure_linearizable()
                .await
                .map_err(read_error)?;
        }
        Ok(self.inner.reader.read_registry(f))
    }

    /// Read the map. Linearizable unless `stale`: the leader first confirms with a quorum
    /// that it still leads and waits until it has applied everything committed before the
    /// read. A stale read answers from whatever this monitor has applied.
    pub async fn read<T>(
        &self,
        stale: bool,
        f: impl FnOnce(&GatewayMap) -> T,
    ) -> Result<T, MonitorError> {
        if !stale {
            self.inner
                .raft
                .ensure_linearizable()
                .await
                .map_err(read_error)?;
        }
        Ok(self.inner.reader.read(f))
    }
}

fn forward(leader: Option<&BasicNode>) -> MonitorError {
    MonitorError::NotLeader {
        leader: leader.map(|n| n.addr.clone()),
    }
}

pub(crate) fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
) -> MonitorError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            forward(f.leader_node.as_ref())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            MonitorError::Raft(c.to_string())
        }
        RaftError::Fatal(f) => MonitorError::Raft(format!("monitor stopped: {f}")),
    }
}

fn read_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> MonitorError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
            forward(f.leader_node.as_ref())
        }
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            MonitorError::Raft(format!("no quorum to confirm a linearizable read: {q}"))
        }
        RaftError::Fatal(f) => MonitorError::Raft(format!("monitor stopped: {f}")),
    }
}
