//! The client half of the Raft transport: openraft's [`RaftNetworkFactory`] and
//! [`RaftNetwork`] over the tonic `RaftService` (see `proto/gwmon/v1/raft.proto`).
//!
//! Each RPC carries one openraft value encoded with [`crate::codec`] (a version byte, then
//! bincode), so monitors of different releases refuse each other's payloads instead of
//! misreading them. Replies carry the whole `Result` the peer's `Raft` returned, so a remote
//! Raft error comes back as [`RemoteError`] rather than as an opaque transport failure.
//!
//! Connections come from an injected [`Connector`], so tests (and a later network
//! simulation) can refuse addresses to cut a partition, or swap TCP for something else.
//!
//! # How failures are reported to openraft
//!
//! openraft backs off after [`Unreachable`] and retries at once after [`NetworkError`]
//! (and after its own timeouts). So:
//!
//! | what happened | reported as | cached connection |
//! |---|---|---|
//! | the connector refused, connecting failed or took longer than the RPC's soft TTL | `Unreachable` | none |
//! | a connection that had worked broke (`Unavailable`, `Unknown`, `Cancelled`, …) | `NetworkError`: reconnecting at once is the cure | dropped |
//! | the same, on a connection made for this very call | `Unreachable` | dropped |
//! | no reply within the RPC's hard TTL | `NetworkError` | dropped (it may be wedged) |
//! | the peer refused the payload (`InvalidArgument`, `Unimplemented`, …), or its reply cannot be decoded | `Unreachable`: a version skew does not heal by hammering | kept |
//! | an AppendEntries request over the message limit | `PayloadTooLarge` with an entries hint, so openraft sends fewer entries | kept |
//! | a single entry, a vote or a snapshot chunk over the limit | `Unreachable` | kept |
//! | the peer's `Raft` returned an error | `RemoteError` | kept |
//!
//! A connection is *taken out* of the client for the duration of a call and put back only
//! when the call ends in a way that proves the connection healthy. openraft drops an RPC
//! future when its own timeout fires; taking the connection out means such a cancelled call
//! also leaves no connection behind. That is what recovers from a wedged HTTP/2 connection
//! after a partition heals (in-flight segments lost, the old connection never answers
//! again): the next call dials afresh instead of queueing behind the dead one.

// openraft's error types (RPCError, RaftError) are large; they are the trait's signature.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gwmon_proto::tls::Tls;
use gwmon_proto::v1::raft_service_client::RaftServiceClient;
use gwmon_proto::v1::RaftRequest;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RaftNetwork, RaftNetworkFactory};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::contact::QuorumContact;
use super::{MonitorNode, NodeId, TypeConfig};
use crate::codec::{self, CodecError, Versioned};
use tokio::time::Instant;

/// The largest gRPC message a monitor sends or accepts on the Raft service, both ways.
///
/// tonic's default decoding limit is 4 MiB, which a large AppendEntries batch or a snapshot
/// chunk would hit at an arbitrary moment; setting it explicitly on both ends makes the
/// limit a documented number. openraft's `snapshot_max_chunk_size` **must** stay well below
/// it (see [`check_raft_config`]); AppendEntries batches over it are split automatically.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Room for the protobuf framing around the payload (field tag and length varint).
const FRAME_OVERHEAD: usize = 16;

// ---------------------------------------------------------------------------------------
// Wire payloads
// ---------------------------------------------------------------------------------------

/// What the peer's `Raft::append_entries` returned, sent back whole.
pub type AppendEntriesReply = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
/// What the peer's `Raft::vote` returned, sent back whole.
pub type VoteReply = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
/// What the peer's `Raft::install_snapshot` returned, sent back whole.
pub type InstallSnapshotReply =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

// Version 2 of the two requests that can carry a membership: members with a peer port
// ([`MonitorNode`]). A monitor of an older release answers them "unknown format version",
// so monitors are upgraded together (see the README's upgrade note).
impl Versioned for AppendEntriesRequest<TypeConfig> {
    const WHAT: &'static str = "raft append-entries request";
    const VERSION: u8 = 2;
}

impl Versioned for VoteRequest<NodeId> {
    const WHAT: &'static str = "raft vote request";
    const VERSION: u8 = 1;
}

impl Versioned for InstallSnapshotRequest<TypeConfig> {
    const WHAT: &'static str = "raft install-snapshot request";
    const VERSION: u8 = 2;
}

impl Versioned for AppendEntriesReply {
    const WHAT: &'static str = "raft append-entries reply";
    const VERSION: u8 = 1;
}

impl Versioned for VoteReply {
    const WHAT: &'static str = "raft vote reply";
    const VERSION: u8 = 1;
}

impl Versioned for InstallSnapshotReply {
    const WHAT: &'static str = "raft install-snapshot reply";
    const VERSION: u8 = 1;
}

/// Refuse an openraft configuration whose snapshot chunks could not cross the wire.
///
/// openraft sends a snapshot in chunks of `snapshot_max_chunk_size` bytes; a chunk plus its
/// metadata must fit in [`MAX_MESSAGE_BYTES`]. A quarter of the limit leaves ample room for
/// the snapshot metadata (membership) that every chunk repeats.
pub fn check_raft_config(config: &openraft::Config) -> Result<(), String> {
    let limit = (MAX_MESSAGE_BYTES / 4) as u64;
    if config.snapshot_max_chunk_size == 0 || config.snapshot_max_chunk_size > limit {
        return Err(format!(
            "snapshot_max_chunk_size is {} bytes; it must be between 1 and {limit} \
             (a quarter of the {MAX_MESSAGE_BYTES}-byte gRPC message limit)",
            config.snapshot_max_chunk_size
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Connectors
// ---------------------------------------------------------------------------------------

/// A boxed connect future, so [`Connector`] stays object safe (`Arc<dyn Connector>`).
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Channel, ConnectError>> + Send + 'a>>;

/// Makes connections to peers. Injected so tests can refuse addresses (a partition) and a
/// simulation can replace TCP; the network never dials by itself.
pub trait Connector: Send + Sync + 'static {
    /// Connect to `addr` (a peer's `host:port`: its [`MonitorNode::peer_addr`]). The returned
    /// channel should already be connected: a failure here is reported to openraft as
    /// "unreachable", which makes it back off.
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a>;
}

/// Why a [`Connector`] gave no channel.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid peer address {addr:?}: {source}")]
    InvalidAddress {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot set up TLS to {addr}: {reason}")]
    Tls { addr: String, reason: String },
    /// The connector decided not to connect (tests use this to cut a partition).
    #[error("connection to {addr} refused: {reason}")]
    Refused { addr: String, reason: String },
    #[error("cannot connect to {addr}: {source}")]
    Transport {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Settings of [`TcpConnector`]. The defaults suit monitors on one LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnectorConfig {
    /// Longest TCP connect. Each RPC bounds its connect further by its own soft TTL, so this
    /// only matters for RPCs with long TTLs (snapshot chunks).
    pub connect_timeout: Duration,
    /// HTTP/2 PING period, also on idle connections: a peer lost behind a partition is
    /// noticed even when no RPC is in flight.
    pub http2_keepalive_interval: Duration,
    /// A connection whose PING is not acknowledged within this is closed.
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive, the last resort below HTTP/2.
    pub tcp_keepalive: Option<Duration>,
}

impl Default for TcpConnectorConfig {
    fn default() -> Self {
        TcpConnectorConfig {
            connect_timeout: Duration::from_secs(1),
            http2_keepalive_interval: Duration::from_secs(1),
            http2_keepalive_timeout: Duration::from_secs(3),
            tcp_keepalive: Some(Duration::from_secs(10)),
        }
    }
}

/// TCP to `host:port`: plain (h2c), or mutual TLS with this monitor's certificate.
#[derive(Debug, Clone, Default)]
pub struct TcpConnector {
    config: TcpConnectorConfig,
    tls: Option<Tls>,
}

impl TcpConnector {
    pub fn new(config: TcpConnectorConfig) -> Self {
        TcpConnector { config, tls: None }
    }

    /// Dial with mutual TLS when `tls` is given.
    pub fn with_tls(self, tls: Option<Tls>) -> Self {
        TcpConnector { tls, ..self }
    }

    /// The endpoint for `addr`, with this connector's timeouts and keepalives. `addr` may
    /// carry a scheme (`http://host:port`); without one, `http://` is assumed, `https://`
    /// with TLS.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, ConnectError> {
        let endpoint = match &self.tls {
            Some(tls) => tls.endpoint(addr).map_err(|e| ConnectError::Tls {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?,
            None => Endpoint::from_shared(gwmon_proto::addr::uri(addr)).map_err(|source| {
                ConnectError::InvalidAddress {
                    addr: addr.to_string(),
                    source,
                }
            })?,
        };
        let c = &self.config;
        Ok(endpoint
            .connect_timeout(c.connect_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(c.tcp_keepalive)
            .http2_keep_alive_interval(c.http2_keepalive_interval)
            .keep_alive_timeout(c.http2_keepalive_timeout)
            .keep_alive_while_idle(true))
    }
}

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            self.endpoint(addr)?
                .connect()
                .await
                .map_err(|source| ConnectError::Transport {
                    addr: addr.to_string(),
                    source,
                })
        })
    }
}

// ---------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------

/// openraft's network factory: one [`PeerClient`] per replication stream or vote round.
/// Clients connect lazily, on their first RPC.
#[derive(Clone)]
pub struct Network {
    connector: Arc<dyn Connector>,
    max_message_bytes: usize,
    contact: Arc<QuorumContact>,
    health: Arc<PeerHealth>,
}

/// Whether each peer answered its last RPC, shared by every client of this monitor, so
/// that losing a peer and regaining it are logged once each, not at every retry and every
/// vote round (openraft's own per-retry replication logs are off in the default filter:
/// a learner that never came up logged its address four times a second).
#[derive(Debug, Default)]
pub struct PeerHealth(Mutex<BTreeMap<NodeId, bool>>);

impl PeerHealth {
    /// Record one call's outcome; returns whether that changed the peer's state (and was
    /// logged).
    fn record(&self, target: NodeId, addr: &str, failure: Option<&TransportError>) -> bool {
        let was = match self.0.lock() {
            Ok(mut peers) => peers.insert(target, failure.is_none()),
            Err(_) => return false,
        };
        match (was, failure) {
            (Some(false), None) => {
                tracing::info!(monitor = target, %addr, "monitor answers again");
                true
            }
            (None | Some(true), Some(e)) => {
                tracing::warn!(
                    monitor = target, %addr, error = %e,
                    "cannot reach monitor; retrying (logged again when it answers)"
                );
                true
            }
            _ => false,
        }
    }
}

impl Network {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Network {
            connector,
            max_message_bytes: MAX_MESSAGE_BYTES,
            contact: Arc::default(),
            health: Arc::default(),
        }
    }

    /// Record every acknowledgement of this monitor's leadership into `contact` (see
    /// [`QuorumContact`]); by default they go to a record nobody reads.
    pub fn with_contact(mut self, contact: Arc<QuorumContact>) -> Self {
        self.contact = contact;
        self
    }

    /// Use a different message limit (tests use a small one to exercise the splitting).
    /// Peers must accept at least this much.
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// A client for `target` at `node.peer_addr`, without connecting yet.
    pub fn client(&self, target: NodeId, node: &MonitorNode) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            connector: self.connector.clone(),
            max_message_bytes: self.max_message_bytes,
            client: None,
            contact: self.contact.clone(),
            health: self.health.clone(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MonitorNode) -> PeerClient {
        self.client(target, node)
    }
}

/// The Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    node: MonitorNode,
    connector: Arc<dyn Connector>,
    max_message_bytes: usize,
    /// The connection, when the last call proved it healthy. See the module docs.
    client: Option<RaftServiceClient<Channel>>,
    /// Where an answer that acknowledges this monitor as leader is recorded.
    contact: Arc<QuorumContact>,
    /// Which peers answer, for logging their loss and return once.
    health: Arc<PeerHealth>,
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rpc::AppendEntries => "AppendEntries",
            Rpc::Vote => "Vote",
            Rpc::InstallSnapshot => "InstallSnapshot",
        })
    }
}

/// What went wrong on the way, carried inside openraft's `Unreachable`/`NetworkError`.
#[derive(Debug, thiserror::Error)]
enum TransportError {
    #[error("cannot connect to monitor {target}: {source}")]
    Connect {
        target: NodeId,
        #[source]
        source: ConnectError,
    },
    #[error("connecting to monitor {target} at {addr} took longer than {after:?}")]
    ConnectTimeout {
        target: NodeId,
        addr: String,
        after: Duration,
    },
    #[error("{rpc} to monitor {target} at {addr}: no reply within {after:?}")]
    Timeout {
        rpc: Rpc,
        target: NodeId,
        addr: String,
        after: Duration,
    },
    #[error("{rpc} to monitor {target} at {addr} failed: {code:?}: {message}")]
    Status {
        rpc: Rpc,
        target: NodeId,
        addr: String,
        code: Code,
        message: String,
    },
    #[error("cannot encode {rpc} for monitor {target}: {source}")]
    Encode {
        rpc: Rpc,
        target: NodeId,
        #[source]
        source: CodecError,
    },
    #[error("{rpc} reply from monitor {target} at {addr} is unreadable: {source}")]
    BadReply {
        rpc: Rpc,
        target: NodeId,
        addr: String,
        #[source]
        source: CodecError,
    },
    #[error(
        "{rpc} to monitor {target} is {size} bytes, over the {limit}-byte message limit \
         (lower openraft's max_payload_entries or snapshot_max_chunk_size)"
    )]
    TooLarge {
        rpc: Rpc,
        target: NodeId,
        size: usize,
        limit: usize,
    },
}

/// A failed call, before it becomes the `RPCError` of a particular method.
#[derive(Debug)]
enum Failure {
    /// Back off before trying again.
    Unreachable(TransportError),
    /// Try again at once (with a fresh connection).
    Retry(TransportError),
    /// The peer refused the request with this code; retrying the same request won't help.
    Refused(Code, TransportError),
    /// The request (`size` bytes encoded) is over the message limit.
    TooLarge { size: usize, err: TransportError },
}

impl Failure {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, MonitorNode, E> {
        match self {
            Failure::Unreachable(e) | Failure::Refused(_, e) | Failure::TooLarge { err: e, .. } => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            Failure::Retry(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl PeerClient {
    /// Connect, bounded by `budget`, so a black-holed peer is reported as unreachable
    /// (openraft backs off) before openraft's own timeout silently cancels the call.
    async fn connect(&self, budget: Duration) -> Result<RaftServiceClient<Channel>, Failure> {
        let addr = &self.node.peer_addr;
        match tokio::time::timeout(budget, self.connector.connect(addr)).await {
            Err(_elapsed) => Err(Failure::Unreachable(TransportError::ConnectTimeout {
                target: self.target,
                addr: addr.clone(),
                after: budget,
            })),
            Ok(Err(source)) => Err(Failure::Unreachable(TransportError::Connect {
                target: self.target,
                source,
            })),
            Ok(Ok(channel)) => Ok(RaftServiceClient::new(channel)
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes)),
        }
    }

    fn encode<T: Versioned>(&self, rpc: Rpc, value: &T) -> Result<Vec<u8>, Failure> {
        let payload = codec::encode(value).map_err(|source| {
            Failure::Unreachable(TransportError::Encode {
                rpc,
                target: self.target,
                source,
            })
        })?;
        if payload.len().saturating_add(FRAME_OVERHEAD) > self.max_message_bytes {
            return Err(Failure::TooLarge {
                size: payload.len(),
                err: TransportError::TooLarge {
                    rpc,
                    target: self.target,
                    size: payload.len(),
                    limit: self.max_message_bytes,
                },
            });
        }
        Ok(payload)
    }

    /// One unary call within `option.hard_ttl()`, returning the reply payload; whether the
    /// peer could be reached goes to [`PeerHealth`].
    async fn call(
        &mut self,
        rpc: Rpc,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Vec<u8>, Failure> {
        let result = self.call_once(rpc, payload, option).await;
        let unreached = match &result {
            Err(Failure::Unreachable(e) | Failure::Retry(e)) => Some(e),
            // It answered, if only to refuse.
            Ok(_) | Err(Failure::Refused(..) | Failure::TooLarge { .. }) => None,
        };
        self.health
            .record(self.target, &self.node.peer_addr, unreached);
        result
    }

    async fn call_once(
        &mut self,
        rpc: Rpc,
        payload: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Vec<u8>, Failure> {
        let deadline = tokio::time::Instant::now() + option.hard_ttl();
        let (mut client, fresh) = match self.client.take() {
            Some(client) => (client, false),
            None => (self.connect(option.soft_ttl()).await?, true),
        };
        let request = tonic::Request::new(RaftRequest { payload });
        let outcome = tokio::time::timeout_at(deadline, async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        })
        .await;
        let addr = || self.node.peer_addr.clone();
        match outcome {
            Err(_elapsed) => {
                tracing::debug!(target_id = self.target, %rpc, "raft rpc timed out; dropping the connection");
                Err(Failure::Retry(TransportError::Timeout {
                    rpc,
                    target: self.target,
                    addr: addr(),
                    after: option.hard_ttl(),
                }))
            }
            Ok(Ok(reply)) => {
                self.client = Some(client);
                Ok(reply.into_inner().payload)
            }
            Ok(Err(status)) => {
                let code = status.code();
                let err = TransportError::Status {
                    rpc,
                    target: self.target,
                    addr: addr(),
                    code,
                    message: status.message().to_string(),
                };
                match code {
                    // The peer answered: the connection works, the request does not.
                    Code::InvalidArgument
                    | Code::ResourceExhausted
                    | Code::Unimplemented
                    | Code::FailedPrecondition
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::NotFound
                    | Code::OutOfRange => {
                        self.client = Some(client);
                        Err(Failure::Refused(code, err))
                    }
                    _ => {
                        tracing::debug!(target_id = self.target, %rpc, error = %err, "raft rpc failed; dropping the connection");
                        if fresh {
                            Err(Failure::Unreachable(err))
                        } else {
                            Err(Failure::Retry(err))
                        }
                    }
                }
            }
        }
    }

    /// Decode a reply payload; a `RaftError` the peer returned becomes a [`RemoteError`].
    fn reply<T, E>(
        &self,
        rpc: Rpc,
        payload: &[u8],
    ) -> Result<T, RPCError<NodeId, MonitorNode, RaftError<NodeId, E>>>
    where
        Result<T, RaftError<NodeId, E>>: Versioned,
        E: std::error::Error,
    {
        let reply: Result<T, RaftError<NodeId, E>> = codec::decode(payload).map_err(|source| {
            Failure::Unreachable(TransportError::BadReply {
                rpc,
                target: self.target,
                addr: self.node.peer_addr.clone(),
                source,
            })
            .into_rpc()
        })?;
        reply.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl PeerClient {
    /// The feature level the peer supports, asked within `budget`. A monitor of a release
    /// before the question answers `UNIMPLEMENTED`: level 0. Any other failure is an
    /// error: the level is unknown, and the caller must not assume it.
    pub async fn features(&self, budget: Duration) -> Result<u32, String> {
        let ask = async {
            let mut client = self.connect(budget).await.map_err(|f| match f {
                Failure::Unreachable(e)
                | Failure::Retry(e)
                | Failure::Refused(_, e)
                | Failure::TooLarge { err: e, .. } => e.to_string(),
            })?;
            match client.features(gwmon_proto::v1::FeaturesRequest {}).await {
                Ok(reply) => Ok(reply.into_inner().supported),
                Err(status) if status.code() == Code::Unimplemented => Ok(0),
                Err(status) => Err(format!(
                    "monitor {} at {}: {}",
                    self.target,
                    self.node.peer_addr,
                    status.message()
                )),
            }
        };
        tokio::time::timeout(budget, ask).await.unwrap_or_else(|_| {
            Err(format!(
                "monitor {} at {}: no answer within {budget:?}",
                self.target, self.node.peer_addr
            ))
        })
    }

    /// An AppendEntries failure as openraft wants it. A batch over the limit (ours, or the
    /// peer's: `ResourceExhausted`) is split by openraft when told how many entries fit. A
    /// single entry cannot be split, and a hint would make openraft retry it at once,
    /// forever, so that is reported as unreachable (openraft backs off and logs it).
    fn append_failure(
        &self,
        failure: Failure,
        entries: usize,
    ) -> RPCError<NodeId, MonitorNode, RaftError<NodeId>> {
        if entries < 2 {
            return failure.into_rpc();
        }
        let limit = self.max_message_bytes.saturating_sub(FRAME_OVERHEAD);
        let hint = match &failure {
            Failure::TooLarge { size, .. } => entries_hint(entries, *size, limit),
            // The peer's limit is lower than ours and unknown: halve.
            Failure::Refused(Code::ResourceExhausted, _) => (entries / 2) as u64,
            _ => return failure.into_rpc(),
        };
        RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint))
    }
}

/// How many of `entries` entries to send next time, when `size` bytes were too many for
/// `limit`: proportional, aiming at 90% of the limit because entries differ in size and the
/// request has a fixed part. If the smaller batch is still too large, the next refusal
/// gives a smaller hint again: the hint is always below `entries`, so this converges.
fn entries_hint(entries: usize, size: usize, limit: usize) -> u64 {
    let target = limit as u128 * 9 / 10;
    let fitting = (entries as u128 * target / size.max(1) as u128) as usize;
    fitting.clamp(1, entries.saturating_sub(1).max(1)) as u64
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MonitorNode, RaftError<NodeId>>>
    {
        let entries = rpc.entries.len();
        let payload = self
            .encode(Rpc::AppendEntries, &rpc)
            .map_err(|f| self.append_failure(f, entries))?;
        // Taken before the request leaves: the peer reset its election timer no earlier.
        let sent = Instant::now();
        let reply = self
            .call(Rpc::AppendEntries, payload, &option)
            .await
            .map_err(|f| self.append_failure(f, entries))?;
        let resp = self.reply(Rpc::AppendEntries, &reply)?;
        // A conflict still means the peer took this leader's vote; only a higher vote
        // means it did not.
        if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
            self.contact
                .acknowledged(rpc.vote.leader_id().term, self.target, sent);
        }
        Ok(resp)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, MonitorNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let payload = self
            .encode(Rpc::InstallSnapshot, &rpc)
            .map_err(Failure::into_rpc)?;
        let sent = Instant::now();
        let reply = self
            .call(Rpc::InstallSnapshot, payload, &option)
            .await
            .map_err(Failure::into_rpc)?;
        let resp: InstallSnapshotResponse<NodeId> = self.reply(Rpc::InstallSnapshot, &reply)?;
        if resp.vote == rpc.vote {
            self.contact
                .acknowledged(rpc.vote.leader_id().term, self.target, sent);
        }
        Ok(resp)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MonitorNode, RaftError<NodeId>>> {
        let payload = self.encode(Rpc::Vote, &rpc).map_err(Failure::into_rpc)?;
        let sent = Instant::now();
        let reply = self
            .call(Rpc::Vote, payload, &option)
            .await
            .map_err(Failure::into_rpc)?;
        let resp: VoteResponse<NodeId> = self.reply(Rpc::Vote, &reply)?;
        // A granted vote resets the voter's timer too: it counts from the election on.
        if resp.vote_granted {
            self.contact
                .acknowledged(rpc.vote.leader_id().term, self.target, sent);
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_lost_and_regained_is_logged_once_each_way() {
        let health = PeerHealth::default();
        let err = TransportError::Timeout {
            rpc: Rpc::Vote,
            target: 2,
            addr: "10.0.0.2:7402".into(),
            after: Duration::from_secs(1),
        };
        assert!(
            !health.record(2, "10.0.0.2:7402", None),
            "first answer: nothing to say"
        );
        assert!(health.record(2, "10.0.0.2:7402", Some(&err)), "lost");
        for _ in 0..10 {
            assert!(
                !health.record(2, "10.0.0.2:7402", Some(&err)),
                "retries are quiet"
            );
        }
        assert!(
            health.record(3, "10.0.0.3:7402", Some(&err)),
            "another peer is its own"
        );
        assert!(health.record(2, "10.0.0.2:7402", None), "back");
        assert!(!health.record(2, "10.0.0.2:7402", None));
    }

    #[test]
    fn entries_hint_shrinks_and_stays_positive() {
        assert_eq!(entries_hint(100, 2000, 1000), 45);
        assert_eq!(entries_hint(100, 100_000, 1000), 1);
        assert_eq!(entries_hint(2, 2000, 1999), 1);
        // Never asks for as many entries as were just refused.
        assert_eq!(entries_hint(10, 1001, 1000), 8);
        assert_eq!(entries_hint(10, 1001, 100_000), 9);
    }

    #[test]
    fn raft_config_chunk_size_must_fit_the_message_limit() {
        let mut config = openraft::Config::default();
        assert!(check_raft_config(&config).is_ok());
        config.snapshot_max_chunk_size = MAX_MESSAGE_BYTES as u64;
        assert!(check_raft_config(&config).is_err());
        config.snapshot_max_chunk_size = 0;
        assert!(check_raft_config(&config).is_err());
    }

    #[test]
    fn endpoint_accepts_host_port_and_refuses_garbage() {
        let c = TcpConnector::default();
        assert!(c.endpoint("127.0.0.1:7000").is_ok());
        assert!(c.endpoint("http://127.0.0.1:7000").is_ok());
        assert!(matches!(
            c.endpoint("bad host:1"),
            Err(ConnectError::InvalidAddress { .. })
        ));
    }
}
