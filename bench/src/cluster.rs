//! Three `gwmon` processes on loopback, each with its own store (fsync on every append
//! and vote) in a temporary directory, stopped when the cluster is dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::admin::Admin;
use crate::config::Timers;
use crate::error::{BenchError, Result};

/// How long a new cluster has to raise its feature level (the leader looks every 2 s).
const FEATURES_DEADLINE: Duration = Duration::from_secs(10);
/// How long three fresh monitors may take to elect a leader.
const START_DEADLINE: Duration = Duration::from_secs(60);

struct Proc {
    child: Child,
    data_dir: PathBuf,
    /// Where it serves `/metrics`.
    http: String,
    log: PathBuf,
    /// Its command line after the program, to start it again on the same store.
    args: Vec<String>,
}

pub struct Cluster {
    gwmon: PathBuf,
    // Dropped last: the processes are killed (kill_on_drop) before their directory goes.
    procs: BTreeMap<u64, Proc>,
    pub addrs: BTreeMap<u64, String>,
    pub admin: Admin,
    dir: tempfile::TempDir,
}

/// Start one monitor with `args`, its output to `log` (appended to when `append`).
fn spawn(gwmon: &Path, args: &[String], log: &Path, append: bool) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(log)
        .map_err(|e| BenchError::io(format!("open {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| BenchError::io(format!("open {}", log.display()), e))?;
    Command::new(gwmon)
        .args(args)
        // The bench measures the monitors, not a fencer: say `none` explicitly, as a
        // cluster of several must. Flags win over the environment, so a `--fencer` in the
        // monitor args still chooses another.
        .env("GWMON_FENCER", "none")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::io(format!("start {}", gwmon.display()), e))
}

/// `count` ports free right now on 127.0.0.1 (all bound at once, so distinct, then
/// released for the processes to take).
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| BenchError::io("bind 127.0.0.1:0", e))?;
        held.push(l);
    }
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| BenchError::io("local address", e))
        })
        .collect()
}

/// The last lines of a log file, for an error message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            all[from..].join(" / ")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

impl Cluster {
    /// Start three monitors with `timers` and wait until they have a leader.
    pub async fn start(gwmon: &Path, timers: &Timers, extra: &[String]) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("gwmon-bench-")
            .tempdir()
            .map_err(|e| BenchError::io("create a temporary directory", e))?;
        // Per monitor: its client, HTTP and peer (Raft) ports.
        let ports = free_ports(9)?;
        let port = |id: u64, which: usize| ports[(id as usize - 1) * 3 + which];
        let addrs: BTreeMap<u64, String> = (1..=3u64)
            .map(|id| (id, format!("127.0.0.1:{}", port(id, 0))))
            .collect();
        let peers: BTreeMap<u64, String> = (1..=3u64)
            .map(|id| (id, format!("127.0.0.1:{}", port(id, 2))))
            .collect();
        let members = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}/{}", peers[id]))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = BTreeMap::new();
        for (id, addr) in &addrs {
            let http = format!("127.0.0.1:{}", port(*id, 1));
            let data_dir = dir.path().join(format!("m{id}"));
            let log = dir.path().join(format!("m{id}.log"));
            let mut args: Vec<String> = [
                "--node-id",
                &id.to_string(),
                "--listen",
                addr,
                "--peer-listen",
                &peers[id],
                "--http-listen",
                &http,
                "--data-dir",
                &data_dir.to_string_lossy(),
                "--initial-members",
                &members,
                "--heartbeat-ms",
                &timers.heartbeat_ms.to_string(),
                "--election-timeout-min-ms",
                &timers.election_min_ms.to_string(),
                "--election-timeout-max-ms",
                &timers.election_max_ms.to_string(),
                "--liveness-tick-ms",
                &timers.liveness_tick_ms.to_string(),
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            args.extend(extra.iter().cloned());
            let child = spawn(gwmon, &args, &log, false)?;
            procs.insert(
                *id,
                Proc {
                    child,
                    data_dir,
                    http,
                    log,
                    args,
                },
            );
        }
        let admin = Admin::new(addrs.values().cloned().collect());
        let mut cluster = Cluster {
            gwmon: gwmon.to_owned(),
            procs,
            addrs,
            admin,
            dir,
        };
        cluster.wait_leader().await?;
        Ok(cluster)
    }

    /// Wait until the leader has raised the cluster's feature level (it does so once, to
    /// the level every monitor supports, a couple of seconds after the first election), so
    /// a scenario measures the cluster as it runs from then on (batched writes, from level
    /// 4). A monitor of a release without feature levels never raises it: after
    /// [`FEATURES_DEADLINE`] the scenario goes on, saying so.
    pub async fn wait_features(&mut self) {
        let end = Instant::now() + FEATURES_DEADLINE;
        loop {
            if let Ok((_, leader)) = self.leader().await {
                if let Ok(status) = self.admin.cluster_status(&leader).await {
                    if status.features > 0 {
                        return;
                    }
                }
            }
            if Instant::now() >= end {
                eprintln!(
                    "note: the cluster's feature level was not raised within {FEATURES_DEADLINE:?}; \
                     measuring it at level 0"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until a leader is elected and answers; its id and address.
    pub async fn wait_leader(&mut self) -> Result<(u64, String)> {
        let end = Instant::now() + START_DEADLINE;
        loop {
            self.check_alive()?;
            if let Ok(found) = self.leader().await {
                return Ok(found);
            }
            if Instant::now() >= end {
                return Err(BenchError::timeout(
                    format!(
                        "a leader among the gwmon monitors (log of monitor 1: {})",
                        self.procs
                            .get(&1)
                            .map(|p| log_tail(&p.log, 5))
                            .unwrap_or_default()
                    ),
                    START_DEADLINE,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The current leader as the monitors report it, confirmed by the leader itself.
    pub async fn leader(&self) -> Result<(u64, String)> {
        for addr in self.addrs.values() {
            let Ok(status) = self.admin.cluster_status(addr).await else {
                continue;
            };
            let Some(leader_addr) = self.addrs.get(&status.leader_id) else {
                continue;
            };
            if let Ok(own) = self.admin.cluster_status(leader_addr).await {
                if own.leader_id == status.leader_id {
                    return Ok((status.leader_id, leader_addr.clone()));
                }
            }
        }
        Err(BenchError::failed("no monitor knows a leader"))
    }

    /// Fail if a monitor process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for (id, p) in &mut self.procs {
            match p.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Err(BenchError::failed(format!(
                        "gwmon monitor {id} exited ({status}): {}",
                        log_tail(&p.log, 5)
                    )))
                }
                Err(e) => return Err(BenchError::io(format!("wait for monitor {id}"), e)),
            }
        }
        Ok(())
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.procs.get(&id).and_then(|p| p.child.id())
    }

    pub fn data_dir(&self, id: u64) -> Option<&Path> {
        self.procs.get(&id).map(|p| p.data_dir.as_path())
    }

    /// One gauge or counter of monitor `id`'s `/metrics` (a sample without labels), if it
    /// serves it.
    pub async fn metric(&self, id: u64, name: &str) -> Result<Option<f64>> {
        let Some(p) = self.procs.get(&id) else {
            return Ok(None);
        };
        let text = crate::procfs::http_get(&p.http, "/metrics").await?;
        Ok(text.lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
        }))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    /// `kill -9` monitor `id` and wait until it is gone.
    pub async fn kill(&mut self, id: u64) -> Result<()> {
        let p = self
            .procs
            .get_mut(&id)
            .ok_or_else(|| BenchError::failed(format!("no monitor {id}")))?;
        p.child
            .kill()
            .await
            .map_err(|e| BenchError::io(format!("kill monitor {id}"), e))
    }

    /// Start monitor `id` again on its store, after [`Cluster::kill`].
    pub fn restart(&mut self, id: u64) -> Result<()> {
        let p = self
            .procs
            .get_mut(&id)
            .ok_or_else(|| BenchError::failed(format!("no monitor {id}")))?;
        p.child = spawn(&self.gwmon, &p.args, &p.log, true)?;
        Ok(())
    }

    /// Send monitor `id` a signal by name (`STOP`, `CONT`) with kill(1).
    pub fn signal(&self, id: u64, signal: &str) -> Result<()> {
        let pid = self
            .pid(id)
            .ok_or_else(|| BenchError::failed(format!("monitor {id} is not running")))?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| BenchError::io(format!("kill -{signal} monitor {id}"), e))?;
        if !status.success() {
            return Err(BenchError::failed(format!(
                "kill -{signal} monitor {id}: {status}"
            )));
        }
        Ok(())
    }

    /// Where the monitors' logs and stores are (removed when the cluster is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stop every monitor and wait for them to exit.
    pub async fn stop(mut self) {
        for p in self.procs.values_mut() {
            let _ = p.child.start_kill();
        }
        for p in self.procs.values_mut() {
            let _ = tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await;
        }
    }
}
