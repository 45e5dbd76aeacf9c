//! The nvmeof-agent's own code (connector and daemon, over its gRPC client) against a real
//! three-monitor cluster, on a simulated host: the whole self-healing flow, with a monitor
//! leader change and an agent restart in the middle of the replacement. The test plays the
//! storage backend through `ReplicaService`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gwmon_agent::cluster::grpc::{GrpcCluster, Settings};
use gwmon_agent::cluster::{HostIdentity, ReplicaId, VolumeId};
use gwmon_agent::connector::Connector;
use gwmon_agent::daemon::Daemon;
use gwmon_agent::host::sim::SimHost;
use gwmon_agent::host::{Host, HostCommand, LegState};
use gwmon_agent::AgentConfig;
use gwmon_proto::domain::Nqn;
use gwmon_proto::leader::leader_hint;
use gwmon_proto::v1::{self, replica_service_client::ReplicaServiceClient};
use gwmon_tests::{Cluster, DEADLINE};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

const VOLUME: &str = "c0ffee00-1d2f-4e6a-9b3c-7d8e9f0a1b2c";
const GRACE_MS: u64 = 200;

fn replica_id(n: u8) -> String {
    format!("0b0e0a0d-3e2f-4a1b-8c9d-0e1f2a3b4c{n:02x}")
}

fn target(n: u8) -> Nqn {
    format!("nqn.2016-06.io.spdk:agent-replica{n}")
        .parse()
        .expect("nqn")
}

fn ns_uuid(n: u8) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

fn spec(n: u8) -> v1::ReplicaSpec {
    v1::ReplicaSpec {
        replica_id: replica_id(n),
        target_nqn: target(n).to_string(),
        portals: vec![v1::Portal {
            transport: v1::Transport::Tcp.into(),
            address: format!("10.0.2.{n}"),
            port: 4420,
        }],
        namespace_uuid: ns_uuid(n),
    }
}

/// The backend exports replica `n`: the simulated host can connect to it.
fn export(host: &SimHost, n: u8) {
    host.add_target(&target(n), &format!("10.0.2.{n}"), "4420", &ns_uuid(n));
}

fn identity() -> HostIdentity {
    HostIdentity {
        nqn: "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-2222-3333-4444-555555555555"
            .parse()
            .expect("nqn"),
        id: Some(
            "aaaaaaaa-2222-3333-4444-555555555555"
                .parse()
                .expect("host id"),
        ),
        name: "compute-9".parse().expect("host name"),
    }
}

/// The backend's calls, at the leader, retried across a leader change.
async fn backend<T, F, Fut>(c: &Cluster, what: &str, mut f: F) -> T
where
    F: FnMut(ReplicaServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        let leader = c.leader().await;
        let answer =
            match ReplicaServiceClient::connect(format!("http://{}", c.addrs[&leader])).await {
                Ok(cl) => f(cl).await.map(Response::into_inner),
                Err(_) => Err(Status::unavailable("cannot connect")),
            };
        match answer {
            Ok(v) => return v,
            Err(s)
                if (s.code() == Code::Unavailable || leader_hint(&s).is_some())
                    && Instant::now() < end =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("{what}: {:?} {}", s.code(), s.message()),
        }
    }
}

async fn show(c: &Cluster) -> v1::VolumeView {
    backend(c, "show", |mut cl| async move {
        cl.show_volume(v1::ShowVolumeRequest {
            volume: VOLUME.into(),
            stale: false,
        })
        .await
    })
    .await
    .volume
    .expect("volume")
}

fn stage_of(v: &v1::VolumeView) -> Option<v1::ReplacementStage> {
    v.replacement
        .as_ref()
        .and_then(|r| v1::ReplacementStage::try_from(r.stage).ok())
}

fn state_of(v: &v1::VolumeView, n: u8) -> Option<v1::ReplicaState> {
    v.replicas
        .iter()
        .find(|r| {
            r.replica
                .as_ref()
                .is_some_and(|s| s.replica_id == replica_id(n))
        })
        .and_then(|r| v1::ReplicaState::try_from(r.state).ok())
}

/// Run daemon passes until `done` holds for the volume as the cluster has it.
async fn passes_until(
    c: &Cluster,
    d: &mut Daemon<SimHost, Arc<GrpcCluster>>,
    what: &str,
    done: impl Fn(&v1::VolumeView) -> bool,
) -> v1::VolumeView {
    let stop = CancellationToken::new();
    let end = Instant::now() + DEADLINE;
    loop {
        d.pass(&stop).await;
        let v = show(c).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < end, "never: {what}; volume {v:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_heals_a_volume_across_a_leader_change_and_its_own_restart() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    c.leader().await;
    backend(&c, "create volume", |mut cl| async move {
        cl.create_volume(v1::CreateVolumeRequest {
            volume: Some(v1::VolumeSpec {
                volume_id: VOLUME.into(),
                alias: "vmdisk9".into(),
                capacity_bytes: 1 << 30,
                replica_count: 2,
                grace_period_ms: GRACE_MS,
            }),
            replicas: vec![spec(1), spec(2)],
        })
        .await
    })
    .await;

    let host = SimHost::new();
    export(&host, 1);
    export(&host, 2);
    let cluster = Arc::new(GrpcCluster::new(Settings {
        monitors: c.addrs.values().cloned().collect(),
        timeout: Duration::from_secs(2),
        retries: 20,
        tls: None,
    }));
    let state = tempfile::tempdir().expect("tempdir");
    let config = AgentConfig {
        identity: identity(),
        period: Duration::from_secs(30),
        device_wait: Duration::from_secs(2),
        fast_io_fail: Duration::from_secs(2),
        state_dir: state.path().to_owned(),
    };
    let volume: VolumeId = VOLUME.parse().expect("volume id");
    let connected = Connector {
        host: &host,
        cluster: &cluster,
        config: &config,
    }
    .connect(&volume)
    .await
    .expect("connect");
    let snap = host.snapshot().expect("snapshot");
    let array = snap.array_named("vmdisk9").expect("the array is built");
    assert_eq!(array.legs.len(), 2, "{}", connected.path());

    // Replica 2's target goes away: reported, and after the grace a replacement is asked.
    let mut d = Daemon::new(host.clone(), cluster.clone(), config.clone());
    host.lose_target(&target(2));
    let v = passes_until(&c, &mut d, "replacement requested", |v| {
        stage_of(v) == Some(v1::ReplacementStage::Requested)
    })
    .await;
    assert_ne!(state_of(&v, 2), Some(v1::ReplicaState::Available));
    let id = v.replacement.as_ref().expect("replacement").replacement_id;

    // The backend supplies replica 3; then the leader monitor goes away.
    export(&host, 3);
    backend(&c, "supply", |mut cl| async move {
        cl.supply_replacement(v1::SupplyReplacementRequest {
            volume_id: VOLUME.into(),
            replacement_id: id,
            new_replica: Some(spec(3)),
        })
        .await
    })
    .await;
    let leader = c.leader().await;
    c.stop(leader).await;

    // The agent attaches the new leg under the new leader.
    passes_until(&c, &mut d, "new leg attached", |v| {
        stage_of(v) == Some(v1::ReplacementStage::Attached)
    })
    .await;
    let adds = |h: &SimHost| h.count(|cmd| matches!(cmd, HostCommand::MdAdd { .. }));
    assert_eq!(adds(&host), 1);

    // The agent restarts mid-resync: a new daemon resumes from the committed stage.
    drop(d);
    let mut d = Daemon::new(host.clone(), cluster.clone(), config.clone());
    let array_name = "vmdisk9".parse().expect("array name");
    host.sync_to(&array_name, host.recovery_total() / 2);
    passes_until(&c, &mut d, "sync progress reported", |v| {
        v.replicas.iter().any(|r| {
            r.replica
                .as_ref()
                .is_some_and(|s| s.replica_id == replica_id(3))
                && r.sync_permille == Some(500)
        })
    })
    .await;
    assert_eq!(
        adds(&host),
        1,
        "the restarted agent does not add the leg again"
    );

    host.finish_sync(&array_name);
    let v = passes_until(&c, &mut d, "old leg retired", |v| {
        stage_of(v) == Some(v1::ReplacementStage::Retired)
    })
    .await;
    assert_eq!(state_of(&v, 3), Some(v1::ReplicaState::Available));
    assert_eq!(state_of(&v, 2), Some(v1::ReplicaState::Terminating));

    // The backend deletes replica 2 and confirms: done.
    backend(&c, "confirm", |mut cl| async move {
        cl.confirm_replica_deleted(v1::ConfirmReplicaDeletedRequest {
            volume_id: VOLUME.into(),
            replica_id: replica_id(2),
        })
        .await
    })
    .await;
    let v = passes_until(&c, &mut d, "replacement done", |v| v.replacement.is_none()).await;
    assert_eq!(state_of(&v, 2), None, "the old replica is gone");
    assert_eq!(state_of(&v, 1), Some(v1::ReplicaState::Available));
    assert_eq!(state_of(&v, 3), Some(v1::ReplicaState::Available));

    let snap = host.snapshot().expect("snapshot");
    let array = snap.array_named("vmdisk9").expect("array");
    assert_eq!(array.legs.len(), 2);
    assert!(array.legs.iter().all(|l| l.state() == LegState::InSync));
    assert_eq!(adds(&host), 1);
    let _: ReplicaId = replica_id(3).parse().expect("replica id");
    c.stop_all().await;
}
