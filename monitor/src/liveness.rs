//! The leader's liveness loop: who beaconed when, which process holds each gateway's lease,
//! and which gateways have gone silent.
//!
//! Beacons do not go through Raft. The leader keeps the instant of each gateway's last
//! beacon in memory, on tokio's monotonic clock; only a beacon whose content changed, a
//! timeout, or a timer that is due becomes a command. After a leader change, or when the
//! loop itself ran late (a stalled process would otherwise time out every gateway at once),
//! every gateway's timer restarts: nobody is failed over before a full grace has passed
//! under a leader that was able to hear it.
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

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use gwmon_proto::domain::{Epoch, GatewayId, GatewayReport, GroupKey, ReportedAvailability};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::Core;
use crate::error::MonitorError;
use crate::map::{Availability, Command, MapError};

type Key = (GroupKey, GatewayId);

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

pub struct Liveness {
    core: Core,
    period: Duration,
    state: Mutex<State>,
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
    /// When the timers last restarted: gateways not heard since count from here.
    since: Option<Instant>,
    last_tick: Option<Instant>,
    seen: HashMap<Key, Instant>,
    /// Gateways whose timeout is being proposed: their beacons are not acked.
    revoked: HashSet<Key>,
    holders: HashMap<Key, Holder>,
    /// The beacon grace in force at the last tick.
    grace: Option<Duration>,
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
        self.revoked.clear();
        self.holders.clear();
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
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (it is only
        // instants and ids), so a poisoned lock is used as is.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// A beacon from the session of `incarnation`. Only a leader confirmed by a quorum
    /// takes beacons; the others answer with the leader's address or "unconfirmed".
    /// Unknown or deleted gateways are refused without a write.
    pub async fn beacon(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        incarnation: u64,
        report: GatewayReport,
    ) -> Result<BeaconAck, MonitorError> {
        if self.core.lease().is_none() {
            return Err(self.core.not_confirmed());
        }
        self.core.telemetry().beacon_received();
        let k = (key.clone(), gateway.clone());
        let revoked = {
            let mut s = self.lock();
            s.check_holder(&k, incarnation, Instant::now())?;
            let revoked = s.revoked.contains(&k);
            if !revoked {
                s.seen.insert(k.clone(), Instant::now());
            }
            revoked
        };
        if revoked {
            debug!(pool = %key.pool, group = %key.group, %gateway,
                   "beacon not acked: the gateway is being timed out");
            return Ok(self.unacked(key, false));
        }
        let restart = report.availability == ReportedAvailability::Starting;
        let (changes, zombie) = self.core.reader().read(|map| {
            let gw = map
                .group(key)
                .ok_or_else(|| MapError::UnknownGroup(key.clone()))?
                .gateways
                .get(gateway)
                .ok_or_else(|| MapError::UnknownGateway {
                    key: key.clone(),
                    gateway: gateway.clone(),
                })?;
            if gw.availability == Availability::Deleting {
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
            // Declared failed and not restarted: it may serve nothing, so it gets no lease.
            let zombie = gw.availability == Availability::Unavailable && !restart;
            Ok((map.report_changes(key, gateway, &report), zombie))
        })?;
        if changes {
            self.core
                .propose(Command::GatewayReport {
                    key: key.clone(),
                    gateway: gateway.clone(),
                    report,
                })
                .await?;
        }
        if zombie {
            return Ok(self.unacked(key, changes));
        }
        // The lease is bounded again after the commit, which may have taken a while.
        let Some(lease) = self.core.lease() else {
            return Err(self.core.not_confirmed());
        };
        let grace = self
            .core
            .reader()
            .read(|m| Duration::from_millis(m.config().beacon_grace_ms));
        let now = Instant::now();
        let Some(granted) = lease.gateway_lease(grace, now) else {
            return Err(MonitorError::Unconfirmed);
        };
        {
            let mut s = self.lock();
            // Revoked while the report was being committed, or timed out and already
            // applied (the revocation ends once the timeout is in the map): no ack.
            let failed = self.core.reader().read(|m| {
                m.group(key)
                    .and_then(|g| g.gateways.get(gateway))
                    .is_none_or(|gw| gw.availability == Availability::Unavailable)
            });
            if s.revoked.contains(&k) || failed {
                drop(s);
                return Ok(self.unacked(key, changes));
            }
            s.check_holder(&k, incarnation, now)?;
            s.holders.insert(
                k,
                Holder {
                    incarnation,
                    lease_until: now + granted,
                },
            );
        }
        let (group_epoch, map_epoch) = self.epochs(key);
        Ok(BeaconAck {
            group_epoch,
            map_epoch,
            committed: changes,
            lease: Some(granted),
        })
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

    /// Check for silent gateways and due timers every period until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            if let Err(e) = self.tick().await {
                debug!(error = %e, "liveness tick");
            }
        }
    }

    /// One pass: restart timers if leadership or timing demands it, time out silent
    /// gateways, and propose a timer tick if one is due. Only a leader no other monitor
    /// can have displaced acts.
    pub async fn tick(&self) -> Result<(), MonitorError> {
        let now = Instant::now();
        let Some(lease) = self.core.exclusive_lease() else {
            let mut s = self.lock();
            if !self.core.is_leader() {
                s.forget();
            }
            return Ok(());
        };
        let term = lease.term;
        let grace_now = self
            .core
            .reader()
            .read(|map| Duration::from_millis(map.config().beacon_grace_ms));
        let since = {
            let mut s = self.lock();
            if let Some(old) = s.grace.filter(|old| grace_now < *old) {
                // Leases already granted last up to half the old grace from their beacon.
                // Nobody may be failed over before those have run out, so no timer counts
                // before then: a shorter grace must not make a still-serving owner's group
                // move. Gateways take the shorter lease with their next ack.
                let hold = now + old / 2;
                info!(
                    old_ms = old.as_millis() as u64,
                    new_ms = grace_now.as_millis() as u64,
                    "beacon grace shortened: timers count from when the old leases have run out"
                );
                s.since = Some(s.since.map_or(hold, |t| t.max(hold)));
            }
            s.grace = Some(grace_now);
            if s.term != Some(term) {
                info!(term, "leading: every gateway's timer restarts");
                s.forget();
                s.term = Some(term);
                s.restart(now);
            } else if s
                .last_tick
                .is_some_and(|last| now.duration_since(last) > self.period * 2)
            {
                warn!(
                    late_ms = now.duration_since(s.last_tick.unwrap_or(now)).as_millis() as u64,
                    "liveness check ran late: every gateway's timer restarts rather than failing gateways this monitor could not hear"
                );
                s.restart(now);
            }
            s.last_tick = Some(now);
            s.since.unwrap_or(now)
        };

        let (grace, watched) = self.core.reader().read(|map| {
            let watched: Vec<Key> = map
                .groups()
                .iter()
                .flat_map(|(k, g)| {
                    g.gateways
                        .iter()
                        .filter(|(_, gw)| {
                            gw.availability == Availability::Available
                                || (gw.availability == Availability::Created
                                    && gw.performed_full_startup)
                        })
                        .map(move |(id, _)| (k.clone(), id.clone()))
                })
                .collect();
            (Duration::from_millis(map.config().beacon_grace_ms), watched)
        });
        // Find the silent ones and revoke them in one critical section: a beacon either
        // came before (and the gateway is not silent) or comes after (and is not acked).
        let due: Vec<(Key, Duration)> = {
            let mut s = self.lock();
            let now = Instant::now();
            let mut due = Vec::new();
            for k in watched {
                let last = s.seen.get(&k).copied().unwrap_or(since).max(since);
                let silent = now.duration_since(last);
                if silent >= grace {
                    s.revoked.insert(k.clone());
                    due.push((k, silent));
                }
            }
            due
        };
        let mut result = Ok(());
        for ((key, gateway), silent) in due {
            info!(pool = %key.pool, group = %key.group, %gateway,
                  silent_ms = silent.as_millis() as u64, "gateway timed out");
            self.core.telemetry().detected(silent.saturating_sub(grace));
            let k = (key.clone(), gateway.clone());
            let proposed = self
                .core
                .propose_as_leader(term, Command::GatewayTimedOut { key, gateway })
                .await;
            // Committed: the map says it failed and its beacons get no lease anyway (until
            // it restarts). Not committed: its timer goes on and it is acked again.
            self.lock().revoked.remove(&k);
            if let Err(e) = proposed {
                result = Err(e);
                break;
            }
        }
        result?;

        let ts = self.core.now();
        let due = self
            .core
            .reader()
            .read(|map| map.would_change(&Command::TimerTick, ts));
        if due {
            self.core
                .propose_as_leader(term, Command::TimerTick)
                .await?;
        }
        Ok(())
    }

    /// When the leader last heard from a gateway, if it has in this term.
    pub fn last_seen(&self, key: &GroupKey, gateway: &GatewayId) -> Option<Instant> {
        self.lock()
            .seen
            .get(&(key.clone(), gateway.clone()))
            .copied()
    }
}
