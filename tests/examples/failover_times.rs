//! Time from killing a gateway to the new owner's handler turning its ANA group optimized,
//! with three in-process monitors (real gRPC, real stores with fsync) and gateways running
//! the gwmon-client library.
//!
//! `cargo run --release -p gwmon-tests --example failover_times -- [TRIALS]` (default 10)

use std::time::Duration;

use gwmon_monitor::clock::{Clock, SystemClock};
use gwmon_monitor::map::damping;
use gwmon_tests::env::{ana, gw, key, Env, Timers};
use gwmon_tests::eventually;
use tokio::time::Instant;

async fn trials(name: &str, timers: Timers, n: usize) {
    let names = ["gw1", "gw2", "gw3"];
    let mut env = Env::start_timed(&names, timers, |c| {
        c.failback_prepare_ms = 200;
    })
    .await;
    for g in names {
        env.start_gateway(g, false).await;
    }
    env.settled().await;
    let mut times = Vec::new();
    for t in 0..n {
        let victim = names[t % names.len()];
        let group = (t % names.len()) as u32 + 1;
        // A gateway down twice within the damping half-life is damped for flapping and
        // gets no failback for a while: wait until one more down cannot damp the victim,
        // so that every trial measures a plain failover and ends with its failback.
        let leader = env.cluster.leader().await;
        eventually("the victim's flap penalty decayed", || {
            let penalty = env
                .cluster
                .map(leader)
                .group(&key())
                .and_then(|g| g.damping.get(&gw(victim)).copied())
                .map_or(0, |d| d.penalty_at(SystemClock.now()));
            std::future::ready(penalty + damping::PER_DOWN < damping::SUPPRESS)
        })
        .await;
        let killed = Instant::now();
        env.kill(victim);
        eventually("failover", || {
            let h = env.timeline.holders(ana(group));
            std::future::ready(h.len() == 1 && h[0] != gw(victim))
        })
        .await;
        let holder = env.timeline.holders(ana(group))[0].clone();
        let promoted = env
            .timeline
            .optimized_since(&holder, ana(group))
            .unwrap_or(killed);
        times.push(promoted.duration_since(killed));
        env.start_gateway(victim, false).await;
        env.settled().await;
    }
    env.timeline.assert_no_overlap();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| {name} | {} ms | {} ms beacons | {n} | {:.0} ms | {:.0} ms | {:.0} ms |",
        timers.grace_ms,
        timers.beacon.as_millis(),
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
    );
    env.shutdown().await;
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    println!("| timers | grace | beacon | trials | min | median | max |");
    println!("|---|---|---|---|---|---|---|");
    trials("aggressive", Timers::FAST, n).await;
    trials("default", Timers::DEFAULT, n).await;
}
