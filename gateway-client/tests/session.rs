//! The real gateway session against a fake monitor, over in-memory pipes, on paused tokio
//! time: every instant below is virtual, so the lease and the handler timeouts are checked
//! to the millisecond, and a run takes no real time waiting.
//!
//! The fake monitor is a tonic `GatewayService` whose behaviour each test scripts: ack
//! beacons with a given lease (or stop), send map slices and shutdown orders, refuse a
//! session with a leader hint, end a stream. The target is a handler that records every
//! call with its instant and can be told to fail or to hang.

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use gwmon_client::session::{DialFuture, Dialer};
use gwmon_client::{
    run_with, AnaHandler, AnaStates, ClientConfig, ClientError, Exit, HandlerError, OnDelete,
    Plumbing,
};
use gwmon_proto::domain::{
    self, AnaAccess, AnaGroupId, AnaGroupView, Epoch, GatewayId, GatewayReport, GroupKey, Hello,
    MapSlice, ReportedAvailability, ShutdownKind, SliceAvailability, Subsystem,
};
use gwmon_proto::leader::not_leader;
use gwmon_proto::v1::gateway_service_server::{GatewayService, GatewayServiceServer};
use gwmon_proto::v1::{self};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

/// The lease the fake monitors grant by default: not a whole number of beacon intervals, so
/// that a lease runs out between two beacons and only the lease timer can catch it.
const LEASE: Duration = Duration::from_millis(1750);
const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------
// The target.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Apply(AnaStates),
    DemoteAll,
}

impl Op {
    fn serves(&self) -> bool {
        matches!(self, Op::Apply(s) if s.optimized().next().is_some())
    }
}

#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    op: Op,
}

/// Records every apply and demotion when it starts; `apply` fails or hangs on demand, and
/// so does the listing of subsystems. `demote_all` always succeeds at once.
#[derive(Default)]
struct Target {
    calls: Mutex<Vec<Call>>,
    shutdowns: Mutex<Vec<(Instant, String)>>,
    fail_apply: AtomicBool,
    hang_apply: AtomicBool,
    hang_subsystems: AtomicBool,
    /// What the target lists as its subsystems.
    listing: Mutex<Vec<Subsystem>>,
    /// What each demotion was told the client had told the target, in order.
    told: Mutex<Vec<AnaStates>>,
}

impl Target {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    fn shutdowns(&self) -> Vec<(Instant, String)> {
        self.shutdowns.lock().expect("shutdowns lock").clone()
    }

    fn first_serving(&self) -> Option<Instant> {
        self.calls().iter().find(|c| c.op.serves()).map(|c| c.at)
    }

    fn demotions_after(&self, t: Instant) -> Vec<Instant> {
        self.calls()
            .iter()
            .filter(|c| c.at >= t && c.op == Op::DemoteAll)
            .map(|c| c.at)
            .collect()
    }

    fn serving_after(&self, t: Instant) -> Vec<Instant> {
        self.calls()
            .iter()
            .filter(|c| c.at > t && c.op.serves())
            .map(|c| c.at)
            .collect()
    }

    fn record(&self, op: Op) {
        self.calls.lock().expect("calls lock").push(Call {
            at: Instant::now(),
            op,
        });
    }
}

impl AnaHandler for Target {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        if self.hang_subsystems.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(self.listing.lock().expect("listing lock").clone())
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        self.record(Op::Apply(states.clone()));
        if self.hang_apply.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail_apply.load(Ordering::SeqCst) {
            return Err(HandlerError::Target {
                target: "test",
                op: "apply",
                message: "configfs said no".into(),
            });
        }
        Ok(())
    }

    async fn demote_all(&self, told: &AnaStates) -> Result<(), HandlerError> {
        self.record(Op::DemoteAll);
        self.told.lock().expect("told lock").push(told.clone());
        Ok(())
    }

    async fn shutdown(&self, reason: &str) {
        self.shutdowns
            .lock()
            .expect("shutdowns lock")
            .push((Instant::now(), reason.to_owned()));
    }
}

// ---------------------------------------------------------------------------------------
// The fake monitors.

#[derive(Debug, Clone)]
struct HelloSeen {
    at: Instant,
    monitor: String,
    hello: Hello,
}

#[derive(Debug, Clone)]
struct BeaconSeen {
    at: Instant,
    session: usize,
    incarnation: u64,
    report: GatewayReport,
    unchanged: bool,
}

#[derive(Debug, Clone)]
struct AckSent {
    at: Instant,
    lease: Duration,
}

/// How the monitors answer.
struct Script {
    /// Ack every beacon with this lease; `None`: ack nothing.
    lease: Option<Duration>,
    /// Ack this many more beacons, then stop; `None`: no limit.
    acks_left: Option<u32>,
    /// Monitors that refuse sessions as not the leader, with the leader they name.
    refuse: HashMap<String, Option<String>>,
    /// Monitors that keep their sessions open and ack nothing (a paused leader).
    silent: HashSet<String>,
    /// Monitors that accept a connection and never answer a hello (a paused process).
    mute: HashSet<String>,
    /// Monitors that refuse sessions as `UNAVAILABLE` with no leader named (one that has
    /// not yet confirmed its leadership, or knows of none).
    unconfirmed: HashSet<String>,
    /// Every monitor reads the hello and refuses it as `NOT_FOUND`: the gateway is not in
    /// the map (not created yet, or deleted).
    unknown: bool,
    /// Acks say the monitor takes beacons without an unchanged subsystem list.
    accepts_unchanged: bool,
}

struct OpenSession {
    monitor: String,
    /// `None` once the test closed it.
    tx: Option<mpsc::UnboundedSender<Result<v1::MonitorMessage, Status>>>,
}

#[derive(Default)]
struct Log {
    dials: Vec<(Instant, String)>,
    hellos: Vec<HelloSeen>,
    beacons: Vec<BeaconSeen>,
    acks: Vec<AckSent>,
}

struct Shared {
    script: Mutex<Script>,
    log: Mutex<Log>,
    sessions: Mutex<Vec<OpenSession>>,
}

#[derive(Clone)]
struct FakeMonitor {
    name: String,
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl GatewayService for FakeMonitor {
    type SessionStream = UnboundedReceiverStream<Result<v1::MonitorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<v1::GatewayMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (refusal, mute, unconfirmed) = {
            let script = lock(&self.shared.script);
            (
                script.refuse.get(&self.name).cloned(),
                script.mute.contains(&self.name),
                script.unconfirmed.contains(&self.name),
            )
        };
        if mute {
            std::future::pending::<()>().await;
        }
        if unconfirmed {
            return Err(Status::unavailable("leadership not confirmed"));
        }
        if let Some(leader) = refusal {
            return Err(not_leader(leader.as_deref()));
        }
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no hello"))?;
        let domain::GatewayMessage::Hello(hello) = domain::GatewayMessage::try_from(first)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        else {
            return Err(Status::invalid_argument(
                "the first message must be a hello",
            ));
        };
        lock(&self.shared.log).hellos.push(HelloSeen {
            at: Instant::now(),
            monitor: self.name.clone(),
            hello,
        });
        if lock(&self.shared.script).unknown {
            return Err(Status::not_found("no gateway gw1 in group rbd/grp1"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let session = {
            let mut sessions = lock(&self.shared.sessions);
            sessions.push(OpenSession {
                monitor: self.name.clone(),
                tx: Some(tx),
            });
            sessions.len() - 1
        };
        let shared = self.shared.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let Ok(domain::GatewayMessage::Beacon {
                    incarnation,
                    report,
                    subsystems_unchanged,
                }) = domain::GatewayMessage::try_from(msg)
                else {
                    panic!("the gateway sent something other than a beacon after its hello");
                };
                let now = Instant::now();
                let seq = report.seq;
                lock(&shared.log).beacons.push(BeaconSeen {
                    at: now,
                    session,
                    incarnation,
                    report,
                    unchanged: subsystems_unchanged,
                });
                let lease = {
                    let mut script = lock(&shared.script);
                    if script.silent.contains(&name) {
                        continue;
                    }
                    match (script.lease, script.acks_left) {
                        (Some(_), Some(0)) | (None, _) => None,
                        (Some(lease), left) => {
                            script.acks_left = left.map(|n| n - 1);
                            Some(lease)
                        }
                    }
                };
                let Some(lease) = lease else { continue };
                let ack = domain::MonitorMessage::Ack(domain::Ack {
                    seq,
                    epoch: Epoch(1),
                    map_epoch: Epoch(1),
                    lease,
                    unchanged_subsystems_accepted: lock(&shared.script).accepts_unchanged,
                });
                let sent = lock(&shared.sessions)[session]
                    .tx
                    .as_ref()
                    .is_some_and(|tx| tx.send(Ok(ack.into())).is_ok());
                if sent {
                    lock(&shared.log).acks.push(AckSent { at: now, lease });
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("fake monitor lock")
}

/// The server end of an in-memory pipe.
struct ServerIo(DuplexStream);

impl Connected for ServerIo {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for ServerIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

type Incoming = mpsc::UnboundedSender<Result<ServerIo, io::Error>>;

/// Dials the fake monitors by name; an unknown name does not answer.
struct FakeDialer {
    shared: Arc<Shared>,
    monitors: HashMap<String, Incoming>,
}

impl Dialer for FakeDialer {
    fn dial(&self, addr: &str, _timeout: Duration) -> DialFuture {
        lock(&self.shared.log)
            .dials
            .push((Instant::now(), addr.to_owned()));
        let addr = addr.to_owned();
        let incoming = self.monitors.get(&addr).cloned();
        Box::pin(async move {
            let Some(incoming) = incoming else {
                return Err(format!("{addr}: connection refused"));
            };
            let connector = tower::service_fn(move |_uri| {
                let incoming = incoming.clone();
                async move {
                    let (client, server) = tokio::io::duplex(64 * 1024);
                    incoming
                        .send(Ok(ServerIo(server)))
                        .map_err(|_| io::Error::other("the monitor is gone"))?;
                    Ok::<_, io::Error>(TokioIo::new(client))
                }
            });
            Endpoint::from_static("http://fake")
                .connect_with_connector(connector)
                .await
                .map_err(|e| format!("{addr}: {e}"))
        })
    }
}

/// A set of fake monitors, the target, and the session under test.
struct World {
    shared: Arc<Shared>,
    target: Arc<Target>,
    stop: CancellationToken,
    session: Option<JoinHandle<Result<Exit, ClientError>>>,
    config: ClientConfig,
    started: Instant,
    /// The session's metrics (`config.metrics`), registered.
    registry: Registry,
}

fn gateway() -> GatewayId {
    "gw1".parse().expect("gateway id")
}

fn group_key() -> GroupKey {
    GroupKey::new("rbd".parse().expect("pool"), "grp1".parse().expect("group"))
}

fn ana(n: u32) -> AnaGroupId {
    AnaGroupId::new(n).expect("ANA group id")
}

/// A slice serving ANA group 1 (fenced and ready) and not group 2.
fn serving_slice(epoch: u64) -> v1::MonitorMessage {
    slice_serving(epoch, &[1])
}

fn shutdown(kind: ShutdownKind, reason: &str) -> v1::MonitorMessage {
    domain::MonitorMessage::Shutdown {
        kind,
        reason: reason.to_owned(),
    }
    .into()
}

impl World {
    /// Fake monitors named `monitors` (acking with [`LEASE`]), and a session configured to
    /// reach `config_monitors`, started now.
    fn start(monitors: &[&str], config_monitors: &[&str]) -> World {
        let config = ClientConfig::builder(gateway(), group_key())
            .monitors(config_monitors.iter().copied())
            .build()
            .expect("valid client config");
        Self::start_with(monitors, config, Target::default())
    }

    fn start_with(monitors: &[&str], config: ClientConfig, target: Target) -> World {
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                lease: Some(LEASE),
                acks_left: None,
                refuse: HashMap::new(),
                silent: HashSet::new(),
                mute: HashSet::new(),
                unconfirmed: HashSet::new(),
                unknown: false,
                accepts_unchanged: false,
            }),
            log: Mutex::new(Log::default()),
            sessions: Mutex::new(Vec::new()),
        });
        let mut incoming = HashMap::new();
        for name in monitors {
            let (tx, rx) = mpsc::unbounded_channel();
            incoming.insert((*name).to_owned(), tx);
            let service = FakeMonitor {
                name: (*name).to_owned(),
                shared: shared.clone(),
            };
            tokio::spawn(async move {
                Server::builder()
                    .add_service(GatewayServiceServer::new(service))
                    .serve_with_incoming(UnboundedReceiverStream::new(rx))
                    .await
                    .expect("fake monitor serves");
            });
        }
        let dialer = Arc::new(FakeDialer {
            shared: shared.clone(),
            monitors: incoming,
        });
        let mut registry = Registry::default();
        config.metrics.register(&mut registry);
        let target = Arc::new(target);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let session = tokio::spawn(run_with(
            config.clone(),
            target.clone(),
            stop.clone(),
            Plumbing {
                dialer,
                seed: Some(7),
            },
        ));
        World {
            shared,
            target,
            stop,
            session: Some(session),
            config,
            started,
            registry,
        }
    }

    /// The value of one series of the session's metrics, as scraped now.
    fn metric(&self, series: &str) -> f64 {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("metrics encode");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        lock(&self.shared.script)
    }

    fn hellos(&self) -> Vec<HelloSeen> {
        lock(&self.shared.log).hellos.clone()
    }

    fn beacons(&self) -> Vec<BeaconSeen> {
        lock(&self.shared.log).beacons.clone()
    }

    fn acks(&self) -> Vec<AckSent> {
        lock(&self.shared.log).acks.clone()
    }

    fn dials(&self) -> Vec<(Instant, String)> {
        lock(&self.shared.log).dials.clone()
    }

    fn last_ack(&self) -> AckSent {
        self.acks().last().cloned().expect("at least one ack")
    }

    /// Send to the latest session opened.
    fn send(&self, msg: v1::MonitorMessage) {
        let sessions = lock(&self.shared.sessions);
        let s = sessions.last().expect("a session is open");
        let sent = s.tx.as_ref().is_some_and(|tx| tx.send(Ok(msg)).is_ok());
        assert!(sent, "the session on {} is closed", s.monitor);
    }

    /// End the latest session: cleanly (`None`) or with a status.
    fn close(&self, status: Option<Status>) {
        let mut sessions = lock(&self.shared.sessions);
        let s = sessions.last_mut().expect("a session is open");
        let tx = s.tx.take().expect("the session is still open");
        if let Some(status) = status {
            assert!(tx.send(Err(status)).is_ok(), "the session is gone");
        }
    }

    /// Wait, on virtual time, until `cond` holds; fail after `within`.
    async fn until(&self, what: &str, within: Duration, mut cond: impl FnMut(&World) -> bool) {
        let end = Instant::now() + within;
        while !cond(self) {
            assert!(
                Instant::now() < end,
                "not within {within:?}: {what}\ncalls: {:#?}",
                self.target.calls()
            );
            tokio::time::sleep(MS).await;
        }
    }

    /// A session open and serving ANA group 1, with acks coming: when it started serving.
    async fn serving(&self) -> Instant {
        self.until("a session opens", Duration::from_secs(5), |w| {
            !w.hellos().is_empty()
        })
        .await;
        self.send(serving_slice(2));
        self.until(
            "the target serves ANA group 1",
            Duration::from_secs(5),
            |w| w.target.first_serving().is_some(),
        )
        .await;
        self.target.first_serving().expect("serving")
    }

    async fn exit(&mut self) -> Result<Exit, ClientError> {
        let session = self.session.take().expect("the session runs");
        tokio::time::timeout(Duration::from_secs(60), session)
            .await
            .expect("the session ends")
            .expect("the session task does not panic")
    }
}

/// Acks stop: the target must go inaccessible when the last ack's lease runs out, not
/// earlier, and not later than `delay` (what a handler call in flight may hold it up).
async fn demoted_when_the_lease_runs_out(w: &World, since: Instant, delay: Duration) -> Instant {
    let ack = w.last_ack();
    let lease_end = ack.at + ack.lease;
    let latest = lease_end + delay;
    w.until(
        "the target demoted after the lease ran out",
        latest.saturating_duration_since(Instant::now()) + MS,
        |w| !w.target.demotions_after(since).is_empty(),
    )
    .await;
    let demoted = w.target.demotions_after(since)[0];
    assert!(
        demoted >= lease_end,
        "demoted {:?} before the lease ran out",
        lease_end - demoted
    );
    assert!(
        demoted <= latest,
        "demoted {:?} after the lease ran out",
        demoted - lease_end
    );
    demoted
}

// ---------------------------------------------------------------------------------------
// The tests.

#[tokio::test(start_paused = true)]
async fn the_lease_keeps_the_target_serving_while_acked_and_demotes_it_when_acks_stop() {
    let w = World::start(&["mon1"], &["mon1"]);
    let serving = w.serving().await;

    // Acked every beacon for a while (several leases long): never demoted.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(w.target.demotions_after(serving), Vec::<Instant>::new());
    assert!(w.acks().len() >= 12, "acks: {}", w.acks().len());

    // The monitor goes quiet (the stream stays open): demoted when the lease runs out.
    w.script().lease = None;
    assert_eq!(w.metric("gwmon_client_optimized_ana_groups"), 1.0);
    assert_eq!(w.metric("gwmon_client_demotions_total"), 0.0);
    // The target is idle: the demotion starts the moment the lease runs out.
    let demoted = demoted_when_the_lease_runs_out(&w, serving, Duration::ZERO).await;
    assert_eq!(w.metric("gwmon_client_demotions_total"), 1.0);
    // Beacons go on without acks, and the target is never served again.
    let beacons = w.beacons().len();
    tokio::time::sleep(LEASE * 2).await;
    assert!(w.beacons().len() > beacons, "beacons go on");
    assert_eq!(w.target.serving_after(demoted), Vec::<Instant>::new());
}

/// Found by the simulation (seed 395): the monitors made an ANA group optimized on a
/// gateway before namespace balancing had moved any namespace into it. When its lease ran
/// out, the default demotion made inaccessible only the groups its namespaces were in, and
/// the empty group stayed optimized beside the gateway that took it over. A demotion is
/// told every group the target was told about, with its latest state.
#[tokio::test(start_paused = true)]
async fn a_demotion_is_told_every_group_the_target_was_told_about() {
    let w = World::start(&["mon1"], &["mon1"]);
    let serving = w.serving().await;
    // Group 2 becomes optimized too; group 1 goes inaccessible.
    w.send(slice_serving(3, &[2]));
    w.until(
        "the target serves ANA group 2",
        Duration::from_secs(5),
        |w| {
            w.target
                .calls()
                .iter()
                .any(|c| optimized_in(&c.op) == vec![2])
        },
    )
    .await;
    w.script().lease = None;
    demoted_when_the_lease_runs_out(&w, serving, Duration::ZERO).await;

    let told = w.target.told.lock().expect("told lock").clone();
    // At start the process had told the target nothing.
    assert_eq!(told.first(), Some(&AnaStates::default()));
    let last = told.last().expect("told at the lease's end");
    let groups: Vec<(u32, AnaAccess)> = last
        .entries
        .iter()
        .map(|e| {
            assert_eq!(e.nqn.as_str(), "nqn.2016-06.io.spdk:cnode1");
            (e.ana_group.get(), e.access)
        })
        .collect();
    assert_eq!(
        groups,
        vec![(1, AnaAccess::Inaccessible), (2, AnaAccess::Optimized)]
    );
    assert!(last.placements.is_empty());
}

/// A target that keeps the default `demote_all`.
#[derive(Default)]
struct DefaultDemotion {
    listing: Vec<Subsystem>,
    applied: Mutex<Vec<AnaStates>>,
}

impl AnaHandler for DefaultDemotion {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        Ok(self.listing.clone())
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        self.applied
            .lock()
            .expect("applied lock")
            .push(states.clone());
        Ok(())
    }

    async fn shutdown(&self, _reason: &str) {}
}

#[tokio::test]
async fn the_default_demotion_covers_groups_that_hold_no_namespace() {
    // Every namespace in group 1; the client had told the target group 3 optimized.
    let target = DefaultDemotion {
        listing: listed(2),
        ..DefaultDemotion::default()
    };
    let nqn = target.listing[0].nqn.clone();
    let told = AnaStates {
        epoch: Epoch(9),
        entries: vec![gwmon_client::AnaEntry {
            nqn: nqn.clone(),
            ana_group: ana(3),
            access: AnaAccess::Optimized,
            fence_epoch: Epoch(4),
        }],
        placements: Vec::new(),
    };
    target.demote_all(&told).await.expect("demote");

    let applied = target.applied.lock().expect("applied lock").clone();
    assert_eq!(applied.len(), 1);
    let states = &applied[0];
    assert_eq!(states.optimized().count(), 0);
    assert!(states.placements.is_empty());
    let groups: Vec<(String, u32)> = states
        .entries
        .iter()
        .map(|e| (e.nqn.to_string(), e.ana_group.get()))
        .collect();
    assert_eq!(groups, vec![(nqn.to_string(), 1), (nqn.to_string(), 3)]);
}

#[tokio::test(start_paused = true)]
async fn a_shorter_lease_in_a_newer_ack_replaces_the_longer_one() {
    let w = World::start(&["mon1"], &["mon1"]);
    w.script().lease = Some(Duration::from_secs(10));
    let serving = w.serving().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let long = w.last_ack();
    assert_eq!(long.lease, Duration::from_secs(10));

    // One more ack, with a 1 s lease, then silence.
    {
        let mut script = w.script();
        script.lease = Some(Duration::from_millis(1300));
        script.acks_left = Some(1);
    }
    w.until("the short lease is granted", Duration::from_secs(1), |w| {
        w.last_ack().lease == Duration::from_millis(1300)
    })
    .await;
    let demoted = demoted_when_the_lease_runs_out(&w, serving, Duration::ZERO).await;
    assert_eq!(w.last_ack().lease, Duration::from_millis(1300));
    assert!(demoted < long.at + long.lease - Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn the_target_is_demoted_at_start_before_any_monitor_answers() {
    // No monitor answers at all: the session demotes at once, then gives up at the
    // connect panic, demoting again and shutting the target down.
    let mut w = World::start(&[], &["mon1"]);
    w.until("the target demoted at start", Duration::from_secs(1), |w| {
        !w.target.calls().is_empty()
    })
    .await;
    let calls = w.target.calls();
    assert_eq!(calls[0].op, Op::DemoteAll);
    assert_eq!(
        calls[0].at, w.started,
        "demoted at once, before any dial answered"
    );

    let exit = w.exit().await;
    assert!(
        matches!(exit, Err(ClientError::ConnectPanic(_))),
        "exit: {exit:?}"
    );
    assert!(w.dials().len() > 1, "the session kept trying");
    // Nothing but that demotion (already done, so not repeated), and the target shut down
    // at the connect panic.
    let calls = w.target.calls();
    assert!(calls.iter().all(|c| c.op == Op::DemoteAll), "{calls:?}");
    let shutdowns = w.target.shutdowns();
    assert_eq!(shutdowns.len(), 1, "{shutdowns:?}");
    assert_eq!(shutdowns[0].0, w.started + w.config.connect_panic);
}

#[tokio::test(start_paused = true)]
async fn the_target_is_demoted_before_the_first_map() {
    let w = World::start(&["mon1"], &["mon1"]);
    w.until("beacons acked", Duration::from_secs(5), |w| {
        w.acks().len() >= 3
    })
    .await;
    // Acked, but no map yet: the target was demoted and nothing else.
    let calls = w.target.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].op, Op::DemoteAll);
    assert!(calls[0].at <= w.hellos()[0].at);
}

#[tokio::test(start_paused = true)]
async fn the_target_is_demoted_when_the_session_is_stopped() {
    let mut w = World::start(&["mon1"], &["mon1"]);
    let serving = w.serving().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = Instant::now();
    w.stop.cancel();
    assert_eq!(w.exit().await.expect("a clean exit"), Exit::Stopped);
    let demotions = w.target.demotions_after(serving);
    assert_eq!(demotions, vec![stopped], "demoted once, as it stopped");
    assert_eq!(w.target.serving_after(stopped), Vec::<Instant>::new());
    assert!(
        w.target.shutdowns().is_empty(),
        "a stop is not a shutdown order"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_gateway_told_to_exit_demotes_shuts_the_target_down_and_exits() {
    for kind in [ShutdownKind::Deleted, ShutdownKind::Removed] {
        let config = ClientConfig::builder(gateway(), group_key())
            .monitors(["mon1"])
            .on_delete(OnDelete::Exit)
            .build()
            .expect("valid client config");
        let mut w = World::start_with(&["mon1"], config, Target::default());
        let serving = w.serving().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ordered = Instant::now();
        w.send(shutdown(kind, "deleted by the admin"));
        assert_eq!(
            w.exit().await.expect("a clean exit"),
            Exit::Shutdown("deleted by the admin".into())
        );
        let demotions = w.target.demotions_after(serving);
        assert_eq!(demotions, vec![ordered], "{kind:?}: demoted at once");
        let shutdowns = w.target.shutdowns();
        assert_eq!(shutdowns.len(), 1, "{kind:?}: {shutdowns:?}");
        assert_eq!(shutdowns[0].1, "deleted by the admin");
        assert!(shutdowns[0].0 >= demotions[0]);
        assert_eq!(w.hellos().len(), 1, "{kind:?}: no rejoin");
    }
}

/// Ceph's late registration: a gateway started before `nvme-gw create` waits, however long
/// it takes, while the monitors answer that it is not in the map; it used to exit at the
/// connect panic.
#[tokio::test(start_paused = true)]
async fn a_gateway_not_created_yet_waits_past_the_connect_panic_and_serves_once_created() {
    let w = World::start(&["mon1"], &["mon1"]);
    w.script().unknown = true;
    let waited = w.config.connect_panic * 3;
    tokio::time::sleep(waited).await;
    assert!(
        w.session.as_ref().is_some_and(|s| !s.is_finished()),
        "still waiting after {waited:?}"
    );
    let asked = w.hellos().len();
    assert!(asked > 10, "kept asking: {asked} hellos");
    assert!(w.target.shutdowns().is_empty());
    assert!(w.target.first_serving().is_none());
    // Created: the next hello opens a session, and the gateway serves its slice.
    w.script().unknown = false;
    w.until("a session opens", Duration::from_secs(5), |w| {
        lock(&w.shared.sessions).len() == 1
    })
    .await;
    w.send(serving_slice(2));
    w.until("the target serves", Duration::from_secs(5), |w| {
        w.target.first_serving().is_some()
    })
    .await;
}

/// ... but a gateway that no monitor answers still gives up at the connect panic, even
/// after monitors said it was not created.
#[tokio::test(start_paused = true)]
async fn a_gateway_not_created_gives_up_once_the_monitors_stop_answering() {
    let mut w = World::start(&["mon1"], &["mon1"]);
    w.script().unknown = true;
    tokio::time::sleep(w.config.connect_panic * 2).await;
    w.script().unknown = false;
    w.script().unconfirmed.insert("mon1".into());
    let silent_from = Instant::now();
    let exit = w.exit().await;
    assert!(
        matches!(exit, Err(ClientError::ConnectPanic(_))),
        "exit: {exit:?}"
    );
    let shutdowns = w.target.shutdowns();
    assert_eq!(shutdowns.len(), 1, "{shutdowns:?}");
    assert!(shutdowns[0].0 <= silent_from + w.config.connect_panic);
    assert!(shutdowns[0].0 >= silent_from + w.config.connect_panic - Duration::from_secs(3));
}

/// A deleted gateway (the default `OnDelete::Wait`) stops serving at once, keeps its
/// target, and serves again as a new incarnation once it is created again: no restart.
#[tokio::test(start_paused = true)]
async fn a_deleted_gateway_waits_and_serves_again_once_created_again() {
    for kind in [ShutdownKind::Deleted, ShutdownKind::Removed] {
        let w = World::start(&["mon1"], &["mon1"]);
        let serving = w.serving().await;
        let first = w.hellos()[0].hello.incarnation;
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.script().unknown = true;
        let ordered = Instant::now();
        w.send(shutdown(kind, "the gateway was deleted"));
        w.until("demoted", Duration::from_secs(1), |w| {
            !w.target.demotions_after(serving).is_empty()
        })
        .await;
        assert_eq!(w.target.demotions_after(serving)[0], ordered, "{kind:?}");
        tokio::time::sleep(w.config.disconnect_panic * 2).await;
        assert!(
            w.session.as_ref().is_some_and(|s| !s.is_finished()),
            "{kind:?}: still running"
        );
        assert!(w.target.shutdowns().is_empty(), "{kind:?}: target kept");
        assert!(w.target.serving_after(ordered).is_empty(), "{kind:?}");
        w.script().unknown = false;
        w.until("a new session opens", Duration::from_secs(5), |w| {
            lock(&w.shared.sessions).len() == 2
        })
        .await;
        let again = w.hellos().last().map(|h| h.hello.incarnation);
        assert!(
            again.is_some_and(|i| i != first),
            "{kind:?}: a new incarnation"
        );
        w.send(serving_slice(9));
        w.until("serving again", Duration::from_secs(5), |w| {
            !w.target.serving_after(ordered).is_empty()
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_gateway_declared_failed_demotes_and_rejoins_as_a_new_incarnation() {
    let w = World::start(&["mon1"], &["mon1"]);
    let serving = w.serving().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ordered = Instant::now();
    w.send(shutdown(ShutdownKind::DeclaredFailed, "timed out"));

    w.until("a second session", Duration::from_secs(5), |w| {
        w.hellos().len() >= 2
    })
    .await;
    let hellos = w.hellos();
    assert_ne!(hellos[1].hello.incarnation, hellos[0].hello.incarnation);
    assert_eq!(hellos[1].at, ordered, "rejoined at once");
    // Stopped serving at once, although the lease had not run out.
    assert_eq!(w.target.demotions_after(serving), vec![ordered]);

    // The new session starts over: Starting, seq 0, the new incarnation, nothing applied.
    w.until("a beacon of the new session", Duration::from_secs(5), |w| {
        w.beacons().iter().any(|b| b.session == 1)
    })
    .await;
    let first = w
        .beacons()
        .into_iter()
        .find(|b| b.session == 1)
        .expect("a beacon");
    assert_eq!(first.incarnation, hellos[1].hello.incarnation);
    assert_eq!(first.report.seq, 0);
    assert_eq!(first.report.availability, ReportedAvailability::Starting);
    assert_eq!(first.report.applied_epoch, Epoch::ZERO);
    // It neither exited nor shut the target down, and serves nothing until a new map.
    tokio::time::sleep(LEASE * 2).await;
    assert!(w.session.as_ref().is_some_and(|s| !s.is_finished()));
    assert!(w.target.shutdowns().is_empty());
    assert_eq!(w.target.serving_after(ordered), Vec::<Instant>::new());
}

/// Declared failed again and again before any ack (its fence still pending, say): the
/// rejoins back off instead of looping, and one ack makes the next rejoin immediate again.
#[tokio::test(start_paused = true)]
async fn repeated_failure_declarations_back_off_the_rejoins_until_an_ack() {
    let w = World::start(&["mon1"], &["mon1"]);
    w.serving().await;
    w.script().acks_left = Some(0);
    let mut declared = Vec::new();
    for n in 1..=6 {
        declared.push(Instant::now());
        w.send(shutdown(ShutdownKind::DeclaredFailed, "timed out"));
        w.until("a rejoin", Duration::from_secs(10), |w| {
            w.hellos().len() > n
        })
        .await;
    }
    let hellos = w.hellos();
    let waits: Vec<Duration> = (1..=6).map(|n| hellos[n].at - declared[n - 1]).collect();
    assert_eq!(waits[0], Duration::ZERO, "the first rejoin is immediate");
    let (min, max) = (w.config.reconnect_min, w.config.reconnect_max);
    for (n, wait) in waits.iter().enumerate().skip(1) {
        // reconnect_min * 2^n, with jitter in [1/2, 1), capped at reconnect_max.
        let full = min.saturating_mul(1 << n).min(max);
        assert!(
            *wait >= full / 2 && *wait <= full,
            "rejoin {n} waited {wait:?}, not within [{:?}, {full:?}]: {waits:?}",
            full / 2
        );
    }
    assert!(waits[5] > waits[1], "the waits grow: {waits:?}");

    // One ack resets the backoff: the next declaration is answered by an immediate rejoin.
    w.script().acks_left = Some(1);
    w.until(
        "an ack to the new incarnation",
        Duration::from_secs(10),
        |w| w.acks().iter().any(|a| a.at > hellos[6].at),
    )
    .await;
    let ordered = Instant::now();
    w.send(shutdown(ShutdownKind::DeclaredFailed, "timed out"));
    w.until("a rejoin after the ack", Duration::from_secs(10), |w| {
        w.hellos().len() > 7
    })
    .await;
    assert_eq!(w.hellos()[7].at, ordered, "rejoined at once after an ack");
}

#[tokio::test(start_paused = true)]
async fn a_failing_apply_is_retried_and_does_not_disable_the_lease_demotion() {
    let w = World::start(&["mon1"], &["mon1"]);
    w.target.fail_apply.store(true, Ordering::SeqCst);
    let first = w.serving().await;
    let backoff = w.config.handler_backoff;

    // handler_attempts tries, backing off 50 ms then 100 ms, then the target counts as
    // failed: beacons report it unavailable, and nothing was applied.
    w.until("the failure is reported", Duration::from_secs(5), |w| {
        w.beacons()
            .iter()
            .any(|b| b.report.availability == ReportedAvailability::Unavailable)
    })
    .await;
    let applies: Vec<Instant> = w
        .target
        .calls()
        .iter()
        .filter(|c| matches!(c.op, Op::Apply(_)))
        .map(|c| c.at)
        .collect();
    assert!(applies.len() >= 3, "{applies:?}");
    assert_eq!(applies[0], first);
    assert_eq!(applies[1] - applies[0], backoff);
    assert_eq!(applies[2] - applies[1], backoff * 2);
    let unavailable = w
        .beacons()
        .into_iter()
        .find(|b| b.report.availability == ReportedAvailability::Unavailable)
        .expect("an unavailable beacon");
    assert!(unavailable.at >= applies[2]);

    // It keeps trying (at the next beacons), while acked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retried = w
        .target
        .calls()
        .iter()
        .filter(|c| matches!(c.op, Op::Apply(_)))
        .count();
    assert!(retried > 3, "{retried} apply calls");
    assert!(w
        .beacons()
        .iter()
        .all(|b| b.report.applied_epoch == Epoch::ZERO));
    assert_eq!(w.metric("gwmon_client_optimized_ana_groups"), 0.0);
    assert_eq!(w.target.demotions_after(first), Vec::<Instant>::new());

    // A failed apply may still have taken effect: when the lease runs out the target is
    // demoted like a serving one.
    w.script().lease = None;
    // Every failed call returned at once: nothing holds the demotion up.
    let demoted = demoted_when_the_lease_runs_out(&w, first, Duration::ZERO).await;
    assert_eq!(w.metric("gwmon_client_demotions_total"), 1.0);
    tokio::time::sleep(LEASE).await;
    assert_eq!(w.target.serving_after(demoted), Vec::<Instant>::new());
}

#[tokio::test(start_paused = true)]
async fn a_hung_apply_holds_up_neither_beacons_nor_the_lease_demotion() {
    let w = World::start(&["mon1"], &["mon1"]);
    w.target.hang_apply.store(true, Ordering::SeqCst);
    let first = w.serving().await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each attempt is abandoned at the handler timeout, and tried again.
    let applies: Vec<Instant> = w
        .target
        .calls()
        .iter()
        .filter(|c| matches!(c.op, Op::Apply(_)))
        .map(|c| c.at)
        .collect();
    assert!(applies.len() >= 3, "{applies:?}");
    assert_eq!(
        applies[1] - applies[0],
        w.config.handler_timeout + w.config.handler_backoff
    );

    // Acks stop while an apply hangs: the demotion does not wait behind it for longer
    // than the handler timeout.
    w.script().lease = None;
    let acks_stopped = Instant::now();
    demoted_when_the_lease_runs_out(&w, first, w.config.handler_timeout).await;

    // Beacons went out on time while the apply hung (once acks stop, the session is left
    // for another one after two intervals, which shifts the beat).
    let beacons: Vec<Instant> = w
        .beacons()
        .iter()
        .filter(|b| b.at >= first && b.at <= acks_stopped)
        .map(|b| b.at)
        .collect();
    assert!(beacons.len() >= 6, "{} beacons", beacons.len());
    for pair in beacons.windows(2) {
        assert!(
            pair[1] - pair[0] <= w.config.beacon_interval,
            "a beacon came {:?} after the previous one",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_session_follows_the_leader_a_refusal_names() {
    let w = World::start(&["mon1", "mon2", "mon3"], &["mon1", "mon2", "mon3"]);
    w.script().refuse.insert("mon1".into(), Some("mon3".into()));
    w.until("a session opens", Duration::from_secs(5), |w| {
        !w.hellos().is_empty()
    })
    .await;
    // Straight to the leader named, not the next monitor of the list, and without a
    // backoff.
    let dials = w.dials();
    let names: Vec<&str> = dials.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["mon1", "mon3"]);
    assert_eq!(dials[1].0, dials[0].0);
    assert_eq!(w.hellos()[0].monitor, "mon3");
    let serving = w.serving().await;

    // The leader steps down and ends the stream naming mon2: the session goes there at
    // once, with the same incarnation, and keeps serving under the lease meanwhile.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ended = Instant::now();
    w.close(Some(not_leader(Some("mon2"))));
    w.until("a session on mon2", Duration::from_secs(5), |w| {
        w.hellos().len() >= 2
    })
    .await;
    let hellos = w.hellos();
    assert_eq!(hellos[1].monitor, "mon2");
    assert_eq!(hellos[1].at, ended);
    assert_eq!(hellos[1].hello.incarnation, hellos[0].hello.incarnation);
    let names: Vec<String> = w.dials().into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["mon1", "mon3", "mon2"]);
    assert_eq!(w.target.demotions_after(serving), Vec::<Instant>::new());
}

/// A paused leader (SIGSTOP) keeps its connections open and acks nothing. The gateway used
/// to wait on it until its lease ran out and demote, though the other monitors had elected
/// a new leader long before (every gateway demoted after a 2 s pause). Now it
/// leaves a monitor that has not acked for two beacon intervals, does not follow a
/// follower that still names the paused one, and is acked by the new leader in time.
#[tokio::test(start_paused = true)]
async fn a_leader_that_stops_acking_is_left_for_the_new_one_before_the_lease_runs_out() {
    let w = World::start(&["mon1", "mon2", "mon3"], &["mon1", "mon2", "mon3"]);
    let serving = w.serving().await;
    let last_ack = w.last_ack().at;
    {
        let mut script = w.script();
        script.silent.insert("mon1".into());
        script.refuse.insert("mon2".into(), Some("mon1".into()));
    }
    w.until("a session on mon3", LEASE, |w| {
        w.hellos().iter().any(|h| h.monitor == "mon3")
    })
    .await;
    let moved = w
        .hellos()
        .into_iter()
        .find(|h| h.monitor == "mon3")
        .map(|h| h.at)
        .expect("a hello at mon3");
    assert!(
        moved - last_ack <= w.config.beacon_interval * 3,
        "left the silent leader {:?} after its last ack",
        moved - last_ack
    );
    // mon2's stale hint was not followed back to mon1.
    let after: Vec<String> = w
        .dials()
        .into_iter()
        .filter(|(at, _)| *at > last_ack)
        .map(|(_, n)| n)
        .collect();
    assert!(
        !after.contains(&"mon1".to_owned()),
        "dials after the pause: {after:?}"
    );
    // Acked by mon3: serving on, long past the lease the silent leader granted.
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(w.target.demotions_after(serving), Vec::<Instant>::new());
}

/// A paused leader also leaves a new session's hello unanswered. While the others elect, a
/// follower still names it leader and another answers `UNAVAILABLE` without naming
/// anyone. The gateway must not forget the paused one because of that refusal (a live
/// monitor answered: it is not lost) and dial it, which hung for five seconds and let the
/// lease run out (seen as a 2.7 s dark group in `gwmon-bench --availability`).
#[tokio::test(start_paused = true)]
async fn a_paused_leader_is_not_dialled_again_while_the_others_elect() {
    let w = World::start(&["mon1", "mon2", "mon3"], &["mon1", "mon2", "mon3"]);
    let serving = w.serving().await;
    let paused = Instant::now();
    {
        let mut script = w.script();
        script.silent.insert("mon1".into());
        script.mute.insert("mon1".into());
        script.unconfirmed.insert("mon2".into());
        script.refuse.insert("mon3".into(), Some("mon1".into()));
    }
    // The election ends 1.2 s after the pause: mon2 leads.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.script().unconfirmed.remove("mon2");
    w.until("a session on mon2", LEASE, |w| {
        w.hellos().iter().any(|h| h.monitor == "mon2")
    })
    .await;
    let redials: Vec<Instant> = w
        .dials()
        .into_iter()
        .filter(|(at, n)| *at > paused && n == "mon1")
        .map(|(at, _)| at)
        .collect();
    assert_eq!(
        redials,
        Vec::<Instant>::new(),
        "the paused leader was dialled again"
    );
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(w.target.demotions_after(serving), Vec::<Instant>::new());
}

/// A planned move (disable, delete, failback) waits for the old holder's word that it
/// applied the map that stops it. That word used to wait for the next beacon, so planned
/// moves left their group dark for up to a beacon interval (about 190 ms measured); now a
/// beacon goes out the moment the target applied a new map.
#[tokio::test(start_paused = true)]
async fn a_beacon_confirms_a_new_map_the_moment_the_target_applied_it() {
    let w = World::start(&["mon1"], &["mon1"]);
    w.serving().await;
    // Off the beat: the next regular beacon is a good while away.
    tokio::time::sleep(w.config.beacon_interval / 3).await;
    let sent = Instant::now();
    w.send(slice_serving(3, &[]));
    w.until("a beacon confirming epoch 3", Duration::from_secs(1), |w| {
        w.beacons()
            .iter()
            .any(|b| b.report.applied_epoch == Epoch(3))
    })
    .await;
    let confirmed = w
        .beacons()
        .into_iter()
        .find(|b| b.report.applied_epoch == Epoch(3))
        .map(|b| b.at)
        .expect("a confirming beacon");
    assert_eq!(
        confirmed,
        sent,
        "confirmed {:?} after the slice",
        confirmed - sent
    );
}

/// A subsystem with `namespaces` namespaces in ANA group 1.
fn listed(namespaces: u32) -> Vec<Subsystem> {
    vec![v1::Subsystem {
        nqn: "nqn.2016-06.io.spdk:cnode1".into(),
        listeners: vec![v1::Listener {
            address: "127.0.0.1".into(),
            port: 4420,
        }],
        namespaces: (1..=namespaces)
            .map(|nsid| v1::Namespace {
                nsid,
                ana_group: 1,
                nonce: String::new(),
            })
            .collect(),
    }
    .try_into()
    .expect("a valid subsystem")]
}

/// The beacons of session `session` as (carried a list, left it out as unchanged, list).
fn lists_of(w: &World, session: usize) -> Vec<(bool, Vec<Subsystem>)> {
    w.beacons()
        .into_iter()
        .filter(|b| b.session == session)
        .map(|b| (b.unchanged, b.report.subsystems))
        .collect()
}

/// A monitor that takes it gets the subsystem list once per session and again only when
/// it changes; one that does not say so (an older monitor) gets it in every beacon.
#[tokio::test(start_paused = true)]
async fn an_unchanged_subsystem_list_is_left_out_only_where_the_monitor_takes_it() {
    let config = ClientConfig::builder(gateway(), group_key())
        .monitors(["mon1", "mon2"])
        .build()
        .expect("valid client config");
    let target = Target::default();
    *target.listing.lock().expect("listing") = listed(2);
    let w = World::start_with(&["mon1", "mon2"], config, target);
    let beacons_of = |w: &World, session: usize| lists_of(w, session).len();

    // An older monitor: every beacon lists the subsystems.
    w.until(
        "four beacons to an older monitor",
        Duration::from_secs(10),
        |w| beacons_of(w, 0) >= 4,
    )
    .await;
    let old = lists_of(&w, 0);
    assert!(
        old.iter()
            .skip(1)
            .all(|(unchanged, l)| !unchanged && *l == listed(2)),
        "{old:?}"
    );

    // A monitor that takes it: listed once, then left out while it stays the same.
    w.script().accepts_unchanged = true;
    w.close(None);
    w.until(
        "five beacons on the second session",
        Duration::from_secs(10),
        |w| beacons_of(w, 1) >= 5,
    )
    .await;
    let new = lists_of(&w, 1);
    assert_eq!(
        new[0],
        (false, listed(2)),
        "the session's first beacon lists them"
    );
    assert!(
        new.iter()
            .skip(2)
            .all(|(unchanged, l)| *unchanged && l.is_empty()),
        "{new:?}"
    );

    // A change is listed in the next beacon, then left out again.
    *w.target.listing.lock().expect("listing") = listed(3);
    w.until("the new list sent", Duration::from_secs(10), |w| {
        lists_of(w, 1).iter().any(|(_, l)| *l == listed(3))
    })
    .await;
    let at = lists_of(&w, 1)
        .iter()
        .position(|(_, l)| *l == listed(3))
        .expect("listed");
    w.until("two more beacons", Duration::from_secs(10), |w| {
        beacons_of(w, 1) >= at + 3
    })
    .await;
    let after = lists_of(&w, 1);
    assert!(!after[at].0, "the changed list is not marked unchanged");
    assert!(
        after[at + 1..]
            .iter()
            .all(|(unchanged, l)| *unchanged && l.is_empty()),
        "{after:?}"
    );

    // A new session (another monitor) starts again with the whole list.
    w.close(None);
    w.until(
        "a beacon on the third session",
        Duration::from_secs(10),
        |w| beacons_of(w, 2) >= 1,
    )
    .await;
    assert_eq!(lists_of(&w, 2)[0], (false, listed(3)));
}

/// A slice with the groups `optimized` of 1 and 2 optimized (fenced and ready), the other not.
fn slice_serving(epoch: u64, optimized: &[u32]) -> v1::MonitorMessage {
    let view = |g: u32| AnaGroupView {
        ana_group: ana(g),
        access: if optimized.contains(&g) {
            AnaAccess::Optimized
        } else {
            AnaAccess::Inaccessible
        },
        fence_epoch: Epoch::ZERO,
        fence_complete: true,
    };
    domain::MonitorMessage::MapSlice(MapSlice {
        epoch: Epoch(epoch),
        ana_group: ana(1),
        availability: SliceAvailability::Available,
        nqns: vec!["nqn.2016-06.io.spdk:cnode1".parse().expect("nqn")],
        ana_groups: vec![view(1), view(2)],
        placements: Vec::new(),
    })
    .into()
}

fn optimized_in(op: &Op) -> Vec<u32> {
    match op {
        Op::Apply(s) => s.optimized().map(|e| e.ana_group.get()).collect(),
        Op::DemoteAll => Vec::new(),
    }
}

/// Found by the simulation: a gateway serving under a lease from the leader reconnected to
/// a deposed leader, whose old map said it owned groups the current map had given to
/// another gateway, and served them. A slice from a session that has not acked yet may take
/// groups away, but gives none, even while an earlier session's lease runs.
#[tokio::test(start_paused = true)]
async fn a_new_session_gives_no_group_before_it_acks_even_under_a_running_lease() {
    let w = World::start(&["mon1", "mon2"], &["mon1", "mon2"]);
    w.serving().await;
    // The lease from mon1 runs; mon2 takes sessions but acks nothing for now.
    w.close(None);
    w.script().acks_left = Some(0);
    w.until("a session on mon2", Duration::from_secs(5), |w| {
        w.hellos().len() >= 2
    })
    .await;
    let before = w.target.calls().len();
    w.send(slice_serving(1, &[2]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = w.target.calls();
    assert!(
        calls[before..]
            .iter()
            .all(|c| optimized_in(&c.op).is_empty()),
        "served a group from an unacked session: {:?}",
        &calls[before..]
    );
    assert!(
        calls.len() > before,
        "group 1, no longer optimized in the new slice, was not taken away"
    );

    // Its first ack makes the slice count: group 2 is served.
    w.script().acks_left = None;
    w.until(
        "group 2 served once the session acked",
        Duration::from_secs(5),
        |w| {
            w.target
                .calls()
                .last()
                .is_some_and(|c| optimized_in(&c.op) == [2])
        },
    )
    .await;
}

/// Found by the simulation: monitors removed from the membership could not name the leader,
/// and a gateway that backed off before each monitor of the list took longer than the grace
/// to reach the leader, last in the list, so a healthy gateway was failed over. A round
/// tries every monitor right after the last; only a failed round backs off.
#[tokio::test(start_paused = true)]
async fn every_monitor_is_tried_in_a_round_before_the_backoff_grows() {
    let w = World::start(&["mon1", "mon2", "mon3"], &["mon1", "mon2", "mon3"]);
    for m in ["mon1", "mon2", "mon3"] {
        w.script().refuse.insert(m.into(), None);
    }
    w.until("twelve dials", Duration::from_secs(60), |w| {
        w.dials().len() >= 12
    })
    .await;
    let dials = w.dials();
    let names: Vec<&str> = dials.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names[..6],
        ["mon1", "mon2", "mon3", "mon1", "mon2", "mon3"],
        "the list in turn"
    );
    let min = w.config.reconnect_min;
    for (i, pair) in dials.windows(2).enumerate().take(11) {
        let gap = pair[1].0 - pair[0].0;
        if (i + 1) % 3 == 0 {
            continue; // a round over: the backoff
        }
        assert!(
            gap <= min,
            "dial {} came {gap:?} after the one before",
            i + 1
        );
    }
    // The rounds back off: the fourth starts later after the third than the second did
    // after the first.
    let between = |r: usize| dials[3 * r].0 - dials[3 * r - 1].0;
    assert!(
        between(3) > between(1),
        "{:?} then {:?}",
        between(1),
        between(3)
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_stream_is_reopened_on_the_next_monitor_after_a_backoff() {
    let w = World::start(&["mon1", "mon2"], &["mon1", "mon2"]);
    w.serving().await;
    let ended = Instant::now();
    w.close(None);
    w.until("a session on mon2", Duration::from_secs(5), |w| {
        w.hellos().len() >= 2
    })
    .await;
    let hellos = w.hellos();
    assert_eq!(hellos[1].monitor, "mon2");
    assert_eq!(hellos[1].hello.incarnation, hellos[0].hello.incarnation);
    let waited = hellos[1].at - ended;
    assert!(
        waited > Duration::ZERO && waited <= w.config.reconnect_min,
        "reconnected after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_listing_holds_up_the_lease_demotion_no_longer_than_the_handler_timeout() {
    let w = World::start(&["mon1"], &["mon1"]);
    let first = w.serving().await;
    // From now on every listing (one per beacon) hangs until the handler timeout.
    w.target.hang_subsystems.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.script().lease = None;
    demoted_when_the_lease_runs_out(&w, first, w.config.handler_timeout).await;
}

#[tokio::test(start_paused = true)]
async fn losing_every_monitor_demotes_when_the_lease_runs_out() {
    // mon2 does not answer, and mon1 refuses once its stream has ended: the session keeps
    // trying, without acks, and the lease timer demotes the target.
    let w = World::start(&["mon1"], &["mon1", "mon2"]);
    let first = w.serving().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.script().refuse.insert("mon1".into(), None);
    w.close(None);
    let demoted = demoted_when_the_lease_runs_out(&w, first, Duration::ZERO).await;
    assert!(
        w.dials().len() > 2,
        "the session kept trying: {:?}",
        w.dials()
    );
    assert_eq!(w.hellos().len(), 1);
    tokio::time::sleep(LEASE).await;
    assert_eq!(w.target.serving_after(demoted), Vec::<Instant>::new());
}
