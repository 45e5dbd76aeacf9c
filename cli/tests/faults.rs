//! Real processes under faults: three `gwmon` monitors with the file fencer, two
//! `gwmon-gateway` processes on file targets, and a poller that reads both target files
//! every 10 ms, as a host would see the paths. Checked from the files alone: never two
//! targets saying optimized for one ANA group, whatever the fence or the map say.
//!
//! The faults are the ones that broke at the edges: a gateway paused (SIGSTOP) for longer
//! than the grace while its data plane keeps the last states, and a gateway killed
//! (SIGKILL) and restarted over the target it left optimized.
//!
//! Everything talks mutual TLS, as the README's three-monitor example does: certificates
//! made by `nvme-gw certs`, the monitors' Raft, the gateways' sessions and the CLI's calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const NVME_GW: &str = env!("CARGO_BIN_EXE_nvme-gw");
const DEADLINE: Duration = Duration::from_secs(60);
const GRACE_MS: u64 = 1_000;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Processes killed when the test ends, however it ends.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {}", child.id());
}

/// The certificates' directory, once made.
static CERTS: OnceLock<PathBuf> = OnceLock::new();

/// `--tls-ca`, `--tls-cert` and `--tls-key` for the holder of `stem` (`monitor-1`, ...).
fn tls_args(stem: &str) -> Vec<String> {
    let dir = CERTS.get().expect("certificates made");
    [
        ("--tls-ca", "ca.pem".to_owned()),
        ("--tls-cert", format!("{stem}.pem")),
        ("--tls-key", format!("{stem}.key")),
    ]
    .into_iter()
    .flat_map(|(flag, file)| [flag.to_owned(), dir.join(file).display().to_string()])
    .collect()
}

/// A CA and the certificates of three monitors, two gateways and an operator.
fn make_certs(dir: &Path) {
    let certs = |args: &[&str]| {
        let out = Command::new(NVME_GW)
            .arg("certs")
            .args(args)
            .arg("--dir")
            .arg(dir)
            .output()
            .expect("run nvme-gw certs");
        assert!(out.status.success(), "certs {args:?}: {out:?}");
    };
    certs(&["init"]);
    for id in ["1", "2", "3"] {
        certs(&["issue", "monitor", id]);
    }
    certs(&["issue", "gateway", "rbd/grp1/gw1"]);
    certs(&["issue", "gateway", "rbd/grp1/gw2"]);
    certs(&["issue", "admin", "ops"]);
    CERTS.set(dir.to_owned()).expect("made once");
}

fn nvme_gw(monitors: &str, args: &[&str]) -> std::process::Output {
    Command::new(NVME_GW)
        .args(tls_args("admin-ops"))
        .args(["--monitors", monitors])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nvme-gw")
}

fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

fn write_target(path: &Path, port: u16) {
    std::fs::write(
        path,
        format!(
            r#"{{"subsystems":[{{"nqn":"{NQN}","listeners":[{{"address":"127.0.0.1","port":{port}}}],
"namespaces":[{{"nsid":1,"ana_group":1}},{{"nsid":2,"ana_group":2}}]}}]}}"#
        ),
    )
    .expect("write target");
}

/// The ANA groups a target file says optimized (unreadable mid-rename: none known).
fn optimized(path: &Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let groups = doc["ana"][NQN].as_object()?;
    Some(
        groups
            .iter()
            .filter(|(_, v)| v.as_str() == Some("optimized"))
            .filter_map(|(k, _)| k.parse().ok())
            .collect(),
    )
}

/// Reads every target file every 10 ms and keeps the instants at which two of them said
/// optimized for one ANA group.
struct Poller {
    stop: Arc<AtomicBool>,
    overlaps: Arc<Mutex<Vec<String>>>,
    samples: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(files: BTreeMap<String, PathBuf>) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let overlaps = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(Mutex::new(0));
        let thread = {
            let (stop, overlaps, samples) = (stop.clone(), overlaps.clone(), samples.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let mut holders: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
                    for (name, path) in &files {
                        for g in optimized(path).unwrap_or_default() {
                            holders.entry(g).or_default().push(name);
                        }
                    }
                    for (g, who) in holders {
                        if who.len() > 1 {
                            if let Ok(mut o) = overlaps.lock() {
                                o.push(format!(
                                    "ANA group {g} optimized on {who:?} at {} ms",
                                    started.elapsed().as_millis()
                                ));
                            }
                        }
                    }
                    if let Ok(mut n) = samples.lock() {
                        *n += 1;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Poller {
            stop,
            overlaps,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let n = self.samples.lock().map(|n| *n).unwrap_or(0);
        let o = self.overlaps.lock().map(|o| o.clone()).unwrap_or_default();
        (n, o)
    }
}

/// Each gateway's line of `nvme-gw show` (plain), by gateway id.
fn states(monitors: &str) -> BTreeMap<String, String> {
    let out = Command::new(NVME_GW)
        .args(tls_args("admin-ops"))
        .args([
            "--monitors",
            monitors,
            "--format",
            "plain",
            "show",
            "rbd",
            "grp1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run nvme-gw");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, _) = l.split_once(' ')?;
            Some((id.to_owned(), l.trim_end().to_owned()))
        })
        .collect()
}

fn gateway(bin: &Path, id: &str, monitors: &str, target: &Path, log: &Path) -> Child {
    Command::new(bin)
        .args(["--id", id, "--pool", "rbd", "--group", "grp1"])
        .args(["--monitors", monitors, "--adapter", "file"])
        .arg("--target")
        .arg(target)
        .args(["--beacon-ms", "100", "--grace-ms", &GRACE_MS.to_string()])
        .args(["--handler-timeout-ms", "100"])
        .args(tls_args(&format!("gateway-rbd_grp1_{id}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start gwmon-gateway")
}

#[test]
fn paused_and_killed_gateways_never_leave_two_targets_optimized() {
    let bins = gwmon_tests::bins::build(
        NVME_GW,
        &["gwmon-monitor", "gwmon-client"],
        &["gwmon", "gwmon-gateway"],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certs(&d.join("certs"));
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members = ports
        .iter()
        .zip(&peer_ports)
        .enumerate()
        .map(|(i, (p, peer))| format!("{}=127.0.0.1:{p}/127.0.0.1:{peer}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let monitors = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Procs::default();
    for (i, port) in ports.iter().enumerate() {
        let id = (i + 1).to_string();
        let child = Command::new(&bins["gwmon"])
            .args(["--node-id", &id, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--peer-listen", &format!("127.0.0.1:{}", peer_ports[i])])
            .args(["--http-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(d.join(format!("m{id}")))
            .args(["--initial-members", &members, "--fencer", "file"])
            .arg("--fencer-file-targets")
            .arg(d.join("{gateway}.json"))
            .args(tls_args(&format!("monitor-{id}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join(format!("m{id}.log"))).expect("log"))
            .spawn()
            .expect("start gwmon");
        procs.0.push(child);
    }
    until("a leader", || {
        nvme_gw(&monitors, &["cluster", "status"]).status.success()
    });
    until("quick timers", || {
        nvme_gw(
            &monitors,
            &[
                "config",
                "set",
                &format!("beacon_grace_ms={GRACE_MS}"),
                "failback_prepare_ms=200",
                "skip_failover_redeploy_ms=1000",
                "skip_failover_admin_ms=300",
            ],
        )
        .status
        .success()
    });
    let targets: BTreeMap<String, PathBuf> = ["gw1", "gw2"]
        .iter()
        .map(|g| (g.to_string(), d.join(format!("{g}.json"))))
        .collect();
    write_target(&targets["gw1"], 4420);
    write_target(&targets["gw2"], 4421);
    for g in ["gw1", "gw2"] {
        let out = nvme_gw(&monitors, &["create", g, "rbd", "grp1"]);
        assert!(out.status.success(), "create {g}: {out:?}");
    }
    let gwb = &bins["gwmon-gateway"];
    let mut gw1 = gateway(gwb, "gw1", &monitors, &targets["gw1"], &d.join("gw1.log"));
    let gw2 = gateway(gwb, "gw2", &monitors, &targets["gw2"], &d.join("gw2.log"));
    procs.0.push(gw2);
    let settled = |monitors: &str| {
        let s = states(monitors);
        let line = |g: &str, want: &str| {
            s.get(g)
                .is_some_and(|v| v.contains(" AVAILABLE ") && v.ends_with(want))
        };
        line("gw1", "1:ACTIVE 2:STANDBY")
            && line("gw2", "1:STANDBY 2:ACTIVE")
            && optimized(&targets["gw1"]) == Some(vec![1])
            && optimized(&targets["gw2"]) == Some(vec![2])
    };
    until("each gateway serves its own group", || settled(&monitors));
    let poller = Poller::start(targets.clone());

    // 1. gw1 paused past the grace: its target keeps saying optimized until the file
    //    fencer cuts it off; only then may gw2 serve group 1.
    signal(&gw1, "-STOP");
    until("gw2 serves group 1", || {
        optimized(&targets["gw2"]).is_some_and(|g| g.contains(&1))
    });
    until("gw1 declared failed", || {
        states(&monitors)
            .get("gw1")
            .is_some_and(|l| l.contains(" UNAVAILABLE "))
    });
    signal(&gw1, "-CONT");
    // Resumed, it learns it was declared failed, rejoins and takes its group back.
    until("gw1 serves its group again", || settled(&monitors));

    // 2. gw1 killed while serving: its file stays optimized until the fence; restarted, it
    //    makes the file inaccessible before anything else and rejoins.
    signal(&gw1, "-KILL");
    let _ = gw1.wait();
    until("gw2 serves group 1 after the kill", || {
        optimized(&targets["gw2"]).is_some_and(|g| g.contains(&1))
    });
    gw1 = gateway(gwb, "gw1", &monitors, &targets["gw1"], &d.join("gw1b.log"));
    until("gw1 serves its group after the restart", || {
        settled(&monitors)
    });
    procs.0.push(gw1);

    let (samples, overlaps) = poller.finish();
    assert!(samples > 100, "the poller read the targets {samples} times");
    assert!(
        overlaps.is_empty(),
        "{} samples of {samples} saw two targets optimized: {:?}",
        overlaps.len(),
        &overlaps[..overlaps.len().min(5)]
    );
}
