//! The leader's liveness loop: who beaconed when, which process holds each gateway's lease,
//! and which gateways have gone silent.
//!
//! Beacons do not go through Raft. The leader keeps the instant of each gateway's last
//! beacon in memory, on tokio's monotonic clock; only a beacon whose content changed, a
//! timeout, or a timer that is due becomes a command.
//!
//! Detection is driven by deadlines: the watched gateways are queued, so the loop sleeps
//! until the earliest entry plus the grace (or one period, for the map's own timers) and
//! then looks only at those due, without walking the map. A beacon only notes when the
//! gateway was heard; an entry that comes due for a gateway heard since is queued again at
//! its last beacon, so the queue is reordered once per grace per gateway, not per beacon. Timeouts found together are proposed together, each bounded in time. After a
//! leader change, when this monitor stalled (a paused process would otherwise time out
//! every gateway whose beacons it did not read), or when it regains the quorum contact
//! without which it refuses beacons, every gateway's timer restarts: nobody is
//! failed over before a full grace has passed under a leader that was able to hear it. A
//! stall is told from the schedule: a watchdog beside the loop, and the loop's own wake-up,
//! each late by more than two periods. A slow commit is not a stall: it delays the decision
//! it is part of, not everyone's timer.
//!
//! Three rules keep a lease and a failover from overlapping:
//!
//! * **Quorum-bounded leases.** An ack's lease never runs past half the grace after the
//!   leader's last quorum contact (`Lease::gateway_lease`), and a leader with no quorum
//!   contact in its term acks nothing.
//! * **Revoke before decide.** A gateway is marked revoked, in the same critical section
//!   that finds it silent, before its timeout is proposed: a beacon that arrives after that
//!   is not acked, and one that arrived before it kept the gateway from being found silent.
//! * **Decided in one term.** Timeouts and timer ticks are proposed as `Request::Leader`
//!   with the term they were decided in, and refused at apply if they reached the log in
//!   another; a new leader acts only after applying an entry of its own term.
//!
//! It also keeps one process per gateway: the incarnation that last got an ack holds the
//! gateway until its lease has run out, and a session of another incarnation is refused
//! meanwhile (two processes started with one id must not both serve).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gwmon_proto::domain::{
    Epoch, GatewayId, GatewayReport, GroupKey, ReportedAvailability, Subsystem,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::{Core, Lease};
use crate::error::MonitorError;
use crate::map::{Availability, BeaconCheck, Command, MapError};

type Key = (GroupKey, GatewayId);

/// Whether a gateway may time out: it is up, or it came up and has not yet reported
/// available.
fn watched(gw: &crate::map::Gateway) -> bool {
    gw.availability == Availability::Available
        || (gw.availability == Availability::Created && gw.performed_full_startup)
}

/// A panic while holding one of these locks cannot leave what it guards inconsistent
/// (instants, ids and sets of them), so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a gateway's session sends back for a beacon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeaconAck {
    /// The gateway's group epoch: if it is newer than what the gateway applied, a new map
    /// slice is on its way.
    pub group_epoch: Epoch,
    pub map_epoch: Epoch,
    /// Whether this beacon was committed (its content changed).
    pub committed: bool,
    /// The lease the ack grants, counted by the gateway from when it sent the beacon.
    /// `None`: no ack is sent (the gateway is being timed out, or was declared failed and
    /// has not restarted), and the gateway's lease runs out.
    pub lease: Option<Duration>,
}

/// The subsystems of a beacon that left them out as unchanged: its session's last list,
/// and the map's list the session last found equal to it. While the map holds that very
/// list, a beacon is checked without comparing the lists again.
pub struct Unchanged<'a> {
    pub listed: &'a [Subsystem],
    pub matched: &'a mut Option<Arc<Vec<Subsystem>>>,
}

/// What [`Liveness::look`] found.
struct Looked {
    check: BeaconCheck,
    zombie: bool,
    grace: Duration,
}

pub struct Liveness {
    core: Core,
    period: Duration,
    state: Mutex<State>,
    /// The gateways whose report is being committed, each by a task of its own: a beacon
    /// that finds its gateway here proposes nothing (see [`Liveness::commit_report`]).
    proposing: Arc<Mutex<HashSet<Key>>>,
}

/// Who holds a gateway: the incarnation last acked, until when its lease may run.
#[derive(Debug, Clone, Copy)]
struct Holder {
    incarnation: u64,
    lease_until: Instant,
}

#[derive(Default)]
struct State {
    /// The term in which this monitor leads, if it does.
    term: Option<u64>,
    /// When the timers last restarted: nobody counts as silent from before this.
    since: Option<Instant>,
    /// When each gateway was last heard in this term.
    seen: HashMap<Key, Instant>,
    /// The gateways that may time out, by when they were queued, earliest first; `queued`
    /// is each one's place. An entry comes due at that instant, or `since` if later, plus
    /// the grace; a gateway heard since then is queued again at its last beacon rather
    /// than timed out (beacons do not move entries).
    queue: BTreeSet<(Instant, Key)>,
    queued: HashMap<Key, Instant>,
    /// Gateways whose timeout is being proposed: their beacons are not acked.
    revoked: HashSet<Key>,
    holders: HashMap<Key, Holder>,
    /// The beacon grace in force at the last pass.
    grace: Option<Duration>,
    /// This monitor refused beacons for want of quorum contact since the last pass that
    /// could act: the gateways it could not hear get a full grace again once it can.
    deaf: bool,
}

impl State {
    fn restart(&mut self, now: Instant) {
        self.since = Some(now);
        self.seen.clear();
        self.revoked.clear();
    }

    fn forget(&mut self) {
        self.term = None;
        self.seen.clear();
        self.queue.clear();
        self.queued.clear();
        self.revoked.clear();
        self.holders.clear();
    }

    /// Put `key` in the queue at `at`, or move it there.
    fn enqueue(&mut self, key: &Key, at: Instant) {
        if let Some(old) = self.queued.insert(key.clone(), at) {
            self.queue.remove(&(old, key.clone()));
        }
        self.queue.insert((at, key.clone()));
    }

    /// A beacon from `key` at `at`. A gateway already queued stays where it is: a beacon
    /// costs a map update, not a move in the ordered queue, and [`State::take_due`] moves
    /// an entry on when it comes due for a gateway heard since.
    fn heard(&mut self, key: &Key, at: Instant) {
        match self.seen.get_mut(key) {
            Some(seen) => *seen = at,
            None => {
                self.seen.insert(key.clone(), at);
            }
        }
        if !self.queued.contains_key(key) {
            self.queued.insert(key.clone(), at);
            self.queue.insert((at, key.clone()));
        }
    }

    /// The queue's first entry, taken out, once the entries ahead of it of gateways heard
    /// since they were queued have gone back in at their last beacon. Every entry is queued
    /// no later than its gateway's deadline, so the one returned is the earliest deadline.
    fn pop_exact(&mut self) -> Option<(Instant, Key)> {
        loop {
            let (at, key) = self.queue.pop_first()?;
            match self.seen.get(&key).copied().filter(|seen| *seen > at) {
                Some(seen) => {
                    if let Some(queued) = self.queued.get_mut(&key) {
                        *queued = seen;
                    }
                    self.queue.insert((seen, key));
                }
                None => return Some((at, key)),
            }
        }
    }

    /// When the first gateway of the queue times out, if any is queued: the loop wakes only
    /// when someone is due.
    fn next_deadline(&mut self, grace: Duration) -> Option<Instant> {
        let (at, key) = self.pop_exact()?;
        self.queue.insert((at, key));
        Some(self.since.map_or(at, |s| at.max(s)) + grace)
    }

    /// Take every gateway silent for `grace` at `now` out of the queue, with how long it
    /// has been silent.
    fn take_due(&mut self, now: Instant, grace: Duration) -> Vec<(Key, Duration)> {
        let mut due = Vec::new();
        while let Some((at, key)) = self.pop_exact() {
            let from = self.since.map_or(at, |s| at.max(s));
            let silent = now.saturating_duration_since(from);
            if silent < grace {
                self.queue.insert((at, key));
                break;
            }
            self.queued.remove(&key);
            due.push((key, silent));
        }
        due
    }

    /// Refuse `incarnation` if another one holds `key`'s lease.
    fn check_holder(&self, key: &Key, incarnation: u64, now: Instant) -> Result<(), MonitorError> {
        match self.holders.get(key) {
            Some(h) if h.incarnation != incarnation && h.lease_until > now => {
                Err(MonitorError::Duplicate {
                    key: key.0.clone(),
                    gateway: key.1.clone(),
                    holder: h.incarnation,
                    remaining_ms: u64::try_from((h.lease_until - now).as_millis())
                        .unwrap_or(u64::MAX),
                })
            }
            _ => Ok(()),
        }
    }
}

impl Liveness {
    pub fn new(core: Core, period: Duration) -> Self {
        Liveness {
            core,
            period,
            state: Mutex::new(State::default()),
            proposing: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// May a session of `incarnation` serve this gateway? Refused while another
    /// incarnation holds its lease.
    pub fn admit(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        incarnation: u64,
    ) -> Result<(), MonitorError> {
        self.lock()
            .check_holder(&(key.clone(), gateway.clone()), incarnation, Instant::now())
    }

    /// A beacon from the session of `incarnation`; `unchanged` if it left its subsystems
    /// out. Only a leader confirmed by a quorum takes beacons; the others answer with the
    /// leader's address or "unconfirmed". Unknown or deleted gateways are refused without
    /// a write.
    pub async fn beacon(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        incarnation: u64,
        mut report: GatewayReport,
        mut unchanged: Option<Unchanged<'_>>,
    ) -> Result<BeaconAck, MonitorError> {
        let Some(lease) = self.core.lease() else {
            self.lock().deaf = true;
            return Err(self.core.not_confirmed());
        };
        self.core.telemetry().beacon_received();
        let k = (key.clone(), gateway.clone());
        let revoked = {
            let mut s = self.lock();
            s.check_holder(&k, incarnation, Instant::now())?;
            let revoked = s.revoked.contains(&k);
            if !revoked {
                s.heard(&k, Instant::now());
            }
            revoked
        };
        if revoked {
            debug!(pool = %key.pool, group = %key.group, %gateway,
                   "beacon not acked: the gateway is being timed out");
            return Ok(self.unacked(key, false));
        }
        let Looked {
            check,
            zombie,
            grace,
        } = self.look(key, gateway, &report, unchanged.as_mut())?;
        let changes = check.changes;
        if changes {
            if let Some(u) = unchanged {
                report.subsystems = u.listed.to_vec();
            }
            let cmd = check.command(key, gateway, report);
            match self.commit_report(k, cmd, grace / 2).await {
                Some(committed) => {
                    committed?;
                }
                // Not committed yet: no ack, so no lease. The session stays open while this
                // leader keeps its quorum contact, and closes when it loses it.
                None if self.core.lease().is_some() => return Ok(self.unacked(key, false)),
                None => return Err(self.core.not_confirmed()),
            }
        }
        if zombie {
            return Ok(self.unacked(key, changes));
        }
        self.grant(key, gateway, incarnation, changes, lease)
    }

    /// Commits a gateway's report, waiting at most `wait` for it; `None` if it is not
    /// committed by then, or if an earlier report of the gateway is still on its way (this
    /// one is then not proposed: the gateway's next beacon carries it again).
    ///
    /// The wait is bounded because a leader cut off from its quorum stays in office
    /// (openraft 0.9) and a proposal there waits until it steps down, which it does only
    /// once the partition heals. A session blocked here could neither ack nor close for
    /// want of quorum contact: the gateway kept its stream to the cut-off leader and never
    /// looked for the new one (found by sim/tests/real.rs).
    ///
    /// The commit goes on in a task of its own after the wait. A commit that is only slow
    /// (thousands of gateways reporting at once) then ends neither the session nor the
    /// proposal: a refused gateway would reconnect and propose its report again, adding to
    /// the queue that made it slow.
    async fn commit_report(
        &self,
        key: Key,
        cmd: Command,
        wait: Duration,
    ) -> Option<Result<crate::core::Committed, MonitorError>> {
        if !lock(&self.proposing).insert(key.clone()) {
            return None;
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let core = self.core.clone();
        let proposing = self.proposing.clone();
        tokio::spawn(async move {
            let committed = core.propose(cmd).await;
            lock(&proposing).remove(&key);
            let _ = done.send(committed);
        });
        match tokio::time::timeout(wait, result).await {
            Ok(Ok(committed)) => Some(committed),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// One look at the gateway in the map: what its beacon would do, whether it was
    /// declared failed and not restarted (a zombie, which may serve nothing and gets no
    /// lease), and the grace. Refuses a beacon of a gateway not in the map, a new process
    /// of a deleted one, and one older than the last committed.
    fn look(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        report: &GatewayReport,
        unchanged: Option<&mut Unchanged<'_>>,
    ) -> Result<Looked, MapError> {
        let restart = report.availability == ReportedAvailability::Starting;
        self.core.reader().read(|map| {
            let gw = map
                .group(key)
                .ok_or_else(|| MapError::UnknownGroup(key.clone()))?
                .gateways
                .get(gateway)
                .ok_or_else(|| MapError::UnknownGateway {
                    key: key.clone(),
                    gateway: gateway.clone(),
                })?;
            // A deleted gateway beacons on only to confirm it stopped serving; a new
            // process of it is refused.
            if gw.availability == Availability::Deleting && restart {
                return Err(MapError::GatewayDeleting {
                    key: key.clone(),
                    gateway: gateway.clone(),
                });
            }
            if !restart && report.seq != 0 && gw.reported.is_some() && report.seq <= gw.last_seq {
                return Err(MapError::StaleBeacon {
                    gateway: gateway.clone(),
                    seq: report.seq,
                    last: gw.last_seq,
                });
            }
            let check = match unchanged {
                Some(u) => map.check_beacon_with(key, gateway, report, |held| {
                    if u.matched.as_ref().is_some_and(|m| Arc::ptr_eq(m, held)) {
                        return true;
                    }
                    let same = held.as_slice() == u.listed;
                    *u.matched = same.then(|| held.clone());
                    same
                }),
                None => map.check_beacon(key, gateway, report),
            };
            Ok(Looked {
                check,
                zombie: gw.availability == Availability::Unavailable && !restart,
                grace: Duration::from_millis(map.config().beacon_grace_ms),
            })
        })
    }

    /// The ack of a beacon whose report is in the map (`changes`: committed by it now),
    /// with a lease bounded by this leader's quorum contact (`lease`, as of the beacon's
    /// arrival; looked up again after a commit, which may have taken a while), or without
    /// one if the gateway was revoked or timed out meanwhile.
    fn grant(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        incarnation: u64,
        changes: bool,
        lease: Lease,
    ) -> Result<BeaconAck, MonitorError> {
        let lease = if changes {
            self.core.lease()
        } else {
            Some(lease)
        };
        let Some(lease) = lease else {
            return Err(self.core.not_confirmed());
        };
        let k = (key.clone(), gateway.clone());
        let mut s = self.lock();
        // Read under the lock: a timeout is in the map by the time its revocation ends,
        // so a gateway revoked or timed out meanwhile is seen as one or the other.
        let (grace, failed, group_epoch, map_epoch) = self.core.reader().read(|m| {
            let group = m.group(key);
            let failed = group
                .and_then(|g| g.gateways.get(gateway))
                .is_none_or(|gw| gw.availability == Availability::Unavailable);
            (
                Duration::from_millis(m.config().beacon_grace_ms),
                failed,
                group.map_or(Epoch::ZERO, |g| g.epoch),
                m.epoch(),
            )
        });
        let mut ack = BeaconAck {
            group_epoch,
            map_epoch,
            committed: changes,
            lease: None,
        };
        if s.revoked.contains(&k) || failed {
            return Ok(ack);
        }
        let now = Instant::now();
        let Some(granted) = lease.gateway_lease(grace, now) else {
            return Err(MonitorError::Unconfirmed);
        };
        s.check_holder(&k, incarnation, now)?;
        let holder = Holder {
            incarnation,
            lease_until: now + granted,
        };
        match s.holders.get_mut(&k) {
            Some(held) => *held = holder,
            None => {
                s.holders.insert(k, holder);
            }
        }
        ack.lease = Some(granted);
        Ok(ack)
    }

    fn epochs(&self, key: &GroupKey) -> (Epoch, Epoch) {
        self.core
            .reader()
            .read(|map| (map.group(key).map_or(Epoch::ZERO, |g| g.epoch), map.epoch()))
    }

    fn unacked(&self, key: &GroupKey, committed: bool) -> BeaconAck {
        let (group_epoch, map_epoch) = self.epochs(key);
        BeaconAck {
            group_epoch,
            map_epoch,
            committed,
            lease: None,
        }
    }

    /// Time out silent gateways at their deadlines, and check the map's timers every
    /// period, until `shutdown`; a watchdog beside it restarts every timer after a stall.
    pub async fn run(&self, shutdown: CancellationToken) {
        let detector = async {
            let mut wake = Instant::now();
            loop {
                tokio::time::sleep_until(wake).await;
                if self.stalled(wake, Instant::now()) {
                    wake = self.next_wake(Instant::now());
                    continue;
                }
                let acted = self.tick().await.unwrap_or_else(|e| {
                    debug!(error = %e, "liveness pass");
                    true
                });
                // Never before now: a deadline already past (a slow commit) is met at once
                // and does not count as lateness. A monitor that may not act (a follower, a
                // leader without quorum contact) leaves the queue as it is: it looks again a
                // period later instead of spinning on deadlines it will not meet.
                let now = Instant::now();
                wake = if acted {
                    self.next_wake(now)
                } else {
                    now + self.period
                };
            }
        };
        let watchdog = async {
            let mut interval = tokio::time::interval(self.period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let scheduled = interval.tick().await;
                self.stalled(scheduled, Instant::now());
            }
        };
        // The watchdog before the detector: after a stall it restarts the timers before the
        // detector, woken at the same time, can act on silences it did not hear. A pass
        // waiting for a commit that cannot come (the last monitor stopping) ends with the
        // loop.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {}
            () = watchdog => {}
            () = detector => {}
        }
    }

    /// When the loop must look next: the first deadline, or one period from `now` for the
    /// map's timers and a change of leadership, whichever comes first; never before `now`.
    pub fn next_wake(&self, now: Instant) -> Instant {
        let grace = self
            .core
            .reader()
            .read(|map| Duration::from_millis(map.config().beacon_grace_ms));
        let periodic = now + self.period;
        self.lock()
            .next_deadline(grace)
            .map_or(periodic, |d| d.clamp(now, periodic))
    }

    /// Whether this monitor stalled: something scheduled for `scheduled` ran at `now`, more
    /// than two periods late. Then every gateway's timer restarts at `now`, rather than
    /// failing gateways whose beacons this monitor could not read meanwhile.
    pub fn stalled(&self, scheduled: Instant, now: Instant) -> bool {
        let late = now.saturating_duration_since(scheduled);
        if late <= self.period * 2
            || gwmon_proto::mutation::active(gwmon_proto::mutation::Mutation::StaleTermTimeout)
        {
            return false;
        }
        let mut s = self.lock();
        if s.term.is_some() {
            warn!(
                late_ms = late.as_millis() as u64,
                "this monitor stalled: every gateway's timer restarts rather than failing gateways it could not hear"
            );
            s.restart(now);
        }
        true
    }

    /// One pass: restart timers if leadership demands it, time out the gateways whose
    /// deadline has come, and propose a timer tick if one is due. Only a leader no other
    /// monitor can have displaced acts; `Ok(false)` when this monitor may not.
    pub async fn tick(&self) -> Result<bool, MonitorError> {
        let now = Instant::now();
        let Some(lease) = self.core.exclusive_lease() else {
            let mut s = self.lock();
            s.deaf = true;
            if !self.core.is_leader()
                && !gwmon_proto::mutation::active(gwmon_proto::mutation::Mutation::StaleTermTimeout)
            {
                s.forget();
            }
            return Ok(false);
        };
        let term = lease.term;
        let grace = self
            .core
            .reader()
            .read(|map| Duration::from_millis(map.config().beacon_grace_ms));
        let new_term = {
            let mut s = self.lock();
            if let Some(old) = s.grace.filter(|old| grace < *old) {
                // Leases already granted last up to half the old grace from their beacon.
                // Nobody may be failed over before those have run out, so no timer counts
                // before then: a shorter grace must not make a still-serving owner's group
                // move. Gateways take the shorter lease with their next ack.
                let hold = now + old / 2;
                info!(
                    old_ms = old.as_millis() as u64,
                    new_ms = grace.as_millis() as u64,
                    "beacon grace shortened: timers count from when the old leases have run out"
                );
                s.since = Some(s.since.map_or(hold, |t| t.max(hold)));
            }
            s.grace = Some(grace);
            if s.term == Some(term) {
                // Found by the simulation (seed 6): a membership change that waited for a
                // crashed monitor left the leader without quorum contact for 3.5 s; it
                // refused every beacon meanwhile, and once contact was back it timed out
                // every gateway it had refused, in the same term.
                if std::mem::take(&mut s.deaf) {
                    info!(
                        term,
                        "quorum contact is back: every gateway's timer restarts"
                    );
                    s.restart(now);
                }
                false
            } else {
                s.deaf = false;
                // The mutation keeps the timers of an earlier term, once there are any.
                let stale = s.since.is_some()
                    && gwmon_proto::mutation::active(
                        gwmon_proto::mutation::Mutation::StaleTermTimeout,
                    );
                if !stale {
                    info!(term, "leading: every gateway's timer restarts");
                    s.forget();
                    s.restart(now);
                }
                s.term = Some(term);
                !stale
            }
        };
        if new_term {
            self.watch_all(now);
        }
        let due = self.take_silent(Instant::now(), grace);
        self.time_out(term, grace, due).await?;

        let ts = self.core.now();
        let due = self.core.reader().read(|map| map.tick_would_change(ts));
        if due {
            self.core
                .propose_as_leader(term, Command::TimerTick)
                .await?;
        }
        Ok(true)
    }

    /// Queue every gateway the map says may time out, at `now`: once per term, the only
    /// pass over the whole map. Later, a gateway enters the queue by beaconing.
    fn watch_all(&self, now: Instant) {
        let mut s = self.lock();
        self.core.reader().read(|map| {
            for (k, g) in map.groups() {
                for (id, gw) in &g.gateways {
                    if watched(gw) {
                        s.enqueue(&(k.clone(), id.clone()), now);
                    }
                }
            }
        });
    }

    /// The gateways whose deadline has come and that may still time out, revoked in one
    /// critical section: a beacon either came before (and moved them back in the queue) or
    /// comes after (and is not acked). Those the map no longer watches leave the queue until
    /// they beacon again.
    fn take_silent(&self, now: Instant, grace: Duration) -> Vec<(Key, Duration)> {
        let mut s = self.lock();
        let due = s.take_due(now, grace);
        if due.is_empty() {
            return due;
        }
        let due: Vec<(Key, Duration)> = self.core.reader().read(|map| {
            due.into_iter()
                .filter(|((key, id), _)| {
                    map.group(key)
                        .and_then(|g| g.gateways.get(id))
                        .is_some_and(watched)
                })
                .collect()
        });
        for (k, _) in &due {
            s.revoked.insert(k.clone());
        }
        due
    }

    /// Propose the timeouts of `due` together, each bounded by half the grace (a leader cut
    /// off from its quorum must not hold the loop). One that is not committed is queued
    /// again, due one period later, and its beacons are acked again meanwhile.
    async fn time_out(
        &self,
        term: u64,
        grace: Duration,
        due: Vec<(Key, Duration)>,
    ) -> Result<(), MonitorError> {
        let proposals = due.into_iter().map(|((key, gateway), silent)| async move {
            info!(pool = %key.pool, group = %key.group, %gateway, term,
                  silent_ms = silent.as_millis() as u64, "gateway timed out");
            self.core.telemetry().detected(silent.saturating_sub(grace));
            let k = (key.clone(), gateway.clone());
            let proposed = tokio::time::timeout(
                grace / 2,
                self.core
                    .propose_as_leader(term, Command::GatewayTimedOut { key, gateway }),
            )
            .await
            .unwrap_or(Err(MonitorError::Unconfirmed));
            // Committed: the map says it failed and its beacons get no lease anyway (until
            // it restarts). Not committed: its timer goes on and it is acked again.
            let mut s = self.lock();
            s.revoked.remove(&k);
            if proposed.is_err() {
                let again = Instant::now() + self.period;
                s.enqueue(&k, again.checked_sub(grace).unwrap_or(again));
            }
            proposed
        });
        futures_util::future::join_all(proposals)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(drop)
    }

    /// When the leader last heard from a gateway, if it has in this term.
    pub fn last_seen(&self, key: &GroupKey, gateway: &GatewayId) -> Option<Instant> {
        self.lock()
            .seen
            .get(&(key.clone(), gateway.clone()))
            .copied()
    }
}

/// The loop on a real single-node monitor (Raft over an in-memory store, no network), on
/// paused tokio time: ticks are called by hand, so each test decides exactly when the loop
/// runs and how late.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gwmon_proto::domain::{Listener, Subsystem};

    use super::*;
    use crate::config::MonitorConfig;
    use crate::map::ConfigUpdate;
    use crate::node::{Monitor, Plumbing};
    use crate::store::MemStore;

    const PERIOD: Duration = Duration::from_millis(250);
    /// The map's default beacon grace.
    const GRACE: Duration = Duration::from_secs(4);

    struct Leader {
        // Kept so its tasks (Raft among them) live as long as the test.
        _monitor: Monitor,
        core: Core,
        liveness: Liveness,
        key: GroupKey,
        gw: GatewayId,
    }

    /// A monitor that leads with a quorum's confirmation, a gateway created in its map, and
    /// a liveness loop of its own that has taken the term (its timers started).
    async fn leader() -> Leader {
        leader_on(Arc::new(MemStore::new())).await
    }

    /// [`leader`] on `store`, which the test may slow down.
    async fn leader_on(store: Arc<MemStore>) -> Leader {
        let mut config = MonitorConfig::new(
            1,
            "/nonexistent/unused",
            "127.0.0.1:0".parse().expect("addr"),
        );
        config.http_listen = None;
        // The monitor's own loop stays out of the way: the tests tick theirs by hand.
        config.liveness_tick_ms = 3_600_000;
        let incoming = tokio_stream::pending::<Result<tokio::net::TcpStream, std::io::Error>>();
        let monitor = Monitor::start_custom(
            config,
            "mon1:7400".into(),
            incoming,
            store,
            Plumbing::default(),
        )
        .await
        .expect("monitor starts");
        let core = monitor.core.clone();
        let end = Instant::now() + Duration::from_secs(30);
        // Led, and the feature level raised: no write of the monitor's own comes later.
        while core.exclusive_lease().is_none()
            || core.reader().read(|m| m.features()) < crate::map::features::SUPPORTED
        {
            assert!(Instant::now() < end, "the monitor never led");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let key = GroupKey::new("rbd".parse().expect("pool"), "grp1".parse().expect("group"));
        let gw: GatewayId = "gw1".parse().expect("gateway");
        core.propose(Command::CreateGateway {
            key: key.clone(),
            gateway: gw.clone(),
        })
        .await
        .expect("gateway created");
        let liveness = Liveness::new(core.clone(), PERIOD);
        liveness.tick().await.expect("first tick");
        Leader {
            _monitor: monitor,
            core,
            liveness,
            key,
            gw,
        }
    }

    fn report(seq: u64, availability: ReportedAvailability) -> GatewayReport {
        GatewayReport {
            seq,
            availability,
            subsystems: vec![Subsystem {
                nqn: "nqn.2016-06.io.spdk:cnode1".parse().expect("nqn"),
                listeners: vec![Listener {
                    address: "127.0.0.1".parse().expect("address"),
                    port: 4420,
                }],
                namespaces: Vec::new(),
            }],
            applied_epoch: Epoch::ZERO,
            fence_epoch: Epoch::ZERO,
        }
    }

    impl Leader {
        async fn beacon(
            &self,
            incarnation: u64,
            seq: u64,
            availability: ReportedAvailability,
        ) -> Result<BeaconAck, MonitorError> {
            self.liveness
                .beacon(
                    &self.key,
                    &self.gw,
                    incarnation,
                    report(seq, availability),
                    None,
                )
                .await
        }

        /// A new process of `incarnation` that reports in and becomes available, acked.
        async fn available(&self, incarnation: u64) {
            for (seq, a) in [
                (0, ReportedAvailability::Starting),
                (1, ReportedAvailability::Available),
            ] {
                let ack = self
                    .beacon(incarnation, seq, a)
                    .await
                    .expect("beacon taken");
                assert!(ack.lease.is_some(), "{a:?} beacon not acked: {ack:?}");
            }
            assert_eq!(self.availability(), Availability::Available);
        }

        fn availability(&self) -> Availability {
            self.core.reader().read(|m| {
                m.group(&self.key)
                    .and_then(|g| g.gateways.get(&self.gw))
                    .map(|gw| gw.availability)
                    .expect("the gateway is in the map")
            })
        }

        /// Tick every period until the gateway is unavailable, checking before each tick
        /// that it is still available; `timers_from` is when its timer last (re)started.
        /// Returns when the tick that timed it out started.
        async fn tick_until_timed_out(&self, timers_from: Instant) -> Instant {
            loop {
                tokio::time::sleep(PERIOD).await;
                let at = Instant::now();
                self.liveness.tick().await.expect("tick");
                let silent = at - timers_from;
                if self.availability() == Availability::Unavailable {
                    return at;
                }
                assert!(
                    silent < GRACE,
                    "not timed out after {silent:?} of silence (grace {GRACE:?})"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_gateway_times_out_after_the_grace_and_not_before() {
        let l = leader().await;
        l.available(1).await;
        // Beacons just under a grace apart, with the loop ticking on time, keep it
        // available through many graces.
        let gap = GRACE - PERIOD;
        for seq in 2..8 {
            let from = Instant::now();
            while Instant::now() - from < gap {
                tokio::time::sleep(PERIOD).await;
                l.liveness.tick().await.expect("tick");
                assert_eq!(l.availability(), Availability::Available);
            }
            l.beacon(1, seq, ReportedAvailability::Available)
                .await
                .expect("beacon taken");
        }
        // Then it goes silent.
        let last = Instant::now();
        l.beacon(1, 100, ReportedAvailability::Available)
            .await
            .expect("beacon taken");
        assert_eq!(l.liveness.last_seen(&l.key, &l.gw), Some(last));
        let timed_out = l.tick_until_timed_out(last).await;
        let silent = timed_out - last;
        assert!(silent >= GRACE, "timed out after {silent:?}");
        assert!(silent < GRACE + PERIOD, "timed out after {silent:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zombie_incarnation_gets_no_ack() {
        let l = leader().await;
        l.available(1).await;
        let held = l
            .beacon(1, 2, ReportedAvailability::Available)
            .await
            .expect("beacon taken")
            .lease
            .expect("a lease");

        // A second process with the same id is refused while the first holds the lease.
        let refused = l.beacon(2, 0, ReportedAvailability::Starting).await;
        assert!(
            matches!(refused, Err(MonitorError::Duplicate { holder: 1, .. })),
            "{refused:?}"
        );
        assert!(l.liveness.admit(&l.key, &l.gw, 2).is_err());

        // The first goes quiet; once its lease has run out the second takes over.
        tokio::time::sleep(held).await;
        l.liveness.admit(&l.key, &l.gw, 2).expect("admitted");
        let ack = l
            .beacon(2, 0, ReportedAvailability::Starting)
            .await
            .expect("beacon taken");
        assert!(ack.lease.is_some(), "{ack:?}");

        // The old one wakes up: neither admitted nor acked, whatever it reports.
        assert!(l.liveness.admit(&l.key, &l.gw, 1).is_err());
        for (seq, a) in [
            (3, ReportedAvailability::Available),
            (0, ReportedAvailability::Starting),
        ] {
            let r = l.beacon(1, seq, a).await;
            assert!(
                matches!(r, Err(MonitorError::Duplicate { holder: 2, .. })),
                "{a:?}: {r:?}"
            );
        }

        // A process the map declared failed, still beaconing without restarting: taken
        // (it keeps the session) but not acked with a lease.
        l.liveness.tick().await.expect("tick");
        l.beacon(2, 1, ReportedAvailability::Available)
            .await
            .expect("beacon taken");
        let last = Instant::now();
        l.tick_until_timed_out(last).await;
        let ack = l
            .beacon(2, 2, ReportedAvailability::Available)
            .await
            .expect("beacon taken");
        assert_eq!(ack.lease, None, "a declared-failed process got a lease");
        // Restarting (Starting) is what earns a lease again.
        let ack = l
            .beacon(2, 0, ReportedAvailability::Starting)
            .await
            .expect("beacon taken");
        assert!(ack.lease.is_some(), "{ack:?}");
    }

    /// At 20,000 gateways first reports queued for seconds. A beacon that waited half the
    /// grace for its commit was refused, which closed its session; the gateway reconnected
    /// and proposed its report again, adding to the queue. Now the beacon goes unacked (no
    /// lease until its report is in the map), the session stays, and the report is
    /// proposed once however many beacons repeat it meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_slow_commit_leaves_the_beacon_unacked_and_is_proposed_once() {
        let store = Arc::new(MemStore::new());
        let l = leader_on(store.clone()).await;
        l.available(1).await;
        let last_log = || l.core.raft().metrics().borrow().last_log_index;
        let before = last_log();
        store.set_flush_delay(GRACE);
        let moved = |seq| {
            let mut r = report(seq, ReportedAvailability::Available);
            r.subsystems[0].listeners[0].port = 4421;
            r
        };
        for seq in 2..5 {
            let ack = l
                .liveness
                .beacon(&l.key, &l.gw, 1, moved(seq), None)
                .await
                .expect("a slow commit is no reason to refuse the beacon");
            assert_eq!(ack.lease, None, "acked before its report was committed");
        }
        // The first beacon's report is committed once the disk lets it; nobody proposed
        // it again.
        store.set_flush_delay(Duration::ZERO);
        let end = Instant::now() + GRACE * 4;
        while l.core.reader().read(|m| {
            m.group(&l.key)
                .and_then(|g| g.gateways.get(&l.gw))
                .is_none_or(|gw| gw.subsystems[0].listeners[0].port != 4421)
        }) {
            assert!(Instant::now() < end, "the report was never committed");
            tokio::time::sleep(PERIOD).await;
        }
        assert_eq!(last_log(), before.map(|i| i + 1), "proposed more than once");
        let ack = l
            .liveness
            .beacon(&l.key, &l.gw, 1, moved(5), None)
            .await
            .expect("beacon taken");
        assert!(ack.lease.is_some(), "{ack:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_beacon_racing_its_timeout_is_not_acked() {
        let l = leader().await;
        l.available(1).await;
        let mut at = Instant::now();
        let last = at;
        while at - last < GRACE - PERIOD {
            tokio::time::sleep(PERIOD).await;
            at = Instant::now();
            l.liveness.tick().await.expect("tick");
        }
        tokio::time::sleep(PERIOD).await;
        // The tick that finds it silent and a beacon that comes while its timeout is being
        // committed: the beacon must not renew a lease the failover is about to overrun.
        let (ticked, beacon) = tokio::join!(
            l.liveness.tick(),
            l.beacon(1, 2, ReportedAvailability::Available)
        );
        ticked.expect("tick");
        let ack = beacon.expect("beacon taken");
        assert_eq!(ack.lease, None, "acked while being timed out");
        assert_eq!(l.availability(), Availability::Unavailable);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lease_granted_never_exceeds_half_the_grace() {
        let l = leader().await;
        l.available(1).await;
        let mut seq = 2;
        for grace_ms in [4_000, 10_000, 5_000, 20_000, 10_000] {
            l.core
                .propose(Command::UpdateConfig(ConfigUpdate {
                    beacon_grace_ms: Some(grace_ms),
                    ..ConfigUpdate::default()
                }))
                .await
                .expect("grace changed");
            let half = Duration::from_millis(grace_ms) / 2;
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let ack = l
                    .beacon(1, seq, ReportedAvailability::Available)
                    .await
                    .expect("beacon taken");
                seq += 1;
                let lease = ack.lease.expect("a lease");
                assert!(
                    lease <= half,
                    "lease {lease:?} with a grace of {grace_ms} ms"
                );
                // A lone monitor is its own quorum: it has no reason to grant less.
                assert!(
                    lease + Duration::from_millis(10) >= half,
                    "lease {lease:?} with a grace of {grace_ms} ms"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_restarts_the_timers_instead_of_timing_gateways_out() {
        let l = leader().await;
        l.available(1).await;
        for _ in 0..4 {
            tokio::time::sleep(PERIOD).await;
            l.liveness.tick().await.expect("tick");
        }
        let last = Instant::now();
        l.beacon(1, 2, ReportedAvailability::Available)
            .await
            .expect("beacon taken");

        // The monitor stalls for twice the grace (a paused process, an overloaded host): the
        // gateway may have beaconed all along without being heard. The watchdog (or the
        // loop's own wake-up) finds itself that late and restarts every timer.
        let scheduled = Instant::now() + PERIOD;
        tokio::time::sleep(GRACE * 2).await;
        let late = Instant::now();
        assert!(late - last > GRACE);
        assert!(l.liveness.stalled(scheduled, late), "a stall");
        l.liveness.tick().await.expect("tick after the stall");
        assert_eq!(l.availability(), Availability::Available);
        assert_eq!(
            l.liveness.last_seen(&l.key, &l.gw),
            None,
            "timers restarted"
        );

        // Still silent: timed out a full grace after the stall, on time ticks.
        let timed_out = l.tick_until_timed_out(late).await;
        let silent = timed_out - late;
        assert!(silent >= GRACE && silent < GRACE + PERIOD, "{silent:?}");

        // Late by two periods is not a stall.
        let now = Instant::now();
        assert!(!l.liveness.stalled(now, now + PERIOD * 2));

        // Nor are slow passes (commits that took two periods): the gateway times out a
        // grace after its last beacon all the same.
        let l = leader().await;
        l.available(1).await;
        let last = Instant::now();
        l.beacon(1, 2, ReportedAvailability::Available)
            .await
            .expect("beacon taken");
        let mut at = last;
        while at - last < GRACE {
            tokio::time::sleep(PERIOD * 2).await;
            at = Instant::now();
            l.liveness.tick().await.expect("tick");
        }
        assert_eq!(l.availability(), Availability::Unavailable);
    }

    /// The loop sleeps until the first deadline, not to the next period: a silent gateway
    /// is timed out at its last beacon plus the grace, not up to a period after.
    #[tokio::test(start_paused = true)]
    async fn a_silent_gateway_is_timed_out_at_its_deadline() {
        let l = leader().await;
        l.available(1).await;
        let last = Instant::now();
        l.beacon(1, 2, ReportedAvailability::Available)
            .await
            .expect("beacon taken");
        // Far from the deadline the loop looks again a period later (the map's timers);
        // within a period of it, at the deadline itself.
        let now = Instant::now();
        assert_eq!(l.liveness.next_wake(now), now + PERIOD);
        tokio::time::sleep(GRACE - PERIOD / 3).await;
        assert_eq!(l.liveness.next_wake(Instant::now()), last + GRACE);

        let stop = CancellationToken::new();
        let timed_out = async {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if l.availability() == Availability::Unavailable {
                    return Instant::now();
                }
            }
        };
        let at = tokio::select! {
            () = l.liveness.run(stop.clone()) => panic!("the loop ended"),
            at = timed_out => at,
        };
        stop.cancel();
        let after = at - last;
        assert!(after >= GRACE, "timed out after {after:?}");
        assert!(
            after <= GRACE + Duration::from_millis(5),
            "timed out {:?} after the deadline (a period is {PERIOD:?})",
            after - GRACE
        );
    }
}
