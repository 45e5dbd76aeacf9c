//! Gateways and monitors end to end: three in-process monitors (real gRPC, real stores),
//! gateways running the gwmon-client library with a handler that timestamps every ANA
//! change. After every scenario: no two gateways were ever optimized for one ANA group at
//! the same time.

use std::time::Duration;

use gwmon_client::{ClientError, OnMonitorLoss};
use gwmon_monitor::map::Availability;
use gwmon_tests::env::{ana, gw, key, Env, Timers};
use gwmon_tests::eventually;
use tokio::time::Instant;

const GRACE_MS: u64 = Timers::FAST.grace_ms;
/// For scenarios whose point is that nothing fails over: long enough that a slow machine
/// cannot turn a restart or an election into a real timeout.
const ROOMY_GRACE_MS: u64 = 3_000;
const BEACON: Duration = Timers::FAST.beacon;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_gateway_fails_over_after_the_grace_fenced_first_and_fails_back() {
    let mut env = Env::start(&["gw1", "gw2"], |_| {}).await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;

    let killed = Instant::now();
    env.kill("gw1");
    env.holder_is(1, "gw2").await;
    let promoted = env
        .timeline
        .optimized_since(&gw("gw2"), ana(1))
        .expect("gw2 optimized");
    let fenced = env
        .timeline
        .fence_times()
        .into_iter()
        .find(|(_, g)| *g == gw("gw1"))
        .map(|(t, _)| t)
        .expect("gw1 was fenced");
    assert!(
        fenced <= promoted,
        "fenced before the new owner turned optimized"
    );
    let took = promoted.duration_since(killed);
    assert!(
        took >= Duration::from_millis(GRACE_MS) - BEACON,
        "failed over {took:?} after the kill, before the grace ran out"
    );
    env.timeline.assert_no_overlap();

    // The owner returns: failback, break before make.
    env.start_gateway("gw1", false).await;
    env.holder_is(1, "gw1").await;
    env.holder_is(2, "gw2").await;
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fast_reboot_within_the_grace_causes_no_failover() {
    // A grace a restart fits in with room to spare, even on a loaded machine.
    let mut env = Env::start(&["gw1", "gw2"], |c| c.beacon_grace_ms = ROOMY_GRACE_MS).await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let rebooted = Instant::now();
    env.kill("gw1");
    env.start_gateway("gw1", false).await;
    // gw1 reports Starting from its new process before the grace ran out.
    let leader = env.cluster.leader().await;
    eventually("gw1 restarted and took its group back", || {
        let ok = env.timeline.holders(ana(1)) == vec![gw("gw1")]
            && env.availability(leader, "gw1") == Some(Availability::Available);
        std::future::ready(ok)
    })
    .await;
    let moved = env.timeline.changes().iter().any(|c| {
        c.at >= rebooted && c.gateway == gw("gw2") && c.ana_group == ana(1) && c.optimized
    });
    assert!(!moved, "gw2 did not take group 1 while gw1 rebooted");
    assert_eq!(env.timeline.fence_times().len(), 0, "no fence");
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_cut_off_from_the_monitors_demotes_itself_before_anyone_is_promoted() {
    let mut env = Env::start(&["gw1", "gw2"], |_| {}).await;
    env.start_gateway("gw1", true).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;

    env.cut("gw1");
    env.holder_is(1, "gw2").await;
    let demoted = env
        .timeline
        .changes()
        .iter()
        .find(|c| c.gateway == gw("gw1") && c.ana_group == ana(1) && !c.optimized)
        .map(|c| c.at)
        .expect("gw1 demoted itself");
    let promoted = env
        .timeline
        .optimized_since(&gw("gw2"), ana(1))
        .expect("gw2 optimized");
    assert!(
        demoted < promoted,
        "self-demotion came before the promotion"
    );
    env.timeline.assert_no_overlap();

    // Reconnected, the cut-off gateway learns it was declared failed, rejoins as a new
    // process and takes its group back (tests/safety.rs has the regression test).
    env.heal("gw1");
    env.holder_is(1, "gw1").await;
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disable_and_delete_move_the_group_away() {
    let mut env = Env::start(&["gw1", "gw2", "gw3"], |_| {}).await;
    for g in ["gw1", "gw2", "gw3"] {
        env.start_gateway(g, false).await;
    }
    env.settled().await;
    let leader = env.cluster.leader().await;
    let mut admin = env.cluster.admin(leader).await;
    admin
        .set_admin_state(gwmon_proto::v1::SetAdminStateRequest {
            key: Some(key().into()),
            gateway_id: "gw1".into(),
            enabled: false,
        })
        .await
        .expect("disable");
    eventually("group 1 moved off the disabled gateway", || {
        let h = env.timeline.holders(ana(1));
        std::future::ready(h.len() == 1 && h[0] != gw("gw1"))
    })
    .await;
    admin
        .set_admin_state(gwmon_proto::v1::SetAdminStateRequest {
            key: Some(key().into()),
            gateway_id: "gw1".into(),
            enabled: true,
        })
        .await
        .expect("enable");
    env.holder_is(1, "gw1").await;

    admin
        .delete_gateway(gwmon_proto::v1::DeleteGatewayRequest {
            key: Some(key().into()),
            gateway_id: "gw3".into(),
        })
        .await
        .expect("delete");
    eventually("group 3 moved off the deleted gateway", || {
        let h = env.timeline.holders(ana(3));
        std::future::ready(h.len() == 1 && h[0] != gw("gw3"))
    })
    .await;
    // The deleted gateway's process serves nothing and waits; created again, it takes its
    // group back with no restart (it used to exit, and needed one).
    admin
        .create_gateway(gwmon_proto::v1::CreateGatewayRequest {
            key: Some(key().into()),
            gateway_id: "gw3".into(),
            location: String::new(),
        })
        .await
        .expect("create again");
    env.holder_is(3, "gw3").await;
    let g = env.gateways.get("gw3").expect("gw3");
    assert!(!g.task.is_finished(), "the same process serves again");
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_gateways_lose_two_and_every_group_keeps_one_optimized_owner() {
    let names = ["gw1", "gw2", "gw3", "gw4"];
    let mut env = Env::start(&names, |_| {}).await;
    for g in names {
        env.start_gateway(g, false).await;
    }
    env.settled().await;
    env.kill("gw2");
    eventually("group 2 served again", || {
        std::future::ready(env.timeline.holders(ana(2)).len() == 1)
    })
    .await;
    env.kill("gw3");
    eventually("every group served by a live gateway", || {
        let ok = (1..=4).all(|g| {
            let h = env.timeline.holders(ana(g));
            h.len() == 1 && (h[0] == gw("gw1") || h[0] == gw("gw4"))
        });
        std::future::ready(ok)
    })
    .await;
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_follow_a_new_monitor_leader_without_a_failover() {
    // Room for an election and the gateways' reconnection inside the grace, even on a
    // loaded machine; what is tested is that the new leader restarts every timer.
    let mut env = Env::start(&["gw1", "gw2"], |c| c.beacon_grace_ms = ROOMY_GRACE_MS).await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let fences_before = env.timeline.fence_times().len();
    let old = env.cluster.leader().await;
    env.cluster.stop(old).await;
    let new = env.cluster.leader().await;
    // Watch for two graces under the new leader: nobody is failed over.
    let watch_until = Instant::now() + Duration::from_millis(2 * ROOMY_GRACE_MS);
    eventually("two graces under the new leader", || {
        for g in ["gw1", "gw2"] {
            assert_eq!(
                env.availability(new, g),
                Some(Availability::Available),
                "{g} stays available across the leader change"
            );
        }
        std::future::ready(Instant::now() >= watch_until)
    })
    .await;
    for g in ["gw1", "gw2"] {
        assert!(
            env.cluster
                .monitor(new)
                .liveness
                .last_seen(&key(), &gw(g))
                .is_some(),
            "{g} beacons to the new leader"
        );
    }
    assert_eq!(env.timeline.fence_times().len(), fences_before, "no fence");
    env.holder_is(1, "gw1").await;
    env.holder_is(2, "gw2").await;
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

/// A leader that crashed and was restarted at once (by its service manager) takes its
/// office back in the same term, before the others' election timeout, and the other
/// monitors go on naming it. The gateways that lost it must go back to it before their
/// leases run out.
/// Before the fix a gateway kept it on its list of lost monitors for half the grace and
/// ignored the hints naming it, and with the shipped timers every ANA group went
/// inaccessible for about 2 s (found by deploy/upgrade/test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_restarted_at_once_keeps_the_gateways_serving() {
    let mut env = Env::start_timed(&["gw1", "gw2"], Timers::DEFAULT, |_| {}).await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let leader = env.cluster.leader().await;
    let restarted = Instant::now();
    env.cluster.stop_abruptly(leader).await;
    env.cluster.restart(leader).await;
    // Past the leases the gateways held when their leader went away, and then some: the
    // targets keep saying optimized throughout.
    let watch_until = restarted + Duration::from_millis(Timers::DEFAULT.grace_ms);
    eventually("a grace after the restart", || {
        for (g, name) in [(1, "gw1"), (2, "gw2")] {
            assert_eq!(
                env.timeline.holders(ana(g)),
                vec![gw(name)],
                "{name} keeps serving ANA group {g} across the restart"
            );
        }
        std::future::ready(Instant::now() >= watch_until)
    })
    .await;
    assert_eq!(
        env.cluster.leader().await,
        leader,
        "the restarted monitor leads again (else this test tried nothing new)"
    );
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

/// A leader stopped on purpose (SIGTERM: an upgrade, maintenance) hands its office over
/// first: another monitor leads by the time it is gone, and the gateways follow the new
/// leader without their leases running out. Before, the followers waited out their election
/// timeout after it had gone, and a leader restarted at once took its office back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_leader_hands_over_before_it_goes() {
    // Every monitor's election timer close to the maximum: the slowest succession openraft
    // allows, the followers waiting out the old leader's lease and then their own timeout
    // (about 1.2 s and a tick after the last heartbeat). A stopping leader that waited only
    // two election timeouts went before its successor was elected.
    let timers = Timers {
        election_ms: (590, 600),
        ..Timers::DEFAULT
    };
    let mut env = Env::start_timed(&["gw1", "gw2"], timers, |_| {}).await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let old = env.cluster.leader().await;
    // The stopping leader's own last view: a follower that granted the new leader its vote
    // may not have heard from it yet, but the old leader hears from it before it goes.
    let last_view = env.cluster.monitors[&old].raft().metrics();
    let stopped = Instant::now();
    env.cluster.stop(old).await;
    let new = last_view.borrow().current_leader;
    assert!(
        new.is_some_and(|l| l != old),
        "the old leader named {new:?} as leader when it stopped"
    );
    eventually("every monitor follows the new leader", || {
        std::future::ready(
            env.cluster
                .monitors
                .values()
                .all(|m| m.raft().metrics().borrow().current_leader == new),
        )
    })
    .await;
    env.cluster.restart(old).await;
    let watch_until = stopped + Duration::from_millis(Timers::DEFAULT.grace_ms);
    eventually("a grace after the stop", || {
        for (g, name) in [(1, "gw1"), (2, "gw2")] {
            assert_eq!(
                env.timeline.holders(ana(g)),
                vec![gw(name)],
                "{name} keeps serving ANA group {g} across the handover"
            );
        }
        std::future::ready(Instant::now() >= watch_until)
    })
    .await;
    assert_ne!(
        env.cluster.leader().await,
        old,
        "the restarted monitor follows"
    );
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_hold_a_cut_off_gateway_keeps_serving_until_fenced_then_exits() {
    let mut env = Env::start(&["gw1", "gw2"], |_| {}).await;
    env.start_gateway_with("gw1", true, OnMonitorLoss::Hold)
        .await;
    env.start_gateway("gw2", false).await;
    env.settled().await;

    let cut = Instant::now();
    env.cut("gw1");
    env.holder_is(1, "gw2").await;
    // gw1 did not demote itself: under `hold` only the fence stopped its writes, and the
    // fence came before gw2 was promoted.
    let demoted_early = env
        .timeline
        .demoted_at(&gw("gw1"), ana(1))
        .is_some_and(|t| t >= cut);
    assert!(!demoted_early, "hold keeps the last states while cut off");
    let fenced = env
        .timeline
        .fence_times()
        .into_iter()
        .find(|(t, g)| *g == gw("gw1") && *t >= cut)
        .map(|(t, _)| t)
        .expect("gw1 fenced");
    let promoted = env
        .timeline
        .optimized_since(&gw("gw2"), ana(1))
        .expect("gw2 optimized");
    assert!(fenced <= promoted);
    env.timeline.assert_no_overlap();

    // Still cut off at the disconnect panic: it demotes and exits.
    let g = env.gateways.remove("gw1").expect("gw1");
    let exit = tokio::time::timeout(Duration::from_secs(20), g.task)
        .await
        .expect("gw1 exits")
        .expect("task");
    assert!(
        matches!(exit, Err(ClientError::DisconnectPanic(_))),
        "{exit:?}"
    );
    let last = env
        .timeline
        .changes()
        .into_iter()
        .rev()
        .find(|c| c.gateway == gw("gw1") && c.ana_group == ana(1))
        .expect("gw1 changes");
    assert!(!last.optimized, "demoted before exiting");
    env.shutdown().await;
}
