//! The initiator side on a real kernel: `nvmeof-agent` builds an MD RAID1 (Debian's mdadm,
//! the kernel's raid1) over a volume whose two replicas nvmet exports as two subsystems,
//! fio with verify runs on the array while one replica's port goes away, and the agent
//! carries the replacement through every stage to a third replica, with this driver playing
//! the storage backend (`SupplyReplacement`, `ConfirmReplicaDeleted` over gRPC).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gwmon_proto::v1::{self, replica_service_client::ReplicaServiceClient};
use serde_json::Value;

use crate::cluster::{wait_for, Cluster, Proc};
use crate::host::Fio;
use crate::kernel::{read, write, Port, Replica};
use crate::scenario::Measure;

pub const NAME: &str = "agent-raid1";
const ALIAS: &str = "e2evol";
const SIZE_MB: u32 = 64;
const GRACE_SECS: u64 = 2;
/// Resync onto a new leg under fio's load: md throttles recovery to `speed_limit_min`
/// (1 MB/s by default) while the array has other I/O; a host that wants a replacement
/// synced in seconds raises it, as this one does.
const RESYNC_MIN_KBS: &str = "100000";

struct Raid {
    cluster: Cluster,
    replicas: Vec<Replica>,
    ids: Vec<String>,
    volume: String,
    agent: Option<Proc>,
    state_dir: PathBuf,
    md: PathBuf,
    work: PathBuf,
}

fn uuid(kind: u32, run: u32, n: u32) -> String {
    format!("0e2e{kind:04x}-0000-4000-8000-{run:08x}{n:04x}")
}

impl Raid {
    fn up(bins: &Path, work: &Path, run: u32) -> Result<Raid, String> {
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
        let mut cluster = Cluster::new(bins, work, 1, BTreeMap::new());
        cluster.bootstrap(&[])?;
        let replicas: Vec<Replica> = (1..=3u16)
            .map(|n| Replica {
                nqn: format!("nqn.2016-06.io.gwmon:e2e-replica{n}"),
                nullb: format!("nullb{}", 10 + n),
                uuid: uuid(2, run, n.into()),
                port: Port {
                    id: 10 + n,
                    addr: format!("127.0.0.{}", 10 + n),
                },
                size_mb: SIZE_MB,
            })
            .collect();
        for r in &replicas {
            r.export()?;
        }
        write(
            Path::new("/proc/sys/dev/raid/speed_limit_min"),
            RESYNC_MIN_KBS,
        )?;
        let mut raid = Raid {
            cluster,
            ids: (1..=3).map(|n| uuid(1, run, n)).collect(),
            replicas,
            volume: uuid(0, run, 0),
            agent: None,
            state_dir: work.join("agent-state"),
            md: PathBuf::new(),
            work: work.to_owned(),
        };
        let mut args = vec![
            "volume".to_owned(),
            "create".into(),
            raid.volume.clone(),
            "--alias".into(),
            ALIAS.into(),
            "--capacity".into(),
            format!("{SIZE_MB}M"),
            "--grace-secs".into(),
            GRACE_SECS.to_string(),
        ];
        for i in 0..2 {
            args.extend(["--replica".into(), raid.replica_arg(i)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        raid.cluster.nvme_gw(&args)?;
        let md = raid.agent_command("connect")?;
        raid.md = PathBuf::from(md.trim());
        let agent = raid.agent_process()?;
        raid.agent = Some(agent);
        wait_for(
            "both replicas reported available",
            Duration::from_secs(60),
            || {
                raid.show().is_ok_and(|v| {
                    raid.state(&v, 0) == "available" && raid.state(&v, 1) == "available"
                })
            },
        )?;
        Ok(raid)
    }

    /// `ID,NQN,tcp:ADDR:4420,ns=UUID` of replica `i`.
    fn replica_arg(&self, i: usize) -> String {
        let r = &self.replicas[i];
        format!(
            "{},{},tcp:{}:4420,ns={}",
            self.ids[i], r.nqn, r.port.addr, r.uuid
        )
    }

    fn agent_args(&self, cmd: &mut Command) {
        cmd.args(["--monitors", &self.cluster.monitor_list()])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--period-s", "1", "--device-wait-s", "30"]);
    }

    /// `nvmeof-agent SUBCOMMAND VOLUME`: its standard output.
    fn agent_command(&self, sub: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.cluster.bins.join("nvmeof-agent"));
        cmd.args([sub, &self.volume]);
        self.agent_args(&mut cmd);
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run nvmeof-agent: {e}"))?;
        let log = self.work.join(format!("agent-{sub}.log"));
        let _ = std::fs::write(&log, &out.stderr);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "nvmeof-agent {sub}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn agent_process(&self) -> Result<Proc, String> {
        let mut cmd = Command::new(self.cluster.bins.join("nvmeof-agent"));
        cmd.arg("run").env("NVMEOF_AGENT_LOG", "info");
        self.agent_args(&mut cmd);
        Proc::spawn(cmd, &self.work.join("agent.log"))
    }

    fn show(&self) -> Result<Value, String> {
        self.cluster.nvme_gw(&["volume", "show", &self.volume])
    }

    /// Replica `i`'s state in `show`, `absent` when the volume no longer has it.
    fn state(&self, show: &Value, i: usize) -> String {
        show["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["replica_id"] == self.ids[i].as_str())
            .and_then(|r| r["state"].as_str())
            .unwrap_or("absent")
            .to_owned()
    }

    /// The array's md directory in sysfs (`/sys/block/md127/md`).
    fn md_sysfs(&self) -> Result<PathBuf, String> {
        let dev =
            std::fs::canonicalize(&self.md).map_err(|e| format!("{}: {e}", self.md.display()))?;
        let name = dev
            .file_name()
            .ok_or_else(|| format!("{} has no name", dev.display()))?;
        Ok(Path::new("/sys/block").join(name).join("md"))
    }

    /// The array's legs: `(device, state)` from `md/dev-*/state`.
    fn legs(&self) -> Result<Vec<(String, String)>, String> {
        let md = self.md_sysfs()?;
        let mut legs = Vec::new();
        for e in std::fs::read_dir(&md).map_err(|e| format!("{}: {e}", md.display()))? {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(dev) = name.strip_prefix("dev-") {
                legs.push((dev.to_owned(), read(&e.path().join("state"))?));
            }
        }
        legs.sort();
        Ok(legs)
    }

    /// Whether the host has a controller to replica `i`'s subsystem.
    fn connected(&self, i: usize) -> bool {
        let Ok(dir) = std::fs::read_dir("/sys/class/nvme") else {
            return false;
        };
        dir.flatten()
            .any(|c| read(&c.path().join("subsysnqn")).is_ok_and(|n| n == self.replicas[i].nqn))
    }

    fn down(mut self) -> Result<(), String> {
        self.agent.take();
        let disconnected = self.agent_command("disconnect");
        let mut unexported = Ok(());
        for r in &self.replicas {
            if let Err(e) = r.unexport() {
                unexported = unexported.and(Err(e));
            }
        }
        disconnected?;
        unexported
    }
}

/// The backend's side of `ReplicaService`, from this driver.
fn backend<T>(
    monitor: &str,
    call: impl AsyncFnOnce(ReplicaServiceClient<tonic::transport::Channel>) -> Result<T, tonic::Status>,
) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{monitor}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("connect to {monitor}: {e}"))?;
        call(ReplicaServiceClient::new(channel))
            .await
            .map_err(|s| s.message().to_owned())
    })
}

/// fio on the array across `body`, which returns when the host is where it should be
/// (its time goes into `recovered_ms`); then I/O must flow again.
fn with_fio(
    raid: &mut Raid,
    m: &mut Measure,
    body: impl FnOnce(&mut Raid, &mut Measure) -> Result<(), String>,
) {
    let dir = raid.work.join(format!("fio-{}-{}", m.phase, m.run));
    let devs = BTreeMap::from([(1, raid.md.clone())]);
    let mut fio = match Fio::start_block(&dir, &devs) {
        Ok(f) => f,
        Err(e) => {
            m.failure = Some(e);
            return;
        }
    };
    let outcome = (|| {
        fio.progress(100, Duration::from_secs(30))?;
        let t0 = Instant::now();
        body(raid, m)?;
        m.recovered_ms = t0.elapsed().as_millis();
        fio.progress(100, Duration::from_secs(60))
    })();
    if let Err(e) = outcome {
        m.failure = Some(e);
    }
    m.record(fio.stop());
}

/// Replica 2's port goes away under fio: md fails the leg, the agent reports it.
fn lose_replica(raid: &mut Raid, m: &mut Measure) -> Result<(), String> {
    let t0 = Instant::now();
    raid.replicas[1].unlink()?;
    let reported = wait_for(
        "the lost replica reported faulty or missing",
        Duration::from_secs(120),
        || {
            raid.show()
                .is_ok_and(|v| matches!(raid.state(&v, 1).as_str(), "faulty" | "missing"))
        },
    )?;
    let in_sync =
        |legs: &[(String, String)]| legs.iter().filter(|(_, s)| s.contains("in_sync")).count();
    wait_for("md failing the lost leg", Duration::from_secs(60), || {
        raid.legs().is_ok_and(|l| in_sync(&l) == 1)
    })?;
    let failed = t0.elapsed();
    let legs = raid.legs()?;
    let show = raid.show()?;
    m.detail = Some(format!(
        "reported after {} ms, leg failed by md after {} ms; replica 2 {}, legs {}",
        reported.as_millis(),
        failed.as_millis(),
        raid.state(&show, 1),
        legs.iter()
            .map(|(d, s)| format!("{d}={s}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    m.matched = raid.state(&show, 0) == "available" && in_sync(&legs) == 1;
    Ok(())
}

/// The replacement, stage by stage: the backend supplies replica 3 when asked, deletes
/// replica 2 once retired; the agent does the rest.
fn replace(raid: &mut Raid, m: &mut Measure) -> Result<(), String> {
    let t0 = Instant::now();
    let monitor = raid.cluster.monitor_list();
    let mut stages: Vec<(String, u128)> = Vec::new();
    let mut supplied = false;
    let mut confirmed = false;
    let spec = v1::ReplicaSpec {
        replica_id: raid.ids[2].clone(),
        target_nqn: raid.replicas[2].nqn.clone(),
        portals: vec![v1::Portal {
            transport: v1::Transport::Tcp.into(),
            address: raid.replicas[2].port.addr.clone(),
            port: 4420,
        }],
        namespace_uuid: raid.replicas[2].uuid.clone(),
    };
    loop {
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "the replacement did not finish within 300 s: {stages:?}"
            ));
        }
        let show = raid.show()?;
        let stage = show["replacement"]["stage"]
            .as_str()
            .or_else(|| show["last_replacement"]["stage"].as_str())
            .unwrap_or("none")
            .to_owned();
        if stages.last().is_none_or(|(s, _)| *s != stage) {
            stages.push((stage.clone(), t0.elapsed().as_millis()));
        }
        let id = show["replacement"]["replacement_id"].as_u64();
        match (stage.as_str(), id) {
            ("requested", Some(id)) if !supplied => {
                let spec = spec.clone();
                let volume = raid.volume.clone();
                backend(&monitor, async move |mut cl| {
                    cl.supply_replacement(v1::SupplyReplacementRequest {
                        volume_id: volume,
                        replacement_id: id,
                        new_replica: Some(spec),
                    })
                    .await
                })?;
                supplied = true;
            }
            ("retired", Some(_)) if !confirmed => {
                // The backend deletes the old replica, then says so.
                raid.replicas[1].unexport()?;
                let volume = raid.volume.clone();
                let old = raid.ids[1].clone();
                backend(&monitor, async move |mut cl| {
                    cl.confirm_replica_deleted(v1::ConfirmReplicaDeletedRequest {
                        volume_id: volume,
                        replica_id: old,
                    })
                    .await
                })?;
                confirmed = true;
            }
            ("done", None) => break,
            ("cancelled", None) => return Err(format!("the replacement was cancelled: {show}")),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
    m.detail = Some(format!(
        "stages {}",
        stages
            .iter()
            .map(|(s, t)| format!("{s} +{:.1}s", *t as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let want = [
        "requested",
        "supplied",
        "attached",
        "synced",
        "retired",
        "done",
    ];
    let mut rest = want.iter();
    if !seen.iter().all(|s| *s == "none" || rest.any(|w| w == s)) || seen.last() != Some(&"done") {
        return Err(format!("stages out of order: {seen:?}"));
    }
    Ok(())
}

/// After the replacement: the registry lists replicas 1 and 3 available and no replica 2;
/// the array has two in-sync legs and nothing degraded; the host is no longer connected
/// to replica 2; and md's own check finds the legs identical.
fn check_final(raid: &Raid) -> Result<(), String> {
    let show = raid.show()?;
    let states: Vec<String> = (0..3).map(|i| raid.state(&show, i)).collect();
    if states != ["available", "absent", "available"] {
        return Err(format!("replica states at the end: {states:?}"));
    }
    let legs = raid.legs()?;
    let md = raid.md_sysfs()?;
    if legs.len() != 2 || !legs.iter().all(|(_, s)| s.contains("in_sync")) {
        return Err(format!("the array's legs at the end: {legs:?}"));
    }
    if read(&md.join("degraded"))? != "0" {
        return Err("the array is degraded at the end".into());
    }
    if raid.connected(1) {
        return Err("the host is still connected to the retired replica".into());
    }
    write(&md.join("sync_action"), "check")?;
    wait_for("md's check", Duration::from_secs(120), || {
        read(&md.join("sync_action")).is_ok_and(|a| a == "idle")
    })?;
    let mismatches = read(&md.join("mismatch_cnt"))?;
    if mismatches != "0" {
        return Err(format!(
            "md's check found {mismatches} mismatched sectors between the legs"
        ));
    }
    Ok(())
}

/// Run the scenario once.
pub fn run(bins: &Path, work: &Path, run: u32) -> Vec<Measure> {
    let work = work.join(format!("run-{run}"));
    let mut lost = Measure::new(NAME, "replica-lost", run, 3000.0);
    let mut raid = match Raid::up(bins, &work, run) {
        Ok(r) => r,
        Err(e) => {
            lost.failure = Some(format!("set-up: {e}"));
            return vec![lost];
        }
    };
    with_fio(&mut raid, &mut lost, lose_replica);
    let mut replaced = Measure::new(NAME, "replacement", run, 200.0);
    if lost.failure.is_none() {
        with_fio(&mut raid, &mut replaced, replace);
        if replaced.failure.is_none() {
            match check_final(&raid) {
                Ok(()) => replaced.matched = true,
                Err(e) => replaced.failure = Some(e),
            }
        }
    } else {
        replaced.failure = Some("not run: the replica loss failed".into());
    }
    if let Err(e) = raid.down() {
        replaced.failure.get_or_insert(format!("tear-down: {e}"));
    }
    vec![lost, replaced]
}
