//! The cluster over gRPC: `gwmon.v1.ReplicaService`, following the leader.
//!
//! Writes and linearizable reads go to the Raft leader. A monitor that is not the leader
//! refuses with FAILED_PRECONDITION and the leader's address in the `gwmon-leader` header
//! ([`gwmon_proto::leader`]); the client goes there at once without counting it as a
//! failure, as `nvme-gw` does. A monitor that does not answer, or answers UNAVAILABLE (no
//! leader yet, no quorum), is left for the next address after a short, doubling wait, a
//! bounded number of times; then the call fails as [`ClusterError::Unavailable`] and the
//! daemon tries again next period. Any other status is the cluster's considered answer and
//! is returned at once, mapped to a [`Refusal`] the agent branches on.
//!
//! Channels are made lazily, one per monitor address, and kept: a daemon calling every
//! period reuses its connection to the leader instead of dialling each time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use gwmon_proto::leader::leader_hint;
use gwmon_proto::tls::Tls;
use gwmon_proto::v1;
use gwmon_proto::v1::replica_service_client::ReplicaServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};
use tracing::{info, warn};

use super::types::{
    HostIdentity, Portal, Replacement, ReplacementId, ReplicaId, ReplicaInfo, ReplicaReport,
    ReplicaState, Stage, VolumeId, VolumeInfo,
};
use super::{Cluster, ClusterError, Refusal};
use crate::host::{Address, Transport};

/// First wait after a failed attempt; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between attempts: an election takes about a second.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Redirects followed in a row before one counts as a failed attempt: two monitors naming
/// each other during an election must not make the client spin.
const MAX_REDIRECTS: u32 = 4;
/// The start of the refusal of a monitor that knows no leader (same code as a "not now"
/// refusal, told apart by the text gwmon-proto writes).
const NO_LEADER_PREFIX: &str = "this monitor is not the leader";

/// Where and how to reach the monitors.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Monitor addresses, `host:port` or `http://host:port`; any one will do.
    pub monitors: Vec<String>,
    /// Limit of one attempt at one monitor, connecting included.
    pub timeout: Duration,
    /// Failed attempts retried before a call gives up (redirects do not count).
    pub retries: u32,
    /// Mutual TLS to every monitor; `None`: plain h2c.
    pub tls: Option<Tls>,
}

#[derive(Debug, Default)]
struct Route {
    /// The monitor that answered last: most likely the leader.
    preferred: Option<String>,
    /// The next index of the monitor list to try when no better address is known.
    next: usize,
    channels: BTreeMap<String, Channel>,
}

/// The real cluster. See the module documentation.
#[derive(Debug)]
pub struct GrpcCluster {
    settings: Settings,
    route: Mutex<Route>,
}

/// What a failed attempt means for the next.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Redirect { leader: String, message: String },
    Retry(String),
    Refused(ClusterError),
}

pub use gwmon_proto::addr::{check_addr, uri};

impl GrpcCluster {
    pub fn new(settings: Settings) -> Self {
        GrpcCluster {
            settings,
            route: Mutex::new(Route::default()),
        }
    }

    fn route(&self) -> MutexGuard<'_, Route> {
        self.route.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pick(&self, target: Option<String>) -> String {
        if let Some(t) = target {
            return t;
        }
        let mut route = self.route();
        if let Some(p) = route.preferred.take() {
            return p;
        }
        let list = &self.settings.monitors;
        let addr = list
            .get(route.next % list.len().max(1))
            .cloned()
            .unwrap_or_default();
        route.next += 1;
        addr
    }

    fn channel(&self, addr: &str) -> Result<Channel, Failure> {
        // Certificates are rotated by replacing the files: when they change, the channels
        // made with the old ones are dropped and the next call dials with the new ones.
        if let Some(tls) = &self.settings.tls {
            match tls.reload_if_changed() {
                Ok(true) => {
                    info!(files = ?tls.files(), "TLS files changed: reconnecting with them");
                    self.route().channels.clear();
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(error = %e, "TLS files changed but cannot be used; keeping the previous ones")
                }
            }
        }
        if let Some(c) = self.route().channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = gwmon_proto::tls::endpoint(addr, self.settings.tls.as_ref())
            .map_err(|e| Failure::Retry(format!("{addr}: not a usable address: {e}")))?
            .connect_timeout(self.settings.timeout)
            .timeout(self.settings.timeout);
        let channel = endpoint.connect_lazy();
        self.route()
            .channels
            .insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Make one call with leader following and bounded retries. `call` may run once per
    /// attempt, so it builds its request afresh each time.
    async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, ClusterError>
    where
        F: FnMut(ReplicaServiceClient<Channel>) -> Fut + Send,
        Fut: Future<Output = Result<Response<T>, Status>> + Send,
        T: Send,
    {
        let mut target = None;
        let mut failures = 0u32;
        let mut redirects = 0u32;
        let mut wait = BACKOFF_MIN;
        let mut tried: Vec<String> = Vec::new();
        loop {
            let addr = self.pick(target.take());
            if !tried.contains(&addr) {
                tried.push(addr.clone());
            }
            let outcome = match self.channel(&addr) {
                Ok(channel) => {
                    let attempt = call(ReplicaServiceClient::new(channel));
                    match tokio::time::timeout(self.settings.timeout, attempt).await {
                        Ok(Ok(resp)) => Ok(resp.into_inner()),
                        Ok(Err(status)) => Err(classify(&status)),
                        Err(_) => Err(Failure::Retry(format!(
                            "no answer within {} ms",
                            self.settings.timeout.as_millis()
                        ))),
                    }
                }
                Err(f) => Err(f),
            };
            let last = match outcome {
                Ok(v) => {
                    self.route().preferred = Some(addr);
                    return Ok(v);
                }
                Err(Failure::Refused(e)) => {
                    self.route().preferred = Some(addr);
                    return Err(e);
                }
                Err(Failure::Redirect { leader, .. }) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    target = Some(leader);
                    continue;
                }
                Err(Failure::Redirect { message, .. } | Failure::Retry(message)) => {
                    format!("{addr}: {message}")
                }
            };
            failures += 1;
            if failures > self.settings.retries {
                return Err(ClusterError::Unavailable(format!(
                    "tried {}; last: {last}",
                    tried.join(", ")
                )));
            }
            redirects = 0;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(BACKOFF_MAX);
        }
    }
}

/// Decide what an error status means for the next attempt.
fn classify(status: &Status) -> Failure {
    let message = status.message().to_owned();
    if let Some(leader) = leader_hint(status) {
        return Failure::Redirect {
            leader: leader.to_owned(),
            message,
        };
    }
    let refused = |why| Failure::Refused(ClusterError::refused(why, message.clone()));
    match status.code() {
        Code::FailedPrecondition if message.starts_with(NO_LEADER_PREFIX) => {
            Failure::Retry(message)
        }
        // UNAVAILABLE is both a monitor's "not now" and tonic's broken connection;
        // DEADLINE_EXCEEDED and CANCELLED are calls cut short; UNKNOWN is never sent by a
        // monitor on purpose.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Failure::Retry(if message.is_empty() {
                format!("{:?}", status.code())
            } else {
                message
            })
        }
        Code::NotFound => refused(Refusal::NotFound),
        // FAILED_PRECONDITION (grace not passed, stage out of order, nothing safe to
        // connect) and ABORTED (another replacement under way): not now.
        Code::FailedPrecondition | Code::Aborted => refused(Refusal::NotYet),
        Code::InvalidArgument => refused(Refusal::Invalid),
        _ => refused(Refusal::Other),
    }
}

// ---- wire -> agent conversions -------------------------------------------------------

fn bad(what: impl Into<String>) -> ClusterError {
    ClusterError::BadAnswer(what.into())
}

fn transport(t: i32) -> Result<Transport, ClusterError> {
    match v1::Transport::try_from(t) {
        Ok(v1::Transport::Tcp) => Ok(Transport::Tcp),
        Ok(v1::Transport::Rdma) => Ok(Transport::Rdma),
        _ => Err(bad(format!("portal transport {t}"))),
    }
}

fn replica_state(s: i32) -> Result<ReplicaState, ClusterError> {
    match v1::ReplicaState::try_from(s) {
        Ok(v1::ReplicaState::Available) => Ok(ReplicaState::Available),
        Ok(v1::ReplicaState::Synchronizing) => Ok(ReplicaState::Synchronizing),
        Ok(v1::ReplicaState::Missing) => Ok(ReplicaState::Missing),
        Ok(v1::ReplicaState::Faulty) => Ok(ReplicaState::Faulty),
        Ok(v1::ReplicaState::Terminating) => Ok(ReplicaState::Terminating),
        _ => Err(bad(format!("replica state {s}"))),
    }
}

fn wire_state(s: ReplicaState) -> i32 {
    match s {
        ReplicaState::Available => v1::ReplicaState::Available,
        ReplicaState::Synchronizing => v1::ReplicaState::Synchronizing,
        ReplicaState::Missing => v1::ReplicaState::Missing,
        ReplicaState::Faulty => v1::ReplicaState::Faulty,
        ReplicaState::Terminating => v1::ReplicaState::Terminating,
    }
    .into()
}

fn stage(s: i32) -> Result<Stage, ClusterError> {
    match v1::ReplacementStage::try_from(s) {
        Ok(v1::ReplacementStage::Requested) => Ok(Stage::Requested),
        Ok(v1::ReplacementStage::Supplied) => Ok(Stage::Supplied),
        Ok(v1::ReplacementStage::Attached) => Ok(Stage::Attached),
        Ok(v1::ReplacementStage::Synced) => Ok(Stage::Synced),
        Ok(v1::ReplacementStage::Retired) => Ok(Stage::Retired),
        Ok(v1::ReplacementStage::Done) => Ok(Stage::Done),
        Ok(v1::ReplacementStage::Cancelled) => Ok(Stage::Cancelled),
        _ => Err(bad(format!("replacement stage {s}"))),
    }
}

fn wire_stage(s: Stage) -> i32 {
    match s {
        Stage::Requested => v1::ReplacementStage::Requested,
        Stage::Supplied => v1::ReplacementStage::Supplied,
        Stage::Attached => v1::ReplacementStage::Attached,
        Stage::Synced => v1::ReplacementStage::Synced,
        Stage::Retired => v1::ReplacementStage::Retired,
        Stage::Done => v1::ReplacementStage::Done,
        Stage::Cancelled => v1::ReplacementStage::Cancelled,
    }
    .into()
}

fn id<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, ClusterError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| bad(format!("{what} {s:?}: {e}")))
}

fn replica(spec: &v1::ReplicaSpec, state: ReplicaState) -> Result<ReplicaInfo, ClusterError> {
    let portals = spec
        .portals
        .iter()
        .map(|p| {
            Ok(Portal {
                transport: transport(p.transport)?,
                address: Address {
                    traddr: p.address.clone(),
                    trsvcid: p.port.to_string(),
                },
            })
        })
        .collect::<Result<Vec<_>, ClusterError>>()?;
    // "Empty when the backend does not set one; the host then matches the replica id."
    let ns_uuid = if spec.namespace_uuid.is_empty() {
        &spec.replica_id
    } else {
        &spec.namespace_uuid
    };
    Ok(ReplicaInfo {
        id: id("replica id", &spec.replica_id)?,
        nqn: id("target NQN", &spec.target_nqn)?,
        portals,
        ns_uuid: Some(ns_uuid.to_ascii_lowercase()),
        state,
    })
}

/// A replacement under way; a finished or cancelled one is none.
fn replacement(r: Option<&v1::Replacement>) -> Result<Option<Replacement>, ClusterError> {
    let Some(r) = r else {
        return Ok(None);
    };
    let stage = stage(r.stage)?;
    if matches!(stage, Stage::Done | Stage::Cancelled) {
        return Ok(None);
    }
    Ok(Some(convert_replacement(r, stage)?))
}

fn convert_replacement(r: &v1::Replacement, stage: Stage) -> Result<Replacement, ClusterError> {
    Ok(Replacement {
        id: ReplacementId::new(r.replacement_id).map_err(|e| bad(format!("replacement id {e}")))?,
        old: id("old replica id", &r.old_replica_id)?,
        new: r
            .new_replica
            .as_ref()
            .map(|n| replica(n, ReplicaState::Synchronizing))
            .transpose()?,
        stage,
    })
}

fn volume_spec(v: Option<&v1::VolumeSpec>) -> Result<VolumeInfo, ClusterError> {
    let v = v.ok_or_else(|| bad("a volume without its spec"))?;
    Ok(VolumeInfo {
        id: id("volume id", &v.volume_id)?,
        name: id("volume alias", &v.alias)?,
        capacity_bytes: v.capacity_bytes,
        replica_count: v.replica_count,
        grace: Duration::from_millis(v.grace_period_ms),
        replicas: Vec::new(),
        left_out: Vec::new(),
        replacement: None,
    })
}

/// `ShowVolume`'s answer: every replica with its recorded state.
pub fn volume_view(v: &v1::VolumeView) -> Result<VolumeInfo, ClusterError> {
    let mut info = volume_spec(v.volume.as_ref())?;
    for r in &v.replicas {
        let spec = r
            .replica
            .as_ref()
            .ok_or_else(|| bad("a replica without its spec"))?;
        info.replicas.push(replica(spec, replica_state(r.state)?)?);
    }
    info.replacement = replacement(v.replacement.as_ref())?;
    Ok(info)
}

/// `GetVolumeConnection`'s answer: the safe replicas, and why the others are left out.
pub fn connection(c: &v1::GetVolumeConnectionResponse) -> Result<VolumeInfo, ClusterError> {
    let mut info = volume_spec(c.volume.as_ref())?;
    for spec in &c.replicas {
        // Listed as safe; whether reachable now is for the host to find out.
        info.replicas.push(replica(spec, ReplicaState::Available)?);
    }
    info.left_out = c
        .excluded
        .iter()
        .map(|e| {
            if e.message.is_empty() {
                format!("replica {} left out", e.replica_id)
            } else {
                e.message.clone()
            }
        })
        .collect();
    info.replacement = replacement(c.replacement.as_ref())?;
    Ok(info)
}

fn answered_replacement(r: Option<v1::Replacement>) -> Result<Replacement, ClusterError> {
    let r = r.ok_or_else(|| bad("an answer without its replacement"))?;
    let s = stage(r.stage)?;
    convert_replacement(&r, s)
}

impl Cluster for GrpcCluster {
    async fn register(&self, host: &HostIdentity) -> Result<(), ClusterError> {
        self.call(|mut c| {
            let req = v1::RegisterHostRequest {
                host_nqn: host.nqn.to_string(),
                host_id: host.id.map(|i| i.to_string()).unwrap_or_default(),
                name: host.name.to_string(),
            };
            async move { c.register_host(req).await }
        })
        .await?;
        Ok(())
    }

    async fn heartbeat(
        &self,
        host: &HostIdentity,
        volumes: &[VolumeId],
    ) -> Result<(), ClusterError> {
        self.call(|mut c| {
            let req = v1::HeartbeatRequest {
                host_nqn: host.nqn.to_string(),
                host_id: host.id.map(|i| i.to_string()).unwrap_or_default(),
                name: host.name.to_string(),
                volume_ids: volumes.iter().map(ToString::to_string).collect(),
            };
            async move { c.heartbeat(req).await }
        })
        .await?;
        Ok(())
    }

    async fn connection_info(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
    ) -> Result<VolumeInfo, ClusterError> {
        let resp = self
            .call(|mut c| {
                let req = v1::GetVolumeConnectionRequest {
                    host_nqn: host.nqn.to_string(),
                    volume_id: volume.to_string(),
                };
                async move { c.get_volume_connection(req).await }
            })
            .await?;
        connection(&resp)
    }

    async fn volume(
        &self,
        _host: &HostIdentity,
        volume: &VolumeId,
    ) -> Result<VolumeInfo, ClusterError> {
        let resp = self
            .call(|mut c| {
                let req = v1::ShowVolumeRequest {
                    volume: volume.to_string(),
                    stale: false,
                };
                async move { c.show_volume(req).await }
            })
            .await?;
        volume_view(
            resp.volume
                .as_ref()
                .ok_or_else(|| bad("ShowVolume without the volume"))?,
        )
    }

    async fn report(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        reports: &[ReplicaReport],
    ) -> Result<(), ClusterError> {
        // The service takes at most 32 reports in one request.
        for chunk in reports.chunks(32) {
            self.call(|mut c| {
                let req = v1::ReportReplicaStatesRequest {
                    host_nqn: host.nqn.to_string(),
                    volume_id: volume.to_string(),
                    reports: chunk
                        .iter()
                        .map(|r| v1::ReplicaStateReport {
                            replica_id: r.replica.to_string(),
                            state: wire_state(r.state),
                            sync_permille: r.sync_permille.map(u32::from),
                        })
                        .collect(),
                };
                async move { c.report_replica_states(req).await }
            })
            .await?;
        }
        Ok(())
    }

    async fn request_replacement(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        replica: &ReplicaId,
    ) -> Result<Replacement, ClusterError> {
        let resp = self
            .call(|mut c| {
                let req = v1::RequestReplacementRequest {
                    host_nqn: host.nqn.to_string(),
                    volume_id: volume.to_string(),
                    replica_id: replica.to_string(),
                    force: false,
                };
                async move { c.request_replacement(req).await }
            })
            .await?;
        answered_replacement(resp.replacement)
    }

    async fn acknowledge(
        &self,
        host: &HostIdentity,
        volume: &VolumeId,
        replacement: &Replacement,
        done: Stage,
    ) -> Result<Replacement, ClusterError> {
        let resp = self
            .call(|mut c| {
                let req = v1::AcknowledgeReplacementRequest {
                    host_nqn: host.nqn.to_string(),
                    volume_id: volume.to_string(),
                    replacement_id: replacement.id.get(),
                    done: wire_stage(done),
                };
                async move { c.acknowledge_replacement(req).await }
            })
            .await?;
        answered_replacement(resp.replacement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::HostName;

    #[test]
    fn statuses_map_to_what_the_agent_branches_on() {
        let s = gwmon_proto::leader::not_leader(Some("127.0.0.1:7402"));
        assert!(
            matches!(classify(&s), Failure::Redirect { leader, .. } if leader == "127.0.0.1:7402")
        );
        assert!(matches!(
            classify(&gwmon_proto::leader::not_leader(None)),
            Failure::Retry(_)
        ));
        let grace = Status::failed_precondition("replica r2 has been faulty for 3 s of 60 s");
        assert!(matches!(classify(&grace), Failure::Refused(e) if e.is(Refusal::NotYet)));
        assert!(matches!(
            classify(&Status::aborted("another replacement")),
            Failure::Refused(e) if e.is(Refusal::NotYet)
        ));
        assert!(matches!(
            classify(&Status::not_found("unknown volume")),
            Failure::Refused(e) if e.is(Refusal::NotFound)
        ));
        assert!(matches!(
            classify(&Status::invalid_argument("reports[0].state")),
            Failure::Refused(e) if e.is(Refusal::Invalid)
        ));
        assert!(matches!(
            classify(&Status::unavailable("no quorum")),
            Failure::Retry(_)
        ));
    }

    #[test]
    fn a_replica_without_namespace_uuid_is_matched_by_its_id() {
        let spec = v1::ReplicaSpec {
            replica_id: "AAAAAAAA-0000-4000-8000-000000000001".into(),
            target_nqn: "nqn.2016-06.io.spdk:r1".into(),
            portals: vec![v1::Portal {
                transport: v1::Transport::Tcp.into(),
                address: "10.0.0.1".into(),
                port: 4420,
            }],
            namespace_uuid: String::new(),
        };
        let r = replica(&spec, ReplicaState::Available).expect("converts");
        assert_eq!(
            r.ns_uuid.as_deref(),
            Some("aaaaaaaa-0000-4000-8000-000000000001")
        );
        assert_eq!(r.portals[0].address.trsvcid, "4420");
        let mut bad_spec = spec;
        bad_spec.portals[0].transport = 0;
        assert!(matches!(
            replica(&bad_spec, ReplicaState::Available),
            Err(ClusterError::BadAnswer(_))
        ));
    }

    #[test]
    fn finished_replacements_are_none_and_stages_round_trip() {
        for s in [
            Stage::Requested,
            Stage::Supplied,
            Stage::Attached,
            Stage::Synced,
            Stage::Retired,
            Stage::Done,
            Stage::Cancelled,
        ] {
            assert_eq!(stage(wire_stage(s)), Ok(s));
        }
        let done = v1::Replacement {
            replacement_id: 1,
            old_replica_id: "r1".into(),
            stage: v1::ReplacementStage::Done.into(),
            ..Default::default()
        };
        assert_eq!(replacement(Some(&done)), Ok(None));
        assert!(stage(99).is_err());
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_addr("127.0.0.1:7400").is_ok());
        assert!(check_addr("http://[::1]:7400").is_ok());
        assert!(check_addr("").is_err());
        assert!(check_addr("localhost").is_err());
    }

    #[tokio::test]
    async fn a_dead_cluster_is_unavailable_after_the_retries() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let cluster = GrpcCluster::new(Settings {
            monitors: vec![closed.clone()],
            timeout: Duration::from_secs(1),
            retries: 1,
            tls: None,
        });
        let host = HostIdentity {
            nqn: "nqn.2014-08.org.nvmexpress:host1".parse().expect("nqn"),
            id: None,
            name: HostName::default(),
        };
        let err = cluster.register(&host).await.expect_err("nothing listens");
        assert!(
            matches!(&err, ClusterError::Unavailable(m) if m.contains(&closed)),
            "{err}"
        );
    }
}
