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
    // The leader timed every phase of the failover; the fence ran once, successfully.
    let phases = scrape(addr).await;
    for phase in ["detection", "fence", "delivery", "promotion"] {
        assert!(
            phases
                .get("gwmon_failover_phase_seconds_count", &[("phase", phase)])
                .unwrap_or(0.0)
                >= 1.0,
            "no {phase} phase observed"
        );
    }
    assert_eq!(phases.get("gwmon_failover_seconds_count", &[]), Some(1.0));
    let total = phases.get("gwmon_failover_seconds_sum", &[]).unwrap_or(0.0);
    // Committed times are whole milliseconds, and on a loopback test cluster the
    // failover's commands (timeout, fence, promotion) can all commit within one: zero is a
    // real value (seen once in a full run).
    assert!((0.0..DEADLINE.as_secs_f64()).contains(&total), "{total}");
    assert_eq!(
        phases.get("gwmon_fence_operations_total", &[("result", "success")]),
        Some(1.0)
    );
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

/// Reads map events (leader changes left out) from `stream` until `done` says the last one
/// ends the sequence.
async fn read_events(
    stream: &mut tonic::Streaming<v1::WatchEventsResponse>,
    done: impl Fn(&v1::WatchEventsResponse) -> bool,
) -> Vec<v1::WatchEventsResponse> {
    let mut got = Vec::new();
    let end = Instant::now() + DEADLINE;
    loop {
        let next = tokio::time::timeout_at(end, stream.message())
            .await
            .unwrap_or_else(|_| panic!("the sequence never ended; got {got:#?}"))
            .expect("stream error")
            .expect("stream ended");
        if next.log_index == 0 {
            continue;
        }
        let last = done(&next);
        got.push(next);
        if last {
            return got;
        }
    }
}

fn position(events: &[v1::WatchEventsResponse], what: &str, pred: impl Fn(&W) -> bool) -> usize {
    events
        .iter()
        .position(|e| e.event.as_ref().is_some_and(&pred))
        .unwrap_or_else(|| panic!("no {what} in {events:#?}"))
}

use gwmon_proto::v1;
use gwmon_proto::v1::watch_events_response::Event as W;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_event_stream_tells_a_failover_in_order_and_resumes_from_an_epoch() {
    let mut env = Env::start(&["gw1", "gw2"], |_| {}).await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let leader = env.cluster.leader().await;
    let follower = *env
        .cluster
        .monitors
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");

    // A follower serves the stream: every monitor applies the same log.
    let mut live = env
        .cluster
        .admin(follower)
        .await
        .watch_events(v1::WatchEventsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    env.kill("gw1");
    let promoted = |e: &v1::WatchEventsResponse| matches!(&e.event, Some(W::AnaGroupPromoted(p)) if p.ana_group == 1 && p.gateway_id == "gw2");
    let seen = read_events(&mut live, promoted).await;

    let down = position(
        &seen,
        "gw1 unavailable",
        |e| matches!(e, W::GatewayState(s) if s.gateway_id == "gw1" && s.to == "UNAVAILABLE"),
    );
    let issued = position(
        &seen,
        "fence issued",
        |e| matches!(e, W::FenceIssued(f) if f.gateway_id == "gw1"),
    );
    let started = position(
        &seen,
        "failover started",
        |e| matches!(e, W::FailoverStarted(f) if f.ana_group == 1 && f.to == "gw2"),
    );
    let fenced = position(
        &seen,
        "fence completed",
        |e| matches!(e, W::FenceCompleted(f) if f.gateway_id == "gw1"),
    );
    let promoted_at = seen.len() - 1;
    assert!(down <= started && issued <= started, "{seen:#?}");
    assert!(started < fenced && fenced < promoted_at, "{seen:#?}");
    for pair in seen.windows(2) {
        assert!(
            pair[0].map_epoch <= pair[1].map_epoch && pair[0].log_index <= pair[1].log_index,
            "events arrive in commit order: {seen:#?}"
        );
    }
    let key = seen[started]
        .key
        .clone()
        .expect("a map event names its group");
    assert_eq!((key.pool.as_str(), key.group.as_str()), ("rbd", "grp1"));
    let FenceFields {
        issued_epoch,
        completed_epoch,
    } = fence_epochs(&seen[issued], &seen[fenced]);
    assert_eq!(
        issued_epoch, completed_epoch,
        "the fence completed is the one issued"
    );

    // Resuming after the epoch before the failover, at another monitor, gives exactly the
    // events seen live from that epoch on.
    let from = seen[started].map_epoch;
    let expected: Vec<_> = seen
        .iter()
        .filter(|e| e.map_epoch >= from)
        .cloned()
        .collect();
    let mut resumed = env
        .cluster
        .admin(leader)
        .await
        .watch_events(v1::WatchEventsRequest {
            after_epoch: Some(from - 1),
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    let again = read_events(&mut resumed, promoted).await;
    let strip = |v: &[v1::WatchEventsResponse]| -> Vec<(u64, u64, Option<W>)> {
        v.iter()
            .map(|e| (e.map_epoch, e.log_index, e.event.clone()))
            .collect()
    };
    assert_eq!(strip(&again), strip(&expected));

    // Everything kept, then the end: the history starts with the gateways' creation.
    let history: Vec<_> = {
        let mut s = env
            .cluster
            .admin(follower)
            .await
            .watch_events(v1::WatchEventsRequest {
                from_oldest: true,
                stop_when_caught_up: true,
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner();
        let mut all = Vec::new();
        while let Some(e) = tokio::time::timeout(DEADLINE, s.message())
            .await
            .expect("the history ends")
            .expect("stream error")
        {
            all.push(e);
        }
        all
    };
    assert!(
        history
            .iter()
            .any(|e| matches!(&e.event, Some(W::LeaderChanged(l)) if l.leader_id == leader)),
        "the follower saw the leader elected: {history:#?}"
    );
    assert!(
        matches!(&history.iter().find(|e| e.log_index != 0).and_then(|e| e.event.clone()),
                 Some(W::GatewayCreated(c)) if c.gateway_id == "gw1"),
        "{history:#?}"
    );
    assert!(history.iter().any(&promoted));
    env.shutdown().await;
}

struct FenceFields {
    issued_epoch: u64,
    completed_epoch: u64,
}

fn fence_epochs(
    issued: &v1::WatchEventsResponse,
    completed: &v1::WatchEventsResponse,
) -> FenceFields {
    let epoch = |e: &v1::WatchEventsResponse| match &e.event {
        Some(W::FenceIssued(f) | W::FenceCompleted(f)) => f.fence_epoch,
        other => panic!("not a fence event: {other:?}"),
    };
    FenceFields {
        issued_epoch: epoch(issued),
        completed_epoch: epoch(completed),
    }
}

/// The client's metrics as Prometheus would scrape them from the gateway.
fn client_samples(env: &Env, name: &str) -> Samples {
    let mut registry = prometheus_client::registry::Registry::default();
    env.gateways[name].metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    Samples::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_client_metrics_show_its_lease_reconnects_and_demotion() {
    // Roomy grace: stopping the leader must not fail anything over.
    let timers = gwmon_tests::env::Timers {
        grace_ms: 3_000,
        ..gwmon_tests::env::Timers::FAST
    };
    let mut env = Env::start_timed(&["gw1", "gw2"], timers, |_| {}).await;
    env.start_gateway("gw1", true).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;

    let s = client_samples(&env, "gw1");
    assert_eq!(s.get("gwmon_client_sessions_opened_total", &[]), Some(1.0));
    assert_eq!(s.get("gwmon_client_connected", &[]), Some(1.0));
    assert_eq!(s.get("gwmon_client_optimized_ana_groups", &[]), Some(1.0));
    assert!(
        s.get("gwmon_client_acks_received_total", &[])
            .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        s.get("gwmon_client_slices_received_total", &[])
            .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        s.get("gwmon_client_lease_remaining_seconds", &[])
            .unwrap_or(0.0)
            > 0.0
    );
    assert!(s.get("gwmon_client_lease_age_seconds", &[]).is_some());

    // Cut off from every monitor, it demotes itself when the lease runs out. (A slow
    // start may already have cost it a lease: count from here.)
    let before = s.get("gwmon_client_demotions_total", &[]).unwrap_or(0.0);
    env.cut("gw1");
    let env_ref = &env;
    eventually("gw1 demoted itself", || async move {
        let s = client_samples(env_ref, "gw1");
        s.get("gwmon_client_demotions_total", &[]) > Some(before)
            && s.get("gwmon_client_lease_remaining_seconds", &[]) == Some(0.0)
            && s.get("gwmon_client_optimized_ana_groups", &[]) == Some(0.0)
            && s.get("gwmon_client_lease_age_seconds", &[]) > Some(0.5)
    })
    .await;

    // The leader goes: gw2 (not relayed: a leader redirect names the monitor's real
    // address, which the relays of gw1 would not cover) reconnects to the next one.
    let leader = env.cluster.leader().await;
    env.cluster.stop(leader).await;
    let env_ref = &env;
    eventually("gw2 reconnected to the new leader", || async move {
        let s = client_samples(env_ref, "gw2");
        s.get("gwmon_client_reconnects_total", &[]) >= Some(1.0)
            && s.get("gwmon_client_connected", &[]) == Some(1.0)
    })
    .await;
    env.shutdown().await;
}
