//! Mutual TLS end to end: three monitors whose Raft, admin, gateway and replica traffic all
//! run over TLS with certificates made by `nvme-gw certs`, and each audience authorized by
//! the identity its certificate names: what it may do, what it is refused (PERMISSION_DENIED
//! naming what was missing), and callers without a certificate of the cluster's CA.

#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{all, gateway, target_file, until_json, Run, BIN};
use gwmon_client::adapters::file::FileTarget;
use gwmon_client::ClientConfig;
use gwmon_monitor::node::Plumbing;
use gwmon_proto::domain::{self, GroupKey, Hello};
use gwmon_proto::tls::{Tls, TlsFiles};
use gwmon_proto::v1;
use gwmon_proto::v1::gateway_service_client::GatewayServiceClient;
use gwmon_proto::v1::raft_service_client::RaftServiceClient;
use gwmon_proto::v1::replica_service_client::ReplicaServiceClient;
use gwmon_tests::Cluster;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tonic::Code;

const J: &str = "--format=json";
const HOST: &str = "nqn.2014-08.com.example:host-one";

/// A CA and one certificate per party, made by the binary as an operator would.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        pki.certs(&["init"]);
        for id in ["1", "2", "3"] {
            pki.certs(&["issue", "monitor", id]);
        }
        pki.certs(&["issue", "admin", "alice"]);
        pki.certs(&["issue", "reader", "bob"]);
        pki.certs(&["issue", "gateway", "rbd//gw1"]);
        pki.certs(&["issue", "host", HOST]);
        pki
    }

    fn certs(&self, args: &[&str]) {
        let out = Command::new(BIN)
            .arg("certs")
            .args(args)
            .arg("--dir")
            .arg(self.dir.path())
            .output()
            .expect("run nvme-gw certs");
        assert!(out.status.success(), "certs {args:?}: {out:?}");
    }

    /// The files of `stem` (`monitor-1`, `admin-alice`, ...).
    fn files(&self, stem: &str) -> TlsFiles {
        files_in(self.dir.path(), stem)
    }

    fn tls(&self, stem: &str) -> Tls {
        Tls::load(&self.files(stem)).expect("tls files load")
    }

    /// `--tls-ca ... --tls-cert ... --tls-key ...` for the CLI.
    fn flags(&self, stem: &str) -> Vec<String> {
        let f = self.files(stem);
        [
            ("--tls-ca", f.ca),
            ("--tls-cert", f.cert),
            ("--tls-key", f.key),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()])
        .collect()
    }
}

fn files_in(dir: &Path, stem: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
    }
}

/// Three monitors serving and dialling each other with mutual TLS only.
async fn tls_cluster(pki: &Pki) -> Cluster {
    Cluster::start_each(
        3,
        0,
        |c| c.tls = Some(pki.files(&format!("monitor-{}", c.node_id))),
        |id| match id {
            0 => Plumbing::default(),
            id => Plumbing::tcp(Some(pki.tls(&format!("monitor-{id}")))),
        },
    )
    .await
}

/// `nvme-gw` as `stem`'s holder.
async fn as_holder(cluster: &Cluster, pki: &Pki, stem: &str, args: &[&str]) -> Run {
    let mut all_args: Vec<String> = pki.flags(stem);
    all_args.extend(args.iter().map(|a| (*a).to_owned()));
    let monitors = all(cluster);
    tokio::task::spawn_blocking(move || common::run_blocking(&monitors, &all_args))
        .await
        .expect("join")
}

fn hello(gateway: &str) -> v1::GatewayMessage {
    domain::GatewayMessage::Hello(Hello {
        gateway: gateway.parse().expect("id"),
        key: GroupKey::new("rbd".parse().expect("pool"), "".parse().expect("group")),
        software_version: "test".to_owned(),
        incarnation: 7,
    })
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audience_is_authorized_by_its_certificate() {
    let pki = Pki::new();
    let cluster = tls_cluster(&pki).await;
    // Raft elected a leader and commits over TLS: an admin's change goes through.
    let leader = cluster.leader().await;
    let leader_addr = cluster.addrs[&leader].clone();
    let created = as_holder(
        &cluster,
        &pki,
        "admin-alice",
        &[J, "create", "gw1", "rbd", ""],
    )
    .await;
    created.json();

    // A reader reads, and is refused every change with what it lacks.
    let show = as_holder(&cluster, &pki, "reader-bob", &[J, "show", "rbd", ""]).await;
    assert_eq!(gateway(&show.json(), "gw1")["gw-id"], "gw1");
    let refused = as_holder(
        &cluster,
        &pki,
        "reader-bob",
        &[J, "delete", "gw1", "rbd", ""],
    )
    .await;
    assert_eq!(
        refused.refused_with(1),
        "nvme-gw: permission denied: AdminService/DeleteGateway needs an admin certificate (gwmon://admin/NAME); the caller is gwmon://reader/bob"
    );

    // The gateway's own certificate opens its session: it becomes AVAILABLE.
    let dir = tempfile::tempdir().expect("tempdir");
    let target = target_file(dir.path(), "gw1", 4420);
    let key = GroupKey::new("rbd".parse().expect("pool"), "".parse().expect("group"));
    let config = ClientConfig::builder("gw1".parse().expect("id"), key)
        .monitors(cluster.addrs.values().cloned())
        .beacon_interval(Duration::from_millis(100))
        .tls(Some(pki.tls("gateway-rbd__gw1")))
        .build()
        .expect("client config");
    let stop = CancellationToken::new();
    let session = tokio::spawn(gwmon_client::run(
        config,
        Arc::new(FileTarget::new(&target)),
        stop.clone(),
    ));
    let reader_flags = pki.flags("reader-bob");
    let mut show_args: Vec<&str> = reader_flags.iter().map(String::as_str).collect();
    show_args.extend([J, "show", "rbd", ""]);
    until_json(&all(&cluster), &show_args, "gw1 AVAILABLE over TLS", |v| {
        gateway(v, "gw1")["Availability"] == "AVAILABLE"
    })
    .await;

    // What the refusals below must leave as it is: the groups, their gateways, the
    // tunables and the leader's term.
    let before = state_of(&cluster, leader);

    // ... but not another gateway's, and nobody else opens a gateway's session.
    let gw_tls = pki.tls("gateway-rbd__gw1");
    let channel = gw_tls
        .endpoint(&leader_addr)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect with the gateway's certificate");
    let status = GatewayServiceClient::new(channel)
        .session(tokio_stream::iter(vec![hello("gw2")]))
        .await
        .expect_err("a session as another gateway");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status
            .message()
            .contains("gwmon://gateway/rbd//gw1 may open a session only as itself"),
        "{status:?}"
    );
    let admin_channel = pki
        .tls("admin-alice")
        .endpoint(&leader_addr)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect as admin");
    let status = GatewayServiceClient::new(admin_channel.clone())
        .session(tokio_stream::iter(vec![hello("gw1")]))
        .await
        .expect_err("an admin's session");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Raft answers monitors only, on the peer port only: a forged vote from an admin is
    // refused there before openraft sees it, and the client port serves no Raft at all,
    // not even to a monitor's certificate.
    let peer_port = pki
        .tls("admin-alice")
        .endpoint(&cluster.peer_addrs[&leader])
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the peer port as admin");
    let term_before = cluster
        .monitor(leader)
        .raft()
        .metrics()
        .borrow()
        .current_term;
    let status = RaftServiceClient::new(peer_port)
        .vote(v1::RaftRequest {
            payload: vec![1, 2, 3],
        })
        .await
        .expect_err("an admin's vote");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("needs a monitor certificate"),
        "{status:?}"
    );
    let monitor_on_client_port = pki
        .tls("monitor-2")
        .endpoint(&leader_addr)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the client port as a monitor");
    let status = RaftServiceClient::new(monitor_on_client_port)
        .vote(v1::RaftRequest {
            payload: vec![1, 2, 3],
        })
        .await
        .expect_err("Raft on the client port");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert_eq!(
        cluster
            .monitor(leader)
            .raft()
            .metrics()
            .borrow()
            .current_term,
        term_before,
        "a refused vote changed the leader's term"
    );

    // A host acts for itself only.
    let host_channel = pki
        .tls(&format!("host-{HOST}"))
        .endpoint(&leader_addr)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect as host");
    let mut replica = ReplicaServiceClient::new(host_channel);
    replica
        .heartbeat(v1::HeartbeatRequest {
            host_nqn: HOST.to_owned(),
            ..Default::default()
        })
        .await
        .expect("a host's own heartbeat");
    let status = replica
        .heartbeat(v1::HeartbeatRequest {
            host_nqn: "nqn.2014-08.com.example:host-two".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("a heartbeat for another host");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Without a certificate of this CA nothing gets through: no TLS at all, or a
    // certificate from another CA (the handshake fails; the CLI gives up on every monitor).
    let plain = common::nvme_gw(&leader_addr, &[J, "--retries", "0", "show", "rbd", ""]).await;
    assert_eq!(plain.code, 3, "{plain:?}");
    let other = tempfile::tempdir().expect("tempdir");
    for args in [vec!["init"], vec!["issue", "admin", "mallory"]] {
        let out = Command::new(BIN)
            .arg("certs")
            .args(&args)
            .arg("--dir")
            .arg(other.path())
            .output()
            .expect("run nvme-gw certs");
        assert!(out.status.success(), "{out:?}");
    }
    // A certificate from another CA, presented by a client that trusts the monitors: the
    // monitor refuses it in the handshake, which TLS 1.3 lets the client see either when
    // connecting or on its first call.
    let mallory = Tls::load(&TlsFiles {
        ca: pki.files("admin-alice").ca,
        ..files_in(other.path(), "admin-mallory")
    })
    .expect("load");
    if let Ok(channel) = mallory
        .endpoint(&leader_addr)
        .expect("endpoint")
        .connect()
        .await
    {
        let status = v1::admin_service_client::AdminServiceClient::new(channel)
            .show_all(v1::ShowAllRequest::default())
            .await
            .expect_err("a call with another CA's certificate");
        assert_ne!(
            status.code(),
            Code::PermissionDenied,
            "refused in the handshake, not by role: {status:?}"
        );
    }

    // Without a certificate nothing is served on either port, whatever the service.
    for addr in [&leader_addr, &cluster.peer_addrs[&leader]] {
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        let admin = v1::admin_service_client::AdminServiceClient::new(plain.clone())
            .show_all(v1::ShowAllRequest::default())
            .await;
        let replica = ReplicaServiceClient::new(plain.clone())
            .list_hosts(v1::ListHostsRequest::default())
            .await;
        let session = GatewayServiceClient::new(plain.clone())
            .session(tokio_stream::iter(vec![hello("gw1")]))
            .await;
        let vote = RaftServiceClient::new(plain)
            .vote(v1::RaftRequest {
                payload: vec![1, 2, 3],
            })
            .await;
        assert!(
            admin.is_err() && replica.is_err() && session.is_err() && vote.is_err(),
            "{addr} served a caller without a certificate"
        );
    }

    // Event streams are bounded per identity: one reader cannot take the monitor's all.
    let reader = pki
        .tls("reader-bob")
        .endpoint(&leader_addr)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect as reader");
    let mut watches = Vec::new();
    for i in 0..gwmon_monitor::admin::MAX_WATCHERS_PER_CLIENT {
        let stream = v1::admin_service_client::AdminServiceClient::new(reader.clone())
            .watch_events(v1::WatchEventsRequest::default())
            .await
            .unwrap_or_else(|e| panic!("the reader's stream {i} is refused: {e}"));
        watches.push(stream);
    }
    let refused = v1::admin_service_client::AdminServiceClient::new(reader)
        .watch_events(v1::WatchEventsRequest::default())
        .await
        .expect_err("one stream too many for one identity");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("open for gwmon://reader/bob"),
        "{refused:?}"
    );
    let alice = pki
        .tls("admin-alice")
        .endpoint(&leader_addr)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect as admin");
    v1::admin_service_client::AdminServiceClient::new(alice)
        .watch_events(v1::WatchEventsRequest::default())
        .await
        .expect("another identity still watches");
    drop(watches);

    assert_eq!(
        state_of(&cluster, leader),
        before,
        "a refused call changed the map or the term"
    );

    stop.cancel();
    let _ = session.await;
}

/// The leader's groups with their gateway ids, its tunables and its term.
fn state_of(cluster: &Cluster, leader: u64) -> String {
    let m = cluster.monitor(leader);
    let map = m.core.reader().read(|map| {
        let groups: Vec<String> = map
            .groups()
            .iter()
            .map(|(key, g)| format!("{key}: {:?}", g.gateways.keys().collect::<Vec<_>>()))
            .collect();
        format!("{groups:?} {:?}", map.config())
    });
    format!("{map} term {}", m.raft().metrics().borrow().current_term)
}
