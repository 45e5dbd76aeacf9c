//! What every service of a monitor shares: proposing commands through Raft and reading the
//! replicated map, with leader forwarding expressed as one error.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ServerState;

use crate::raft::MonitorNode;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::{Clock, MapClock};
use crate::error::MonitorError;
use crate::events::EventLog;
use crate::map::{Command, GatewayMap, Timestamp};
use crate::metrics::Telemetry;
use crate::raft::batch::{BatchError, Proposer, Written};
use crate::raft::contact::QuorumContact;
use crate::raft::state_machine::MapReader;
use crate::raft::{Applied, NodeId, Raft, Request};
use crate::replica::{self, ReplicaCommand, ReplicaRegistry};
use gwmon_proto::domain::Epoch;
use gwmon_proto::mutation::{self, Mutation};

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
    stamps: MapClock,
    leadership: watch::Receiver<Leadership>,
    telemetry: Telemetry,
    events: EventLog,
    contact: Arc<QuorumContact>,
    lease_span: Duration,
    proposer: Proposer,
}

/// The share of `election_timeout_min` a leader's lease keeps back for clocks that run at
/// different rates: the lease is counted on the leader's clock (and the gateway's), the
/// election timeout on the followers'. A tenth covers rates 10% apart, far beyond what
/// NTP-disciplined or even free-running quartz clocks drift over seconds.
pub const CLOCK_RATE_MARGIN_DIVISOR: u32 = 10;

/// Whether this monitor leads, in which term, and whether it still has the quorum contact
/// its gateway sessions need (see [`Core::contact_deadline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    pub leading: bool,
    pub in_contact: bool,
}

/// Publishes [`Leadership`] when it changes: looked at on every change of Raft's metrics
/// and at the contact deadline, by this one task rather than by every gateway session.
/// Ends (closing the channel) when Raft shuts down or the monitor's [`Core`] is gone.
async fn follow_leadership(
    core: Weak<Inner>,
    mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, MonitorNode>>,
    leads: watch::Sender<Leadership>,
) {
    loop {
        let Some(inner) = core.upgrade() else {
            return;
        };
        let core = Core { inner };
        let now = core.leadership_now();
        leads.send_if_modified(|l| std::mem::replace(l, now) != now);
        let deadline = (now.leading && now.in_contact).then(|| core.contact_deadline());
        drop(core);
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            () = leads.closed() => return,
        }
    }
}

/// This monitor's leadership as a quorum last confirmed it (see [`Core::lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The term it leads in.
    pub term: u64,
    /// The latest instant by which a quorum had acknowledged it in `term`.
    pub quorum_at: Instant,
    /// Until then no other monitor can have been elected: `quorum_at` plus
    /// `election_timeout_min`, less the clock-rate margin. Only a leader within it acts on
    /// its own observations (times gateways out, runs fences).
    pub exclusive_until: Instant,
}

impl Lease {
    /// The longest lease a gateway may be granted now, with `grace` the beacon grace: half
    /// the grace, and never past half the grace after the last quorum contact. A leader cut
    /// off from its quorum therefore stops renewing leases half a grace after it last heard
    /// from it, while any newer leader is elected after that contact and fails nobody over
    /// before a full grace of silence under it.
    pub fn gateway_lease(&self, grace: Duration, now: Instant) -> Option<Duration> {
        let half = grace / 2;
        let bound = (self.quorum_at + half).checked_duration_since(now)?;
        let lease = half.min(bound);
        (lease >= MIN_GATEWAY_LEASE).then_some(lease)
    }

    /// Whether no other leader can exist now.
    pub fn exclusive(&self, now: Instant) -> bool {
        now < self.exclusive_until
    }
}

/// A lease shorter than this is not worth granting: the gateway would demote before the
/// ack reached it.
pub const MIN_GATEWAY_LEASE: Duration = Duration::from_millis(10);

impl Core {
    /// `contact` must be the record the Raft network of `raft` writes acknowledgements to;
    /// `election_timeout_min` is Raft's.
    pub fn new(
        id: NodeId,
        raft: Raft,
        reader: MapReader,
        clock: Arc<dyn Clock>,
        events: EventLog,
        contact: Arc<QuorumContact>,
        election_timeout_min: Duration,
    ) -> Self {
        let lease_span = election_timeout_min - election_timeout_min / CLOCK_RATE_MARGIN_DIVISOR;
        let proposer = Proposer::start(raft.clone(), reader.clone());
        let unknown = Leadership {
            term: 0,
            leading: false,
            in_contact: false,
        };
        let (leads, leadership) = watch::channel(unknown);
        let metrics = raft.metrics();
        let core = Core {
            inner: Arc::new(Inner {
                id,
                raft,
                reader,
                clock,
                stamps: MapClock::default(),
                leadership,
                telemetry: Telemetry::default(),
                events,
                contact,
                lease_span,
                proposer,
            }),
        };
        tokio::spawn(follow_leadership(
            Arc::downgrade(&core.inner),
            metrics,
            leads,
        ));
        core
    }

    /// This monitor's leadership as far as a quorum has confirmed it, or `None` if it is
    /// not the leader, no quorum has acknowledged it in its term yet, it has not yet
    /// applied an entry of its own term, or it is no longer a voter. Applying an entry of
    /// its own term puts everything earlier terms committed (a timeout its predecessor
    /// decided, a completed fence) into its map before it acks a beacon, times anyone out
    /// or runs a fence.
    pub fn lease(&self) -> Option<Lease> {
        let (term, configs) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            if !self.leads(&m) {
                return None;
            }
            let configs: Vec<BTreeSet<NodeId>> =
                m.membership_config.membership().get_joint_config().clone();
            (m.current_term, configs)
        };
        let own_term_applied = self
            .inner
            .reader
            .last_applied()
            .is_some_and(|l| l.leader_id.term == term);
        if !own_term_applied {
            return None;
        }
        // A leader that removed itself from the membership stays leader in openraft 0.9
        // until it steps down, but leads nobody: the other monitors elect a leader of their
        // own. It must not ack, time out, fence or change the membership meanwhile.
        if !configs.iter().any(|c| c.contains(&self.inner.id)) {
            return None;
        }
        let quorum_at = if mutation::active(Mutation::AckWithoutQuorum) {
            Instant::now()
        } else {
            self.inner
                .contact
                .quorum_since(term, self.inner.id, &configs, Instant::now())?
        };
        Some(Lease {
            term,
            quorum_at,
            exclusive_until: quorum_at + self.inner.lease_span,
        })
    }

    /// [`Core::lease`] if no other leader can exist now: what the liveness loop and the
    /// fence runner require before acting.
    pub fn exclusive_lease(&self) -> Option<Lease> {
        self.lease().filter(|l| l.exclusive(Instant::now()))
    }

    /// The answer for a caller that needs a confirmed leader and did not find one here: a
    /// redirect when another leader is known, otherwise "unconfirmed" (try another).
    pub fn not_confirmed(&self) -> MonitorError {
        if self.is_leader() {
            MonitorError::Unconfirmed
        } else {
            MonitorError::NotLeader {
                leader: self.leader_addr(),
            }
        }
    }

    /// The time to stamp on a command proposed now: the wall clock, kept within what the
    /// monotonic clock allows since the latest command applied here and the latest stamp
    /// handed out (see [`MapClock`]).
    pub fn now(&self) -> Timestamp {
        let wall = self.inner.clock.now();
        let applied = self.inner.reader.time_anchor();
        self.inner.stamps.stamp(wall, applied, Instant::now())
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

    /// Whether this monitor is the leader right now, by its own latest metrics: enough to
    /// route a request, never to grant a lease or act on liveness (see [`Core::lease`]).
    pub fn is_leader(&self) -> bool {
        self.leads(&self.inner.raft.metrics().borrow())
    }

    /// Whether `metrics` say this monitor is the leader.
    fn leads(&self, metrics: &openraft::RaftMetrics<NodeId, MonitorNode>) -> bool {
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.inner.id)
    }

    /// A receiver that changes when this monitor becomes or stops being the leader, the
    /// term changes, or it gains or loses the quorum contact gateway sessions need, and
    /// errors once Raft has shut down. Raft's own metrics change on every append; a
    /// gateway session waits on this instead, so thousands of sessions are not woken by
    /// every commit, nor each by a timer of its own.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.inner.leadership.clone()
    }

    fn leadership_now(&self) -> Leadership {
        let (term, leading) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            (m.current_term, self.leads(&m))
        };
        Leadership {
            term,
            leading,
            in_contact: leading && self.contact_deadline() > Instant::now(),
        }
    }

    /// Until when a gateway session may stay open here: the latest quorum contact plus
    /// half the grace, as a gateway's lease can last no longer; now if this monitor holds
    /// no lease. A monitor past it may have been deposed, so its sessions close and their
    /// gateways look for the leader.
    pub fn contact_deadline(&self) -> Instant {
        let now = Instant::now();
        let Some(lease) = self.lease() else {
            return now;
        };
        let grace = self
            .inner
            .reader
            .read(|m| Duration::from_millis(m.config().beacon_grace_ms));
        lease.quorum_at + grace / 2
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
        let now = self.now();
        self.write(Request::Map { now, cmd }).await
    }

    /// Commit a command this leader decided from its own observations in `term` (a
    /// timeout, a due timer, a completed fence): refused at apply unless appended in `term`.
    pub async fn propose_as_leader(
        &self,
        term: u64,
        cmd: Command,
    ) -> Result<Committed, MonitorError> {
        let now = self.now();
        self.write(Request::Leader { now, term, cmd }).await
    }

    async fn write(&self, request: Request) -> Result<Committed, MonitorError> {
        let Written { log_id, response } = self.commit(request).await?;
        Ok(Committed {
            map_epoch: response.map_epoch,
            applied: response.outcome?,
            log_index: log_id.index,
        })
    }

    /// Commits `request` through the batcher (alone or with others proposed meanwhile).
    async fn commit(&self, request: Request) -> Result<Written, MonitorError> {
        self.inner
            .proposer
            .write(request)
            .await
            .map_err(|e| match e {
                BatchError::Raft(e) => write_error(*e),
                BatchError::Mismatch {
                    commands,
                    responses,
                } => MonitorError::Raft(format!(
                    "a batch of {commands} commands came back with {responses} outcomes"
                )),
            })
    }

    /// Commit a replica-registry command through Raft, stamped with this leader's time.
    /// Returns once the command is applied here, so a following read sees it. A refusal by
    /// the registry is [`MonitorError::Replica`].
    pub async fn propose_replica(
        &self,
        cmd: ReplicaCommand,
    ) -> Result<ReplicaCommitted, MonitorError> {
        let now = self.now();
        let Written { log_id, response } = self.commit(Request::Replica { now, cmd }).await?;
        let applied = response.replica.ok_or_else(|| {
            MonitorError::Raft("a replica command came back without its outcome".into())
        })??;
        Ok(ReplicaCommitted {
            applied,
            log_index: log_id.index,
        })
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

fn forward(leader: Option<&MonitorNode>) -> MonitorError {
    MonitorError::NotLeader {
        leader: leader.map(|n| n.addr.clone()),
    }
}

pub(crate) fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, MonitorNode>>,
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

fn read_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, MonitorNode>>) -> MonitorError {
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
