//! Regression tests for split brain at the edges: each reproduces an interleaving that once
//! left two targets saying optimized for one ANA group, or a group dark for good, and checks
//! what the targets say (never only the map).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gwmon_client::adapters::file::FileTarget;
use gwmon_client::{AnaHandler, AnaStates, ClientConfig, HandlerError, OnMonitorLoss};
use gwmon_monitor::clock::{Clock, SystemClock};
use gwmon_monitor::map::{Availability, Timestamp};
use gwmon_monitor::node::Plumbing;
use gwmon_proto::domain::{AnaAccess, Subsystem};
use gwmon_tests::env::{ana, gw, key, Env, Timers};
use gwmon_tests::eventually;
use gwmon_tests::partition::Partition;
use gwmon_tests::proxy::Proxy;
use gwmon_tests::recorder::Recorder;
use tokio_util::sync::CancellationToken;

fn encode(m: &gwmon_client::ClientMetrics) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    m.register(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
    out
}

fn metric(m: &gwmon_client::ClientMetrics, name: &str) -> f64 {
    encode(m)
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Wait until every running gateway has confirmed the current map on monitor `leader` and
/// has been acked a few more times since: from then on their beacons are unchanged, so the
/// leader acks them without a write (a write stalls without a quorum, which would stop the
/// acks for another reason than the one under test).
async fn quiet(env: &Env, leader: u64) {
    let names: Vec<String> = env.gateways.keys().cloned().collect();
    eventually("every gateway confirmed the current map", || {
        let map = env.cluster.map(leader);
        let quiet = map.group(&key()).is_some_and(|g| {
            names.iter().all(|n| {
                g.gateways
                    .get(&gw(n))
                    .is_some_and(|x| x.applied_epoch == g.epoch)
            })
        });
        std::future::ready(quiet)
    })
    .await;
    let acks = |env: &Env| -> f64 {
        names
            .iter()
            .map(|n| metric(&env.gateways[n].metrics, "gwmon_client_acks_received_total"))
            .fold(f64::INFINITY, f64::min)
    };
    let before = acks(env);
    eventually("a few more acks", || {
        std::future::ready(acks(env) >= before + 3.0)
    })
    .await;
}

/// A leader cut off from the other monitors, while its gateways still reach it, stops
/// renewing their leases: they demote (or move to the new leader) before the other side can
/// promote anyone. The fence here does not reach the targets (fencer `none`), so only the
/// leases keep the targets apart. Before the fix the old leader acked unchanged beacons
/// forever, and groups 1 and 2 were optimized on two gateways until the partition healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_its_quorum_stops_renewing_leases() {
    let partition = Partition::new();
    let mut env = Env::start_custom(
        &["gw1", "gw2", "gw3"],
        Timers::FAST,
        |_| {},
        Some(partition.clone()),
        Plumbing::default(),
        false,
    )
    .await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let old = env.cluster.leader().await;
    quiet(&env, old).await;
    partition.isolate(old).await;
    // The others elect a leader.
    let mut new = 0;
    eventually("a new leader confirmed by a quorum", || {
        new = env
            .cluster
            .monitors
            .iter()
            .find(|(id, m)| **id != old && m.core.lease().is_some())
            .map_or(0, |(id, _)| *id);
        std::future::ready(new != 0)
    })
    .await;
    // A gateway that only ever reaches the new side, so it is there to take groups over.
    let majority: Vec<String> = env
        .cluster
        .addrs
        .iter()
        .filter(|(id, _)| **id != old)
        .map(|(_, a)| a.clone())
        .collect();
    let handler = Arc::new(Recorder::new(&gw("gw3"), &env.groups, env.timeline.clone()));
    env.start_gateway_on(
        "gw3",
        "gw3",
        false,
        OnMonitorLoss::Demote,
        Some(majority),
        handler,
    )
    .await;
    // Wait until the new leader has settled each old gateway (heard from it, or declared
    // it failed and moved its group) and every group is served by one target.
    let liveness = env.cluster.monitor(new).liveness.clone();
    eventually(
        "the new leader settled every gateway, one target per group",
        || {
            let map = env.cluster.map(new);
            let settled = ["gw1", "gw2"].iter().all(|n| {
                liveness.last_seen(&key(), &gw(n)).is_some()
                    || map
                        .group(&key())
                        .and_then(|g| g.gateways.get(&gw(n)))
                        .is_some_and(|x| x.availability == Availability::Unavailable)
            });
            let served = map.group(&key()).is_some_and(|g| {
                g.ana
                    .values()
                    .filter(|a| a.holder.optimized().is_some())
                    .count()
                    == 3
            });
            std::future::ready(
                settled
                    && served
                    && env
                        .groups
                        .iter()
                        .all(|g| env.timeline.holders(ana(*g)).len() == 1),
            )
        },
    )
    .await;
    env.timeline.assert_no_overlap();
    partition.heal().await;
    env.settled().await;
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

/// A leader whose followers are gone (killed) stops acking within half a grace of its last
/// quorum contact, and every gateway demotes (`on_monitor_loss = demote`, as documented). Before
/// the fix the lone leader kept acking unchanged beacons and no gateway ever demoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_without_followers_stops_acking_and_gateways_demote() {
    let partition = Partition::new();
    let mut env = Env::start_custom(
        &["gw1", "gw2"],
        Timers::FAST,
        |_| {},
        Some(partition.clone()),
        Plumbing::default(),
        true,
    )
    .await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let leader = env.cluster.leader().await;
    let followers: Vec<u64> = env
        .cluster
        .monitors
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    quiet(&env, leader).await;
    // As if both followers were killed: every link between monitors is cut at once (no
    // graceful goodbye), and no other leader can be elected.
    let stopped = tokio::time::Instant::now();
    for id in followers {
        partition.isolate(id).await;
    }
    let after = |g: &str, a: u32| {
        env.timeline
            .demoted_at(&gw(g), ana(a))
            .is_some_and(|t| t >= stopped)
    };
    eventually(
        "every gateway made its target inaccessible by itself",
        || std::future::ready(after("gw1", 1) && after("gw2", 2)),
    )
    .await;
    assert!(env.timeline.holders(ana(1)).is_empty());
    assert!(env.timeline.holders(ana(2)).is_empty());
    for name in ["gw1", "gw2"] {
        let m = &env.gateways[name].metrics;
        assert_eq!(
            metric(m, "gwmon_client_lease_remaining_seconds"),
            0.0,
            "{name} still holds a lease"
        );
    }
    env.shutdown().await;
}

/// Two processes started with one gateway id: the second is refused while the first holds
/// a lease, so only one target ever serves the gateway's group. Before the fix the monitor
/// kept both sessions and both targets said optimized.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_with_the_same_gateway_id_is_refused() {
    let mut env = Env::start(&["gw1", "gw2"], |_| {}).await;
    env.start_gateway("gw1", false).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    let twin =
        Arc::new(Recorder::new(&gw("gw1"), &env.groups, env.timeline.clone()).named("gw1-twin"));
    env.start_gateway_on("gw1-twin", "gw1", false, OnMonitorLoss::Demote, None, twin)
        .await;
    let first = env.gateways["gw1"].metrics.clone();
    let acks = metric(&first, "gwmon_client_acks_received_total");
    eventually(
        "the first process keeps being acked for two seconds' worth",
        || std::future::ready(metric(&first, "gwmon_client_acks_received_total") >= acks + 20.0),
    )
    .await;
    let twin = env.gateways["gw1-twin"].metrics.clone();
    assert_eq!(
        metric(&twin, "gwmon_client_sessions_opened_total"),
        0.0,
        "the second process got a session"
    );
    assert_eq!(env.timeline.holders(ana(1)), vec![gw("gw1")]);
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

/// A gateway that starts over a target its crashed predecessor left optimized makes it
/// inaccessible before anything else, even with no monitor to talk to. Before the fix the
/// target stayed optimized until the connect panic, and after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_demotes_a_target_left_optimized_before_its_first_beacon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw1.json");
    let nqn = "nqn.2016-06.io.spdk:cnode1";
    std::fs::write(
        &path,
        format!(
            r#"{{"subsystems":[{{"nqn":"{nqn}","listeners":[{{"address":"127.0.0.1","port":4420}}],
                "namespaces":[{{"nsid":1,"ana_group":1}}]}}],
                "ana":{{"{nqn}":{{"1":"optimized"}}}}}}"#
        ),
    )
    .expect("write target");
    // Nothing listens there: the monitors are out of reach.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let config = ClientConfig::builder(gw("gw1"), key())
        .monitors([closed])
        .connect_panic(Duration::from_secs(120))
        .build()
        .expect("config");
    let stop = CancellationToken::new();
    let task = tokio::spawn(gwmon_client::run(
        config,
        Arc::new(FileTarget::new(&path)),
        stop.clone(),
    ));
    eventually("the target left optimized goes inaccessible", || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        std::future::ready(text.contains("inaccessible") && !text.contains("\"optimized\""))
    })
    .await;
    stop.cancel();
    let _ = task.await;
}

/// A gateway declared failed while cut off rejoins as a new incarnation once it can reach
/// the monitors again, and gets its own group back without an operator. Before the fix it
/// was told to stop and exited, and its group stayed on the failover gateway for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_declared_failed_rejoins_and_takes_its_group_back() {
    let mut env = Env::start(&["gw1", "gw2"], |_| {}).await;
    env.start_gateway("gw1", true).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    env.cut("gw1");
    let leader = env.cluster.leader().await;
    eventually("gw1 declared failed", || {
        std::future::ready(env.availability(leader, "gw1") == Some(Availability::Unavailable))
    })
    .await;
    env.holder_is(1, "gw2").await;
    env.heal("gw1");
    env.holder_is(1, "gw1").await;
    assert!(!env.gateways["gw1"].task.is_finished(), "gw1 exited");
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

/// Fails every apply that serves anything, after it took effect (a target that applied
/// half-way), and before answering cuts its gateway off from the monitors, so not even a
/// beacon saying the target failed gets through.
struct HalfApplies {
    inner: Recorder,
    cut: Arc<AtomicBool>,
    relays: Vec<Arc<Proxy>>,
    /// Cancelled at the failure too, when given: the gateway then stops at once.
    stop: Option<CancellationToken>,
}

impl AnaHandler for HalfApplies {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        self.inner.subsystems().await
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        self.inner.apply(states).await?;
        if states
            .entries
            .iter()
            .any(|e| e.access == AnaAccess::Optimized)
        {
            for r in &self.relays {
                r.block();
            }
            if let Some(stop) = &self.stop {
                stop.cancel();
            }
            self.cut.store(true, Ordering::SeqCst);
            return Err(HandlerError::Target {
                target: "half",
                op: "apply",
                message: "failed after the optimized state took".into(),
            });
        }
        Ok(())
    }

    async fn shutdown(&self, reason: &str) {
        self.inner.shutdown(reason).await;
    }
}

/// An apply that failed after the optimized state took effect leaves the lease deadline
/// armed: cut off, the gateway demotes by itself. Before the fix a handler error cleared the
/// applied states, which disarmed the deadline and turned the final demotion into a no-op,
/// so only the fence ever made the target inaccessible.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_whose_apply_failed_half_way_still_demotes_when_cut_off() {
    let mut env = Env::start(&["gw1", "gw2"], |_| {}).await;
    env.start_gateway("gw2", false).await;
    let cut = Arc::new(AtomicBool::new(false));
    // Relays to every monitor, the leader's first (a follower would redirect the gateway
    // to the leader's own address, past the relays).
    let leader = env.cluster.leader().await;
    let mut addrs: Vec<(u64, String)> = env
        .cluster
        .addrs
        .iter()
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    addrs.sort_by_key(|(id, _)| *id != leader);
    let mut relays = Vec::new();
    for (_, a) in addrs {
        relays.push(Arc::new(Proxy::start(a).await));
    }
    let monitors = relays.iter().map(|r| r.addr.clone()).collect();
    let handler = Arc::new(HalfApplies {
        inner: Recorder::new(&gw("gw1"), &env.groups, env.timeline.clone()),
        cut: cut.clone(),
        relays,
        stop: None,
    });
    env.start_gateway_on(
        "gw1",
        "gw1",
        false,
        OnMonitorLoss::Demote,
        Some(monitors),
        handler,
    )
    .await;
    eventually(
        "gw1's target took the optimized state and was cut off",
        || std::future::ready(cut.load(Ordering::SeqCst)),
    )
    .await;
    eventually("gw1 demoted its own target", || {
        std::future::ready(env.timeline.demoted_at(&gw("gw1"), ana(1)).is_some())
    })
    .await;
    env.holder_is(1, "gw2").await;
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

/// A gateway stopped right after an apply failed half-way still leaves its target
/// inaccessible. Before the fix the failed apply cleared the applied states and the final
/// demotion did nothing: the process exited with its target optimized.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_stopped_after_a_half_way_apply_exits_with_its_target_inaccessible() {
    let env = Env::start(&["gw1", "gw2"], |_| {}).await;
    let stop = CancellationToken::new();
    let cut = Arc::new(AtomicBool::new(false));
    let handler = Arc::new(HalfApplies {
        inner: Recorder::new(&gw("gw1"), &env.groups, env.timeline.clone()),
        cut: cut.clone(),
        relays: Vec::new(),
        stop: Some(stop.clone()),
    });
    let config = env.client_config(
        "gw1",
        env.cluster.addrs.values().cloned().collect(),
        OnMonitorLoss::Demote,
    );
    let exit = gwmon_client::run(config, handler, stop).await;
    assert!(
        cut.load(Ordering::SeqCst),
        "the apply failed half-way: {exit:?}"
    );
    assert!(
        env.timeline
            .changes()
            .iter()
            .any(|c| c.gateway == gw("gw1") && c.ana_group == ana(1) && c.optimized),
        "the target took the optimized state"
    );
    assert!(
        env.timeline.holders(ana(1)).is_empty(),
        "gw1 exited with its target optimized"
    );
    env.shutdown().await;
}

/// Hangs the first apply after it is armed (a configfs write stuck in the kernel, an SPDK
/// RPC that never answers); the client's timeout drops it.
struct HangsOnce {
    inner: Recorder,
    armed: Arc<AtomicBool>,
}

impl AnaHandler for HangsOnce {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        self.inner.subsystems().await
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        self.inner.apply(states).await
    }

    async fn shutdown(&self, reason: &str) {
        self.inner.shutdown(reason).await;
    }
}

/// A target call that hangs when the lease runs out does not hold up the demotion past the
/// grace: the session runs apart from the target, drops the hung call at its timeout and
/// demotes, before the monitors fence the gateway. Before the fix handler calls ran inline
/// in the session loop (5 attempts of up to 5 s), and the fence came first. It runs with the
/// shipped timers (4 s grace): the demotion's margin over the fence is then about 1.4 s
/// instead of 0.3 s, which a test binary running its tests side by side on two cores can
/// eat, while the old code's 5 s attempts still miss it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_target_call_does_not_hold_up_the_demotion() {
    let mut env = Env::start_timed(&["gw1", "gw2"], Timers::DEFAULT, |_| {}).await;
    env.start_gateway("gw2", false).await;
    let armed = Arc::new(AtomicBool::new(false));
    let handler = Arc::new(HangsOnce {
        inner: Recorder::new(&gw("gw1"), &env.groups, env.timeline.clone()),
        armed: armed.clone(),
    });
    env.start_gateway_on("gw1", "gw1", true, OnMonitorLoss::Demote, None, handler)
        .await;
    env.settled().await;
    let cut = tokio::time::Instant::now();
    armed.store(true, Ordering::SeqCst);
    env.cut("gw1");
    env.holder_is(1, "gw2").await;
    let demoted = env
        .timeline
        .demoted_at(&gw("gw1"), ana(1))
        .filter(|t| *t >= cut)
        .expect("gw1 demoted its own target");
    let fenced = env
        .timeline
        .fence_times()
        .into_iter()
        .filter(|(t, g)| *g == gw("gw1") && *t >= cut)
        .map(|(t, _)| t)
        .min();
    assert!(
        fenced.is_none_or(|f| demoted < f),
        "the fence came before gw1 demoted itself"
    );
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}

/// The system clock, shifted by a number of milliseconds a test sets.
#[derive(Default)]
struct ShiftedClock {
    shift_ms: AtomicI64,
}

impl Clock for ShiftedClock {
    fn now(&self) -> Timestamp {
        let now = SystemClock.now().as_millis() as i64 + self.shift_ms.load(Ordering::SeqCst);
        Timestamp::from_millis(u64::try_from(now).unwrap_or(0))
    }
}

/// Wall clocks that jump, back or forward by hours, neither freeze the map's timers nor
/// expire fences early: the time a leader stamps is kept within what its monotonic clock
/// allows. Before the fix a clock set back 10 minutes froze a failback for as long, and a
/// clock an hour ahead expired every completed fence at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clock_jumps_neither_freeze_timers_nor_expire_fences() {
    let clock = Arc::new(ShiftedClock::default());
    let mut env = Env::start_custom(
        &["gw1", "gw2"],
        Timers::FAST,
        |_| {},
        None,
        Plumbing {
            clock: clock.clone(),
            ..Plumbing::default()
        },
        true,
    )
    .await;
    env.start_gateway("gw1", true).await;
    env.start_gateway("gw2", false).await;
    env.settled().await;
    // gw1 fails and group 1 moves to gw2, fenced first.
    env.cut("gw1");
    env.holder_is(1, "gw2").await;
    let leader = env.cluster.leader().await;
    let fences = |env: &Env| {
        env.cluster.map(leader).group(&key()).map_or(0, |g| {
            g.fences.iter().filter(|f| f.completed_at.is_some()).count()
        })
    };
    eventually("the fence of gw1 completed", || {
        std::future::ready(fences(&env) == 1)
    })
    .await;

    // An hour ahead: a completed fence (1 h expiry) must survive the next writes.
    clock.shift_ms.store(3_600_000, Ordering::SeqCst);
    env.cluster
        .write(gwmon_monitor::map::Command::TimerTick)
        .await;
    let map_time = env.cluster.map(env.cluster.leader().await).time();
    assert!(
        map_time.as_millis() < SystemClock.now().as_millis() + 600_000,
        "the map's time jumped ahead with the clock"
    );
    assert_eq!(fences(&env), 1, "a clock an hour ahead expired the fence");

    // Ten minutes behind: gw1 comes back and the failback must complete (its prepare
    // window is 200 ms of map time).
    clock.shift_ms.store(-600_000, Ordering::SeqCst);
    env.heal("gw1");
    env.holder_is(1, "gw1").await;
    env.timeline.assert_no_overlap();
    env.shutdown().await;
}
