//! Test clusters: several monitors in one process, each with its own store (redb) in a temp
//! dir and its own gRPC listener on `127.0.0.1:0`, talking real gRPC to each other.
//!
//! Waiting is always for a condition, with a deadline; never a fixed sleep.
//!
//! * [`env`]: monitors plus gateways with recording handlers, for end-to-end scenarios.
//! * [`proxy`]: a TCP relay a test can cut, to isolate a gateway from the monitors.
//! * [`partition`]: Raft connections through such relays, one per pair of monitors, to
//!   cut a monitor off from the others while clients still reach it.
//! * [`recorder`]: a gateway handler that timestamps every ANA state change.
//! * [`http`]: a minimal HTTP GET and a Prometheus text parser, for the monitors' HTTP
//!   listener (every test monitor serves one on `127.0.0.1:0`).
//! * [`bins`]: building other packages' binaries for tests that run them as processes.

pub mod bins;
pub mod env;
pub mod http;
pub mod partition;
pub mod proxy;
pub mod recorder;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use gwmon_monitor::config::{Bootstrap, MonitorConfig};
use gwmon_monitor::core::Committed;
use gwmon_monitor::error::MonitorError;
use gwmon_monitor::map::{Command, GatewayMap};
use gwmon_monitor::node::{Listeners, Monitor, Plumbing};
use gwmon_monitor::raft::MonitorNode;
use gwmon_proto::v1::admin_service_client::AdminServiceClient;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Poll `cond` until it holds or [`DEADLINE`] passes.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs for a failing test: `GWMON_TEST_LOG=debug cargo test ...`.
pub fn init_logs() {
    if let Ok(level) = std::env::var("GWMON_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(level)
            .with_test_writer()
            .try_init();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Each monitor's client address.
    pub addrs: BTreeMap<u64, String>,
    /// Each monitor's peer port (Raft), which the others dial.
    pub peer_addrs: BTreeMap<u64, String>,
    pub monitors: BTreeMap<u64, Monitor>,
    configs: BTreeMap<u64, MonitorConfig>,
    plumbing: Plumbing,
    /// Per monitor, plumbing that replaces `plumbing` (a connector that knows which
    /// monitor dials, to cut one monitor off from the others).
    each: BTreeMap<u64, Plumbing>,
}

/// Settings that make elections and snapshots quick in tests.
pub fn test_config(id: u64, dir: &std::path::Path, listen: std::net::SocketAddr) -> MonitorConfig {
    let mut c = MonitorConfig::new(id, dir.join(format!("m{id}")), listen);
    // Said explicitly, as a cluster of several monitors must: tests that need a real fence
    // inject one through `Plumbing` (which takes precedence), the others complete fences at
    // once.
    c.fencer = Some(gwmon_monitor::fence::FencerConfig::None);
    c.heartbeat_ms = 50;
    c.election_timeout_min_ms = 300;
    c.election_timeout_max_ms = 600;
    c.liveness_tick_ms = 50;
    c
}

impl Cluster {
    /// Start `voters` monitors as the initial cluster and `learners` more that wait to be
    /// added; `tweak` adjusts each monitor's settings.
    pub async fn start(voters: u64, learners: u64, tweak: impl Fn(&mut MonitorConfig)) -> Cluster {
        Self::start_with(voters, learners, tweak, Plumbing::default()).await
    }

    /// [`Cluster::start`] with the given plumbing (a recording fencer, say).
    pub async fn start_with(
        voters: u64,
        learners: u64,
        tweak: impl Fn(&mut MonitorConfig),
        plumbing: Plumbing,
    ) -> Cluster {
        Self::start_each(voters, learners, tweak, |_| plumbing.clone()).await
    }

    /// [`Cluster::start`] with plumbing of its own for each monitor.
    pub async fn start_each(
        voters: u64,
        learners: u64,
        tweak: impl Fn(&mut MonitorConfig),
        plumbing: impl Fn(u64) -> Plumbing,
    ) -> Cluster {
        init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut peer_addrs = BTreeMap::new();
        for id in 1..=voters + learners {
            let l = Listeners::loopback(true).await.expect("bind");
            addrs.insert(id, l.grpc.local_addr().expect("addr").to_string());
            peer_addrs.insert(id, l.peer.local_addr().expect("addr").to_string());
            listeners.insert(id, l);
        }
        let initial: BTreeMap<u64, MonitorNode> = addrs
            .iter()
            .filter(|(id, _)| **id <= voters)
            .map(|(id, a)| (*id, MonitorNode::new(a.clone(), peer_addrs[id].clone())))
            .collect();
        let mut cluster = Cluster {
            dir,
            addrs,
            peer_addrs,
            monitors: BTreeMap::new(),
            configs: BTreeMap::new(),
            plumbing: plumbing(0),
            each: (1..=voters + learners)
                .map(|id| (id, plumbing(id)))
                .collect(),
        };
        for (id, listeners) in listeners {
            let mut c = test_config(
                id,
                cluster.dir.path(),
                listeners.grpc.local_addr().expect("addr"),
            );
            c.bootstrap = if id <= voters {
                Bootstrap::Members(initial.clone())
            } else {
                Bootstrap::Join
            };
            tweak(&mut c);
            cluster.configs.insert(id, c.clone());
            let m = Monitor::start(c, listeners, cluster.plumbing_of(id))
                .await
                .expect("monitor starts");
            cluster.monitors.insert(id, m);
        }
        cluster
    }

    /// The id of the leader that every running voter agrees on.
    pub async fn leader(&self) -> u64 {
        let mut found = 0;
        eventually("a leader every running voter agrees on", || {
            let agreed = self.monitors.iter().find_map(|(id, m)| {
                if !m.core.is_leader() {
                    return None;
                }
                let metrics = m.raft().metrics().borrow().clone();
                let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
                let all = voters.iter().all(|v| {
                    self.monitors
                        .get(v)
                        .is_none_or(|o| o.raft().metrics().borrow().current_leader == Some(*id))
                });
                all.then_some(*id)
            });
            if let Some(id) = agreed {
                found = id;
            }
            std::future::ready(agreed.is_some())
        })
        .await;
        found
    }

    fn plumbing_of(&self, id: u64) -> Plumbing {
        self.each
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.plumbing.clone())
    }

    pub fn monitor(&self, id: u64) -> &Monitor {
        self.monitors.get(&id).expect("running monitor")
    }

    /// Commit a command through the current leader, retrying across an election.
    pub async fn write(&self, cmd: Command) -> Committed {
        let end = Instant::now() + DEADLINE;
        loop {
            let leader = self.leader().await;
            match self.monitor(leader).core.propose(cmd.clone()).await {
                Ok(c) => return c,
                Err(MonitorError::NotLeader { .. } | MonitorError::Raft(_))
                    if Instant::now() < end =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("write {cmd:?}: {e}"),
            }
        }
    }

    /// Stop a monitor (its store stays on disk).
    pub async fn stop(&mut self, id: u64) {
        let m = self.monitors.remove(&id).expect("running monitor");
        m.shutdown().await.expect("clean shutdown");
    }

    /// Stop a monitor without handing its leadership over, as a crash leaves it (the
    /// store is still flushed: what a crash loses of it is the simulation's business).
    pub async fn stop_abruptly(&mut self, id: u64) {
        let m = self.monitors.remove(&id).expect("running monitor");
        m.shutdown_token().cancel();
        m.stopped().await.expect("clean stop");
    }

    /// Start a stopped monitor again from its store, on the same address.
    pub async fn restart(&mut self, id: u64) {
        let c = self.configs.get(&id).expect("known monitor").clone();
        let listeners = Listeners {
            grpc: bind_again(&self.addrs[&id]).await,
            peer: bind_again(&self.peer_addrs[&id]).await,
            http: Some(TcpListener::bind("127.0.0.1:0").await.expect("bind http")),
        };
        let m = Monitor::start(c, listeners, self.plumbing_of(id))
            .await
            .expect("monitor restarts");
        self.monitors.insert(id, m);
    }

    /// Start a monitor that waits to be added.
    pub async fn stop_all(&mut self) {
        let ids: Vec<u64> = self.monitors.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    /// The map as monitor `id` has applied it.
    pub fn map(&self, id: u64) -> GatewayMap {
        self.monitor(id).core.reader().read(GatewayMap::clone)
    }

    /// Wait until every running monitor has applied at least `index`.
    pub async fn applied_everywhere(&self, index: u64) {
        for (id, m) in &self.monitors {
            m.raft()
                .wait(Some(DEADLINE))
                .applied_index_at_least(Some(index), "applied everywhere")
                .await
                .unwrap_or_else(|e| panic!("monitor {id} did not apply {index}: {e}"));
        }
    }

    pub async fn admin(&self, id: u64) -> AdminServiceClient<tonic::transport::Channel> {
        AdminServiceClient::connect(format!("http://{}", self.addrs[&id]))
            .await
            .expect("admin client connects")
    }
}

/// Bind an address a stopped monitor used; the port may take a moment to be free again.
pub async fn bind_again(addr: &str) -> TcpListener {
    let end = Instant::now() + DEADLINE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < end, "cannot bind {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
