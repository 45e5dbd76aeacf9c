//! A three-node etcd on loopback (temporary data directories, the WAL fsynced as etcd
//! always does) and the gRPC calls the side-by-side scenario makes, through the subset of
//! etcd's API compiled by `build.rs`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::admin::lazy_channel;
use crate::cluster::{free_ports, log_tail};
use crate::error::{BenchError, Result};
use crate::etcdpb::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, PutRequest, StatusRequest,
};

const START_DEADLINE: Duration = Duration::from_secs(60);

pub struct EtcdCluster {
    procs: Vec<(Child, std::path::PathBuf)>,
    /// `host:port` of each member's client listener.
    pub endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

/// `etcd --version`'s first line.
pub fn version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "etcd (version unknown)".to_owned())
}

impl EtcdCluster {
    pub async fn start(bin: &Path) -> Result<EtcdCluster> {
        let dir = tempfile::Builder::new()
            .prefix("gwmon-bench-etcd-")
            .tempdir()
            .map_err(|e| BenchError::io("create a temporary directory", e))?;
        let ports = free_ports(6)?;
        let peers: Vec<String> = (0..3)
            .map(|i| format!("http://127.0.0.1:{}", ports[i * 2 + 1]))
            .collect();
        let initial = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{}={p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut procs = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..3 {
            let client = format!("127.0.0.1:{}", ports[i * 2]);
            let log = dir.path().join(format!("e{}.log", i + 1));
            let out = std::fs::File::create(&log)
                .map_err(|e| BenchError::io(format!("create {}", log.display()), e))?;
            let err = out
                .try_clone()
                .map_err(|e| BenchError::io(format!("open {}", log.display()), e))?;
            let child = Command::new(bin)
                .arg("--name")
                .arg(format!("e{}", i + 1))
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{}", i + 1)))
                .arg("--listen-client-urls")
                .arg(format!("http://{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://{client}"))
                .arg("--listen-peer-urls")
                .arg(&peers[i])
                .arg("--initial-advertise-peer-urls")
                .arg(&peers[i])
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-token")
                .arg("gwmon-bench")
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--logger")
                .arg("zap")
                .arg("--log-level")
                .arg("warn")
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| BenchError::io(format!("start {}", bin.display()), e))?;
            procs.push((child, log));
            endpoints.push(client);
        }
        let mut c = EtcdCluster {
            procs,
            endpoints,
            _dir: dir,
        };
        c.wait_ready().await?;
        Ok(c)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let end = Instant::now() + START_DEADLINE;
        loop {
            self.check_alive()?;
            if self.leader().await.is_ok() {
                let mut kv = KvClient::new(self.channel(0)?);
                let put = kv
                    .put(PutRequest {
                        key: b"/gwmon-bench/ready".to_vec(),
                        value: b"1".to_vec(),
                        lease: 0,
                    })
                    .await;
                if put.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() >= end {
                let tail = self
                    .procs
                    .first()
                    .map(|(_, log)| log_tail(log, 3))
                    .unwrap_or_default();
                return Err(BenchError::timeout(
                    format!("etcd to elect a leader (log of e1: {tail})"),
                    START_DEADLINE,
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn check_alive(&mut self) -> Result<()> {
        for (i, (child, log)) in self.procs.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BenchError::failed(format!(
                    "etcd member e{} exited ({status}): {}",
                    i + 1,
                    log_tail(log, 3)
                )));
            }
        }
        Ok(())
    }

    pub fn channel(&self, i: usize) -> Result<Channel> {
        let ep = self
            .endpoints
            .get(i)
            .ok_or_else(|| BenchError::failed(format!("no etcd member {i}")))?;
        lazy_channel(ep)
    }

    /// The index of the member that leads.
    pub async fn leader(&self) -> Result<usize> {
        for i in 0..self.endpoints.len() {
            let mut m = MaintenanceClient::new(self.channel(i)?);
            let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(2), m.status(StatusRequest {})).await
            else {
                continue;
            };
            let s = resp.into_inner();
            let me = s.header.map_or(0, |h| h.member_id);
            if s.leader != 0 && s.leader == me {
                return Ok(i);
            }
        }
        Err(BenchError::failed("no etcd member is the leader"))
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs.get(i).and_then(|(c, _)| c.id())
    }

    pub async fn stop(mut self) {
        for (c, _) in &mut self.procs {
            let _ = c.start_kill();
        }
        for (c, _) in &mut self.procs {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
        }
    }
}
