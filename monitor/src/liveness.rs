//! The leader's liveness loop: who beaconed when, and which gateways have gone silent.
//!
//! Beacons do not go through Raft. The leader keeps the instant of each gateway's last
//! beacon in memory, on tokio's monotonic clock; only a beacon whose content changed, a
//! timeout, or a timer that is due becomes a command. After a leader change, or when the
//! loop itself ran late (a stalled process would otherwise time out every gateway at once),
//! every gateway's timer restarts: nobody is failed over before a full grace has passed
//! under a leader that was able to hear it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gwmon_proto::domain::{Epoch, GatewayId, GatewayReport, GroupKey, ReportedAvailability};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::Core;
use crate::error::MonitorError;
use crate::map::{Availability, Command, MapError};

/// What a gateway's session sends back for a beacon: it renews the gateway's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeaconAck {
    /// The gateway's group epoch: if it is newer than what the gateway applied, a new map
    /// slice is on its way.
    pub group_epoch: Epoch,
    pub map_epoch: Epoch,
    /// Whether this beacon was committed (its content changed).
    pub committed: bool,
}

pub struct Liveness {
    core: Core,
    period: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The term in which this monitor leads, if it does.
    term: Option<u64>,
    /// When the timers last restarted: gateways not heard since count from here.
    since: Option<Instant>,
    last_tick: Option<Instant>,
    seen: HashMap<(GroupKey, GatewayId), Instant>,
    /// The beacon grace in force at the last tick.
    grace: Option<Duration>,
}

impl State {
    fn restart(&mut self, now: Instant) {
        self.since = Some(now);
        self.seen.clear();
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
        // instants), so a poisoned lock is used as is.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A beacon from a gateway's session. Only the leader takes beacons; the others answer
    /// with the leader's address. Unknown or deleted gateways are refused without a write.
    pub async fn beacon(
        &self,
        key: &GroupKey,
        gateway: &GatewayId,
        report: GatewayReport,
    ) -> Result<BeaconAck, MonitorError> {
        if !self.core.is_leader() {
            return Err(MonitorError::NotLeader {
                leader: self.core.leader_addr(),
            });
        }
        self.core.telemetry().beacon_received();
        self.lock()
            .seen
            .insert((key.clone(), gateway.clone()), Instant::now());
        let changes = self.core.reader().read(|map| {
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
            let restart = report.availability == ReportedAvailability::Starting;
            if !restart && report.seq != 0 && gw.reported.is_some() && report.seq <= gw.last_seq {
                return Err(MapError::StaleBeacon {
                    gateway: gateway.clone(),
                    seq: report.seq,
                    last: gw.last_seq,
                });
            }
            Ok(map.report_changes(key, gateway, &report))
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
        let (group_epoch, map_epoch) = self
            .core
            .reader()
            .read(|map| (map.group(key).map_or(Epoch::ZERO, |g| g.epoch), map.epoch()));
        Ok(BeaconAck {
            group_epoch,
            map_epoch,
            committed: changes,
        })
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
    /// gateways, and propose a timer tick if one is due.
    pub async fn tick(&self) -> Result<(), MonitorError> {
        let now = Instant::now();
        let term = self.core.raft().metrics().borrow().current_term;
        if !self.core.is_leader() {
            let mut s = self.lock();
            s.term = None;
            s.seen.clear();
            return Ok(());
        }
        let grace_now = self
            .core
            .reader()
            .read(|map| Duration::from_millis(map.config().beacon_grace_ms));
        let (since, seen) = {
            let mut s = self.lock();
            if let Some(old) = s.grace.filter(|old| grace_now < *old) {
                // Leases already granted last half the old grace from their beacon. Nobody
                // may be failed over before those have run out, so no timer counts before
                // then: a shorter grace must not make a still-serving owner's group move.
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
            (s.since.unwrap_or(now), s.seen.clone())
        };

        let (grace, watched) = self.core.reader().read(|map| {
            let watched: Vec<(GroupKey, GatewayId)> = map
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
        for (key, gateway) in watched {
            let last = seen
                .get(&(key.clone(), gateway.clone()))
                .copied()
                .unwrap_or(since)
                .max(since);
            let silent = now.duration_since(last);
            if silent >= grace {
                info!(pool = %key.pool, group = %key.group, %gateway,
                      silent_ms = silent.as_millis() as u64, "gateway timed out");
                self.core.telemetry().detected(silent - grace);
                self.core
                    .propose(Command::GatewayTimedOut { key, gateway })
                    .await?;
            }
        }

        let ts = self.core.clock().now();
        let due = self
            .core
            .reader()
            .read(|map| map.would_change(&Command::TimerTick, ts));
        if due {
            self.core.propose(Command::TimerTick).await?;
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
