//! The replica registry end to end: `ReplicaService` over real gRPC on a three-monitor
//! cluster with real stores, driven as a host agent and a storage backend would drive it.
//!
//! * the whole self-healing flow, stage by stage, with a monitor leader change in the
//!   middle (the flow resumes and no stage is committed twice) and a restart of the whole
//!   cluster at the end (the registry is kept);
//! * the seed 001 scenario: the two stale legs are never offered and the refusal says why;
//! * unknown volumes, replicas and hosts get NOT_FOUND with a one-line message, bad fields
//!   INVALID_ARGUMENT naming the field, and a follower redirects writes to the leader.

use std::future::Future;
use std::time::Duration;

use gwmon_monitor::codec;
use gwmon_proto::leader::leader_hint;
use gwmon_proto::v1::{self, replica_service_client::ReplicaServiceClient};
use gwmon_tests::{eventually, Cluster, DEADLINE};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

const VOLUME: &str = "5a0c0b8e-1d2f-4e6a-9b3c-7d8e9f0a1b2c";
const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:9d2e7c1a-4b5f-4c6d-8e7f-0a1b2c3d4e5f";
const GRACE_MS: u64 = 300;

fn replica_id(n: u8) -> String {
    format!("7b6a5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c{n:02x}")
}

fn replica(n: u8) -> v1::ReplicaSpec {
    v1::ReplicaSpec {
        replica_id: replica_id(n),
        target_nqn: format!("nqn.2016-06.io.spdk:replica{n}"),
        portals: vec![v1::Portal {
            transport: v1::Transport::Tcp.into(),
            address: format!("10.0.1.{n}"),
            port: 4420,
        }],
        namespace_uuid: replica_id(n),
    }
}

async fn client(c: &Cluster, id: u64) -> Option<ReplicaServiceClient<Channel>> {
    ReplicaServiceClient::connect(format!("http://{}", c.addrs[&id]))
        .await
        .ok()
}

/// Call the service at the current leader, as the agent and backend clients do: a
/// not-leader redirect, an unknown leader or an unreachable monitor is retried (within the
/// deadline) at the leader; any other answer is returned. Writes are idempotent, so a retry
/// after a lost answer is safe, which is the point of the design.
async fn call<T, F, Fut>(c: &Cluster, mut f: F) -> Result<T, Status>
where
    F: FnMut(ReplicaServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        let leader = c.leader().await;
        let answer = match client(c, leader).await {
            Some(cl) => f(cl).await.map(Response::into_inner),
            None => Err(Status::unavailable("cannot connect")),
        };
        match answer {
            Err(s)
                if (s.code() == Code::Unavailable || leader_hint(&s).is_some())
                    && Instant::now() < end =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

async fn ok<T, F, Fut>(c: &Cluster, what: &str, f: F) -> T
where
    F: FnMut(ReplicaServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    call(c, f)
        .await
        .unwrap_or_else(|s| panic!("{what}: {:?} {}", s.code(), s.message()))
}

async fn create_volume(c: &Cluster, replicas: u8) {
    let req = v1::CreateVolumeRequest {
        volume: Some(v1::VolumeSpec {
            volume_id: VOLUME.into(),
            alias: "vm-disk-1".into(),
            capacity_bytes: 10 << 30,
            replica_count: replicas.into(),
            grace_period_ms: GRACE_MS,
        }),
        replicas: (1..=replicas).map(replica).collect(),
    };
    let created = ok(c, "create volume", |mut cl| {
        let req = req.clone();
        async move { cl.create_volume(req).await }
    })
    .await;
    let v = created.volume.expect("volume view");
    assert_eq!(v.generation, 1);
    assert_eq!(v.replicas.len(), usize::from(replicas));
}

async fn heartbeat(c: &Cluster) -> v1::HeartbeatResponse {
    ok(c, "heartbeat", |mut cl| async move {
        cl.heartbeat(v1::HeartbeatRequest {
            host_nqn: HOST_NQN.into(),
            host_id: "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b0a".into(),
            name: "compute-1".into(),
            volume_ids: vec![VOLUME.into()],
        })
        .await
    })
    .await
}

async fn report(
    c: &Cluster,
    states: &[(u8, v1::ReplicaState, Option<u32>)],
) -> v1::ReportReplicaStatesResponse {
    let reports: Vec<v1::ReplicaStateReport> = states
        .iter()
        .map(|&(n, s, p)| v1::ReplicaStateReport {
            replica_id: replica_id(n),
            state: s.into(),
            sync_permille: p,
        })
        .collect();
    ok(c, "report", |mut cl| {
        let reports = reports.clone();
        async move {
            cl.report_replica_states(v1::ReportReplicaStatesRequest {
                host_nqn: HOST_NQN.into(),
                volume_id: VOLUME.into(),
                reports,
            })
            .await
        }
    })
    .await
}

async fn connection(c: &Cluster) -> Result<v1::GetVolumeConnectionResponse, Status> {
    call(c, |mut cl| async move {
        cl.get_volume_connection(v1::GetVolumeConnectionRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: VOLUME.into(),
        })
        .await
    })
    .await
}

async fn request_replacement(c: &Cluster, n: u8) -> Result<v1::Replacement, Status> {
    call(c, |mut cl| async move {
        cl.request_replacement(v1::RequestReplacementRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: VOLUME.into(),
            replica_id: replica_id(n),
            force: false,
        })
        .await
    })
    .await
    .map(|r| r.replacement.expect("replacement"))
}

async fn acknowledge(c: &Cluster, id: u64, done: v1::ReplacementStage) -> v1::Replacement {
    ok(c, "acknowledge", |mut cl| async move {
        cl.acknowledge_replacement(v1::AcknowledgeReplacementRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: VOLUME.into(),
            replacement_id: id,
            done: done.into(),
        })
        .await
    })
    .await
    .replacement
    .expect("replacement")
}

async fn show(c: &Cluster) -> v1::VolumeView {
    ok(c, "show volume", |mut cl| async move {
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

fn stage(p: &v1::Replacement) -> v1::ReplacementStage {
    v1::ReplacementStage::try_from(p.stage).expect("known stage")
}

fn state_of(v: &v1::VolumeView, n: u8) -> v1::ReplicaState {
    let r = v
        .replicas
        .iter()
        .find(|r| {
            r.replica
                .as_ref()
                .is_some_and(|s| s.replica_id == replica_id(n))
        })
        .unwrap_or_else(|| panic!("replica {n} listed"));
    v1::ReplicaState::try_from(r.state).expect("known state")
}

fn ids(specs: &[v1::ReplicaSpec]) -> Vec<String> {
    specs.iter().map(|r| r.replica_id.clone()).collect()
}

/// Every running monitor holds the same registry once it has applied `index`.
async fn registries_agree(c: &Cluster) {
    let leader = c.leader().await;
    let index = c.monitor(leader).core.reader().last_applied_index();
    c.applied_everywhere(index).await;
    let encoded: Vec<Vec<u8>> = c
        .monitors
        .values()
        .map(|m| {
            m.core
                .reader()
                .read_registry(|r| codec::encode(r).expect("encode"))
        })
        .collect();
    assert!(
        encoded.windows(2).all(|w| w[0] == w[1]),
        "monitors disagree on the registry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_replica_is_replaced_stage_by_stage_across_a_leader_change_and_a_restart() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    create_volume(&c, 3).await;
    heartbeat(&c).await;
    let conn = connection(&c).await.expect("connection");
    assert_eq!(
        ids(&conn.replicas),
        vec![replica_id(1), replica_id(2), replica_id(3)]
    );

    // 1. The replica goes faulty and the host reports it; a repeat is no news.
    let first = report(&c, &[(1, v1::ReplicaState::Faulty, None)]).await;
    assert_eq!(first.changed_replica_ids, vec![replica_id(1)]);
    let again = report(&c, &[(1, v1::ReplicaState::Faulty, None)]).await;
    assert!(again.changed_replica_ids.is_empty());
    let conn = connection(&c).await.expect("connection");
    assert_eq!(ids(&conn.replicas), vec![replica_id(2), replica_id(3)]);

    // 2. Too early: the cluster measures the grace period and says so.
    let early = request_replacement(&c, 1).await;
    if let Err(s) = &early {
        assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
        assert!(s.message().contains("grace period"), "{}", s.message());
        assert_eq!(leader_hint(s), None);
    }
    // 3. After it, the request is accepted (polled, as the agent's period would).
    let end = Instant::now() + DEADLINE;
    let p = loop {
        match request_replacement(&c, 1).await {
            Ok(p) => break p,
            Err(s) if s.code() == Code::FailedPrecondition && Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("request: {:?} {}", s.code(), s.message()),
        }
    };
    assert_eq!(stage(&p), v1::ReplacementStage::Requested);
    assert_eq!(p.old_replica_id, replica_id(1));
    assert_eq!(p.requested_by, HOST_NQN);
    let id = p.replacement_id;
    // An agent that restarted asks again and learns of the same replacement, also from its
    // heartbeat.
    assert_eq!(
        request_replacement(&c, 1)
            .await
            .expect("again")
            .replacement_id,
        id
    );
    let hb = heartbeat(&c).await;
    assert_eq!(
        hb.replacements
            .iter()
            .map(|p| p.replacement_id)
            .collect::<Vec<_>>(),
        vec![id]
    );

    // 4. The backend supplies the new replica (twice: a retry changes nothing).
    for _ in 0..2 {
        let supplied = ok(&c, "supply", |mut cl| async move {
            cl.supply_replacement(v1::SupplyReplacementRequest {
                volume_id: VOLUME.into(),
                replacement_id: id,
                new_replica: Some(replica(4)),
            })
            .await
        })
        .await
        .replacement
        .expect("replacement");
        assert_eq!(stage(&supplied), v1::ReplacementStage::Supplied);
        assert_eq!(
            supplied.new_replica.as_ref().map(|r| r.replica_id.clone()),
            Some(replica_id(4))
        );
    }
    let conn = connection(&c).await.expect("connection");
    assert!(conn
        .excluded
        .iter()
        .any(|e| e.replica_id == replica_id(4) && e.reason == i32::from(v1::Exclusion::NotSynced)));

    // 5. The leader goes away in the middle of the replacement.
    registries_agree(&c).await;
    let old_leader = c.leader().await;
    c.stop(old_leader).await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, old_leader);
    assert_eq!(
        stage(&show(&c).await.replacement.expect("under way")),
        v1::ReplacementStage::Supplied
    );

    // 6. The host attached the new leg; its acknowledgement reaches the new leader. Sent
    //    again (the answer was lost), the stage is not committed a second time.
    let attached = acknowledge(&c, id, v1::ReplacementStage::Attached).await;
    assert_eq!(stage(&attached), v1::ReplacementStage::Attached);
    let repeated = acknowledge(&c, id, v1::ReplacementStage::Attached).await;
    assert_eq!(
        repeated.stage_since_ms, attached.stage_since_ms,
        "the stage was not repeated"
    );
    // Skipping a stage is refused.
    let skipped = call(&c, |mut cl| async move {
        cl.acknowledge_replacement(v1::AcknowledgeReplacementRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: VOLUME.into(),
            replacement_id: id,
            done: v1::ReplacementStage::Retired.into(),
        })
        .await
    })
    .await
    .expect_err("retired before synced");
    assert_eq!(skipped.code(), Code::FailedPrecondition);

    c.restart(old_leader).await;
    report(&c, &[(4, v1::ReplicaState::Synchronizing, Some(500))]).await;
    let v = show(&c).await;
    let new = v
        .replicas
        .iter()
        .find(|r| {
            r.replica
                .as_ref()
                .is_some_and(|s| s.replica_id == replica_id(4))
        })
        .expect("new replica listed");
    assert_eq!(new.sync_permille, Some(500));

    // 7. Synced: the new replica is in sync, the old one retiring.
    let synced = acknowledge(&c, id, v1::ReplacementStage::Synced).await;
    assert_eq!(stage(&synced), v1::ReplacementStage::Synced);
    let v = show(&c).await;
    assert_eq!(state_of(&v, 4), v1::ReplicaState::Available);
    assert_eq!(state_of(&v, 1), v1::ReplicaState::Terminating);
    let conn = connection(&c).await.expect("connection");
    assert_eq!(
        ids(&conn.replicas),
        vec![replica_id(2), replica_id(3), replica_id(4)]
    );
    assert!(conn.excluded.iter().any(
        |e| e.replica_id == replica_id(1) && e.reason == i32::from(v1::Exclusion::Terminating)
    ));

    // 8. The host took the old leg out; the backend deletes it and confirms (twice).
    acknowledge(&c, id, v1::ReplacementStage::Retired).await;
    for _ in 0..2 {
        let done = ok(&c, "confirm", |mut cl| async move {
            cl.confirm_replica_deleted(v1::ConfirmReplicaDeletedRequest {
                volume_id: VOLUME.into(),
                replica_id: replica_id(1),
            })
            .await
        })
        .await
        .replacement
        .expect("replacement");
        assert_eq!(stage(&done), v1::ReplacementStage::Done);
    }
    let v = show(&c).await;
    assert!(v.replacement.is_none());
    assert_eq!(
        v.last_replacement.as_ref().map(|p| p.replacement_id),
        Some(id)
    );
    let listed: Vec<String> = v
        .replicas
        .iter()
        .filter_map(|r| r.replica.as_ref().map(|s| s.replica_id.clone()))
        .collect();
    assert_eq!(listed, vec![replica_id(2), replica_id(3), replica_id(4)]);
    registries_agree(&c).await;

    // 9. The whole cluster restarts: the registry is kept, exactly.
    let before = show(&c).await;
    c.stop_all().await;
    for id in 1..=3 {
        c.restart(id).await;
    }
    assert_eq!(show(&c).await, before);
    let hosts = ok(&c, "list hosts", |mut cl| async move {
        cl.list_hosts(v1::ListHostsRequest { stale: false }).await
    })
    .await
    .hosts;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].host_nqn, HOST_NQN);
    assert_eq!(hosts[0].volume_ids, vec![VOLUME.to_owned()]);
    registries_agree(&c).await;
    c.stop_all().await;
}

/// Seed 001: four replicas, two lost, writes go on to the other two; after a reboot the host
/// sees only the two lost earlier. They are never offered, and the refusal says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_the_stale_legs_are_refused_with_the_reason() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    create_volume(&c, 4).await;
    heartbeat(&c).await;
    report(
        &c,
        &[
            (1, v1::ReplicaState::Missing, None),
            (2, v1::ReplicaState::Missing, None),
        ],
    )
    .await;
    report(
        &c,
        &[
            (1, v1::ReplicaState::Available, None),
            (2, v1::ReplicaState::Available, None),
            (3, v1::ReplicaState::Missing, None),
            (4, v1::ReplicaState::Missing, None),
        ],
    )
    .await;
    let conn = connection(&c).await.expect("connection");
    assert_eq!(ids(&conn.replicas), vec![replica_id(3), replica_id(4)]);
    assert_eq!(conn.generation, 2);
    let stale: Vec<&v1::ExcludedReplica> = conn
        .excluded
        .iter()
        .filter(|e| e.reason == i32::from(v1::Exclusion::Stale))
        .collect();
    assert_eq!(stale.len(), 2);
    assert!(stale[0].message.contains("stale"), "{}", stale[0].message);
    let v = show(&c).await;
    assert!(v.replicas.iter().filter(|r| r.stale).count() == 2);

    // The good legs fail for good: there is nothing safe to build the array from.
    report(
        &c,
        &[
            (3, v1::ReplicaState::Faulty, None),
            (4, v1::ReplicaState::Faulty, None),
        ],
    )
    .await;
    let refused = connection(&c).await.expect_err("nothing safe");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(leader_hint(&refused), None, "a refusal, not a redirect");
    for n in [1, 2] {
        assert!(
            refused
                .message()
                .contains(&format!("replica {} is stale", replica_id(n))),
            "{}",
            refused.message()
        );
    }
    assert!(
        !refused.message().contains('\n'),
        "one line: {}",
        refused.message()
    );
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_not_found_bad_fields_are_named_and_followers_redirect() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    create_volume(&c, 2).await;
    let unknown_volume = "00000000-0000-4000-8000-000000000bad";

    // A host that never registered.
    let s = connection(&c).await.expect_err("unregistered host");
    assert_eq!(s.code(), Code::NotFound);
    assert_eq!(
        s.message(),
        format!("unknown host {HOST_NQN}: register it first (RegisterHost or Heartbeat)")
    );
    heartbeat(&c).await;

    // An unknown volume and an unknown replica, in a report.
    let s = call(&c, |mut cl| async move {
        cl.report_replica_states(v1::ReportReplicaStatesRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: unknown_volume.into(),
            reports: vec![v1::ReplicaStateReport {
                replica_id: replica_id(1),
                state: v1::ReplicaState::Missing.into(),
                sync_permille: None,
            }],
        })
        .await
    })
    .await
    .expect_err("unknown volume");
    assert_eq!(s.code(), Code::NotFound);
    assert_eq!(s.message(), format!("unknown volume {unknown_volume}"));

    let s = call(&c, |mut cl| async move {
        cl.report_replica_states(v1::ReportReplicaStatesRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: VOLUME.into(),
            reports: vec![v1::ReplicaStateReport {
                replica_id: replica_id(9),
                state: v1::ReplicaState::Missing.into(),
                sync_permille: None,
            }],
        })
        .await
    })
    .await
    .expect_err("unknown replica");
    assert_eq!(s.code(), Code::NotFound);
    assert_eq!(
        s.message(),
        format!("volume {VOLUME} has no replica {}", replica_id(9))
    );

    let s = call(&c, |mut cl| async move {
        cl.show_volume(v1::ShowVolumeRequest {
            volume: "no-such-alias".into(),
            stale: false,
        })
        .await
    })
    .await
    .expect_err("unknown alias");
    assert_eq!(s.code(), Code::NotFound);
    assert_eq!(
        show(&c).await.volume.map(|v| v.alias),
        Some("vm-disk-1".to_owned())
    );

    // A malformed field is named by its path; a host cannot claim TERMINATING.
    let s = call(&c, |mut cl| async move {
        cl.report_replica_states(v1::ReportReplicaStatesRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: VOLUME.into(),
            reports: vec![v1::ReplicaStateReport {
                replica_id: replica_id(1),
                state: v1::ReplicaState::Terminating.into(),
                sync_permille: None,
            }],
        })
        .await
    })
    .await
    .expect_err("terminating");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("reports[0].state"), "{}", s.message());

    // A follower redirects a write to the leader, and answers a stale read itself.
    let leader = c.leader().await;
    let follower = *c
        .addrs
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let mut cl = client(&c, follower).await.expect("connect to follower");
    let s = cl
        .delete_volume(v1::DeleteVolumeRequest {
            volume_id: VOLUME.into(),
        })
        .await
        .expect_err("follower refuses writes");
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert_eq!(leader_hint(&s), Some(c.addrs[&leader].as_str()));
    eventually("the follower has the volume", || {
        let mut cl = cl.clone();
        async move {
            cl.list_volumes(v1::ListVolumesRequest { stale: true })
                .await
                .is_ok_and(|r| r.into_inner().volumes.len() == 1)
        }
    })
    .await;
    c.stop_all().await;
}
