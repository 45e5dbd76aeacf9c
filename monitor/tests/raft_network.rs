//! The Raft transport in isolation: the `Network` client against a fake `RaftService`
//! (no Raft behind it) on a real tonic server bound to `127.0.0.1:0`, plus codec round trips
//! of every payload type.

#![allow(clippy::result_large_err)] // openraft's error types, in the helpers' signatures.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gwmon_monitor::codec::{decode, encode, CodecError};
use gwmon_monitor::raft::network::{
    AppendEntriesReply, ConnectError, ConnectFuture, Connector, InstallSnapshotReply, Network,
    TcpConnector, VoteReply,
};
use gwmon_monitor::raft::{MonitorNode, TypeConfig};
use gwmon_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use gwmon_proto::v1::{RaftReply, RaftRequest};
use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError, SnapshotMismatch};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, Membership,
    RaftNetwork, RaftNetworkFactory, SnapshotMeta, SnapshotSegmentId, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

const TARGET: u64 = 2;

fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn option() -> RPCOption {
    RPCOption::new(Duration::from_secs(5))
}

/// Every test ends within this, whatever goes wrong.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within 20 s"),
    }
}

// ---------------------------------------------------------------------------------------
// A fake peer
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Behaviour {
    /// Answer as a healthy follower would.
    Follow,
    /// Answer every call with bytes that decode as nothing.
    Garbage,
    /// Answer every call with the Raft error of a stopped node.
    Stopped,
}

#[derive(Default)]
struct Seen {
    votes: Vec<VoteRequest<u64>>,
    appended: Vec<usize>,
    snapshot: Vec<u8>,
}

struct FakePeer {
    behaviour: Behaviour,
    seen: Arc<Mutex<Seen>>,
}

fn bad(e: CodecError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn reply<T: gwmon_monitor::codec::Versioned>(value: &T) -> Result<Response<RaftReply>, Status> {
    encode(value)
        .map(|payload| Response::new(RaftReply { payload }))
        .map_err(|e| Status::internal(e.to_string()))
}

impl FakePeer {
    fn canned(&self) -> Option<Result<Response<RaftReply>, Status>> {
        match self.behaviour {
            Behaviour::Follow => None,
            Behaviour::Garbage => Some(Ok(Response::new(RaftReply {
                payload: vec![1, 0xff, 0xfe, 0xfd],
            }))),
            Behaviour::Stopped => Some(reply::<VoteReply>(&Err(RaftError::Fatal(Fatal::Stopped)))),
        }
    }
}

#[tonic::async_trait]
impl RaftService for FakePeer {
    /// The fake stands for a monitor of a release before feature levels: it does not know
    /// the question.
    async fn features(
        &self,
        _request: Request<gwmon_proto::v1::FeaturesRequest>,
    ) -> Result<Response<gwmon_proto::v1::FeaturesReply>, Status> {
        Err(Status::unimplemented("unknown method"))
    }

    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        if let Some(r) = self.canned() {
            return r;
        }
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode(&request.into_inner().payload).map_err(bad)?;
        if let Ok(mut seen) = self.seen.lock() {
            seen.appended.push(rpc.entries.len());
        }
        reply::<AppendEntriesReply>(&Ok(AppendEntriesResponse::Success))
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        if let Some(r) = self.canned() {
            return r;
        }
        let rpc: VoteRequest<u64> = decode(&request.into_inner().payload).map_err(bad)?;
        let resp = VoteResponse::new(rpc.vote, Some(log_id(1, 2, 3)), true);
        if let Ok(mut seen) = self.seen.lock() {
            seen.votes.push(rpc);
        }
        reply::<VoteReply>(&Ok(resp))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        if let Some(r) = self.canned() {
            return r;
        }
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode(&request.into_inner().payload).map_err(bad)?;
        let mut seen = self.seen.lock().map_err(|_| Status::internal("poisoned"))?;
        if rpc.offset != seen.snapshot.len() as u64 {
            let mismatch = SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: rpc.meta.snapshot_id.clone(),
                    offset: seen.snapshot.len() as u64,
                },
                got: SnapshotSegmentId {
                    id: rpc.meta.snapshot_id.clone(),
                    offset: rpc.offset,
                },
            };
            return reply::<InstallSnapshotReply>(&Err(RaftError::APIError(
                InstallSnapshotError::SnapshotMismatch(mismatch),
            )));
        }
        seen.snapshot.extend_from_slice(&rpc.data);
        reply::<InstallSnapshotReply>(&Ok(InstallSnapshotResponse { vote: rpc.vote }))
    }
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = within("server shutdown", self.task).await;
    }
}

async fn serve(behaviour: Behaviour) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let fake = FakePeer {
        behaviour,
        seen: seen.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServiceServer::new(fake))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    Server {
        addr,
        seen,
        stop: Some(stop),
        task,
    }
}

fn tcp_network() -> Network {
    Network::new(Arc::new(TcpConnector::default()))
}

async fn client_for(
    network: &mut Network,
    addr: impl ToString,
) -> <Network as RaftNetworkFactory<TypeConfig>>::Network {
    network
        .new_client(
            TARGET,
            &MonitorNode::new(addr.to_string(), addr.to_string()),
        )
        .await
}

fn vote_request() -> VoteRequest<u64> {
    VoteRequest::new(Vote::new(7, 1), Some(log_id(6, 1, 42)))
}

// ---------------------------------------------------------------------------------------
// Tests over a real server
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn vote_round_trips_through_the_fake_peer() {
    let server = serve(Behaviour::Follow).await;
    let mut network = tcp_network();
    let mut client = client_for(&mut network, server.addr).await;

    for _ in 0..2 {
        let resp = within("vote", client.vote(vote_request(), option()))
            .await
            .expect("vote");
        assert_eq!(
            resp,
            VoteResponse::new(Vote::new(7, 1), Some(log_id(1, 2, 3)), true)
        );
    }
    let votes = server.seen.lock().expect("lock").votes.clone();
    assert_eq!(votes, vec![vote_request(), vote_request()]);
    server.stop().await;
}

#[tokio::test]
async fn append_entries_round_trip_and_oversized_batches_are_split() {
    let server = serve(Behaviour::Follow).await;
    let entries: Vec<Entry<TypeConfig>> = (1..=200)
        .map(|i| Entry {
            log_id: log_id(3, 1, i),
            payload: EntryPayload::Blank,
        })
        .collect();
    let request = |n: usize| AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id(3, 1, 0)),
        entries: entries[..n].to_vec(),
        leader_commit: Some(log_id(3, 1, 0)),
    };

    let mut network = tcp_network();
    let mut client = client_for(&mut network, server.addr).await;
    let resp = within("append", client.append_entries(request(200), option()))
        .await
        .expect("append");
    assert_eq!(resp, AppendEntriesResponse::Success);

    // With a 2 KiB limit, 200 entries do not fit: openraft is told how many might.
    let mut small = tcp_network().with_max_message_bytes(2048);
    let mut client = client_for(&mut small, server.addr).await;
    let hint = match within("append", client.append_entries(request(200), option())).await {
        Err(RPCError::PayloadTooLarge(too_large)) => too_large.entries_hint(),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    };
    assert!((1..200).contains(&hint), "hint {hint}");
    // ... and the hinted batch does go through.
    let resp = within(
        "append",
        client.append_entries(request(hint as usize), option()),
    )
    .await
    .expect("hinted append");
    assert_eq!(resp, AppendEntriesResponse::Success);
    assert_eq!(
        server.seen.lock().expect("lock").appended,
        vec![200, hint as usize]
    );
    server.stop().await;
}

fn snapshot_meta() -> SnapshotMeta<u64, MonitorNode> {
    let membership = Membership::new(
        vec![[1u64, 2, 3].into_iter().collect()],
        [1u64, 2, 3]
            .into_iter()
            .map(|i| {
                let a = format!("127.0.0.1:{}", 7000 + i);
                (i, MonitorNode::new(a.clone(), a))
            })
            .collect::<std::collections::BTreeMap<_, _>>(),
    );
    SnapshotMeta {
        last_log_id: Some(log_id(4, 1, 100)),
        last_membership: StoredMembership::new(Some(log_id(1, 1, 1)), membership),
        snapshot_id: "4-1-100-snap".to_string(),
    }
}

#[tokio::test]
async fn snapshot_chunks_stream_and_a_mismatch_comes_back_as_a_remote_error() {
    let server = serve(Behaviour::Follow).await;
    let mut network = tcp_network();
    let mut client = client_for(&mut network, server.addr).await;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let chunk = 3000;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        let req = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(4, 1),
            meta: snapshot_meta(),
            offset: offset as u64,
            data: data[offset..end].to_vec(),
            done: end == data.len(),
        };
        let resp = within("install_snapshot", client.install_snapshot(req, option()))
            .await
            .expect("chunk");
        assert_eq!(resp.vote, Vote::new_committed(4, 1));
        offset = end;
    }
    assert_eq!(server.seen.lock().expect("lock").snapshot, data);

    // A chunk at the wrong offset: the peer's Raft-level answer survives the trip.
    let req = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(4, 1),
        meta: snapshot_meta(),
        offset: 3,
        data: vec![0; 10],
        done: false,
    };
    match within("install_snapshot", client.install_snapshot(req, option())).await {
        Err(RPCError::RemoteError(remote)) => {
            assert_eq!(remote.target, TARGET);
            assert!(matches!(
                remote.source,
                RaftError::APIError(InstallSnapshotError::SnapshotMismatch(_))
            ));
        }
        other => panic!("expected a remote SnapshotMismatch, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_remote_raft_error_is_a_remote_error() {
    let server = serve(Behaviour::Stopped).await;
    let mut network = tcp_network();
    let mut client = client_for(&mut network, server.addr).await;
    match within("vote", client.vote(vote_request(), option())).await {
        Err(RPCError::RemoteError(remote)) => {
            assert_eq!(remote.target, TARGET);
            assert_eq!(
                remote.target_node,
                Some(MonitorNode::new(
                    server.addr.to_string(),
                    server.addr.to_string()
                ))
            );
            assert_eq!(remote.source, RaftError::Fatal(Fatal::Stopped));
        }
        other => panic!("expected RemoteError, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn an_undecodable_reply_is_an_error_not_a_panic() {
    let server = serve(Behaviour::Garbage).await;
    let mut network = tcp_network();
    let mut client = client_for(&mut network, server.addr).await;
    match within("vote", client.vote(vote_request(), option())).await {
        Err(RPCError::Unreachable(e)) => {
            assert!(e.to_string().contains("unreadable"), "{e}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    server.stop().await;
}

/// A monitor of a release before feature levels counts as level 0; one that cannot be
/// reached gives no level at all (the leader must not guess).
#[tokio::test]
async fn a_peer_that_does_not_know_feature_levels_is_level_0_and_a_dead_one_unknown() {
    let server = serve(Behaviour::Follow).await;
    let network = tcp_network();
    let node = MonitorNode::new(server.addr.to_string(), server.addr.to_string());
    let level = within(
        "features",
        network
            .client(TARGET, &node)
            .features(Duration::from_secs(2)),
    )
    .await;
    assert_eq!(level, Ok(0));
    server.stop().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let dead = MonitorNode::new(addr.to_string(), addr.to_string());
    let level = within(
        "features",
        network
            .client(TARGET, &dead)
            .features(Duration::from_secs(2)),
    )
    .await;
    assert!(level.is_err(), "{level:?}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut network = tcp_network();
    let mut client = client_for(&mut network, addr).await;
    match within("vote", client.vote(vote_request(), option())).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_address_is_unreachable() {
    let mut network = tcp_network();
    let mut client = client_for(&mut network, "not an address").await;
    match within("vote", client.vote(vote_request(), option())).await {
        Err(RPCError::Unreachable(_)) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

/// A connector that refuses the addresses on its cut list: a partition.
#[derive(Default)]
struct Partition {
    inner: TcpConnector,
    cut: Mutex<HashSet<String>>,
}

impl Partition {
    fn set(&self, addr: &str, cut: bool) {
        if let Ok(mut set) = self.cut.lock() {
            if cut {
                set.insert(addr.to_string());
            } else {
                set.remove(addr);
            }
        }
    }
}

impl Connector for Partition {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a> {
        let cut = self.cut.lock().map(|s| s.contains(addr)).unwrap_or(true);
        if cut {
            return Box::pin(async move {
                Err(ConnectError::Refused {
                    addr: addr.to_string(),
                    reason: "partitioned".into(),
                })
            });
        }
        self.inner.connect(addr)
    }
}

#[tokio::test]
async fn a_refusing_connector_is_unreachable_until_healed() {
    let server = serve(Behaviour::Follow).await;
    let addr = server.addr.to_string();
    let partition = Arc::new(Partition::default());
    let mut network = Network::new(partition.clone());

    partition.set(&addr, true);
    let mut client = client_for(&mut network, &addr).await;
    match within("vote", client.vote(vote_request(), option())).await {
        Err(RPCError::Unreachable(e)) => assert!(e.to_string().contains("partitioned"), "{e}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(server.seen.lock().expect("lock").votes.is_empty());

    partition.set(&addr, false);
    within("vote", client.vote(vote_request(), option()))
        .await
        .expect("vote after healing");
    server.stop().await;
}

/// A TCP relay that can wedge every connection it carries: bytes on a wedged connection are
/// swallowed, as segments are by a partition, while new connections relay normally. That is
/// the state gotcha 8 of the stack notes describes after a partition heals.
struct Relay {
    addr: SocketAddr,
    /// Connections accepted before this generation are wedged.
    cut: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let task = {
            let cut = cut.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while let Ok((down, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    let born = cut.load(Ordering::SeqCst);
                    let (down_r, down_w) = down.into_split();
                    let (up_r, up_w) = up.into_split();
                    tokio::spawn(pump(down_r, up_w, cut.clone(), born));
                    tokio::spawn(pump(up_r, down_w, cut.clone(), born));
                }
            })
        };
        Relay {
            addr,
            cut,
            accepted,
            task,
        }
    }

    fn wedge_existing(&self) {
        self.cut.fetch_add(1, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) > born {
            continue; // swallowed
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_wedged_connection_is_dropped_and_the_next_call_reconnects() {
    let server = serve(Behaviour::Follow).await;
    let relay = Relay::start(server.addr).await;
    let mut network = tcp_network();
    let mut client = client_for(&mut network, relay.addr).await;
    // Only the call on the wedged connection uses a short TTL: the others must not fail on
    // a busy machine.
    let short = RPCOption::new(Duration::from_millis(500));

    within("vote", client.vote(vote_request(), option()))
        .await
        .expect("vote before the wedge");
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 1);

    relay.wedge_existing();
    match within("vote", client.vote(vote_request(), short)).await {
        Err(RPCError::Network(e)) => assert!(e.to_string().contains("no reply"), "{e}"),
        other => panic!("expected a timeout (NetworkError), got {other:?}"),
    }

    // The wedged connection was dropped: this call dials again and succeeds.
    within("vote", client.vote(vote_request(), option()))
        .await
        .expect("vote after the wedge");
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(server.seen.lock().expect("lock").votes.len(), 2);

    relay.task.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_broken_connection_asks_for_an_immediate_retry_then_reports_unreachable() {
    let server = serve(Behaviour::Follow).await;
    let mut network = tcp_network();
    let mut client = client_for(&mut network, server.addr).await;
    within("vote", client.vote(vote_request(), option()))
        .await
        .expect("vote");
    server.stop().await;

    // The cached connection is gone: retrying at once is right (it may just have been reset).
    // Once reconnecting fails, openraft is told to back off.
    let mut seen = Vec::new();
    for _ in 0..2 {
        match within("vote", client.vote(vote_request(), option())).await {
            Err(RPCError::Network(_)) => seen.push("network"),
            Err(RPCError::Unreachable(_)) => seen.push("unreachable"),
            other => panic!("expected a transport error, got {other:?}"),
        }
    }
    assert_eq!(seen.last(), Some(&"unreachable"), "{seen:?}");
}

// ---------------------------------------------------------------------------------------
// Codec round trips
// ---------------------------------------------------------------------------------------

fn storage_error() -> StorageError<u64> {
    StorageError::IO {
        source: StorageIOError::new(
            ErrorSubject::Logs,
            ErrorVerb::Write,
            AnyError::error("disk full"),
        ),
    }
}

#[test]
fn vote_payloads_round_trip() {
    let req = vote_request();
    assert_eq!(
        decode::<VoteRequest<u64>>(&encode(&req).expect("enc")).expect("dec"),
        req
    );
    for reply in [
        Ok(VoteResponse::new(Vote::new(7, 1), None, false)),
        Err(RaftError::Fatal(Fatal::Stopped)),
        Err(RaftError::Fatal(Fatal::StorageError(storage_error()))),
    ] {
        let back: VoteReply = decode(&encode(&reply).expect("enc")).expect("dec");
        assert_eq!(back, reply);
    }
}

#[test]
fn append_entries_payloads_round_trip() {
    let req = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: None,
        entries: vec![
            Entry {
                log_id: log_id(3, 1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(3, 1, 2),
                payload: EntryPayload::Membership(
                    snapshot_meta().last_membership.membership().clone(),
                ),
            },
        ],
        leader_commit: Some(log_id(2, 1, 9)),
    };
    let back: AppendEntriesRequest<TypeConfig> = decode(&encode(&req).expect("enc")).expect("dec");
    assert_eq!(back.vote, req.vote);
    assert_eq!(back.prev_log_id, req.prev_log_id);
    assert_eq!(back.leader_commit, req.leader_commit);
    assert_eq!(back.entries, req.entries);

    for reply in [
        Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(3, 1, 1)))),
        Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(Vote::new(9, 3))),
        Err(RaftError::Fatal(Fatal::Panicked)),
    ] {
        let back: AppendEntriesReply = decode(&encode(&reply).expect("enc")).expect("dec");
        assert_eq!(back, reply);
    }
}

#[test]
fn install_snapshot_payloads_round_trip() {
    let req = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(4, 1),
        meta: snapshot_meta(),
        offset: 4096,
        data: vec![7; 1000],
        done: true,
    };
    let back: InstallSnapshotRequest<TypeConfig> =
        decode(&encode(&req).expect("enc")).expect("dec");
    assert_eq!(back, req);
    for reply in [
        Ok(InstallSnapshotResponse {
            vote: Vote::new(4, 2),
        }),
        Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(
            SnapshotMismatch {
                expect: SnapshotSegmentId {
                    id: "a".into(),
                    offset: 0,
                },
                got: SnapshotSegmentId {
                    id: "a".into(),
                    offset: 10,
                },
            },
        ))),
    ] {
        let back: InstallSnapshotReply = decode(&encode(&reply).expect("enc")).expect("dec");
        assert_eq!(back, reply);
    }
}

#[test]
fn a_payload_of_another_version_or_kind_is_refused() {
    let mut bytes = encode(&vote_request()).expect("enc");
    bytes[0] = 200;
    assert!(matches!(
        decode::<VoteRequest<u64>>(&bytes),
        Err(CodecError::Version { found: 200, .. })
    ));
    assert!(matches!(
        decode::<VoteRequest<u64>>(&[]),
        Err(CodecError::Empty)
    ));
    // A vote reply is not an append-entries request.
    let reply: VoteReply = Ok(VoteResponse::new(Vote::new(1, 1), None, true));
    assert!(decode::<AppendEntriesRequest<TypeConfig>>(&encode(&reply).expect("enc")).is_err());
}
