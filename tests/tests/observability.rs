//! The monitors' HTTP listener end to end: `/metrics` scraped and parsed during a failover,
//! `/health/ready` on a healthy cluster and on a monitor cut off from quorum, and `/status`.

use std::net::SocketAddr;
use std::time::Duration;

use gwmon_monitor::http::Status;
use gwmon_monitor::map::Command;
use gwmon_tests::env::{gw, key, Env};
use gwmon_tests::http::{get, Samples};
use gwmon_tests::{eventually, Cluster, DEADLINE};
use tokio::time::Instant;

const GROUP: [(&str, &str); 2] = [("pool", "rbd"), ("group", "grp1")];

fn http_addr(cluster: &Cluster, id: u64) -> SocketAddr {
    cluster
        .monitor(id)
        .http_addr
        .expect("test monitors serve HTTP")
}

async fn scrape(addr: SocketAddr) -> Samples {
    let reply = get(addr, "/metrics").await.expect("scrape");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        reply.content_type
    );
    Samples::parse(&reply.body).unwrap_or_else(|e| panic!("{e}\n{}", reply.body))
}

async fn status(addr: SocketAddr) -> Status {
    let reply = get(addr, "/status").await.expect("status");
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

async fn ready(addr: SocketAddr) -> (u16, String) {
    let r = get(addr, "/health/ready").await.expect("ready");
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_a_failover_as_it_happens_on_every_monitor() {
    let mut env = Env::start(&["gw1", "gw2"], |_| {}).await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let leader = env.cluster.leader().await;
    let addr = http_addr(&env.cluster, leader);

    let before = scrape(addr).await;
    assert_eq!(
        before.get("gwmon_failovers_total", &GROUP).unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        before.get(
            "gwmon_gateways",
            &[GROUP[0], GROUP[1], ("availability", "AVAILABLE")]
        ),
        Some(2.0)
    );
    assert_eq!(before.get("gwmon_raft_is_leader", &[]), Some(1.0));
    assert_eq!(
        before.get(
            "gwmon_ana_groups",
            &[GROUP[0], GROUP[1], ("state", "active")]
        ),
        Some(2.0)
    );
    assert!(
        before
            .get("gwmon_beacons_received_total", &[])
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(before.get("gwmon_gateway_sessions", &[]), Some(2.0));
    assert!(before.get("gwmon_store_size_bytes", &[]).unwrap_or(0.0) > 0.0);
    assert!(before.get("gwmon_map_epoch", &[]).unwrap_or(0.0) > 0.0);

    env.kill("gw1");
    // Poll the leader's /metrics while the failover runs, until the counter moves.
    let end = Instant::now() + DEADLINE;
    let during = loop {
        let s = scrape(addr).await;
        if s.get("gwmon_failovers_total", &GROUP).unwrap_or(0.0) >= 1.0 {
            break s;
        }
        assert!(Instant::now() < end, "failovers_total never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        during.get(
            "gwmon_gateway_available",
            &[GROUP[0], GROUP[1], ("gateway", "gw1")]
        ),
        Some(0.0),
        "the failed gateway is unavailable once it has failed over"
    );
    assert_eq!(
        during.get(
            "gwmon_gateways",
            &[GROUP[0], GROUP[1], ("availability", "UNAVAILABLE")]
        ),
        Some(1.0)
    );
    env.holder_is(1, "gw2").await;

    // Every monitor counts the one failover once, leader or not; the fence completed, and
    // the leader's sessions drop to the survivor.
    let ids: Vec<u64> = env.cluster.monitors.keys().copied().collect();
    for id in ids {
        let addr = http_addr(&env.cluster, id);
        eventually("the failover and its fence are counted", || async move {
            let s = scrape(addr).await;
            s.get("gwmon_failovers_total", &GROUP) == Some(1.0)
                && s.get("gwmon_fences_completed_total", &GROUP) == Some(1.0)
                && s.get("gwmon_fences_pending", &GROUP) == Some(0.0)
                && s.get(
                    "gwmon_ana_groups",
                    &[GROUP[0], GROUP[1], ("state", "active")],
                ) == Some(2.0)
        })
        .await;
    }
    eventually("the killed gateway's session is closed", || async move {
        scrape(addr).await.get("gwmon_gateway_sessions", &[]) == Some(1.0)
    })
    .await;
    let after = scrape(addr).await;
    assert!(after.get("gwmon_group_epoch", &GROUP) > before.get("gwmon_group_epoch", &GROUP));
    // (Startup may already have handed a group to its owner: compare, do not expect 0.)
    assert_eq!(
        after.get("gwmon_failbacks_total", &GROUP),
        before.get("gwmon_failbacks_total", &GROUP),
        "no failback while the owner stays dead"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_until_cut_off_from_quorum_and_status_says_why() {
    let mut cluster = Cluster::start(3, 0, |_| {}).await;
    cluster
        .write(Command::CreateGateway {
            key: key(),
            gateway: gw("gw1"),
        })
        .await;
    let leader = cluster.leader().await;
    let ids: Vec<u64> = cluster.monitors.keys().copied().collect();
    for &id in &ids {
        let addr = http_addr(&cluster, id);
        eventually(
            "every monitor of a healthy cluster is ready",
            || async move { ready(addr).await.0 == 200 },
        )
        .await;
        let live = get(addr, "/health/live").await.expect("live");
        assert_eq!(live.status, 200);
    }

    let addr = http_addr(&cluster, leader);
    let s = status(addr).await;
    assert_eq!(s.id, leader);
    assert_eq!(s.leader, Some(leader));
    assert_eq!(s.state, "Leader");
    assert!(s.ready);
    assert_eq!(s.not_ready_reason, None);
    assert!(s.term >= 1);
    assert!(s.applied_index >= s.committed_index && s.committed_index > 0);
    assert!(s.map_epoch >= 1);
    assert_eq!(s.groups.len(), 1);
    let g = &s.groups[0];
    assert_eq!((g.pool.as_str(), g.group.as_str()), ("rbd", "grp1"));
    assert_eq!(g.gateways.get("CREATED"), Some(&1));
    assert_eq!(g.gateways.get("AVAILABLE"), Some(&0));
    assert_eq!(g.pending_fences, 0);

    // Stop both followers: the leader stays leader in openraft, but hears no quorum.
    for id in ids.into_iter().filter(|id| *id != leader) {
        cluster.stop(id).await;
    }
    eventually("the cut-off leader turns not ready", || async move {
        let (code, body) = ready(addr).await;
        code == 503 && body.contains("quorum")
    })
    .await;
    let live = get(addr, "/health/live").await.expect("live");
    assert_eq!(live.status, 200, "live while the process runs");
    let s = status(addr).await;
    assert!(!s.ready);
    assert!(s.not_ready_reason.is_some_and(|r| r.contains("quorum")));
    let m = scrape(addr).await;
    assert_eq!(m.get("gwmon_ready", &[]), Some(0.0));
    cluster.stop_all().await;
}
