//! `nvme-gw volume create|show|list|replace` and `host list`, the real binary against an
//! in-process cluster of three monitors: the documented JSON, the plain tables, refusals
//! (exit 1, one line) and a dead cluster (exit 3).

mod common;

use common::*;
use gwmon_proto::v1::{self, replica_service_client::ReplicaServiceClient};
use gwmon_tests::Cluster;

const J: &str = "--format=json";
const P: &str = "--format=plain";
const VOLUME: &str = "5a0c0b8e-1d2f-4e6a-9b3c-7d8e9f0a1b2c";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:9d2e7c1a-4b5f-4c6d-8e7f-0a1b2c3d4e5f";

fn replica_id(n: u8) -> String {
    format!("7b6a5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c{n:02x}")
}

fn replica_arg(n: u8) -> String {
    format!(
        "{},nqn.2016-06.io.spdk:replica{n},tcp:10.0.1.{n}:4420,rdma:[fd00::{n}]:4421",
        replica_id(n)
    )
}

/// What a host agent does, over gRPC: register with a heartbeat, then report replica 1
/// faulty.
async fn agent_reports_replica_1_faulty(cluster: &Cluster) {
    let leader = cluster.leader().await;
    let mut c = ReplicaServiceClient::connect(format!("http://{}", cluster.addrs[&leader]))
        .await
        .expect("connect");
    c.heartbeat(v1::HeartbeatRequest {
        host_nqn: HOST.into(),
        host_id: String::new(),
        name: "compute-1".into(),
        volume_ids: vec![VOLUME.into()],
    })
    .await
    .expect("heartbeat");
    c.report_replica_states(v1::ReportReplicaStatesRequest {
        host_nqn: HOST.into(),
        volume_id: VOLUME.into(),
        reports: vec![v1::ReplicaStateReport {
            replica_id: replica_id(1),
            state: v1::ReplicaState::Faulty.into(),
            sync_permille: None,
        }],
    })
    .await
    .expect("report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_and_host_commands_print_the_documented_json_and_tables() {
    let cluster = Cluster::start(3, 0, |_| {}).await;
    cluster.leader().await;
    let m = all(&cluster);

    // create, idempotently
    let (r1, r2) = (replica_arg(1), replica_arg(2));
    let create = [
        J,
        "volume",
        "create",
        VOLUME,
        "--alias",
        "vm-disk-1",
        "--capacity",
        "10G",
        "--replica",
        &r1,
        "--replica",
        &r2,
        "--grace-secs",
        "3600",
    ];
    let v = nvme_gw(&m, &create).await.json();
    assert_eq!(v["volume_id"], VOLUME);
    assert_eq!(v["alias"], "vm-disk-1");
    assert_eq!(v["capacity_bytes"], 10u64 << 30);
    assert_eq!(v["replica_count"], 2);
    assert_eq!(v["grace_period_ms"], 3_600_000);
    assert_eq!(v["generation"], 1);
    assert!(v["replacement"].is_null() && v["last_replacement"].is_null());
    let replicas = v["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 2);
    let first = &replicas[0];
    assert_eq!(first["replica_id"], replica_id(1));
    assert_eq!(first["state"], "available");
    assert_eq!(first["stale"], false);
    assert_eq!(first["in_sync_generation"], 1);
    assert_eq!(first["target_nqn"], "nqn.2016-06.io.spdk:replica1");
    assert_eq!(
        first["portals"],
        serde_json::json!(["tcp://10.0.1.1:4420", "rdma://[fd00::1]:4421"])
    );
    for key in [
        "state_since_ms",
        "bad_since_ms",
        "sync_permille",
        "reported_by",
        "namespace_uuid",
    ] {
        assert!(first.get(key).is_some(), "missing key {key}: {first}");
    }
    let again = nvme_gw(&m, &create).await.json();
    assert_eq!(
        again["created_at_ms"], v["created_at_ms"],
        "creating again changes nothing"
    );

    // show, by id and by alias; list
    let by_alias = nvme_gw(&m, &[J, "volume", "show", "vm-disk-1"])
        .await
        .json();
    assert_eq!(by_alias["volume_id"], VOLUME);
    let list = nvme_gw(&m, &[J, "volume", "list"]).await.json();
    assert_eq!(list["volumes"].as_array().map(Vec::len), Some(1));

    // A host reports replica 1 faulty; the grace period (an hour) has not passed.
    agent_reports_replica_1_faulty(&cluster).await;
    let hosts = nvme_gw(&m, &[J, "host", "list"]).await.json();
    let host = &hosts["hosts"][0];
    assert_eq!(host["host_nqn"], HOST);
    assert_eq!(host["name"], "compute-1");
    assert!(host["host_id"].is_null());
    assert!(host["last_heartbeat_ms"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(host["volume_ids"], serde_json::json!([VOLUME]));

    let shown = nvme_gw(&m, &[J, "volume", "show", VOLUME]).await.json();
    assert_eq!(shown["replicas"][0]["state"], "faulty");
    assert_eq!(shown["replicas"][0]["reported_by"], HOST);
    assert!(shown["replicas"][0]["bad_since_ms"].as_u64().is_some());

    let early = nvme_gw(&m, &[J, "volume", "replace", VOLUME, &replica_id(1)]).await;
    let line = early.refused_with(1);
    assert!(line.contains("grace period"), "{line}");

    // An operator forces it.
    let forced = nvme_gw(
        &m,
        &[J, "volume", "replace", VOLUME, &replica_id(1), "--force"],
    )
    .await
    .json();
    let p = &forced["replacement"];
    assert_eq!(p["stage"], "requested");
    assert_eq!(p["old_replica_id"], replica_id(1));
    assert_eq!(p["forced"], true);
    assert!(p["requested_by"].is_null() && p["new_replica_id"].is_null());
    let id = p["replacement_id"].as_u64().expect("id");
    // Asking again answers with the same replacement; the alias names the volume as it
    // does for `volume show`.
    let again = nvme_gw(
        &m,
        &[
            J,
            "volume",
            "replace",
            "vm-disk-1",
            &replica_id(1),
            "--force",
        ],
    )
    .await
    .json();
    assert_eq!(again["replacement"]["replacement_id"], id);

    // Plain forms for people.
    let plain = nvme_gw(&m, &[P, "volume", "show", VOLUME]).await;
    let text = plain.ok();
    assert!(
        text.starts_with(&format!(
            "volume {VOLUME} (/dev/md/vm-disk-1), 10 GiB, 1 of 2 replicas in sync"
        )),
        "{text}"
    );
    assert!(
        text.contains("REPLICA") && text.contains("faulty"),
        "{text}"
    );
    assert!(
        text.contains(&format!("replacement {id} of replica {}", replica_id(1))),
        "{text}"
    );
    let plain = nvme_gw(&m, &[P, "volume", "list"]).await;
    assert!(plain.ok().contains("1/2"), "{}", plain.stdout);
    let plain = nvme_gw(&m, &[P, "host", "list"]).await;
    assert!(plain.ok().contains("compute-1"), "{}", plain.stdout);

    // Refusals: one line, exit 1.
    let unknown = nvme_gw(
        &m,
        &[J, "volume", "show", "00000000-0000-4000-8000-000000000bad"],
    )
    .await;
    assert!(unknown.refused_with(1).contains("unknown volume"));
    let unknown = nvme_gw(&m, &[J, "volume", "show", "no-such-disk"]).await;
    assert!(unknown
        .refused_with(1)
        .contains("no volume has the alias no-such-disk"));
    let bad = nvme_gw(&m, &[J, "volume", "replace", "vol1", &replica_id(1)]).await;
    assert!(bad.refused_with(1).contains("no volume has the alias vol1"));
    let bad = nvme_gw(
        &m,
        &[
            J,
            "volume",
            "create",
            VOLUME,
            "--alias",
            "x",
            "--capacity",
            "10X",
            "--replica",
            &r1,
        ],
    )
    .await;
    assert!(bad.refused_with(1).contains("invalid --capacity"));
    let bad = nvme_gw(
        &m,
        &[
            J,
            "volume",
            "create",
            VOLUME,
            "--alias",
            "x",
            "--capacity",
            "1G",
            "--replica",
            "not-a-uuid,nqn.2016-06.io.spdk:r,tcp:10.0.0.1:4420",
        ],
    )
    .await;
    assert!(bad.refused_with(1).contains("replica[0].replica_id"));
    let taken = nvme_gw(
        &m,
        &[
            J,
            "volume",
            "create",
            VOLUME,
            "--alias",
            "other",
            "--capacity",
            "1G",
            "--replica",
            &r1,
        ],
    )
    .await;
    assert!(taken.refused_with(1).contains("already registered"));

    // A dead cluster: exit 3.
    let dead = nvme_gw(
        &closed_port(),
        &[J, "--retries", "1", "--timeout-ms", "500", "volume", "list"],
    )
    .await;
    assert!(dead.refused_with(3).contains("no monitor could answer"));
}
