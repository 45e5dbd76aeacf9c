//! Flags, and the sizes each mode runs. The default run stays under 10 minutes on the
//! project's 2-core machine; `--quick` (CI smoke) under 2 minutes in a debug build; the
//! soak (10 minutes unless told) runs only with `--soak`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Benchmarks of a real three-monitor gwmon cluster (separate `gwmon` processes, stores with
/// fsync on loopback) under simulated gateways, with etcd side by side.
///
/// With no scenario flag every scenario runs. Build first:
/// `cargo build --release -p gwmon-monitor -p gwmon-bench`.
#[derive(Debug, Clone, Parser)]
#[command(name = "gwmon-bench", version)]
pub struct Config {
    /// Small sizes for a smoke run (under 2 minutes): proves the tool works, judges nothing.
    #[arg(long, conflicts_with = "soak")]
    pub quick: bool,
    /// The footprint soak: 1,000 gateways beaconing and admin writes at
    /// --soak-writes-per-minute for --soak-minutes, the data directories sampled throughout.
    #[arg(long)]
    pub soak: bool,

    /// Failover phases after killing gateways, default and aggressive timers.
    #[arg(long)]
    pub failover: bool,
    /// How long ANA groups have no optimized path around planned moves, leader changes,
    /// startup and a flapping gateway (real gwmon-client sessions).
    #[arg(long)]
    pub availability: bool,
    /// Namespace balancing: 174 namespaces spread over 4 gateways, then a deleted
    /// gateway's ANA group emptied (real gwmon-client sessions).
    #[arg(long)]
    pub balance: bool,
    /// One group at Ceph's users' wish: 128 gateways, each reporting the group's 8,192
    /// namespaces (the report bound), with report sizes, leader CPU and failover.
    #[arg(long)]
    pub group_scale: bool,
    /// `--group-scale`'s gateways (1 to 128) [default: 128; 8 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=128))]
    pub group_gateways: Option<u32>,
    /// `--group-scale`'s namespaces, reported by every gateway (1 to 8,192) [default: 8,192;
    /// 512 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub group_namespaces: Option<u32>,
    /// Highest sustained beacon rate, and CPU per 1,000 beacons/s.
    #[arg(long)]
    pub beacons: bool,
    /// One map change reaching the subscribed gateways.
    #[arg(long)]
    pub fanout: bool,
    /// Admin write latency and throughput, sequential and 64 concurrent clients.
    #[arg(long)]
    pub commit: bool,
    /// Monitor RSS and data-directory size with many gateways.
    #[arg(long)]
    pub footprint: bool,
    /// etcd side by side: put latency and a lease-based failover baseline.
    #[arg(long)]
    pub etcd: bool,

    /// The `gwmon` daemon [default: `gwmon` next to this executable, then on PATH].
    #[arg(long, value_name = "PATH")]
    pub gwmon: Option<PathBuf>,
    /// The `etcd` server [default: `etcd` on PATH; install it with bench/setup.sh].
    #[arg(long, value_name = "PATH")]
    pub etcd_bin: Option<PathBuf>,
    /// An extra argument for every `gwmon` process (repeat it for more).
    #[arg(long = "monitor-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub monitor_args: Vec<String>,

    /// Failover trials per configuration [default: 20; --quick: 3].
    #[arg(long, value_name = "K")]
    pub trials: Option<usize>,
    /// Gateway counts of the failover scenario [default: 16,256,1024; --quick: 16].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub failover_sizes: Option<Vec<usize>>,
    /// Timer sets of the failover scenario [default: default,aggressive; --quick:
    /// aggressive].
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub failover_timers: Option<Vec<TimersName>>,
    /// Least time between two kills; kills overlap in different groups (ms).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub spacing_ms: u64,
    /// Gateways of the beacon scenario, in groups of 16 [default: 2,000; --quick: 200].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=MAX_GATEWAYS as u64))]
    pub beacon_gateways: Option<u64>,
    /// Beacon intervals the beacon scenario steps down through, in ms [default:
    /// 1000,500,200,100,50,25,20,15,10; --quick: 500,100].
    #[arg(long, value_delimiter = ',', value_name = "MS,...",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub beacon_intervals: Option<Vec<u64>>,
    /// Gateway counts of the fan-out scenario [default: 100,1000,5000; --quick: 100].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub fanout_sizes: Option<Vec<usize>>,
    /// Gateway counts of the footprint scenario [default: 1000,5000; --quick: 100].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub footprint_sizes: Option<Vec<usize>>,
    /// Soak length in minutes (with --soak).
    #[arg(long, default_value_t = 10, value_name = "M",
          value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub soak_minutes: u64,
    /// Admin writes per minute through the soak, evenly spread [default: 1,000, the rate
    /// of the first 10-minute soak; 60 is one a second].
    #[arg(long, default_value_t = 1_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub soak_writes_per_minute: u64,
    /// Seed of the victim choice, for a repeatable sequence of kills.
    #[arg(long, default_value_t = 9, value_name = "SEED")]
    pub seed: u64,
}

/// The most simulated gateways a scenario accepts (sizes outside 1..=this are ignored;
/// failover needs at least 2).
pub const MAX_GATEWAYS: usize = 50_000;

/// A failover timer set by name, for `--failover-timers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimersName {
    Default,
    Aggressive,
}

impl TimersName {
    pub fn timers(self) -> Timers {
        match self {
            TimersName::Default => Timers::default_timers(),
            TimersName::Aggressive => Timers::aggressive(),
        }
    }
}

/// The timers of a failover configuration: the gateways' beacon interval and the monitors'
/// Raft and liveness periods, and the map's beacon grace, set through
/// `AdminService.SetConfig` (`nvme-gw config set`) before any gateway connects. The bench
/// still reads the grace in force from the lease of the acks (half the grace) rather than
/// assuming it.
#[derive(Debug, Clone)]
pub struct Timers {
    pub name: &'static str,
    pub beacon: Duration,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub liveness_tick_ms: u64,
    /// `beacon_grace_ms` to set; `None` keeps the map's default (4 s).
    pub grace_ms: Option<u64>,
}

impl Timers {
    /// The shipped defaults: 500 ms beacons (gwmon-client), 250 ms liveness tick, Raft
    /// heartbeat 100 ms, election 300-600 ms.
    pub fn default_timers() -> Timers {
        Timers {
            name: "default",
            beacon: Duration::from_millis(500),
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            liveness_tick_ms: 250,
            grace_ms: None,
        }
    }

    /// 100 ms beacons, 1 s grace, 50 ms liveness tick, Raft heartbeat 50 ms, election
    /// 250-500 ms.
    pub fn aggressive() -> Timers {
        Timers {
            name: "aggressive",
            beacon: Duration::from_millis(100),
            heartbeat_ms: 50,
            election_min_ms: 250,
            election_max_ms: 500,
            liveness_tick_ms: 50,
            grace_ms: Some(1_000),
        }
    }
}

/// The sizes of one run, from the mode and the flags.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub trials: usize,
    /// Availability: trials of each event, and the flapping gateway's runs and length.
    pub availability_trials: usize,
    pub flap_trials: usize,
    pub flap_secs: u64,
    pub failover_sizes: Vec<usize>,
    pub failover_timers: Vec<Timers>,
    /// Beacons: simulated gateways, and the beacon intervals stepped through (ms).
    pub beacon_gateways: usize,
    pub beacon_intervals_ms: Vec<u64>,
    pub beacon_window: Duration,
    pub fanout_sizes: Vec<usize>,
    pub fanout_rounds: usize,
    pub footprint_sizes: Vec<usize>,
    pub commit_sequential: usize,
    pub commit_concurrent: usize,
    pub commit_clients: usize,
    /// etcd lease baseline: gateways, and the keepalive intervals stepped through (ms).
    pub lease_gateways: usize,
    pub lease_trials: usize,
    pub keepalive_gateways: usize,
    pub keepalive_intervals_ms: Vec<u64>,
}

impl Config {
    /// Whether a scenario runs: all of them when none is named.
    pub fn runs(&self, flag: bool) -> bool {
        let none = !(self.failover
            || self.availability
            || self.balance
            || self.group_scale
            || self.beacons
            || self.fanout
            || self.commit
            || self.footprint
            || self.soak
            || self.etcd);
        none || flag
    }

    pub fn sizes(&self) -> Sizes {
        let q = self.quick;
        // Gateway counts: at least 1, at most what 16-gateway groups of one pool hold here.
        let sane = |v: Vec<usize>| -> Vec<usize> {
            v.into_iter()
                .filter(|n| (1..=MAX_GATEWAYS).contains(n))
                .collect()
        };
        Sizes {
            trials: self.trials.unwrap_or(if q { 3 } else { 20 }).max(1),
            availability_trials: self.trials.unwrap_or(if q { 1 } else { 10 }).max(1),
            flap_trials: if q { 1 } else { 3 },
            flap_secs: if q { 9 } else { 60 },
            failover_sizes: sane(self.failover_sizes.clone().unwrap_or_else(|| {
                if q {
                    vec![16]
                } else {
                    vec![16, 256, 1024]
                }
            }))
            .into_iter()
            .filter(|n| *n >= 2)
            .collect(),
            failover_timers: match &self.failover_timers {
                Some(names) => names.iter().map(|n| n.timers()).collect(),
                None if q => vec![Timers::aggressive()],
                None => vec![Timers::default_timers(), Timers::aggressive()],
            },
            beacon_gateways: self
                .beacon_gateways
                .map_or(if q { 200 } else { 2000 }, |n| n as usize),
            beacon_intervals_ms: self.beacon_intervals.clone().unwrap_or_else(|| {
                if q {
                    vec![500, 100]
                } else {
                    vec![1000, 500, 200, 100, 50, 25, 20, 15, 10]
                }
            }),
            beacon_window: Duration::from_secs(if q { 1 } else { 5 }),
            fanout_sizes: sane(self.fanout_sizes.clone().unwrap_or_else(|| {
                if q {
                    vec![100]
                } else {
                    vec![100, 1000, 5000]
                }
            })),
            fanout_rounds: if q { 2 } else { 10 },
            footprint_sizes: sane(self.footprint_sizes.clone().unwrap_or_else(|| {
                if q {
                    vec![100]
                } else {
                    vec![1000, 5000]
                }
            })),
            commit_sequential: if q { 50 } else { 1000 },
            commit_concurrent: if q { 640 } else { 20_000 },
            commit_clients: 64,
            lease_gateways: if q { 16 } else { 256 },
            lease_trials: self.trials.unwrap_or(if q { 2 } else { 20 }).max(1),
            keepalive_gateways: if q { 200 } else { 2000 },
            keepalive_intervals_ms: if q {
                vec![500, 100]
            } else {
                vec![1000, 500, 200, 100, 50, 25, 20, 15, 10]
            },
        }
    }

    /// The `gwmon` binary: the flag, else next to this executable, else `gwmon` on PATH.
    pub fn gwmon_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.gwmon {
            return Some(p.clone());
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("gwmon")))
            .filter(|p| p.is_file());
        beside.or_else(|| on_path("gwmon"))
    }

    /// The `etcd` binary: the flag, else `etcd` on PATH.
    pub fn etcd_path(&self) -> Option<PathBuf> {
        match &self.etcd_bin {
            Some(p) => Some(p.clone()),
            None => on_path("etcd"),
        }
    }
}

/// An executable named `name` in one of PATH's directories.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
