//! Beacon ingest: a fixed fleet beacons with unchanged content; the beacon interval steps
//! down until the leader's acks lag. A step is sustained when at least 97% of the beacons
//! the fleet should send are acked within the window and the ack p99 stays under 100 ms
//! (a twentieth of the default lease: lag that grows would eat the lease).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Ctx, Setup};
use crate::config::Timers;
use crate::error::{BenchError, Result};
use crate::procfs::{own_pid, rss_bytes, CpuSample};
use crate::stats::{bytes, ms, rate, Summary, Table};

const SUSTAINED_SHARE: f64 = 0.97;
const SUSTAINED_P99_MS: f64 = 100.0;

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("\n## Beacons: sustained ingest of unchanged beacons\n");
    let n = ctx.sizes.beacon_gateways;
    let intervals = ctx.sizes.beacon_intervals_ms.clone();
    let mut timers = Timers::default_timers();
    timers.beacon = Duration::from_millis(intervals.first().copied().unwrap_or(500));
    let mut setup = Setup::start(&ctx.gwmon, &ctx.config.monitor_args, &timers, n, 16).await?;
    let pid = setup
        .cluster
        .pid(setup.leader_id)
        .ok_or_else(|| BenchError::failed("the leader's process id is unknown"))?;
    let fleet = setup.fleet.clone();
    let mut table = Table::new(&[
        "interval",
        "offered",
        "acked",
        "ack p50",
        "ack p99",
        "leader CPU",
        "leader CPU per 1,000/s",
        "leader RSS",
        "bench CPU",
        "sustained",
    ]);
    let mut best: Option<(f64, f64)> = None;
    for interval_ms in intervals {
        let Step {
            row,
            acked,
            cpu_per_k,
            sustained,
        } = step(ctx, &fleet, pid, n, interval_ms).await?;
        table.row(row);
        if sustained {
            if best.is_none_or(|(r, _)| acked > r) {
                best = Some((acked, cpu_per_k));
            }
        } else {
            break;
        }
        setup.cluster.check_alive()?;
    }
    println!(
        "{n} simulated gateways in groups of 16 over {} HTTP/2 connections to the leader; each \
         beacon is {} of protobuf with its list (one subsystem, one listener, 16 namespaces \
         with a nonce) and {} without (the list unchanged since the session's first beacon).\n",
        n.div_ceil(crate::fleet::PER_CHANNEL),
        bytes(fleet.beacon_bytes().0 as u64),
        bytes(fleet.beacon_bytes().1 as u64),
    );
    println!("{table}");
    match best {
        Some((r, cpu)) => {
            println!(
                "Highest sustained: **{}** beacons acked; at that rate the leader spends {:.1}% \
                 of a core per 1,000 beacons/s (at low rates the figure is inflated by the \
                 leader's fixed costs: Raft heartbeats, the liveness tick).",
                rate(r),
                cpu * 100.0
            );
            ctx.figures.beacons = Some((r, cpu));
        }
        None => println!("No step was sustained."),
    }
    println!(
        "\nWhat bounds it: an unchanged beacon is not committed (no Raft, no fsync); the \
         leader decodes it, compares it with the map under a read lock, stamps the gateway's \
         last-seen time and acks. On this 2-core machine the bench's own gateways share the \
         CPU with three monitors, so the ceiling is the machine's, the bench included (its \
         CPU is in the table)."
    );
    setup.fleet.stop_all();
    setup.cluster.check_alive()?;
    setup.stop().await;
    Ok(())
}

/// One interval's measurements.
struct Step {
    row: Vec<String>,
    acked: f64,
    cpu_per_k: f64,
    sustained: bool,
}

/// The fleet beacons every `interval_ms` for the window: the table row, the acked rate,
/// the leader's CPU per 1,000 beacons/s, and whether the rate was sustained.
async fn step(
    ctx: &Ctx,
    fleet: &crate::fleet::Fleet,
    pid: u32,
    n: usize,
    interval_ms: u64,
) -> Result<Step> {
    let stats = fleet.stats.clone();
    let interval = Duration::from_millis(interval_ms);
    fleet.set_interval(interval);
    // Two intervals for every gateway to take the new one, then a settling second.
    tokio::time::sleep(interval * 2 + Duration::from_secs(1)).await;
    stats.take_latencies();
    stats.record_latency(true);
    let acks0 = stats.acks.load(Ordering::Relaxed);
    let leader0 = CpuSample::take(pid, ctx.ticks)?;
    let bench0 = CpuSample::take(own_pid(), ctx.ticks)?;
    tokio::time::sleep(ctx.sizes.beacon_window).await;
    let acks1 = stats.acks.load(Ordering::Relaxed);
    let leader1 = CpuSample::take(pid, ctx.ticks)?;
    let bench1 = CpuSample::take(own_pid(), ctx.ticks)?;
    stats.record_latency(false);
    let secs = leader1.at.duration_since(leader0.at).as_secs_f64();
    let offered = n as f64 * 1000.0 / interval_ms as f64;
    let acked = (acks1 - acks0) as f64 / secs;
    let lat: Vec<f64> = stats
        .take_latencies()
        .into_iter()
        .map(|us| f64::from(us) / 1e3)
        .collect();
    let s = Summary::of(&lat);
    let p99 = s.map_or(f64::INFINITY, |s| s.p99);
    let leader_cores = leader1.cores_since(&leader0);
    let bench_cores = bench1.cores_since(&bench0);
    let sustained = acked >= SUSTAINED_SHARE * offered && p99 < SUSTAINED_P99_MS;
    let cpu_per_k = if acked > 0.0 {
        leader_cores / (acked / 1000.0)
    } else {
        f64::NAN
    };
    let row = vec![
        format!("{interval_ms} ms"),
        rate(offered),
        rate(acked),
        s.map_or("n/a".into(), |s| ms(s.p50)),
        s.map_or("n/a".into(), |s| ms(s.p99)),
        format!("{:.0}% of a core", leader_cores * 100.0),
        format!("{:.1}% of a core", cpu_per_k * 100.0),
        bytes(rss_bytes(pid)?),
        format!("{:.0}%", bench_cores * 100.0),
        if sustained {
            "yes".into()
        } else {
            "**no**".into()
        },
    ];
    Ok(Step {
        row,
        acked,
        cpu_per_k,
        sustained,
    })
}
