//! The scenarios, run in order, each printing its markdown tables, and what they share:
//! a cluster with gateways created and their simulated sessions started.

pub mod availability;
pub mod balance;
pub mod beacons;
pub mod commit;
pub mod etcd;
pub mod failover;
pub mod fanout;
pub mod footprint;
pub mod group_scale;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gwmon_proto::v1::{self, GroupKey};

use crate::cluster::Cluster;
use crate::config::{Config, Sizes, Timers};
use crate::error::{BenchError, Result};
use crate::fleet::{subsystems, Fleet, GwSpec};
use crate::procfs;

/// gwmon's figures the etcd comparison puts side by side, filled as scenarios run.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Admin write latency (ms): sequential p50, p99; 64 clients p50, p99; throughput.
    pub commit: Option<CommitFigures>,
    /// Failover at the lease baseline's size and default timers: kill → new owner may
    /// serve (ms, median, p99), and last beacon → new owner (median).
    pub failover: Option<FailoverFigures>,
    /// Highest sustained beacon rate and the leader's CPU per 1,000 beacons/s (cores).
    pub beacons: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Copy)]
pub struct CommitFigures {
    pub seq_p50: f64,
    pub seq_p99: f64,
    pub conc_p50: f64,
    pub conc_p99: f64,
    pub seq_rate: f64,
    pub conc_rate: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct FailoverFigures {
    pub gateways: usize,
    pub kill_to_serving_p50: f64,
    pub kill_to_serving_p99: f64,
    pub beyond_grace_p50: f64,
    pub grace_ms: f64,
}

/// Everything a scenario needs to start clusters.
pub struct Ctx {
    pub config: Config,
    pub sizes: Sizes,
    pub gwmon: PathBuf,
    pub ticks: f64,
    pub figures: Figures,
}

/// Run the scenarios the flags select; the markdown goes to stdout.
pub async fn run(config: Config) -> Result<()> {
    let gwmon = config.gwmon_path().ok_or_else(|| {
        BenchError::failed(
            "cannot find the gwmon binary next to gwmon-bench or on PATH: build it with \
             `cargo build --release -p gwmon-monitor -p gwmon-bench`, or pass --gwmon PATH",
        )
    })?;
    if !gwmon.is_file() {
        return Err(BenchError::failed(format!(
            "the gwmon binary {} does not exist: build it with `cargo build --release -p \
             gwmon-monitor -p gwmon-bench`, or pass --gwmon PATH",
            gwmon.display()
        )));
    }
    let sizes = config.sizes();
    let mut ctx = Ctx {
        config: config.clone(),
        sizes,
        gwmon,
        ticks: procfs::clock_ticks(),
        figures: Figures::default(),
    };
    print_machine(&ctx);
    let started = std::time::Instant::now();
    if config.runs(config.commit) {
        commit::run(&mut ctx).await?;
    }
    if config.runs(config.failover) {
        failover::run(&mut ctx).await?;
    }
    if config.runs(config.availability) {
        availability::run(&mut ctx).await?;
    }
    if config.runs(config.balance) {
        balance::run(&mut ctx).await?;
    }
    if config.runs(config.group_scale) {
        group_scale::run(&mut ctx).await?;
    }
    if config.runs(config.beacons) {
        beacons::run(&mut ctx).await?;
    }
    if config.runs(config.fanout) || config.runs(config.footprint) {
        fanout::run(&mut ctx).await?;
    }
    if config.soak {
        footprint::soak(&mut ctx).await?;
    }
    if config.runs(config.etcd) {
        etcd::run(&mut ctx).await?;
    }
    println!(
        "\nAll selected scenarios done in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_machine(ctx: &Ctx) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".to_owned(),
            |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
        );
    let version = std::process::Command::new(&ctx.gwmon)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("# gwmon-bench");
    println!();
    println!(
        "Machine: {model}, {cores} cores, {mem} memory. Monitor: {} ({version}). Mode: {}.",
        ctx.gwmon.display(),
        if ctx.config.quick {
            "--quick (smoke: proves the tool works, judges nothing)"
        } else if ctx.config.soak {
            "default + --soak"
        } else {
            "default"
        }
    );
}

/// Pool and group names of a layout of `n` gateways in groups of `group_size`.
pub fn layout(n: usize, group_size: usize) -> Vec<(GroupKey, String, u32)> {
    let g = group_size.max(1);
    (0..n)
        .map(|i| {
            let group = i / g;
            let in_group = (n - group * g).min(g);
            (
                GroupKey {
                    pool: "bench".to_owned(),
                    group: format!("g{group:04}"),
                },
                format!("gw{i:05}"),
                in_group as u32,
            )
        })
        .collect()
}

/// A running cluster with `n` gateways created and beaconing, each serving its own ANA
/// group.
pub struct Setup {
    pub cluster: Cluster,
    pub fleet: Arc<Fleet>,
    pub leader_id: u64,
    pub leader_addr: String,
}

/// What each simulated gateway reports: its id, listener port and its group's size.
pub type Reports = dyn Fn(&str, u32, u32) -> Vec<v1::Subsystem>;

impl Setup {
    pub async fn start(
        gwmon: &Path,
        extra: &[String],
        timers: &Timers,
        n: usize,
        group_size: usize,
    ) -> Result<Setup> {
        let within = Duration::from_secs(60) + Duration::from_millis(20 * n as u64);
        Self::start_with(gwmon, extra, timers, (n, group_size), &subsystems, within).await
    }

    /// [`Setup::start`] with `n` gateways in groups of `group_size`, reporting `reports`,
    /// every one serving its own ANA group `within` the start.
    pub async fn start_with(
        gwmon: &Path,
        extra: &[String],
        timers: &Timers,
        (n, group_size): (usize, usize),
        reports: &Reports,
        within: Duration,
    ) -> Result<Setup> {
        let mut cluster = Cluster::start(gwmon, timers, extra).await?;
        let (leader_id, leader_addr) = cluster.wait_leader().await?;
        if let Some(grace) = timers.grace_ms {
            cluster.admin.set_grace(grace).await?;
        }
        cluster.admin.lift_caps().await?;
        if group_size > 16 {
            cluster
                .admin
                .set_max_per_group(u32::try_from(group_size).unwrap_or(u32::MAX))
                .await?;
        }
        let plan = layout(n, group_size);
        let creates: Vec<(GroupKey, String)> = plan
            .iter()
            .map(|(k, id, _)| (k.clone(), id.clone()))
            .collect();
        let anas = cluster.admin.create_gateways(&creates, 32).await?;
        let specs: Vec<GwSpec> = plan
            .into_iter()
            .zip(anas)
            .enumerate()
            .map(|(index, ((key, id, in_group), own_ana))| GwSpec {
                index,
                subsystems: Arc::new(reports(&id, 4420 + (index % 1000) as u32, in_group)),
                key,
                id,
                own_ana,
            })
            .collect();
        let fleet = Arc::new(Fleet::new(
            specs,
            cluster.addrs.values().cloned().collect(),
            Some(leader_addr.clone()),
            timers.beacon,
        ));
        fleet.start_all();
        fleet.wait_serving(within).await?;
        cluster.check_alive()?;
        Ok(Setup {
            cluster,
            fleet,
            leader_id,
            leader_addr,
        })
    }

    pub async fn stop(self) {
        self.fleet.stop_all();
        self.cluster.stop().await;
    }
}
