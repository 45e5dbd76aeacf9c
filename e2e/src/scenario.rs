//! The scenarios: each a fault and what the host must see after it, measured by fio.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::{map_active, wait_for, Cluster, GROUP, POOL};
use crate::host::{self, Fio};
use crate::kernel::{self, Port};

/// The scenarios, in the order they run, and how many monitors each wants.
pub const ALL: [(&str, u64); 6] = [
    ("steady", 1),
    ("gateway-kill", 1),
    ("planned-move", 1),
    ("gateway-pause", 1),
    ("both-down", 1),
    ("leader-kill", 3),
];

/// The guest's set-up: the cluster, the kernel target and the connected host.
pub struct Env {
    pub cluster: Cluster,
    ports: Vec<Port>,
    /// `(nsid, ANA group)`: namespace 1 in gw1's group, 2 in gw2's.
    namespaces: Vec<(u32, u32)>,
    heads: BTreeMap<u32, PathBuf>,
    work: PathBuf,
}

const GATEWAYS: [&str; 2] = ["gw1", "gw2"];

impl Env {
    pub fn up(bins: &Path, work: &Path, n_monitors: u64) -> Result<Env, String> {
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
        let ports: BTreeMap<String, Port> = GATEWAYS
            .iter()
            .zip(1u16..)
            .map(|(gw, id)| {
                (
                    (*gw).to_owned(),
                    Port {
                        id,
                        addr: format!("127.0.0.{id}"),
                    },
                )
            })
            .collect();
        let mut cluster = Cluster::new(bins, work, n_monitors, ports.clone());
        cluster.bootstrap(&["failback_prepare_ms=2000"])?;
        let namespaces: Vec<(u32, u32)> = GATEWAYS
            .iter()
            .zip(1u32..)
            .map(|(gw, nsid)| (nsid, cluster.anagrp[*gw]))
            .collect();
        let groups: Vec<u32> = namespaces.iter().map(|(_, g)| *g).collect();
        let ports: Vec<Port> = ports.into_values().collect();
        kernel::export(&ports, &namespaces, &groups)?;
        for gw in GATEWAYS {
            cluster.start_gateway(gw)?;
        }
        let mut env = Env {
            cluster,
            ports,
            namespaces,
            heads: BTreeMap::new(),
            work: work.to_owned(),
        };
        wait_for(
            "every gateway serving its group in nvmet",
            Duration::from_secs(60),
            || {
                GATEWAYS.iter().all(|gw| {
                    let port = &env.cluster.ports[*gw];
                    port.state(env.cluster.anagrp[*gw])
                        .is_ok_and(|s| s == "optimized")
                })
            },
        )?;
        for port in &env.ports {
            host::connect(&port.addr)?;
        }
        wait_for(
            "the host's multipath devices",
            Duration::from_secs(30),
            || host::heads().len() == env.namespaces.len(),
        )?;
        env.heads = host::heads();
        env.wait_matching()?;
        Ok(env)
    }

    pub fn down(self) -> Result<(), String> {
        let Env {
            cluster,
            ports,
            namespaces,
            ..
        } = self;
        let disconnected = host::disconnect();
        drop(cluster);
        disconnected?;
        kernel::unexport(&ports, &namespaces)
    }

    fn nsid_of(&self, gw: &str) -> u32 {
        let grp = self.cluster.anagrp[gw];
        self.namespaces
            .iter()
            .find(|(_, g)| *g == grp)
            .map(|(n, _)| *n)
            .unwrap_or(0)
    }

    /// Whether the host's path through `gw`'s port to `nsid` is optimized.
    fn serves(&self, gw: &str, nsid: u32) -> bool {
        host::path_state(&self.cluster.ports[gw].addr, nsid).is_some_and(|s| s == "optimized")
    }

    /// Every path's state at the host matches the map: optimized through the gateway the
    /// map makes active for the namespace's ANA group, inaccessible through the others.
    fn matches_map(&self) -> Result<bool, String> {
        let show = self.cluster.nvme_gw(&["show", POOL, GROUP])?;
        let paths = host::paths();
        Ok(self.namespaces.iter().all(|&(nsid, grp)| {
            let active = map_active(&show, grp);
            GATEWAYS.iter().all(|gw| {
                let want = if active.as_deref() == Some(*gw) {
                    "optimized"
                } else {
                    "inaccessible"
                };
                let addr = &self.cluster.ports[*gw].addr;
                paths
                    .iter()
                    .any(|p| p.nsid == nsid && &p.addr == addr && p.state == want)
            })
        }))
    }

    fn wait_matching(&self) -> Result<Duration, String> {
        wait_for(
            "the host's ANA states matching the map",
            Duration::from_secs(30),
            || self.matches_map().unwrap_or(false),
        )
    }

    /// Restart gateways whose process exited (a gateway that lost its lease exits).
    fn revive(&mut self) -> Result<(), String> {
        let gone: Vec<String> = self
            .cluster
            .gateways
            .iter_mut()
            .filter_map(|(gw, p)| p.exited().then(|| gw.clone()))
            .collect();
        for gw in gone {
            self.cluster.start_gateway(&gw)?;
        }
        Ok(())
    }
}

/// One measured phase: fio across a fault until the host is served as the map says.
#[derive(Debug, Clone)]
pub struct Measure {
    pub scenario: String,
    pub phase: String,
    pub run: u32,
    /// The longest I/O at the host, in milliseconds, over every namespace.
    pub pause_ms: f64,
    /// From the fault to the host served on the expected paths.
    pub recovered_ms: u128,
    pub errors: u64,
    pub ios: u64,
    pub matched: bool,
    /// The most the pause may be.
    pub target_ms: f64,
    pub failure: Option<String>,
    /// What else was seen, for people (the replacement's stages, the array's legs).
    pub detail: Option<String>,
}

impl Measure {
    /// A phase not yet measured.
    pub fn new(scenario: &str, phase: &str, run: u32, target_ms: f64) -> Measure {
        Measure {
            scenario: scenario.into(),
            phase: phase.into(),
            run,
            pause_ms: 0.0,
            recovered_ms: 0,
            errors: 0,
            ios: 0,
            matched: false,
            target_ms,
            failure: None,
            detail: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.failure.is_none() && self.errors == 0 && self.matched
    }

    /// What fio saw: its errors, its I/Os and the longest one; or why it could not say.
    pub fn record(&mut self, fio: Result<crate::host::FioResult, String>) {
        match fio {
            Ok(r) => {
                self.errors = r.errors;
                self.ios = r.ios;
                self.pause_ms = r.longest_ms.values().copied().fold(0.0, f64::max);
            }
            Err(e) => {
                self.failure.get_or_insert(e);
            }
        }
    }

    /// Whether the longest I/O was within its target: a benchmark figure, reported, not a
    /// pass condition (timing under emulation on a shared machine is not a test).
    pub fn within_target(&self) -> bool {
        self.pause_ms <= self.target_ms
    }

    pub fn json(&self) -> Value {
        json!({
            "scenario": self.scenario, "phase": self.phase, "run": self.run,
            "pause_ms": self.pause_ms, "recovered_ms": self.recovered_ms, "errors": self.errors,
            "ios": self.ios, "ana_matches_map": self.matched, "target_ms": self.target_ms,
            "failure": self.failure, "passed": self.passed(), "within_target": self.within_target(), "detail": self.detail,
        })
    }
}

type Step<'a> = Box<dyn FnOnce(&mut Env) -> Result<(), String> + 'a>;
type Done<'a> = Box<dyn FnMut(&mut Env) -> bool + 'a>;

/// Run fio, inject `fault`, wait until `done`, see I/O flow again, stop fio, check the
/// host against the map.
fn phase(
    env: &mut Env,
    scenario: &str,
    name: &str,
    run: u32,
    target_ms: f64,
    fault: Step,
    mut done: Done,
) -> Measure {
    let mut m = Measure::new(scenario, name, run, target_ms);
    let dir = env.work.join(format!("fio-{scenario}-{name}-{run}"));
    let mut fio = match Fio::start(&dir, &env.heads) {
        Ok(f) => f,
        Err(e) => {
            m.failure = Some(e);
            return m;
        }
    };
    let outcome = (|| -> Result<u128, String> {
        fio.progress(100, Duration::from_secs(30))?;
        let t0 = Instant::now();
        fault(env)?;
        let end = t0 + Duration::from_secs(120);
        while !done(env) {
            if Instant::now() > end {
                return Err(format!(
                    "{name}: the host was not served as expected within 120 s"
                ));
            }
            env.revive()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = t0.elapsed().as_millis();
        fio.progress(100, Duration::from_secs(30))?;
        Ok(took)
    })();
    match outcome {
        Ok(took) => m.recovered_ms = took,
        Err(e) => m.failure = Some(e),
    }
    m.record(fio.stop());
    m.matched = env.wait_matching().is_ok();
    m
}

fn both_unavailable(e: &Env) -> bool {
    e.cluster.nvme_gw(&["show", POOL, GROUP]).is_ok_and(|show| {
        show["Created Gateways:"]
            .as_array()
            .is_some_and(|gws| gws.iter().all(|g| g["Availability"] == "UNAVAILABLE"))
    })
}

/// Run scenario `name` once (`run` picks the victim: gw1 on odd runs, gw2 on even ones).
pub fn run(env: &mut Env, name: &str, run: u32) -> Vec<Measure> {
    let (v, w) = if run % 2 == 1 {
        ("gw1", "gw2")
    } else {
        ("gw2", "gw1")
    };
    let (nv, nw) = (env.nsid_of(v), env.nsid_of(w));
    let unplanned = env.cluster.grace_ms as f64 + 1000.0;
    let planned = 200.0;
    let kill = move |env: &mut Env, gw: &str| {
        env.cluster.gateways.remove(gw); // dropped: SIGKILL
        Ok(())
    };
    match name {
        // No fault: the noise floor of the longest I/O under this emulation.
        "steady" => vec![phase(
            env,
            name,
            "no-fault",
            run,
            planned,
            Box::new(|_| Ok(())),
            Box::new(|_| true),
        )],
        "gateway-kill" => vec![
            phase(
                env,
                name,
                "failover",
                run,
                unplanned,
                Box::new(move |e| kill(e, v)),
                Box::new(move |e| e.serves(w, nv)),
            ),
            phase(
                env,
                name,
                "failback",
                run,
                planned,
                Box::new(move |e| e.cluster.start_gateway(v)),
                Box::new(move |e| e.serves(v, nv)),
            ),
        ],
        "planned-move" => vec![
            phase(
                env,
                name,
                "disable",
                run,
                planned,
                Box::new(move |e| e.cluster.nvme_gw(&["disable", v, POOL, GROUP]).map(drop)),
                Box::new(move |e| e.serves(w, nv)),
            ),
            phase(
                env,
                name,
                "enable",
                run,
                planned,
                Box::new(move |e| e.cluster.nvme_gw(&["enable", v, POOL, GROUP]).map(drop)),
                Box::new(move |e| e.serves(v, nv)),
            ),
        ],
        "gateway-pause" => vec![
            phase(
                env,
                name,
                "failover",
                run,
                unplanned,
                Box::new(move |e| e.cluster.signal(v, "STOP")),
                Box::new(move |e| e.serves(w, nv)),
            ),
            phase(
                env,
                name,
                "failback",
                run,
                planned,
                Box::new(move |e| e.cluster.signal(v, "CONT")),
                Box::new(move |e| e.serves(v, nv)),
            ),
        ],
        "both-down" => vec![
            phase(
                env,
                name,
                "one-back",
                run,
                unplanned,
                // Neither can take over, so neither is fenced: the kernel targets keep
                // serving the host until one gateway is back and takes the other's group
                // (fencing the other first).
                Box::new(move |e| {
                    kill(e, v)?;
                    kill(e, w)?;
                    wait_for(
                        "both gateways unavailable in the map",
                        Duration::from_secs(60),
                        || both_unavailable(e),
                    )?;
                    e.cluster.start_gateway(v)
                }),
                Box::new(move |e| e.serves(v, nv) && e.serves(v, nw)),
            ),
            phase(
                env,
                name,
                "second-back",
                run,
                planned,
                Box::new(move |e| e.cluster.start_gateway(w)),
                Box::new(move |e| e.serves(w, nw) && e.serves(v, nv)),
            ),
        ],
        "leader-kill" => {
            let mut killed = None;
            let k = &mut killed;
            let m = phase(
                env,
                name,
                "leader-kill",
                run,
                planned,
                Box::new(move |e| {
                    let leader = e.cluster.leader().ok_or("no leader")?;
                    e.cluster.monitors.remove(&leader);
                    *k = Some(leader);
                    Ok(())
                }),
                Box::new(move |e| {
                    e.cluster.leader().is_some()
                        && e.cluster
                            .nvme_gw(&["config", "set", "failback_prepare_ms=2000"])
                            .is_ok()
                        && e.serves(v, nv)
                        && e.serves(w, nw)
                }),
            );
            if let Some(id) = killed {
                let back = env.cluster.start_monitor(id).and_then(|()| {
                    wait_for(
                        "the killed monitor back in the cluster",
                        Duration::from_secs(60),
                        || env.cluster.leader().is_some(),
                    )
                });
                if let Err(e) = back {
                    let mut m = m.clone();
                    m.failure.get_or_insert(e);
                    return vec![m];
                }
            }
            vec![m]
        }
        other => {
            let mut m = Measure::new(other, "-", run, 0.0);
            m.failure = Some(format!("unknown scenario {other}"));
            vec![m]
        }
    }
}
