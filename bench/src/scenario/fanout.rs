//! Fan-out: how long one map change takes to reach the subscribed gateways, and what each
//! receives. A gateway receives only its own group's slice, so gwmon has no map-wide
//! broadcast: the scenario measures (a) one change in one group while N sessions are open
//! (only the sessions of the changed group wake), and (b) a change in
//! every group at once (one `CreateGateway` per group, 64 writes in flight), which reaches
//! all N gateways. The change is a gateway added to the group: it allocates an ANA group,
//! which every gateway of the group must be told about.
//!
//! The same clusters give the footprint (RSS, data directories) at the footprint sizes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use gwmon_proto::v1::GroupKey;
use tokio::time::Instant;

use super::{footprint, Ctx, Setup};
use crate::config::Timers;
use crate::error::{BenchError, Result};
use crate::fleet::{Fleet, Stamp};
use crate::stats::{bytes, ms, thousands, Summary, Table};
use crate::watch::{Kind, WatchState, Watcher};

/// Gateways per group: room for the gateways the rounds add (16 at most per group).
const GROUP: usize = 10;
/// HTTP/2 DATA frame header (9 bytes) and gRPC message prefix (5 bytes) around each slice.
const FRAMING: usize = 14;

#[derive(Default)]
struct Samples {
    write_to_last: Vec<f64>,
    per_gateway: Vec<f64>,
    bytes: Vec<f64>,
    reached: usize,
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    let do_fanout = ctx.config.runs(ctx.config.fanout);
    let do_footprint = ctx.config.runs(ctx.config.footprint);
    let mut sizes: BTreeSet<usize> = BTreeSet::new();
    if do_fanout {
        sizes.extend(ctx.sizes.fanout_sizes.iter().copied());
    }
    if do_footprint {
        sizes.extend(ctx.sizes.footprint_sizes.iter().copied());
    }
    let mut fan = Table::new(&[
        "N",
        "change",
        "slices delivered (all rounds)",
        "write → last gateway (median)",
        "commit → delivery p50",
        "p99",
        "max",
        "bytes per change per gateway",
    ]);
    let mut foot = footprint::table();
    for n in sizes {
        let timers = Timers::default_timers();
        let setup = Setup::start(&ctx.gwmon, &ctx.config.monitor_args, &timers, n, GROUP).await?;
        if do_footprint && ctx.sizes.footprint_sizes.contains(&n) {
            footprint::measure(ctx, &setup, n, &mut foot).await?;
        }
        if do_fanout && ctx.sizes.fanout_sizes.contains(&n) {
            let watcher = Watcher::start(
                setup.cluster.admin.clone(),
                setup.cluster.addrs.values().cloned().collect(),
            );
            watcher.ready(Duration::from_secs(10)).await?;
            let groups: Vec<GroupKey> = {
                let mut seen = BTreeSet::new();
                setup
                    .fleet
                    .gateways
                    .iter()
                    .filter(|g| seen.insert(g.spec.key.group.clone()))
                    .map(|g| g.spec.key.clone())
                    .collect()
            };
            let mut one = Samples::default();
            for r in 0..ctx.sizes.fanout_rounds {
                let key = &groups[r % groups.len()];
                let id = format!("x{r}-{}", key.group);
                round(&setup, &watcher, &[(key.clone(), id)], &mut one).await?;
            }
            let mut every = Samples::default();
            let every_rounds = if ctx.config.quick { 1 } else { 2 };
            for r in 0..every_rounds {
                let adds: Vec<(GroupKey, String)> = groups
                    .iter()
                    .map(|k| (k.clone(), format!("y{r}-{}", k.group)))
                    .collect();
                round(&setup, &watcher, &adds, &mut every).await?;
            }
            row(&mut fan, n, &format!("one group ({GROUP} gateways)"), &one);
            row(
                &mut fan,
                n,
                &format!("every group ({} groups)", groups.len()),
                &every,
            );
        }
        let mut setup = setup;
        setup.cluster.check_alive()?;
        setup.stop().await;
    }
    if do_fanout && !fan.is_empty() {
        println!("\n## Fan-out: one map change to the subscribed gateways\n");
        println!("{fan}");
        println!(
            "Groups of {GROUP} gateways, 500 ms beacons. The change adds a gateway to a group \
             (a new ANA group every gateway of the group is told about). *Commit → delivery* \
             is per gateway, from the change's committed time (the leader's clock, from \
             `WatchEvents`) to the slice arriving at the simulated gateway; *write → last \
             gateway* is from sending the admin write(s) to the last gateway's slice. Bytes \
             are the protobuf `MonitorMessage` plus {FRAMING} bytes of gRPC and HTTP/2 \
             framing. What bounds it: one Raft commit (fsync on the leader and a follower), \
             then each session of the group builds and sends its slice, on a leader that \
             meanwhile takes every gateway's beacons."
        );
    }
    if do_footprint && !foot.is_empty() {
        footprint::print(&foot);
    }
    Ok(())
}

fn row(t: &mut Table, n: usize, change: &str, s: &Samples) {
    let pg = Summary::of(&s.per_gateway);
    let wl = Summary::of(&s.write_to_last);
    let b = Summary::of(&s.bytes);
    t.row(vec![
        thousands(n as i64),
        change.to_owned(),
        thousands(s.reached as i64),
        wl.map_or("n/a".into(), |x| ms(x.p50)),
        pg.map_or("n/a".into(), |x| ms(x.p50)),
        pg.map_or("n/a".into(), |x| ms(x.p99)),
        pg.map_or("n/a".into(), |x| ms(x.max)),
        b.map_or("n/a".into(), |x| {
            format!(
                "{} ({} framed)",
                bytes(x.mean.round() as u64),
                bytes(x.mean.round() as u64 + FRAMING as u64)
            )
        }),
    ]);
}

/// Add the gateways `adds` (one per group) and wait until every running gateway of those
/// groups has a slice sent after the write.
async fn round(
    setup: &Setup,
    watcher: &Watcher,
    adds: &[(GroupKey, String)],
    out: &mut Samples,
) -> Result<()> {
    let fleet: &Fleet = &setup.fleet;
    let groups: BTreeSet<String> = adds.iter().map(|(k, _)| k.group.clone()).collect();
    let targets: Vec<usize> = fleet
        .gateways
        .iter()
        .enumerate()
        .filter(|(_, g)| groups.contains(&g.spec.key.group) && g.state().running)
        .map(|(i, _)| i)
        .collect();
    let before: HashMap<usize, usize> = targets
        .iter()
        .map(|&i| (i, fleet.gateways[i].state().slices.len()))
        .collect();
    let t0 = Stamp::now();
    setup.cluster.admin.create_gateways(adds, 64).await?;
    let within = Duration::from_secs(30);
    let end = Instant::now() + within;
    loop {
        let missing = targets
            .iter()
            .filter(|&&i| fleet.gateways[i].state().slices.len() <= before[&i])
            .count();
        if missing == 0 {
            break;
        }
        if Instant::now() >= end {
            return Err(BenchError::timeout(
                format!("a slice at every gateway after the change ({missing} missing)"),
                within,
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The committed time of each group's change.
    let mut committed: HashMap<String, f64> = HashMap::new();
    if watcher.state() == WatchState::Running {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            for (key, id) in adds {
                if committed.contains_key(&key.group) {
                    continue;
                }
                if let Some(e) = watcher.find(|e| {
                    e.group == key.group
                        && matches!(&e.kind, Kind::GatewayCreated { gateway, .. } if gateway == id)
                }) {
                    committed.insert(key.group.clone(), e.at_ms as f64);
                }
            }
            if committed.len() == adds.len() || Instant::now() >= end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut last = t0.at;
    for &i in &targets {
        let g = &fleet.gateways[i];
        let s = g.state();
        let Some(slice) = s.slices.get(before[&i]) else {
            continue;
        };
        last = last.max(slice.stamp.at);
        out.bytes.push(slice.bytes as f64 + 0.0);
        if let Some(at) = committed.get(&g.spec.key.group) {
            out.per_gateway.push(slice.stamp.unix_ms - at);
        }
        out.reached += 1;
    }
    out.write_to_last
        .push(last.duration_since(t0.at).as_secs_f64() * 1e3);
    Ok(())
}
