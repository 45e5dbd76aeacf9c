//! Commit latency and disk use of a 3-monitor loopback cluster with real fsync.
//!
//! `cargo run --release -p gwmon-tests --example replication_figures -- [SEQUENTIAL] [BULK]`
//! (defaults 1000 and 100000). Writes go through the admin gRPC API to the leader, as
//! `nvme-gw` will send them; each toggles one gateway's location, so each is committed.

use std::path::Path;
use std::time::{Duration, Instant};

use gwmon_proto::v1::{self, admin_service_client::AdminServiceClient};
use gwmon_tests::Cluster;
use tonic::transport::Channel;

const GROUPS: usize = 64;
const PER_GROUP: usize = 16;
const CLIENTS: usize = 64;

fn key(g: usize) -> v1::GroupKey {
    v1::GroupKey {
        pool: "rbd".into(),
        group: format!("grp{g}"),
    }
}

fn toggle(i: usize) -> v1::SetLocationRequest {
    let gw = i % (GROUPS * PER_GROUP);
    v1::SetLocationRequest {
        key: Some(key(gw / PER_GROUP)),
        gateway_id: format!("gw{gw}"),
        location: if (i / (GROUPS * PER_GROUP)).is_multiple_of(2) {
            "east"
        } else {
            "west"
        }
        .into(),
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

async fn bulk(client: AdminServiceClient<Channel>, from: usize, count: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = from + c;
            while i < from + count {
                let t = Instant::now();
                if let Err(s) = client.set_location(toggle(i)).await {
                    eprintln!("write {i}: {s}");
                    return lat;
                }
                lat.push(t.elapsed());
                i += CLIENTS;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.extend(l);
        }
    }
    all
}

fn report(name: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    println!(
        "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.0}/s |",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        lat.len() as f64 / wall.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sequential: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let bulk_writes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);

    let c = Cluster::start(3, 0, |_| {}).await;
    let leader = c.leader().await;
    let mut client = c.admin(leader).await;
    for gw in 0..GROUPS * PER_GROUP {
        let req = v1::CreateGatewayRequest {
            key: Some(key(gw / PER_GROUP)),
            gateway_id: format!("gw{gw}"),
            location: String::new(),
        };
        if let Err(s) = client.create_gateway(req).await {
            eprintln!("create gw{gw}: {s}");
            return;
        }
    }
    println!(
        "3 monitors on loopback, real stores with fsync, {} gateways in {GROUPS} groups\n",
        GROUPS * PER_GROUP
    );
    println!("| writes | count | p50 | p99 | max | throughput |");
    println!("|---|---|---|---|---|---|");

    let mut lat = Vec::with_capacity(sequential);
    let t = Instant::now();
    for i in 0..sequential {
        let s = Instant::now();
        if let Err(e) = client.set_location(toggle(i)).await {
            eprintln!("write {i}: {e}");
            return;
        }
        lat.push(s.elapsed());
    }
    report("sequential, one client", lat, t.elapsed());

    let t = Instant::now();
    let lat = bulk(client.clone(), sequential, bulk_writes).await;
    report(&format!("{CLIENTS} concurrent clients"), lat, t.elapsed());

    println!();
    let m = c.monitor(leader).raft().metrics().borrow().clone();
    println!(
        "after {} writes: last log index {}, snapshot at {:?}, purged up to {:?}",
        sequential + bulk_writes + GROUPS * PER_GROUP,
        m.last_log_index.unwrap_or(0),
        m.snapshot.map(|s| s.index),
        m.purged.map(|p| p.index)
    );
    for id in 1..=3 {
        let size = dir_size(&c.dir.path().join(format!("m{id}")));
        println!(
            "monitor {id} data dir: {:.1} MiB",
            size as f64 / (1024.0 * 1024.0)
        );
    }
}
