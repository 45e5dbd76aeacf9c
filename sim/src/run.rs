//! One simulated run: the cluster, a fault schedule drawn from the seed, a safety phase
//! with faults, a liveness phase without, then the checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::agent;
use crate::check::{self, Impairment, Params, Violation};
use crate::logs;
use crate::nodes::{self, MetricsBoard, Timers};
use crate::world::{AdminOp, Event, FencerFaults, Fencing, Record, World};
use gwmon_proto::mutation::{self, Mutation};

/// What a run simulates.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub monitors: u64,
    pub gateways: u32,
    /// How long faults are injected.
    pub safety: Duration,
    /// How long the cluster then runs without faults before the final checks.
    pub liveness: Duration,
    /// How long after faults stop every ANA group must be served again.
    pub liveness_bound: Duration,
    pub timers: Timers,
    /// A re-introduced bug to run with (debug builds with mutations only).
    pub mutation: Option<Mutation>,
}

impl Options {
    pub fn new(seed: u64) -> Self {
        Options {
            seed,
            monitors: 3,
            gateways: 4,
            safety: Duration::from_secs(30),
            liveness: Duration::from_secs(32),
            // The 4 s grace, plus the 16 s a restart holds its group's failovers back
            // (`skip_failover_redeploy_ms`, as Ceph), plus elections, reconnects, a fence
            // and a failback delay of up to 3 s.
            liveness_bound: Duration::from_secs(26),
            timers: Timers::DEFAULT,
            mutation: None,
        }
    }
}

/// One injected fault; each lasts a while and is then healed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Messages from `from` to `to` are lost (and back, unless `oneway`).
    Partition {
        from: String,
        to: String,
        oneway: bool,
    },
    /// The Raft leader of the moment is cut off from the other monitors; gateways and the
    /// operator still reach it.
    IsolateLeader,
    /// As [`Fault::IsolateLeader`], and some gateways (not all) lose the old leader too, so
    /// they find the new one while the others stay with the old.
    SplitLeader,
    /// A gateway is cut off from the monitors and let back in, again and again (`period`
    /// each way), its target failing every call after taking effect.
    Flap { gateway: String, period: Duration },
    /// A monitor's disk takes this long per flush (the leader's, if `leader`).
    SlowDisk {
        monitor: u64,
        leader: bool,
        delay: Duration,
    },
    /// A gateway is cut off from every monitor; hosts still reach its target.
    IsolateGateway(String),
    /// A monitor crashes, losing unflushed writes, and restarts when healed.
    CrashMonitor(u64),
    /// A gateway process crashes (its target keeps serving) and restarts when healed.
    CrashGateway(String),
    /// A gateway process is stopped (SIGSTOP) and resumed when healed.
    PauseGateway(String),
    /// A monitor's wall clock jumps.
    ClockJump { monitor: u64, by_ms: i64 },
    /// Every message takes up to this long.
    Latency(Duration),
    /// The fencer fails or hangs at times.
    FlakyFencer(FencerFaults),
    /// Target calls fail at times (per mille).
    FlakyTargets(u32),
    /// A gateway's host browns out: its target's calls start failing after taking effect,
    /// the operator disables `other` at that moment (so every gateway of the group gets a
    /// new map to apply), and `cut_after` later the gateway loses every monitor. `other` is
    /// enabled again when healed.
    Brownout {
        gateway: String,
        other: String,
        cut_after: Duration,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition { from, to, oneway } => {
                write!(
                    f,
                    "partition {from} {} {to}",
                    if *oneway { "->" } else { "<->" }
                )
            }
            Fault::IsolateLeader => write!(f, "isolate the leader from the other monitors"),
            Fault::SplitLeader => write!(f, "isolate the leader and split the gateways"),
            Fault::Flap { gateway, period } => write!(
                f,
                "flap {gateway} every {} ms, its target failing",
                period.as_millis()
            ),
            Fault::SlowDisk {
                monitor,
                leader,
                delay,
            } => write!(
                f,
                "{} disk flushes take {} ms",
                if *leader {
                    "the leader's".to_owned()
                } else {
                    format!("m{monitor}'s")
                },
                delay.as_millis()
            ),
            Fault::IsolateGateway(g) => write!(f, "isolate {g} from the monitors"),
            Fault::CrashMonitor(m) => write!(f, "crash m{m}"),
            Fault::CrashGateway(g) => write!(f, "crash the {g} process"),
            Fault::PauseGateway(g) => write!(f, "pause the {g} process"),
            Fault::ClockJump { monitor, by_ms } => write!(f, "m{monitor} clock jumps {by_ms} ms"),
            Fault::Latency(d) => write!(f, "latency up to {} ms", d.as_millis()),
            Fault::FlakyFencer(ff) => write!(
                f,
                "fencer fails {:.0}% and hangs {:.0}% of attempts",
                ff.fail * 100.0,
                ff.hang * 100.0
            ),
            Fault::FlakyTargets(p) => write!(f, "target calls fail {p} per mille"),
            Fault::Brownout {
                gateway,
                other,
                cut_after,
            } => write!(
                f,
                "brownout of {gateway}: its target fails, {other} is disabled, and {} ms \
                 later {gateway} loses the monitors",
                cut_after.as_millis()
            ),
        }
    }
}

/// A fault at an offset into the safety phase, healed `lasts` later.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

/// An operator's command at an offset into the safety phase.
#[derive(Debug, Clone)]
pub struct ScheduledOp {
    pub at: Duration,
    pub op: AdminOp,
}

/// The whole schedule of a run, drawn from its seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub fencing: Fencing,
    pub faults: Vec<Scheduled>,
    pub ops: Vec<ScheduledOp>,
    /// When the compute node reports its volume's second replica faulty.
    pub faulty_at: Duration,
}

fn gw(i: u32) -> String {
    format!("g{i}")
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fencing {:?}", self.fencing)?;
        for s in &self.faults {
            write!(
                f,
                "; at {} ms for {} ms: {}",
                s.at.as_millis(),
                s.lasts.as_millis(),
                s.fault
            )?;
        }
        for op in &self.ops {
            write!(f, "; at {} ms: {:?}", op.at.as_millis(), op.op)?;
        }
        write!(
            f,
            "; at {} ms: a replica reported faulty",
            self.faulty_at.as_millis()
        )
    }
}

impl Plan {
    pub fn draw(o: &Options) -> Plan {
        let mut rng = StdRng::seed_from_u64(o.seed);
        // One run in four protects storage by leases alone.
        let fencing = if rng.random_range(0..4) == 0 {
            Fencing::LeaseOnly
        } else {
            Fencing::Storage
        };
        let safety_ms = u64::try_from(o.safety.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let n = rng.random_range(2..=8);
        let mut faults = Vec::new();
        for _ in 0..n {
            let at = Duration::from_millis(rng.random_range(0..safety_ms));
            let mut lasts = Duration::from_millis(rng.random_range(300..12_000));
            let gi = rng.random_range(1..=o.gateways);
            let m = rng.random_range(1..=o.monitors);
            if let Some(fault) = draw_fault(&mut rng, o, fencing, gi, m, &mut lasts) {
                faults.push(Scheduled { at, lasts, fault });
            }
        }
        faults.sort_by_key(|s| s.at);
        let ops = draw_ops(&mut rng, o, safety_ms);
        let faulty_at = Duration::from_millis(rng.random_range(0..safety_ms));
        Plan {
            fencing,
            faults,
            ops,
            faulty_at,
        }
    }
}

/// What a run produced.
pub struct Outcome {
    pub seed: u64,
    pub mutation: Option<Mutation>,
    pub history: Vec<Record>,
    pub violations: Vec<Violation>,
    /// The harness itself failed (a host returned an error, the run could not set up).
    pub error: Option<String>,
    pub steps: u64,
    /// How long after the faults stopped every ANA group was served again.
    pub recovery: Option<Duration>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }

    /// The one command that replays this run with its trace.
    pub fn replay_command(&self) -> String {
        match self.mutation {
            None => format!(
                "cargo run --release -p gwmon-sim -- --seed {} --trace",
                self.seed
            ),
            Some(m) => format!(
                "cargo run --profile sim -p gwmon-sim -- --seed {} --trace --mutation {}",
                self.seed,
                m.name()
            ),
        }
    }

    /// What went wrong, one line each, and how to replay it.
    pub fn report(&self) -> String {
        let mut s = format!("seed {}: FAILED\n", self.seed);
        if let Some(e) = &self.error {
            s.push_str(&format!("  harness: {e}\n"));
        }
        for v in &self.violations {
            s.push_str(&format!("  {v}\n"));
        }
        s.push_str(&format!("  replay: {}\n", self.replay_command()));
        s
    }

    /// A digest of the whole history (every record, writes included): two runs of one seed
    /// must print the same. FNV-1a over the records' text, so it is stable across builds.
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for r in &self.history {
            for b in r.to_string().bytes().chain([b'\n']) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// The history, one line per record, leaving out the routine writes.
    pub fn trace(&self) -> String {
        let mut out = String::new();
        for r in &self.history {
            if matches!(r.event, Event::Write { accepted: true, .. }) {
                continue;
            }
            out.push_str(&r.to_string());
            out.push('\n');
        }
        out
    }
}

/// Directed links currently cut, with how many faults cut each.
#[derive(Default)]
struct Cuts {
    count: BTreeMap<(String, String), u32>,
}

impl Cuts {
    fn cut(&mut self, sim: &turmoil::Sim<'_>, from: &str, to: &str) {
        let c = self.count.entry((from.into(), to.into())).or_insert(0);
        *c += 1;
        if *c == 1 {
            sim.partition_oneway(from, to);
        }
    }

    fn heal(&mut self, sim: &turmoil::Sim<'_>, from: &str, to: &str) {
        let k = (from.to_owned(), to.to_owned());
        if let Some(c) = self.count.get_mut(&k) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.count.remove(&k);
                sim.repair_oneway(from, to);
            }
        }
    }
}

/// A fault in force, with what healing it takes.
struct Active {
    until: Duration,
    heal: Heal,
}

enum Heal {
    Links(Vec<(String, String)>),
    Disk(u64),
    Sick(String),
    Restart(String),
    RestartMonitor(u64),
    Resume(String),
    Latency,
    Fencer,
    Targets,
    Brownout { gateway: String, other: String },
    Nothing,
}

struct Driver<'a> {
    sim: turmoil::Sim<'a>,
    world: World,
    board: MetricsBoard,
    cuts: Cuts,
    active: Vec<Active>,
    /// Hosts stopped on purpose (crashed), not to be restarted by the supervisor.
    down: BTreeMap<String, ()>,
    /// Gateways whose process ended by itself, and when: restarted a second later.
    exited: BTreeMap<String, Duration>,
    monitors: u64,
    gateways: u32,
    steps: u64,
    /// The terms whose leader is on record.
    terms: BTreeSet<u64>,
    next_write: Duration,
    /// Faults a compound fault scheduled, at absolute simulated times.
    pending: Vec<Scheduled>,
    /// Which gateways the faults so far impaired, for check (f).
    impairments: Vec<Impairment>,
    /// The id of the next admin command.
    next_admin: u64,
}

const WRITE_PERIOD: Duration = Duration::from_millis(50);
const RESTART_DELAY: Duration = Duration::from_secs(1);

impl Driver<'_> {
    fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    fn step(&mut self) -> Result<(), String> {
        self.sim.step().map_err(|e| format!("host failed: {e}"))?;
        self.steps += 1;
        let now = self.now();
        self.world.set_now(now);
        if now >= self.next_write {
            self.world.write_through_targets();
            self.next_write = now + WRITE_PERIOD;
        }
        // Every step, so check (g) knows when each leader took office to within one.
        for (monitor, term) in self.board.leaders() {
            if self.terms.insert(term) {
                self.world.record(Event::Leader { monitor, term });
            }
        }
        if self.steps.is_multiple_of(20) {
            self.supervise();
        }
        let due: Vec<Active> = {
            let (due, keep) = std::mem::take(&mut self.active)
                .into_iter()
                .partition(|a| a.until <= now);
            self.active = keep;
            due
        };
        for a in due {
            self.heal(a.heal);
        }
        Ok(())
    }

    /// Restart gateway processes that ended by themselves, as systemd would.
    fn supervise(&mut self) {
        let now = self.now();
        for i in 1..=self.gateways {
            let name = gw(i);
            if self.down.contains_key(&name) {
                continue;
            }
            if self.sim.is_host_running(name.as_str()) {
                self.exited.remove(&name);
                continue;
            }
            let since = *self.exited.entry(name.clone()).or_insert(now);
            if now >= since + RESTART_DELAY {
                self.world
                    .record(Event::Fault(format!("supervisor restarts {name}")));
                self.sim.bounce(name.as_str());
                self.exited.remove(&name);
            }
        }
    }

    fn inject(&mut self, s: &Scheduled) {
        let until = self.now() + s.lasts;
        let mut impaired = impaired_by(&s.fault);
        let Some(heal) = self.start_fault(s, &mut impaired) else {
            return;
        };
        self.world.record(Event::Fault(format!(
            "{} for {} ms",
            s.fault,
            s.lasts.as_millis()
        )));
        let from = self.now();
        self.impairments
            .extend(impaired.into_iter().map(|gateway| Impairment {
                gateway,
                from,
                until,
            }));
        self.active.push(Active { until, heal });
    }

    /// Puts `s`'s fault in place and says how to heal it; `None` if it cannot apply now
    /// (no leader to cut off, a host already down or paused). Gateways it impairs beyond
    /// [`impaired_by`] go into `impaired`.
    fn start_fault(&mut self, s: &Scheduled, impaired: &mut Vec<Option<String>>) -> Option<Heal> {
        let heal = match &s.fault {
            Fault::Partition { from, to, oneway } => {
                let mut links = vec![(from.clone(), to.clone())];
                if !oneway {
                    links.push((to.clone(), from.clone()));
                }
                self.cut(links)
            }
            Fault::IsolateLeader => self.cut_leader(false, impaired)?,
            Fault::SplitLeader => self.cut_leader(true, impaired)?,
            Fault::Flap { gateway, period } => {
                self.world.set_sick(gateway, true);
                let mut t = self.now();
                let end = t + s.lasts;
                while t < end {
                    self.pending.push(Scheduled {
                        at: t,
                        lasts: *period,
                        fault: Fault::IsolateGateway(gateway.clone()),
                    });
                    t += *period * 2;
                }
                Heal::Sick(gateway.clone())
            }
            Fault::SlowDisk {
                monitor,
                leader,
                delay,
            } => {
                let m = if *leader {
                    self.board.leader()?.0
                } else {
                    *monitor
                };
                self.world.store(m).set_flush_delay(*delay);
                Heal::Disk(m)
            }
            Fault::IsolateGateway(g) => {
                let mut links = Vec::new();
                for m in 1..=self.monitors {
                    links.push((g.clone(), nodes::monitor_host(m)));
                    links.push((nodes::monitor_host(m), g.clone()));
                }
                self.cut(links)
            }
            Fault::CrashMonitor(m) => self.crash_monitor(*m)?,
            Fault::CrashGateway(g) => self.crash_gateway(g)?,
            Fault::PauseGateway(g) => {
                if self.world.is_paused(g) {
                    return None;
                }
                self.world.set_paused(g, true);
                Heal::Resume(g.clone())
            }
            Fault::ClockJump { monitor, by_ms } => {
                self.world.jump_clock(*monitor, *by_ms);
                Heal::Nothing
            }
            Fault::Latency(d) => {
                self.sim.set_max_message_latency(*d);
                Heal::Latency
            }
            Fault::FlakyFencer(f) => {
                self.world.set_fencer_faults(*f);
                Heal::Fencer
            }
            Fault::FlakyTargets(p) => {
                self.world.set_fail_apply(*p);
                Heal::Targets
            }
            Fault::Brownout {
                gateway,
                other,
                cut_after,
            } => {
                self.world.set_sick(gateway, true);
                self.admin(AdminOp::SetEnabled(other.clone(), false));
                self.pending.push(Scheduled {
                    at: self.now() + *cut_after,
                    lasts: s.lasts.saturating_sub(*cut_after),
                    fault: Fault::IsolateGateway(gateway.clone()),
                });
                Heal::Brownout {
                    gateway: gateway.clone(),
                    other: other.clone(),
                }
            }
        };
        Some(heal)
    }

    /// Cuts every link of `links` (each one way), healed together.
    fn cut(&mut self, links: Vec<(String, String)>) -> Heal {
        for (a, b) in &links {
            self.cuts.cut(&self.sim, a, b);
        }
        Heal::Links(links)
    }

    /// Cuts the leader of the moment off from the other monitors and, with `split`, from
    /// some gateways too (which go into `impaired`); `None` without a leader.
    fn cut_leader(&mut self, split: bool, impaired: &mut Vec<Option<String>>) -> Option<Heal> {
        let (leader, _) = self.board.leader()?;
        let l = nodes::monitor_host(leader);
        let mut links = Vec::new();
        for m in (1..=self.monitors).filter(|m| *m != leader) {
            links.push((l.clone(), nodes::monitor_host(m)));
            links.push((nodes::monitor_host(m), l.clone()));
        }
        if !split {
            let heal = self.cut(links);
            self.world
                .record(Event::Fault(format!("m{leader} is the leader cut off")));
            return Some(heal);
        }
        let moved = self.world.random_below(u64::from(self.gateways) - 1) + 1;
        for i in 1..=u32::try_from(moved).unwrap_or(1) {
            links.push((l.clone(), gw(i)));
            links.push((gw(i), l.clone()));
        }
        let heal = self.cut(links);
        self.world.record(Event::Fault(format!(
            "m{leader} is the leader cut off; g1..g{moved} lose it too"
        )));
        impaired.extend((1..=u32::try_from(moved).unwrap_or(1)).map(|i| Some(gw(i))));
        Some(heal)
    }

    /// Crashes monitor `m`, losing some of what it did not flush; `None` if it is down.
    fn crash_monitor(&mut self, m: u64) -> Option<Heal> {
        let host = nodes::monitor_host(m);
        if self.down.contains_key(&host) {
            return None;
        }
        self.sim.crash(host.as_str());
        self.board.remove(m);
        let store = self.world.store(m);
        let keep = self
            .world
            .random_below(u64::try_from(store.unflushed()).unwrap_or(0) + 1);
        store.crash(usize::try_from(keep).unwrap_or(0));
        self.down.insert(host, ());
        Some(Heal::RestartMonitor(m))
    }

    /// Crashes gateway `g`'s process; `None` if it is down.
    fn crash_gateway(&mut self, g: &str) -> Option<Heal> {
        if self.down.contains_key(g) {
            return None;
        }
        self.sim.crash(g);
        if self.world.fencing() == Fencing::LeaseOnly {
            // The data plane lived in the process.
            self.world.kill_target(g);
        }
        self.down.insert(g.to_owned(), ());
        Some(Heal::Restart(g.to_owned()))
    }

    fn heal(&mut self, heal: Heal) {
        let what = match heal {
            Heal::Links(links) => {
                for (a, b) in &links {
                    self.cuts.heal(&self.sim, a, b);
                }
                format!("heal {} links", links.len())
            }
            Heal::Restart(g) => {
                self.down.remove(&g);
                self.sim.bounce(g.as_str());
                format!("restart {g}")
            }
            Heal::RestartMonitor(m) => {
                let host = nodes::monitor_host(m);
                self.down.remove(&host);
                self.sim.bounce(host.as_str());
                format!("restart m{m}")
            }
            Heal::Resume(g) => {
                self.world.set_paused(&g, false);
                format!("resume {g}")
            }
            Heal::Latency => {
                self.sim.set_max_message_latency(MAX_LATENCY);
                "latency back to normal".into()
            }
            Heal::Fencer => {
                self.world.set_fencer_faults(FencerFaults::RELIABLE);
                "fencer reliable".into()
            }
            Heal::Targets => {
                self.world.set_fail_apply(0);
                "targets reliable".into()
            }
            Heal::Disk(m) => {
                self.world.store(m).set_flush_delay(Duration::ZERO);
                format!("m{m}'s disk is fast again")
            }
            Heal::Sick(g) => {
                self.world.set_sick(&g, false);
                format!("{g}'s target works again")
            }
            Heal::Brownout { gateway, other } => {
                self.world.set_sick(&gateway, false);
                self.admin(AdminOp::SetEnabled(other.clone(), true));
                format!("{gateway}'s target works again; {other} enabled")
            }
            Heal::Nothing => return,
        };
        self.world.record(Event::Fault(what));
    }

    /// Queue an operator's command.
    fn admin(&mut self, op: AdminOp) {
        self.world.queue_admin(self.next_admin, op);
        self.next_admin += 1;
    }

    fn heal_all(&mut self) {
        self.pending.clear();
        for a in std::mem::take(&mut self.active) {
            self.heal(a.heal);
        }
        let now = self.now();
        for i in &mut self.impairments {
            i.until = i.until.min(now);
        }
    }

    fn run_until(&mut self, t: Duration) -> Result<(), String> {
        while self.now() < t {
            self.step()?;
        }
        Ok(())
    }

    /// Step until `cond` holds or `limit` passes; whether it held.
    fn run_until_cond(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&World) -> bool,
    ) -> Result<bool, String> {
        let end = self.now() + limit;
        while self.now() < end {
            if cond(&self.world) {
                return Ok(true);
            }
            self.step()?;
        }
        Ok(cond(&self.world))
    }
}

/// Simulated time per step. Timers fire, and messages arrive, on these boundaries; events
/// within one step are still ordered (by sequence number).
const TICK: Duration = Duration::from_millis(2);
const MIN_LATENCY: Duration = Duration::from_millis(1);
const MAX_LATENCY: Duration = Duration::from_millis(5);

/// Run one seed.
pub fn run(o: &Options) -> Outcome {
    let world = World::new(o.seed);
    let logs = logs::install(&world);
    let mut steps = 0;
    let mut impairments = Vec::new();
    let result = if o.mutation.is_some() && !mutation::set(o.mutation) {
        Err(
            "this build has no mutations: use a debug build (`cargo test`, or `--profile sim`)"
                .into(),
        )
    } else {
        let r = simulate(o, &world, &mut steps, &mut impairments);
        mutation::set(None);
        r
    };
    drop(logs);
    let history = world.history();
    let params = Params {
        ana_groups: (1..=o.gateways).collect(),
        gateways: (1..=o.gateways).map(gw).collect(),
        liveness_bound: o.liveness_bound,
        impairments: Some(impairments),
        grace: Some(Duration::from_millis(
            gwmon_monitor::map::config::MapConfig::default().beacon_grace_ms,
        )),
    };
    let (violations, error) = match result {
        Ok(()) => (check::check(&history, &params), None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let recovery = check::recovery(&history, &params.ana_groups);
    Outcome {
        seed: o.seed,
        mutation: o.mutation,
        history,
        violations,
        error,
        steps,
        recovery,
    }
}

fn simulate(
    o: &Options,
    world: &World,
    steps: &mut u64,
    impairments: &mut Vec<Impairment>,
) -> Result<(), String> {
    let plan = Plan::draw(o);
    world.set_fencing(plan.fencing);
    world.record(Event::Fault(format!("fencing: {:?}", plan.fencing)));
    let mut d = start_cluster(o, world);
    for i in 1..=o.gateways {
        d.admin(AdminOp::Create(gw(i)));
    }
    // Set up: every gateway created and every ANA group served.
    let groups: Vec<u32> = (1..=o.gateways).collect();
    let ready = d.run_until_cond(Duration::from_secs(30), |w| {
        let targets = w.targets();
        groups.iter().all(|a| {
            targets
                .values()
                .any(|t| t.groups.get(a).copied().unwrap_or(false))
        })
    })?;
    if !ready {
        *steps = d.steps;
        return Err(
            "the cluster did not come up: not every ANA group was served within 30 s".into(),
        );
    }
    let start = d.now();
    world.record(Event::Fault("faults begin".into()));
    d.run_plan(&plan, start + o.safety)?;
    d.heal_all();
    *impairments = std::mem::take(&mut d.impairments);
    // Every monitor taken out of the membership comes back.
    let removed: std::collections::BTreeSet<u64> = plan
        .ops
        .iter()
        .filter_map(|op| match op.op {
            AdminOp::RemoveMonitor(m) => Some(m),
            _ => None,
        })
        .collect();
    for m in removed {
        d.admin(AdminOp::AddMonitor(m));
    }
    for g in (1..=o.gateways).map(gw) {
        if world.is_paused(&g) {
            world.set_paused(&g, false);
        }
    }
    world.record(Event::Quiet);
    let quiet = d.now();
    d.run_until(quiet + o.liveness)?;
    world.request_read();
    let read = d.run_until_cond(Duration::from_secs(30), |w| {
        !w.admin_pending() && w.read_done()
    })?;
    *steps = d.steps;
    if !read {
        return Err("the operator could not read the final state within 30 s".into());
    }
    Ok(())
}

/// The simulated cluster: the monitors, the gateways, the operator and the compute node as
/// hosts of a turmoil simulation seeded with the run's seed, and the driver over them.
fn start_cluster<'a>(o: &Options, world: &World) -> Driver<'a> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(o.seed)
        .tick_duration(TICK)
        .min_message_latency(MIN_LATENCY)
        .max_message_latency(MAX_LATENCY)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tcp_capacity(1 << 16)
        .build();
    let board = MetricsBoard::default();
    for m in 1..=o.monitors {
        sim.host(
            nodes::monitor_host(m),
            nodes::monitor(world.clone(), board.clone(), m, o.monitors, o.timers),
        );
    }
    for i in 1..=o.gateways {
        sim.host(
            gw(i),
            nodes::gateway(world.clone(), gw(i), o.monitors, o.gateways, o.timers),
        );
    }
    sim.host("admin", nodes::admin(world.clone(), o.monitors));
    sim.host("host", agent::host(world.clone(), o.monitors));
    Driver {
        sim,
        world: world.clone(),
        board,
        cuts: Cuts::default(),
        active: Vec::new(),
        down: BTreeMap::new(),
        exited: BTreeMap::new(),
        monitors: o.monitors,
        gateways: o.gateways,
        steps: 0,
        terms: BTreeSet::new(),
        next_write: Duration::ZERO,
        pending: Vec::new(),
        impairments: Vec::new(),
        next_admin: 1,
    }
}

impl Driver<'_> {
    /// The plan's faults, the operator's actions and the compute node's faulty replica,
    /// each at its time, until `end`.
    fn run_plan(&mut self, plan: &Plan, end: Duration) -> Result<(), String> {
        let start = self.now();
        let mut faults = plan.faults.iter().peekable();
        let mut ops = plan.ops.iter().peekable();
        let mut faulty = Some(agent::REPLICAS[1]);
        while self.now() < end {
            let now = self.now();
            if let Some(replica) = faulty.filter(|_| start + plan.faulty_at <= now) {
                self.world.record(Event::Fault(format!(
                    "the compute node finds replica {replica} faulty"
                )));
                self.world.request_faulty(replica);
                faulty = None;
            }
            while let Some(f) = faults.next_if(|f| start + f.at <= now) {
                self.inject(f);
            }
            let due: Vec<Scheduled> = {
                let (due, later) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|s| s.at <= now);
                self.pending = later;
                due
            };
            for f in &due {
                self.inject(f);
            }
            while let Some(op) = ops.next_if(|op| start + op.at <= now) {
                self.admin(op.op.clone());
            }
            self.step()?;
        }
        Ok(())
    }
}

/// One fault of a plan, for gateway `gi` and monitor `m` where it names one; it may set
/// how long it `lasts`. `None`: a partition drawn between a host and itself (skipped).
fn draw_fault(
    rng: &mut StdRng,
    o: &Options,
    fencing: Fencing,
    gi: u32,
    m: u64,
    lasts: &mut Duration,
) -> Option<Fault> {
    let g = gw(gi);
    let fault = match rng.random_range(0..17) {
        16 => {
            // Long enough, often, for the gateway to be timed out and fenced
            // while it is still cut off.
            *lasts = Duration::from_millis(rng.random_range(4_000..14_000));
            Fault::Brownout {
                gateway: g,
                other: gw(gi % o.gateways + 1),
                cut_after: Duration::from_millis(rng.random_range(10..400)),
            }
        }
        12 => Fault::SplitLeader,
        13 => {
            // Two to four times out and back in: the gateway's group fails over,
            // comes back to it, and is lost again while its target misbehaves.
            let period = Duration::from_millis(rng.random_range(3_000..8_000));
            *lasts = period * 2 * rng.random_range(2..=4);
            Fault::Flap { gateway: g, period }
        }
        14 => Fault::SlowDisk {
            monitor: m,
            leader: rng.random_bool(0.5),
            delay: Duration::from_millis(rng.random_range(50..3_000)),
        },
        0 => {
            let hosts: Vec<String> = (1..=o.monitors)
                .map(nodes::monitor_host)
                .chain((1..=o.gateways).map(gw))
                .collect();
            let a = hosts[rng.random_range(0..hosts.len())].clone();
            let b = hosts[rng.random_range(0..hosts.len())].clone();
            if a == b {
                return None;
            }
            Fault::Partition {
                from: a,
                to: b,
                oneway: rng.random_bool(0.5),
            }
        }
        1 | 2 => Fault::IsolateLeader,
        3 => Fault::IsolateGateway(g),
        4 | 5 => Fault::CrashMonitor(m),
        6 => Fault::CrashGateway(g),
        7 | 8 if fencing == Fencing::Storage => Fault::PauseGateway(g),
        7 | 8 => Fault::IsolateLeader,
        9 => Fault::ClockJump {
            monitor: m,
            by_ms: rng.random_range(-30_000..30_000),
        },
        10 => Fault::Latency(Duration::from_millis(rng.random_range(20..400))),
        _ => {
            if rng.random_bool(0.5) {
                Fault::FlakyFencer(FencerFaults {
                    fail: rng.random_range(0.0..0.6),
                    hang: rng.random_range(0.0..0.3),
                    max_delay: Duration::from_millis(rng.random_range(1..2_000)),
                })
            } else {
                Fault::FlakyTargets(rng.random_range(50..600))
            }
        }
    };
    Some(fault)
}

/// The operator's actions of a plan, in time order.
fn draw_ops(rng: &mut StdRng, o: &Options, safety_ms: u64) -> Vec<ScheduledOp> {
    let mut ops = Vec::new();
    for _ in 0..rng.random_range(0..=5) {
        let at = Duration::from_millis(rng.random_range(0..safety_ms));
        let g = gw(rng.random_range(1..=o.gateways));
        let spare = gw(o.gateways + 1);
        let op = match rng.random_range(0..6) {
            0 => AdminOp::Create(spare),
            1 => AdminOp::Delete(spare),
            2 => AdminOp::SetEnabled(g, rng.random_bool(0.5)),
            3 => AdminOp::SetLocation(g, format!("rack{}", rng.random_range(1..4))),
            4 => AdminOp::SetFailbackDelay(rng.random_range(0..3_000)),
            _ => {
                // A monitor out of the membership and, 2-10 s later (or when faults
                // stop), back in.
                let m = rng.random_range(1..=o.monitors);
                ops.push(ScheduledOp {
                    at: at + Duration::from_millis(rng.random_range(2_000..10_000)),
                    op: AdminOp::AddMonitor(m),
                });
                AdminOp::RemoveMonitor(m)
            }
        };
        ops.push(ScheduledOp { at, op });
    }
    ops.sort_by_key(|s| s.at);
    ops
}

/// The gateways `fault` impairs by its nature (`None`: every gateway). Faults between
/// monitors, of monitors, of their clocks and disks, and of the fencer impair none: the
/// monitors must ride those out without failing a healthy gateway over.
fn impaired_by(fault: &Fault) -> Vec<Option<String>> {
    match fault {
        Fault::Partition { from, to, .. } => [from, to]
            .into_iter()
            .filter(|h| !h.starts_with('m'))
            .map(|h| Some(h.clone()))
            .collect(),
        Fault::IsolateGateway(g)
        | Fault::CrashGateway(g)
        | Fault::PauseGateway(g)
        | Fault::Flap { gateway: g, .. }
        | Fault::Brownout { gateway: g, .. } => vec![Some(g.clone())],
        Fault::Latency(_) | Fault::FlakyTargets(_) => vec![None],
        _ => Vec::new(),
    }
}
