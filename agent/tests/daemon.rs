//! The daemon's passes on the simulated host against the in-memory cluster, with tokio's
//! clock paused so that the grace period passes without waiting.

mod common;

use std::time::Duration;

use common::*;
use gwmon_agent::cluster::memory::{Call, MemoryCluster};
use gwmon_agent::cluster::{ReplicaState, Stage};
use gwmon_agent::connector::Connector;
use gwmon_agent::daemon::Daemon;
use gwmon_agent::host::sim::SimHost;
use gwmon_agent::host::{CtrlState, Host, HostCommand, LegState};
use tokio_util::sync::CancellationToken;

struct Rig {
    host: SimHost,
    cluster: MemoryCluster,
    dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Rig {
    /// Volume `vol1` over replicas 1 and 2, connected.
    async fn connected() -> Rig {
        let (host, cluster) = setup(&[1, 2]);
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        Connector {
            host: &host,
            cluster: &cluster,
            config: &cfg,
        }
        .connect(&vid())
        .await
        .expect("connect");
        Rig {
            host,
            cluster,
            dir,
            stop: CancellationToken::new(),
        }
    }

    /// A daemon as a fresh process would start: no memory of earlier passes.
    fn daemon(&self) -> Daemon<SimHost, MemoryCluster> {
        Daemon::new(
            self.host.clone(),
            self.cluster.clone(),
            config(self.dir.path()),
        )
    }

    fn stage(&self) -> Option<Stage> {
        self.cluster.replacement(&vid()).map(|r| r.stage)
    }

    fn state(&self, n: u32) -> Option<ReplicaState> {
        self.cluster.state_of(&vid(), &rid(n))
    }

    fn acks(&self) -> Vec<(Stage, bool)> {
        self.cluster
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Ack(_, s, moved) => Some((s, moved)),
                _ => None,
            })
            .collect()
    }

    fn committed_acks(&self) -> Vec<Stage> {
        self.acks()
            .into_iter()
            .filter(|(_, moved)| *moved)
            .map(|(s, _)| s)
            .collect()
    }

    /// Replica 2 fails, is reported, the grace passes, the replacement is accepted and the
    /// backend supplies replica 3.
    async fn replacement_supplied(&self, d: &mut Daemon<SimHost, MemoryCluster>) {
        self.host.lose_target(&nqn(2));
        let s = d.pass(&self.stop).await;
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(self.state(2), Some(ReplicaState::Faulty), "reported");
        assert_eq!(self.stage(), None, "not before the grace period");

        tokio::time::advance(GRACE).await;
        let s = d.pass(&self.stop).await;
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.requested, 1);
        assert_eq!(self.stage(), Some(Stage::Requested));

        export(&self.host, 3);
        self.cluster
            .supply(&vid(), replica(3, ReplicaState::Missing))
            .expect("supply");
    }
}

#[tokio::test(start_paused = true)]
async fn a_healthy_volume_is_reported_once_then_quiet() {
    let rig = Rig::connected().await;
    let mut d = rig.daemon();
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.volumes, 1);
    assert_eq!(s.reports, 2, "a fresh daemon states what it sees once");
    let s = d.pass(&rig.stop).await;
    assert_eq!(s.reports, 0, "nothing changed, nothing sent");
    assert_eq!(rig.cluster.heartbeats(), 2);
    assert!(rig.cluster.calls().contains(&Call::Heartbeat(vec![vid()])));
}

/// Found on a real kernel (e2e/run's agent-raid1): with ctrl-loss-tmo -1 and the kernel's
/// default fast_io_fail_tmo (off), a replica whose port went away held its leg's writes
/// forever, md never saw an error, and every write of the array waited with them. The
/// agent sets fast_io_fail_tmo on each replica controller it connects, so the leg fails
/// and the array goes on with the other.
#[tokio::test(start_paused = true)]
async fn a_lost_replica_fails_its_leg_instead_of_stalling_the_array() {
    let rig = Rig::connected().await;
    let snap = rig.host.snapshot().expect("snapshot");
    assert_eq!(snap.controllers.len(), 2);
    assert!(
        snap.controllers.iter().all(|c| c.fast_io_fail_s == Some(2)),
        "connect sets fast_io_fail_tmo: {:?}",
        snap.controllers
    );
    rig.host.lose_target(&nqn(2));
    assert!(!rig.host.stalled(&array()), "the array's writes go on");
    let mut d = rig.daemon();
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(rig.state(2), Some(ReplicaState::Faulty));
}

#[tokio::test(start_paused = true)]
async fn a_replica_controller_with_another_fast_io_fail_is_set_at_the_next_pass() {
    let rig = Rig::connected().await;
    let snap = rig.host.snapshot().expect("snapshot");
    let name = snap.controllers[0].name.clone();
    // Reconnected by hand, or set by someone else.
    rig.host.set_fast_io_fail(&name, 600).expect("set");
    let mut d = rig.daemon();
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let snap = rig.host.snapshot().expect("snapshot");
    assert!(snap.controllers.iter().all(|c| c.fast_io_fail_s == Some(2)));
}

#[tokio::test(start_paused = true)]
async fn a_controller_that_stops_answering_is_reported_missing_before_md_notices() {
    let rig = Rig::connected().await;
    let mut d = rig.daemon();
    d.pass(&rig.stop).await;
    rig.host
        .set_controller_state(&nqn(2), CtrlState::Connecting);
    let s = d.pass(&rig.stop).await;
    assert_eq!(s.reports, 1);
    assert_eq!(rig.state(2), Some(ReplicaState::Missing));
    rig.host.set_controller_state(&nqn(2), CtrlState::Live);
    d.pass(&rig.stop).await;
    assert_eq!(
        rig.state(2),
        Some(ReplicaState::Available),
        "back: reported back"
    );
}

#[tokio::test(start_paused = true)]
async fn the_full_self_healing_flow() {
    let rig = Rig::connected().await;
    let mut d = rig.daemon();
    d.pass(&rig.stop).await;
    rig.replacement_supplied(&mut d).await;
    let old_dev = rig.host.device_of(&nqn(2)).expect("old device");

    // Supplied -> the new leg goes in, resyncing.
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(rig.stage(), Some(Stage::Attached));
    assert_eq!(rig.state(3), Some(ReplicaState::Synchronizing));
    assert_eq!(rig.cluster.sync_of(&vid(), &rid(3)), Some(0));
    let new_dev = rig.host.device_of(&nqn(3)).expect("new device");
    let snap = rig.host.snapshot().expect("snapshot");
    let a = snap.array_named("vol1").expect("array");
    assert_eq!(
        a.leg(&new_dev).map(|l| l.state()),
        Some(LegState::Recovering)
    );

    // Progress is reported while it runs.
    rig.host.sync_to(&array(), rig.host.recovery_total() / 2);
    let s = d.pass(&rig.stop).await;
    assert_eq!(s.reports, 1);
    assert_eq!(rig.cluster.sync_of(&vid(), &rid(3)), Some(500));
    assert_eq!(rig.stage(), Some(Stage::Attached), "not synced yet");

    // In sync -> acknowledged; then the old leg is retired and its subsystem disconnected.
    rig.host.finish_sync(&array());
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(rig.stage(), Some(Stage::Retired));
    assert_eq!(rig.state(2), Some(ReplicaState::Terminating));
    assert_eq!(rig.state(3), Some(ReplicaState::Available));
    let snap = rig.host.snapshot().expect("snapshot");
    let a = snap.array_named("vol1").expect("array");
    assert!(a.leg(&old_dev).is_none(), "old leg removed");
    assert_eq!(a.legs.len(), 2);
    assert!(a.legs.iter().all(|l| l.state() == LegState::InSync));
    assert_eq!(a.degraded, 0);
    assert!(
        !snap.controllers.iter().any(|c| c.subsysnqn == nqn(2)),
        "old subsystem disconnected"
    );

    // The backend deletes the old replica and confirms: done; the agent goes quiet.
    rig.cluster.confirm_deleted(&vid()).expect("confirm");
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(rig.stage(), None);
    assert_eq!(rig.state(2), None);
    let s = d.pass(&rig.stop).await;
    assert_eq!((s.reports, s.requested, s.steps), (0, 0, 0));

    assert_eq!(
        rig.committed_acks(),
        [Stage::Attached, Stage::Synced, Stage::Retired]
    );
    assert_eq!(rig.host.count(is_add), 1);
    assert_eq!(rig.host.count(|c| is_connect(c, 3)), 1);
    assert_eq!(
        rig.host
            .count(|c| matches!(c, HostCommand::MdRemove { leg, .. } if *leg == old_dev)),
        1
    );

    // The new replica's arrival in sync was said by the SYNCED acknowledgement, not by a
    // report racing it; and nothing was reported for it before it was attached.
    let calls = rig.cluster.calls();
    let synced = calls
        .iter()
        .position(|c| matches!(c, Call::Ack(_, Stage::Synced, true)))
        .expect("synced acknowledged");
    let attached = calls
        .iter()
        .position(|c| matches!(c, Call::Ack(_, Stage::Attached, true)))
        .expect("attached acknowledged");
    for (i, call) in calls.iter().enumerate() {
        if let Call::Report(_, reports) = call {
            for r in reports.iter().filter(|r| r.replica == rid(3)) {
                assert!(i > attached, "reported before attached: {r:?}");
                assert!(
                    i > synced || r.state != ReplicaState::Available,
                    "available before the acknowledgement: {r:?}"
                );
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_restart_in_the_middle_of_a_resync_resumes_without_repeating() {
    let rig = Rig::connected().await;
    let mut d = rig.daemon();
    d.pass(&rig.stop).await;
    rig.replacement_supplied(&mut d).await;
    d.pass(&rig.stop).await;
    assert_eq!(rig.stage(), Some(Stage::Attached));
    rig.host.sync_to(&array(), rig.host.recovery_total() / 4);
    drop(d);

    // A new process: no memory but the cluster's committed stage and the host itself.
    let mut d = rig.daemon();
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(rig.stage(), Some(Stage::Attached));
    assert_eq!(rig.cluster.sync_of(&vid(), &rid(3)), Some(250));
    assert_eq!(rig.host.count(is_add), 1, "the leg is not added again");
    assert_eq!(rig.host.count(|c| is_connect(c, 3)), 1);

    rig.host.finish_sync(&array());
    d.pass(&rig.stop).await;
    assert_eq!(rig.stage(), Some(Stage::Retired));
    assert_eq!(
        rig.committed_acks(),
        [Stage::Attached, Stage::Synced, Stage::Retired]
    );
    assert_eq!(rig.host.count(is_add), 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_between_the_host_step_and_its_acknowledgement_does_not_repeat_the_step() {
    let rig = Rig::connected().await;
    let mut d = rig.daemon();
    d.pass(&rig.stop).await;
    rig.replacement_supplied(&mut d).await;

    // The leg goes in, the acknowledgement never reaches the cluster, the agent dies.
    rig.cluster.drop_next_ack();
    let s = d.pass(&rig.stop).await;
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert_eq!(rig.stage(), Some(Stage::Supplied), "nothing committed");
    assert_eq!(rig.host.count(is_add), 1);
    drop(d);

    let mut d = rig.daemon();
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(rig.stage(), Some(Stage::Attached));
    assert_eq!(rig.host.count(is_add), 1, "found added, acknowledged only");
    assert_eq!(rig.host.count(|c| is_connect(c, 3)), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_to_a_committed_acknowledgement_moves_on() {
    let rig = Rig::connected().await;
    let mut d = rig.daemon();
    d.pass(&rig.stop).await;
    rig.replacement_supplied(&mut d).await;

    rig.cluster.lose_next_ack_answer();
    let s = d.pass(&rig.stop).await;
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert_eq!(rig.stage(), Some(Stage::Attached), "committed all the same");

    rig.host.finish_sync(&array());
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(rig.stage(), Some(Stage::Retired));
    assert_eq!(
        rig.committed_acks(),
        [Stage::Attached, Stage::Synced, Stage::Retired]
    );
    assert_eq!(rig.host.count(is_add), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_cluster_changes_nothing_on_the_host() {
    let rig = Rig::connected().await;
    let mut d = rig.daemon();
    let before = rig.host.commands().len();
    rig.cluster.set_unavailable(true);
    rig.host.lose_target(&nqn(2));
    let s = d.pass(&rig.stop).await;
    assert!(
        s.errors
            .iter()
            .any(|e| e.contains("no monitor could answer")),
        "{:?}",
        s.errors
    );
    assert_eq!(rig.host.commands().len(), before);
    rig.cluster.set_unavailable(false);
    let s = d.pass(&rig.stop).await;
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(
        rig.state(2),
        Some(ReplicaState::Faulty),
        "reported once it could be"
    );
}

#[tokio::test(start_paused = true)]
async fn a_volume_whose_array_is_not_running_is_an_error_and_nothing_is_reported() {
    let rig = Rig::connected().await;
    rig.host
        .run(HostCommand::MdStop { name: array() })
        .await
        .expect("stop");
    let mut d = rig.daemon();
    let s = d.pass(&rig.stop).await;
    assert_eq!(s.reports, 0);
    assert!(
        s.errors.iter().any(|e| e.contains("not connected")),
        "{:?}",
        s.errors
    );
}

#[tokio::test(start_paused = true)]
async fn run_passes_every_period_and_stops_on_cancel() {
    let rig = Rig::connected().await;
    let d = rig.daemon();
    let stop = CancellationToken::new();
    let task = tokio::spawn(d.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while rig.cluster.heartbeats() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "three passes in 600 s"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let started = tokio::time::Instant::now();
    stop.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops promptly")
        .expect("no panic");
    assert!(result.is_ok());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Three passes at a 30 s period: the third came 60 s after the first.
    let heartbeats = rig.cluster.heartbeats();
    assert!((3..=4).contains(&heartbeats), "{heartbeats}");
}
