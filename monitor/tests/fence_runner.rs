//! The fence runner inside a real single-node monitor (Raft, a real store, gRPC on `127.0.0.1:0`):
//! a failover issues a fence, the monitor's runner runs the configured fencer, retries it
//! after failures and commits its completion, after which the failover target may serve.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ana, gw, key, served_fence_epoch, subsystem};
use gwmon_monitor::config::MonitorConfig;
use gwmon_monitor::core::Core;
use gwmon_monitor::fence::{BoxFuture, FenceError, FenceOrder, Fencer};
use gwmon_monitor::map::{Command, Fence};
use gwmon_monitor::node::{Listeners, Monitor, Plumbing};
use gwmon_proto::domain::{
    AnaAccess, Epoch, GatewayId, GatewayReport, GroupKey, ReportedAvailability,
};
use tokio::time::Instant;

/// Fails `failures` times, then succeeds; records every order and when it came.
struct FlakyFencer {
    failures: AtomicU32,
    calls: Mutex<Vec<(FenceOrder, Instant)>>,
}

impl Fencer for FlakyFencer {
    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
        self.calls
            .lock()
            .expect("calls")
            .push((order.clone(), Instant::now()));
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move {
            if fail {
                Err(FenceError::Http {
                    status: 503,
                    body: "blocklist service restarting".into(),
                })
            } else {
                Ok(())
            }
        })
    }

    fn name(&self) -> &'static str {
        "flaky"
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn propose(core: &Core, cmd: Command) {
    let shown = format!("{cmd:?}");
    if let Err(e) = core.propose(cmd).await {
        panic!("{shown} refused: {e}");
    }
}

/// What a gateway's beacon says: `availability`, serving namespaces of ANA `groups`, with
/// the epochs of the slice it holds.
async fn report(
    core: &Core,
    k: &GroupKey,
    id: &GatewayId,
    seq: u64,
    availability: ReportedAvailability,
    groups: &[u32],
) {
    let slice = core.reader().read(|m| m.slice(k, id));
    let subsystems = if groups.is_empty() {
        vec![]
    } else {
        vec![subsystem(id, groups, 2)]
    };
    let report = GatewayReport {
        seq,
        availability,
        subsystems,
        applied_epoch: slice.as_ref().map_or(Epoch::ZERO, |s| s.epoch),
        fence_epoch: slice.as_ref().map_or(Epoch::ZERO, served_fence_epoch),
    };
    propose(
        core,
        Command::GatewayReport {
            key: k.clone(),
            gateway: id.clone(),
            report,
        },
    )
    .await;
}

fn fences_of(core: &Core, k: &GroupKey, id: &GatewayId) -> Vec<Fence> {
    core.reader().read(|m| {
        m.group(k).map_or(vec![], |g| {
            g.fences
                .iter()
                .filter(|f| &f.gateway == id)
                .cloned()
                .collect()
        })
    })
}

#[tokio::test]
async fn the_leader_retries_a_failing_fence_until_it_is_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listeners = Listeners::loopback(false).await.expect("bind");
    let mut config = MonitorConfig::new(
        1,
        dir.path().join("m1"),
        "127.0.0.1:0".parse().expect("addr"),
    );
    config.heartbeat_ms = 50;
    config.election_timeout_min_ms = 300;
    config.election_timeout_max_ms = 600;
    let fencer = Arc::new(FlakyFencer {
        failures: AtomicU32::new(2),
        calls: Mutex::new(Vec::new()),
    });
    let plumbing = Plumbing {
        fencer: Some(fencer.clone()),
        ..Plumbing::default()
    };
    let monitor = Monitor::start(config, listeners, plumbing)
        .await
        .expect("monitor starts");
    let core = monitor.core.clone();
    eventually("the monitor leads", || core.is_leader()).await;

    let k = key("rbd", "grp1");
    let (a, b) = (gw("a"), gw("b"));
    for id in [&a, &b] {
        propose(
            &core,
            Command::CreateGateway {
                key: k.clone(),
                gateway: id.clone(),
            },
        )
        .await;
    }
    // a owns ANA group 1 and serves it; b (owner of group 2) is up and can take it over.
    report(&core, &k, &a, 0, ReportedAvailability::Starting, &[]).await;
    report(&core, &k, &a, 1, ReportedAvailability::Available, &[1]).await;
    report(&core, &k, &b, 0, ReportedAvailability::Starting, &[]).await;
    report(&core, &k, &b, 1, ReportedAvailability::Available, &[1]).await;
    assert!(fencer.calls.lock().expect("calls").is_empty());

    // a goes silent: group 1 fails over to b, behind a fence of a.
    propose(
        &core,
        Command::GatewayTimedOut {
            key: k.clone(),
            gateway: a.clone(),
        },
    )
    .await;
    let issued = fences_of(&core, &k, &a);
    assert_eq!(issued.len(), 1, "one fence of a: {issued:?}");
    let fence_epoch = issued[0].epoch;

    eventually("the fence of a is completed in the map", || {
        fences_of(&core, &k, &a)
            .iter()
            .any(|f| f.epoch == fence_epoch && f.completed_at.is_some())
    })
    .await;

    let calls = fencer.calls.lock().expect("calls").clone();
    assert_eq!(calls.len(), 3, "two failures, then success");
    for (order, _) in &calls {
        assert_eq!(order.key, k);
        assert_eq!(order.gateway, a);
        assert_eq!(order.epoch, fence_epoch);
        assert!(
            order.nonces.iter().any(|n| n.as_str() == "a-client-1"),
            "the order carries a's nonces: {:?}",
            order.nonces
        );
    }
    // Retries wait: the runner backs off (500 ms, then 1 s), it does not spin.
    assert!(calls[1].1 - calls[0].1 >= Duration::from_millis(400));
    assert!(calls[2].1 - calls[1].1 >= Duration::from_millis(800));

    // With the fence done, b's slice lets it serve ANA group 1.
    let view = core
        .reader()
        .read(|m| m.slice(&k, &b))
        .and_then(|s| s.ana(ana(1)).cloned())
        .expect("b's view of group 1");
    assert_eq!(view.access, AnaAccess::Optimized);
    assert!(view.fence_complete);
    assert_eq!(view.fence_epoch, fence_epoch);

    monitor.shutdown().await.expect("clean shutdown");
}
