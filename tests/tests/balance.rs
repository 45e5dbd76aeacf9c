//! Namespace balancing end to end: three in-process monitors (real gRPC, real stores) raise
//! the feature level by themselves and the leader moves namespaces; three gateways run the
//! gwmon-client library with the file target, the real adapter, each on a file of its own.
//! A sampler reads the three files as hosts would see them, each namespace served by the
//! gateways whose file has it in an ANA group marked optimized, and counts every instant a
//! namespace was served by two.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gwmon_client::adapters::file::FileTarget;
use gwmon_client::{AnaHandler, AnaStates, HandlerError, OnMonitorLoss};
use gwmon_proto::domain::Subsystem;
use gwmon_tests::env::Env;
use serde_json::{json, Value};
use tokio::time::Instant;

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";
const GATEWAYS: [&str; 3] = ["gw1", "gw2", "gw3"];
/// How much longer the first gateway's target takes to apply a map (within the client's
/// handler timeout of 100 ms in these tests).
const SLOW_APPLY: Duration = Duration::from_millis(60);

/// A target that takes `delay` longer to apply states.
struct Slow<H> {
    inner: H,
    delay: Duration,
}

impl<H: AnaHandler> AnaHandler for Slow<H> {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        self.inner.subsystems().await
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        tokio::time::sleep(self.delay).await;
        self.inner.apply(states).await
    }

    async fn shutdown(&self, reason: &str) {
        self.inner.shutdown(reason).await;
    }
}

/// What one target file exposes: nsid to the ANA group it is in, and whether that group
/// is optimized there.
type View = BTreeMap<u64, (u64, bool)>;

fn view(path: &Path) -> Option<View> {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let ana = &doc["ana"][NQN];
    let mut out = View::new();
    for ns in doc["subsystems"][0]["namespaces"].as_array()? {
        let nsid = ns["nsid"].as_u64()?;
        let g = ns["ana_group"].as_u64()?;
        out.insert(nsid, (g, ana[g.to_string()] == "optimized"));
    }
    Some(out)
}

/// The files' views at one instant: every file is read twice in a row, and the sample is
/// kept only if each read the same both times, so all the first reads held at once (after
/// the last file's first read and before the first file's second).
fn snapshot(paths: &[PathBuf]) -> Option<Vec<View>> {
    let first: Vec<View> = paths.iter().map(|p| view(p)).collect::<Option<_>>()?;
    let second: Vec<View> = paths.iter().map(|p| view(p)).collect::<Option<_>>()?;
    (first == second).then_some(first)
}

/// Namespaces served by more than one gateway in `views`.
fn doubly_served(views: &[View]) -> Vec<u64> {
    let mut servers: BTreeMap<u64, usize> = BTreeMap::new();
    for v in views {
        for (nsid, (_, optimized)) in v {
            if *optimized {
                *servers.entry(*nsid).or_default() += 1;
            }
        }
    }
    servers
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(nsid, _)| nsid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespaces_are_spread_over_the_gateways_and_never_served_by_two() {
    gwmon_tests::init_logs();
    let mut env = Env::start(&GATEWAYS, |_| {}).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Twelve namespaces, every one provisioned in ANA group 1 on every gateway.
    let namespaces: Vec<Value> = (1..=12)
        .map(|nsid| json!({"nsid": nsid, "ana_group": 1, "nonce": format!("client/{nsid}")}))
        .collect();
    let mut paths = Vec::new();
    for g in GATEWAYS {
        let path = dir.path().join(format!("{g}.json"));
        let doc = json!({"subsystems": [{
            "nqn": NQN,
            "listeners": [{"address": "127.0.0.1", "port": 4420}],
            "namespaces": namespaces,
        }]});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
        paths.push(path);
    }
    let started = Instant::now();
    for (g, path) in GATEWAYS.iter().zip(&paths) {
        // The gateway giving namespaces up is the slowest to apply a map: had the others
        // been told to serve them at once, the sampler would see both.
        let delay = if *g == "gw1" {
            SLOW_APPLY
        } else {
            Duration::ZERO
        };
        let target = Arc::new(Slow {
            inner: FileTarget::new(path),
            delay,
        });
        env.start_gateway_on(g, g, false, OnMonitorLoss::Demote, None, target)
            .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    // Ends the sampler however the test ends: a runtime waits for its blocking tasks.
    let _stop_on_drop = StopOnDrop(stop.clone());
    let sampler = {
        let stop = stop.clone();
        let paths = paths.clone();
        tokio::task::spawn_blocking(move || {
            let (mut samples, mut overlaps) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                if let Some(views) = snapshot(&paths) {
                    samples += 1;
                    let doubled = doubly_served(&views);
                    if !doubled.is_empty() {
                        overlaps.push((doubled, views));
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            (samples, overlaps)
        })
    };

    let balanced = |views: &[View]| {
        let first = &views[0];
        let mut per_group: BTreeMap<u64, usize> = BTreeMap::new();
        for (g, _) in first.values() {
            *per_group.entry(*g).or_default() += 1;
        }
        let groups = |v: &View| v.iter().map(|(n, (g, _))| (*n, *g)).collect::<Vec<_>>();
        views.iter().all(|v| groups(v) == groups(first))
            && per_group.len() == 3
            && per_group.values().all(|n| *n == 4)
    };
    let end = Instant::now() + gwmon_tests::DEADLINE;
    loop {
        let views = snapshot(&paths);
        // Every gateway's file agrees, four namespaces to a group, and each namespace is
        // served by the one gateway of its group.
        if views.as_ref().is_some_and(|v| {
            balanced(v)
                && v[0]
                    .keys()
                    .all(|nsid| v.iter().filter(|view| view[nsid].1).count() == 1)
        }) {
            break;
        }
        assert!(
            Instant::now() < end,
            "twelve namespaces not spread four to a gateway: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (samples, overlaps) = sampler.await.expect("sampler");
    eprintln!("balanced 12 namespaces over 3 gateways in {took:?} ({samples} samples)");
    assert!(samples > 100, "the sampler saw the files {samples} times");
    assert!(
        overlaps.is_empty(),
        "namespaces served by two gateways at once: {:?}",
        overlaps.first()
    );
    env.shutdown().await;
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
