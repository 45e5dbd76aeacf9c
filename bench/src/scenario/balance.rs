//! Namespace balancing: how long the monitors take to spread a group's namespaces over its
//! ANA groups, and to empty a deleted gateway's ANA group, and how long each namespace that
//! moved had no optimized path, measured from what the gateways' targets expose.
//!
//! Three monitors (real `gwmon` processes) and four gateways, each a real `gwmon-client`
//! session in this process over a target that keeps its namespaces' ANA groups and its
//! ANA states, and records every change with the time. Ceph's figure is the reference: its
//! gateways rebalance one ANA group a minute and take minutes for 174 namespaces. A
//! namespace served by two targets at once would break gwmon's first promise: the scenario
//! counts every such instant and fails if there is one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gwmon_client::{AnaHandler, AnaStates, ClientConfig, HandlerError};
use gwmon_proto::domain::{
    self, AnaAccess, AnaGroupId, Listener, Namespace, Nonce, Nqn, Subsystem,
};
use gwmon_proto::v1::GroupKey;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cluster::Cluster;
use crate::config::Timers;
use crate::error::{BenchError, Result};
use crate::stats::{ms, Summary, Table};

const GATEWAYS: [&str; 4] = ["gw1", "gw2", "gw3", "gw4"];
/// The namespaces of Ceph's figure.
const NAMESPACES: u32 = 174;
/// How long one phase may take before the scenario gives up on it.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

/// One target: where each namespace is, and which ANA groups it exposes optimized.
#[derive(Default, Clone)]
struct Target {
    placed: BTreeMap<u32, u32>,
    optimized: BTreeSet<u32>,
}

/// Every target, and per namespace the time it has had no server so far.
#[derive(Default)]
struct Book {
    targets: BTreeMap<String, Target>,
    dark_since: BTreeMap<u32, Instant>,
    /// Completed stretches without a server, per namespace (ms).
    dark: BTreeMap<u32, Vec<f64>>,
    /// Changes after which a namespace had two servers.
    doubled: u64,
    /// Namespaces some target moved to another ANA group.
    moved: BTreeSet<u32>,
}

impl Book {
    fn servers(&self, nsid: u32) -> usize {
        self.targets
            .values()
            .filter(|t| t.placed.get(&nsid).is_some_and(|g| t.optimized.contains(g)))
            .count()
    }

    fn update(&mut self, now: Instant) {
        for nsid in 1..=NAMESPACES {
            let n = self.servers(nsid);
            if n > 1 {
                self.doubled += 1;
            }
            match (n, self.dark_since.get(&nsid).copied()) {
                (0, None) => {
                    self.dark_since.insert(nsid, now);
                }
                (n, Some(since)) if n > 0 => {
                    self.dark_since.remove(&nsid);
                    let d = (now - since).as_secs_f64() * 1e3;
                    self.dark.entry(nsid).or_default().push(d);
                }
                _ => {}
            }
        }
    }

    /// Namespaces per ANA group, if the targets of `gateways` agree on where each one is.
    fn agreed_counts(&self, gateways: &[&str]) -> Option<BTreeMap<u32, usize>> {
        let mut targets = gateways.iter().filter_map(|g| self.targets.get(*g));
        let first = targets.next()?;
        if targets.any(|t| t.placed != first.placed) {
            return None;
        }
        let mut counts = BTreeMap::new();
        for g in first.placed.values() {
            *counts.entry(*g).or_default() += 1;
        }
        Some(counts)
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Book>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A target that moves namespaces where the monitors place them and exposes the states it
/// is told, all in one step.
struct PlacingTarget {
    name: String,
    nqn: Nqn,
    port: u16,
    book: Shared,
}

impl AnaHandler for PlacingTarget {
    async fn subsystems(&self) -> std::result::Result<Vec<Subsystem>, HandlerError> {
        let book = self.book.lock();
        let placed = book
            .targets
            .get(&self.name)
            .map(|t| t.placed.clone())
            .unwrap_or_default();
        let mut namespaces = Vec::with_capacity(placed.len());
        for (nsid, g) in placed {
            namespaces.push(Namespace {
                nsid,
                ana_group: AnaGroupId::new(g).map_err(|e| invalid("ANA group", &e))?,
                nonce: Some(
                    format!("{}-ns{nsid}", self.name)
                        .parse::<Nonce>()
                        .map_err(|e| invalid("nonce", &e))?,
                ),
            });
        }
        Ok(vec![Subsystem {
            nqn: self.nqn.clone(),
            listeners: vec![Listener {
                address: std::net::IpAddr::from([127, 0, 0, 1]),
                port: self.port,
            }],
            namespaces,
        }])
    }

    async fn apply(&self, states: &AnaStates) -> std::result::Result<(), HandlerError> {
        let now = Instant::now();
        let mut book = self.book.lock();
        let mut moved = Vec::new();
        if let Some(t) = book.targets.get_mut(&self.name) {
            for e in &states.entries {
                if e.access == AnaAccess::Optimized {
                    t.optimized.insert(e.ana_group.get());
                } else {
                    t.optimized.remove(&e.ana_group.get());
                }
            }
            for p in &states.placements {
                if let Some(g) = t.placed.get_mut(&p.nsid) {
                    if *g != p.ana_group.get() {
                        *g = p.ana_group.get();
                        moved.push(p.nsid);
                    }
                }
            }
        }
        book.moved.extend(moved);
        book.update(now);
        Ok(())
    }

    async fn shutdown(&self, _reason: &str) {
        let mut book = self.book.lock();
        if let Some(t) = book.targets.get_mut(&self.name) {
            t.optimized.clear();
        }
        book.update(Instant::now());
    }
}

fn invalid(what: &str, e: &dyn std::fmt::Display) -> HandlerError {
    HandlerError::Invalid {
        target: "bench",
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// What one phase measured.
struct Phase {
    what: &'static str,
    took: Duration,
    moved: usize,
    dark: Vec<f64>,
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("\n## Namespace balancing\n");
    let timers = Timers::default_timers();
    let mut cluster = Cluster::start(&ctx.gwmon, &timers, &ctx.config.monitor_args).await?;
    let result = measure(&mut cluster, &timers).await;
    cluster.stop().await;
    let phases = result?;
    let mut t = Table::new(&[
        "phase",
        "took",
        "namespaces moved",
        "dark per moved namespace p50",
        "p99",
        "max",
        "served by two",
    ]);
    for p in &phases {
        let s = Summary::of(&p.dark);
        let cell = |f: fn(&Summary) -> f64| s.as_ref().map_or("n/a".to_owned(), |s| ms(f(s)));
        t.row(vec![
            p.what.to_owned(),
            ms(p.took.as_secs_f64() * 1e3),
            p.moved.to_string(),
            cell(|s| s.p50),
            cell(|s| s.p99),
            cell(|s| s.max),
            "0".to_owned(),
        ]);
    }
    println!("{t}");
    println!(
        "{NAMESPACES} namespaces, all provisioned in gw1's ANA group; 4 gateways (real \
         gwmon-client sessions, default timers, balance_moves 32), 3 monitors. Dark: from \
         the namespace's last server letting go to the next one serving it, from the \
         targets' records."
    );
    Ok(())
}

async fn measure(cluster: &mut Cluster, timers: &Timers) -> Result<Vec<Phase>> {
    let (_, leader) = cluster.wait_leader().await?;
    // Balancing needs feature level 3, which the leader raises within seconds of taking
    // office.
    let end = Instant::now() + PHASE_LIMIT;
    while cluster.admin.cluster_status(&leader).await?.features < 3 {
        if Instant::now() > end {
            return Err(BenchError::failed(
                "balance: the cluster never reached feature level 3",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let key = GroupKey {
        pool: "bench".to_owned(),
        group: "balance".to_owned(),
    };
    let mut own = BTreeMap::new();
    for name in GATEWAYS {
        own.insert(name, cluster.admin.create_gateway(&key, name).await?);
    }
    let book = Shared::default();
    let home = own["gw1"];
    {
        let mut b = book.lock();
        for name in GATEWAYS {
            let t = Target {
                placed: (1..=NAMESPACES).map(|n| (n, home)).collect(),
                optimized: BTreeSet::new(),
            };
            b.targets.insert(name.to_owned(), t);
        }
    }
    let nqn: Nqn = "nqn.2016-06.io.spdk:balance"
        .parse()
        .map_err(|e| BenchError::failed(format!("balance: nqn: {e}")))?;
    let domain_key = domain::GroupKey::new(
        key.pool
            .parse()
            .map_err(|e| BenchError::failed(format!("balance: pool: {e}")))?,
        key.group
            .parse()
            .map_err(|e| BenchError::failed(format!("balance: group: {e}")))?,
    );
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let started = Instant::now();
    for (i, name) in GATEWAYS.iter().enumerate() {
        let target = PlacingTarget {
            name: (*name).to_owned(),
            nqn: nqn.clone(),
            port: 4420 + u16::try_from(i).unwrap_or(0),
            book: book.clone(),
        };
        let gateway = name
            .parse()
            .map_err(|e| BenchError::failed(format!("balance: gateway id: {e}")))?;
        let config = ClientConfig::builder(gateway, domain_key.clone())
            .monitors(cluster.addrs.values().cloned())
            .beacon_interval(timers.beacon)
            .build()
            .map_err(|e| BenchError::failed(format!("balance: client: {e}")))?;
        tasks.push(tokio::spawn(gwmon_client::run(
            config,
            Arc::new(target),
            stop.clone(),
        )));
    }
    let result = phases(cluster, &key, &book, &own, started).await;
    stop.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    result
}

async fn phases(
    cluster: &Cluster,
    key: &GroupKey,
    book: &Shared,
    own: &BTreeMap<&str, u32>,
    started: Instant,
) -> Result<Vec<Phase>> {
    let all: Vec<u32> = own.values().copied().collect();
    let spread = until(book, "spread over 4 ANA groups", |b| {
        within_one(b, &GATEWAYS, &all)
    })
    .await?;
    // Every namespace was dark until its first server came up: that is startup, not a move.
    let first = take(
        book,
        "spread 174 namespaces over 4 gateways",
        spread - started,
        1,
    );

    let deleted = own["gw4"];
    let rest: Vec<u32> = all.iter().copied().filter(|g| *g != deleted).collect();
    let t0 = Instant::now();
    cluster.admin.delete_gateway(key, "gw4").await?;
    // The deleted gateway serves nothing and is told nothing more: its target is out.
    let drained = until(book, "gw4's ANA group emptied", |b| {
        within_one(b, &GATEWAYS[..3], &rest)
    })
    .await?;
    let second = take(book, "empty a deleted gateway's ANA group", drained - t0, 0);
    Ok(vec![first, second])
}

/// The targets of `gateways` agree, the namespaces are in `groups` only, within one of
/// each other, and every namespace is served.
fn within_one(b: &Book, gateways: &[&str], groups: &[u32]) -> bool {
    let Some(counts) = b.agreed_counts(gateways) else {
        return false;
    };
    let per: Vec<usize> = groups
        .iter()
        .map(|g| counts.get(g).copied().unwrap_or(0))
        .collect();
    let placed: usize = per.iter().sum();
    let (lo, hi) = (per.iter().min(), per.iter().max());
    placed == NAMESPACES as usize
        && lo.zip(hi).is_some_and(|(lo, hi)| hi - lo <= 1)
        && (1..=NAMESPACES).all(|n| b.servers(n) == 1)
}

/// Wait until `cond` holds; when it first did. Fails at once if a namespace was ever served
/// by two targets.
async fn until(book: &Shared, what: &str, cond: impl Fn(&Book) -> bool) -> Result<Instant> {
    let end = Instant::now() + PHASE_LIMIT;
    loop {
        {
            let b = book.lock();
            if b.doubled > 0 {
                return Err(BenchError::failed(format!(
                    "balance: a namespace was served by two gateways at once ({} times) while \
                     waiting for: {what}",
                    b.doubled
                )));
            }
            if cond(&b) {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > end {
            return Err(BenchError::timeout(format!("balance: {what}"), PHASE_LIMIT));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The phase's figures, and a fresh count for the next one, leaving out each namespace's
/// first `skip` dark stretches.
fn take(book: &Shared, what: &'static str, took: Duration, skip: usize) -> Phase {
    let mut b = book.lock();
    let moved = std::mem::take(&mut b.moved).len();
    let dark: Vec<f64> = std::mem::take(&mut b.dark)
        .into_values()
        .flat_map(|v| v.into_iter().skip(skip))
        .collect();
    Phase {
        what,
        took,
        moved,
        dark,
    }
}
