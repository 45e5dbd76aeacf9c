//! etcd side by side, on the same machine in the same run: put latency against gwmon's
//! admin writes, a lease-based failover baseline against gwmon's failover, and sustained
//! lease keepalives against gwmon's beacons.
//!
//! The lease baseline is what a gateway-HA controller built on etcd would do: each gateway
//! holds a lease (TTL = gwmon's beacon grace, rounded up to whole seconds as etcd takes it)
//! kept alive at gwmon's beacon interval, with a key `/bench/alive/<i>` attached; a
//! watcher sees the key deleted when the lease expires and reassigns the gateway's ANA
//! group (`/bench/owner/<i>`) to a live gateway, which learns it through its own watch.
//! There is no fence: etcd leaves that to the application.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::Ctx;
use crate::error::{BenchError, Result};
use crate::etcd::{self, EtcdCluster};
use crate::etcdpb::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient,
    watch_request::RequestUnion, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest,
    WatchCreateRequest, WatchRequest,
};
use crate::etcdpb::mvccpb::event::EventType;
use crate::fleet::{FleetStats, Stamp, PER_CHANNEL};
use crate::procfs::{own_pid, CpuSample};
use crate::stats::{ms, rate, ratio, thousands, Summary, Table};

const SUSTAINED_SHARE: f64 = 0.97;
const SUSTAINED_P99_MS: f64 = 100.0;
const CONNECTIONS: usize = 8;

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("\n## etcd side by side\n");
    let Some(bin) = ctx.config.etcd_path() else {
        println!(
            "**Skipped:** etcd is not installed (no `etcd` on PATH and no --etcd-bin). \
             Install it with `bench/setup.sh` (Debian: `apt-get install -y etcd-server \
             etcd-client`, etcd 3.4.23 on bookworm)."
        );
        return Ok(());
    };
    let version = etcd::version(&bin);
    let mut cluster = match EtcdCluster::start(&bin).await {
        Ok(c) => c,
        Err(e) => {
            println!("**Skipped:** etcd ({}) did not start: {e}", bin.display());
            return Ok(());
        }
    };
    let leader = cluster.leader().await?;
    println!(
        "{version}, three members on loopback (temporary data directories, default \
         heartbeat 100 ms and election 1,000 ms, WAL fsync on), gRPC to the leader.\n"
    );

    let (seq, seq_rate) = puts_sequential(&cluster, leader, ctx.sizes.commit_sequential).await?;
    let (conc, conc_rate) = puts_concurrent(
        &cluster,
        leader,
        ctx.sizes.commit_concurrent,
        ctx.sizes.commit_clients,
    )
    .await?;
    let mut t = Table::new(&["etcd puts", "count", "p50", "p99", "max", "throughput"]);
    for (name, s, r) in [
        ("sequential, one client".to_owned(), &seq, seq_rate),
        (
            format!("{} concurrent clients", ctx.sizes.commit_clients),
            &conc,
            conc_rate,
        ),
    ] {
        t.row(vec![
            name,
            thousands(s.count as i64),
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            rate(r),
        ]);
    }
    println!("{t}");
    cluster.check_alive()?;

    let grace_ms = ctx.figures.failover.map_or(4000.0, |f| f.grace_ms);
    let ttl_s = ((grace_ms / 1000.0).ceil() as i64).max(1);
    let beacon = Duration::from_millis(500);
    let lease = lease_failover(
        &cluster,
        leader,
        ctx.sizes.lease_gateways,
        ctx.sizes.lease_trials,
        ttl_s,
        beacon,
        Duration::from_millis(ctx.config.spacing_ms),
        ctx.config.seed,
    )
    .await?;
    cluster.check_alive()?;
    let ka = keepalive_rate(ctx, &cluster, leader).await?;
    cluster.check_alive()?;
    cluster.stop().await;

    // Side by side.
    let f = &ctx.figures;
    let etcd_name = version.replace("Version: ", "");
    let mut cmp = Table::new(&["figure", "gwmon", &etcd_name, "ratio (>1: gwmon ahead)"]);
    let lat = |name: &str, ours: Option<f64>, theirs: f64, t: &mut Table| {
        t.row(vec![
            name.to_owned(),
            ours.map_or("not run".into(), ms),
            ms(theirs),
            ours.map_or("n/a".into(), |o| ratio(o, theirs)),
        ]);
    };
    lat(
        "write p50, sequential",
        f.commit.map(|c| c.seq_p50),
        seq.p50,
        &mut cmp,
    );
    lat(
        "write p99, sequential",
        f.commit.map(|c| c.seq_p99),
        seq.p99,
        &mut cmp,
    );
    lat(
        "write p50, 64 clients",
        f.commit.map(|c| c.conc_p50),
        conc.p50,
        &mut cmp,
    );
    lat(
        "write p99, 64 clients",
        f.commit.map(|c| c.conc_p99),
        conc.p99,
        &mut cmp,
    );
    cmp.row(vec![
        "write throughput, 64 clients".into(),
        f.commit.map_or("not run".into(), |c| rate(c.conc_rate)),
        rate(conc_rate),
        f.commit
            .map_or("n/a".into(), |c| ratio(conc_rate, c.conc_rate)),
    ]);
    if let Some(s) = Summary::of(&lease.kill_to_notified) {
        let label = format!(
            "failover, kill → new owner told, median ({} gateways, grace/TTL {} s, 500 ms beacons/keepalives)",
            ctx.sizes.lease_gateways, ttl_s
        );
        lat(
            &label,
            f.failover.map(|x| x.kill_to_serving_p50),
            s.p50,
            &mut cmp,
        );
        lat(
            "failover p99",
            f.failover.map(|x| x.kill_to_serving_p99),
            s.p99,
            &mut cmp,
        );
    }
    if let Some(s) = Summary::of(&lease.beyond_ttl) {
        lat(
            "detection beyond grace/TTL, median",
            f.failover.map(|x| x.beyond_grace_p50),
            s.p50,
            &mut cmp,
        );
    }
    if let Some((ka_rate, ka_cpu)) = ka {
        cmp.row(vec![
            "sustained beacons / keepalives per second".into(),
            f.beacons.map_or("not run".into(), |b| rate(b.0)),
            rate(ka_rate),
            f.beacons.map_or("n/a".into(), |b| ratio(ka_rate, b.0)),
        ]);
        cmp.row(vec![
            "leader CPU per 1,000 beacons / keepalives per second".into(),
            f.beacons.map_or("not run".into(), |b| {
                format!("{:.1}% of a core", b.1 * 100.0)
            }),
            format!("{:.1}% of a core", ka_cpu * 100.0),
            f.beacons.map_or("n/a".into(), |b| ratio(b.1, ka_cpu)),
        ]);
    }
    println!("### gwmon against etcd\n");
    println!("{cmp}");
    if f.failover
        .is_some_and(|x| x.gateways != ctx.sizes.lease_gateways)
    {
        println!(
            "(gwmon's failover figure is from N = {}, the lease baseline's from N = {}.)\n",
            f.failover.map_or(0, |x| x.gateways),
            ctx.sizes.lease_gateways
        );
    }
    println!(
        "Ratios are etcd / gwmon for times and CPU, gwmon / etcd for rates, so above 1 means \
         gwmon is ahead. gwmon's failover includes a fence and its confirmation and ends when \
         the new owner's slice says it may serve; etcd's ends when the new owner's watch \
         delivers its assignment, with no fence. Both count from the kill; the grace (gwmon) \
         and TTL (etcd) run from the last beacon or keepalive. What bounds etcd's: the lease \
         TTL, the leader's expiry check (every 500 ms), a Raft commit of the revoke, the \
         watch, and a commit of the reassignment. etcd renews a lease on the leader without \
         a Raft commit, as gwmon takes an unchanged beacon."
    );
    Ok(())
}

fn put_req(key: String, value: &str) -> PutRequest {
    PutRequest {
        key: key.into_bytes(),
        value: value.as_bytes().to_vec(),
        lease: 0,
    }
}

async fn puts_sequential(c: &EtcdCluster, leader: usize, n: usize) -> Result<(Summary, f64)> {
    let mut kv = KvClient::new(c.channel(leader)?);
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        kv.put(put_req(
            "/bench/gw/0/location".into(),
            if i % 2 == 0 { "rackA" } else { "rackB" },
        ))
        .await
        .map_err(|s| BenchError::rpc("etcd put", &s))?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let per_s = n as f64 / start.elapsed().as_secs_f64();
    Ok((
        Summary::of(&lat).ok_or_else(|| BenchError::failed("no etcd puts"))?,
        per_s,
    ))
}

async fn puts_concurrent(
    c: &EtcdCluster,
    leader: usize,
    total: usize,
    clients: usize,
) -> Result<(Summary, f64)> {
    let channels: Vec<Channel> = (0..CONNECTIONS)
        .map(|_| c.channel(leader))
        .collect::<Result<_>>()?;
    let per_client = total.div_ceil(clients.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut kv = KvClient::new(channels[i % CONNECTIONS].clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for j in 0..per_client {
                let t = Instant::now();
                kv.put(put_req(
                    format!("/bench/gw/{i}/location"),
                    if j % 2 == 0 { "rackB" } else { "rackA" },
                ))
                .await
                .map_err(|s| BenchError::rpc("etcd put", &s))?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, BenchError>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(
            t.await
                .map_err(|e| BenchError::failed(format!("etcd writer task failed: {e}")))??,
        );
    }
    let per_s = lat.len() as f64 / start.elapsed().as_secs_f64();
    Ok((
        Summary::of(&lat).ok_or_else(|| BenchError::failed("no etcd puts"))?,
        per_s,
    ))
}

/// Grant `n` leases of `ttl` seconds, 32 at a time; their ids and the TTL etcd granted.
async fn grant(channels: &[Channel], n: usize, ttl: i64) -> Result<Vec<(i64, i64)>> {
    let permits = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut lease = LeaseClient::new(channels[i % channels.len()].clone());
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _p = permits
                .acquire_owned()
                .await
                .map_err(|_| BenchError::failed("lease grants: semaphore closed"))?;
            let r = lease
                .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                .await
                .map_err(|s| BenchError::rpc("etcd lease grant", &s))?
                .into_inner();
            if !r.error.is_empty() {
                return Err(BenchError::failed(format!("etcd lease grant: {}", r.error)));
            }
            Ok((r.id, r.ttl))
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| BenchError::failed(format!("lease task failed: {e}")))??,
        );
    }
    Ok(out)
}

/// One gateway's keepalive stream: a request every interval; responses matched in order.
async fn keepalive(
    id: i64,
    channel: Channel,
    interval_us: Arc<AtomicU64>,
    stats: Arc<FleetStats>,
    last_sent: Arc<Mutex<Option<Stamp>>>,
    stop: CancellationToken,
) {
    let (tx, rx) = mpsc::channel(16);
    // etcd sends the response headers with its first answer, so the first keepalive must
    // be on its way before the call can return.
    let mut sent: VecDeque<Instant> = VecDeque::new();
    *last_sent.lock().unwrap_or_else(PoisonError::into_inner) = Some(Stamp::now());
    if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
        return;
    }
    sent.push_back(Instant::now());
    stats.beacons_sent.fetch_add(1, Ordering::Relaxed);
    let mut client = LeaseClient::new(channel);
    let opened = tokio::select! {
        () = stop.cancelled() => return,
        r = client.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)) => r,
    };
    let Ok(resp) = opened else {
        stats.session_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut inbound = resp.into_inner();
    let interval = || Duration::from_micros(interval_us.load(Ordering::Relaxed).max(1000));
    let mut next = Instant::now() + interval().mul_f64(rand::rng().random_range(0.0..1.0));
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = sleep_until(next) => {
                *last_sent.lock().unwrap_or_else(PoisonError::into_inner) = Some(Stamp::now());
                if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                    return;
                }
                sent.push_back(Instant::now());
                if sent.len() > 1024 {
                    sent.pop_front();
                }
                stats.beacons_sent.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                next += interval();
                if next < now {
                    next = now;
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(r)) => {
                    if let Some(at) = sent.pop_front() {
                        stats.ack(at.elapsed());
                    }
                    if r.ttl <= 0 {
                        stats.session_errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                _ => {
                    stats.session_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
}

/// Open a watch on every key under `prefix`; events arrive on the returned receiver.
async fn watch_prefix(
    channel: Channel,
    prefix: &str,
    stop: CancellationToken,
) -> Result<mpsc::UnboundedReceiver<(Stamp, EventType, String, String)>> {
    let (req_tx, req_rx) = mpsc::channel(4);
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    req_tx
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: end,
                start_revision: 0,
            })),
        })
        .await
        .map_err(|_| BenchError::failed("etcd watch: request stream closed"))?;
    let mut client = WatchClient::new(channel);
    let mut inbound = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(req_rx))
        .await
        .map_err(|s| BenchError::rpc("etcd watch", &s))?
        .into_inner();
    // The first response confirms the watch exists.
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .map_err(|_| BenchError::timeout("etcd to create a watch", Duration::from_secs(10)))?
        .map_err(|s| BenchError::rpc("etcd watch", &s))?;
    if !first.is_some_and(|r| r.created) {
        return Err(BenchError::failed("etcd did not create the watch"));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _keep = req_tx;
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                m = inbound.message() => m,
            };
            let Ok(Some(resp)) = msg else { return };
            let stamp = Stamp::now();
            for e in resp.events {
                let kind = EventType::try_from(e.r#type).unwrap_or(EventType::Put);
                let (key, value) =
                    e.kv.map(|kv| {
                        (
                            String::from_utf8_lossy(&kv.key).into_owned(),
                            String::from_utf8_lossy(&kv.value).into_owned(),
                        )
                    })
                    .unwrap_or_default();
                if tx.send((stamp, kind, key, value)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

#[derive(Default)]
struct LeaseResults {
    beyond_ttl: Vec<f64>,
    reassign: Vec<f64>,
    notify: Vec<f64>,
    kill_to_notified: Vec<f64>,
    failed: usize,
}

#[derive(Default)]
struct Seen {
    deleted: HashMap<usize, Stamp>,
    reassigned: HashMap<usize, Stamp>,
    notified: HashMap<usize, Stamp>,
}

#[allow(clippy::too_many_arguments)]
async fn lease_failover(
    c: &EtcdCluster,
    leader: usize,
    n: usize,
    trials: usize,
    ttl_s: i64,
    beacon: Duration,
    spacing: Duration,
    seed: u64,
) -> Result<LeaseResults> {
    let n = n.max(2);
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let channels: Vec<Channel> = (0..n.div_ceil(PER_CHANNEL))
        .map(|_| c.channel(leader))
        .collect::<Result<_>>()?;
    let leases = grant(&channels, n, ttl_s).await?;
    let granted_ttl = leases.first().map_or(ttl_s, |l| l.1);
    let mut kv = KvClient::new(c.channel(leader)?);
    for (i, (id, _)) in leases.iter().enumerate() {
        kv.put(PutRequest {
            key: format!("/bench/alive/{i}").into_bytes(),
            value: b"up".to_vec(),
            lease: *id,
        })
        .await
        .map_err(|s| BenchError::rpc("etcd put", &s))?;
        kv.put(put_req(format!("/bench/owner/{i}"), &format!("gw{i}")))
            .await
            .map_err(|s| BenchError::rpc("etcd put", &s))?;
    }
    let stats = Arc::new(FleetStats::default());
    let interval = Arc::new(AtomicU64::new(
        u64::try_from(beacon.as_micros()).unwrap_or(500_000),
    ));
    let mut gws = Vec::with_capacity(n);
    for (i, (id, _)) in leases.iter().enumerate() {
        let token = stop.child_token();
        let last = Arc::new(Mutex::new(None));
        tokio::spawn(keepalive(
            *id,
            channels[i / PER_CHANNEL].clone(),
            interval.clone(),
            stats.clone(),
            last.clone(),
            token.clone(),
        ));
        gws.push((token, last));
    }
    let alive: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(vec![true; n]));
    let seen: Arc<Mutex<Seen>> = Arc::new(Mutex::new(Seen::default()));

    // The controller: reassign a gateway's group when its alive key goes.
    let mut deletes = watch_prefix(c.channel(leader)?, "/bench/alive/", stop.clone()).await?;
    {
        let alive = alive.clone();
        let seen = seen.clone();
        let kv = KvClient::new(c.channel(leader)?);
        tokio::spawn(async move {
            while let Some((stamp, kind, key, _)) = deletes.recv().await {
                if kind != EventType::Delete {
                    continue;
                }
                let Some(i) = key.rsplit('/').next().and_then(|s| s.parse::<usize>().ok()) else {
                    continue;
                };
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .deleted
                    .insert(i, stamp);
                let target = {
                    let a = alive.lock().unwrap_or_else(PoisonError::into_inner);
                    (1..a.len()).map(|d| (i + d) % a.len()).find(|&j| a[j])
                };
                let Some(j) = target else { continue };
                let mut kv = kv.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    if kv
                        .put(put_req(format!("/bench/owner/{i}"), &format!("gw{j}")))
                        .await
                        .is_ok()
                    {
                        seen.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .reassigned
                            .insert(i, Stamp::now());
                    }
                });
            }
        });
    }
    // The new owners learn their assignment through a watch.
    let mut owners = watch_prefix(c.channel(leader)?, "/bench/owner/", stop.clone()).await?;
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some((stamp, kind, key, value)) = owners.recv().await {
                let Some(i) = key.rsplit('/').next().and_then(|s| s.parse::<usize>().ok()) else {
                    continue;
                };
                if kind == EventType::Put && value != format!("gw{i}") {
                    seen.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .notified
                        .insert(i, stamp);
                }
            }
        });
    }
    // Let every keepalive stream open and renew once.
    let warm = beacon * 3;
    tokio::time::sleep(warm).await;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = LeaseResults::default();
    let mut in_flight: Vec<(usize, Stamp, Stamp)> = Vec::new();
    let mut started = 0;
    let mut next_kill = Instant::now();
    let limit = Duration::from_secs(granted_ttl.max(1) as u64 + 30);
    while out.kill_to_notified.len() + out.failed < trials {
        let now = Instant::now();
        if started < trials && now >= next_kill {
            let candidates: Vec<usize> = {
                let a = alive.lock().unwrap_or_else(PoisonError::into_inner);
                (0..n).filter(|&i| a[i]).collect()
            };
            if candidates.len() > 1 {
                let i = candidates[rng.random_range(0..candidates.len())];
                alive.lock().unwrap_or_else(PoisonError::into_inner)[i] = false;
                let killed = Stamp::now();
                gws[i].0.cancel();
                let last = gws[i]
                    .1
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .unwrap_or(killed);
                in_flight.push((i, killed, last));
                started += 1;
                next_kill = now + spacing;
            }
        }
        {
            let s = seen.lock().unwrap_or_else(PoisonError::into_inner);
            in_flight.retain(|&(i, killed, last)| {
                if let (Some(d), Some(r), Some(no)) =
                    (s.deleted.get(&i), s.reassigned.get(&i), s.notified.get(&i))
                {
                    out.beyond_ttl
                        .push(d.unix_ms - (last.unix_ms + granted_ttl as f64 * 1000.0));
                    out.reassign.push(r.unix_ms - d.unix_ms);
                    out.notify.push(no.unix_ms - r.unix_ms);
                    out.kill_to_notified
                        .push(no.at.duration_since(killed.at).as_secs_f64() * 1e3);
                    return false;
                }
                if killed.at.elapsed() > limit {
                    out.failed += 1;
                    return false;
                }
                true
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "### etcd lease failover baseline: {n} gateways, {} trials, lease TTL {granted_ttl} s, keepalive every {} ms\n",
        out.kill_to_notified.len(),
        beacon.as_millis()
    );
    let mut t = Table::new(&["phase", "median", "p99", "max"]);
    for (name, v) in [
        (
            "expiry beyond TTL (last keepalive + TTL → delete seen by the watcher)",
            &out.beyond_ttl,
        ),
        ("delete seen → reassignment committed", &out.reassign),
        (
            "reassignment committed → new owner's watch delivers it",
            &out.notify,
        ),
        ("**kill → new owner told**", &out.kill_to_notified),
    ] {
        match Summary::of(v) {
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
    if out.failed > 0 {
        println!("{} trial(s) did not complete.\n", out.failed);
    }
    Ok(out)
}

/// Sustained keepalives: like the beacon scenario, the keepalive interval steps down until
/// the responses lag. The highest sustained rate and the leader's CPU per 1,000/s.
async fn keepalive_rate(ctx: &Ctx, c: &EtcdCluster, leader: usize) -> Result<Option<(f64, f64)>> {
    let n = ctx.sizes.keepalive_gateways;
    let intervals = ctx.sizes.keepalive_intervals_ms.clone();
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let channels: Vec<Channel> = (0..n.div_ceil(PER_CHANNEL))
        .map(|_| c.channel(leader))
        .collect::<Result<_>>()?;
    // Long leases: a lagging step must not expire them.
    let leases = grant(&channels, n, 600).await?;
    let stats = Arc::new(FleetStats::default());
    let first = intervals.first().copied().unwrap_or(500);
    let interval = Arc::new(AtomicU64::new(first * 1000));
    for (i, (id, _)) in leases.iter().enumerate() {
        tokio::spawn(keepalive(
            *id,
            channels[i / PER_CHANNEL].clone(),
            interval.clone(),
            stats.clone(),
            Arc::new(Mutex::new(None)),
            stop.child_token(),
        ));
    }
    let pid = c
        .pid(leader)
        .ok_or_else(|| BenchError::failed("the etcd leader's process id is unknown"))?;
    let mut t = Table::new(&[
        "interval",
        "offered",
        "answered",
        "p50",
        "p99",
        "leader CPU",
        "leader CPU per 1,000/s",
        "bench CPU",
        "sustained",
    ]);
    let mut best: Option<(f64, f64)> = None;
    for ms_step in intervals {
        let iv = Duration::from_millis(ms_step);
        interval.store(ms_step * 1000, Ordering::Relaxed);
        tokio::time::sleep(iv * 2 + Duration::from_secs(1)).await;
        stats.take_latencies();
        stats.record_latency(true);
        let a0 = stats.acks.load(Ordering::Relaxed);
        let l0 = CpuSample::take(pid, ctx.ticks)?;
        let b0 = CpuSample::take(own_pid(), ctx.ticks)?;
        tokio::time::sleep(ctx.sizes.beacon_window).await;
        let a1 = stats.acks.load(Ordering::Relaxed);
        let l1 = CpuSample::take(pid, ctx.ticks)?;
        let b1 = CpuSample::take(own_pid(), ctx.ticks)?;
        stats.record_latency(false);
        let secs = l1.at.duration_since(l0.at).as_secs_f64();
        let offered = n as f64 * 1000.0 / ms_step as f64;
        let answered = (a1 - a0) as f64 / secs;
        let lat: Vec<f64> = stats
            .take_latencies()
            .into_iter()
            .map(|us| f64::from(us) / 1e3)
            .collect();
        let s = Summary::of(&lat);
        let p99 = s.map_or(f64::INFINITY, |s| s.p99);
        let cores = l1.cores_since(&l0);
        let per = if answered > 0.0 {
            cores / (answered / 1000.0)
        } else {
            f64::NAN
        };
        let sustained = answered >= SUSTAINED_SHARE * offered && p99 < SUSTAINED_P99_MS;
        t.row(vec![
            format!("{ms_step} ms"),
            rate(offered),
            rate(answered),
            s.map_or("n/a".into(), |s| ms(s.p50)),
            s.map_or("n/a".into(), |s| ms(s.p99)),
            format!("{:.0}% of a core", cores * 100.0),
            format!("{:.1}% of a core", per * 100.0),
            format!("{:.0}%", b1.cores_since(&b0) * 100.0),
            if sustained {
                "yes".into()
            } else {
                "**no**".into()
            },
        ]);
        if !sustained {
            break;
        }
        if best.is_none_or(|(r, _)| answered > r) {
            best = Some((answered, per));
        }
    }
    println!(
        "### etcd lease keepalives: {n} leases over {} connections to the leader\n",
        channels.len()
    );
    println!("{t}");
    Ok(best)
}
