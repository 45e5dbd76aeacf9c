//! Prometheus metrics of one monitor.
//!
//! Two kinds, kept apart on purpose:
//! * **Counters** of things that happen (failovers, failbacks, fences completed, beacons) live
//!   in [`Telemetry`] and only ever grow. Map events are counted by [`Telemetry::count_events`]
//!   from the state machine's broadcast of applied entries, so every monitor counts each
//!   event once, whether it leads or follows, and `apply` never waits for it.
//! * **Gauges** of what *is* (gateways by availability, ANA groups by state, epochs, Raft
//!   state) are computed at scrape time from the applied map and openraft's metrics, so they
//!   cannot drift from the map, and a gateway that is gone disappears from the output.
//!
//! Every scrape encodes a fresh registry: the counters are registered as clones (they share
//! their atomics), the gauges are built from one consistent read.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use openraft::ServerState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::map::{Availability, Event, GatewayMap, Holder};
use crate::raft::state_machine::AppliedEvents;
use crate::raft::NodeId;
use gwmon_proto::domain::GroupKey;

/// Label pairs. Only pool, group, gateway, and small closed sets (availability, state, peer
/// monitor id) are used as labels, so the number of series stays bounded by the deployment.
type Labels = Vec<(&'static str, String)>;

fn group_labels(key: &GroupKey) -> Labels {
    vec![
        ("pool", key.pool.to_string()),
        ("group", key.group.to_string()),
    ]
}

fn with(mut labels: Labels, name: &'static str, value: impl Into<String>) -> Labels {
    labels.push((name, value.into()));
    labels
}

/// The counters of one monitor, cheap to clone (clones share them). They start at zero when
/// the process starts, as Prometheus expects of counters.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    failovers: Family<Labels, Counter>,
    failbacks: Family<Labels, Counter>,
    fences_completed: Family<Labels, Counter>,
    beacons: Counter,
    sessions: Gauge,
    events_missed: Counter,
}

/// Keeps the open-sessions gauge up while a gateway session lives, whatever way it ends.
pub struct SessionGuard(Gauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Telemetry {
    /// A beacon reached this monitor as leader (committed or not).
    pub fn beacon_received(&self) {
        self.inner.beacons.inc();
    }

    /// A gateway session opened on this monitor; it counts as open until the guard drops.
    pub fn session_opened(&self) -> SessionGuard {
        self.inner.sessions.inc();
        SessionGuard(self.inner.sessions.clone())
    }

    /// Counts what one applied entry produced.
    pub fn record(&self, events: &[Event]) {
        for e in events {
            match e {
                Event::FailoverStarted { key, .. } => {
                    self.inner.failovers.get_or_create(&group_labels(key)).inc();
                }
                Event::FailbackStarted { key, .. } => {
                    self.inner.failbacks.get_or_create(&group_labels(key)).inc();
                }
                Event::FenceCompleted { key, .. } => {
                    self.inner
                        .fences_completed
                        .get_or_create(&group_labels(key))
                        .inc();
                }
                _ => {}
            }
        }
    }

    /// Count applied events until `stop`. Subscribe (`MapReader::events`) before Raft starts
    /// applying, so nothing applied by this process is missed; if this loop ever falls more
    /// than the backlog behind, the loss is counted in `gwmon_events_missed_total` and
    /// logged rather than blocking `apply`.
    pub async fn count_events(
        &self,
        mut rx: broadcast::Receiver<AppliedEvents>,
        stop: CancellationToken,
    ) {
        loop {
            let got = tokio::select! {
                () = stop.cancelled() => return,
                got = rx.recv() => got,
            };
            match got {
                Ok(applied) => self.record(&applied.events),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        entries = n,
                        "metrics fell behind the state machine; events missed"
                    );
                    self.inner.events_missed.inc_by(n);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

/// What a scrape reads besides the counters, gathered by the caller in one go.
pub struct Scrape<'a> {
    pub raft: &'a openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    /// The commit index this monitor knows (see `log_store::stored_committed`).
    pub committed_index: Option<u64>,
    pub store_bytes: Option<u64>,
    pub ready: bool,
}

const AVAILABILITIES: [Availability; 4] = [
    Availability::Created,
    Availability::Available,
    Availability::Unavailable,
    Availability::Deleting,
];

/// The ANA-group states as labels: the holder kind of each ANA group of a `(pool, group)`.
/// `none` means no gateway is optimized for it (waiting for a target or its owner).
const ANA_STATES: [&str; 4] = ["active", "wait_fence", "failback", "none"];

fn ana_state_label(holder: &Holder) -> &'static str {
    match holder {
        Holder::Active(_) => "active",
        Holder::WaitFence { .. } => "wait_fence",
        Holder::Handover { .. } => "failback",
        Holder::None => "none",
    }
}

fn gauge(value: i64) -> Gauge {
    let g = Gauge::default();
    g.set(value);
    g
}

/// Gauges are `i64`; indexes and epochs never get near its end, and saturate if they did.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn gauge_u(value: u64) -> Gauge {
    gauge(int(value))
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Telemetry {
    /// The OpenMetrics text of this monitor: the counters and gauges computed from `map`
    /// and `scrape`.
    pub fn render(&self, map: &GatewayMap, scrape: &Scrape<'_>) -> Result<String, std::fmt::Error> {
        let mut r = Registry::with_prefix("gwmon");
        let c = &self.inner;
        r.register(
            "failovers",
            "ANA groups moved to another gateway because their holder failed (failover started)",
            c.failovers.clone(),
        );
        r.register(
            "failbacks",
            "ANA groups handed back to their returning owner (failback or relocation started)",
            c.failbacks.clone(),
        );
        r.register(
            "fences_completed",
            "Fences of failed gateways confirmed complete",
            c.fences_completed.clone(),
        );
        r.register(
            "beacons_received",
            "Gateway beacons received by this monitor while leading",
            c.beacons.clone(),
        );
        r.register(
            "gateway_sessions",
            "Gateway sessions open on this monitor",
            c.sessions.clone(),
        );
        r.register(
            "events_missed",
            "Applied map events the metrics missed because they fell behind",
            c.events_missed.clone(),
        );

        self.map_gauges(&mut r, map);
        raft_gauges(&mut r, scrape);

        let mut out = String::new();
        encode(&mut out, &r)?;
        Ok(out)
    }

    fn map_gauges(&self, r: &mut Registry, map: &GatewayMap) {
        let gateways = Family::<Labels, Gauge>::default();
        let gateway_up = Family::<Labels, Gauge>::default();
        let ana_groups = Family::<Labels, Gauge>::default();
        let group_epoch = Family::<Labels, Gauge>::default();
        let fences_pending = Family::<Labels, Gauge>::default();
        for (key, g) in map.groups() {
            let labels = group_labels(key);
            for a in AVAILABILITIES {
                let n = g
                    .gateways
                    .values()
                    .filter(|gw| gw.availability == a)
                    .count();
                gateways
                    .get_or_create(&with(labels.clone(), "availability", a.as_str()))
                    .set(count(n));
            }
            for (id, gw) in &g.gateways {
                gateway_up
                    .get_or_create(&with(labels.clone(), "gateway", id.to_string()))
                    .set(i64::from(gw.availability == Availability::Available));
            }
            for s in ANA_STATES {
                ana_groups
                    .get_or_create(&with(labels.clone(), "state", s))
                    .set(0);
            }
            for a in g.ana.values() {
                ana_groups
                    .get_or_create(&with(labels.clone(), "state", ana_state_label(&a.holder)))
                    .inc();
            }
            group_epoch.get_or_create(&labels).set(int(g.epoch.0));
            let pending = g.fences.iter().filter(|f| f.completed_at.is_none()).count();
            fences_pending.get_or_create(&labels).set(count(pending));
        }
        r.register(
            "gateways",
            "Gateways by availability (CREATED, AVAILABLE, UNAVAILABLE, DELETING) per pool and group",
            gateways,
        );
        r.register(
            "gateway_available",
            "1 if the gateway is AVAILABLE in the map, else 0",
            gateway_up,
        );
        r.register(
            "ana_groups",
            "ANA groups per pool and group, by holder state: active, wait_fence (failover target waiting for the fence), failback (handover in progress), none (not optimized anywhere)",
            ana_groups,
        );
        r.register(
            "group_epoch",
            "Per-group epoch: bumped on every change a gateway is told; the fencing token",
            group_epoch,
        );
        r.register(
            "fences_pending",
            "Fences issued and not yet confirmed complete",
            fences_pending,
        );
        r.register(
            "map_epoch",
            "Map epoch: grows with every applied command that changed the map",
            gauge_u(map.epoch().0),
        );
    }
}

fn raft_gauges(r: &mut Registry, s: &Scrape<'_>) {
    let m = s.raft;
    r.register("raft_term", "Current Raft term", gauge_u(m.current_term));
    r.register(
        "raft_is_leader",
        "1 if this monitor is the Raft leader",
        gauge(i64::from(m.state == ServerState::Leader)),
    );
    r.register(
        "raft_last_log_index",
        "Index of the last entry in this monitor's log",
        gauge_u(m.last_log_index.unwrap_or(0)),
    );
    r.register(
        "raft_committed_index",
        "Commit index as this monitor knows it",
        gauge_u(s.committed_index.unwrap_or(0)),
    );
    r.register(
        "raft_applied_index",
        "Index of the last entry applied to the map",
        gauge_u(m.last_applied.map_or(0, |l| l.index)),
    );
    r.register(
        "raft_snapshot_index",
        "Last log index covered by the current snapshot",
        gauge_u(m.snapshot.map_or(0, |l| l.index)),
    );
    r.register(
        "ready",
        "1 if /health/ready answers 200",
        gauge(i64::from(s.ready)),
    );
    let lag = Family::<Labels, Gauge>::default();
    if let Some(replication) = &m.replication {
        let last = m.last_log_index.unwrap_or(0);
        for (peer, matched) in replication.iter() {
            if *peer == m.id {
                continue;
            }
            let matched = matched.map_or(0, |l| l.index);
            lag.get_or_create(&vec![("peer", peer.to_string())])
                .set(int(last.saturating_sub(matched)));
        }
    }
    r.register(
        "raft_replication_lag_entries",
        "Leader only: log entries a peer monitor is behind the leader's log",
        lag,
    );
    if let Some(ms) = m.millis_since_quorum_ack {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(ms as f64 / 1000.0);
        r.register_with_unit(
            "raft_quorum_ack_age",
            "Leader only: time since a quorum last acknowledged this leader",
            Unit::Seconds,
            g,
        );
    }
    if let Some(bytes) = s.store_bytes {
        r.register_with_unit(
            "store_size",
            "Bytes the monitor's store occupies on disk",
            Unit::Bytes,
            gauge_u(bytes),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Command, Timestamp};
    use gwmon_proto::domain::{AnaGroupId, Epoch, GatewayId};

    fn key() -> GroupKey {
        GroupKey::new("rbd".parse().expect("pool"), "grp1".parse().expect("group"))
    }

    #[test]
    fn events_are_counted_per_group_and_gauges_come_from_the_map() {
        let t = Telemetry::default();
        let gw: GatewayId = "gw1".parse().expect("gateway");
        let ana = AnaGroupId::new(1).expect("ana group");
        t.record(&[
            Event::FailoverStarted {
                key: key(),
                ana_group: ana,
                to: gw.clone(),
                fence_epoch: Epoch(3),
            },
            Event::FenceCompleted {
                key: key(),
                gateway: gw.clone(),
                epoch: Epoch(3),
            },
        ]);
        t.beacon_received();
        let guard = t.session_opened();

        let mut map = GatewayMap::default();
        map.apply(
            &Command::CreateGateway {
                key: key(),
                gateway: gw,
            },
            Timestamp::ZERO,
        )
        .expect("create");
        let raft = openraft::RaftMetrics::new_initial(1);
        let scrape = Scrape {
            raft: &raft,
            committed_index: Some(0),
            store_bytes: Some(4096),
            ready: false,
        };
        let text = t.render(&map, &scrape).expect("encode");
        for line in [
            "gwmon_failovers_total{pool=\"rbd\",group=\"grp1\"} 1",
            "gwmon_fences_completed_total{pool=\"rbd\",group=\"grp1\"} 1",
            "gwmon_beacons_received_total 1",
            "gwmon_gateway_sessions 1",
            "gwmon_gateways{pool=\"rbd\",group=\"grp1\",availability=\"CREATED\"} 1",
            "gwmon_gateways{pool=\"rbd\",group=\"grp1\",availability=\"AVAILABLE\"} 0",
            "gwmon_gateway_available{pool=\"rbd\",group=\"grp1\",gateway=\"gw1\"} 0",
            "gwmon_map_epoch 1",
            "gwmon_store_size_bytes 4096",
            "gwmon_raft_is_leader 0",
            "gwmon_ready 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        drop(guard);
        let text = t.render(&map, &scrape).expect("encode");
        assert!(text.contains("gwmon_gateway_sessions 0"), "{text}");
    }
}
