//! What lives outside the simulated processes and survives their crashes: the gateways'
//! targets (a kernel target keeps serving when the process that configured it dies), the
//! storage backend with its blocklist, the monitors' disks and wall clocks, and the history
//! every check reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use gwmon_monitor::store::MemStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One thing that happened, as hosts, storage and operators would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A gateway process started; `nonce` is its storage identity (its RADOS address, say).
    Started { gateway: String, nonce: String },
    /// A gateway process ended.
    Exited {
        gateway: String,
        nonce: String,
        why: String,
    },
    /// A gateway's target changed what it exposes for one ANA group. `nonce` is the process
    /// whose storage identity the target's I/O carries.
    Target {
        gateway: String,
        ana: u32,
        optimized: bool,
        nonce: String,
    },
    /// A gateway's target put a namespace in an ANA group: provisioned at its first start,
    /// or moved by namespace balancing. Hosts see the namespace through the targets that
    /// expose its group optimized.
    Placed {
        gateway: String,
        nsid: u32,
        ana: u32,
    },
    /// The storage backend blocklisted these identities of `gateway` (a completed fence).
    Fenced {
        gateway: String,
        nonces: Vec<String>,
        epoch: u64,
    },
    /// A fence attempt began.
    FenceStarted { gateway: String, epoch: u64 },
    /// A fence attempt that did not complete.
    FenceFailed { gateway: String, why: String },
    /// A host's write through a target reached storage.
    Write {
        gateway: String,
        ana: u32,
        nonce: String,
        accepted: bool,
    },
    /// An operator's command was sent.
    AdminSent { id: u64, op: AdminOp },
    /// ... and acknowledged.
    AdminAcked { id: u64 },
    /// ... and refused or lost. `definite`: the monitors said it did not happen.
    AdminFailed {
        id: u64,
        definite: bool,
        why: String,
    },
    /// The final state read back from the monitors after the run.
    AdminRead { state: AdminState },
    /// The leader of `term` declared a gateway failed (timed it out).
    TimedOut { gateway: String, term: u64 },
    /// A fault was injected (or healed).
    Fault(String),
    /// A monitor took office as the leader of `term` (seen within a step, 2 ms, of it).
    Leader { monitor: u64, term: u64 },
    /// Faults stop here; the liveness phase begins.
    Quiet,
    /// The compute node's report of a replica's state was acknowledged.
    ReplicaReported { replica: String, state: String },
    /// The compute node asked for the replicas to build its array from (ask `n`) ...
    ConnectionAsked { n: u64 },
    /// ... and was told these.
    ConnectionRead { n: u64, replicas: Vec<String> },
}

/// An operator's command, on keys the checker can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    Create(String),
    Delete(String),
    SetEnabled(String, bool),
    SetLocation(String, String),
    SetFailbackDelay(u64),
    /// `nvme-gw cluster add`: a monitor (back) into the Raft membership.
    AddMonitor(u64),
    /// `nvme-gw cluster remove`.
    RemoveMonitor(u64),
}

impl AdminOp {
    /// The gateway the command names, if any.
    pub fn gateway(&self) -> Option<&str> {
        match self {
            AdminOp::Create(g)
            | AdminOp::Delete(g)
            | AdminOp::SetEnabled(g, _)
            | AdminOp::SetLocation(g, _) => Some(g),
            AdminOp::SetFailbackDelay(_) | AdminOp::AddMonitor(_) | AdminOp::RemoveMonitor(_) => {
                None
            }
        }
    }

    /// The keys the command writes, each with the value it leaves there.
    pub fn effects(&self) -> Vec<(String, String)> {
        match self {
            AdminOp::Create(g) => vec![
                (format!("exists/{g}"), "yes".into()),
                (format!("enabled/{g}"), "true".into()),
                (format!("location/{g}"), String::new()),
            ],
            AdminOp::Delete(g) => vec![(format!("exists/{g}"), "no".into())],
            AdminOp::SetEnabled(g, on) => vec![(format!("enabled/{g}"), on.to_string())],
            AdminOp::SetLocation(g, l) => vec![(format!("location/{g}"), l.clone())],
            AdminOp::SetFailbackDelay(ms) => vec![("failback_delay_ms".into(), ms.to_string())],
            AdminOp::AddMonitor(m) => vec![(format!("member/m{m}"), "yes".into())],
            AdminOp::RemoveMonitor(m) => vec![(format!("member/m{m}"), "no".into())],
        }
    }
}

/// Key to value, as read back from the monitors.
pub type AdminState = BTreeMap<String, String>;

/// An event with its place in the history: `seq` orders events, `at` is simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub at: Duration,
    pub event: Event,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>9.3}s #{:<6} {:?}",
            self.at.as_secs_f64(),
            self.seq,
            self.event
        )
    }
}

/// What a gateway's target exposes.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    /// ANA group to optimized.
    pub groups: BTreeMap<u32, bool>,
    /// The storage identity its I/O carries: the process that last made it serve.
    pub nonce: String,
    /// Namespace id to the ANA group it is in.
    pub placed: BTreeMap<u32, u32>,
}

/// How a target call goes when target faults are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetCall {
    Works,
    /// Fails without changing anything.
    FailsBefore,
    /// Changes the target, then reports failure (a timeout after the write landed).
    FailsAfter,
    /// Changes the target, then never answers.
    HangsAfter,
}

/// What protects storage from a gateway the monitors gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    /// The fencer blocklists the gateway's identities at storage (Ceph's OSD blocklist). The
    /// data plane outlives the gateway process, as a kernel target does.
    Storage,
    /// The fencer does nothing (`fencer = none`): safety rests on the gateways' leases alone.
    /// Supported only where the data plane dies with the process (SPDK inside the gateway
    /// process), and where processes are not paused; runs of this kind model exactly that.
    LeaseOnly,
}

/// How a fencer misbehaves in this run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FencerFaults {
    /// Chance that an attempt fails.
    pub fail: f64,
    /// Chance that an attempt hangs until the fencer's timeout ends it.
    pub hang: f64,
    /// How long a good attempt takes, at most.
    pub max_delay: Duration,
}

impl FencerFaults {
    pub const RELIABLE: FencerFaults = FencerFaults {
        fail: 0.0,
        hang: 0.0,
        max_delay: Duration::from_millis(200),
    };
}

#[derive(Default)]
struct Pause {
    paused: bool,
    wakers: Vec<Waker>,
}

struct Inner {
    now: Duration,
    seq: u64,
    history: Vec<Record>,
    targets: BTreeMap<String, TargetState>,
    blocklist: BTreeSet<String>,
    clock_offsets: BTreeMap<u64, i64>,
    pauses: BTreeMap<String, Pause>,
    fencer: FencerFaults,
    /// Every `fail_apply` in a thousand target calls fail.
    fail_apply_per_mille: u32,
    /// Gateways whose target calls all fail after taking effect.
    sick: BTreeSet<String>,
    fencing: Fencing,
    rng: StdRng,
    starts: BTreeMap<String, u64>,
    stores: BTreeMap<u64, MemStore>,
    admin_queue: Vec<(u64, AdminOp)>,
    /// Replicas the compute node is to report faulty.
    faulty_requests: Vec<String>,
    read_requested: bool,
    read_done: bool,
}

/// The shared world. Cheap to clone; every host holds one.
#[derive(Clone)]
pub struct World {
    inner: Arc<Mutex<Inner>>,
}

impl World {
    pub fn new(seed: u64) -> Self {
        World {
            inner: Arc::new(Mutex::new(Inner {
                now: Duration::ZERO,
                seq: 0,
                history: Vec::new(),
                targets: BTreeMap::new(),
                blocklist: BTreeSet::new(),
                clock_offsets: BTreeMap::new(),
                pauses: BTreeMap::new(),
                fencer: FencerFaults::RELIABLE,
                fail_apply_per_mille: 0,
                sick: BTreeSet::new(),
                fencing: Fencing::Storage,
                rng: StdRng::seed_from_u64(seed ^ 0x5e_ed0f_0b5e_55ed),
                starts: BTreeMap::new(),
                stores: BTreeMap::new(),
                admin_queue: Vec::new(),
                faulty_requests: Vec::new(),
                read_requested: false,
                read_done: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulated time, as the driver last set it.
    pub fn set_now(&self, now: Duration) {
        self.lock().now = now;
    }

    pub fn now(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_else(|| self.lock().now)
    }

    pub fn record(&self, event: Event) {
        let at = self.now();
        let mut inner = self.lock();
        inner.read_done |= matches!(event, Event::AdminRead { .. });
        inner.seq += 1;
        let seq = inner.seq;
        inner.history.push(Record { seq, at, event });
    }

    pub fn history(&self) -> Vec<Record> {
        self.lock().history.clone()
    }

    /// A number from the world's own seeded generator.
    pub fn chance(&self, p: f64) -> bool {
        p > 0.0 && self.lock().rng.random_bool(p.min(1.0))
    }

    pub fn random_below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.lock().rng.random_range(0..n)
    }

    // -- gateway processes and targets ----------------------------------------------------

    /// A new process of `gateway` starts: its storage identity and a seed for its session.
    pub fn start_process(&self, gateway: &str) -> (String, u64) {
        let (n, seed) = {
            let mut inner = self.lock();
            let n = inner.starts.entry(gateway.to_owned()).or_insert(0);
            *n += 1;
            let n = *n;
            (n, inner.rng.random())
        };
        let nonce = format!("{gateway}/{n}");
        self.record(Event::Started {
            gateway: gateway.to_owned(),
            nonce: nonce.clone(),
        });
        (nonce, seed)
    }

    /// A process sets its target: `groups` lists ANA group to optimized.
    pub fn set_target(&self, gateway: &str, nonce: &str, groups: &[(u32, bool)]) {
        let mut changes = Vec::new();
        {
            let mut inner = self.lock();
            let t = inner.targets.entry(gateway.to_owned()).or_default();
            let serves = groups.iter().any(|(_, on)| *on);
            let nonce_changes = serves && t.nonce != nonce;
            if serves {
                t.nonce = nonce.to_owned();
            }
            for (ana, on) in groups {
                let was = t.groups.get(ana).copied().unwrap_or(false);
                if was != *on || (*on && nonce_changes) {
                    changes.push((*ana, *on));
                }
                t.groups.insert(*ana, *on);
            }
        }
        for (ana, optimized) in changes {
            self.record(Event::Target {
                gateway: gateway.to_owned(),
                ana,
                optimized,
                nonce: nonce.to_owned(),
            });
        }
    }

    /// A target's first configuration: `namespaces` as (nsid, ANA group), unless it has
    /// some already (a restarted process finds its target as the last one left it).
    pub fn provision(&self, gateway: &str, namespaces: &[(u32, u32)]) {
        let fresh = {
            let mut inner = self.lock();
            let t = inner.targets.entry(gateway.to_owned()).or_default();
            let fresh = t.placed.is_empty();
            if fresh {
                t.placed = namespaces.iter().copied().collect();
            }
            fresh
        };
        if fresh {
            for (nsid, ana) in namespaces {
                self.record(Event::Placed {
                    gateway: gateway.to_owned(),
                    nsid: *nsid,
                    ana: *ana,
                });
            }
        }
    }

    /// Where `gateway`'s target has each namespace.
    pub fn placed(&self, gateway: &str) -> BTreeMap<u32, u32> {
        self.lock()
            .targets
            .get(gateway)
            .map(|t| t.placed.clone())
            .unwrap_or_default()
    }

    /// One apply, as a target takes it: the groups it gives up, then the namespaces it
    /// moves (`placements` as nsid and ANA group; unknown namespaces are left alone), then
    /// the groups it takes.
    pub fn apply_target(
        &self,
        gateway: &str,
        nonce: &str,
        groups: &[(u32, bool)],
        placements: &[(u32, u32)],
    ) {
        let off: Vec<(u32, bool)> = groups.iter().copied().filter(|(_, on)| !on).collect();
        let on: Vec<(u32, bool)> = groups.iter().copied().filter(|(_, on)| *on).collect();
        self.set_target(gateway, nonce, &off);
        let moved: Vec<(u32, u32)> = {
            let mut inner = self.lock();
            let t = inner.targets.entry(gateway.to_owned()).or_default();
            placements
                .iter()
                .filter(|(nsid, ana)| {
                    t.placed
                        .get_mut(nsid)
                        .is_some_and(|g| std::mem::replace(g, *ana) != *ana)
                })
                .copied()
                .collect()
        };
        for (nsid, ana) in moved {
            self.record(Event::Placed {
                gateway: gateway.to_owned(),
                nsid,
                ana,
            });
        }
        self.set_target(gateway, nonce, &on);
    }

    /// The target died with its process: nothing is exposed any more.
    pub fn kill_target(&self, gateway: &str) {
        let (nonce, groups) = {
            let inner = self.lock();
            match inner.targets.get(gateway) {
                Some(t) => (
                    t.nonce.clone(),
                    t.groups.keys().map(|a| (*a, false)).collect::<Vec<_>>(),
                ),
                None => return,
            }
        };
        self.set_target(gateway, &nonce, &groups);
    }

    pub fn targets(&self) -> BTreeMap<String, TargetState> {
        self.lock().targets.clone()
    }

    /// Every target's I/O reaches storage once: recorded as writes, accepted unless the
    /// identity they carry is blocklisted.
    pub fn write_through_targets(&self) {
        let writes: Vec<(String, u32, String, bool)> = {
            let inner = self.lock();
            inner
                .targets
                .iter()
                .flat_map(|(gw, t)| {
                    let ok = !inner.blocklist.contains(&t.nonce);
                    t.groups
                        .iter()
                        .filter(|(_, on)| **on)
                        .map(move |(ana, _)| (gw.clone(), *ana, t.nonce.clone(), ok))
                })
                .collect()
        };
        for (gateway, ana, nonce, accepted) in writes {
            self.record(Event::Write {
                gateway,
                ana,
                nonce,
                accepted,
            });
        }
    }

    /// Whether storage refuses I/O carrying this identity.
    pub fn is_blocklisted(&self, nonce: &str) -> bool {
        self.lock().blocklist.contains(nonce)
    }

    /// The storage backend blocklists `nonces` (a fence completed).
    pub fn blocklist(&self, gateway: &str, nonces: Vec<String>, epoch: u64) {
        {
            let mut inner = self.lock();
            inner.blocklist.extend(nonces.iter().cloned());
        }
        self.record(Event::Fenced {
            gateway: gateway.to_owned(),
            nonces,
            epoch,
        });
    }

    // -- faults ---------------------------------------------------------------------------

    pub fn fencer_faults(&self) -> FencerFaults {
        self.lock().fencer
    }

    pub fn set_fencer_faults(&self, f: FencerFaults) {
        self.lock().fencer = f;
    }

    pub fn set_fail_apply(&self, per_mille: u32) {
        self.lock().fail_apply_per_mille = per_mille;
    }

    /// Make every target call of `gateway` fail after taking effect, or stop that.
    pub fn set_sick(&self, gateway: &str, sick: bool) {
        let mut inner = self.lock();
        if sick {
            inner.sick.insert(gateway.to_owned());
        } else {
            inner.sick.remove(gateway);
        }
    }

    /// How this call to `gateway`'s target goes.
    pub fn target_call(&self, gateway: &str) -> TargetCall {
        let mut inner = self.lock();
        if inner.sick.contains(gateway) {
            return if inner.rng.random_bool(0.5) {
                TargetCall::FailsAfter
            } else {
                TargetCall::HangsAfter
            };
        }
        let p = inner.fail_apply_per_mille;
        if p == 0 || inner.rng.random_range(0..1000) >= p {
            return TargetCall::Works;
        }
        match inner.rng.random_range(0..3) {
            0 => TargetCall::FailsBefore,
            1 => TargetCall::FailsAfter,
            _ => TargetCall::HangsAfter,
        }
    }

    pub fn fencing(&self) -> Fencing {
        self.lock().fencing
    }

    pub fn set_fencing(&self, f: Fencing) {
        self.lock().fencing = f;
    }

    pub fn clock_offset(&self, monitor: u64) -> i64 {
        self.lock()
            .clock_offsets
            .get(&monitor)
            .copied()
            .unwrap_or(0)
    }

    pub fn jump_clock(&self, monitor: u64, by_ms: i64) {
        *self.lock().clock_offsets.entry(monitor).or_insert(0) += by_ms;
    }

    pub fn is_paused(&self, gateway: &str) -> bool {
        self.lock().pauses.get(gateway).is_some_and(|p| p.paused)
    }

    pub fn set_paused(&self, gateway: &str, paused: bool) {
        let wakers = {
            let mut inner = self.lock();
            let p = inner.pauses.entry(gateway.to_owned()).or_default();
            p.paused = paused;
            if paused {
                Vec::new()
            } else {
                std::mem::take(&mut p.wakers)
            }
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Park `waker` until `gateway` resumes; false if it is not paused.
    pub fn park(&self, gateway: &str, waker: &Waker) -> bool {
        let mut inner = self.lock();
        match inner.pauses.get_mut(gateway) {
            Some(p) if p.paused => {
                p.wakers.push(waker.clone());
                true
            }
            _ => false,
        }
    }

    // -- monitors' disks --------------------------------------------------------------------

    pub fn store(&self, monitor: u64) -> MemStore {
        self.lock().stores.entry(monitor).or_default().clone()
    }

    // -- the operator -------------------------------------------------------------------------

    pub fn queue_admin(&self, id: u64, op: AdminOp) {
        self.lock().admin_queue.push((id, op));
    }

    pub fn next_admin(&self) -> Option<(u64, AdminOp)> {
        let mut inner = self.lock();
        if inner.admin_queue.is_empty() {
            None
        } else {
            Some(inner.admin_queue.remove(0))
        }
    }

    /// Whether the operator has commands left.
    pub fn admin_pending(&self) -> bool {
        !self.lock().admin_queue.is_empty()
    }

    /// Ask the operator to read the final state back once its queue is empty.
    /// Have the compute node report `replica` faulty.
    pub fn request_faulty(&self, replica: &str) {
        self.lock().faulty_requests.push(replica.to_owned());
    }

    pub fn take_faulty_requests(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().faulty_requests)
    }

    pub fn request_read(&self) {
        self.lock().read_requested = true;
    }

    /// Whether the final state was read back.
    pub fn read_done(&self) -> bool {
        self.lock().read_done
    }

    /// Whether a read was asked for (and forget the request).
    pub fn take_read_request(&self) -> bool {
        std::mem::take(&mut self.lock().read_requested)
    }
}
