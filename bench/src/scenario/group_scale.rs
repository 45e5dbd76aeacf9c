//! One large group, as Ceph's users ask for (Ceph stops at 16 gateways and 2,048
//! namespaces a group): 128 gateways, each reporting the group's 8,192 namespaces in two
//! subsystems of 4,096, 64 in each ANA group; those are the most a report and a subsystem
//! may hold, so the report bounds are in force at their limits. Measured: how large a beacon, a slice and the committed report are, how
//! long the group takes to come up, what the leader spends on the beacons, and failover.

use std::time::Duration;

use gwmon_monitor::codec;
use gwmon_monitor::map::Command;
use gwmon_proto::domain::{self, Epoch, GatewayReport, ReportedAvailability, Subsystem};
use gwmon_proto::v1;
use tokio::time::Instant;

use super::failover;
use super::{Ctx, Setup};
use crate::config::Timers;
use crate::error::{BenchError, Result};
use crate::procfs::{self, CpuSample};
use crate::stats::{bytes, ms, Table};
use crate::watch::Watcher;

/// The gateways of the group and the namespaces each reports: as the flags say, else by
/// mode.
fn size(config: &crate::config::Config) -> (usize, u32) {
    let (n, namespaces) = if config.quick {
        (8, 512)
    } else {
        (128, gwmon_proto::convert::MAX_REPORT_NAMESPACES as u32)
    };
    (
        config.group_gateways.map_or(n, |g| g as usize),
        config.group_namespaces.unwrap_or(namespaces),
    )
}

/// `namespaces` namespaces spread evenly over the group's `ana_groups` ANA groups, each
/// with the gateway's fencing nonce, in as few subsystems as the per-subsystem bound
/// allows (4,096 namespaces), each with one listener.
fn reports(gateway: &str, port: u32, ana_groups: u32, namespaces: u32) -> Vec<v1::Subsystem> {
    let per = u32::try_from(gwmon_proto::convert::MAX_NAMESPACES).unwrap_or(u32::MAX);
    let mut out = Vec::new();
    let mut first = 0;
    while first < namespaces {
        let count = per.min(namespaces - first);
        out.push(v1::Subsystem {
            nqn: format!("nqn.2016-06.io.spdk:cnode{}", out.len() + 1),
            listeners: vec![v1::Listener {
                address: "127.0.0.1".to_owned(),
                port: port.clamp(1, 65535),
            }],
            namespaces: (1..=count)
                .map(|nsid| v1::Namespace {
                    nsid,
                    ana_group: (first + nsid - 1) % ana_groups.max(1) + 1,
                    nonce: format!("client.{gateway}"),
                })
                .collect(),
        });
        first += count;
    }
    out
}

/// The report of one gateway as the monitors commit it: its whole subsystem list when it
/// changed, and the confirmation that stands for it when only its epochs did.
fn committed_sizes(key: &v1::GroupKey, id: &str, subs: &[v1::Subsystem]) -> Result<(usize, usize)> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        BenchError::failed(format!("group scale: {what}: {e}"))
    };
    let subsystems = subs
        .iter()
        .cloned()
        .map(Subsystem::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("subsystems", &e))?;
    let key = domain::GroupKey::new(
        key.pool.parse().map_err(|e| bad("pool", &e))?,
        key.group.parse().map_err(|e| bad("group", &e))?,
    );
    let gateway: domain::GatewayId = id.parse().map_err(|e| bad("gateway id", &e))?;
    let report = Command::GatewayReport {
        key: key.clone(),
        gateway: gateway.clone(),
        report: GatewayReport {
            seq: 2,
            availability: ReportedAvailability::Available,
            subsystems,
            applied_epoch: Epoch(7),
            fence_epoch: Epoch::ZERO,
        },
    };
    let confirm = Command::ConfirmApplied {
        key,
        gateway,
        based_on: 2,
        seq: 3,
        applied_epoch: Epoch(8),
        fence_epoch: Epoch::ZERO,
    };
    let len = |c: &Command| {
        codec::encode(c)
            .map(|b| b.len())
            .map_err(|e| bad("encode", &e))
    };
    Ok((len(&report)?, len(&confirm)?))
}

/// The leader over a stretch of steady beacons (nothing changes: none is committed).
struct Steady {
    rate: f64,
    cores: f64,
    rss: u64,
}

async fn steady(ctx: &Ctx, setup: &Setup, pid: u32, window: Duration) -> Result<Steady> {
    let acked = || -> u64 { setup.fleet.gateways.iter().map(|g| g.state().acks).sum() };
    // One interval for every gateway's beacons to be of the new kind.
    tokio::time::sleep(setup.fleet.interval() * 2).await;
    let before = CpuSample::take(pid, ctx.ticks)?;
    let acks_before = acked();
    tokio::time::sleep(window).await;
    let after = CpuSample::take(pid, ctx.ticks)?;
    Ok(Steady {
        rate: (acked() - acks_before) as f64 / window.as_secs_f64(),
        cores: after.cores_since(&before),
        rss: procfs::rss_bytes(pid)?,
    })
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let (n, namespaces) = size(&ctx.config);
    println!("\n## Group scale: {n} gateways and {namespaces} namespaces in one group\n");
    let timers = if ctx.config.quick {
        Timers::aggressive()
    } else {
        Timers::default_timers()
    };
    let ana_groups = u32::try_from(n).unwrap_or(u32::MAX);
    let reporter =
        move |id: &str, port: u32, _in_group: u32| reports(id, port, ana_groups, namespaces);
    let started = Instant::now();
    let setup = Setup::start_with(
        &ctx.gwmon,
        &ctx.config.monitor_args,
        &timers,
        (n, n),
        &reporter,
        Duration::from_secs(600),
    )
    .await?;
    let up = started.elapsed();
    let result = measure(ctx, &setup, &timers, n, namespaces, up).await;
    setup.stop().await;
    result
}

async fn measure(
    ctx: &Ctx,
    setup: &Setup,
    timers: &Timers,
    n: usize,
    namespaces: u32,
    up: Duration,
) -> Result<()> {
    let first = setup
        .fleet
        .gateways
        .first()
        .ok_or_else(|| BenchError::failed("group scale: no gateway"))?;
    let (report_bytes, confirm_bytes) =
        committed_sizes(&first.spec.key, &first.spec.id, &first.spec.subsystems)?;
    let slice_bytes = first.state().slices.last().map_or(0, |s| s.bytes);
    let (full_bytes, unchanged_bytes) = setup.fleet.beacon_bytes();
    let pid = setup
        .cluster
        .pid(setup.leader_id)
        .ok_or_else(|| BenchError::failed("group scale: the leader's process is gone"))?;
    let window = if ctx.config.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    // The same fleet, first with every beacon listing its subsystems (as older gateways
    // do), then leaving the unchanged list out (as gwmon-client does with a monitor that
    // takes it).
    setup.fleet.set_omit_unchanged(false);
    let full = steady(ctx, setup, pid, window).await?;
    setup.fleet.set_omit_unchanged(true);
    let unchanged = steady(ctx, setup, pid, window).await?;

    let mut t = Table::new(&[
        "figure",
        "every beacon lists its subsystems",
        "only changes are listed",
    ]);
    let both = |label: String, a: String, b: String| vec![label, a, b];
    t.row(both(
        "gateways up and serving their own ANA groups, from the start".into(),
        ms(up.as_secs_f64() * 1e3),
        String::new(),
    ));
    t.row(both(
        "a steady beacon (protobuf)".into(),
        bytes(full_bytes as u64),
        bytes(unchanged_bytes as u64),
    ));
    t.row(both(
        "a changed report, committed (the Raft entry's command)".into(),
        bytes(report_bytes as u64),
        bytes(report_bytes as u64),
    ));
    t.row(both(
        "an unchanged report confirming an epoch, committed".into(),
        bytes(confirm_bytes as u64),
        bytes(confirm_bytes as u64),
    ));
    t.row(both(
        "a gateway's map slice (protobuf)".into(),
        bytes(slice_bytes as u64),
        bytes(slice_bytes as u64),
    ));
    t.row(both(
        format!(
            "beacons acked per second ({} ms interval)",
            timers.beacon.as_millis()
        ),
        format!("{:.0}", full.rate),
        format!("{:.0}", unchanged.rate),
    ));
    t.row(both(
        "leader CPU on those beacons (cores)".into(),
        format!("{:.2}", full.cores),
        format!("{:.2}", unchanged.cores),
    ));
    t.row(both(
        "leader RSS".into(),
        bytes(full.rss),
        bytes(unchanged.rss),
    ));
    println!("{t}");

    failovers(ctx, setup, timers, n).await?;
    println!(
        "{n} simulated gateways in one group, each beaconing its {namespaces} namespaces (the \
         report bound), {} timers; 3 monitors on this machine with the gateways.",
        timers.name
    );
    Ok(())
}

/// Failover trials in the group, first with every beacon listing its subsystems, then with
/// only changes listed.
async fn failovers(ctx: &Ctx, setup: &Setup, timers: &Timers, n: usize) -> Result<()> {
    let watcher = Watcher::start(
        setup.cluster.admin.clone(),
        setup.cluster.addrs.values().cloned().collect(),
    );
    watcher.ready(Duration::from_secs(10)).await?;
    let k = ctx.sizes.trials.min(5);
    for (omit, what) in [
        (false, "every beacon lists its subsystems"),
        (true, "only changes are listed"),
    ] {
        setup.fleet.set_omit_unchanged(omit);
        println!("Failover, {what}:");
        let (phases, failed) = failover::trials(
            &setup.fleet,
            &watcher,
            k,
            Duration::from_millis(ctx.config.spacing_ms),
            ctx.config.seed,
        )
        .await?;
        let grace = phases.first().map_or(f64::NAN, |(g, _)| *g);
        failover::report(timers, n, n, k, grace, &phases, failed);
    }
    Ok(())
}
