//! A test environment of monitors and gateways: three in-process monitors with a fencer
//! that records on a shared timeline, and gateways running the gwmon-client library with a
//! [`Recorder`] handler, directly or through cuttable relays.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gwmon_client::{ClientConfig, ClientError, Exit, OnMonitorLoss};
use gwmon_monitor::fence::{BoxFuture, FenceError, FenceOrder, Fencer};
use gwmon_monitor::map::{Availability, Command, MapConfig};
use gwmon_monitor::node::Plumbing;
use gwmon_proto::domain::{AnaGroupId, GatewayId, GroupKey};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::recorder::{Recorder, Timeline};
use crate::{eventually, Cluster};

/// The timers of a test environment: the monitors' beacon grace and election timeouts, and
/// the gateways' beacon interval. Tests use [`Timers::FAST`]; measurements also use the
/// defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub grace_ms: u64,
    pub beacon: Duration,
    /// Each monitor draws its election timeout from `min..max` milliseconds.
    pub election_ms: (u64, u64),
}

impl Timers {
    /// 100 ms beacons, 1 s grace.
    pub const FAST: Timers = Timers {
        grace_ms: 1_000,
        beacon: Duration::from_millis(100),
        election_ms: (300, 600),
    };
    /// The shipped defaults: 500 ms beacons, 4 s grace, 300-600 ms election timeouts.
    pub const DEFAULT: Timers = Timers {
        grace_ms: 4_000,
        beacon: Duration::from_millis(500),
        election_ms: (300, 600),
    };
}

pub fn key() -> GroupKey {
    GroupKey::new("rbd".parse().expect("pool"), "grp1".parse().expect("group"))
}

pub fn gw(name: &str) -> GatewayId {
    name.parse().expect("gateway id")
}

pub fn ana(n: u32) -> AnaGroupId {
    AnaGroupId::new(n).expect("ana group")
}

/// A fencer that cuts a gateway's target off (inaccessible, refusing older maps), as a
/// storage backend would, and records when, on the shared timeline.
pub struct RecordingFencer {
    pub timeline: Timeline,
    /// Whether the fence reaches the targets. `false` stands for fencer `none` (or a
    /// storage-side fence the target does not see): only the lease keeps two targets from
    /// both saying optimized.
    pub reaches_targets: bool,
}

impl Fencer for RecordingFencer {
    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
        Box::pin(async move {
            if self.reaches_targets {
                self.timeline
                    .fence(&order.gateway, order.epoch.0, Instant::now());
            }
            Ok(())
        })
    }

    fn name(&self) -> &'static str {
        "recording"
    }
}

pub struct Gateway {
    /// The client's metrics, registered nowhere: tests encode them directly.
    pub metrics: gwmon_client::ClientMetrics,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<Exit, ClientError>>,
    pub proxies: Vec<Proxy>,
}

pub struct Env {
    pub cluster: Cluster,
    pub timeline: Timeline,
    pub gateways: BTreeMap<String, Gateway>,
    pub groups: Vec<u32>,
    pub timers: Timers,
}

impl Env {
    /// Three monitors with a recording fencer, and `gateways` created (not started).
    pub async fn start(gateways: &[&str], tweak: impl Fn(&mut MapConfig)) -> Env {
        Self::start_timed(gateways, Timers::FAST, tweak).await
    }

    pub async fn start_timed(
        gateways: &[&str],
        timers: Timers,
        tweak: impl Fn(&mut MapConfig),
    ) -> Env {
        Self::start_custom(gateways, timers, tweak, None, Plumbing::default(), true).await
    }

    /// [`Env::start_timed`] with the monitors' Raft links through `partition` if given,
    /// and `base` plumbing (a clock, say) under the recording fencer.
    pub async fn start_custom(
        gateways: &[&str],
        timers: Timers,
        tweak: impl Fn(&mut MapConfig),
        partition: Option<Arc<crate::partition::Partition>>,
        base: Plumbing,
        fence_reaches_targets: bool,
    ) -> Env {
        let timeline = Timeline::default();
        let plumbing = Plumbing {
            fencer: Some(Arc::new(RecordingFencer {
                timeline: timeline.clone(),
                reaches_targets: fence_reaches_targets,
            })),
            ..base
        };
        let cluster = Cluster::start_each(
            3,
            0,
            |c| (c.election_timeout_min_ms, c.election_timeout_max_ms) = timers.election_ms,
            |id| match &partition {
                Some(p) => Plumbing {
                    connector: p.connector(id),
                    ..plumbing.clone()
                },
                None => plumbing.clone(),
            },
        )
        .await;
        if let Some(p) = &partition {
            p.learn(&cluster.peer_addrs);
        }
        let mut config = MapConfig {
            beacon_grace_ms: timers.grace_ms,
            failback_prepare_ms: 200,
            skip_failover_admin_ms: 300,
            skip_failover_redeploy_ms: 3_000,
            ..MapConfig::default()
        };
        tweak(&mut config);
        cluster.write(Command::SetConfig(config)).await;
        for g in gateways {
            cluster
                .write(Command::CreateGateway {
                    key: key(),
                    gateway: gw(g),
                })
                .await;
        }
        let groups = (1..=gateways.len() as u32).collect();
        Env {
            cluster,
            timeline,
            gateways: BTreeMap::new(),
            groups,
            timers,
        }
    }

    pub fn client_config(
        &self,
        name: &str,
        monitors: Vec<String>,
        policy: OnMonitorLoss,
    ) -> ClientConfig {
        ClientConfig::builder(gw(name), key())
            .monitors(monitors)
            .beacon_interval(self.timers.beacon)
            .beacon_grace(Duration::from_millis(self.timers.grace_ms))
            .handler_timeout(Duration::from_millis(100))
            .disconnect_panic(Duration::from_secs(5))
            .reconnect_max(Duration::from_millis(300))
            .on_monitor_loss(policy)
            .build()
            .expect("client config")
    }

    /// Start a gateway process; through cuttable relays if `relayed`.
    pub async fn start_gateway(&mut self, name: &str, relayed: bool) {
        self.start_gateway_with(name, relayed, OnMonitorLoss::Demote)
            .await;
    }

    /// [`Env::start_gateway`] with a chosen `on_monitor_loss` policy.
    pub async fn start_gateway_with(&mut self, name: &str, relayed: bool, policy: OnMonitorLoss) {
        let handler = Recorder::new(&gw(name), &self.groups, self.timeline.clone());
        self.start_gateway_on(name, name, relayed, policy, None, Arc::new(handler))
            .await;
    }

    /// Start gateway `id` as process `name` (two processes may share an id) with its own
    /// handler, talking to `monitors` (default: every monitor, or relays if `relayed`).
    pub async fn start_gateway_on<H: gwmon_client::AnaHandler>(
        &mut self,
        name: &str,
        id: &str,
        relayed: bool,
        policy: OnMonitorLoss,
        monitors: Option<Vec<String>>,
        handler: Arc<H>,
    ) {
        let mut proxies = Vec::new();
        let monitors: Vec<String> = if let Some(m) = monitors {
            m
        } else if relayed {
            // The leader's relay first: a follower would redirect the gateway to the
            // leader's real address, past the relays, and a cut would then cut nothing.
            let leader = self.cluster.leader().await;
            let mut targets: Vec<(u64, String)> = self
                .cluster
                .addrs
                .iter()
                .map(|(id, a)| (*id, a.clone()))
                .collect();
            targets.sort_by_key(|(id, _)| *id != leader);
            for (_, addr) in targets {
                proxies.push(Proxy::start(addr).await);
            }
            proxies.iter().map(|p| p.addr.clone()).collect()
        } else {
            self.cluster.addrs.values().cloned().collect()
        };
        let metrics = gwmon_client::ClientMetrics::new();
        let mut config = self.client_config(id, monitors, policy);
        config.metrics = metrics.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(gwmon_client::run(config, handler, stop.clone()));
        self.gateways.insert(
            name.to_owned(),
            Gateway {
                metrics,
                stop,
                task,
                proxies,
            },
        );
    }

    /// The process dies: no goodbye, its target keeps whatever it had.
    pub fn kill(&mut self, name: &str) {
        if let Some(g) = self.gateways.remove(name) {
            g.task.abort();
        }
    }

    pub fn cut(&self, name: &str) {
        for p in &self.gateways[name].proxies {
            p.block();
        }
    }

    pub fn heal(&self, name: &str) {
        for p in &self.gateways[name].proxies {
            p.unblock();
        }
    }

    pub async fn holder_is(&self, g: u32, name: &str) {
        let what = format!("{name} alone optimized for ANA group {g}");
        eventually(&what, || {
            std::future::ready(self.timeline.holders(ana(g)) == vec![gw(name)])
        })
        .await;
    }

    pub async fn settled(&self) {
        for (i, name) in self.gateways.keys().enumerate() {
            let _ = i;
            let own = self
                .cluster
                .map(self.cluster.leader().await)
                .group(&key())
                .and_then(|g| g.gateways.get(&gw(name)).map(|x| x.ana_group.get()))
                .expect("gateway in the map");
            self.holder_is(own, name).await;
        }
    }

    pub fn availability(&self, leader: u64, name: &str) -> Option<Availability> {
        self.cluster
            .map(leader)
            .group(&key())
            .and_then(|g| g.gateways.get(&gw(name)).map(|x| x.availability))
    }

    pub async fn shutdown(mut self) {
        for (_, g) in std::mem::take(&mut self.gateways) {
            g.stop.cancel();
            let _ = g.task.await;
        }
        self.cluster.stop_all().await;
    }
}
