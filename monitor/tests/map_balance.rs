//! Namespace balancing in the engine: moves spread namespaces over the ANA groups, drain a
//! deleted gateway's group, and hand each namespace over as a failback hands over a group:
//! never served by two gateways, the new one only after the old one let go or was fenced.
//! The harness's safety watch checks that per namespace after every command, from the
//! slices and what each gateway's target holds.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use gwmon_monitor::codec;
use gwmon_monitor::map::placement::{NsKey, PAUSE_AFTER_GIVING_UP_MS};
use gwmon_monitor::map::{Availability, Command, Event, GatewayMap, MapError};
use gwmon_proto::domain::{Listener, Namespace, Nqn, ReportedAvailability, Subsystem};

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

fn nqn() -> Nqn {
    NQN.parse().expect("test nqn")
}

/// Gateways whose targets hold the same namespaces, each provisioned in an ANA group and
/// moved where the last slice a gateway applied placed it.
struct Fleet {
    h: Harness,
    provisioned: BTreeMap<u32, u32>,
    /// Per gateway: nsid to the ANA group its target has the namespace in.
    targets: BTreeMap<String, BTreeMap<u32, u32>>,
    /// Gateways whose target cannot move namespaces (an older release, say).
    stuck: BTreeSet<String>,
}

impl Fleet {
    /// `gateways` created in order (ANA groups 1, 2, ...), booted and serving their own
    /// groups, with `namespaces` as (nsid, ANA group), at feature level 3.
    fn new(gateways: &[&str], namespaces: &[(u32, u32)]) -> Fleet {
        let mut f = Fleet {
            h: Harness::new(),
            provisioned: namespaces.iter().copied().collect(),
            targets: BTreeMap::new(),
            stuck: BTreeSet::new(),
        };
        f.h.ok(Command::SetFeatures(3));
        for id in gateways {
            f.h.create(id);
        }
        for id in gateways {
            f.restart(id);
        }
        f.settle();
        for (i, id) in gateways.iter().enumerate() {
            let own = u32::try_from(i + 1).expect("few gateways");
            assert_eq!(
                f.h.server_of(own),
                Some(gw(id)),
                "{id} serves its own group"
            );
        }
        f
    }

    fn subsystem(&self, id: &str) -> Subsystem {
        Subsystem {
            nqn: nqn(),
            listeners: vec![Listener {
                address: "127.0.0.1".parse().expect("address"),
                port: 4420,
            }],
            namespaces: self
                .targets
                .get(id)
                .into_iter()
                .flatten()
                .map(|(nsid, g)| Namespace {
                    nsid: *nsid,
                    ana_group: ana(*g),
                    nonce: Some(format!("{id}-client").parse().expect("nonce")),
                })
                .collect(),
        }
    }

    /// A new process: its target as provisioned, a `Starting` beacon, then a beacon.
    fn restart(&mut self, id: &str) {
        self.targets.insert(id.to_owned(), self.provisioned.clone());
        let sub = self.subsystem(id);
        if let Err(e) = self.h.report(id, ReportedAvailability::Starting, vec![sub]) {
            panic!("start of {id} refused: {e}");
        }
        self.beacon(id);
    }

    /// What a gateway does with its slice: puts the namespaces where it says (unless its
    /// target cannot), then beacons what its target holds and the epoch it applied.
    fn beacon(&mut self, id: &str) {
        if let Some(slice) = self.h.map.slice(&self.h.key, &gw(id)) {
            if !self.stuck.contains(id) {
                let target = self.targets.entry(id.to_owned()).or_default();
                for p in &slice.placements {
                    if let Some(g) = target.get_mut(&p.nsid) {
                        *g = p.ana_group.get();
                    }
                }
            }
        }
        let sub = self.subsystem(id);
        if let Err(e) = self
            .h
            .report(id, ReportedAvailability::Available, vec![sub])
        {
            panic!("beacon of {id} refused: {e}");
        }
    }

    fn live(&self) -> Vec<String> {
        self.h
            .map
            .group(&self.h.key)
            .map(|g| {
                g.gateways
                    .iter()
                    .filter(|(_, gw)| gw.availability == Availability::Available)
                    .map(|(id, _)| id.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every live gateway beacons, then time passes a little.
    fn settle(&mut self) {
        for _ in 0..3 {
            for id in self.live() {
                self.beacon(&id);
            }
            self.h.tick(100);
        }
    }

    /// The leader's step: plan up to `max` moves and commit them. How many.
    fn step(&mut self, max: usize) -> usize {
        let now = gwmon_monitor::map::Timestamp(self.h.now);
        let moves = self
            .h
            .map
            .group(&self.h.key)
            .map(|g| g.plan_moves(max, now))
            .unwrap_or_default();
        let n = moves.len();
        if n > 0 {
            self.h.ok(Command::MoveNamespaces {
                key: self.h.key.clone(),
                moves,
            });
        }
        n
    }

    /// Namespaces per ANA group, as the map counts them.
    fn counts(&self) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        if let Some(g) = self.h.map.group(&self.h.key) {
            for at in g.namespace_locations().values() {
                *out.entry(at.get()).or_default() += 1;
            }
        }
        out
    }

    fn moving(&self) -> usize {
        self.h
            .map
            .group(&self.h.key)
            .map_or(0, |g| g.placement.moving.len())
    }

    fn placed_for(&self, id: &str, nsid: u32) -> Option<u32> {
        self.h
            .map
            .slice(&self.h.key, &gw(id))
            .and_then(|s| s.placement(&nqn(), nsid))
            .map(|g| g.get())
    }

    /// Steps and beacons (in the order given) until nothing moves.
    fn balance(&mut self, max: usize, order: &[&str]) -> usize {
        let mut rounds = 0;
        loop {
            let moved = self.step(max);
            if moved == 0 && self.moving() == 0 {
                self.settle();
                return rounds;
            }
            rounds += 1;
            assert!(rounds < 50, "balancing does not end: {:?}", self.counts());
            for id in order {
                if self.live().iter().any(|l| l == id) {
                    self.beacon(id);
                }
            }
            self.h.tick(50);
        }
    }
}

fn all_in(group: u32, n: u32) -> Vec<(u32, u32)> {
    (1..=n).map(|nsid| (nsid, group)).collect()
}

#[test]
fn namespaces_spread_over_the_ana_groups_until_within_one() {
    let mut f = Fleet::new(&["a", "b", "c"], &all_in(1, 13));
    assert_eq!(f.counts(), BTreeMap::from([(1, 13)]));
    // The new servers beacon first: each waits for the old one's confirmation.
    let rounds = f.balance(4, &["c", "b", "a"]);
    assert_eq!(f.counts(), BTreeMap::from([(1, 5), (2, 4), (3, 4)]));
    assert!(rounds <= 4, "{rounds} steps of 4 for 8 moves");
    // Every target agrees with the map.
    let group = f.h.map.group(&f.h.key).expect("group");
    let locations = group.namespace_locations();
    for (id, target) in &f.targets {
        for (nsid, g) in target {
            let ns = NsKey {
                nqn: nqn(),
                nsid: *nsid,
            };
            assert_eq!(locations.get(&ns).map(|a| a.get()), Some(*g), "{id} {nsid}");
        }
    }
    // Each namespace is served by the gateway of its ANA group.
    for (nsid, g) in &f.targets["a"] {
        let server = f.h.server_of(*g).expect("served");
        assert_eq!(f.targets[server.as_str()][nsid], *g);
    }
}

/// The interleaving a move must survive: the gateway taking the namespace hears of the move
/// before the one giving it up has applied it. It is told the old ANA group until the old
/// server beacons the namespace in the new one.
#[test]
fn the_new_server_is_told_only_once_the_old_one_let_go() {
    let mut f = Fleet::new(&["a", "b"], &all_in(1, 2));
    assert_eq!(f.step(8), 1);
    let moved = f.moving();
    assert_eq!(moved, 1);
    let nsid =
        *f.h.map
            .group(&f.h.key)
            .expect("group")
            .placement
            .moving
            .keys()
            .next()
            .map(|k| &k.nsid)
            .expect("a move");
    assert_eq!(f.placed_for("a", nsid), Some(2), "the source lets go");
    assert_eq!(f.placed_for("b", nsid), Some(1), "the destination waits");
    f.beacon("b");
    assert_eq!(f.placed_for("b", nsid), Some(1), "still waiting for a");
    assert_eq!(f.moving(), 1);
    f.beacon("a");
    assert_eq!(f.moving(), 0, "a beaconed the namespace in group 2");
    assert_eq!(f.placed_for("b", nsid), Some(2));
    f.beacon("b");
    assert_eq!(f.counts(), BTreeMap::from([(1, 1), (2, 1)]));
    assert_eq!(f.targets["b"][&nsid], 2);
}

/// A source that reports the new epoch but not the namespace moved (a target that cannot
/// move it) never lets the destination serve it: the move is given up after the grace,
/// every gateway is told the old group again, and balancing pauses.
#[test]
fn a_source_that_cannot_move_a_namespace_keeps_it_and_balancing_pauses() {
    let mut f = Fleet::new(&["a", "b"], &all_in(1, 4));
    f.stuck.insert("a".into());
    assert_eq!(f.step(8), 2);
    f.beacon("a");
    f.beacon("b");
    assert_eq!(f.moving(), 2, "a did not move them");
    let grace = f.h.map.config().beacon_grace_ms;
    for _ in 0..(grace / 500 + 1) {
        f.beacon("a");
        f.beacon("b");
        f.h.tick(500);
    }
    assert_eq!(f.moving(), 0, "given up");
    assert_eq!(f.counts(), BTreeMap::from([(1, 4)]));
    for nsid in 1..=4 {
        assert_eq!(f.placed_for("b", nsid).unwrap_or(1), 1);
        assert_eq!(f.targets["b"][&nsid], 1);
    }
    assert_eq!(f.step(8), 0, "paused");
    let paused = |f: &Fleet| {
        gwmon_monitor::admin::health_checks(&f.h.map, gwmon_monitor::map::Timestamp(f.h.now))
            .iter()
            .any(|c| c.code == "NVMEOF_BALANCE_PAUSED")
    };
    assert!(paused(&f), "the operator is told");
    f.h.advance(PAUSE_AFTER_GIVING_UP_MS);
    assert!(!paused(&f));
    f.stuck.clear();
    f.settle();
    f.balance(8, &["a", "b"]);
    assert_eq!(f.counts(), BTreeMap::from([(1, 2), (2, 2)]));
}

/// A source that fails before it confirms is fenced with its ANA group's failover; only
/// then may the destination serve the namespaces it was giving up.
#[test]
fn a_source_that_fails_mid_move_is_fenced_before_its_namespaces_open_elsewhere() {
    let mut f = Fleet::new(&["a", "b", "c"], &all_in(1, 6));
    assert_eq!(f.step(8), 4);
    f.beacon("b");
    f.beacon("c");
    f.h.time_out("a");
    assert_eq!(f.h.availability("a"), Some(Availability::Unavailable));
    f.beacon("b");
    f.beacon("c");
    assert_eq!(f.moving(), 4, "a neither confirmed nor was fenced");
    assert!(f.h.pending_fences() > 0);
    f.h.complete_fences();
    f.settle();
    assert_eq!(f.moving(), 0, "a is fenced: the moves are done");
    let counts = f.counts();
    assert_eq!(counts.get(&2), Some(&2));
    assert_eq!(counts.get(&3), Some(&2));
    // Group 1 is served by its failover gateway, with the two namespaces left in it.
    assert_eq!(counts.get(&1), Some(&2));
    assert!(f.h.server_of(1).is_some());
}

/// Ceph's scale-down rebalance: a deleted gateway's ANA group is emptied into the others,
/// and the gateway is erased once it holds nothing.
#[test]
fn namespaces_leave_a_deleted_gateways_group_and_the_gateway_is_erased() {
    let namespaces: Vec<(u32, u32)> = (1..=9).map(|n| (n, (n - 1) % 3 + 1)).collect();
    let mut f = Fleet::new(&["a", "b", "c"], &namespaces);
    f.h.ok(Command::DeleteGateway {
        key: f.h.key.clone(),
        gateway: gw("c"),
    });
    f.beacon("c");
    f.settle();
    f.h.complete_fences();
    f.settle();
    assert_eq!(f.h.availability("c"), Some(Availability::Deleting));
    f.balance(2, &["a", "b"]);
    assert_eq!(f.h.availability("c"), None, "erased");
    assert_eq!(
        f.h.count_events(|e| matches!(e, Event::GatewayRemoved { .. })),
        1
    );
    assert_eq!(f.counts(), BTreeMap::from([(1, 5), (2, 4)]));
}

/// A restarted gateway's target is as provisioned; its first slice puts the moved
/// namespaces back where the others have them before it serves anything.
#[test]
fn a_restarted_gateway_is_told_where_the_namespaces_are() {
    let mut f = Fleet::new(&["a", "b"], &all_in(1, 4));
    f.balance(8, &["a", "b"]);
    assert_eq!(f.counts(), BTreeMap::from([(1, 2), (2, 2)]));
    f.restart("a");
    f.settle();
    assert_eq!(f.counts(), BTreeMap::from([(1, 2), (2, 2)]));
    assert_eq!(f.targets["a"], f.targets["b"]);
}

#[test]
fn placements_of_namespaces_nobody_reports_are_dropped() {
    let mut f = Fleet::new(&["a", "b"], &all_in(1, 2));
    f.balance(8, &["a", "b"]);
    let placed = |f: &Fleet| {
        f.h.map
            .group(&f.h.key)
            .map_or(0, |g| g.placement.assigned.len())
    };
    assert_eq!(placed(&f), 1);
    for target in f.targets.values_mut() {
        target.clear();
    }
    f.provisioned.clear();
    f.settle();
    assert_eq!(placed(&f), 0);
}

#[test]
fn moves_wait_for_feature_level_3_and_are_checked_when_applied() {
    let mut h = Harness::new();
    h.ok(Command::SetFeatures(2));
    let refused = h.apply(Command::MoveNamespaces {
        key: h.key.clone(),
        moves: Vec::new(),
    });
    assert_eq!(
        refused.err(),
        Some(MapError::FeatureNotRaised {
            needed: 3,
            level: 2
        })
    );

    let mut f = Fleet::new(&["a", "b"], &all_in(1, 2));
    let mv = |nsid, from, to| gwmon_monitor::map::placement::NsMove {
        ns: NsKey { nqn: nqn(), nsid },
        from: ana(from),
        to: ana(to),
    };
    let key = f.h.key.clone();
    for moves in [
        vec![mv(9, 1, 2)],              // nobody reports it
        vec![mv(1, 2, 1)],              // it is not in 2
        vec![mv(1, 1, 1)],              // nowhere to go
        vec![mv(1, 1, 3)],              // no such group
        vec![mv(1, 1, 2), mv(1, 1, 2)], // twice
    ] {
        let r = f.h.apply(Command::MoveNamespaces {
            key: key.clone(),
            moves,
        });
        assert!(matches!(r, Err(MapError::MoveRefused { .. })), "{r:?}");
    }
    f.h.ok(Command::MoveNamespaces {
        key: key.clone(),
        moves: vec![mv(1, 1, 2)],
    });
    let again = f.h.apply(Command::MoveNamespaces {
        key,
        moves: vec![mv(1, 1, 2)],
    });
    assert!(matches!(again, Err(MapError::MoveRefused { .. })));
    // A map in the middle of a move survives a snapshot.
    let bytes = codec::encode(&f.h.map).expect("encode");
    assert_eq!(bytes[0], 5);
    assert_eq!(
        codec::decode::<GatewayMap>(&bytes).expect("decode"),
        f.h.map
    );
}
