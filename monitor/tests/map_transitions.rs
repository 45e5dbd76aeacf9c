//! Every transition of the map engine, one scenario each. The harness checks the safety
//! rules after every command, not only at the end.

mod common;

use common::*;
use gwmon_monitor::map::{
    features, AnaState, Availability, Command, ConfigUpdate, Event, GatewayMap, MapConfig,
    MapError, Timestamp,
};
use gwmon_proto::domain::{AnaAccess, GatewayReport, ReportedAvailability, SliceAvailability};

/// Two gateways, each active on its own ANA group.
fn two_serving() -> Harness {
    let mut h = Harness::new();
    h.create("a");
    h.create("b");
    h.boot("a", &[1, 2]);
    // Group 2 has namespaces, but its owner was created with a: it gets the grace to come
    // up instead of a taking its group only to hand it back.
    assert_eq!(h.server_of(2), None);
    h.boot("b", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
    assert_eq!(h.state("b", 2), AnaState::Active);
    assert_eq!(
        h.count_events(|e| matches!(e, Event::FailbackStarted { .. })),
        0,
        "no take-all-then-hand-back dance"
    );
    h
}

#[test]
fn a_group_whose_new_owner_never_comes_up_is_failed_over_after_the_grace() {
    let mut h = Harness::new();
    h.create("a");
    h.create("b");
    h.boot("a", &[1, 2]);
    assert_eq!(h.server_of(2), None);
    h.tick(h.map.config().beacon_grace_ms);
    assert_eq!(h.server_of(2), Some(gw("a")));
    // When b does come up, it takes its group back once a has let go.
    h.boot("b", &[1, 2]);
    assert_eq!(h.state("b", 2), AnaState::OwnerWaitFailbackPrepared);
    h.serve("a", &[1, 2]);
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 2), AnaState::Active);
}

#[test]
fn the_cluster_accepts_at_most_max_groups_and_max_gateways() {
    let mut h = Harness::with_config(MapConfig {
        max_groups: 2,
        max_gateways: 3,
        ..MapConfig::default()
    });
    let create = |h: &mut Harness, pool: &str, id: &str| {
        h.apply(Command::CreateGateway {
            key: key(pool, ""),
            gateway: gw(id),
        })
    };
    assert!(create(&mut h, "p1", "a").is_ok());
    assert!(create(&mut h, "p2", "b").is_ok());
    let before = h.map.clone();
    let err = create(&mut h, "p3", "c").expect_err("a third group");
    assert_eq!(
        err,
        MapError::ClusterFull {
            what: "groups".into(),
            max: 2
        }
    );
    assert!(
        err.to_string().contains("max_groups"),
        "the refusal names the setting: {err}"
    );
    assert_eq!(h.map, before, "a refused create changes nothing");
    assert!(create(&mut h, "p1", "c").is_ok());
    let before = h.map.clone();
    let err = create(&mut h, "p2", "d").expect_err("a fourth gateway");
    assert_eq!(
        err,
        MapError::ClusterFull {
            what: "gateways".into(),
            max: 3
        }
    );
    assert_eq!(h.map, before, "a refused create changes nothing");
    // A gateway that exists takes no more room: creating it again is still idempotent.
    let again = create(&mut h, "p1", "a").expect("idempotent create at the cap");
    assert!(!again.changed);
    // Raising the cap lets the next one in.
    h.ok(Command::UpdateConfig(ConfigUpdate {
        max_gateways: Some(4),
        ..ConfigUpdate::default()
    }));
    assert!(create(&mut h, "p2", "d").is_ok());
}

#[test]
fn create_allocates_the_lowest_free_ana_group_and_is_idempotent() {
    let mut h = Harness::new();
    for id in ["a", "b", "c"] {
        h.create(id);
    }
    let group = h.map.group(&h.key).expect("group");
    let ids: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|id| group.gateways[&gw(id)].ana_group.get())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    let epoch = h.map.epoch();
    let again = h.ok(Command::CreateGateway {
        key: h.key.clone(),
        gateway: gw("b"),
    });
    assert!(!again.changed);
    assert_eq!(
        h.map.epoch(),
        epoch,
        "an idempotent create must not move the epoch"
    );

    // Delete b (no namespaces: removed at once), then a new gateway gets id 2 back.
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("b"),
    });
    assert_eq!(h.availability("b"), None);
    h.create("d");
    let group = h.map.group(&h.key).expect("group");
    assert_eq!(group.gateways[&gw("d")].ana_group.get(), 2);
}

#[test]
fn a_group_is_full_at_the_configured_maximum() {
    let mut h = Harness::new();
    for i in 0..16 {
        h.create(&format!("gw{i}"));
    }
    let err = h
        .apply(Command::CreateGateway {
            key: h.key.clone(),
            gateway: gw("gw16"),
        })
        .expect_err("17th gateway");
    assert!(matches!(err, MapError::GroupFull { max: 16, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "group rbd/grp1 already has 16 gateways, the most allowed"
    );

    let mut small = Harness::with_config(MapConfig {
        max_gateways_per_group: 2,
        ..MapConfig::default()
    });
    small.create("a");
    small.create("b");
    assert!(small
        .apply(Command::CreateGateway {
            key: small.key.clone(),
            gateway: gw("c"),
        })
        .is_err());
}

#[test]
fn commands_on_unknown_groups_and_gateways_are_refused_by_name() {
    let mut h = two_serving();
    let other = key("rbd", "nope");
    let err = h
        .apply(Command::GatewayTimedOut {
            key: other.clone(),
            gateway: gw("a"),
        })
        .expect_err("unknown group");
    assert_eq!(err, MapError::UnknownGroup(other.clone()));
    let err = h
        .apply(Command::SetAdminState {
            key: h.key.clone(),
            gateway: gw("zz"),
            enabled: false,
        })
        .expect_err("unknown gateway");
    assert_eq!(err.to_string(), "no gateway zz in group rbd/grp1");
    // Deleting what is not there succeeds and changes nothing (Ceph answers 0), so a delete
    // whose answer was lost can be sent again.
    let epoch = h.map.epoch();
    for (k, g) in [(h.key.clone(), "zz"), (other.clone(), "a")] {
        let done = h
            .apply(Command::DeleteGateway {
                key: k,
                gateway: gw(g),
            })
            .expect("nothing to delete is not an error");
        assert!(!done.changed);
    }
    assert_eq!(h.map.epoch(), epoch);
    assert!(h.map.group(&other).is_none(), "no group made up");
    let err = h
        .apply(Command::FenceCompleted {
            key: h.key.clone(),
            gateway: gw("a"),
            epoch: gwmon_proto::domain::Epoch(99),
        })
        .expect_err("no such fence");
    assert!(matches!(err, MapError::UnknownFence { .. }));
    assert!(h
        .apply(Command::SetConfig(MapConfig {
            max_gateways_per_group: 0,
            ..MapConfig::default()
        }))
        .is_err());
}

#[test]
fn the_first_available_gateway_serves_its_own_group_at_once() {
    let mut h = Harness::new();
    h.create("a");
    assert_eq!(h.availability("a"), Some(Availability::Created));
    h.boot("a", &[1]);
    assert_eq!(h.availability("a"), Some(Availability::Available));
    assert_eq!(h.state("a", 1), AnaState::Active);
    let slice = h.map.slice(&h.key, &gw("a")).expect("slice");
    assert_eq!(slice.availability, SliceAvailability::Available);
    assert_eq!(slice.ana_groups.len(), 1);
    assert_eq!(slice.ana_groups[0].access, AnaAccess::Optimized);
    assert!(slice.ana_groups[0].fence_complete);
    assert_eq!(slice.nqns.len(), 1);
}

#[test]
fn failover_fences_the_old_owner_before_the_target_serves() {
    let mut h = two_serving();
    h.advance(5_000);
    h.time_out("a");
    assert_eq!(h.availability("a"), Some(Availability::Unavailable));
    // b is published optimized for group 1 but must not serve before the fence.
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    let view = h
        .map
        .slice(&h.key, &gw("b"))
        .expect("slice")
        .ana(ana(1))
        .cloned()
        .expect("view");
    assert_eq!(view.access, AnaAccess::Optimized);
    assert!(!view.fence_complete);
    assert_eq!(h.server_of(1), None);
    let group = h.map.group(&h.key).expect("group");
    let fence = group.fences.last().expect("a fence was issued");
    assert_eq!(fence.gateway, gw("a"));
    assert_eq!(fence.epoch, view.fence_epoch);
    assert!(
        fence.nonces.iter().any(|n| n.as_str() == "a-client-1"),
        "the fence carries the owner's nonces: {:?}",
        fence.nonces
    );
    // a's slice says it is declared failed: it must stop and exit.
    let a = h.map.slice(&h.key, &gw("a")).expect("slice");
    assert_eq!(a.availability, SliceAvailability::Unavailable);
    assert!(a
        .ana_groups
        .iter()
        .all(|v| v.access == AnaAccess::Inaccessible));

    // A beacon from b before the fence completes changes nothing.
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);

    assert_eq!(h.complete_fences(), 1);
    assert_eq!(h.server_of(1), Some(gw("b")), "fence done: b may serve");
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    h.serve("b", &[1, 2]); // confirms the fence epoch
    assert_eq!(h.state("b", 1), AnaState::Active);
    assert_eq!(h.state("b", 2), AnaState::Active);
}

#[test]
fn a_target_that_never_confirms_its_fence_is_failed_in_turn() {
    let mut h = two_serving();
    h.create("c");
    h.boot("c", &[1, 2]);
    h.time_out("a");
    // Least loaded: c holds nothing (group 3 is its own), so c... both hold one: b wins the tie.
    let target = if h.state("b", 1) == AnaState::WaitFenceComplete {
        "b"
    } else {
        "c"
    };
    let other = if target == "b" { "c" } else { "b" };
    h.complete_fences();
    // The target stays silent past the fence timeout.
    let timeout = h.map.config().fence_timeout_ms;
    h.tick(timeout - 1);
    assert_eq!(h.state(target, 1), AnaState::WaitFenceComplete);
    h.tick(1);
    assert_eq!(h.availability(target), Some(Availability::Unavailable));
    assert!(h.count_events(|e| matches!(e, Event::FenceWaitExpired { .. })) == 1);
    // Group 1 goes to the remaining gateway, which must fence the silent target too.
    assert_eq!(h.state(other, 1), AnaState::WaitFenceComplete);
    assert_eq!(h.server_of(1), None);
    h.complete_fences();
    h.serve(other, &[1, 2]);
    assert_eq!(h.state(other, 1), AnaState::Active);
}

#[test]
fn without_a_completed_fence_nobody_is_promoted_however_long_it_takes() {
    let mut h = two_serving();
    h.time_out("a");
    for _ in 0..10 {
        h.tick(30_000);
        h.serve("b", &[1, 2]);
        assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
        assert_eq!(h.server_of(1), None);
    }
}

/// A live gateway that lost its listeners is treated as a disabled one: its groups wait for
/// it to confirm it stopped, and move on that confirmation without any fence (a fence cuts
/// a healthy gateway off from storage). It used to be fenced at once.
#[test]
fn a_live_gateway_that_lost_its_listeners_confirms_instead_of_being_fenced() {
    let mut h = two_serving();
    h.ok(Command::SetFeatures(features::CEPH_PARITY));
    // a loses its listeners: alive, but it cannot serve.
    h.report("a", ReportedAvailability::Available, vec![])
        .expect("beacon");
    assert_eq!(h.availability("a"), Some(Availability::Created));
    assert_eq!(h.server_of(1), None);
    assert_eq!(h.state("b", 1), AnaState::Standby, "held for a to confirm");
    assert_eq!(h.pending_fences(), 0, "no fence for a live gateway");
    // a applies the map that stopped it and says so: b serves at once.
    h.report("a", ReportedAvailability::Available, vec![])
        .expect("beacon");
    assert_eq!(h.server_of(1), Some(gw("b")));
    assert!(h.map.group(&h.key).expect("group").fences.is_empty());
}

/// A gateway without listeners that does not confirm is fenced once the window ends.
#[test]
fn a_gateway_without_listeners_that_never_confirms_is_fenced_after_the_window() {
    let mut h = two_serving();
    h.ok(Command::SetFeatures(features::CEPH_PARITY));
    let mut sub = subsystem(&gw("a"), &[1, 2], 2);
    sub.listeners.clear();
    h.report("a", ReportedAvailability::Available, vec![sub])
        .expect("beacon");
    h.tick(h.map.config().skip_failover_admin_ms - 1);
    assert_eq!(h.pending_fences(), 0);
    h.tick(1);
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    assert_eq!(h.pending_fences(), 1);
    h.complete_fences();
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
}

/// At feature level 0 the previous release's rule: the failover starts at once, its fence
/// issued, and a's confirmation still lets b serve before the fence completes.
#[test]
fn at_feature_level_0_a_confirmation_from_the_old_owner_releases_it_without_a_fence() {
    let mut h = two_serving();
    // a loses its listeners: alive, but it cannot serve.
    h.report("a", ReportedAvailability::Available, vec![])
        .expect("beacon");
    assert_eq!(h.availability("a"), Some(Availability::Created));
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    assert_eq!(h.server_of(1), None);
    // a applies the map that stopped it and says so: no fence needed any more.
    h.report("a", ReportedAvailability::Available, vec![])
        .expect("beacon");
    assert_eq!(h.server_of(1), Some(gw("b")));
}

#[test]
fn failback_breaks_before_it_makes() {
    let mut h = two_serving();
    h.time_out("a");
    h.complete_fences();
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);

    h.advance(20_000);
    h.boot("a", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::WaitFailbackPrepared);
    assert_eq!(h.state("a", 1), AnaState::OwnerWaitFailbackPrepared);
    assert_eq!(h.server_of(1), None, "nobody serves during the handover");
    let prepare = h.map.config().failback_prepare_ms;
    // b has not yet confirmed: the timer alone is not enough.
    h.tick(prepare);
    assert_eq!(h.state("a", 1), AnaState::OwnerWaitFailbackPrepared);
    h.serve("b", &[1, 2]);
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
    assert_eq!(h.state("b", 1), AnaState::Standby);
    let fences = h.map.group(&h.key).expect("group").fences.len();
    assert_eq!(fences, 1, "a failback needs no fence: only the failover's");
}

#[test]
fn failback_happens_on_confirmations_without_waiting_for_a_timer() {
    let mut h = two_serving();
    h.time_out("a");
    h.complete_fences();
    h.serve("b", &[1, 2]);
    h.advance(20_000);
    h.boot("a", &[1, 2]);
    assert_eq!(h.server_of(1), None);
    // Same instant: b says it let go, a says it has the map of the handover.
    h.serve("b", &[1, 2]);
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
}

#[test]
fn a_holder_that_never_confirms_a_failback_is_fenced_after_failback_prepare() {
    let mut h = two_serving();
    h.time_out("a");
    h.complete_fences();
    h.serve("b", &[1, 2]);
    h.advance(20_000);
    h.boot("a", &[1, 2]);
    h.serve("a", &[1, 2]);
    let fences = h.pending_fences();
    let prepare = h.map.config().failback_prepare_ms;
    h.tick(prepare - 1);
    assert_eq!(h.state("a", 1), AnaState::OwnerWaitFailbackPrepared);
    h.tick(1);
    assert_eq!(h.state("a", 1), AnaState::WaitFenceComplete);
    assert_eq!(h.server_of(1), None, "never promoted before the fence");
    assert_eq!(h.pending_fences(), fences + 1, "b is fenced");
    h.complete_fences();
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
}

#[test]
fn failback_waits_for_the_configured_delay() {
    let mut h = Harness::with_config(MapConfig {
        failback_delay_ms: 10_000,
        ..MapConfig::default()
    });
    h.create("a");
    h.create("b");
    h.boot("a", &[1, 2]);
    h.boot("b", &[1, 2]);
    h.time_out("a");
    h.complete_fences();
    h.serve("b", &[1, 2]);
    h.boot("a", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
    h.tick(9_999);
    assert_eq!(h.state("b", 1), AnaState::Active);
    h.tick(1);
    assert_eq!(h.state("b", 1), AnaState::WaitFailbackPrepared);
}

#[test]
fn a_fast_reboot_within_the_grace_causes_no_failover() {
    let mut h = two_serving();
    // a restarts: its first beacon from the new process says Starting.
    h.report("a", ReportedAvailability::Starting, vec![])
        .expect("start");
    assert_eq!(h.availability("a"), Some(Availability::Created));
    assert_eq!(h.state("a", 1), AnaState::Standby);
    // The skip window holds group 1 for its owner instead of failing it over.
    h.tick(1_000);
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Standby);
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
    assert_eq!(
        h.count_events(|e| matches!(e, Event::FailoverStarted { .. })),
        0
    );
    assert_eq!(h.pending_fences(), 0);
}

/// One gateway of three stopped and restarted every 3 s: each restart was a fast
/// reboot that held its group for it, so the group was dark most of the minute. The second
/// restart within a half-life damps it: its group goes to a steady gateway and stays there.
#[test]
fn a_flapping_gateway_is_damped_and_its_group_stays_on_a_steady_one() {
    let mut h = two_serving();
    // First restart: a fast reboot as before, the group is held for its owner.
    h.report("a", ReportedAvailability::Starting, vec![])
        .expect("start");
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
    h.advance(3_000);
    // Second restart 3 s later: damped, no hold. The new process confirms it serves
    // nothing, and b takes the group without waiting for a window or a fence.
    h.report("a", ReportedAvailability::Starting, vec![])
        .expect("start");
    assert!(h
        .map
        .group(&h.key)
        .expect("group")
        .damped(&gw("a"), Timestamp::from_millis(h.now)));
    h.report("a", ReportedAvailability::Starting, vec![])
        .expect("the new process applied its slice");
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
    // a comes up and stays up, but gets no failback while damped.
    h.serve("a", &[1, 2]);
    assert_eq!(h.availability("a"), Some(Availability::Available));
    h.tick(10_000);
    assert_eq!(h.state("b", 1), AnaState::Active);
    // Once the penalty has decayed, the failback happens as usual.
    h.tick(gwmon_monitor::map::damping::max_damped_ms());
    h.serve("b", &[1, 2]);
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
}

/// Ceph holds every failover of a group for 16 s whenever a recently failed gateway
/// starts: with one gateway flapping, a real failure of another was held up to 13 s.
#[test]
fn a_restarting_gateway_never_holds_up_another_gateways_failover() {
    let mut h = two_serving();
    h.create("c");
    h.boot("c", &[1, 2, 3]);
    h.time_out("c");
    h.advance(2_000);
    // c comes back right after it failed (a redeploy, or a flap)...
    h.report("c", ReportedAvailability::Starting, vec![])
        .expect("start");
    // ... and meanwhile a really fails: its group is failed over at once.
    h.time_out("a");
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
}

#[test]
fn when_the_rebooting_owner_does_not_return_the_window_ends_in_a_failover() {
    let mut h = two_serving();
    h.report("a", ReportedAvailability::Starting, vec![])
        .expect("start");
    let window = h.map.config().skip_failover_redeploy_ms;
    h.tick(window - 1);
    assert_eq!(h.state("b", 1), AnaState::Standby);
    h.tick(1);
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
}

#[test]
fn a_zombie_stays_failed_until_it_restarts() {
    let mut h = two_serving();
    h.time_out("a");
    // a was only cut off; it keeps beaconing as if nothing happened.
    h.serve("a", &[1, 2]);
    assert_eq!(h.availability("a"), Some(Availability::Unavailable));
    assert_eq!(
        h.count_events(|e| matches!(e, Event::ZombieRefused { .. })),
        1
    );
    assert_eq!(
        h.map.slice(&h.key, &gw("a")).expect("slice").availability,
        SliceAvailability::Unavailable
    );
    // Its confirmation still counts: it applied the map that stopped it.
    assert_eq!(h.server_of(1), Some(gw("b")));
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
    // After a real restart it comes back and takes its group home.
    h.boot("a", &[1, 2]);
    h.tick(h.map.config().failback_prepare_ms);
    h.serve("b", &[1, 2]);
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
}

#[test]
fn disable_moves_the_groups_on_confirmation_and_enable_brings_them_back() {
    let mut h = two_serving();
    h.ok(Command::SetAdminState {
        key: h.key.clone(),
        gateway: gw("a"),
        enabled: false,
    });
    assert_eq!(h.availability("a"), Some(Availability::Created));
    assert_eq!(
        h.state("b", 1),
        AnaState::Standby,
        "nobody is promoted before a confirms it stopped"
    );
    h.serve("a", &[1, 2]); // a confirms it stopped
    assert_eq!(
        h.availability("a"),
        Some(Availability::Created),
        "still disabled"
    );
    // Issue 17: the group moved on the confirmation, not at the end of the 5 s window.
    assert_eq!(
        h.state("b", 1),
        AnaState::Active,
        "confirmed: promoted at once, no fence needed"
    );
    assert_eq!(h.pending_fences(), 0);
    h.ok(Command::SetAdminState {
        key: h.key.clone(),
        gateway: gw("a"),
        enabled: true,
    });
    assert_eq!(h.availability("a"), Some(Availability::Available));
    assert_eq!(h.state("a", 1), AnaState::OwnerWaitFailbackPrepared);
}

#[test]
fn a_disabled_gateway_that_never_confirms_is_fenced_after_the_window() {
    let mut h = two_serving();
    h.ok(Command::SetAdminState {
        key: h.key.clone(),
        gateway: gw("a"),
        enabled: false,
    });
    h.tick(h.map.config().skip_failover_admin_ms - 1);
    assert_eq!(h.state("b", 1), AnaState::Standby, "held for the window");
    assert_eq!(h.pending_fences(), 0);
    h.tick(1);
    assert_eq!(h.server_of(1), None, "never promoted before a fence");
    assert!(h.pending_fences() > 0, "silent past the window: fenced");
    h.complete_fences();
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
}

#[test]
fn a_deleted_gateway_that_confirms_hands_its_group_over_without_a_fence() {
    let mut h = two_serving();
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("a"),
    });
    assert_eq!(h.availability("a"), Some(Availability::Deleting));
    assert_eq!(h.server_of(1), None, "a may still be serving");
    // a applies the slice that stops it and says so: its group moves at once.
    h.report("a", ReportedAvailability::Available, vec![])
        .expect("a deleted gateway confirms it stopped");
    assert_eq!(h.server_of(1), Some(gw("b")));
    assert_eq!(h.pending_fences(), 0, "a planned move needs no fence");
    assert_eq!(h.availability("a"), Some(Availability::Deleting));
    // A new process of a deleted gateway is refused.
    let err = h
        .report("a", ReportedAvailability::Starting, vec![])
        .expect_err("a deleted gateway may not start again");
    assert!(matches!(err, MapError::GatewayDeleting { .. }));
}

#[test]
fn delete_keeps_the_gateway_until_its_ana_group_drains() {
    let mut h = two_serving();
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("a"),
    });
    assert_eq!(h.availability("a"), Some(Availability::Deleting));
    // a never confirms: its group is failed over with a fence once the window ends.
    h.tick(h.map.config().skip_failover_admin_ms - 1);
    assert_eq!(h.state("b", 1), AnaState::Standby, "held for the window");
    h.tick(1);
    assert!(h.pending_fences() > 0);
    h.complete_fences();
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
    // Namespaces still in group 1: the gateway stays.
    h.tick(60_000);
    assert_eq!(h.availability("a"), Some(Availability::Deleting));
    // The gateways move the namespaces out of group 1; then a is erased with its group.
    h.serve("b", &[2]);
    assert_eq!(h.availability("a"), None);
    let group = h.map.group(&h.key).expect("group");
    assert!(!group.ana.contains_key(&ana(1)));
}

#[test]
fn recreating_a_deleting_gateway_keeps_its_ana_group() {
    let mut h = two_serving();
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("a"),
    });
    h.create("a");
    assert_eq!(h.availability("a"), Some(Availability::Created));
    let group = h.map.group(&h.key).expect("group");
    assert_eq!(group.gateways[&gw("a")].ana_group.get(), 1);
}

#[test]
fn a_new_gateway_inherits_the_group_of_a_draining_one_when_ids_run_out() {
    let mut h = Harness::with_config(MapConfig {
        max_gateways_per_group: 2,
        ..MapConfig::default()
    });
    h.create("a");
    h.create("b");
    h.boot("a", &[1, 2]);
    h.boot("b", &[1, 2]);
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("a"),
    });
    h.create("c");
    assert_eq!(h.availability("a"), None, "the heir replaced it");
    let group = h.map.group(&h.key).expect("group");
    assert_eq!(group.gateways[&gw("c")].ana_group.get(), 1);
    h.boot("c", &[1, 2]);
    h.tick(h.map.config().skip_failover_admin_ms);
    // a's record is gone but it may still be serving group 1: it is fenced first.
    assert_eq!(h.server_of(1), None);
    let group = h.map.group(&h.key).expect("group");
    assert!(group.fences.iter().any(|f| f.gateway == gw("a")));
    h.complete_fences();
    for _ in 0..3 {
        h.serve("b", &[1, 2]);
        h.serve("c", &[1, 2]);
        h.tick(h.map.config().failback_prepare_ms);
    }
    assert_eq!(h.state("c", 1), AnaState::Active);
}

/// Ceph's rule: a gateway created while another is deleting inherits its ANA group, with
/// the namespaces still in it, even when ids are free (Ceph's scale-down and replace flow).
#[test]
fn a_new_gateway_inherits_the_group_of_a_deleted_one_that_let_go() {
    let mut h = two_serving();
    h.ok(Command::SetFeatures(features::CEPH_PARITY));
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("a"),
    });
    // a never confirms: once the window ends it is fenced and b takes group 1.
    h.tick(h.map.config().skip_failover_admin_ms);
    h.complete_fences();
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
    assert_eq!(h.availability("a"), Some(Availability::Deleting));
    h.create("c");
    assert_eq!(h.availability("a"), None, "the heir replaced it");
    let group = h.map.group(&h.key).expect("group");
    assert_eq!(group.gateways[&gw("c")].ana_group.get(), 1, "not a free id");
    assert!(!group.ana.contains_key(&ana(3)));
    // The heir takes its group back from b, break before make.
    h.boot("c", &[1, 2]);
    for _ in 0..3 {
        h.serve("b", &[1, 2]);
        h.serve("c", &[1, 2]);
        h.tick(h.map.config().failback_prepare_ms);
    }
    assert_eq!(h.state("c", 1), AnaState::Active);
    assert_eq!(h.state("b", 2), AnaState::Active);
}

/// A deleted gateway that may still be serving keeps its record while ids are free, so it
/// can confirm it stopped instead of being fenced: the new gateway gets a free ANA group.
#[test]
fn a_new_gateway_does_not_inherit_from_a_deleted_one_still_serving_while_ids_are_free() {
    let mut h = two_serving();
    h.ok(Command::SetFeatures(features::CEPH_PARITY));
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("a"),
    });
    h.create("c");
    assert_eq!(h.availability("a"), Some(Availability::Deleting));
    let group = h.map.group(&h.key).expect("group");
    assert_eq!(group.gateways[&gw("c")].ana_group.get(), 3);
}

/// Before the cluster reaches feature level 1 (a monitor of the previous release may
/// still apply the log), the previous rule holds: a free id, the deleting one kept.
#[test]
fn at_feature_level_0_a_new_gateway_takes_a_free_id_as_the_previous_release_did() {
    let mut h = two_serving();
    assert_eq!(h.map.features(), 0);
    h.ok(Command::DeleteGateway {
        key: h.key.clone(),
        gateway: gw("a"),
    });
    h.tick(h.map.config().skip_failover_admin_ms);
    h.complete_fences();
    h.serve("b", &[1, 2]);
    h.create("c");
    assert_eq!(h.availability("a"), Some(Availability::Deleting));
    let group = h.map.group(&h.key).expect("group");
    assert_eq!(group.gateways[&gw("c")].ana_group.get(), 3);
}

/// From feature level 2 a beacon that only confirms epochs is committed without the
/// subsystem list, and applied exactly as the whole beacon would be.
#[test]
fn a_confirmation_is_applied_exactly_as_the_whole_beacon() {
    let mut h = two_serving();
    h.time_out("a");
    h.complete_fences();
    // b, the failover target, echoes the fence epoch: only its epochs are new.
    let b = gw("b");
    let slice = h.map.slice(&h.key, &b).expect("slice");
    let held = h.map.group(&h.key).expect("group").gateways[&b].clone();
    let report = GatewayReport {
        seq: held.last_seq + 1,
        availability: ReportedAvailability::Available,
        subsystems: (*held.subsystems).clone(),
        applied_epoch: slice.epoch,
        fence_epoch: served_fence_epoch(&slice),
    };
    // Below level 2 the leader commits the whole report, and the small one is refused.
    let whole = h.map.beacon_command(&h.key, &b, report.clone());
    assert!(matches!(whole, Command::GatewayReport { .. }));
    let early = Command::ConfirmApplied {
        key: h.key.clone(),
        gateway: b.clone(),
        based_on: held.last_seq,
        seq: report.seq,
        applied_epoch: report.applied_epoch,
        fence_epoch: report.fence_epoch,
    };
    let err = h.apply(early.clone()).expect_err("level 0");
    assert!(matches!(err, MapError::FeatureNotRaised { .. }), "{err}");

    h.ok(Command::SetFeatures(features::CONFIRMATIONS));
    let small = h.map.beacon_command(&h.key, &b, report.clone());
    assert_eq!(small, early);
    let mut reference = h.map.clone();
    let want = reference
        .apply(&whole, Timestamp(h.now))
        .expect("the whole report");
    let got = h.apply(small).expect("the confirmation");
    assert_eq!(got, want);
    assert_eq!(h.map, reference, "the same map either way");
    assert_eq!(h.state("b", 1), AnaState::Active);

    // A report that changed anything else is committed whole.
    let mut changed = report.clone();
    changed.seq += 1;
    changed.subsystems[0].listeners.clear();
    assert!(matches!(
        h.map.beacon_command(&h.key, &b, changed),
        Command::GatewayReport { .. }
    ));
    // A confirmation compared with a beacon that is no longer the last is refused.
    let stale = Command::ConfirmApplied {
        key: h.key.clone(),
        gateway: b.clone(),
        based_on: held.last_seq,
        seq: report.seq + 5,
        applied_epoch: report.applied_epoch,
        fence_epoch: report.fence_epoch,
    };
    let before = h.map.clone();
    let err = h.apply(stale).expect_err("outdated");
    assert!(
        matches!(err, MapError::ConfirmationOutdated { .. }),
        "{err}"
    );
    assert_eq!(h.map, before);
}

/// The level only rises, and only to what this build applies.
#[test]
fn the_feature_level_rises_once_and_never_past_this_build() {
    let mut h = two_serving();
    let epoch = h.map.epoch();
    assert!(h.ok(Command::SetFeatures(features::SUPPORTED)).changed);
    assert_eq!(h.map.features(), features::SUPPORTED);
    assert!(h.map.epoch() > epoch);
    assert!(!h.ok(Command::SetFeatures(0)).changed, "never lowered");
    assert_eq!(h.map.features(), features::SUPPORTED);
    let err = h
        .apply(Command::SetFeatures(features::SUPPORTED + 1))
        .expect_err("a level from a newer release");
    assert!(matches!(err, MapError::UnsupportedFeatures { .. }), "{err}");
}

#[test]
fn failover_prefers_the_least_loaded_gateway_in_the_same_location() {
    let mut h = Harness::new();
    for (id, l) in [("a", "east"), ("b", "west"), ("c", "east"), ("d", "west")] {
        h.create(id);
        h.ok(Command::SetLocation {
            key: h.key.clone(),
            gateway: gw(id),
            location: loc(l),
        });
    }
    for id in ["a", "b", "c", "d"] {
        h.boot(id, &[1, 2, 3, 4]);
    }
    h.time_out("a");
    assert_eq!(
        h.state("c", 1),
        AnaState::WaitFenceComplete,
        "same location"
    );
    h.complete_fences();
    h.serve("c", &[1, 2, 3, 4]);
    h.time_out("c");
    // No gateway left in the east: the least loaded of the west, ties by id.
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    assert_eq!(h.state("d", 3), AnaState::WaitFenceComplete);
}

#[test]
fn disaster_set_and_clear() {
    let mut h = Harness::new();
    for (id, l) in [("a", "east"), ("b", "west")] {
        h.create(id);
        h.ok(Command::SetLocation {
            key: h.key.clone(),
            gateway: gw(id),
            location: loc(l),
        });
        h.boot(id, &[1, 2]);
    }
    let err = h
        .apply(Command::DisasterSet {
            key: h.key.clone(),
            location: loc("east"),
        })
        .expect_err("east is up");
    assert!(matches!(err, MapError::LocationAvailable { .. }), "{err}");
    assert!(matches!(
        h.apply(Command::DisasterSet {
            key: h.key.clone(),
            location: loc("north")
        }),
        Err(MapError::NoGatewaysAtLocation { .. })
    ));
    assert!(matches!(
        h.apply(Command::DisasterClear {
            key: h.key.clone(),
            location: loc("east")
        }),
        Err(MapError::NotInDisaster { .. })
    ));
    h.time_out("a");
    h.complete_fences();
    h.serve("b", &[1, 2]);
    h.ok(Command::DisasterSet {
        key: h.key.clone(),
        location: loc("east"),
    });
    // a comes back but its location is in disaster: no failback.
    h.boot("a", &[1, 2]);
    h.tick(10_000);
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
    // Clear: the location recovers, a takes its group back, and the entry goes away.
    h.ok(Command::DisasterClear {
        key: h.key.clone(),
        location: loc("east"),
    });
    assert_eq!(
        h.disaster("east"),
        Some(gwmon_monitor::map::DisasterState::Recovering)
    );
    h.tick(h.map.config().failback_prepare_ms);
    h.serve("b", &[1, 2]);
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
    assert_eq!(h.disaster("east"), None);
}

#[test]
fn a_late_beacon_is_refused_and_changes_nothing() {
    let mut h = two_serving();
    let report = gwmon_proto::domain::GatewayReport {
        seq: 1,
        availability: ReportedAvailability::Unavailable,
        subsystems: vec![],
        applied_epoch: gwmon_proto::domain::Epoch::ZERO,
        fence_epoch: gwmon_proto::domain::Epoch::ZERO,
    };
    let err = h
        .apply(Command::GatewayReport {
            key: h.key.clone(),
            gateway: gw("a"),
            report,
        })
        .expect_err("seq 1 is older than the last committed");
    assert!(matches!(err, MapError::StaleBeacon { seq: 1, .. }), "{err}");
    assert_eq!(h.state("a", 1), AnaState::Active);
}

#[test]
fn bookkeeping_beacons_do_not_move_the_group_epoch() {
    let mut h = two_serving();
    h.serve("a", &[1, 2]);
    h.serve("b", &[1, 2]);
    let epoch = h.group_epoch();
    for _ in 0..5 {
        h.serve("a", &[1, 2]);
        h.serve("b", &[1, 2]);
    }
    assert_eq!(
        h.group_epoch(),
        epoch,
        "confirming an epoch must not create a new one"
    );
    let beacon = gwmon_proto::domain::GatewayReport {
        seq: 100,
        availability: ReportedAvailability::Available,
        subsystems: vec![subsystem(&gw("a"), &[1, 2], 2)],
        applied_epoch: epoch,
        fence_epoch: gwmon_proto::domain::Epoch::ZERO,
    };
    assert!(!h.map.report_changes(&h.key, &gw("a"), &beacon));
}

#[test]
fn completed_fences_expire_and_pending_ones_do_not() {
    let mut h = two_serving();
    h.time_out("a");
    let expiry = h.map.config().blocklist_expiry_ms;
    h.tick(expiry * 2);
    assert_eq!(h.pending_fences(), 1, "a pending fence never lapses");
    h.complete_fences();
    h.tick(expiry - 1);
    assert_eq!(h.map.group(&h.key).expect("group").fences.len(), 1);
    h.tick(1);
    assert!(h.map.group(&h.key).expect("group").fences.is_empty());
    assert_eq!(
        h.count_events(|e| matches!(e, Event::FenceExpired { .. })),
        1
    );
}

#[test]
fn an_idle_tick_changes_nothing() {
    let mut h = two_serving();
    let epoch = h.map.epoch();
    let tick = h.tick(1_000);
    assert!(!tick.changed);
    assert_eq!(h.map.epoch(), epoch);
}

#[test]
fn config_updates_merge_and_the_grace_at_most_halves_while_leases_are_out() {
    let mut h = Harness::new();
    let before = h.map.config().clone();
    h.ok(Command::UpdateConfig(ConfigUpdate {
        beacon_grace_ms: Some(1_000),
        ..ConfigUpdate::default()
    }));
    assert_eq!(h.map.config().beacon_grace_ms, 1_000);
    h.ok(Command::UpdateConfig(ConfigUpdate {
        beacon_grace_ms: Some(8_000),
        failback_delay_ms: Some(250),
        ..ConfigUpdate::default()
    }));
    let c = h.map.config().clone();
    assert_eq!((c.beacon_grace_ms, c.failback_delay_ms), (8_000, 250));
    assert_eq!(
        c.fence_timeout_ms, before.fence_timeout_ms,
        "untouched settings stay"
    );

    // A gateway serves and holds a lease of up to 4 s under the 8 s grace. A leader elected
    // just after a change counts only the new grace, so it may at most halve at a time.
    h.create("a");
    h.boot("a", &[1]);
    let refused = h
        .apply(Command::UpdateConfig(ConfigUpdate {
            beacon_grace_ms: Some(500),
            ..ConfigUpdate::default()
        }))
        .expect_err("a grace under half the current one is refused");
    assert!(refused.to_string().contains("set 4000 first"), "{refused}");
    for step in [4_000, 2_000, 1_000, 500] {
        h.ok(Command::UpdateConfig(ConfigUpdate {
            beacon_grace_ms: Some(step),
            ..ConfigUpdate::default()
        }));
    }
    assert_eq!(h.map.config().beacon_grace_ms, 500);
    // Invalid values are refused whole: nothing of the update is applied.
    assert!(h
        .apply(Command::UpdateConfig(ConfigUpdate {
            failback_delay_ms: Some(1),
            max_gateways_per_group: Some(0),
            ..ConfigUpdate::default()
        }))
        .is_err());
    assert_eq!(h.map.config().failback_delay_ms, 250);
}

/// Issue 14: `config set beacon_grace_ms=18446744073709551615` was accepted (a cut-off
/// gateway then never demotes), and `failback_prepare_ms=u64::MAX` kept a group dark for
/// good. Every setting has a range; the refusal names the setting, the value and the range.
#[test]
fn every_setting_outside_its_range_is_refused_by_name() {
    let mut h = Harness::new();
    let cases: [(ConfigUpdate, &str, &str); 6] = [
        (
            ConfigUpdate {
                beacon_grace_ms: Some(u64::MAX),
                ..ConfigUpdate::default()
            },
            "beacon_grace_ms 18446744073709551615",
            "500 to 120000",
        ),
        (
            ConfigUpdate {
                beacon_grace_ms: Some(499),
                ..ConfigUpdate::default()
            },
            "beacon_grace_ms 499",
            "500 to 120000",
        ),
        (
            ConfigUpdate {
                failback_prepare_ms: Some(u64::MAX),
                ..ConfigUpdate::default()
            },
            "failback_prepare_ms 18446744073709551615",
            "0 to 60000",
        ),
        (
            ConfigUpdate {
                max_gateways_per_group: Some(129),
                ..ConfigUpdate::default()
            },
            "max_gateways_per_group 129",
            "1 to 128",
        ),
        (
            ConfigUpdate {
                blocklist_expiry_ms: Some(29_999),
                ..ConfigUpdate::default()
            },
            "blocklist_expiry_ms 29999",
            "30000 (fence_timeout_ms) to 2592000000",
        ),
        (
            ConfigUpdate {
                delete_grace_ms: Some(59_999),
                ..ConfigUpdate::default()
            },
            "delete_grace_ms 59999",
            "60000 to 2592000000",
        ),
    ];
    let before = h.map.config().clone();
    for (update, named, range) in cases {
        let err = h
            .apply(Command::UpdateConfig(update))
            .expect_err("out of range");
        let text = err.to_string();
        assert!(matches!(err, MapError::OutOfRange { .. }), "{text}");
        assert!(text.contains(named) && text.contains(range), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        assert_eq!(h.map.config(), &before, "a refusal changes nothing");
    }
    // Both ends of every range are accepted.
    h.ok(Command::SetConfig(MapConfig::default().lowest()));
    assert_eq!(h.map.config(), &MapConfig::default().lowest());
    h.ok(Command::SetConfig(MapConfig::highest()));
    assert_eq!(h.map.config(), &MapConfig::highest());
    assert!(GatewayMap::new(MapConfig {
        fence_timeout_ms: 0,
        ..MapConfig::default()
    })
    .is_err());
}

/// Issue 14: an exec fence took 38 s, longer than the fence timeout, and in the same
/// command that completed it the healthy, waiting target was failed for "not confirming
/// the fence in time". The target's time to confirm counts from the completion.
#[test]
fn a_slow_fence_leaves_the_target_the_whole_timeout_after_it_completes() {
    let mut h = two_serving();
    let timeout = h.map.config().fence_timeout_ms;
    let fence_took = 38_000;
    assert!(fence_took > timeout, "the fence must outlast the timeout");
    h.time_out("a");
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    h.advance(fence_took);
    assert_eq!(h.complete_fences(), 1);
    assert_eq!(
        h.count_events(|e| matches!(e, Event::FenceWaitExpired { .. })),
        0,
        "the target was failed in the command that completed its fence"
    );
    assert_eq!(h.availability("b"), Some(Availability::Available));
    assert_eq!(h.server_of(1), Some(gw("b")), "fence done: b may serve");
    // Silent until just before the timeout, counted from the completion: still waiting.
    h.tick(timeout - 1);
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    assert_eq!(h.availability("b"), Some(Availability::Available));
    // Silent for the whole timeout after the completion: failed in turn.
    h.tick(1);
    assert_eq!(h.availability("b"), Some(Availability::Unavailable));
    assert_eq!(
        h.count_events(|e| matches!(e, Event::FenceWaitExpired { .. })),
        1
    );
}

#[test]
fn a_target_that_confirms_within_the_timeout_after_a_slow_fence_is_promoted() {
    let mut h = two_serving();
    let timeout = h.map.config().fence_timeout_ms;
    h.time_out("a");
    h.advance(timeout + 8_000);
    assert_eq!(h.complete_fences(), 1);
    h.advance(timeout - 1);
    h.serve("b", &[1, 2]); // confirms the fence epoch
    assert_eq!(h.state("b", 1), AnaState::Active);
    h.tick(timeout);
    assert_eq!(h.state("b", 1), AnaState::Active);
    assert_eq!(h.availability("b"), Some(Availability::Available));
    assert_eq!(
        h.count_events(|e| matches!(e, Event::FenceWaitExpired { .. })),
        0
    );
}

/// The same rule when the last blocker is cleared by the old holder's own confirmation
/// instead of a fence: the target's time to confirm starts then.
#[test]
fn a_late_confirmation_by_the_old_holder_also_restarts_the_targets_wait() {
    let mut h = two_serving();
    let timeout = h.map.config().fence_timeout_ms;
    // a loses its listeners: alive, but it cannot serve; b waits for a to stop.
    h.report("a", ReportedAvailability::Available, vec![])
        .expect("beacon");
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    assert_eq!(h.server_of(1), None);
    // a confirms it applied the map that stopped it, long after the failover started.
    h.advance(timeout + 8_000);
    h.report("a", ReportedAvailability::Available, vec![])
        .expect("beacon");
    assert_eq!(h.server_of(1), Some(gw("b")));
    assert_eq!(h.availability("b"), Some(Availability::Available));
    h.tick(timeout - 1);
    assert_eq!(h.availability("b"), Some(Availability::Available));
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("b", 1), AnaState::Active);
}
