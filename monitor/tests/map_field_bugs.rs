//! One scenario per bug Ceph users hit in the field (see the reference study of Ceph's
//! NVMe-oF gateway monitor, "Known bugs"). Each replays the situation against the engine;
//! the harness checks the safety rules after every command.

mod common;

use common::*;
use gwmon_monitor::map::{AnaState, Availability, Command, Event};
use gwmon_proto::domain::ReportedAvailability;

/// `n` gateways `gw1..gwn`, each active on its own ANA group, all serving namespaces in
/// every group.
fn serving(n: u32) -> (Harness, Vec<u32>) {
    let mut h = Harness::new();
    let groups: Vec<u32> = (1..=n).collect();
    for i in 1..=n {
        h.create(&format!("gw{i}"));
    }
    for i in 1..=n {
        h.boot(&format!("gw{i}"), &groups);
    }
    settle(&mut h, n, &groups);
    for i in 1..=n {
        assert_eq!(h.state(&format!("gw{i}"), i), AnaState::Active);
    }
    (h, groups)
}

/// Let every live gateway beacon its slice back, fences complete and timers run, a few
/// rounds: what a healthy cluster does between events.
fn settle(h: &mut Harness, n: u32, groups: &[u32]) {
    for _ in 0..4 {
        h.complete_fences();
        for i in 1..=n {
            let id = format!("gw{i}");
            if h.availability(&id) == Some(Availability::Available)
                || h.availability(&id) == Some(Availability::Created)
            {
                h.serve(&id, groups);
            }
        }
        h.tick(h.map.config().failback_prepare_ms);
    }
}

fn active_groups_of(h: &Harness, id: &str, groups: &[u32]) -> Vec<u32> {
    groups
        .iter()
        .copied()
        .filter(|g| h.state(id, *g) == AnaState::Active)
        .collect()
}

/// ceph-nvmeof #501: after a gateway was reinstalled, several ANA groups stayed optimized
/// on one gateway. Here: gw1 fails, gw2 takes its group; gw1 is deleted and installed again
/// under a new id. Every gateway must end up active on exactly its own group.
#[test]
fn reinstall_does_not_leave_several_groups_optimized_on_one_gateway() {
    let (mut h, groups) = serving(2);
    h.time_out("gw1");
    settle(&mut h, 2, &groups);
    assert_eq!(active_groups_of(&h, "gw2", &groups), [1, 2]);

    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("gw1"),
    });
    h.create("gw3");
    let group = h.map.group(&h.key).expect("group");
    // ANA id 3 is free (the limit is 16), so the new gateway gets it; gw1 keeps draining.
    assert_eq!(group.gateways[&gw("gw3")].ana_group.get(), 3);
    let groups = [1, 2, 3];
    h.boot("gw3", &groups);
    settle(&mut h, 3, &groups);
    // The operator's rebalance moves the namespaces out of the deleted gateway's group 1.
    for _ in 0..3 {
        h.serve("gw2", &[2, 3]);
        h.serve("gw3", &[2, 3]);
        h.tick(1_000);
    }
    assert_eq!(h.availability("gw1"), None, "gw1 is gone once drained");
    assert_eq!(active_groups_of(&h, "gw2", &groups), [2]);
    assert_eq!(active_groups_of(&h, "gw3", &groups), [3]);
}

/// The same reinstall under the same id (rook deletes then creates on pod restart).
#[test]
fn reinstall_under_the_same_id_takes_the_own_group_back() {
    let (mut h, groups) = serving(2);
    h.time_out("gw1");
    settle(&mut h, 2, &groups);
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("gw1"),
    });
    h.create("gw1");
    h.boot("gw1", &groups);
    settle(&mut h, 2, &groups);
    assert_eq!(active_groups_of(&h, "gw1", &groups), [1]);
    assert_eq!(active_groups_of(&h, "gw2", &groups), [2]);
}

/// A "zombie": the gateway lost the monitors but not its hosts, was declared failed, and
/// keeps beaconing as if nothing happened. Ceph could leave its ANA group optimized nowhere.
/// The group must be served by exactly one other gateway, and the zombie must not get it
/// back before it restarts.
#[test]
fn a_zombie_gateway_leaves_no_group_optimized_nowhere() {
    let (mut h, groups) = serving(3);
    h.time_out("gw2");
    for _ in 0..5 {
        h.serve("gw2", &groups); // zombie beacons
        h.complete_fences();
        h.serve("gw1", &groups);
        h.serve("gw3", &groups);
        h.tick(1_000);
    }
    assert_eq!(h.availability("gw2"), Some(Availability::Unavailable));
    let holders: Vec<_> = ["gw1", "gw3"]
        .iter()
        .filter(|id| h.state(id, 2) == AnaState::Active)
        .collect();
    assert_eq!(holders.len(), 1, "group 2 is active on exactly one gateway");
    assert!(h.server_of(2).is_some());
    assert!(h.count_events(|e| matches!(e, Event::ZombieRefused { .. })) >= 5);
}

/// ceph-nvmeof #602: IO stuck after stopping one of four gateways; the map looked right but
/// no path was optimized. After one of four stops, its group must be served by exactly one
/// of the other three as soon as the fence completes and the target confirms.
#[test]
fn stopping_one_of_four_gateways_moves_its_group_to_exactly_one_other() {
    let (mut h, groups) = serving(4);
    h.time_out("gw3");
    assert_eq!(h.server_of(3), None, "nobody serves before the fence");
    assert_eq!(h.complete_fences(), 1);
    let target = h
        .server_of(3)
        .expect("a target may serve once the fence is done");
    h.serve(target.as_str(), &groups);
    assert_eq!(h.state(target.as_str(), 3), AnaState::Active);
    for g in [1, 2, 4] {
        assert_eq!(
            h.state(&format!("gw{g}"), g),
            AnaState::Active,
            "others untouched"
        );
    }
    let load: Vec<usize> = ["gw1", "gw2", "gw4"]
        .iter()
        .map(|id| active_groups_of(&h, id, &groups).len())
        .collect();
    assert_eq!(load.iter().sum::<usize>(), 4);
}

/// ceph-nvmeof #516 and redeploy.sh: redeploying gateways (a stop and start within the
/// grace, one after another) must cause no failover and only a few epochs of churn.
#[test]
fn a_redeploy_of_every_gateway_causes_no_failover() {
    let (mut h, groups) = serving(4);
    let epoch = h.group_epoch();
    h.events.clear();
    for i in 1..=4 {
        let id = format!("gw{i}");
        h.report(&id, ReportedAvailability::Starting, vec![])
            .expect("restart");
        h.tick(2_000);
        h.serve(&id, &groups);
        h.tick(1_000);
        for j in 1..=4 {
            h.serve(&format!("gw{j}"), &groups);
        }
    }
    assert_eq!(
        h.count_events(|e| matches!(
            e,
            Event::FailoverStarted { .. } | Event::FailbackStarted { .. }
        )),
        0,
        "no group moved to another gateway"
    );
    assert_eq!(h.pending_fences(), 0);
    for i in 1..=4 {
        assert_eq!(h.state(&format!("gw{i}"), i), AnaState::Active);
    }
    // Each restart costs two epochs: its group goes dark, then comes back.
    let churn = h.group_epoch().0 - epoch.0;
    assert!(churn <= 3 * 4, "epoch churn {churn} for 4 restarts");
}

/// A gateway that restarts twice in quick succession, while another fails: the flapping
/// owner must still end up active on its own group, and the failed one's group served.
#[test]
fn fast_reboot_churn_settles() {
    let (mut h, groups) = serving(3);
    for _ in 0..3 {
        h.report("gw1", ReportedAvailability::Starting, vec![])
            .expect("restart");
        h.tick(500);
        h.serve("gw1", &groups);
    }
    h.time_out("gw2");
    settle(&mut h, 3, &groups);
    assert_eq!(h.state("gw1", 1), AnaState::Active);
    assert!(h.server_of(2).is_some());
    assert_ne!(h.server_of(2), Some(gw("gw2")));
}

/// ceph-nvmeof #505/#506: ANA group ids were reassigned after a gateway was removed,
/// leaving namespaces on a group owned by nobody. Deleting a gateway whose group has
/// namespaces must keep the group owned and served until the namespaces are moved.
#[test]
fn delete_never_orphans_an_ana_group_with_namespaces() {
    let (mut h, groups) = serving(3);
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("gw2"),
    });
    for _ in 0..10 {
        h.complete_fences();
        h.serve("gw1", &groups);
        h.serve("gw3", &groups);
        h.tick(1_000);
        let group = h.map.group(&h.key).expect("group");
        assert!(group.ana.contains_key(&ana(2)), "group 2 still exists");
        assert!(group.owner(ana(2)).is_some(), "and has an owner");
    }
    assert!(h.server_of(2).is_some(), "group 2 is served");
    // A new gateway created meanwhile does not take id 2 while it has namespaces.
    h.create("gw4");
    let group = h.map.group(&h.key).expect("group");
    assert_eq!(group.gateways[&gw("gw4")].ana_group.get(), 4);
    // Namespaces moved out of group 2: the deleted gateway and its group go.
    h.serve("gw1", &[1, 3]);
    assert_eq!(
        h.availability("gw2"),
        Some(Availability::Deleting),
        "gw3 still has some"
    );
    h.serve("gw3", &[1, 3]);
    assert_eq!(h.availability("gw2"), None);
}
