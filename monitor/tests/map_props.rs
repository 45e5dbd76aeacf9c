//! Property tests of the map engine over random command sequences, garbage included.
//!
//! After every command: at most one gateway optimized per ANA group, no gateway allowed to
//! serve before every earlier server was fenced or confirmed (checked by the harness's own
//! bookkeeping, not the engine's), epochs never going back, refusals changing nothing and
//! no panic. After the faults stop and the gateways behave: every ANA group with namespaces
//! and at least one gateway able to serve has exactly one active gateway.

mod common;

use std::collections::BTreeMap;

use common::{ana, subsystem, SafetyWatch};
use gwmon_monitor::map::{
    AdminState, AnaState, Availability, Command, DisasterState, GatewayMap, MapConfig, Timestamp,
};
use gwmon_proto::domain::{
    Epoch, GatewayId, GatewayReport, GroupKey, Location, ReportedAvailability,
};
use proptest::prelude::*;

const GATEWAYS: u8 = 6;
const KEYS: u8 = 3;
const LOCATIONS: [&str; 3] = ["", "east", "west"];

#[derive(Debug, Clone)]
enum Op {
    Create(u8, u8),
    Delete(u8, u8),
    Admin(u8, u8, bool),
    SetLocation(u8, u8, u8),
    DisasterSet(u8, u8),
    DisasterClear(u8, u8),
    Beacon {
        gw: u8,
        key: u8,
        availability: u8,
        groups: Vec<u8>,
        listener: bool,
        epoch: u8,
        seq: u8,
    },
    TimedOut(u8, u8),
    FenceDone(u8),
    FenceGarbage(u8, u8, u64),
    Tick(u32),
    Config(u32, u64),
    /// The leader raises the feature level (new rules from this command on), or asks for
    /// one this build does not apply (refused).
    Features(u32),
    /// The leader's namespace balancing step in a group, of at most so many moves.
    Balance(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let g = 0..GATEWAYS;
    let k = 0..KEYS;
    prop_oneof![
        3 => (g.clone(), k.clone()).prop_map(|(g, k)| Op::Create(g, k)),
        1 => (g.clone(), k.clone()).prop_map(|(g, k)| Op::Delete(g, k)),
        1 => (g.clone(), k.clone(), any::<bool>()).prop_map(|(g, k, e)| Op::Admin(g, k, e)),
        1 => (g.clone(), k.clone(), 0..3u8).prop_map(|(g, k, l)| Op::SetLocation(g, k, l)),
        1 => (k.clone(), 0..3u8).prop_map(|(k, l)| Op::DisasterSet(k, l)),
        1 => (k.clone(), 0..3u8).prop_map(|(k, l)| Op::DisasterClear(k, l)),
        8 => (g.clone(), k.clone(), 0..3u8, prop::collection::vec(1..7u8, 0..4), any::<bool>(), 0..4u8, 0..5u8)
            .prop_map(|(gw, key, availability, groups, listener, epoch, seq)| Op::Beacon {
                gw, key, availability, groups, listener, epoch, seq,
            }),
        2 => (g.clone(), k.clone()).prop_map(|(g, k)| Op::TimedOut(g, k)),
        3 => any::<u8>().prop_map(Op::FenceDone),
        1 => (g, k.clone(), any::<u64>()).prop_map(|(g, k, e)| Op::FenceGarbage(g, k, e)),
        3 => (0..40_000u32).prop_map(Op::Tick),
        1 => (0..6u32, 0..60_000u64).prop_map(|(m, t)| Op::Config(m, t)),
        1 => (0..5u32).prop_map(Op::Features),
        2 => (k, 1..4u8).prop_map(|(k, m)| Op::Balance(k, m)),
    ]
}

/// One beacon's shape: what it reports, which epoch it claims, which sequence number.
struct Beat<'a> {
    availability: ReportedAvailability,
    groups: &'a [u32],
    listener: bool,
    /// 0: claims nothing applied; 1: one epoch behind; else the slice's epoch.
    epoch_mode: u8,
    /// 0: late or repeated; 1: zero (a new sequence); else the next.
    seq_mode: u8,
}

impl<'a> Beat<'a> {
    fn healthy(availability: ReportedAvailability, groups: &'a [u32]) -> Self {
        let starting = availability == ReportedAvailability::Starting;
        Beat {
            availability,
            groups,
            listener: true,
            epoch_mode: 2,
            seq_mode: if starting { 1 } else { 2 },
        }
    }
}

struct World {
    map: GatewayMap,
    now: u64,
    watch: SafetyWatch,
    seqs: BTreeMap<(GroupKey, GatewayId), u64>,
    refused: usize,
}

fn gw(i: u8) -> GatewayId {
    format!("gw{i}").parse().expect("gateway id")
}

fn key(i: u8) -> GroupKey {
    GroupKey::new(
        "rbd".parse().expect("pool"),
        format!("g{i}").parse().expect("group"),
    )
}

fn loc(i: u8) -> Location {
    LOCATIONS[usize::from(i) % LOCATIONS.len()]
        .parse()
        .expect("location")
}

impl World {
    fn new() -> Self {
        World {
            map: GatewayMap::new(MapConfig {
                max_gateways_per_group: 4,
                ..MapConfig::default()
            })
            .expect("config"),
            now: 1_000_000,
            watch: SafetyWatch::default(),
            seqs: BTreeMap::new(),
            refused: 0,
        }
    }

    fn apply(&mut self, cmd: Command) -> bool {
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
        if let Err(e) = &result {
            assert!(
                !matches!(e, gwmon_monitor::map::MapError::Invariant(_)),
                "{cmd:?} hit an invariant: the engine tried to build an unsafe map: {e}"
            );
            self.refused += 1;
            assert_eq!(before, self.map, "refused {cmd:?} changed the map");
        }
        self.watch.check(&self.map);
        result.is_ok()
    }

    fn beacon(&mut self, k: &GroupKey, g: &GatewayId, beat: Beat<'_>) {
        let Beat {
            availability,
            groups,
            listener,
            epoch_mode,
            seq_mode,
        } = beat;
        let slice = self.map.slice(k, g);
        let mut sub = subsystem(g, groups, 1);
        if !listener {
            sub.listeners.clear();
        }
        // A gateway that applied the current slice has its namespaces where it places them.
        if let Some(slice) = slice.as_ref().filter(|_| epoch_mode >= 2) {
            for n in &mut sub.namespaces {
                if let Some(placed) = slice.placement(&sub.nqn, n.nsid) {
                    n.ana_group = placed;
                }
            }
        }
        let last = self.seqs.get(&(k.clone(), g.clone())).copied().unwrap_or(0);
        let seq = match seq_mode {
            0 => last.saturating_sub(1), // late or repeated
            1 => 0,
            _ => last + 1,
        };
        let current = slice.as_ref().map_or(Epoch::ZERO, |s| s.epoch);
        let applied = match epoch_mode {
            0 => Epoch::ZERO,
            1 => Epoch(current.0.saturating_sub(1)),
            _ => current,
        };
        let fence = slice
            .as_ref()
            .map_or(Epoch::ZERO, common::served_fence_epoch);
        let report = GatewayReport {
            seq,
            availability,
            subsystems: vec![sub],
            applied_epoch: applied,
            fence_epoch: fence,
        };
        // As the leader commits it: from feature level 2, a beacon that only confirms
        // epochs becomes the small confirmation.
        let cmd = self.map.beacon_command(k, g, report);
        if self.apply(cmd) {
            self.seqs.insert((k.clone(), g.clone()), seq);
        }
    }

    fn pending_fences(&self) -> Vec<(GroupKey, GatewayId, Epoch)> {
        self.map
            .groups()
            .iter()
            .flat_map(|(k, g)| {
                g.fences
                    .iter()
                    .filter(|f| f.completed_at.is_none())
                    .map(move |f| (k.clone(), f.gateway.clone(), f.epoch))
            })
            .collect()
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Create(g, k) => {
                self.apply(Command::CreateGateway {
                    key: key(*k),
                    gateway: gw(*g),
                });
            }
            Op::Delete(g, k) => {
                self.apply(Command::DeleteGateway {
                    key: key(*k),
                    gateway: gw(*g),
                });
            }
            Op::Admin(g, k, enabled) => {
                self.apply(Command::SetAdminState {
                    key: key(*k),
                    gateway: gw(*g),
                    enabled: *enabled,
                });
            }
            Op::SetLocation(g, k, l) => {
                self.apply(Command::SetLocation {
                    key: key(*k),
                    gateway: gw(*g),
                    location: loc(*l),
                });
            }
            Op::DisasterSet(k, l) => {
                self.apply(Command::DisasterSet {
                    key: key(*k),
                    location: loc(*l),
                });
            }
            Op::DisasterClear(k, l) => {
                self.apply(Command::DisasterClear {
                    key: key(*k),
                    location: loc(*l),
                });
            }
            Op::Beacon {
                gw: g,
                key: k,
                availability,
                groups,
                listener,
                epoch,
                seq,
            } => {
                let availability = match availability {
                    0 => ReportedAvailability::Starting,
                    1 => ReportedAvailability::Available,
                    _ => ReportedAvailability::Unavailable,
                };
                let groups: Vec<u32> = groups.iter().map(|&n| u32::from(n)).collect();
                self.beacon(
                    &key(*k),
                    &gw(*g),
                    Beat {
                        availability,
                        groups: &groups,
                        listener: *listener,
                        epoch_mode: *epoch,
                        seq_mode: *seq,
                    },
                );
            }
            Op::TimedOut(g, k) => {
                self.apply(Command::GatewayTimedOut {
                    key: key(*k),
                    gateway: gw(*g),
                });
            }
            Op::FenceDone(i) => {
                let pending = self.pending_fences();
                if let Some((k, g, e)) = pending.get(usize::from(*i) % pending.len().max(1)) {
                    self.apply(Command::FenceCompleted {
                        key: k.clone(),
                        gateway: g.clone(),
                        epoch: *e,
                    });
                }
            }
            Op::FenceGarbage(g, k, e) => {
                self.apply(Command::FenceCompleted {
                    key: key(*k),
                    gateway: gw(*g),
                    epoch: Epoch(*e),
                });
            }
            Op::Tick(ms) => {
                self.now += u64::from(*ms);
                self.apply(Command::TimerTick);
            }
            Op::Config(max, timeout) => {
                // Valid and invalid alike: an invalid one must be refused and change nothing.
                self.apply(Command::SetConfig(MapConfig {
                    max_gateways_per_group: *max,
                    fence_timeout_ms: *timeout,
                    ..MapConfig::default()
                }));
            }
            Op::Features(level) => {
                self.apply(Command::SetFeatures(*level));
            }
            Op::Balance(k, max) => {
                let now = Timestamp(self.now);
                let moves = self
                    .map
                    .group(&key(*k))
                    .map(|g| g.plan_moves(usize::from(*max), now))
                    .unwrap_or_default();
                if !moves.is_empty() {
                    self.apply(Command::MoveNamespaces {
                        key: key(*k),
                        moves,
                    });
                }
            }
        }
    }

    /// Faults stop: every gateway restarts if it must, serves namespaces in every ANA group
    /// of its group and beacons its slice back; fences complete; time passes.
    fn heal(&mut self) {
        for round in 0..12 {
            for (k, g, e) in self.pending_fences() {
                self.apply(Command::FenceCompleted {
                    key: k,
                    gateway: g,
                    epoch: e,
                });
            }
            let members: Vec<(GroupKey, GatewayId, Availability, bool, Vec<u32>)> = self
                .map
                .groups()
                .iter()
                .flat_map(|(k, grp)| {
                    let groups: Vec<u32> = grp.ana.keys().map(|g| g.get()).collect();
                    grp.gateways.iter().map(move |(id, gw)| {
                        (
                            k.clone(),
                            id.clone(),
                            gw.availability,
                            gw.performed_full_startup,
                            groups.clone(),
                        )
                    })
                })
                .collect();
            for (k, g, availability, started, groups) in members {
                match availability {
                    Availability::Deleting => continue,
                    Availability::Unavailable if !started || round == 0 => {
                        self.beacon(
                            &k,
                            &g,
                            Beat::healthy(ReportedAvailability::Starting, &groups),
                        );
                    }
                    _ => {}
                }
                self.beacon(
                    &k,
                    &g,
                    Beat::healthy(ReportedAvailability::Available, &groups),
                );
            }
            self.now += if round < 8 { 3_000 } else { 20_000 };
            self.apply(Command::TimerTick);
        }
    }

    /// Every ANA group with namespaces and a gateway able to serve is active on exactly one.
    fn assert_settled(&self) {
        for (k, grp) in self.map.groups() {
            for g in grp.ana.keys() {
                if grp.namespaces_in(*g, false) == 0 {
                    continue;
                }
                let can_serve = grp.gateways.values().any(|gw| {
                    gw.availability == Availability::Available
                        && gw.admin == AdminState::Enabled
                        && grp.disaster.get(&gw.location) != Some(&DisasterState::Disaster)
                });
                if !can_serve {
                    continue;
                }
                let active: Vec<&GatewayId> = grp
                    .gateways
                    .keys()
                    .filter(|id| grp.ana_state(id, *g) == AnaState::Active)
                    .collect();
                assert_eq!(
                    active.len(),
                    1,
                    "{k} ANA group {g}: active on {active:?} after healing; holder {:?}, unreleased {:?}",
                    grp.ana[g].holder,
                    grp.ana[g].unreleased.keys().collect::<Vec<_>>()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_never_break_safety_and_always_heal(ops in prop::collection::vec(op(), 1..80)) {
        let mut world = World::new();
        for op in &ops {
            world.run(op);
        }
        world.heal();
        world.assert_settled();
    }
}

/// Byte garbage fed to the decoders is refused, never a panic.
#[test]
fn garbage_bytes_never_decode_into_a_map_or_command() {
    use gwmon_monitor::codec;
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            let _ = codec::decode::<GatewayMap>(&bytes);
            let _ = codec::decode::<Command>(&bytes);
            Ok(())
        })
        .expect("no panic");
    assert!(codec::decode::<GatewayMap>(&[]).is_err());
    assert!(
        codec::decode::<GatewayMap>(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err()
    );
}

#[test]
fn the_proptest_universe_reaches_interesting_states() {
    // Guard against a generator that never gets anywhere: a fixed long sequence from the
    // same universe must produce failovers, fences and failbacks.
    let mut world = World::new();
    let k = key(0);
    for i in 0..3 {
        world.run(&Op::Create(i, 0));
    }
    for i in 0..3 {
        let g = gw(i);
        world.beacon(
            &k,
            &g,
            Beat::healthy(ReportedAvailability::Starting, &[1, 2, 3]),
        );
        world.beacon(
            &k,
            &g,
            Beat::healthy(ReportedAvailability::Available, &[1, 2, 3]),
        );
    }
    world.heal();
    world.run(&Op::TimedOut(0, 0));
    assert_eq!(world.pending_fences().len(), 1);
    world.heal();
    world.assert_settled();
    let grp = world.map.group(&k).expect("group");
    assert_eq!(
        grp.ana_state(&gw(0), ana(1)),
        AnaState::Active,
        "owner back after heal"
    );
    assert!(world.watch.steps > 20);

    // And namespace moves: three namespaces all in ANA group 1 are spread, one each.
    world.run(&Op::Features(3));
    for i in 0..3 {
        world.beacon(
            &k,
            &gw(i),
            Beat::healthy(ReportedAvailability::Available, &[1, 1, 1]),
        );
    }
    world.run(&Op::Balance(0, 3));
    let grp = world.map.group(&k).expect("group");
    assert_eq!(grp.placement.moving.len(), 2, "two of three move");
    for _ in 0..3 {
        for i in 0..3 {
            world.beacon(
                &k,
                &gw(i),
                Beat::healthy(ReportedAvailability::Available, &[1, 1, 1]),
            );
        }
    }
    let grp = world.map.group(&k).expect("group");
    assert!(grp.placement.moving.is_empty(), "the moves completed");
    let mut counts: Vec<usize> = grp
        .namespace_locations()
        .values()
        .fold(std::collections::BTreeMap::new(), |mut m, g| {
            *m.entry(*g).or_insert(0usize) += 1;
            m
        })
        .into_values()
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 1]);
}
