//! Footprint: the monitors' resident memory and data directories with many gateways
//! beaconing, and (with `--soak`) their growth over a long run of beacons and admin writes.

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
        "Read from /proc/<pid>/status (VmRSS) and the sled directories after {} s of \
         beacons at 500 ms, gateways in groups of 10, each created through the admin API \
         (one committed entry each). What bounds it: the leader holds one session task, \
         stream and last-seen entry per gateway; followers hold only the map. sled's page \
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

/// The soak: gateways beaconing for `--soak-secs` while `--soak-writes` admin writes are
/// spread evenly over it; RSS and data directories at the start and the end, growth per
/// hour extrapolated.
pub async fn soak(ctx: &mut Ctx) -> Result<()> {
    let n = ctx.sizes.footprint_sizes.first().copied().unwrap_or(1000);
    let secs = ctx.config.soak_secs.max(10);
    let writes = ctx.config.soak_writes;
    println!(
        "\n## Soak: {n} gateways beaconing for {secs} s, {} admin writes\n",
        thousands(writes as i64)
    );
    let timers = Timers::default_timers();
    let mut setup = Setup::start(&ctx.gwmon, &ctx.config.monitor_args, &timers, n, 10).await?;
    tokio::time::sleep(SETTLE).await;
    let sample = |setup: &Setup| -> Result<Vec<(u64, u64, u64)>> {
        let mut v = Vec::new();
        for id in setup.cluster.ids() {
            let rss = setup
                .cluster
                .pid(id)
                .map(rss_bytes)
                .transpose()?
                .unwrap_or(0);
            let disk = setup
                .cluster
                .data_dir(id)
                .map(dir_size)
                .transpose()?
                .unwrap_or(0);
            v.push((id, rss, disk));
        }
        Ok(v)
    };
    let start = sample(&setup)?;
    let begun = Instant::now();
    let gw: Vec<(GroupKey, String)> = setup
        .fleet
        .gateways
        .iter()
        .take(64)
        .map(|g| (g.spec.key.clone(), g.spec.id.clone()))
        .collect();
    let every = Duration::from_secs(secs).div_f64(writes.max(1) as f64);
    let mut next = Instant::now();
    for i in 0..writes {
        next += every;
        tokio::time::sleep_until(next).await;
        let (key, id) = &gw[i % gw.len().max(1)];
        setup
            .cluster
            .admin
            .set_location(
                key,
                id,
                if (i / gw.len().max(1)).is_multiple_of(2) {
                    "rackA"
                } else {
                    "rackB"
                },
            )
            .await?;
    }
    let left = Duration::from_secs(secs).saturating_sub(begun.elapsed());
    tokio::time::sleep(left).await;
    setup.cluster.check_alive()?;
    let end = sample(&setup)?;
    let hours = begun.elapsed().as_secs_f64() / 3600.0;
    let mut t = Table::new(&[
        "monitor",
        "RSS start",
        "RSS end",
        "RSS growth per hour",
        "data dir start",
        "data dir end",
        "data dir growth per hour",
    ]);
    for ((id, r0, d0), (_, r1, d1)) in start.iter().zip(end.iter()) {
        let per_h = |a: u64, b: u64| {
            let d = b as f64 - a as f64;
            let v = d / hours;
            if v < 0.0 {
                format!("-{}", bytes((-v) as u64))
            } else {
                bytes(v as u64)
            }
        };
        t.row(vec![
            format!(
                "{id}{}",
                if *id == setup.leader_id {
                    " (leader)"
                } else {
                    ""
                }
            ),
            bytes(*r0),
            bytes(*r1),
            per_h(*r0, *r1),
            bytes(*d0),
            bytes(*d1),
            per_h(*d0, *d1),
        ]);
    }
    println!("{t}");
    println!(
        "Growth per hour is (end - start) / run time, extrapolated linearly; the data \
         directory is bounded by the snapshot policy (a snapshot every 5,000 entries), so \
         a run shorter than one snapshot period overstates it."
    );
    setup.stop().await;
    Ok(())
}
