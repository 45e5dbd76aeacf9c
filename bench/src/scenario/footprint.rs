//! Footprint: the monitors' resident memory and data directories with many gateways
//! beaconing, and (with `--soak`) their growth over a long run of beacons and admin writes.

use std::collections::BTreeMap;
use std::time::Duration;

use gwmon_proto::v1::GroupKey;
use tokio::time::Instant;

use super::{Ctx, Setup};
use crate::config::Timers;
use crate::error::{BenchError, Result};
use crate::procfs::{dir_size, rss_bytes, CpuSample};
use crate::stats::{bytes, thousands, Table};

/// Beaconing before the figures are read, so every session and timer exists.
const SETTLE: Duration = Duration::from_secs(5);

pub fn table() -> Table {
    Table::new(&[
        "gateways",
        "leader RSS",
        "follower RSS (larger)",
        "leader data dir",
        "follower data dir (larger)",
        "leader CPU at 500 ms beacons",
    ])
}

pub fn print(t: &Table) {
    println!("\n## Footprint: monitor memory and disk\n");
    println!("{t}");
    println!(
        "Read from /proc/<pid>/status (VmRSS) and the data directories after {} s of \
         beacons at 500 ms, gateways in groups of 10, each created through the admin API \
         (one committed entry each). What bounds it: the leader holds one session task, \
         stream and last-seen entry per gateway; followers hold only the map. The store's page \
         cache is capped at 64 MiB (`--cache-mb`); the disk is the Raft log since the last \
         snapshot (every 5,000 entries, 1,000 kept) plus the snapshot.",
        SETTLE.as_secs()
    );
}

/// One row of the footprint table for a running setup.
pub async fn measure(ctx: &Ctx, setup: &Setup, n: usize, t: &mut Table) -> Result<()> {
    tokio::time::sleep(SETTLE).await;
    let leader = setup.leader_id;
    let pid = setup
        .cluster
        .pid(leader)
        .ok_or_else(|| BenchError::failed("the leader's process id is unknown"))?;
    let cpu0 = CpuSample::take(pid, ctx.ticks)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu1 = CpuSample::take(pid, ctx.ticks)?;
    let mut follower_rss = 0;
    let mut follower_disk = 0;
    for id in setup.cluster.ids() {
        if id == leader {
            continue;
        }
        if let Some(p) = setup.cluster.pid(id) {
            follower_rss = follower_rss.max(rss_bytes(p)?);
        }
        if let Some(d) = setup.cluster.data_dir(id) {
            follower_disk = follower_disk.max(dir_size(d)?);
        }
    }
    let leader_dir = setup
        .cluster
        .data_dir(leader)
        .ok_or_else(|| BenchError::failed("the leader's data directory is unknown"))?;
    t.row(vec![
        thousands(n as i64),
        bytes(rss_bytes(pid)?),
        bytes(follower_rss),
        bytes(dir_size(leader_dir)?),
        bytes(follower_disk),
        format!("{:.0}% of a core", cpu1.cores_since(&cpu0) * 100.0),
    ]);
    Ok(())
}

/// The soak: gateways beaconing at 500 ms for `--soak-minutes` while admin writes go in
/// at `--soak-writes-per-minute`, evenly spread. Each monitor's data directory and RSS are
/// sampled through the run, and its data directory read again when its first snapshot
/// after the start is built: the end against that is the figure that says whether the store
/// holds flat.
pub async fn soak(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.footprint_sizes.first().copied().unwrap_or(1000);
    let minutes = ctx.config.soak_minutes;
    let per_minute = ctx.config.soak_writes_per_minute;
    println!(
        "\n## Soak: {n} gateways beaconing at 500 ms for {minutes} min, {} admin writes a \
         minute (monitor args: {:?})\n",
        thousands(per_minute as i64),
        ctx.config.monitor_args
    );
    let timers = Timers::default_timers();
    let setup = Setup::start(&ctx.gwmon, &ctx.config.monitor_args, &timers, n, 10).await?;
    tokio::time::sleep(SETTLE).await;
    let mut soak = Soak::begin(setup, per_minute).await?;
    let length = Duration::from_secs(minutes * 60);
    let sample_every = Duration::from_secs(60 * minutes.div_ceil(12));
    let mut next_sample = soak.begun + sample_every;
    let mut next_check = soak.begun + SNAPSHOT_CHECK;
    let end = soak.begun + length;
    while Instant::now() < end {
        let at = soak.next_write().min(next_sample).min(next_check).min(end);
        tokio::time::sleep_until(at).await;
        if Instant::now() >= soak.next_write() && soak.next_write() < end {
            soak.write().await?;
        }
        if Instant::now() >= next_check {
            soak.check_snapshots().await?;
            next_check += SNAPSHOT_CHECK;
        }
        if Instant::now() >= next_sample && next_sample < end {
            soak.sample()?;
            next_sample += sample_every;
        }
    }
    soak.setup.cluster.check_alive()?;
    soak.check_snapshots().await?;
    soak.sample()?;
    soak.print();
    soak.setup.stop().await;
    Ok(())
}

/// How often the soak asks each monitor whether it has built a snapshot.
const SNAPSHOT_CHECK: Duration = Duration::from_secs(5);

/// A monitor's figures at one moment of the soak.
#[derive(Debug, Clone, Copy, Default)]
struct Look {
    rss: u64,
    disk: u64,
}

struct Soak {
    setup: Setup,
    /// The gateways whose location the writes flip.
    targets: Vec<(GroupKey, String)>,
    every: Option<Duration>,
    writes: usize,
    begun: Instant,
    start: BTreeMap<u64, Look>,
    /// Each monitor's snapshot index at the start.
    first_index: BTreeMap<u64, f64>,
    /// Per monitor: when its first snapshot after the start was seen, its index and look.
    after_snapshot: BTreeMap<u64, (Duration, f64, Look)>,
    rows: Table,
}

impl Soak {
    async fn begin(setup: Setup, per_minute: u64) -> Result<Soak> {
        let targets = setup
            .fleet
            .gateways
            .iter()
            .take(64)
            .map(|g| (g.spec.key.clone(), g.spec.id.clone()))
            .collect();
        let ids = setup.cluster.ids();
        let mut headers = vec!["minute".to_owned(), "writes".to_owned()];
        headers.extend(ids.iter().map(|id| format!("data dir {id}")));
        headers.push("leader RSS".to_owned());
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut soak = Soak {
            targets,
            every: (per_minute > 0).then(|| Duration::from_secs(60).div_f64(per_minute as f64)),
            writes: 0,
            begun: Instant::now(),
            start: BTreeMap::new(),
            first_index: BTreeMap::new(),
            after_snapshot: BTreeMap::new(),
            rows: Table::new(&headers),
            setup,
        };
        for id in ids {
            let index = soak.snapshot_index(id).await?;
            soak.first_index.insert(id, index);
        }
        soak.start = soak.look()?;
        soak.row(&soak.start.clone());
        soak.begun = Instant::now();
        Ok(soak)
    }

    fn next_write(&self) -> Instant {
        match self.every {
            Some(every) => self.begun + every.mul_f64(self.writes as f64 + 1.0),
            None => self.begun + Duration::from_secs(u64::from(u32::MAX)),
        }
    }

    async fn write(&mut self) -> Result<()> {
        let i = self.writes;
        let (key, id) = &self.targets[i % self.targets.len().max(1)];
        let rack = if (i / self.targets.len().max(1)).is_multiple_of(2) {
            "rackA"
        } else {
            "rackB"
        };
        self.setup.cluster.admin.set_location(key, id, rack).await?;
        self.writes += 1;
        Ok(())
    }

    async fn snapshot_index(&self, id: u64) -> Result<f64> {
        Ok(self
            .setup
            .cluster
            .metric(id, "gwmon_raft_snapshot_index")
            .await?
            .unwrap_or(0.0))
    }

    /// Read the data directory of each monitor whose first snapshot since the start is new.
    async fn check_snapshots(&mut self) -> Result<()> {
        for id in self.setup.cluster.ids() {
            if self.after_snapshot.contains_key(&id) {
                continue;
            }
            let index = self.snapshot_index(id).await?;
            if index > self.first_index.get(&id).copied().unwrap_or(0.0) {
                let look = self.look()?.get(&id).copied().unwrap_or_default();
                self.after_snapshot
                    .insert(id, (self.begun.elapsed(), index, look));
            }
        }
        Ok(())
    }

    fn look(&self) -> Result<BTreeMap<u64, Look>> {
        let mut v = BTreeMap::new();
        for id in self.setup.cluster.ids() {
            let rss = self.setup.cluster.pid(id).map(rss_bytes).transpose()?;
            let disk = self.setup.cluster.data_dir(id).map(dir_size).transpose()?;
            v.insert(
                id,
                Look {
                    rss: rss.unwrap_or(0),
                    disk: disk.unwrap_or(0),
                },
            );
        }
        Ok(v)
    }

    fn sample(&mut self) -> Result<()> {
        let look = self.look()?;
        self.row(&look);
        Ok(())
    }

    fn row(&mut self, look: &BTreeMap<u64, Look>) {
        let mut row = vec![
            format!("{:.0}", self.begun.elapsed().as_secs_f64() / 60.0),
            thousands(self.writes as i64),
        ];
        row.extend(look.values().map(|l| bytes(l.disk)));
        let leader = look.get(&self.setup.leader_id).copied().unwrap_or_default();
        row.push(bytes(leader.rss));
        self.rows.row(row);
    }

    fn print(&self) {
        println!("{}", self.rows);
        let end = self.look().unwrap_or_default();
        let mut t = Table::new(&[
            "monitor",
            "data dir at start",
            "first snapshot (minute, index)",
            "data dir then",
            "data dir at end",
            "end / after first snapshot",
            "RSS start",
            "RSS end",
        ]);
        for (id, start) in &self.start {
            let last = end.get(id).copied().unwrap_or_default();
            let (when, then, ratio) = match self.after_snapshot.get(id) {
                Some((at, index, look)) => (
                    format!(
                        "{:.1}, {}",
                        at.as_secs_f64() / 60.0,
                        thousands(*index as i64)
                    ),
                    bytes(look.disk),
                    format!("{:.2}x", last.disk as f64 / look.disk.max(1) as f64),
                ),
                None => ("none".to_owned(), "-".to_owned(), "-".to_owned()),
            };
            let leader = if *id == self.setup.leader_id {
                " (leader)"
            } else {
                ""
            };
            t.row(vec![
                format!("{id}{leader}"),
                bytes(start.disk),
                when,
                then,
                bytes(last.disk),
                ratio,
                bytes(start.rss),
                bytes(last.rss),
            ]);
        }
        println!("\n{t}");
        println!(
            "{} admin writes in {:.1} min. A monitor builds a snapshot every 5,000 entries and \
             keeps 1,000 behind it; the data directory is read when its first snapshot after \
             the start is seen (checked every {} s).",
            thousands(self.writes as i64),
            self.begun.elapsed().as_secs_f64() / 60.0,
            SNAPSHOT_CHECK.as_secs()
        );
    }
}
