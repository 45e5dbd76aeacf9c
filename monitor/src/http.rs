//! The monitor's HTTP listener, for operators and their tools rather than for gateways:
//! `GET /metrics` (OpenMetrics text for Prometheus), `/health/live`, `/health/ready` and
//! `/status` (a JSON summary). It is served next to the gRPC server and stopped by the same
//! cancellation token.
//!
//! Readiness (what a load balancer or Kubernetes routes on) is [`readiness`]: the monitor
//! knows a leader, has applied everything it knows is committed, and is not cut off from a
//! quorum. openraft 0.9 gives no "last heard from the leader" to a follower, so that half
//! rests on Raft itself: a voter that hears no leader for an election timeout starts an
//! election and stops knowing a leader. A leader does not step down when cut off, so for it
//! the age of its last quorum acknowledgement is checked against the largest election
//! timeout: past that, the others have elected someone else or cannot. A learner cut off
//! keeps its last leader; it serves no writes, so this is accepted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gwmon_proto::tls::{self, Tls};
use openraft::{RaftMetrics, ServerState};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::raft::MonitorNode;

use crate::core::Core;
use crate::error::MonitorError;
use crate::map::{Availability, GatewayMap};
use crate::metrics::{Scrape, Telemetry};
use crate::raft::log_store::stored_committed;
use crate::raft::NodeId;
use crate::store::Store;

/// What the handlers read. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    core: Core,
    store: Arc<dyn Store>,
    /// The largest election timeout: how long a leader may go without a quorum's
    /// acknowledgement and still count as ready.
    election_timeout_max: Duration,
}

impl HttpState {
    pub fn new(core: Core, store: Arc<dyn Store>, election_timeout_max: Duration) -> Self {
        HttpState {
            core,
            store,
            election_timeout_max,
        }
    }

    fn telemetry(&self) -> &Telemetry {
        self.core.telemetry()
    }

    fn committed_index(&self) -> Option<u64> {
        match stored_committed(&*self.store) {
            Ok(c) => c.map(|l| l.index),
            Err(e) => {
                warn!(error = %e, "cannot read the committed log id");
                None
            }
        }
    }

    fn readiness(&self) -> (RaftMetrics<NodeId, MonitorNode>, Option<u64>, Readiness) {
        let metrics = self.core.raft().metrics().borrow().clone();
        let committed = self.committed_index();
        let r = readiness(&metrics, committed, self.election_timeout_max);
        (metrics, committed, r)
    }
}

/// Whether this monitor is ready, and if not, why (the body of a 503).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

/// The readiness rule (see the module documentation): a leader is known, everything known
/// committed is applied, and a leader has heard from a quorum within `max_quorum_silence`.
pub fn readiness(
    m: &RaftMetrics<NodeId, MonitorNode>,
    committed: Option<u64>,
    max_quorum_silence: Duration,
) -> Readiness {
    if m.running_state.is_err() {
        return Readiness::NotReady("raft has stopped".into());
    }
    let Some(leader) = m.current_leader else {
        return Readiness::NotReady("no known leader".into());
    };
    let applied = m.last_applied.map_or(0, |l| l.index);
    let committed = committed.unwrap_or(0);
    if applied < committed {
        return Readiness::NotReady(format!(
            "applied index {applied} is behind committed index {committed}"
        ));
    }
    if m.state == ServerState::Leader && leader == m.id {
        let limit = u64::try_from(max_quorum_silence.as_millis()).unwrap_or(u64::MAX);
        match m.millis_since_quorum_ack {
            None => return Readiness::NotReady("leader not yet acknowledged by a quorum".into()),
            Some(ms) if ms > limit => {
                return Readiness::NotReady(format!(
                    "leader has had no quorum acknowledgement for {ms} ms (limit {limit} ms)"
                ))
            }
            Some(_) => {}
        }
    }
    Readiness::Ready
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/status", get(status))
        .with_state(state)
}

/// Serve `router` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    tls: Option<Tls>,
    stop: CancellationToken,
) -> Result<(), MonitorError> {
    let served = match tls {
        None => {
            axum::serve(listener, router(state))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
        Some(tls) => {
            axum::serve(HttpsListener::new(listener, tls), router(state))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    };
    served.map_err(|e| MonitorError::Serve(format!("http: {e}")))
}

/// The HTTP listener over TLS (`http_tls`): handshakes run side by side, each bounded by
/// [`tls::HANDSHAKE_TIMEOUT`], with the certificate the monitor holds when the connection
/// arrives (so SIGHUP's reload applies here too).
struct HttpsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: std::io::Result<SocketAddr>,
    accepting: tokio::task::JoinHandle<()>,
}

impl HttpsListener {
    fn new(listener: TcpListener, tls: Tls) -> Self {
        let local = listener.local_addr();
        let (done, handshaken) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = done.closed() => break,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, say: wait a little rather than spin.
                        debug!(error = %e, "http: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = TlsAcceptor::from(tls.http_server_config());
                let done = done.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = done.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => debug!(error = %e, %peer, "http: TLS handshake failed"),
                        Err(_) => debug!(%peer, "http: TLS handshake timed out"),
                    }
                });
            }
        });
        HttpsListener {
            handshaken,
            local,
            accepting,
        }
    }
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accepting task is gone only when this listener is being dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// The OpenMetrics media type (prometheus-client encodes OpenMetrics text; Prometheus
/// negotiates it).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(s): State<HttpState>) -> Response {
    let (raft, committed_index, r) = s.readiness();
    let store_bytes = match s.store.size_on_disk() {
        Ok(b) => Some(b),
        Err(e) => {
            warn!(error = %e, "cannot measure the store");
            None
        }
    };
    let scrape = Scrape {
        raft: &raft,
        committed_index,
        store_bytes,
        ready: r.is_ready(),
    };
    let text = s
        .core
        .reader()
        .read_both(|map, replicas| s.telemetry().render(map, replicas, &scrape));
    match text {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(s): State<HttpState>) -> Response {
    match s.readiness().2 {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Readiness::NotReady(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// `GET /status`: what an operator asks first. Read from this monitor's applied map
/// without a quorum round trip (it must answer on a monitor cut off from the others).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub leader: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub applied_index: u64,
    pub committed_index: u64,
    pub ready: bool,
    /// Why not ready, if not.
    pub not_ready_reason: Option<String>,
    pub map_epoch: u64,
    pub groups: Vec<GroupStatus>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct GroupStatus {
    pub pool: String,
    pub group: String,
    pub epoch: u64,
    /// Gateways by availability: keys `CREATED`, `AVAILABLE`, `UNAVAILABLE`, `DELETING`.
    pub gateways: std::collections::BTreeMap<String, usize>,
    pub pending_fences: usize,
}

fn group_statuses(map: &GatewayMap) -> Vec<GroupStatus> {
    map.groups()
        .iter()
        .map(|(key, g)| {
            let gateways = [
                Availability::Created,
                Availability::Available,
                Availability::Unavailable,
                Availability::Deleting,
            ]
            .into_iter()
            .map(|a| {
                let n = g
                    .gateways
                    .values()
                    .filter(|gw| gw.availability == a)
                    .count();
                (a.as_str().to_owned(), n)
            })
            .collect();
            GroupStatus {
                pool: key.pool.to_string(),
                group: key.group.to_string(),
                epoch: g.epoch.0,
                gateways,
                pending_fences: g.fences.iter().filter(|f| f.completed_at.is_none()).count(),
            }
        })
        .collect()
}

async fn status(State(s): State<HttpState>) -> Json<Status> {
    let (m, committed, r) = s.readiness();
    let (map_epoch, groups) = s
        .core
        .reader()
        .read(|map| (map.epoch().0, group_statuses(map)));
    let leader_addr = m.current_leader.and_then(|l| {
        m.membership_config
            .membership()
            .get_node(&l)
            .map(|n| n.addr.clone())
    });
    Json(Status {
        id: m.id,
        state: format!("{:?}", m.state),
        leader: m.current_leader,
        leader_addr,
        term: m.current_term,
        applied_index: m.last_applied.map_or(0, |l| l.index),
        committed_index: committed.unwrap_or(0),
        ready: r.is_ready(),
        not_ready_reason: match r {
            Readiness::Ready => None,
            Readiness::NotReady(why) => Some(why),
        },
        map_epoch,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    const LIMIT: Duration = Duration::from_millis(1000);

    fn metrics(
        state: ServerState,
        leader: Option<NodeId>,
        applied: u64,
    ) -> RaftMetrics<NodeId, MonitorNode> {
        let mut m = RaftMetrics::new_initial(1);
        m.state = state;
        m.current_leader = leader;
        m.last_applied = Some(LogId::new(CommittedLeaderId::new(1, 1), applied));
        m
    }

    #[test]
    fn a_follower_is_ready_when_it_knows_a_leader_and_applied_what_is_committed() {
        let m = metrics(ServerState::Follower, Some(2), 10);
        assert_eq!(readiness(&m, Some(10), LIMIT), Readiness::Ready);
        let behind = readiness(&m, Some(11), LIMIT);
        assert!(
            matches!(&behind, Readiness::NotReady(w) if w.contains("behind")),
            "{behind:?}"
        );
        let no_leader = readiness(&metrics(ServerState::Candidate, None, 10), Some(10), LIMIT);
        assert!(matches!(&no_leader, Readiness::NotReady(w) if w.contains("no known leader")));
    }

    #[test]
    fn a_leader_without_a_recent_quorum_ack_is_not_ready() {
        let mut m = metrics(ServerState::Leader, Some(1), 5);
        m.millis_since_quorum_ack = Some(100);
        assert_eq!(readiness(&m, Some(5), LIMIT), Readiness::Ready);
        m.millis_since_quorum_ack = Some(1001);
        let r = readiness(&m, Some(5), LIMIT);
        assert!(
            matches!(&r, Readiness::NotReady(w) if w.contains("quorum")),
            "{r:?}"
        );
        m.millis_since_quorum_ack = None;
        assert!(!readiness(&m, Some(5), LIMIT).is_ready());
    }
}
