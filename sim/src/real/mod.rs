//! The simulation's checks over real processes: three `gwmon` monitors and `gwmon-gateway`
//! processes, each in a network namespace of its own, faults from outside (SIGKILL, SIGSTOP
//! beyond the grace, the Raft leader cut off from the other monitors with iptables, a
//! monitor's wall clock jumped with libfaketime), commands from `nvme-gw`, and a history
//! read from the gateways' target files that [`crate::check`] checks as it checks a
//! simulated run.
//!
//! # The set-up
//!
//! * [`net`]: namespaces `adm` (10.77.0.2, where `nvme-gw` runs), `m1`..`m3` (10.77.0.11..13)
//!   and `gw1`.. (10.77.0.21..), bridged in a hub namespace. Partitions are iptables rules in
//!   one node's namespace: the leader drops everything to and from the other monitors'
//!   addresses, and still reaches (and is reached by) the gateways and the operator.
//! * Every gateway runs the file adapter on a target file of its own with a namespace in
//!   every ANA group, so it can serve any group; the monitors run the built-in `file` fencer
//!   on those files. The processes share the file system, only the network is separate.
//! * Every monitor runs under libfaketime with the wall clock only faked
//!   (`FAKETIME_DONT_FAKE_MONOTONIC=1`: a clock step, as NTP makes, moves the wall clock and
//!   never the monotonic one) and its offset in a file of its own, re-read every second
//!   (`FAKETIME_CACHE_DURATION=1`; `FAKETIME_NO_CACHE=1` works too but reads the file at
//!   every clock call).
//! * [`poller::Poller`] reads all target files every 10 ms, **holding every file's lock**
//!   (the `flock` the adapter and the fencer take around their writes) while it reads them
//!   all, so each snapshot is one instant of all targets: no write falls between reading
//!   one file and the next.
//!
//! # From target files to the checker's events
//!
//! With a file target the file *is* the data plane: hosts are served by a group exactly when
//! the file says it is optimized, and the file fencer fences by rewriting the file (every
//! group inaccessible, `fenced_epoch` recorded, atomically under the lock), after which the
//! adapter refuses to make any group optimized for states of that epoch or older. So:
//!
//! * **Identity.** The checker's "nonce" (the storage identity a target's I/O carries) is
//!   the target's *fence generation*: `gw1@fence0` until the first fence, `gw1@fenceN` after
//!   a fence at epoch N ([`poller::identity`]). A group made optimized carries the identity
//!   of the generation it was made optimized in.
//! * **`Fenced`.** `fenced_epoch` appearing or growing is a completed fence of that gateway
//!   at that epoch; it blocklists the generation that ended (`gw1@fence{previous}`).
//! * **`Target`.** A group turning optimized or not in a file. Within one snapshot fences
//!   are recorded first, then demotions, then promotions: of several changes between two
//!   snapshots only the end is known, and this order never invents an overlap. An overlap
//!   that begins and ends between two snapshots (under 10 ms) is not seen.
//! * **Serving**, for (a) and (d), is then what the checker computes: optimized in the file,
//!   in a generation not fenced since. For a correct fencer this is simply "optimized in the
//!   file", since a fence rewrites every group inaccessible in the same write.
//! * **`Write`.** A file target serves whatever it says optimized, nothing below it refuses
//!   I/O, so every snapshot that changed something (and every tenth one) records an accepted
//!   write for each optimized group, carrying the identity the group was made optimized in.
//!   That gives (b) something real to check: a group that stays optimized across a fence of
//!   its gateway (the fence recorded but the group not demoted, or made optimized again from
//!   the fenced epoch's states) keeps its old, fenced identity, so (a) would no longer count
//!   it, but its next write is a write accepted from a target serving across a completed
//!   fence, which (b) reports. (A legitimate fence, demotion and re-promotion all within
//!   one 10 ms poll would look the same; a re-promotion takes a failback of at least
//!   `failback_prepare_ms`, so it cannot.)
//! * **Admin.** [`admin::Operator`] runs `nvme-gw` commands in the background during the
//!   faults (`AdminSent`, then `AdminAcked` on exit 0 or `AdminFailed` otherwise, never
//!   claimed definite: the CLI retries by itself), and the final state is read back with
//!   `nvme-gw show` and `config show` (`AdminRead`).
//! * **Quiet.** Recorded once every fault is healed; (d) then wants every ANA group served
//!   within the bound.
//!
//! Nonces in the target files' namespaces are left out: the file fencer does not use them,
//! so they would identify nothing the checks could rely on.

pub mod admin;
pub mod history;
pub mod net;
pub mod poller;
pub mod proc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use admin::{NvmeGw, Operator};
use history::Recorder;
use net::Network;
use poller::Poller;
use proc::Proc;

use crate::world::{AdminOp, Event};

/// The beacon grace the monitors are set to: a gateway silent this long is failed over.
pub const GRACE_MS: u64 = 2_000;
/// The gateways' beacon interval.
pub const BEACON_MS: u64 = 200;
/// How often the poller reads the target files.
pub const POLL: Duration = Duration::from_millis(10);

const POOL: &str = "rbd";
const GROUP: &str = "grp1";
const GRPC_PORT: u16 = 7400;

/// Where the monitors' wall clocks are faked from. Debian's `libfaketime` package.
const FAKETIME_LIBS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// The programs the harness runs.
#[derive(Debug, Clone)]
pub struct Bins {
    pub gwmon: PathBuf,
    pub gateway: PathBuf,
    pub nvme_gw: PathBuf,
}

/// A running cluster of real processes and everything around it. Dropping it kills every
/// process, deletes the namespaces and, unless the thread is panicking (a failed test keeps
/// the logs), the directory.
pub struct Harness {
    pub dir: PathBuf,
    pub rec: Recorder,
    pub nvme: NvmeGw,
    pub gateways: Vec<String>,
    /// Gateway to the ANA group it owns.
    pub owners: BTreeMap<String, u32>,
    /// Expectations of the schedule that did not come true in time.
    pub missed: Vec<String>,
    bins: Bins,
    monitors: BTreeMap<u64, Proc>,
    running: BTreeMap<String, Proc>,
    starts: BTreeMap<String, u32>,
    paused: Vec<String>,
    poller: Option<Poller>,
    operator: Option<Operator>,
    net: Network,
}

fn monitor_name(id: u64) -> String {
    format!("m{id}")
}

impl Harness {
    /// Namespaces, three monitors, quick timers, `gateways` created and started, each serving
    /// its own ANA group. Errors say what could not be set up.
    pub fn start(bins: Bins, gateways: &[&str]) -> Result<Harness, String> {
        let faketime = FAKETIME_LIBS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .ok_or_else(|| {
                format!(
                    "libfaketime is not installed (none of {FAKETIME_LIBS:?}); \
                     `apt-get install faketime` (.ci/run does)"
                )
            })?;
        let dir = std::env::temp_dir().join(format!("gwmon-real-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut nodes: Vec<(String, u8)> = vec![("adm".into(), 2)];
        nodes.extend((1..=3u8).map(|i| (monitor_name(u64::from(i)), 10 + i)));
        for (i, g) in gateways.iter().enumerate() {
            let octet = u8::try_from(21 + i).map_err(|_| "too many gateways".to_owned())?;
            nodes.push(((*g).to_owned(), octet));
        }
        let node_refs: Vec<(&str, u8)> = nodes.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        let net = Network::new(&node_refs).map_err(|e| e.to_string())?;
        let addr = |id: u64| -> Result<String, String> {
            Ok(format!(
                "{}:{GRPC_PORT}",
                net.addr(&monitor_name(id)).map_err(|e| e.to_string())?
            ))
        };
        let monitors = (1..=3).map(addr).collect::<Result<Vec<_>, _>>()?.join(",");
        let members = (1..=3)
            .map(|id| Ok(format!("{id}={}", addr(id)?)))
            .collect::<Result<Vec<_>, String>>()?
            .join(",");
        let adm = net.node("adm").map(|n| n.ns.clone()).unwrap_or_default();
        let rec = Recorder::new();
        let nvme = NvmeGw {
            ns: adm,
            bin: bins.nvme_gw.clone(),
            monitors: monitors.clone(),
            pool: POOL.into(),
            group: GROUP.into(),
        };
        let mut h = Harness {
            dir: dir.clone(),
            rec: rec.clone(),
            nvme: nvme.clone(),
            gateways: gateways.iter().map(|g| (*g).to_owned()).collect(),
            owners: BTreeMap::new(),
            missed: Vec::new(),
            bins,
            monitors: BTreeMap::new(),
            running: BTreeMap::new(),
            starts: BTreeMap::new(),
            paused: Vec::new(),
            poller: None,
            operator: None,
            net,
        };
        for id in 1..=3u64 {
            h.start_monitor(id, &members, faketime)?;
        }
        h.must("a Raft leader", Duration::from_secs(30), |h| {
            h.nvme.leader().is_ok()
        })?;
        let quick = [
            format!("beacon_grace_ms={GRACE_MS}"),
            "failback_prepare_ms=300".into(),
            "skip_failover_redeploy_ms=1000".into(),
            "skip_failover_admin_ms=500".into(),
            "fence_timeout_ms=5000".into(),
        ];
        h.must("quick timers set", Duration::from_secs(30), |h| {
            let mut args = vec!["config", "set"];
            args.extend(quick.iter().map(String::as_str));
            h.nvme.json(&args).is_ok()
        })?;
        h.create_gateways(gateways, nvme, rec)?;
        h.must(
            "every gateway serving its own ANA group",
            Duration::from_secs(30),
            |h| h.all_owners_serve(),
        )?;
        Ok(h)
    }

    /// Starts monitor `id` of the initial `members`, its wall clock under libfaketime
    /// (`faketime`) read from a file of its own.
    fn start_monitor(&mut self, id: u64, members: &str, faketime: &Path) -> Result<(), String> {
        let name = monitor_name(id);
        let clock = self.clock_file(id);
        std::fs::write(&clock, "+0\n").map_err(|e| format!("{}: {e}", clock.display()))?;
        let ip = self.net.addr(&name).map_err(|e| e.to_string())?;
        let mut cmd = self
            .net
            .command(&name, &self.bins.gwmon)
            .map_err(|e| e.to_string())?;
        cmd.args(["--node-id", &id.to_string()])
            .args(["--listen", &format!("{ip}:{GRPC_PORT}")])
            // The harness's namespaces reach only each other; the checker reads what
            // the processes do, not how they authenticate.
            .arg("--insecure")
            .args(["--http-listen", &format!("{ip}:7401")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("{name}.data")))
            .args(["--initial-members", members])
            .args(["--liveness-tick-ms", "100"])
            .args(["--fencer", "file", "--fencer-timeout-ms", "2000"])
            .arg("--fencer-file-targets")
            .arg(self.dir.join("{gateway}.json"))
            .env("LD_PRELOAD", faketime)
            .env("FAKETIME_TIMESTAMP_FILE", &clock)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        let p = Proc::spawn(cmd, &self.dir.join(format!("{name}.log")))?;
        self.monitors.insert(id, p);
        Ok(())
    }

    /// Creates `gateways` through the operator and starts them, with their target files
    /// polled for what hosts would see.
    fn create_gateways(
        &mut self,
        gateways: &[&str],
        nvme: NvmeGw,
        rec: Recorder,
    ) -> Result<(), String> {
        let ana_groups: Vec<u32> = (1..=u32::try_from(gateways.len()).unwrap_or(0)).collect();
        let mut files = BTreeMap::new();
        for g in gateways {
            let path = self.target(g);
            let ip = self.net.addr(g).map_err(|e| e.to_string())?;
            poller::write_target(&path, ip, &ana_groups)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            files.insert((*g).to_owned(), path);
        }
        self.poller = Some(Poller::start(files, rec.clone(), POLL));
        let operator = Operator::start(nvme, rec);
        for g in gateways {
            operator.submit(AdminOp::Create((*g).to_owned()));
        }
        if !operator.wait_idle(Duration::from_secs(60)) {
            return Err("creating the gateways took over a minute".into());
        }
        self.operator = Some(operator);
        let show = self.nvme.json(&["show", POOL, GROUP])?;
        for gw in show["Created Gateways:"].as_array().into_iter().flatten() {
            if let (Some(id), Some(ana)) = (gw["gw-id"].as_str(), gw["anagrp-id"].as_u64()) {
                self.owners
                    .insert(id.to_owned(), u32::try_from(ana).unwrap_or(u32::MAX));
            }
        }
        if self.owners.len() != gateways.len() {
            return Err(format!("the gateways were not all created: {show}"));
        }
        for g in gateways {
            self.start_gateway(g)?;
        }
        Ok(())
    }

    fn clock_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("m{id}.faketime"))
    }

    /// A gateway's target file.
    pub fn target(&self, gateway: &str) -> PathBuf {
        self.dir.join(format!("{gateway}.json"))
    }

    /// The ANA groups every gateway can serve.
    pub fn ana_groups(&self) -> Vec<u32> {
        self.owners.values().copied().collect()
    }

    fn poller(&self) -> Result<&Poller, String> {
        self.poller.as_ref().ok_or_else(|| "no poller".to_owned())
    }

    /// The gateways whose target says `ana` optimized, as last polled.
    pub fn servers(&self, ana: u32) -> Vec<String> {
        self.poller
            .as_ref()
            .map_or_else(Vec::new, |p| p.servers(ana))
    }

    /// Whether every ANA group is optimized on exactly its owner.
    pub fn all_owners_serve(&self) -> bool {
        self.owners
            .iter()
            .all(|(g, ana)| self.servers(*ana) == [g.clone()])
    }

    /// Whether every ANA group is optimized on exactly one gateway: its owner, or, while
    /// the monitors damp its owner for going down again and again, any one (a damped
    /// gateway gets no failback: that is the point of damping, not a missed failback).
    pub fn owners_serve_unless_damped(&self) -> bool {
        if self.all_owners_serve() {
            return true;
        }
        if !self
            .owners
            .values()
            .all(|ana| self.servers(*ana).len() == 1)
        {
            return false;
        }
        let damped = self.damped();
        self.owners
            .iter()
            .all(|(g, ana)| damped.contains(g) || self.servers(*ana) == [g.clone()])
    }

    /// The gateways `nvme-gw health` reports damped (`NVMEOF_GATEWAY_FLAPPING`); none if
    /// it cannot be read.
    pub fn damped(&self) -> std::collections::BTreeSet<String> {
        let Ok(health) = self.nvme.json(&["health"]) else {
            return Default::default();
        };
        let checks = health["checks"].as_array().cloned().unwrap_or_default();
        checks
            .iter()
            .filter(|c| c["code"] == "NVMEOF_GATEWAY_FLAPPING")
            .filter_map(|c| {
                let message = c["message"].as_str()?;
                let name = message.strip_prefix("gateway ")?.split(' ').next()?;
                Some(name.to_owned())
            })
            .collect()
    }

    /// Whether every ANA group is optimized somewhere.
    pub fn all_served(&self) -> bool {
        self.owners
            .values()
            .all(|ana| !self.servers(*ana).is_empty())
    }

    /// Poll `cond` every 20 ms for at most `within`. If it never held, the miss is recorded
    /// in the history and in [`Harness::missed`] (the test fails on it at the end) and the
    /// schedule goes on.
    pub fn expect(
        &mut self,
        what: &str,
        within: Duration,
        mut cond: impl FnMut(&Harness) -> bool,
    ) -> bool {
        let end = Instant::now() + within;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= end {
                let miss = format!(
                    "expected within {:.1}s, did not happen: {what}",
                    within.as_secs_f64()
                );
                self.rec.record(Event::Fault(miss.clone()));
                self.missed.push(miss);
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Harness::expect`], but an error if it never held.
    fn must(
        &mut self,
        what: &str,
        within: Duration,
        cond: impl FnMut(&Harness) -> bool,
    ) -> Result<(), String> {
        if self.expect(what, within, cond) {
            Ok(())
        } else {
            Err(format!(
                "timed out waiting for {what}; logs in {}",
                self.dir.display()
            ))
        }
    }

    /// Record that a fault is injected or healed.
    pub fn fault(&self, what: impl Into<String>) {
        self.rec.record(Event::Fault(what.into()));
    }

    // -- gateways --------------------------------------------------------------------------

    /// Start a process of `gateway` (after a kill: a new one).
    pub fn start_gateway(&mut self, gateway: &str) -> Result<(), String> {
        let n = {
            let n = self.starts.entry(gateway.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        let mut cmd = self
            .net
            .command(gateway, &self.bins.gateway)
            .map_err(|e| e.to_string())?;
        cmd.args(["--id", gateway, "--pool", POOL, "--group", GROUP])
            .args(["--monitors", &self.nvme.monitors, "--adapter", "file"])
            .arg("--target")
            .arg(self.target(gateway))
            .args(["--beacon-ms", &BEACON_MS.to_string()])
            .args(["--grace-ms", &GRACE_MS.to_string()])
            .args(["--handler-timeout-ms", "200"]);
        let p = Proc::spawn(cmd, &self.dir.join(format!("{gateway}.{n}.log")))?;
        self.rec.record(Event::Started {
            gateway: gateway.to_owned(),
            nonce: format!("{gateway}/{n} (pid {})", p.pid()),
        });
        self.running.insert(gateway.to_owned(), p);
        Ok(())
    }

    /// SIGKILL the running process of `gateway`.
    pub fn kill_gateway(&mut self, gateway: &str) {
        self.fault(format!("kill -9 {gateway}"));
        if let Some(p) = self.running.remove(gateway) {
            let pid = p.pid();
            p.kill();
            self.paused.retain(|g| g != gateway);
            self.rec.record(Event::Exited {
                gateway: gateway.to_owned(),
                nonce: format!("{gateway}/{} (pid {pid})", self.starts[gateway]),
                why: "SIGKILL".into(),
            });
        }
    }

    /// SIGSTOP `gateway`'s process.
    pub fn pause(&mut self, gateway: &str) -> Result<(), String> {
        self.fault(format!("SIGSTOP {gateway}"));
        let p = self
            .running
            .get(gateway)
            .ok_or_else(|| format!("{gateway} is not running"))?;
        p.signal("STOP")?;
        self.paused.push(gateway.to_owned());
        Ok(())
    }

    /// SIGCONT `gateway`'s process.
    pub fn resume(&mut self, gateway: &str) -> Result<(), String> {
        self.fault(format!("SIGCONT {gateway}"));
        let p = self
            .running
            .get(gateway)
            .ok_or_else(|| format!("{gateway} is not running"))?;
        p.signal("CONT")?;
        self.paused.retain(|g| g != gateway);
        Ok(())
    }

    /// Gateways whose process exited by itself, with how (reaped, so the caller can
    /// restart them).
    pub fn exited_gateways(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (g, p) in &mut self.running {
            if let Some(status) = p.exited() {
                out.push((g.clone(), status.to_string()));
            }
        }
        for (g, status) in &out {
            self.running.remove(g);
            self.rec.record(Event::Exited {
                gateway: g.clone(),
                nonce: format!("{g}/{}", self.starts.get(g).copied().unwrap_or(0)),
                why: status.clone(),
            });
        }
        out
    }

    // -- monitors ----------------------------------------------------------------------------

    /// The leader as `nvme-gw cluster status` reports it.
    pub fn leader(&self) -> Result<u64, String> {
        let (leader, term) = self.nvme.leader()?;
        self.rec.record(Event::Leader {
            monitor: leader,
            term,
        });
        Ok(leader)
    }

    /// The leader as monitor `id` itself knows it.
    pub fn leader_seen_by(&self, id: u64) -> Option<u64> {
        let addr = self
            .nvme
            .monitors
            .split(',')
            .nth(usize::try_from(id).ok()?.checked_sub(1)?)?;
        self.nvme.leader_seen_by(addr)
    }

    /// Cut monitor `id` off from the other monitors (gateways and the operator still reach
    /// it).
    pub fn partition(&self, id: u64) -> Result<(), String> {
        self.fault(format!("partition m{id} from the other monitors"));
        let others: Vec<String> = (1..=3).filter(|o| *o != id).map(monitor_name).collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        self.net
            .isolate(&monitor_name(id), &others)
            .map_err(|e| e.to_string())
    }

    /// Undo [`Harness::partition`].
    pub fn heal(&self, id: u64) -> Result<(), String> {
        self.fault(format!("heal m{id}"));
        self.net.heal(&monitor_name(id)).map_err(|e| e.to_string())
    }

    /// Set monitor `id`'s wall clock `offset_s` seconds off the real one (0: back to true
    /// time). Seen by the monitor within a second.
    pub fn set_clock(&self, id: u64, offset_s: i64) -> Result<(), String> {
        self.fault(format!("m{id} wall clock set to {offset_s:+} s"));
        let path = self.clock_file(id);
        std::fs::write(&path, format!("{offset_s:+}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    // -- the operator ------------------------------------------------------------------------

    /// Queue an admin command; it runs in the background.
    pub fn admin(&self, op: AdminOp) {
        if let Some(o) = &self.operator {
            o.submit(op);
        }
    }

    /// Wait for every queued admin command to finish.
    pub fn admin_idle(&mut self, within: Duration) -> bool {
        let idle = self.operator.as_ref().is_none_or(|o| o.wait_idle(within));
        if !idle {
            let miss = format!(
                "admin commands still running after {:.1}s",
                within.as_secs_f64()
            );
            self.rec.record(Event::Fault(miss.clone()));
            self.missed.push(miss);
        }
        idle
    }

    /// Read the final state back, recorded as `AdminRead` (a failure as a `Fault`).
    pub fn read_back(&mut self) -> bool {
        let mut last = String::new();
        for _ in 0..5 {
            match self.nvme.read_state() {
                Ok(state) => {
                    self.rec.record(Event::AdminRead { state });
                    return true;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let miss = format!("final read failed: {last}");
        self.rec.record(Event::Fault(miss.clone()));
        self.missed.push(miss);
        false
    }

    /// Stop polling (the history is complete) and say how many snapshots were taken and
    /// skipped.
    pub fn stop_polling(&mut self) -> Result<(u64, u64), String> {
        let stats = self.poller()?.stats();
        if let Some(mut p) = self.poller.take() {
            p.stop();
        }
        Ok(stats)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.operator.take();
        // SIGKILL works on stopped processes too.
        self.running.clear();
        self.monitors.clear();
        self.poller.take();
        if std::thread::panicking() {
            eprintln!("real-process harness: logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        // The namespaces go when `net` is dropped, after this.
    }
}
