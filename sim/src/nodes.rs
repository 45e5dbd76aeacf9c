//! The simulated hosts: monitors (the real `Monitor`, on a simulated disk and wall clock, with
//! a fencer that blocklists at the simulated storage), gateways (the real gwmon-client
//! session driving a simulated target) and an operator issuing admin commands.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use gwmon_client::{AnaHandler, AnaStates, ClientConfig, HandlerError};
use gwmon_monitor::clock::Clock;
use gwmon_monitor::config::{Bootstrap, MonitorConfig};
use gwmon_monitor::fence::{BoxFuture, FenceError, FenceOrder, Fencer, FencerSettings};
use gwmon_monitor::map::Timestamp;
use gwmon_monitor::node::{Monitor, Plumbing};
use gwmon_monitor::raft::MonitorNode;
use gwmon_proto::domain::{AnaAccess, AnaGroupId, GroupKey, Listener, Namespace, Subsystem};
use gwmon_proto::v1::admin_service_client::AdminServiceClient;
use gwmon_proto::v1::{self};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::net::{self, SimNet, MONITOR_PORT};
use crate::world::{AdminOp, AdminState, Event, Fencing, TargetCall, World};

type HostResult = Result<(), Box<dyn std::error::Error>>;

/// The group every simulated gateway belongs to.
pub fn key() -> GroupKey {
    GroupKey::new(
        "rbd".parse().expect("pool name"),
        "sim".parse().expect("group name"),
    )
}

pub fn monitor_host(id: u64) -> String {
    format!("m{id}")
}

pub fn monitor_addr(id: u64) -> String {
    format!("m{id}:{MONITOR_PORT}")
}

/// Raft metrics of the running monitors, for the driver to find the leader.
pub type Metrics = watch::Receiver<openraft::RaftMetrics<u64, gwmon_monitor::raft::MonitorNode>>;

/// Where monitor hosts leave their metrics for the driver.
#[derive(Clone, Default)]
pub struct MetricsBoard {
    inner: Arc<Mutex<BTreeMap<u64, Metrics>>>,
}

impl MetricsBoard {
    pub fn set(&self, id: u64, m: Metrics) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, m);
    }

    pub fn remove(&self, id: u64) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The leader with the highest term among running monitors that call themselves leader.
    pub fn leader(&self) -> Option<(u64, u64)> {
        self.leaders().into_iter().max_by_key(|(_, term)| *term)
    }

    /// Every running monitor that calls itself leader, with its term.
    pub fn leaders(&self) -> Vec<(u64, u64)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .iter()
            .filter_map(|(id, m)| {
                let m = m.borrow();
                (m.current_leader == Some(*id)).then_some((*id, m.current_term))
            })
            .collect()
    }
}

/// Timers of the simulated cluster.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub heartbeat_ms: u64,
    /// Every monitor's election timeout. openraft draws it from a thread-local generator the
    /// simulation cannot seed, so the range is one millisecond wide: the simulated network's
    /// seeded latencies are what break ties.
    pub election_ms: u64,
    pub liveness_tick_ms: u64,
    pub beacon: Duration,
}

impl Timers {
    pub const DEFAULT: Timers = Timers {
        heartbeat_ms: 100,
        election_ms: 500,
        liveness_tick_ms: 100,
        beacon: Duration::from_millis(500),
    };
}

/// A monitor's wall clock: simulated time plus this monitor's skew, which faults move.
struct SimClock {
    world: World,
    id: u64,
}

/// 2023-11-14, in Unix milliseconds: simulated wall clocks start here.
const EPOCH_MS: i64 = 1_700_000_000_000;

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.world.now().as_millis()).unwrap_or(i64::MAX);
        let ms = EPOCH_MS
            .saturating_add(elapsed)
            .saturating_add(self.world.clock_offset(self.id));
        Timestamp(u64::try_from(ms).unwrap_or(0))
    }
}

/// Fences at the simulated storage: blocklists the identities the order names, after a
/// delay, unless this run's fencer faults make the attempt fail or hang. A hung attempt
/// keeps the [`Fencer`] contract the way the exec fencer does: it ends with a timeout
/// after the default `fencer_timeout_ms`, as if its command had been killed.
struct SimFencer {
    world: World,
}

impl Fencer for SimFencer {
    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
        Box::pin(async move {
            self.world.record(Event::FenceStarted {
                gateway: order.gateway.to_string(),
                epoch: order.epoch.0,
            });
            let faults = self.world.fencer_faults();
            let max = u64::try_from(faults.max_delay.as_millis()).unwrap_or(u64::MAX);
            let delay = self.world.random_below(max.max(1));
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if self.world.chance(faults.hang) {
                self.world.record(Event::FenceFailed {
                    gateway: order.gateway.to_string(),
                    why: "hangs".into(),
                });
                let after = FencerSettings::DEFAULT_TIMEOUT;
                tokio::time::sleep(after).await;
                return Err(FenceError::Timeout {
                    what: "fence command",
                    after,
                });
            }
            if self.world.chance(faults.fail) {
                self.world.record(Event::FenceFailed {
                    gateway: order.gateway.to_string(),
                    why: "fails".into(),
                });
                return Err(FenceError::Exit {
                    code: Some(1),
                    stderr: "simulated failure".into(),
                });
            }
            if self.world.fencing() == Fencing::LeaseOnly {
                return Ok(());
            }
            self.world.blocklist(
                order.gateway.as_str(),
                order.nonces.iter().map(ToString::to_string).collect(),
                order.epoch.0,
            );
            Ok(())
        })
    }

    fn name(&self) -> &'static str {
        "sim"
    }

    /// In a run without storage fencing it is the `none` fencer: it cuts nobody off.
    fn cuts_off(&self) -> bool {
        self.world.fencing() == Fencing::Storage
    }
}

/// The software of monitor `id`: a real monitor over the simulated network, disk and clock.
pub fn monitor(
    world: World,
    board: MetricsBoard,
    id: u64,
    voters: u64,
    timers: Timers,
) -> impl Fn() -> Pin<Box<dyn Future<Output = HostResult>>> {
    move || {
        let world = world.clone();
        let board = board.clone();
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", MONITOR_PORT)).await?;
            let mut config = MonitorConfig::new(
                id,
                format!("/sim/m{id}"),
                std::net::SocketAddr::from(([0, 0, 0, 0], MONITOR_PORT)),
            );
            config.advertise = Some(monitor_addr(id));
            // The simulated network has no TLS; its wildcard listener is its own.
            config.insecure = true;
            config.bootstrap = Bootstrap::Members(
                (1..=voters)
                    .map(|i| (i, MonitorNode::new(monitor_addr(i), monitor_addr(i))))
                    .collect(),
            );
            config.heartbeat_ms = timers.heartbeat_ms;
            config.election_timeout_min_ms = timers.election_ms;
            config.election_timeout_max_ms = timers.election_ms + 1;
            config.liveness_tick_ms = timers.liveness_tick_ms;
            config.snapshot_logs = 500;
            let plumbing = Plumbing {
                connector: Arc::new(SimNet),
                clock: Arc::new(SimClock {
                    world: world.clone(),
                    id,
                }),
                fencer: Some(Arc::new(SimFencer {
                    world: world.clone(),
                })),
                features: gwmon_monitor::map::features::SUPPORTED,
                raft_runtime: None,
            };
            let store = Arc::new(world.store(id));
            let monitor = Monitor::start_custom(
                config,
                monitor_addr(id),
                net::incoming(listener),
                store,
                plumbing,
            )
            .await?;
            board.set(id, monitor.raft().metrics());
            std::future::pending::<()>().await;
            drop(monitor);
            Ok(())
        })
    }
}

/// A simulated target: what it exposes lives in the world, so it outlives the process, as
/// a kernel target outlives the gateway daemon that configured it.
struct SimTarget {
    world: World,
    gateway: String,
    nonce: String,
}

/// Namespaces per ANA group of the simulated gateways, all provisioned in ANA group 1, so
/// that namespace balancing moves most of them while faults happen.
pub const NAMESPACES_PER_GROUP: u32 = 2;

impl SimTarget {
    fn new(world: World, gateway: &str, nonce: &str, ana_groups: u32) -> Self {
        let provisioned: Vec<(u32, u32)> = (1..=ana_groups * NAMESPACES_PER_GROUP)
            .map(|nsid| (nsid, 1))
            .collect();
        world.provision(gateway, &provisioned);
        SimTarget {
            world,
            gateway: gateway.to_owned(),
            nonce: nonce.to_owned(),
        }
    }
}

impl AnaHandler for SimTarget {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        Resumed {
            world: &self.world,
            gateway: &self.gateway,
        }
        .await;
        let namespaces = self
            .world
            .placed(&self.gateway)
            .into_iter()
            .filter_map(|(nsid, g)| {
                Some(Namespace {
                    nsid,
                    ana_group: AnaGroupId::new(g).ok()?,
                    nonce: self.nonce.parse().ok(),
                })
            })
            .collect();
        Ok(vec![Subsystem {
            nqn: "nqn.2016-06.io.spdk:sim".parse().expect("nqn"),
            listeners: vec![Listener {
                address: std::net::IpAddr::from([10, 0, 0, 1]),
                port: 4420,
            }],
            namespaces,
        }])
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        Resumed {
            world: &self.world,
            gateway: &self.gateway,
        }
        .await;
        let call = self.world.target_call(&self.gateway);
        let failed = || HandlerError::Target {
            target: "sim",
            op: "apply",
            message: format!("simulated failure: {call:?}"),
        };
        if call == TargetCall::FailsBefore {
            return Err(failed());
        }
        let groups: Vec<(u32, bool)> = states
            .entries
            .iter()
            .map(|e| (e.ana_group.get(), e.access == AnaAccess::Optimized))
            .collect();
        let placements: Vec<(u32, u32)> = states
            .placements
            .iter()
            .map(|p| (p.nsid, p.ana_group.get()))
            .collect();
        self.world
            .apply_target(&self.gateway, &self.nonce, &groups, &placements);
        match call {
            TargetCall::FailsAfter => Err(failed()),
            TargetCall::HangsAfter => {
                std::future::pending::<()>().await;
                Err(failed())
            }
            _ => Ok(()),
        }
    }

    async fn shutdown(&self, _reason: &str) {}
}

/// Ready when `gateway` is not paused.
struct Resumed<'a> {
    world: &'a World,
    gateway: &'a str,
}

impl Future for Resumed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.world.park(self.gateway, cx.waker()) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// A future that is not polled while its gateway is paused: a stopped process. Its timers
/// fire late, all at once, when it resumes, as a SIGSTOPped process's do.
struct Pausable<F> {
    world: World,
    gateway: String,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Pausable<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.world.park(&self.gateway, cx.waker()) {
            return Poll::Pending;
        }
        self.inner.as_mut().poll(cx)
    }
}

/// How often a gateway's I/O would notice that its identity is blocklisted.
const BLOCKLIST_CHECK: Duration = Duration::from_millis(100);

/// The software of gateway `name`: the real client session on a simulated target.
pub fn gateway(
    world: World,
    name: String,
    monitors: u64,
    ana_groups: u32,
    timers: Timers,
) -> impl Fn() -> Pin<Box<dyn Future<Output = HostResult>>> {
    move || {
        let world = world.clone();
        let name = name.clone();
        Box::pin(async move {
            let (nonce, seed) = world.start_process(&name);
            let handler = Arc::new(SimTarget::new(world.clone(), &name, &nonce, ana_groups));
            let config = ClientConfig::builder(name.parse()?, key())
                .monitors((1..=monitors).map(monitor_addr))
                .beacon_interval(timers.beacon)
                .build()?;
            let plumbing = gwmon_client::Plumbing {
                dialer: Arc::new(SimNet),
                seed: Some(seed),
            };
            let session =
                gwmon_client::run_with(config, handler, CancellationToken::new(), plumbing);
            // A gateway whose storage identity was blocklisted can never write again: like
            // a Ceph gateway, it notices on its I/O and exits, and its supervisor starts it
            // again with a new identity.
            let blocklisted = async {
                while !world.is_blocklisted(&nonce) {
                    tokio::time::sleep(BLOCKLIST_CHECK).await;
                }
            };
            let run = async {
                tokio::select! {
                    exit = session => match exit {
                        Ok(e) => format!("{e:?}"),
                        Err(e) => e.to_string(),
                    },
                    () = blocklisted => "its storage identity is blocklisted".to_owned(),
                }
            };
            let why = Pausable {
                world: world.clone(),
                gateway: name.clone(),
                inner: Box::pin(run),
            }
            .await;
            world.record(Event::Exited {
                gateway: name,
                nonce,
                why,
            });
            Ok(())
        })
    }
}

/// One admin call's outcome.
enum Outcome {
    Ok,
    /// Not done, for sure; retrying elsewhere may help (`leader`).
    Refused {
        leader: Option<String>,
        why: String,
    },
    /// Not done, for sure, and retrying will not change that.
    Rejected(String),
    /// Unknown: it may have been applied.
    Lost(String),
}

fn outcome<T>(
    r: Result<Result<tonic::Response<T>, tonic::Status>, tokio::time::error::Elapsed>,
) -> Outcome {
    match r {
        Err(_) => Outcome::Lost("timed out".into()),
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(status)) => {
            let why = format!("{:?}: {}", status.code(), status.message());
            if let Some(leader) = gwmon_proto::leader::leader_hint(&status) {
                return Outcome::Refused {
                    leader: Some(leader.to_owned()),
                    why,
                };
            }
            match status.code() {
                Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::FailedPrecondition
                | Code::OutOfRange => Outcome::Rejected(why),
                _ => Outcome::Lost(why),
            }
        }
    }
}

const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(15);

async fn call(addr: &str, op: &AdminOp) -> Outcome {
    let channel = match net::channel(addr, Duration::from_secs(1)).await {
        Ok(c) => c,
        Err(why) => {
            return Outcome::Refused { leader: None, why };
        }
    };
    let mut c = AdminServiceClient::new(channel);
    let key = Some(v1::GroupKey::from(key()));
    let t = Duration::from_secs(3);
    match op {
        AdminOp::Create(g) => outcome(
            tokio::time::timeout(
                t,
                c.create_gateway(v1::CreateGatewayRequest {
                    key,
                    gateway_id: g.clone(),
                    location: String::new(),
                }),
            )
            .await,
        ),
        AdminOp::Delete(g) => outcome(
            tokio::time::timeout(
                t,
                c.delete_gateway(v1::DeleteGatewayRequest {
                    key,
                    gateway_id: g.clone(),
                }),
            )
            .await,
        ),
        AdminOp::SetEnabled(g, on) => outcome(
            tokio::time::timeout(
                t,
                c.set_admin_state(v1::SetAdminStateRequest {
                    key,
                    gateway_id: g.clone(),
                    enabled: *on,
                }),
            )
            .await,
        ),
        AdminOp::SetLocation(g, l) => outcome(
            tokio::time::timeout(
                t,
                c.set_location(v1::SetLocationRequest {
                    key,
                    gateway_id: g.clone(),
                    location: l.clone(),
                }),
            )
            .await,
        ),
        AdminOp::SetFailbackDelay(ms) => outcome(
            tokio::time::timeout(
                t,
                c.set_config(v1::SetConfigRequest {
                    update: Some(v1::MapSettingsUpdate {
                        failback_delay_ms: Some(*ms),
                        ..Default::default()
                    }),
                }),
            )
            .await,
        ),
        // A learner may take up to its catch-up bound (10 s) before it becomes a voter.
        AdminOp::AddMonitor(m) => outcome(
            tokio::time::timeout(
                MEMBERSHIP_TIMEOUT,
                c.add_monitor(v1::AddMonitorRequest {
                    id: *m,
                    addr: monitor_addr(*m),
                    // A simulated monitor serves Raft with its clients, on one address.
                    peer_addr: monitor_addr(*m),
                }),
            )
            .await,
        ),
        AdminOp::RemoveMonitor(m) => outcome(
            tokio::time::timeout(
                MEMBERSHIP_TIMEOUT,
                c.remove_monitor(v1::RemoveMonitorRequest { id: *m }),
            )
            .await,
        ),
    }
}

/// Run one admin command to completion: follow leader hints, retry what was surely not done,
/// and count "already exists" / "not found" as done once an earlier attempt may have been.
async fn run_op(monitors: u64, op: &AdminOp) -> Result<(), (bool, String)> {
    let mut target: Option<String> = None;
    let mut uncertain = false;
    let mut last = String::new();
    for attempt in 0..9u64 {
        let addr = target
            .take()
            .unwrap_or_else(|| monitor_addr(attempt % monitors + 1));
        match call(&addr, op).await {
            Outcome::Ok => return Ok(()),
            Outcome::Refused { leader, why } => {
                target = leader;
                last = why;
            }
            Outcome::Rejected(why) => {
                let repeat = matches!(
                    (op, why.split(':').next()),
                    (AdminOp::Create(_), Some("AlreadyExists"))
                        | (AdminOp::Delete(_), Some("NotFound"))
                        | (AdminOp::RemoveMonitor(_), Some("NotFound"))
                );
                if uncertain && repeat {
                    return Ok(());
                }
                return Err((!uncertain, why));
            }
            Outcome::Lost(why) => {
                uncertain = true;
                last = why;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err((!uncertain, last))
}

/// Read back the state every admin key names, from the leader.
async fn read_state(monitors: u64) -> Result<AdminState, String> {
    let mut last = String::from("no monitor answered");
    for attempt in 0..12u64 {
        let addr = monitor_addr(attempt % monitors + 1);
        let Ok(channel) = net::channel(&addr, Duration::from_secs(1)).await else {
            continue;
        };
        let mut c = AdminServiceClient::new(channel);
        let group = c
            .show_group(v1::ShowGroupRequest {
                key: Some(v1::GroupKey::from(key())),
                stale: false,
            })
            .await;
        let config = c.get_config(v1::GetConfigRequest { stale: false }).await;
        let cluster = c
            .cluster_status(v1::ClusterStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            // The membership as the leader sees it.
            .and_then(|s| {
                if s.leader_id == attempt % monitors + 1 {
                    Ok(s)
                } else {
                    Err(tonic::Status::unavailable("not the leader"))
                }
            });
        match (group, config, cluster) {
            (Ok(g), Ok(cfg), Ok(cluster)) => {
                let mut state = AdminState::new();
                for m in 1..=monitors {
                    let member = cluster.members.iter().any(|x| x.id == m);
                    state.insert(
                        format!("member/m{m}"),
                        if member { "yes" } else { "no" }.into(),
                    );
                }
                for gw in g.into_inner().group.map(|g| g.gateways).unwrap_or_default() {
                    let present = gw.availability != "DELETING";
                    state.insert(
                        format!("exists/{}", gw.gateway_id),
                        if present { "yes" } else { "no" }.into(),
                    );
                    state.insert(
                        format!("enabled/{}", gw.gateway_id),
                        gw.admin_enabled.to_string(),
                    );
                    state.insert(format!("location/{}", gw.gateway_id), gw.location);
                }
                let delay = cfg
                    .into_inner()
                    .settings
                    .map(|s| s.failback_delay_ms)
                    .unwrap_or_default();
                state.insert("failback_delay_ms".into(), delay.to_string());
                return Ok(state);
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                last = format!("{addr}: {}", e.message())
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

/// The operator: runs queued commands one after the other, then, once told the run is
/// over, reads the state back.
pub fn admin(
    world: World,
    monitors: u64,
) -> impl Fn() -> Pin<Box<dyn Future<Output = HostResult>>> {
    move || {
        let world = world.clone();
        Box::pin(async move {
            loop {
                match world.next_admin() {
                    Some((id, op)) => {
                        world.record(Event::AdminSent { id, op: op.clone() });
                        match run_op(monitors, &op).await {
                            Ok(()) => world.record(Event::AdminAcked { id }),
                            Err((definite, why)) => {
                                world.record(Event::AdminFailed { id, definite, why })
                            }
                        }
                    }
                    None if world.take_read_request() => match read_state(monitors).await {
                        Ok(state) => world.record(Event::AdminRead { state }),
                        Err(why) => world.record(Event::Fault(format!("final read failed: {why}"))),
                    },
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
    }
}
