//! Availability: how long each ANA group has no optimized path around the events an
//! operator lives through, measured from what the gateways' targets expose, not from the
//! map.
//!
//! Three monitors (real `gwmon` processes) and three gateways, each a real `gwmon-client`
//! session in this process over a target that records every state it is told to expose,
//! with the time. Killing a gateway aborts its session and takes its target down with it
//! (as when an SPDK gateway process dies); a restarted gateway is a new process (a new
//! incarnation). An ANA group is *dark* while no target exposes it optimized; two targets
//! exposing one group optimized at once would break gwmon's first promise, so the scenario
//! counts that too and fails if it ever happens. A *demotion* is a target taking an ANA
//! group away from itself; during a leader change none should happen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gwmon_client::{AnaHandler, AnaStates, ClientConfig, ClientError, Exit, HandlerError};
use gwmon_proto::domain::{self, AnaGroupId, Listener, Namespace, Nonce, Nqn, Subsystem};
use gwmon_proto::v1::GroupKey;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cluster::Cluster;
use crate::config::Timers;
use crate::error::{BenchError, Result};
use crate::stats::{ms, Summary, Table};

const GATEWAYS: [&str; 3] = ["gw1", "gw2", "gw3"];
/// After a change looks done, how long it must stay so before the window closes (a
/// group that goes dark again right after counts).
const SETTLE: Duration = Duration::from_millis(300);
/// How long any one step may take before the scenario gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(40);
/// How long after a leader change the window stays open: a gateway whose lease ran out
/// would have demoted by then.
const AFTER_LEADER_CHANGE: Duration = Duration::from_secs(3);

/// Every target's exposed ANA groups over time, and each group's dark and doubly served
/// time so far.
#[derive(Default)]
struct Book {
    exposed: BTreeMap<String, BTreeSet<u32>>,
    dark_since: BTreeMap<u32, Instant>,
    dark: BTreeMap<u32, Duration>,
    double_since: BTreeMap<u32, Instant>,
    double: BTreeMap<u32, Duration>,
    demotions: u64,
    /// Groups first exposed by a gateway that does not own them.
    borrowed: u64,
}

#[derive(Clone, Default)]
struct Recorder {
    book: Arc<Mutex<Book>>,
    groups: Arc<Vec<u32>>,
    owners: Arc<BTreeMap<u32, String>>,
}

/// Dark and doubly served time of every group up to a moment.
#[derive(Debug, Clone, Default)]
struct Totals {
    dark: BTreeMap<u32, Duration>,
    double: BTreeMap<u32, Duration>,
    demotions: u64,
}

impl Recorder {
    fn new(owners: BTreeMap<u32, String>) -> Recorder {
        let groups: Vec<u32> = owners.keys().copied().collect();
        let now = Instant::now();
        let mut book = Book::default();
        for g in &groups {
            book.dark_since.insert(*g, now);
        }
        Recorder {
            book: Arc::new(Mutex::new(book)),
            groups: Arc::new(groups),
            owners: Arc::new(owners),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `gateway`'s target now exposes exactly `groups` optimized.
    fn expose(&self, gateway: &str, groups: BTreeSet<u32>) {
        let now = Instant::now();
        let mut b = self.lock();
        let before = b.exposed.insert(gateway.to_owned(), groups.clone());
        let before = before.unwrap_or_default();
        b.demotions += before.difference(&groups).count() as u64;
        for g in groups.difference(&before) {
            if self.owners.get(g).is_some_and(|o| o != gateway) && b.borrowed < u64::MAX {
                b.borrowed += 1;
            }
        }
        for g in self.groups.iter() {
            let holders = b.exposed.values().filter(|s| s.contains(g)).count();
            match (holders, b.dark_since.get(g).copied()) {
                (0, None) => {
                    b.dark_since.insert(*g, now);
                }
                (n, Some(since)) if n > 0 => {
                    b.dark_since.remove(g);
                    *b.dark.entry(*g).or_default() += now - since;
                }
                _ => {}
            }
            match (holders, b.double_since.get(g).copied()) {
                (n, None) if n > 1 => {
                    b.double_since.insert(*g, now);
                }
                (n, Some(since)) if n < 2 => {
                    b.double_since.remove(g);
                    *b.double.entry(*g).or_default() += now - since;
                }
                _ => {}
            }
        }
    }

    fn totals(&self) -> Totals {
        let now = Instant::now();
        let b = self.lock();
        let sum = |done: &BTreeMap<u32, Duration>, open: &BTreeMap<u32, Instant>| {
            self.groups
                .iter()
                .map(|g| {
                    let d = done.get(g).copied().unwrap_or_default()
                        + open.get(g).map_or(Duration::ZERO, |s| now - *s);
                    (*g, d)
                })
                .collect()
        };
        Totals {
            dark: sum(&b.dark, &b.dark_since),
            double: sum(&b.double, &b.double_since),
            demotions: b.demotions,
        }
    }

    /// The gateways exposing `g` optimized now.
    fn servers(&self, g: u32) -> Vec<String> {
        self.lock()
            .exposed
            .iter()
            .filter(|(_, s)| s.contains(&g))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every group exposed by exactly its owner.
    fn at_home(&self) -> bool {
        self.owners
            .iter()
            .all(|(g, owner)| self.servers(*g) == [owner.clone()])
    }
}

impl Totals {
    /// What happened between `self` (earlier) and `later`.
    fn since(&self, later: &Totals) -> Totals {
        let diff = |a: &BTreeMap<u32, Duration>, b: &BTreeMap<u32, Duration>| {
            b.iter()
                .map(|(g, d)| (*g, d.saturating_sub(a.get(g).copied().unwrap_or_default())))
                .collect()
        };
        Totals {
            dark: diff(&self.dark, &later.dark),
            double: diff(&self.double, &later.double),
            demotions: later.demotions - self.demotions,
        }
    }

    fn dark_ms(&self, g: u32) -> f64 {
        ms_of(self.dark.get(&g).copied().unwrap_or_default())
    }

    fn worst_dark_ms(&self) -> f64 {
        self.dark.values().map(|d| ms_of(*d)).fold(0.0, f64::max)
    }

    fn double_ms(&self) -> f64 {
        self.double.values().map(|d| ms_of(*d)).sum()
    }
}

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A target that serves every ANA group's namespaces of the group and records what it is
/// told to expose.
struct RecordingTarget {
    name: String,
    subsystems: Vec<Subsystem>,
    recorder: Recorder,
}

impl AnaHandler for RecordingTarget {
    async fn subsystems(&self) -> std::result::Result<Vec<Subsystem>, HandlerError> {
        Ok(self.subsystems.clone())
    }

    async fn apply(&self, states: &AnaStates) -> std::result::Result<(), HandlerError> {
        let groups = states.optimized().map(|e| e.ana_group.get()).collect();
        self.recorder.expose(&self.name, groups);
        Ok(())
    }

    async fn shutdown(&self, _reason: &str) {
        self.recorder.expose(&self.name, BTreeSet::new());
    }
}

/// One gateway process: its session task.
struct Gateway {
    task: JoinHandle<std::result::Result<Exit, ClientError>>,
    stop: CancellationToken,
}

/// The cluster, the gateways and the book of what their targets expose.
struct Bench {
    cluster: Cluster,
    key: GroupKey,
    timers: Timers,
    recorder: Recorder,
    gateways: BTreeMap<String, Gateway>,
    /// Each gateway's own ANA group.
    own: BTreeMap<String, u32>,
}

impl Bench {
    fn subsystems(&self, name: &str, index: usize) -> Result<Vec<Subsystem>> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            BenchError::failed(format!("availability: invalid {what}: {e}"))
        };
        let nqn: Nqn = "nqn.2016-06.io.spdk:bench"
            .parse()
            .map_err(|e| bad("nqn", &e))?;
        let mut namespaces = Vec::new();
        for (i, g) in self.own.values().enumerate() {
            let nonce: Nonce = format!("{name}-ns{}", i + 1)
                .parse()
                .map_err(|e| bad("nonce", &e))?;
            namespaces.push(Namespace {
                nsid: u32::try_from(i + 1).unwrap_or(1),
                ana_group: AnaGroupId::new(*g).map_err(|e| bad("ANA group", &e))?,
                nonce: Some(nonce),
            });
        }
        let port = 4420 + u16::try_from(index).unwrap_or(0);
        Ok(vec![Subsystem {
            nqn,
            listeners: vec![Listener {
                address: std::net::IpAddr::from([127, 0, 0, 1]),
                port,
            }],
            namespaces,
        }])
    }

    /// Start `name` as a new process.
    fn start(&mut self, name: &str) -> Result<()> {
        let index = GATEWAYS.iter().position(|g| *g == name).unwrap_or(0);
        let target = RecordingTarget {
            name: name.to_owned(),
            subsystems: self.subsystems(name, index)?,
            recorder: self.recorder.clone(),
        };
        let key = domain::GroupKey::new(
            self.key
                .pool
                .parse()
                .map_err(|e| BenchError::failed(format!("availability: pool: {e}")))?,
            self.key
                .group
                .parse()
                .map_err(|e| BenchError::failed(format!("availability: group: {e}")))?,
        );
        let gateway = name
            .parse()
            .map_err(|e| BenchError::failed(format!("availability: gateway id: {e}")))?;
        let config = ClientConfig::builder(gateway, key)
            .monitors(self.cluster.addrs.values().cloned())
            .beacon_interval(self.timers.beacon)
            .build()
            .map_err(|e| BenchError::failed(format!("availability: client: {e}")))?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(gwmon_client::run(config, Arc::new(target), stop.clone()));
        self.gateways
            .insert(name.to_owned(), Gateway { task, stop });
        Ok(())
    }

    /// `kill -9` of the gateway process: the session ends mid-flight and its target goes
    /// down with it.
    async fn kill(&mut self, name: &str) {
        if let Some(g) = self.gateways.remove(name) {
            g.task.abort();
            let _ = g.task.await;
        }
        self.recorder.expose(name, BTreeSet::new());
    }

    async fn stop_all(&mut self) {
        let names: Vec<String> = self.gateways.keys().cloned().collect();
        for name in names {
            if let Some(g) = self.gateways.remove(&name) {
                g.stop.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), g.task).await;
            }
        }
    }

    /// Wait until `cond` has held for [`SETTLE`]; the totals at the start of that stretch.
    async fn until(&self, what: &str, cond: impl Fn(&Bench) -> bool) -> Result<Instant> {
        let end = Instant::now() + STEP_LIMIT;
        let mut since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if cond(self) {
                let s = *since.get_or_insert(now);
                if now - s >= SETTLE {
                    return Ok(s);
                }
            } else {
                since = None;
            }
            if now >= end {
                return Err(BenchError::timeout(
                    format!(
                        "availability: {what} (logs in {})",
                        self.cluster.dir().display()
                    ),
                    STEP_LIMIT,
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn served_only_by(&self, g: u32, by: &str) -> bool {
        self.recorder.servers(g) == [by.to_owned()]
    }

    fn served_elsewhere(&self, g: u32, not: &str) -> bool {
        let s = self.recorder.servers(g);
        s.len() == 1 && s[0] != not
    }

    async fn home(&self) -> Result<Instant> {
        self.until("every ANA group back on its owner", |b| {
            b.recorder.at_home()
        })
        .await
    }

    /// The leader's id, waiting through an election.
    async fn leader(&mut self) -> Result<u64> {
        Ok(self.cluster.wait_leader().await?.0)
    }

    /// Wait until a monitor other than `old` leads.
    async fn new_leader(&self, old: u64) -> Result<u64> {
        let end = Instant::now() + STEP_LIMIT;
        loop {
            if let Ok((id, _)) = self.cluster.leader().await {
                if id != old {
                    return Ok(id);
                }
            }
            if Instant::now() >= end {
                return Err(BenchError::timeout(
                    "availability: a new leader",
                    STEP_LIMIT,
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until monitor `id` answers, knows a leader again, and has caught up with the
    /// leader's log, as an operator restarting monitors one by one waits for each (a
    /// monitor still replaying cannot win or grant a vote, which made the next election
    /// take three seconds).
    async fn rejoined(&self, id: u64) -> Result<()> {
        let end = Instant::now() + STEP_LIMIT;
        let addr = self.cluster.addrs.get(&id).cloned().unwrap_or_default();
        loop {
            if let Ok(s) = self.cluster.admin.cluster_status(&addr).await {
                let leader = self.cluster.addrs.get(&s.leader_id).cloned();
                let caught_up = match leader {
                    Some(l) => self
                        .cluster
                        .admin
                        .cluster_status(&l)
                        .await
                        .is_ok_and(|ls| ls.members.iter().all(|m| m.lag == Some(0))),
                    None => false,
                };
                if caught_up {
                    return Ok(());
                }
            }
            if Instant::now() >= end {
                return Err(BenchError::timeout(
                    format!("availability: monitor {id} back in the cluster"),
                    STEP_LIMIT,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The gateway the leader's map has waiting for its fence on ANA group `g`.
    async fn waiting_for_fence(&self, g: u32) -> Result<Option<String>> {
        let view = self.cluster.admin.show_group(&self.key).await?;
        Ok(view.gateways.iter().find_map(|gw| {
            gw.ana_states
                .iter()
                .any(|s| s.ana_group == g && s.state == "WAIT_BLOCKLIST_CMPL")
                .then(|| gw.gateway_id.clone())
        }))
    }
}

/// What one kind of event measured over its trials.
#[derive(Default)]
struct Measured {
    dark_ms: Vec<f64>,
    demotions: u64,
    demoting_trials: usize,
    double_ms: f64,
}

impl Measured {
    fn add(&mut self, dark_ms: f64, window: &Totals) {
        self.dark_ms.push(dark_ms);
        self.demotions += window.demotions;
        if window.demotions > 0 {
            self.demoting_trials += 1;
        }
        self.double_ms += window.double_ms();
    }
}

pub async fn run(ctx: &mut Ctx) -> Result<()> {
    println!("\n## Availability: how long ANA groups have no optimized path\n");
    let timers = Timers::default_timers();
    let trials = ctx.sizes.availability_trials;
    let mut cluster = Cluster::start(&ctx.gwmon, &timers, &ctx.config.monitor_args).await?;
    cluster.wait_leader().await?;
    let key = GroupKey {
        pool: "bench".to_owned(),
        group: "avail".to_owned(),
    };
    let mut own = BTreeMap::new();
    for name in GATEWAYS {
        own.insert(
            name.to_owned(),
            cluster.admin.create_gateway(&key, name).await?,
        );
    }
    let owners: BTreeMap<u32, String> = own.iter().map(|(n, g)| (*g, n.clone())).collect();
    let recorder = Recorder::new(owners);
    let mut b = Bench {
        cluster,
        key,
        timers: timers.clone(),
        recorder,
        gateways: BTreeMap::new(),
        own,
    };
    let result = measure(&mut b, ctx, trials).await;
    b.stop_all().await;
    b.cluster.stop().await;
    result
}

async fn measure(b: &mut Bench, ctx: &Ctx, trials: usize) -> Result<()> {
    // Startup: the three gateways, created together, start together.
    let started = Instant::now();
    for name in GATEWAYS {
        b.start(name)?;
    }
    let home = b.home().await?;
    let startup_ms = ms_of(home - started);
    let borrowed = b.recorder.lock().borrowed;

    let (g1, g2, g3) = (b.own["gw1"], b.own["gw2"], b.own["gw3"]);
    let mut rows: BTreeMap<&str, Measured> = BTreeMap::new();
    let election_max = Duration::from_millis(b.timers.election_max_ms);
    for _ in 0..trials {
        // Planned: disable, and the failback when it is enabled again.
        let before = b.recorder.totals();
        b.cluster.admin.set_enabled(&b.key, "gw1", false).await?;
        b.until("group 1 on another gateway", |b| {
            b.served_elsewhere(g1, "gw1")
        })
        .await?;
        let w = before.since(&b.recorder.totals());
        rows.entry("disable").or_default().add(w.dark_ms(g1), &w);

        let before = b.recorder.totals();
        b.cluster.admin.set_enabled(&b.key, "gw1", true).await?;
        b.until("group 1 back on gw1", |b| b.served_only_by(g1, "gw1"))
            .await?;
        let w = before.since(&b.recorder.totals());
        rows.entry("failback (enable)")
            .or_default()
            .add(w.dark_ms(g1), &w);

        // Planned: delete, then the same gateway created again. Its process serves nothing
        // meanwhile and rejoins once created, with no restart.
        let before = b.recorder.totals();
        b.cluster.admin.delete_gateway(&b.key, "gw2").await?;
        b.until("group 2 on another gateway", |b| {
            b.served_elsewhere(g2, "gw2")
        })
        .await?;
        let w = before.since(&b.recorder.totals());
        rows.entry("delete").or_default().add(w.dark_ms(g2), &w);
        let before = b.recorder.totals();
        b.cluster.admin.create_gateway(&b.key, "gw2").await?;
        b.until("group 2 back on gw2", |b| b.served_only_by(g2, "gw2"))
            .await?;
        let w = before.since(&b.recorder.totals());
        rows.entry("failback (re-created)")
            .or_default()
            .add(w.dark_ms(g2), &w);
        b.home().await?;

        // The leader killed.
        let old = b.leader().await?;
        let before = b.recorder.totals();
        b.cluster.kill(old).await?;
        b.new_leader(old).await?;
        tokio::time::sleep(AFTER_LEADER_CHANGE).await;
        let w = before.since(&b.recorder.totals());
        rows.entry("leader kill -9")
            .or_default()
            .add(w.worst_dark_ms(), &w);
        b.cluster.restart(old)?;
        b.rejoined(old).await?;
        b.home().await?;

        // The leader paused for twice the longest election timeout.
        let old = b.leader().await?;
        let before = b.recorder.totals();
        b.cluster.signal(old, "STOP")?;
        tokio::time::sleep(election_max * 2).await;
        b.cluster.signal(old, "CONT")?;
        tokio::time::sleep(AFTER_LEADER_CHANGE).await;
        let w = before.since(&b.recorder.totals());
        rows.entry("leader SIGSTOP 2 x election timeout")
            .or_default()
            .add(w.worst_dark_ms(), &w);
        b.rejoined(old).await?;
        b.home().await?;

        // A failover target deleted while it waits for the failed gateway's fence.
        let before = b.recorder.totals();
        b.kill("gw1").await;
        let target = loop {
            if let Some(t) = b.waiting_for_fence(g1).await? {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        b.cluster.admin.delete_gateway(&b.key, &target).await?;
        b.until("group 1 on the remaining gateway", |b| {
            let s = b.recorder.servers(g1);
            s.len() == 1 && s[0] != target && s[0] != "gw1"
        })
        .await?;
        let w = before.since(&b.recorder.totals());
        rows.entry("failover target deleted while it waits for the fence")
            .or_default()
            .add(w.dark_ms(g1), &w);
        b.cluster.admin.create_gateway(&b.key, &target).await?;
        b.start("gw1")?;
        b.home().await?;
    }

    // One gateway killed and restarted every 3 s.
    let flap_secs = ctx.sizes.flap_secs;
    let mut flap: Vec<(f64, f64)> = Vec::new();
    for i in 0..ctx.sizes.flap_trials {
        if i > 0 {
            // Damping ends about a minute after the last down; then gw3 has its group.
            wait_home_long(b).await?;
        }
        let before = b.recorder.totals();
        let start = Instant::now();
        let end = start + Duration::from_secs(flap_secs);
        while Instant::now() < end {
            b.kill("gw3").await;
            b.start("gw3")?;
            tokio::time::sleep(Duration::from_secs(3).min(end - Instant::now())).await;
        }
        let w = before.since(&b.recorder.totals());
        let period = ms_of(start.elapsed());
        let served = |g: u32| 100.0 * (1.0 - w.dark_ms(g) / period);
        flap.push((served(g3), served(g1).min(served(g2))));
        if w.double_ms() > 0.0 {
            return Err(BenchError::failed(format!(
                "availability: two targets exposed one ANA group optimized for {:.0} ms while a gateway flapped",
                w.double_ms()
            )));
        }
    }

    let mut table = Table::new(&[
        "event",
        "trials",
        "dark: median",
        "dark: max",
        "demotions",
        "trials with a demotion",
        "two optimized",
    ]);
    for (event, m) in &rows {
        let s = Summary::of(&m.dark_ms);
        table.row(vec![
            (*event).to_owned(),
            m.dark_ms.len().to_string(),
            s.map_or_else(|| "-".into(), |s| ms(s.p50)),
            s.map_or_else(|| "-".into(), |s| ms(s.max)),
            m.demotions.to_string(),
            m.demoting_trials.to_string(),
            format!("{:.0} ms", m.double_ms),
        ]);
    }
    println!(
        "Three monitors (default timers: heartbeat {} ms, election {}-{} ms, grace 4 s) and \
         three gwmon-client gateways (beacon {} ms), one ANA group each. *Dark*: the time the \
         event's ANA group (for a leader change: the worst of the three) had no target \
         exposing it optimized, from the event to {} ms after it settled. *Demotions*: ANA \
         groups a target stopped exposing, over all trials (a planned move withdraws its group \
         once per trial, a killed gateway all it had; a leader change should withdraw \
         nothing). *Two optimized*: time two targets exposed one group optimized at once.\n",
        b.timers.heartbeat_ms,
        b.timers.election_min_ms,
        b.timers.election_max_ms,
        b.timers.beacon.as_millis(),
        SETTLE.as_millis()
    );
    print!("{table}");
    println!(
        "\nStartup: three gateways created together and started together: every ANA group on \
         its owner {} after the start; {} group(s) went to a non-owner first (the \
         take-all-then-hand-back dance).\n",
        ms(startup_ms),
        borrowed
    );
    let mut table = Table::new(&[
        "gateway killed and restarted every 3 s, for",
        "its ANA group served",
        "other groups served (worst)",
    ]);
    for (own_served, others) in &flap {
        table.row(vec![
            format!("{flap_secs} s"),
            format!("{own_served:.1} %"),
            format!("{others:.1} %"),
        ]);
    }
    print!("{table}");
    let double: f64 = rows.values().map(|m| m.double_ms).sum();
    if double > 0.0 {
        return Err(BenchError::failed(format!(
            "availability: two targets exposed one ANA group optimized for {double:.0} ms in all"
        )));
    }
    Ok(())
}

/// Wait up to the longest damping for every group to be back on its owner.
async fn wait_home_long(b: &Bench) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(90);
    while Instant::now() < end {
        if b.recorder.at_home() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BenchError::timeout(
        "availability: every group back on its owner after a flapping gateway's damping",
        Duration::from_secs(90),
    ))
}
