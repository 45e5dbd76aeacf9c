//! Failover: kill a random gateway K times and split each failover into phases.
//!
//! Phases come from the monitors' event stream (`WatchEvents`: committed times, the leader's
//! clock) and from the slices the simulated gateways receive (this host's clock, the same
//! clock):
//!
//! ```text
//! last beacon ──grace──▶ │ failover_started + fence_issued ──▶ fence_completed ──▶ slice at new owner ──▶ ana_group_promoted
//!          detection beyond grace │        fence               │      delivery       │   promotion (next beacon echoes the fence)
//! ```
//!
//! Kills overlap in different groups (at least `--spacing-ms` apart; a group has one trial
//! at a time), so K trials take about K seconds plus one failover rather than K failovers.
//! A victim is a gateway serving exactly its own ANA group. When its group would be left
//! with fewer than two live gateways, the victim is restarted after its trial; the group
//! then rests 20 s before it is used again, so that no gateway goes down twice within the
//! monitors' damping half-life (15 s: a gateway down twice within it is damped for flapping
//! and gets no failback for a while, which would take its group out of the trials).

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{Ctx, FailoverFigures, Setup};
use crate::config::Timers;
use crate::error::Result;
use crate::fleet::{Fleet, Stamp};
use crate::stats::{ms, Summary, Table};
use crate::watch::{Event, Kind, WatchState, Watcher};

/// Longer than the monitors' damping half-life (15 s), plus the failback that a restarted
/// victim goes through.
const REDEPLOY_COOLDOWN: Duration = Duration::from_millis(16_000 + 4_000);
/// A trial not complete this long after the grace ran out is counted as failed.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);

struct Trial {
    victim: usize,
    group: String,
    ana: u32,
    killed: Stamp,
    last_beacon: Stamp,
    grace_ms: f64,
}

/// Reads one phase of a trial.
type PhaseOf = fn(&Phases) -> f64;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Phases {
    beyond_grace: f64,
    fence: f64,
    delivery: f64,
    promotion: f64,
    kill_to_serving: f64,
    beacon_to_serving: f64,
    kill_to_promoted: f64,
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("\n## Failover: kill a gateway, phases until the new owner serves\n");
    let timers_list = ctx.sizes.failover_timers.clone();
    let sizes = ctx.sizes.failover_sizes.clone();
    for timers in &timers_list {
        for &n in &sizes {
            let group_size = if n <= 16 { 2 } else { 16 };
            let setup =
                Setup::start(&ctx.gwmon, &ctx.config.monitor_args, timers, n, group_size).await?;
            let watcher = Watcher::start(
                setup.cluster.admin.clone(),
                setup.cluster.addrs.values().cloned().collect(),
            );
            let state = watcher.ready(Duration::from_secs(10)).await?;
            if state == WatchState::Unimplemented {
                println!(
                    "(the monitors do not serve WatchEvents: only the phases seen by the \
                     gateways are reported)\n"
                );
            }
            let k = ctx.sizes.trials;
            let (phases, failed) = trials(
                &setup.fleet,
                &watcher,
                k,
                Duration::from_millis(ctx.config.spacing_ms),
                ctx.config.seed,
            )
            .await?;
            let grace = phases.first().map_or(f64::NAN, |(g, _)| *g);
            report(timers, n, group_size, k, grace, &phases, failed);
            let p: Vec<Phases> = phases.iter().map(|(_, p)| *p).collect();
            if timers.name == "default"
                && (ctx.figures.failover.is_none() || n == ctx.sizes.lease_gateways)
            {
                let serve = Summary::of(&p.iter().map(|x| x.kill_to_serving).collect::<Vec<_>>());
                let beyond = Summary::of(&p.iter().map(|x| x.beyond_grace).collect::<Vec<_>>());
                if let (Some(s), Some(b)) = (serve, beyond) {
                    ctx.figures.failover = Some(FailoverFigures {
                        gateways: n,
                        kill_to_serving_p50: s.p50,
                        kill_to_serving_p99: s.p99,
                        beyond_grace_p50: b.p50,
                        grace_ms: grace,
                    });
                }
            }
            drop(watcher);
            let mut setup = setup;
            setup.cluster.check_alive()?;
            setup.stop().await;
        }
    }
    println!(
        "What bounds it: the grace (counted from the victim's last beacon; a kill lands at a \
         random point between two beacons), then the leader's liveness tick (detection beyond \
         grace), one Raft commit of the timeout (it issues the fence and publishes the new \
         owner optimized, fence pending), the fence (`--fencer none`: at once, one commit), \
         the slice to the new owner, and the new owner's next beacon echoing the fence epoch \
         (up to one beacon interval) and its commit (promotion). Committed times are the \
         proposing leader's clock in milliseconds; with 20 trials the p99 (nearest rank) is the maximum."
    );
    Ok(())
}

pub(crate) fn report(
    timers: &Timers,
    n: usize,
    group_size: usize,
    k: usize,
    grace: f64,
    phases: &[(f64, Phases)],
    failed: usize,
) {
    println!(
        "### {} timers, N = {n} ({} groups of {group_size}), {} of {k} trials complete, grace {}, beacons {} ms, liveness tick {} ms\n",
        timers.name,
        n.div_ceil(group_size),
        phases.len(),
        ms(grace),
        timers.beacon.as_millis(),
        timers.liveness_tick_ms,
    );
    let mut t = Table::new(&["phase", "median", "p99", "max"]);
    let rows: [(&str, PhaseOf); 7] = [
        (
            "detection beyond grace (last beacon + grace → failover committed)",
            |p| p.beyond_grace,
        ),
        ("fence issued → fence completed", |p| p.fence),
        ("fence completed → slice at the new owner", |p| p.delivery),
        ("slice at the new owner → promotion committed", |p| {
            p.promotion
        }),
        (
            "**kill → new owner may serve** (its slice: optimized, fence complete)",
            |p| p.kill_to_serving,
        ),
        ("last beacon → new owner may serve", |p| {
            p.beacon_to_serving
        }),
        ("kill → promotion committed", |p| p.kill_to_promoted),
    ];
    for (name, f) in rows {
        let v: Vec<f64> = phases.iter().map(|(_, p)| f(p)).collect();
        match Summary::of(&v) {
            Some(s) => t.row(vec![name.to_owned(), ms(s.p50), ms(s.p99), ms(s.max)]),
            None => t.row(vec![
                name.to_owned(),
                "n/a".into(),
                "n/a".into(),
                "n/a".into(),
            ]),
        }
    }
    println!("{t}");
    if failed > 0 {
        println!("{failed} trial(s) did not complete within the grace + 30 s.\n");
    }
}

/// Run `k` trials; each complete one's grace (ms) and phases, and the number that failed.
pub(crate) async fn trials(
    fleet: &Fleet,
    watcher: &Watcher,
    k: usize,
    spacing: Duration,
    seed: u64,
) -> Result<(Vec<(f64, Phases)>, usize)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let by_id: HashMap<String, usize> = fleet
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| (g.spec.id.clone(), i))
        .collect();
    let mut busy: HashMap<String, Instant> = HashMap::new();
    let mut in_flight: Vec<Trial> = Vec::new();
    let mut done = Vec::new();
    let mut failed = 0usize;
    let mut started = 0usize;
    let mut next_kill = Instant::now();
    let give_up = Instant::now()
        + Duration::from_secs(60)
        + (spacing + REDEPLOY_COOLDOWN + Duration::from_secs(10)) * k as u32;
    while done.len() + failed < k {
        let now = Instant::now();
        if now > give_up {
            failed += k - done.len() - failed;
            break;
        }
        if started < k && now >= next_kill {
            if let Some(t) = kill_one(fleet, &mut rng, &busy, &in_flight) {
                busy.insert(t.group.clone(), now + Duration::from_secs(3600));
                in_flight.push(t);
                started += 1;
                next_kill = now + spacing;
            }
        }
        let mut i = 0;
        while i < in_flight.len() {
            let t = &in_flight[i];
            let outcome = check(fleet, watcher, &by_id, t);
            let overdue = t.killed.at.elapsed()
                > Duration::from_secs_f64(t.grace_ms.max(0.0) / 1e3) + TRIAL_LIMIT;
            if outcome.is_none() && !overdue {
                i += 1;
                continue;
            }
            let t = in_flight.swap_remove(i);
            match outcome {
                Some(p) => done.push((t.grace_ms, p)),
                None => failed += 1,
            }
            finish(fleet, &mut busy, &t);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((done, failed))
}

/// After a trial: restart the victim if its group would run out of live gateways (the
/// group then rests, see `REDEPLOY_COOLDOWN`), else free the group at once.
fn finish(fleet: &Fleet, busy: &mut HashMap<String, Instant>, t: &Trial) {
    let alive = fleet
        .gateways
        .iter()
        .filter(|g| g.spec.key.group == t.group)
        .filter(|g| g.state().running)
        .count();
    if alive < 2 {
        fleet.start(t.victim);
        busy.insert(t.group.clone(), Instant::now() + REDEPLOY_COOLDOWN);
    } else {
        busy.remove(&t.group);
    }
}

fn kill_one(
    fleet: &Fleet,
    rng: &mut StdRng,
    busy: &HashMap<String, Instant>,
    in_flight: &[Trial],
) -> Option<Trial> {
    let now = Instant::now();
    let eligible: Vec<usize> = fleet
        .gateways
        .iter()
        .enumerate()
        .filter(|(_, g)| {
            busy.get(&g.spec.key.group)
                .is_none_or(|until| now >= *until)
        })
        .filter(|(_, g)| !in_flight.iter().any(|t| t.group == g.spec.key.group))
        .filter(|(_, g)| {
            let s = g.state();
            s.running
                && s.session_open
                && !s.starting
                && s.last_beacon.is_some()
                && s.serving == [g.spec.own_ana]
        })
        .map(|(i, _)| i)
        .collect();
    if eligible.is_empty() {
        return None;
    }
    let victim = eligible[rng.random_range(0..eligible.len())];
    let gw = &fleet.gateways[victim];
    let lease_ms = gw.state().lease_ms;
    let killed = Stamp::now();
    let last_beacon = fleet.kill(victim)?;
    Some(Trial {
        victim,
        group: gw.spec.key.group.clone(),
        ana: gw.spec.own_ana,
        killed,
        last_beacon,
        grace_ms: (lease_ms * 2) as f64,
    })
}

/// The trial's phases once every step has happened.
fn check(
    fleet: &Fleet,
    watcher: &Watcher,
    by_id: &HashMap<String, usize>,
    t: &Trial,
) -> Option<Phases> {
    let victim_id = &fleet.gateways[t.victim].spec.id;
    let after_kill =
        |e: &Event| e.group == t.group && e.at_ms as f64 >= t.killed.unix_ms.floor() - 1.0;
    let events = watcher.state() == WatchState::Running;
    let (to, started) = if events {
        let fs = watcher.find(|e| {
            after_kill(e) && matches!(&e.kind, Kind::FailoverStarted { ana, .. } if *ana == t.ana)
        })?;
        let Kind::FailoverStarted { to, .. } = &fs.kind else {
            return None;
        };
        (by_id.get(to).copied()?, Some(fs))
    } else {
        // Without events: the gateway of the group that received the victim's ANA group.
        let to = fleet.gateways.iter().position(|g| {
            g.spec.key.group == t.group
                && g.state()
                    .slices
                    .iter()
                    .any(|s| s.stamp.at > t.killed.at && s.serving.contains(&t.ana))
        })?;
        (to, None)
    };
    let slice = fleet.gateways[to]
        .state()
        .slices
        .iter()
        .find(|s| s.stamp.at > t.killed.at && s.serving.contains(&t.ana))
        .map(|s| s.stamp)?;
    let mut p = Phases {
        kill_to_serving: slice.at.duration_since(t.killed.at).as_secs_f64() * 1e3,
        beacon_to_serving: slice.unix_ms - t.last_beacon.unix_ms,
        beyond_grace: f64::NAN,
        fence: f64::NAN,
        delivery: f64::NAN,
        promotion: f64::NAN,
        kill_to_promoted: f64::NAN,
    };
    let Some(fs) = started else {
        return Some(p);
    };
    let Kind::FailoverStarted {
        to: to_id,
        fence_epoch,
        ..
    } = &fs.kind
    else {
        return None;
    };
    let fi = watcher.find(|e| {
        after_kill(e)
            && matches!(&e.kind, Kind::FenceIssued { gateway, .. } if gateway == victim_id)
    })?;
    let fc = watcher.find(|e| {
        after_kill(e)
            && matches!(&e.kind, Kind::FenceCompleted { gateway, fence_epoch: f } if gateway == victim_id && f == fence_epoch)
    })?;
    let pr = watcher.find(|e| {
        after_kill(e)
            && matches!(&e.kind, Kind::Promoted { ana, gateway } if *ana == t.ana && gateway == to_id)
    })?;
    p.beyond_grace = fs.at_ms as f64 - (t.last_beacon.unix_ms + t.grace_ms);
    p.fence = fc.at_ms as f64 - fi.at_ms as f64;
    p.delivery = slice.unix_ms - (fc.at_ms.max(fs.at_ms) as f64);
    p.promotion = pr.at_ms as f64 - slice.unix_ms;
    p.kill_to_promoted = pr.at_ms as f64 - t.killed.unix_ms;
    Some(p)
}
