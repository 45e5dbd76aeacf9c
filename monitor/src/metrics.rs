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

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::ServerState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::map::{Availability, Event, GatewayMap, Holder, Timestamp};
use crate::raft::state_machine::AppliedEvents;
use crate::raft::NodeId;
use crate::replica::ReplicaRegistry;
use gwmon_proto::domain::ReplicaState;
use gwmon_proto::domain::{AnaGroupId, Epoch, GatewayId, GroupKey};

/// Bucket bounds of the failover histograms, in seconds: from a fast fence on loopback to a
/// fence that needed retries.
const FAILOVER_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
];

fn failover_histogram() -> Histogram {
    Histogram::new(FAILOVER_BUCKETS)
}

/// The phases of `gwmon_failover_phase_seconds`, in the order a failover goes through them.
pub mod phase {
    /// Leader: how long after the grace ran out the timeout was proposed.
    pub const DETECTION: &str = "detection";
    /// Fence issued to fence completed (committed times).
    pub const FENCE: &str = "fence";
    /// Leader: the commit that turned an ANA group optimized for a gateway to the slice
    /// carrying it being sent to that gateway.
    pub const DELIVERY: &str = "delivery";
    /// The later of failover start and fence completion to the new owner's beacon
    /// confirming it serves (committed times): the new owner applying its slice.
    pub const PROMOTION: &str = "promotion";
}

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

struct Counters {
    failovers: Family<Labels, Counter>,
    failbacks: Family<Labels, Counter>,
    fences_completed: Family<Labels, Counter>,
    fence_operations: Family<Labels, Counter>,
    phases: Family<Labels, Histogram, fn() -> Histogram>,
    failover_seconds: Histogram,
    beacons: Counter,
    sessions: Gauge,
    events_missed: Counter,
    snapshots: Counter,
    in_flight: Mutex<InFlight>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            failovers: Family::default(),
            failbacks: Family::default(),
            fences_completed: Family::default(),
            fence_operations: Family::default(),
            phases: Family::new_with_constructor(failover_histogram),
            failover_seconds: failover_histogram(),
            beacons: Counter::default(),
            sessions: Gauge::default(),
            events_missed: Counter::default(),
            snapshots: Counter::default(),
            in_flight: Mutex::new(InFlight::default()),
        }
    }
}

/// Failovers and fences under way, by the committed times of their events, so their phases
/// can be timed when they end. Entries leave when the failover or fence ends, so the maps
/// stay as small as the number of failovers in progress.
#[derive(Default)]
struct InFlight {
    fences: HashMap<(GroupKey, GatewayId, Epoch), Timestamp>,
    /// Per ANA group: when its failover started, its fence epoch, and when that fence
    /// completed.
    failovers: HashMap<(GroupKey, AnaGroupId), Failover>,
}

struct Failover {
    started: Timestamp,
    fence_epoch: Epoch,
    fenced: Option<Timestamp>,
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.as_millis().saturating_sub(from.as_millis()) as f64 / 1000.0
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

    /// Counts what one applied entry produced, and times the failover phases it ends. `at`
    /// is the entry's committed time, the same on every monitor.
    pub fn record(&self, at: Timestamp, events: &[Event]) {
        let mut in_flight = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for e in events {
            match e {
                Event::FailoverStarted {
                    key,
                    ana_group,
                    fence_epoch,
                    ..
                } => {
                    self.inner.failovers.get_or_create(&group_labels(key)).inc();
                    in_flight.failovers.insert(
                        (key.clone(), *ana_group),
                        Failover {
                            started: at,
                            fence_epoch: *fence_epoch,
                            fenced: None,
                        },
                    );
                }
                Event::FailbackStarted { key, .. } => {
                    self.inner.failbacks.get_or_create(&group_labels(key)).inc();
                }
                Event::FenceIssued {
                    key,
                    gateway,
                    epoch,
                } => {
                    in_flight
                        .fences
                        .insert((key.clone(), gateway.clone(), *epoch), at);
                }
                Event::FenceCompleted {
                    key,
                    gateway,
                    epoch,
                } => {
                    self.inner
                        .fences_completed
                        .get_or_create(&group_labels(key))
                        .inc();
                    if let Some(issued) =
                        in_flight
                            .fences
                            .remove(&(key.clone(), gateway.clone(), *epoch))
                    {
                        self.observe_phase(phase::FENCE, seconds_between(issued, at));
                    }
                    for ((k, _), f) in in_flight.failovers.iter_mut() {
                        if k == key && f.fence_epoch <= *epoch && f.fenced.is_none() {
                            f.fenced = Some(at);
                        }
                    }
                }
                Event::FenceExpired {
                    key,
                    gateway,
                    epoch,
                } => {
                    in_flight
                        .fences
                        .remove(&(key.clone(), gateway.clone(), *epoch));
                }
                Event::Promoted { key, ana_group, .. } => {
                    if let Some(f) = in_flight.failovers.remove(&(key.clone(), *ana_group)) {
                        let from = f.fenced.map_or(f.started, |t| t.max(f.started));
                        self.observe_phase(phase::PROMOTION, seconds_between(from, at));
                        self.inner
                            .failover_seconds
                            .observe(seconds_between(f.started, at));
                    }
                }
                Event::FenceWaitExpired { key, ana_group, .. } => {
                    in_flight.failovers.remove(&(key.clone(), *ana_group));
                }
                Event::GatewayRemoved { key, gateway } => {
                    in_flight
                        .fences
                        .retain(|(k, g, _), _| !(k == key && g == gateway));
                }
                _ => {}
            }
        }
    }

    fn observe_phase(&self, name: &'static str, seconds: f64) {
        self.inner
            .phases
            .get_or_create(&vec![("phase", name.to_owned())])
            .observe(seconds);
    }

    /// Leader: a gateway's timeout was proposed `late` after its grace ran out.
    pub fn detected(&self, late: Duration) {
        self.observe_phase(phase::DETECTION, late.as_secs_f64());
    }

    /// Leader: a slice newly making a gateway optimized was sent `elapsed` after the map
    /// change was applied.
    pub fn delivered(&self, elapsed: Duration) {
        self.observe_phase(phase::DELIVERY, elapsed.as_secs_f64());
    }

    /// Leader: one run of the fencer ended, `ok` or not.
    pub fn fence_result(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.inner
            .fence_operations
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
    }

    /// Count applied events, and snapshots from Raft's metrics, until `stop`. Subscribe
    /// (`MapReader::events`) before Raft starts applying, so nothing applied by this
    /// process is missed; if this loop ever falls more than the backlog behind, the loss is
    /// counted in `gwmon_events_missed_total` and logged rather than blocking `apply`.
    pub async fn count_events(
        &self,
        mut rx: broadcast::Receiver<AppliedEvents>,
        mut raft: watch::Receiver<openraft::RaftMetrics<NodeId, crate::raft::MonitorNode>>,
        stop: CancellationToken,
    ) {
        let mut snapshot = raft.borrow_and_update().snapshot;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = rx.recv() => match got {
                    Ok(applied) => self.record(applied.at, &applied.events),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(
                            entries = n,
                            "metrics fell behind the state machine; events missed"
                        );
                        self.inner.events_missed.inc_by(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = raft.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = raft.borrow_and_update().snapshot;
                    if now != snapshot && now.is_some() {
                        // Built here or installed from the leader: either way a new one.
                        self.inner.snapshots.inc();
                    }
                    snapshot = now;
                }
            }
        }
    }
}

/// What a scrape reads besides the counters, gathered by the caller in one go.
pub struct Scrape<'a> {
    pub raft: &'a openraft::RaftMetrics<NodeId, crate::raft::MonitorNode>,
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
    pub fn render(
        &self,
        map: &GatewayMap,
        replicas: &ReplicaRegistry,
        scrape: &Scrape<'_>,
    ) -> Result<String, std::fmt::Error> {
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
            "fence_operations",
            "Leader: runs of the fencer by result (success, failure); failures are retried",
            c.fence_operations.clone(),
        );
        r.register_with_unit(
            "failover_phase",
            "Failover phases: detection (timeout proposed after the grace ran out), fence (issued to completed), delivery (commit to the slice sent to the new owner), promotion (fence completed to the new owner serving)",
            Unit::Seconds,
            c.phases.clone(),
        );
        r.register_with_unit(
            "failover",
            "Failover start to the new owner serving (committed times; detection not included)",
            Unit::Seconds,
            c.failover_seconds.clone(),
        );
        r.register(
            "snapshots",
            "Raft snapshots this monitor built or installed since it started",
            c.snapshots.clone(),
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
        registry_gauges(&mut r, replicas);
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

/// The replica registry: hosts, volumes, replicas by state, replacements by stage. Totals
/// only (no per-volume labels), so the series stay few however many volumes there are.
fn registry_gauges(r: &mut Registry, reg: &ReplicaRegistry) {
    let replicas = Family::<Labels, Gauge>::default();
    for state in [
        ReplicaState::Available,
        ReplicaState::Synchronizing,
        ReplicaState::Missing,
        ReplicaState::Faulty,
        ReplicaState::Terminating,
    ] {
        let n = reg
            .volumes()
            .values()
            .flat_map(|v| v.replicas.values())
            .filter(|x| x.state == state)
            .count();
        replicas
            .get_or_create(&vec![("state", state.as_str().to_owned())])
            .set(count(n));
    }
    let replacements = Family::<Labels, Gauge>::default();
    for v in reg.volumes().values() {
        if let Some(rp) = &v.replacement {
            replacements
                .get_or_create(&vec![("stage", rp.stage.as_str().to_owned())])
                .inc();
        }
    }
    r.register(
        "hosts",
        "Initiator hosts registered",
        gauge(count(reg.hosts().len())),
    );
    r.register(
        "volumes",
        "Replicated volumes registered",
        gauge(count(reg.volumes().len())),
    );
    r.register("replicas", "Replicas of all volumes by state", replicas);
    r.register(
        "replacements",
        "Replica replacements under way, by stage",
        replacements,
    );
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
        let old: GatewayId = "gw0".parse().expect("gateway");
        // gw0 failed: fence issued and failover started at 1.0 s, fence done at 1.25 s,
        // the new owner serving at 1.4 s.
        t.record(
            Timestamp(1_000),
            &[
                Event::FenceIssued {
                    key: key(),
                    gateway: old.clone(),
                    epoch: Epoch(3),
                },
                Event::FailoverStarted {
                    key: key(),
                    ana_group: ana,
                    to: gw.clone(),
                    fence_epoch: Epoch(3),
                },
            ],
        );
        t.record(
            Timestamp(1_250),
            &[Event::FenceCompleted {
                key: key(),
                gateway: old,
                epoch: Epoch(3),
            }],
        );
        t.record(
            Timestamp(1_400),
            &[Event::Promoted {
                key: key(),
                ana_group: ana,
                gateway: gw.clone(),
            }],
        );
        t.fence_result(true);
        t.fence_result(false);
        t.detected(Duration::from_millis(30));
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
        let text = t
            .render(&map, &ReplicaRegistry::default(), &scrape)
            .expect("encode");
        for line in [
            "gwmon_failovers_total{pool=\"rbd\",group=\"grp1\"} 1",
            "gwmon_fences_completed_total{pool=\"rbd\",group=\"grp1\"} 1",
            "gwmon_beacons_received_total 1",
            "gwmon_fence_operations_total{result=\"success\"} 1",
            "gwmon_fence_operations_total{result=\"failure\"} 1",
            // fence 0.25 s, promotion 0.15 s, detection 0.03 s: one observation each.
            "gwmon_failover_phase_seconds_sum{phase=\"fence\"} 0.25",
            "gwmon_failover_phase_seconds_bucket{le=\"0.25\",phase=\"fence\"} 1",
            "gwmon_failover_phase_seconds_bucket{le=\"0.1\",phase=\"fence\"} 0",
            "gwmon_failover_phase_seconds_sum{phase=\"promotion\"} 0.15",
            "gwmon_failover_phase_seconds_count{phase=\"detection\"} 1",
            "gwmon_failover_seconds_sum 0.4",
            "gwmon_snapshots_total 0",
            "gwmon_volumes 0",
            "gwmon_hosts 0",
            "gwmon_replicas{state=\"faulty\"} 0",
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
        let text = t
            .render(&map, &ReplicaRegistry::default(), &scrape)
            .expect("encode");
        assert!(text.contains("gwmon_gateway_sessions 0"), "{text}");
    }
}
