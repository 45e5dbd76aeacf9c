//! One monitor: the store, Raft, the gRPC services, the HTTP listener and the leader's
//! loops, started in order and stopped in reverse order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gwmon_proto::v1::admin_service_server::AdminServiceServer;
use gwmon_proto::v1::gateway_service_server::GatewayServiceServer;
use gwmon_proto::v1::replica_service_server::ReplicaServiceServer;
use openraft::error::{InitializeError, RaftError};
use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use gwmon_proto::tls::Tls;

use crate::admin::AdminGrpc;
use crate::auth::AuthorizeLayer;
use crate::clock::{Clock, SystemClock};
use crate::config::{Bootstrap, ConfigError, MonitorConfig};
use crate::connections::ConnectionLimit;
use crate::core::Core;
use crate::error::MonitorError;
use crate::events::EventLog;
use crate::fence::runner::FenceRunner;
use crate::fence::Fencer;
use crate::liveness::Liveness;
use crate::raft::contact::QuorumContact;
use crate::raft::network::{Connector, Network, TcpConnector};
use crate::raft::state_machine::AppliedEvents;
use crate::raft::{self, NodeId, Raft};
use crate::replica_service::ReplicaGrpc;
use crate::session::GatewayGrpc;
use crate::store::{self, Store, StoreError, StoreKind};

pub use crate::raft::network::MAX_MESSAGE_BYTES;
pub use gwmon_proto::MAX_CLIENT_MESSAGE_BYTES;
/// Snapshots travel in chunks of this size, so a large map never meets a message limit.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// One accepted connection of a custom transport: what tonic's server needs of it.
pub trait Connection:
    tokio::io::AsyncRead
    + tokio::io::AsyncWrite
    + tonic::transport::server::Connected<ConnectInfo: Clone + Send + Sync + 'static>
    + Unpin
    + Send
    + 'static
{
}

impl<T> Connection for T where
    T: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected<ConnectInfo: Clone + Send + Sync + 'static>
        + Unpin
        + Send
        + 'static
{
}

/// What a test or an embedding program can swap: the network, the clock, the fencer
/// (`None`: the one the configuration names), the feature level the monitor says it
/// supports (this build's, [`crate::map::features::SUPPORTED`]; lower only to stand for an
/// older release in a test of a rolling upgrade), and the runtime Raft runs on.
#[derive(Clone)]
pub struct Plumbing {
    pub connector: Arc<dyn Connector>,
    pub clock: Arc<dyn Clock>,
    pub fencer: Option<Arc<dyn Fencer>>,
    pub features: u32,
    /// Where Raft's tasks (openraft's core, replication and state machine, the proposer,
    /// the leadership watch) and the peer port's server run. `None`: the caller's runtime,
    /// as a test on paused or simulated time needs. The daemon gives Raft a runtime of its
    /// own ([`RaftRuntime`]): on the gateways' runtime, thousands of ready session tasks
    /// queued ahead of each Raft step, and at 20,000 gateways a commit took seconds.
    pub raft_runtime: Option<tokio::runtime::Handle>,
}

impl Default for Plumbing {
    fn default() -> Self {
        Self::tcp(None)
    }
}

impl Plumbing {
    /// TCP to the other monitors, with mutual TLS when `tls` is given (it must be when the
    /// monitors' listeners have TLS), the system clock and the configured fencer.
    pub fn tcp(tls: Option<Tls>) -> Self {
        Plumbing {
            connector: Arc::new(TcpConnector::default().with_tls(tls)),
            clock: Arc::new(SystemClock),
            fencer: None,
            features: crate::map::features::SUPPORTED,
            raft_runtime: None,
        }
    }
}

/// A runtime of its own for Raft, on two threads (`gwmon-raft`; two, so building a
/// snapshot does not hold up heartbeats): gateway sessions, however many and however busy,
/// then share the CPU with consensus as threads of their own, instead of queueing ahead of
/// every step of a commit. Shut down without waiting when dropped, so it may be dropped in
/// async code once Raft has stopped.
pub struct RaftRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl RaftRuntime {
    pub fn start() -> Result<RaftRuntime, MonitorError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gwmon-raft")
            .enable_all()
            .build()
            .map_err(|e| MonitorError::Raft(format!("cannot start Raft's runtime: {e}")))?;
        Ok(RaftRuntime {
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `f` with `runtime` (if given) as the current one: what `f` spawns runs there.
fn entered<T>(runtime: Option<&tokio::runtime::Handle>, f: impl FnOnce() -> T) -> T {
    let _entered = runtime.map(tokio::runtime::Handle::enter);
    f()
}

/// The fencer the plumbing injects, else the one the configuration names.
fn choose_fencer(
    config: &MonitorConfig,
    plumbing: &Plumbing,
) -> Result<Arc<dyn Fencer>, MonitorError> {
    match plumbing.fencer.clone() {
        Some(f) => Ok(f),
        None => config
            .chosen_fencer()?
            .build()
            .map_err(|e| MonitorError::Config(crate::config::ConfigError::Fencer(e.to_string()))),
    }
}

/// How a monitor is served besides its client transport: the HTTP listener, if any, the
/// TLS of the gRPC listeners, if any, and Raft's own listener.
struct Serving {
    http: Option<TcpListener>,
    tls: Option<Tls>,
    /// A TCP listener's bound on connections; with it come HTTP/2 keepalives and stream
    /// and header limits. `None` for a custom transport (a simulation's network, whose
    /// runs must not change with timers of the real one).
    connections: Option<ConnectionLimit>,
    /// Raft's listener (the peer port), started once Raft exists. `None`: Raft is served
    /// with the client services, as on a custom transport, which carries one listener.
    peer: Option<ServePeers>,
}

/// Starts the peer port's server for a Raft, answering that it supports a feature level.
type ServePeers =
    Box<dyn FnOnce(Raft, u32, CancellationToken) -> JoinHandle<Result<(), MonitorError>> + Send>;

/// The sockets a monitor serves on, bound by the caller (tests bind port 0).
pub struct Listeners {
    /// Clients: gateways, agents, `nvme-gw`.
    pub grpc: TcpListener,
    /// Raft, for the other monitors only (the peer port).
    pub peer: TcpListener,
    /// `/metrics`, `/health/*` and `/status`, if they are served.
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Bind what `config` names: `listen`, the peer listen address and `http_listen`.
    pub async fn bind(config: &MonitorConfig) -> Result<Listeners, MonitorError> {
        async fn bind(addr: SocketAddr) -> Result<TcpListener, MonitorError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| MonitorError::Listen {
                    addr: addr.to_string(),
                    source,
                })
        }
        let grpc = bind(config.listen).await?;
        let peer = bind(config.peer_listen()?).await?;
        let http = match config.http_listen {
            None => None,
            Some(addr) => Some(bind(addr).await?),
        };
        Ok(Listeners { grpc, peer, http })
    }

    /// Client and peer listeners on free loopback ports, with an HTTP one if `http`.
    pub async fn loopback(http: bool) -> std::io::Result<Listeners> {
        let any = || TcpListener::bind("127.0.0.1:0");
        Ok(Listeners {
            grpc: any().await?,
            peer: any().await?,
            http: if http { Some(any().await?) } else { None },
        })
    }

    /// The advertised client and peer addresses these listeners give with `config`.
    pub fn addresses(&self, config: &MonitorConfig) -> Result<(String, String), MonitorError> {
        let local = |l: &TcpListener, what: &str| {
            l.local_addr().map_err(|source| MonitorError::Listen {
                addr: what.to_owned(),
                source,
            })
        };
        let addr = match &config.advertise {
            Some(a) => a.clone(),
            None => advertised(local(&self.grpc, "listen")?),
        };
        let peer = match &config.advertise_peer {
            Some(a) => a.clone(),
            None => advertised(local(&self.peer, "peer_listen")?),
        };
        Ok((addr, peer))
    }
}

/// Open connections the peer port serves at once: a few per other monitor, so this only
/// bounds what a flood from the network can hold.
pub const MAX_PEER_CONNECTIONS: u32 = 1024;

/// How long a stopping monitor waits for open gRPC streams to close before cutting them.
pub const SERVER_DRAIN: Duration = Duration::from_secs(3);

/// The longest wait between two attempts at a fence that keeps failing.
pub const FENCE_RETRY_MAX: Duration = Duration::from_secs(5);

/// A running monitor.
pub struct Monitor {
    pub id: NodeId,
    /// The address clients reach the monitor at (advertised to them in the membership).
    pub addr: String,
    /// The address the other monitors send Raft to (its peer port).
    pub peer_addr: String,
    pub core: Core,
    pub liveness: Arc<Liveness>,
    /// Where `/metrics`, `/health/*` and `/status` are served, if they are.
    pub http_addr: Option<SocketAddr>,
    /// The gRPC listener's connections, on a TCP listener.
    pub connections: Option<ConnectionLimit>,
    /// The gRPC listener's TLS material, if it serves TLS.
    tls: Option<Tls>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), MonitorError>>,
    peer_server: Option<JoinHandle<Result<(), MonitorError>>>,
    http: Option<JoinHandle<Result<(), MonitorError>>>,
    loops: Vec<JoinHandle<()>>,
    /// How long a stopping leader waits for another voter to be elected.
    hand_off_within: Duration,
}

impl Monitor {
    /// Open the store, start Raft, the client gRPC server on `listeners.grpc`, Raft's on
    /// `listeners.peer` and HTTP (`/metrics`, `/health/*`, `/status`) on `listeners.http` if
    /// given, bootstrap the cluster if this monitor should, and start the liveness loop.
    pub async fn start(
        config: MonitorConfig,
        listeners: Listeners,
        plumbing: Plumbing,
    ) -> Result<Monitor, MonitorError> {
        config.validate()?;
        // Chosen before anything is opened: a monitor that may not run without a fencer
        // stops here, not after it joined the cluster.
        let fencer = choose_fencer(&config, &plumbing)?;
        let (addr, peer_addr) = listeners.addresses(&config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::CreateDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = open_store(
            config.store,
            &config.data_dir.join("store"),
            config.cache_mb.saturating_mul(1024 * 1024),
        )
        .await?;
        let tls = config
            .tls
            .as_ref()
            .map(Tls::load)
            .transpose()
            .map_err(ConfigError::from)?;
        let Listeners { grpc, peer, http } = listeners;
        let connections = ConnectionLimit::new(config.max_connections);
        let incoming = connections.apply(tonic::transport::server::TcpIncoming::from(grpc));
        let peer_incoming = ConnectionLimit::new(MAX_PEER_CONNECTIONS)
            .apply(tonic::transport::server::TcpIncoming::from(peer));
        let node = raft::MonitorNode::new(addr, peer_addr);
        match tls.clone() {
            None => {
                let serving = Serving {
                    http,
                    tls,
                    connections: Some(connections),
                    peer: Some(Box::new(move |raft, supported, stop| {
                        serve_peers(peer_incoming, raft, supported, false, stop)
                    })),
                };
                Self::launch(config, node, incoming, serving, store, fencer, plumbing).await
            }
            Some(t) => {
                let incoming = crate::connections::tls_handshakes(incoming, t.clone());
                let peer_incoming = crate::connections::tls_handshakes(peer_incoming, t);
                let serving = Serving {
                    http,
                    tls,
                    connections: Some(connections),
                    peer: Some(Box::new(move |raft, supported, stop| {
                        serve_peers(peer_incoming, raft, supported, true, stop)
                    })),
                };
                Self::launch(config, node, incoming, serving, store, fencer, plumbing).await
            }
        }
    }

    /// Start a monitor on a transport and a store of the caller's: `incoming` yields the
    /// connections of the address `addr` peers and clients reach it at, where Raft is
    /// served with the client services (one listener; the membership names `addr` for
    /// both). A simulation runs real monitors this way, over its own network and a store
    /// that can lose what was not flushed. No HTTP listener.
    pub async fn start_custom<I, IO, IE>(
        config: MonitorConfig,
        addr: String,
        incoming: I,
        store: Arc<dyn Store>,
        plumbing: Plumbing,
    ) -> Result<Monitor, MonitorError>
    where
        I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: Connection,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        config.validate()?;
        if config.tls.is_some() {
            return Err(MonitorError::Config(ConfigError::Invalid {
                setting: "tls",
                message: "TLS is served on a TCP listener (Monitor::start); a custom transport carries none".to_owned(),
            }));
        }
        let fencer = choose_fencer(&config, &plumbing)?;
        let serving = Serving {
            http: None,
            tls: None,
            connections: None,
            peer: None,
        };
        let node = raft::MonitorNode::new(addr.clone(), addr);
        Self::launch(config, node, incoming, serving, store, fencer, plumbing).await
    }

    async fn launch<I, IO, IE>(
        config: MonitorConfig,
        node: raft::MonitorNode,
        incoming: I,
        serving: Serving,
        store: Arc<dyn Store>,
        fencer: Arc<dyn Fencer>,
        plumbing: Plumbing,
    ) -> Result<Monitor, MonitorError>
    where
        I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: Connection,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Serving {
            http,
            tls,
            connections,
            peer,
        } = serving;
        let addr = node.addr.clone();
        let RaftNode {
            raft,
            core,
            network,
            applied_events,
            watched_events,
        } = new_raft_node(&config, store.clone(), &plumbing).await?;
        let liveness = Arc::new(Liveness::new(
            core.clone(),
            Duration::from_millis(config.liveness_tick_ms),
        ));
        let shutdown = CancellationToken::new();

        // With a peer port, Raft is served there and nowhere else.
        let raft_here = peer.is_none().then(|| raft.clone());
        let server = {
            let builder = match connections {
                Some(_) => tcp_server(),
                None => tonic::transport::Server::builder(),
            };
            let services = ClientServices {
                core: core.clone(),
                liveness: liveness.clone(),
                fencer: fencer.name(),
                raft: raft_here,
                features: plumbing.features,
            };
            serve_clients(builder, tls.is_some(), services, incoming, shutdown.clone())
        };
        let peer_server = peer.map(|serve| {
            entered(plumbing.raft_runtime.as_ref(), || {
                serve(raft.clone(), plumbing.features, shutdown.clone())
            })
        });
        let (http_addr, http) = match http {
            None => (None, None),
            Some(l) => {
                let (bound, task) = serve_http(l, &config, &core, &store, &tls, &shutdown)?;
                (Some(bound), Some(task))
            }
        };

        bootstrap(&raft, config.node_id, &node, &config.bootstrap).await?;

        let loops = spawn_loops(
            Loops {
                core: core.clone(),
                liveness: liveness.clone(),
                network,
                fencer,
                features: plumbing.features,
                balance_moves: config.balance_moves,
                applied_events,
                watched_events,
            },
            &shutdown,
        );
        info!(id = config.node_id, %addr, data_dir = %config.data_dir.display(), "monitor started");
        Ok(Monitor {
            id: config.node_id,
            addr,
            peer_addr: node.peer_addr.clone(),
            core,
            liveness,
            http_addr,
            connections,
            tls,
            store,
            shutdown,
            server,
            peer_server,
            http,
            loops,
            hand_off_within: raft::handoff::successor_within(
                Duration::from_millis(config.election_timeout_max_ms),
                Duration::from_millis(config.heartbeat_ms),
            ),
        })
    }

    pub fn raft(&self) -> &Raft {
        self.core.raft()
    }

    /// Read the listener's TLS files again: connections accepted from now on get the new
    /// certificate and trust the new CA file; open ones keep what they were set up with. A
    /// file that cannot be used leaves the old material in place and is the error.
    /// `Ok(false)`: this monitor serves no TLS.
    pub fn reload_tls(&self) -> Result<bool, ConfigError> {
        match &self.tls {
            None => Ok(false),
            Some(tls) => tls.reload().map(|()| true).map_err(ConfigError::from),
        }
    }

    /// A token that stops this monitor when cancelled (then call [`Monitor::stopped`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stop in order: the leadership handed to another voter if this monitor leads, then
    /// loops and the server, then Raft, then flush the store last.
    pub async fn shutdown(self) -> Result<(), MonitorError> {
        raft::handoff::hand_off(self.core.raft(), self.id, self.hand_off_within).await;
        self.shutdown.cancel();
        self.stopped().await
    }

    /// Wait for a cancelled monitor to finish stopping.
    pub async fn stopped(self) -> Result<(), MonitorError> {
        for mut l in self.loops {
            // A loop waiting for a commit that cannot come (the last monitor of its cluster
            // stopping) must not hold the stop.
            match tokio::time::timeout(SERVER_DRAIN, &mut l).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "a monitor loop ended abnormally"),
                Err(_) => {
                    warn!("a monitor loop did not stop within {SERVER_DRAIN:?}: ending it");
                    l.abort();
                }
            }
        }
        // Graceful shutdown waits for open streams to close; a client that vanished without
        // closing its connection must not keep the monitor from stopping.
        let mut server = self.server;
        let served = match tokio::time::timeout(SERVER_DRAIN, &mut server).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(MonitorError::Serve(format!("server task: {e}"))),
            Err(_) => {
                warn!("connections still open after {SERVER_DRAIN:?}: closing them");
                server.abort();
                Ok(())
            }
        };
        if let Some(mut peers) = self.peer_server {
            match tokio::time::timeout(SERVER_DRAIN, &mut peers).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "peer listener ended abnormally"),
                Ok(Err(e)) => warn!(error = %e, "peer listener task ended abnormally"),
                Err(_) => peers.abort(),
            }
        }
        if let Some(mut http) = self.http {
            // Scrapes are short; a client holding a connection open must not hold the stop.
            match tokio::time::timeout(SERVER_DRAIN, &mut http).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "http listener ended abnormally"),
                Ok(Err(e)) => warn!(error = %e, "http task ended abnormally"),
                Err(_) => http.abort(),
            }
        }
        if let Err(e) = self.core.raft().shutdown().await {
            warn!(error = %e, "raft shut down abnormally");
        }
        self.store.flush().await?;
        info!(id = self.id, "monitor stopped");
        served
    }
}

/// Raft over the store, and the core the services share, with two subscriptions to what
/// the state machine applies (taken before Raft starts applying, so the counters and the
/// event log miss nothing this process applies, the log replayed after the snapshot
/// included).
struct RaftNode {
    raft: Raft,
    core: Core,
    network: Network,
    applied_events: broadcast::Receiver<AppliedEvents>,
    watched_events: broadcast::Receiver<AppliedEvents>,
}

async fn new_raft_node(
    config: &MonitorConfig,
    store: Arc<dyn Store>,
    plumbing: &Plumbing,
) -> Result<RaftNode, MonitorError> {
    let (log_store, state_machine, reader) = raft::state_machine::open_storage(store).await?;
    let applied_events = reader.events();
    let watched_events = reader.events();
    let event_log = EventLog::new(crate::events::DEFAULT_CAPACITY, reader.read(|m| m.epoch()));
    let contact = Arc::new(QuorumContact::default());
    let network = Network::new(plumbing.connector.clone()).with_contact(contact.clone());
    let start = Raft::new(
        config.node_id,
        Arc::new(raft_config(config)?),
        network.clone(),
        log_store,
        state_machine,
    );
    let started = match &plumbing.raft_runtime {
        Some(runtime) => runtime
            .spawn(start)
            .await
            .map_err(|e| MonitorError::Raft(format!("cannot start: {e}")))?,
        None => start.await,
    };
    let raft = started.map_err(|e| MonitorError::Raft(format!("cannot start: {e}")))?;
    let core = entered(plumbing.raft_runtime.as_ref(), || {
        Core::new(
            config.node_id,
            raft.clone(),
            reader,
            plumbing.clock.clone(),
            event_log,
            contact,
            Duration::from_millis(config.election_timeout_min_ms),
        )
    });
    Ok(RaftNode {
        raft,
        core,
        network,
        applied_events,
        watched_events,
    })
}

/// openraft's settings from the monitor's, checked by openraft and against the network's
/// timeouts.
fn raft_config(config: &MonitorConfig) -> Result<openraft::Config, MonitorError> {
    let raft_config = openraft::Config {
        cluster_name: "gwmon".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
        max_in_snapshot_log_to_keep: config.logs_kept,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: 10_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| MonitorError::Raft(format!("raft settings: {e}")))?;
    raft::network::check_raft_config(&raft_config)
        .map_err(|e| MonitorError::Raft(format!("raft settings: {e}")))?;
    Ok(raft_config)
}

/// What the client port serves: gateways' sessions, admin, replicas, and Raft when there is
/// no peer port.
struct ClientServices {
    core: Core,
    liveness: Arc<Liveness>,
    fencer: &'static str,
    raft: Option<Raft>,
    features: u32,
}

fn serve_clients<I, IO, IE>(
    builder: tonic::transport::Server,
    tls: bool,
    services: ClientServices,
    incoming: I,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), MonitorError>>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: Connection,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ClientServices {
        core,
        liveness,
        fencer,
        raft,
        features,
    } = services;
    let router = builder
        .layer(AuthorizeLayer { tls })
        .add_service(
            GatewayServiceServer::new(GatewayGrpc::new(core.clone(), liveness, shutdown.clone()))
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminServiceServer::new(AdminGrpc::new(core.clone(), fencer))
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ReplicaServiceServer::new(ReplicaGrpc::new(core))
                .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_optional_service(raft.map(|raft| raft::service::raft_service(raft, features)));
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(|e| MonitorError::Serve(e.to_string()))
    })
}

/// The HTTP listener (metrics, health, status), with TLS when the configuration asks.
fn serve_http(
    listener: TcpListener,
    config: &MonitorConfig,
    core: &Core,
    store: &Arc<dyn Store>,
    tls: &Option<Tls>,
    shutdown: &CancellationToken,
) -> Result<(SocketAddr, JoinHandle<Result<(), MonitorError>>), MonitorError> {
    let bound = listener
        .local_addr()
        .map_err(|source| MonitorError::Listen {
            addr: config
                .http_listen
                .map_or_else(|| "http".to_owned(), |a| a.to_string()),
            source,
        })?;
    let state = crate::http::HttpState::new(
        core.clone(),
        store.clone(),
        Duration::from_millis(config.election_timeout_max_ms),
    );
    let https = tls.clone().filter(|_| config.http_tls);
    let task = tokio::spawn(crate::http::serve(listener, state, https, shutdown.clone()));
    Ok((bound, task))
}

/// What the monitor's loops work with.
struct Loops {
    core: Core,
    liveness: Arc<Liveness>,
    network: Network,
    fencer: Arc<dyn Fencer>,
    features: u32,
    balance_moves: u32,
    applied_events: broadcast::Receiver<AppliedEvents>,
    watched_events: broadcast::Receiver<AppliedEvents>,
}

/// The loops that run on every monitor and act while it leads: liveness, feature levels,
/// balancing, fencing, the event counters and the event log.
fn spawn_loops(loops: Loops, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    let Loops {
        core,
        liveness,
        network,
        fencer,
        features,
        balance_moves,
        applied_events,
        watched_events,
    } = loops;
    let stop = || shutdown.clone();
    let runner = FenceRunner::new(core.clone(), fencer, FENCE_RETRY_MAX);
    let telemetry = core.telemetry().clone();
    let raft_metrics = core.raft().metrics();
    let events_core = core.clone();
    vec![
        tokio::spawn({
            let stop = stop();
            async move { liveness.run(stop).await }
        }),
        tokio::spawn(raft::features::raise(
            core.clone(),
            network,
            features,
            stop(),
        )),
        tokio::spawn(crate::balance::run(core, balance_moves, stop())),
        tokio::spawn({
            let stop = stop();
            async move { runner.run(stop).await }
        }),
        tokio::spawn({
            let stop = stop();
            async move {
                telemetry
                    .count_events(applied_events, raft_metrics, stop)
                    .await;
            }
        }),
        tokio::spawn({
            let stop = stop();
            async move {
                let core = events_core;
                core.events()
                    .feed(
                        watched_events,
                        core.raft().metrics(),
                        || core.now(),
                        || core.reader().read(|m| m.epoch()),
                        stop,
                    )
                    .await;
            }
        }),
    ]
}

/// Raft's own server on the peer port: the Raft service alone, behind the same
/// authorization (monitors only, with TLS), with keepalives that drop a vanished peer.
fn serve_peers<I, IO, IE>(
    incoming: I,
    raft: Raft,
    supported: u32,
    tls: bool,
    stop: CancellationToken,
) -> JoinHandle<Result<(), MonitorError>>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: Connection,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let router = tcp_server()
        .layer(AuthorizeLayer { tls })
        .add_service(raft::service::raft_service(raft, supported));
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
            .map_err(|e| MonitorError::Serve(format!("peer port: {e}")))
    })
}

/// A gRPC server for a TCP listener: HTTP/2 keepalives that drop a vanished client, and the
/// stream and header limits of [`crate::connections`].
fn tcp_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(crate::connections::HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(crate::connections::HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(crate::connections::MAX_STREAMS_PER_CONNECTION)
        .http2_max_header_list_size(crate::connections::MAX_HEADER_LIST_BYTES)
}

/// Open the store (see [`store::open`]), waiting a little if its lock is still held:
/// sled's flusher thread lets go of the directory a moment after a monitor in this process
/// stopped. Another live process holding it is still an error, after the wait.
pub(crate) async fn open_store(
    kind: Option<StoreKind>,
    path: &std::path::Path,
    cache: u64,
) -> Result<Arc<dyn Store>, StoreError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store::open(kind, path, cache) {
            Err(StoreError::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// The address to advertise for a bound socket: a wildcard bind is not dialable, so it
/// advertises loopback (set `advertise` for anything else).
fn advertised(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        format!("127.0.0.1:{}", bound.port())
    } else {
        bound.to_string()
    }
}

/// Initialize the cluster if this monitor is the one to, once: openraft refuses a second
/// initialization of a non-empty store, which is what makes restarts harmless.
async fn bootstrap(
    raft: &Raft,
    id: NodeId,
    node: &raft::MonitorNode,
    how: &Bootstrap,
) -> Result<(), MonitorError> {
    let members: BTreeMap<NodeId, raft::MonitorNode> = match how {
        Bootstrap::Join => return Ok(()),
        Bootstrap::Single => [(id, node.clone())].into(),
        Bootstrap::Members(m) => {
            if m.keys().next() != Some(&id) {
                return Ok(());
            }
            m.clone()
        }
    };
    match raft.initialize(members).await {
        Ok(()) => {
            info!("cluster initialized");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(MonitorError::Raft(format!(
            "cannot initialize the cluster: {e}"
        ))),
    }
}

/// Run a monitor until `shutdown` resolves: the daemon's whole life.
pub async fn run(
    config: MonitorConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MonitorError> {
    let listeners = Listeners::bind(&config).await?;
    // Loaded here for the connection to the other monitors; the listener loads its own.
    let tls = config
        .tls
        .as_ref()
        .map(Tls::load)
        .transpose()
        .map_err(ConfigError::from)?;
    let raft_runtime = RaftRuntime::start()?;
    let plumbing = Plumbing {
        raft_runtime: raft_runtime.handle(),
        ..Plumbing::tcp(tls.clone())
    };
    let monitor = Monitor::start(config, listeners, plumbing).await?;
    println!(
        "gwmon: monitor {} serving gRPC on {}, Raft on {}",
        monitor.id, monitor.addr, monitor.peer_addr
    );
    if let Some(http) = monitor.http_addr {
        println!("gwmon: monitor {} serving HTTP on {http}", monitor.id);
    }
    let stop = monitor.shutdown_token();
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|e| warn!(error = %e, "no SIGHUP handler: TLS files are not reloaded without a restart"))
        .ok();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                info!("shutting down");
                break;
            }
            () = stop.cancelled() => break,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => reload_tls(&monitor, tls.as_ref()),
        }
    }
    monitor.shutdown().await
}

/// SIGHUP: the listener and the connections to the other monitors take the TLS files
/// anew. A file that cannot be used is logged and the old material kept: a rotation half
/// done must not take a serving monitor down.
fn reload_tls(monitor: &Monitor, dialing: Option<&Tls>) {
    let listener = monitor.reload_tls();
    let dialing = dialing
        .map(Tls::reload)
        .transpose()
        .map_err(ConfigError::from);
    match (listener, dialing) {
        (Ok(false), _) => info!("SIGHUP: no TLS configured, nothing to reload"),
        (Ok(true), Ok(_)) => info!("SIGHUP: TLS certificate, key and CA reloaded"),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "SIGHUP: TLS files not reloaded; the previous ones stay in use")
        }
    }
}
