//! Admin write latency and throughput: `SetLocation` through the admin API to the leader,
//! each committed through Raft (leader fsync, one follower's fsync, loopback round trips),
//! one client in sequence and 64 clients at once.

use std::sync::Arc;
use std::time::Instant;

use gwmon_proto::v1::GroupKey;

use super::{layout, CommitFigures, Ctx};
use crate::admin::Admin;
use crate::cluster::Cluster;
use crate::config::Timers;
use crate::error::{BenchError, Result};
use crate::stats::{ms, rate, thousands, Summary, Table};

/// Connections the concurrent clients share (8 clients per HTTP/2 connection).
const CONNECTIONS: usize = 8;

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("\n## Commit: admin write latency and throughput\n");
    let timers = Timers::default_timers();
    let mut cluster = Cluster::start(&ctx.gwmon, &timers, &ctx.config.monitor_args).await?;
    cluster.wait_leader().await?;
    cluster.wait_features().await;
    let clients = ctx.sizes.commit_clients;
    let plan = layout(clients, 16);
    let creates: Vec<(GroupKey, String)> = plan
        .iter()
        .map(|(k, id, _)| (k.clone(), id.clone()))
        .collect();
    cluster.admin.create_gateways(&creates, 16).await?;

    let mut table = Table::new(&["writes", "count", "p50", "p99", "max", "throughput"]);
    let (seq, seq_rate) =
        sequential(&cluster.admin, &creates[0], ctx.sizes.commit_sequential).await?;
    row(&mut table, "sequential, one client", &seq, seq_rate);
    let (conc, conc_rate) = concurrent(&cluster, &creates, ctx.sizes.commit_concurrent).await?;
    row(
        &mut table,
        &format!("{clients} concurrent clients"),
        &conc,
        conc_rate,
    );
    cluster.check_alive()?;
    println!("{table}");
    println!(
        "Each write is `SetLocation` through the admin gRPC API to the leader, answered once \
         committed: the leader's fsync plus one round trip to a follower and its fsync \
         (loopback); concurrent writes share them through the leader's group commit (the \
         commands proposed while earlier ones commit go in as one log entry)."
    );
    ctx.figures.commit = Some(CommitFigures {
        seq_p50: seq.p50,
        seq_p99: seq.p99,
        conc_p50: conc.p50,
        conc_p99: conc.p99,
        seq_rate,
        conc_rate,
    });
    cluster.stop().await;
    Ok(())
}

fn row(table: &mut Table, name: &str, s: &Summary, per_s: f64) {
    table.row(vec![
        name.to_owned(),
        thousands(s.count as i64),
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        rate(per_s),
    ]);
}

async fn sequential(
    admin: &Admin,
    gw: &(GroupKey, String),
    count: usize,
) -> Result<(Summary, f64)> {
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        admin
            .set_location(&gw.0, &gw.1, if i % 2 == 0 { "rackA" } else { "rackB" })
            .await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let per_s = count as f64 / start.elapsed().as_secs_f64();
    let s = Summary::of(&lat).ok_or_else(|| BenchError::failed("no sequential writes"))?;
    Ok((s, per_s))
}

async fn concurrent(
    cluster: &Cluster,
    gateways: &[(GroupKey, String)],
    total: usize,
) -> Result<(Summary, f64)> {
    let addrs: Vec<String> = cluster.addrs.values().cloned().collect();
    let admins: Vec<Admin> = (0..CONNECTIONS)
        .map(|_| Admin::new(addrs.clone()))
        .collect();
    let per_client = total.div_ceil(gateways.len().max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, gw) in gateways.iter().enumerate() {
        let admin = admins[i % CONNECTIONS].clone();
        let gw = Arc::new(gw.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for j in 0..per_client {
                let t = Instant::now();
                admin
                    .set_location(&gw.0, &gw.1, if j % 2 == 0 { "rackB" } else { "rackA" })
                    .await?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, BenchError>(lat)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(
            t.await
                .map_err(|e| BenchError::failed(format!("writer task failed: {e}")))??,
        );
    }
    let per_s = lat.len() as f64 / start.elapsed().as_secs_f64();
    let s = Summary::of(&lat).ok_or_else(|| BenchError::failed("no concurrent writes"))?;
    Ok((s, per_s))
}
