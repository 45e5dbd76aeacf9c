//! gwmon's processes in the guest: monitors on 127.0.0.1:74N0 (Raft peers on 74N2, HTTP on 74N5), one `gwmon-gateway` per
//! nvmet port with the nvmet adapter, the real `nvmet-fence` as the monitors' exec fencer,
//! and `nvme-gw` to drive and read them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kernel::{Port, NVMET};

pub const POOL: &str = "e2e";
pub const GROUP: &str = "g";

/// A child process, killed when dropped, its output appended to a log file.
pub struct Proc(Child);

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| format!("{}: {e}", log.display()))
        };
        cmd.stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map(Proc)
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))
    }

    pub fn signal(&self, sig: &str) -> Result<(), String> {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(())
            .ok_or_else(|| format!("kill -{sig} {} failed", self.0.id()))
    }
}

impl Proc {
    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `f` every 20 ms until it is true; fail naming `what` after `within`.
pub fn wait_for(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            return Err(format!("{what}: not within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cluster: monitors, gateways (each owning one port), their logs under `dir`.
pub struct Cluster {
    pub bins: PathBuf,
    pub dir: PathBuf,
    pub monitors: BTreeMap<u64, Proc>,
    pub members: Vec<u64>,
    pub gateways: BTreeMap<String, Proc>,
    /// Each gateway's port.
    pub ports: BTreeMap<String, Port>,
    /// Each gateway's own ANA group, from `nvme-gw show`.
    pub anagrp: BTreeMap<String, u32>,
    pub grace_ms: u64,
}

fn monitor_addr(id: u64) -> String {
    format!("127.0.0.1:{}", 7400 + 10 * id)
}

impl Cluster {
    pub fn new(bins: &Path, dir: &Path, n_monitors: u64, ports: BTreeMap<String, Port>) -> Cluster {
        Cluster {
            bins: bins.to_owned(),
            dir: dir.to_owned(),
            monitors: BTreeMap::new(),
            members: (1..=n_monitors).collect(),
            gateways: BTreeMap::new(),
            ports,
            anagrp: BTreeMap::new(),
            grace_ms: 4000,
        }
    }

    pub fn monitor_list(&self) -> String {
        self.members
            .iter()
            .map(|id| monitor_addr(*id))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn start_monitor(&mut self, id: u64) -> Result<(), String> {
        let members = self
            .members
            .iter()
            .map(|m| format!("{m}={}", monitor_addr(*m)))
            .collect::<Vec<_>>()
            .join(",");
        let fence_ports = self
            .ports
            .iter()
            .map(|(gw, p)| format!("{gw}={}", p.id))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(self.bins.join("gwmon"));
        cmd.args(["--node-id", &id.to_string()])
            .args(["--listen", &monitor_addr(id)])
            .arg("--insecure")
            .args(["--http-listen", &format!("127.0.0.1:{}", 7405 + 10 * id)])
            .arg("--data-dir")
            .arg(self.dir.join(format!("m{id}.data")))
            .args(["--initial-members", &members])
            .args(["--fencer", "exec", "--fencer-timeout-ms", "5000"])
            .arg("--fencer-command")
            .arg(self.bins.join("nvmet-fence"))
            .arg(format!("--fencer-args=--root,{NVMET}"))
            .env("GWMON_FENCE_PORTS", fence_ports);
        let p = Proc::spawn(cmd, &self.dir.join(format!("m{id}.log")))?;
        self.monitors.insert(id, p);
        Ok(())
    }

    pub fn start_gateway(&mut self, gw: &str) -> Result<(), String> {
        let port = self
            .ports
            .get(gw)
            .ok_or_else(|| format!("no port for {gw}"))?;
        let mut cmd = Command::new(self.bins.join("gwmon-gateway"));
        cmd.args(["--id", gw, "--pool", POOL, "--group", GROUP])
            .args(["--monitors", &self.monitor_list()])
            .args(["--adapter", "nvmet", "--target", NVMET])
            .args(["--nvmet-ports", &port.id.to_string()])
            .args(["--grace-ms", &self.grace_ms.to_string()])
            .env("GWMON_LOG", "info");
        let p = Proc::spawn(cmd, &self.dir.join(format!("{gw}.log")))?;
        self.gateways.insert(gw.to_owned(), p);
        Ok(())
    }

    /// Send `sig` to gateway `gw`'s process.
    pub fn signal(&self, gw: &str, sig: &str) -> Result<(), String> {
        self.gateways
            .get(gw)
            .ok_or_else(|| format!("gateway {gw} is not running"))?
            .signal(sig)
    }

    /// `nvme-gw ARGS --format json`, parsed.
    pub fn nvme_gw(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(self.bins.join("nvme-gw"))
            .args(["--monitors", &self.monitor_list(), "--format", "json"])
            .args(["--timeout-ms", "2000", "--retries", "4"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run nvme-gw: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nvme-gw {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("nvme-gw {}: not JSON: {e}", args.join(" ")))
    }

    pub fn leader(&self) -> Option<u64> {
        self.nvme_gw(&["cluster", "status"]).ok()?["leader"].as_u64()
    }

    /// Start the monitors, wait for a leader, set the timers, create the gateways and
    /// learn their ANA groups.
    pub fn bootstrap(&mut self, settings: &[&str]) -> Result<(), String> {
        for id in self.members.clone() {
            self.start_monitor(id)?;
        }
        wait_for("a Raft leader", Duration::from_secs(60), || {
            self.leader().is_some()
        })?;
        if !settings.is_empty() {
            let mut args = vec!["config", "set"];
            args.extend(settings);
            self.nvme_gw(&args)?;
        }
        if self.ports.is_empty() {
            return Ok(());
        }
        for gw in self.ports.keys() {
            self.nvme_gw(&["create", gw, POOL, GROUP])?;
        }
        let show = self.nvme_gw(&["show", POOL, GROUP])?;
        for gw in show["Created Gateways:"].as_array().into_iter().flatten() {
            if let (Some(id), Some(ana)) = (gw["gw-id"].as_str(), gw["anagrp-id"].as_u64()) {
                self.anagrp.insert(
                    id.to_owned(),
                    u32::try_from(ana).map_err(|e| e.to_string())?,
                );
            }
        }
        if self.anagrp.len() != self.ports.len() {
            return Err(format!("the gateways were not all created: {show}"));
        }
        Ok(())
    }
}

/// From `show`'s `"ana states"` (`" 1: ACTIVE ,  2: STANDBY "`): who is ACTIVE for `grp`.
pub fn map_active(show: &Value, grp: u32) -> Option<String> {
    show["Created Gateways:"].as_array()?.iter().find_map(|gw| {
        let states = gw["ana states"].as_str()?;
        let active = states.split(',').any(|e| {
            let mut kv = e.split(':');
            let g = kv.next().and_then(|g| g.trim().parse::<u32>().ok());
            let s = kv.next().map(str::trim);
            g == Some(grp) && s == Some("ACTIVE")
        });
        active.then(|| gw["gw-id"].as_str().unwrap_or_default().to_owned())
    })
}
