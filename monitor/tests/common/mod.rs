//! A test harness around the pure map engine: a clock, helpers that act like gateways, and
//! a safety watch that checks the map after every single command.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use gwmon_monitor::map::placement::NsKey;
use gwmon_monitor::map::{
    AnaState, Applied, Availability, Command, DisasterState, GatewayMap, MapConfig, MapError,
    Timestamp,
};
use gwmon_proto::domain::{
    AnaAccess, AnaGroupId, Epoch, GatewayId, GatewayReport, GroupKey, Listener, Location, MapSlice,
    Namespace, Nqn, ReportedAvailability, Subsystem,
};

pub fn gw(s: &str) -> GatewayId {
    s.parse().expect("test gateway id")
}

pub fn ana(n: u32) -> AnaGroupId {
    AnaGroupId::new(n).expect("test ANA group id")
}

pub fn key(pool: &str, group: &str) -> GroupKey {
    GroupKey::new(
        pool.parse().expect("test pool"),
        group.parse().expect("test group"),
    )
}

pub fn loc(s: &str) -> Location {
    s.parse().expect("test location")
}

/// A subsystem with one listener and `per_group` namespaces in each of `groups`, each with
/// a nonce naming the gateway, as a Ceph gateway reports its RADOS client addresses.
pub fn subsystem(gateway: &GatewayId, groups: &[u32], per_group: u32) -> Subsystem {
    let nqn: Nqn = "nqn.2016-06.io.spdk:cnode1".parse().expect("test nqn");
    let mut namespaces = Vec::new();
    let mut nsid = 1;
    for &g in groups {
        for _ in 0..per_group {
            namespaces.push(Namespace {
                nsid,
                ana_group: ana(g),
                nonce: Some(format!("{gateway}-client-{g}").parse().expect("test nonce")),
            });
            nsid += 1;
        }
    }
    Subsystem {
        nqn,
        listeners: vec![Listener {
            address: "127.0.0.1".parse().expect("test address"),
            port: 4420,
        }],
        namespaces,
    }
}

/// Checks, after every command, the safety rules as an outside observer sees them through
/// the map slices: at most one gateway optimized per ANA group; epochs never go back; and a
/// gateway is allowed to serve an ANA group only once every gateway that was allowed before
/// it has been fenced (a completed fence) or has confirmed it applied the map that stopped
/// it. The watch keeps its own record; it does not trust the engine's bookkeeping.
#[derive(Default)]
pub struct SafetyWatch {
    map_epoch: Epoch,
    group_epochs: BTreeMap<GroupKey, Epoch>,
    /// Per ANA group: gateways once allowed to serve it, and the group epoch from which they
    /// were no longer allowed (`None` while they still are).
    servers: BTreeMap<(GroupKey, AnaGroupId), BTreeMap<GatewayId, Option<Epoch>>>,
    /// The same per namespace: a namespace is served where the slice lets a gateway serve
    /// the ANA group the namespace is in there (placed by the slice, else as it reports it).
    ns_servers: BTreeMap<(GroupKey, Nqn, u32), BTreeMap<GatewayId, Option<Epoch>>>,
    pub steps: usize,
}

/// Forget the gateways of `record` that stopped serving at an epoch they have since
/// applied, or were fenced at or after.
fn release_confirmed(
    record: &mut BTreeMap<GatewayId, Option<Epoch>>,
    group: &gwmon_monitor::map::GroupState,
) {
    record.retain(|id, stopped| match stopped {
        None => true,
        Some(e) => {
            let confirmed = group
                .gateways
                .get(id)
                .is_some_and(|x| x.applied_epoch >= *e);
            let fenced = group
                .fences
                .iter()
                .any(|f| &f.gateway == id && f.epoch >= *e && f.completed_at.is_some());
            !(confirmed || fenced)
        }
    });
}

impl SafetyWatch {
    pub fn check(&mut self, map: &GatewayMap) {
        self.steps += 1;
        assert!(map.epoch() >= self.map_epoch, "map epoch went back");
        self.map_epoch = map.epoch();
        for (key, group) in map.groups() {
            let last = self.group_epochs.entry(key.clone()).or_default();
            assert!(group.epoch >= *last, "group {key} epoch went back");
            *last = group.epoch;

            let slices: BTreeMap<GatewayId, MapSlice> = group
                .gateways
                .keys()
                .filter_map(|id| group.slice(id).map(|s| (id.clone(), s)))
                .collect();
            let ana_ids: BTreeSet<AnaGroupId> = group.ana.keys().copied().collect();
            for g in &ana_ids {
                let optimized: Vec<&GatewayId> = slices
                    .iter()
                    .filter(|(_, s)| s.ana(*g).is_some_and(|v| v.access == AnaAccess::Optimized))
                    .map(|(id, _)| id)
                    .collect();
                assert!(
                    optimized.len() <= 1,
                    "{key} ANA group {g} optimized on {optimized:?}"
                );
                let serving: Vec<&GatewayId> = slices
                    .iter()
                    .filter(|(_, s)| {
                        s.ana(*g)
                            .is_some_and(|v| v.access == AnaAccess::Optimized && v.fence_complete)
                    })
                    .map(|(id, _)| id)
                    .collect();
                let record = self.servers.entry((key.clone(), *g)).or_default();
                // Who stopped being allowed, and who is released now.
                for (id, stopped) in record.iter_mut() {
                    if stopped.is_none() && !serving.contains(&id) {
                        *stopped = Some(group.epoch);
                    }
                }
                release_confirmed(record, group);
                for s in serving {
                    let blockers: Vec<&GatewayId> =
                        record.keys().filter(|other| *other != s).collect();
                    assert!(
                        blockers.is_empty(),
                        "{key} ANA group {g}: {s} may serve while {blockers:?} were neither fenced nor confirmed"
                    );
                    record.insert(s.clone(), None);
                }
            }
            // ANA groups that no longer exist have no servers left to worry about.
            self.servers
                .retain(|(k, g), _| k != key || ana_ids.contains(g));
            self.check_namespaces(key, group, &slices);
        }
    }

    /// Every namespace is served by at most one gateway, and by a new one only once every
    /// gateway that served it before was fenced or confirmed the map that stopped it: the
    /// namespace moves of balancing are held to the rule failovers are.
    fn check_namespaces(
        &mut self,
        key: &GroupKey,
        group: &gwmon_monitor::map::GroupState,
        slices: &BTreeMap<GatewayId, MapSlice>,
    ) {
        let mut serving: BTreeMap<(Nqn, u32), Vec<GatewayId>> = BTreeMap::new();
        for (id, slice) in slices {
            let Some(gateway) = group.gateways.get(id) else {
                continue;
            };
            for sub in gateway.subsystems.iter() {
                for n in &sub.namespaces {
                    let g = slice.placement(&sub.nqn, n.nsid).unwrap_or(n.ana_group);
                    if slice
                        .ana(g)
                        .is_some_and(|v| v.access == AnaAccess::Optimized && v.fence_complete)
                    {
                        serving
                            .entry((sub.nqn.clone(), n.nsid))
                            .or_default()
                            .push(id.clone());
                    }
                }
            }
        }
        for ((k, nqn, nsid), record) in self.ns_servers.iter_mut() {
            if k != key {
                continue;
            }
            let now = serving.get(&(nqn.clone(), *nsid));
            for (id, stopped) in record.iter_mut() {
                if stopped.is_none() && !now.is_some_and(|s| s.contains(id)) {
                    *stopped = Some(group.epoch);
                }
            }
            release_confirmed(record, group);
        }
        for ((nqn, nsid), servers) in serving {
            // Gateways provisioned with a namespace in different ANA groups serve it from
            // both, whatever the monitors do; only what they placed is theirs to answer for.
            let placed = group.placement.assigned.contains_key(&NsKey {
                nqn: nqn.clone(),
                nsid,
            });
            assert!(
                !placed || servers.len() <= 1,
                "{key} namespace {nsid} of {nqn} served by {servers:?} at once"
            );
            let record = self
                .ns_servers
                .entry((key.clone(), nqn.clone(), nsid))
                .or_default();
            for s in servers {
                let blockers: Vec<&GatewayId> = record.keys().filter(|o| **o != s).collect();
                assert!(
                    !placed || blockers.is_empty(),
                    "{key} namespace {nsid} of {nqn}: {s} may serve it while {blockers:?} were neither fenced nor confirmed"
                );
                record.insert(s, None);
            }
        }
    }
}

/// A map, a clock and per-gateway beacon sequence numbers.
pub struct Harness {
    pub map: GatewayMap,
    pub now: u64,
    pub key: GroupKey,
    pub watch: SafetyWatch,
    seqs: BTreeMap<GatewayId, u64>,
    pub events: Vec<gwmon_monitor::map::Event>,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(MapConfig::default())
    }

    pub fn with_config(config: MapConfig) -> Self {
        Harness {
            map: GatewayMap::new(config).expect("valid config"),
            now: 1_000_000,
            key: key("rbd", "grp1"),
            watch: SafetyWatch::default(),
            seqs: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Apply a command; on refusal check that nothing changed. The watch runs either way.
    pub fn apply(&mut self, cmd: Command) -> Result<Applied, MapError> {
        let before = self.map.clone();
        // The leader's cheap question before proposing a tick gets the tick's own answer.
        let predicted =
            (cmd == Command::TimerTick).then(|| self.map.tick_would_change(Timestamp(self.now)));
        let result = self.map.apply(&cmd, Timestamp(self.now));
        if let Some(predicted) = predicted {
            assert_eq!(
                predicted,
                result.as_ref().is_ok_and(|a| a.changed),
                "tick_would_change disagrees with the tick"
            );
        }
        match &result {
            Ok(applied) => self.events.extend(applied.events.iter().cloned()),
            Err(MapError::Invariant(e)) => panic!("the engine tried to build an unsafe map: {e}"),
            Err(_) => assert_eq!(before, self.map, "a refused command changed the map"),
        }
        self.watch.check(&self.map);
        result
    }

    pub fn ok(&mut self, cmd: Command) -> Applied {
        let shown = format!("{cmd:?}");
        match self.apply(cmd) {
            Ok(a) => a,
            Err(e) => panic!("{shown} refused: {e}"),
        }
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    pub fn tick(&mut self, ms: u64) -> Applied {
        self.advance(ms);
        self.ok(Command::TimerTick)
    }

    pub fn create(&mut self, id: &str) {
        self.ok(Command::CreateGateway {
            key: self.key.clone(),
            gateway: gw(id),
        });
    }

    pub fn report(
        &mut self,
        id: &str,
        availability: ReportedAvailability,
        subsystems: Vec<Subsystem>,
    ) -> Result<Applied, MapError> {
        let gateway = gw(id);
        let slice = self.map.slice(&self.key, &gateway);
        let seq = match availability {
            ReportedAvailability::Starting => 0,
            _ => self.seqs.get(&gateway).map_or(1, |s| s + 1),
        };
        self.seqs.insert(gateway.clone(), seq);
        let report = GatewayReport {
            seq,
            availability,
            subsystems,
            applied_epoch: slice.as_ref().map_or(Epoch::ZERO, |s| s.epoch),
            fence_epoch: slice.as_ref().map_or(Epoch::ZERO, served_fence_epoch),
        };
        self.apply(Command::GatewayReport {
            key: self.key.clone(),
            gateway,
            report,
        })
    }

    /// What a healthy gateway does: applies its slice and beacons it back, serving the
    /// namespaces of `groups`.
    pub fn serve(&mut self, id: &str, groups: &[u32]) {
        let sub = subsystem(&gw(id), groups, 2);
        if let Err(e) = self.report(id, ReportedAvailability::Available, vec![sub]) {
            panic!("beacon of {id} refused: {e}");
        }
    }

    /// A process start: the `Starting` beacon, then serving.
    pub fn boot(&mut self, id: &str, groups: &[u32]) {
        if let Err(e) = self.report(id, ReportedAvailability::Starting, vec![]) {
            panic!("start of {id} refused: {e}");
        }
        self.serve(id, groups);
    }

    pub fn time_out(&mut self, id: &str) {
        self.ok(Command::GatewayTimedOut {
            key: self.key.clone(),
            gateway: gw(id),
        });
    }

    /// Complete every pending fence, as a working fencer would.
    pub fn complete_fences(&mut self) -> usize {
        let pending: Vec<(GroupKey, GatewayId, Epoch)> = self
            .map
            .groups()
            .iter()
            .flat_map(|(k, g)| {
                g.fences
                    .iter()
                    .filter(|f| f.completed_at.is_none())
                    .map(|f| (k.clone(), f.gateway.clone(), f.epoch))
            })
            .collect();
        let n = pending.len();
        for (key, gateway, epoch) in pending {
            self.ok(Command::FenceCompleted {
                key,
                gateway,
                epoch,
            });
        }
        n
    }

    pub fn state(&self, id: &str, g: u32) -> AnaState {
        self.map
            .group(&self.key)
            .expect("group exists")
            .ana_state(&gw(id), ana(g))
    }

    pub fn availability(&self, id: &str) -> Option<Availability> {
        self.map
            .group(&self.key)?
            .gateways
            .get(&gw(id))
            .map(|g| g.availability)
    }

    /// The gateway whose slice says it may serve ANA group `g` now.
    pub fn server_of(&self, g: u32) -> Option<GatewayId> {
        let group = self.map.group(&self.key)?;
        group
            .gateways
            .keys()
            .find(|id| {
                group.slice(id).is_some_and(|s| {
                    s.ana(ana(g))
                        .is_some_and(|v| v.access == AnaAccess::Optimized && v.fence_complete)
                })
            })
            .cloned()
    }

    pub fn group_epoch(&self) -> Epoch {
        self.map.group(&self.key).map_or(Epoch::ZERO, |g| g.epoch)
    }

    pub fn pending_fences(&self) -> usize {
        self.map.group(&self.key).map_or(0, |g| {
            g.fences.iter().filter(|f| f.completed_at.is_none()).count()
        })
    }

    pub fn disaster(&self, l: &str) -> Option<DisasterState> {
        self.map.group(&self.key)?.disaster.get(&loc(l)).copied()
    }

    pub fn count_events(&self, pred: impl Fn(&gwmon_monitor::map::Event) -> bool) -> usize {
        self.events.iter().filter(|e| pred(e)).count()
    }
}

/// The fence epoch a gateway reports: the newest one among the groups it is allowed to serve.
pub fn served_fence_epoch(slice: &MapSlice) -> Epoch {
    slice
        .ana_groups
        .iter()
        .filter(|v| v.access == AnaAccess::Optimized && v.fence_complete)
        .map(|v| v.fence_epoch)
        .max()
        .unwrap_or(Epoch::ZERO)
}
