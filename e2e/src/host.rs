//! The host: the kernel's nvme-tcp initiator with native multipath, its paths' ANA states
//! from sysfs, and fio with verify on the multipath devices.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kernel::{read, NQN};

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `nvme connect` to the subsystem through the port at `addr`:4420.
pub fn connect(addr: &str) -> Result<(), String> {
    run(Command::new("nvme").args(["connect", "-t", "tcp", "-a", addr, "-s", "4420", "-n", NQN]))
        .map(drop)
}

/// `nvme disconnect` of every controller of the subsystem.
pub fn disconnect() -> Result<(), String> {
    run(Command::new("nvme").args(["disconnect", "-n", NQN])).map(drop)
}

/// One path the host has: the target address of its controller, the namespace, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPath {
    pub addr: String,
    pub nsid: u32,
    pub state: String,
}

fn parse_name(name: &str) -> Option<(u32, Option<u32>, u32)> {
    let rest = name.strip_prefix("nvme")?;
    let (head, ns) = rest.split_once('n')?;
    let ns = ns.parse().ok()?;
    match head.split_once('c') {
        Some((s, c)) => Some((s.parse().ok()?, Some(c.parse().ok()?), ns)),
        None => Some((head.parse().ok()?, None, ns)),
    }
}

fn block_devices() -> Vec<(String, Option<u32>)> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            parse_name(&name).map(|(_, ctrl, _)| (name, ctrl))
        })
        .collect()
}

/// Every path's state (`/sys/block/nvmeXcYnZ/ana_state`), keyed by address and nsid.
pub fn paths() -> Vec<HostPath> {
    let mut out = Vec::new();
    for (name, ctrl) in block_devices() {
        let Some(ctrl) = ctrl else { continue };
        let dir = Path::new("/sys/block").join(&name);
        let (Ok(state), Ok(nsid), Ok(address)) = (
            read(&dir.join("ana_state")),
            read(&dir.join("nsid")),
            read(Path::new(&format!("/sys/class/nvme/nvme{ctrl}/address"))),
        ) else {
            continue;
        };
        let addr = address
            .split(',')
            .find_map(|kv| kv.strip_prefix("traddr="))
            .unwrap_or_default()
            .to_owned();
        if let Ok(nsid) = nsid.parse() {
            out.push(HostPath { addr, nsid, state });
        }
    }
    out.sort_by(|a, b| (a.nsid, &a.addr).cmp(&(b.nsid, &b.addr)));
    out
}

/// The state of the path through `addr` to namespace `nsid`, if the host has that path.
pub fn path_state(addr: &str, nsid: u32) -> Option<String> {
    paths()
        .into_iter()
        .find(|p| p.addr == addr && p.nsid == nsid)
        .map(|p| p.state)
}

/// The multipath device of each namespace: nsid to `/dev/nvmeXnY`.
pub fn heads() -> BTreeMap<u32, PathBuf> {
    block_devices()
        .into_iter()
        .filter(|(_, ctrl)| ctrl.is_none())
        .filter_map(|(name, _)| {
            let nsid = read(&Path::new("/sys/block").join(&name).join("nsid")).ok()?;
            Some((nsid.parse().ok()?, Path::new("/dev").join(name)))
        })
        .collect()
}

/// Writes completed for namespace `nsid`, summed over its paths' block devices (field 5
/// of each `stat`; the multipath head of this kernel does not account I/O itself).
pub fn writes_done(nsid: u32) -> u64 {
    block_devices()
        .into_iter()
        .filter_map(|(name, _)| {
            let dir = Path::new("/sys/block").join(name);
            (read(&dir.join("nsid")).ok()? == nsid.to_string()).then_some(())?;
            stat_writes(&dir)
        })
        .sum()
}

/// Writes completed through block device `dev` (a path such as `/dev/md/vol` is resolved):
/// its own count plus those of every NVMe path device under it, since md and the multipath
/// head do not all account their I/O. Only its growth is used.
pub fn block_writes(dev: &Path) -> u64 {
    let own = std::fs::canonicalize(dev)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .and_then(|name| stat_writes(&Path::new("/sys/block").join(name)))
        .unwrap_or(0);
    let paths: u64 = block_devices()
        .into_iter()
        .filter(|(_, ctrl)| ctrl.is_some())
        .filter_map(|(name, _)| stat_writes(&Path::new("/sys/block").join(name)))
        .sum();
    own + paths
}

/// Field 5 of a block device's `stat`: writes completed.
fn stat_writes(dir: &Path) -> Option<u64> {
    read(&dir.join("stat"))
        .ok()?
        .split_whitespace()
        .nth(4)?
        .parse::<u64>()
        .ok()
}

/// fio on the multipath devices: 4 KiB random writes, queue depth 8, crc32c verify of
/// everything written (interleaved), errors counted instead of ending the job, every I/O's
/// completion latency logged.
pub struct Fio {
    child: Child,
    dir: PathBuf,
    devs: Vec<(u32, PathBuf)>,
    /// Writes completed so far on one of `devs`, for [`Fio::progress`].
    writes: fn(u32, &Path) -> u64,
}

/// What fio saw: I/O errors (fio's count, both directions and verify) and the longest
/// I/O in milliseconds, per namespace.
#[derive(Debug, Clone, Default)]
pub struct FioResult {
    pub errors: u64,
    pub longest_ms: BTreeMap<u32, f64>,
    pub ios: u64,
}

impl Fio {
    /// fio on the multipath devices of namespaces (`nsid` to device).
    pub fn start(dir: &Path, devs: &BTreeMap<u32, PathBuf>) -> Result<Fio, String> {
        Self::spawn(dir, devs, |nsid, _| writes_done(nsid))
    }

    /// fio on other block devices (an md array), numbered as given.
    pub fn start_block(dir: &Path, devs: &BTreeMap<u32, PathBuf>) -> Result<Fio, String> {
        Self::spawn(dir, devs, |_, dev| block_writes(dev))
    }

    fn spawn(
        dir: &Path,
        devs: &BTreeMap<u32, PathBuf>,
        writes: fn(u32, &Path) -> u64,
    ) -> Result<Fio, String> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = Command::new("fio");
        cmd.current_dir(dir).args([
            "--ioengine=libaio",
            "--direct=1",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=8",
            "--size=64m",
            "--verify=crc32c",
            "--verify_backlog=64",
            "--continue_on_error=all",
            "--time_based",
            "--runtime=3600",
            "--write_lat_log=lat",
            "--log_avg_msec=0",
            "--output-format=json",
            "--output=fio.json",
        ]);
        for (nsid, dev) in devs {
            cmd.arg(format!("--name=ns{nsid}"))
                .arg(format!("--filename={}", dev.display()));
        }
        let log = std::fs::File::create(dir.join("fio.log")).map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start fio: {e}"))?;
        Ok(Fio {
            child,
            dir: dir.to_owned(),
            devs: devs.iter().map(|(n, d)| (*n, d.clone())).collect(),
            writes,
        })
    }

    /// Wait until every device has completed `n` more writes, or fail after `within`.
    pub fn progress(&mut self, n: u64, within: Duration) -> Result<(), String> {
        let writes = self.writes;
        let base: Vec<u64> = self.devs.iter().map(|(n, d)| writes(*n, d)).collect();
        let end = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "fio exited early ({status}); see {}",
                    self.dir.display()
                ));
            }
            if self
                .devs
                .iter()
                .zip(&base)
                .all(|((ns, d), b)| writes(*ns, d) >= b + n)
            {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!("fio made no progress within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop fio (SIGINT: it finishes its in-flight I/O and writes its report) and read it.
    pub fn stop(mut self) -> Result<FioResult, String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    return Err("fio did not stop within 60 s of SIGINT".into());
                }
            }
        }
        let text = std::fs::read_to_string(self.dir.join("fio.json")).map_err(|e| e.to_string())?;
        // fio prints "fio: terminating on signal 2" before the JSON.
        let json = text.find('{').map(|i| &text[i..]).unwrap_or_default();
        let report: Value =
            serde_json::from_str(json).map_err(|e| format!("fio's report is not JSON: {e}"))?;
        let mut result = FioResult::default();
        for (i, job) in report["jobs"].as_array().into_iter().flatten().enumerate() {
            result.errors += job["total_err"].as_u64().unwrap_or(0);
            if job["error"].as_u64().unwrap_or(0) != 0 {
                result.errors = result.errors.max(1);
            }
            let nsid = self.devs.get(i).map(|(n, _)| *n).unwrap_or(0);
            let (ios, longest) = longest_io(&self.dir.join(format!("lat_clat.{}.log", i + 1)))?;
            result.ios += ios;
            result.longest_ms.insert(nsid, longest);
        }
        Ok(result)
    }
}

/// From a fio completion-latency log (`time_ms, latency_ns, dir, bs, offset`): the I/Os
/// and the longest one, in milliseconds.
fn longest_io(log: &Path) -> Result<(u64, f64), String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut n = 0;
    let mut max = 0u64;
    for line in text.lines() {
        if let Some(ns) = line
            .split(',')
            .nth(1)
            .and_then(|f| f.trim().parse::<u64>().ok())
        {
            n += 1;
            max = max.max(ns);
        }
    }
    Ok((n, max as f64 / 1e6))
}
