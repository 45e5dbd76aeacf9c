//! `nvme-gw health`: the checks derived from the map alone, driven through the engine.

mod common;

use common::*;
use gwmon_monitor::admin::health_checks;
use gwmon_monitor::map::{AnaState, GatewayMap, MapConfig, Timestamp};

fn codes(h: &Harness) -> Vec<String> {
    health_checks(&h.map, Timestamp(h.now))
        .into_iter()
        .map(|c| c.code)
        .collect()
}

fn dark(h: &Harness) -> Vec<String> {
    health_checks(&h.map, Timestamp(h.now))
        .into_iter()
        .filter(|c| c.code == "NVMEOF_ANA_GROUP_DARK")
        .map(|c| c.message)
        .collect()
}

/// Two gateways, each active on its own ANA group.
fn two_serving(config: MapConfig) -> Harness {
    let mut h = Harness::with_config(config);
    h.create("a");
    h.create("b");
    h.boot("a", &[1, 2]);
    h.boot("b", &[1, 2]);
    h.tick(h.map.config().failback_prepare_ms);
    h.serve("a", &[1, 2]);
    h.serve("b", &[1, 2]);
    assert_eq!(h.state("a", 1), AnaState::Active);
    assert_eq!(h.state("b", 2), AnaState::Active);
    h
}

#[test]
fn a_served_map_is_healthy() {
    let mut h = two_serving(MapConfig::default());
    h.advance(3_600_000);
    assert!(codes(&h).is_empty(), "{:?}", codes(&h));
}

#[test]
fn a_failover_waiting_for_its_fence_is_dark_after_the_grace() {
    let mut h = two_serving(MapConfig::default());
    let grace = h.map.config().beacon_grace_ms;
    h.time_out("a");
    assert_eq!(h.state("b", 1), AnaState::WaitFenceComplete);
    h.advance(grace);
    assert!(dark(&h).is_empty(), "not longer than the grace yet");
    h.advance(1_000);
    let messages = dark(&h);
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert!(
        m.contains("ANA group 1")
            && m.contains("rbd/grp1")
            && m.contains("for 5 s")
            && m.contains("failover to b waits for its fence"),
        "{m}"
    );
    assert!(!m.contains('\n'), "one line: {m}");
    // Fence done: b may serve, the group is lit again.
    h.complete_fences();
    assert!(dark(&h).is_empty(), "{:?}", dark(&h));
}

#[test]
fn an_ana_group_nobody_can_take_is_dark_after_the_grace() {
    let mut h = Harness::new();
    h.create("a");
    h.boot("a", &[1]);
    h.advance(10_000);
    h.time_out("a");
    let grace = h.map.config().beacon_grace_ms;
    h.advance(grace);
    assert!(dark(&h).is_empty());
    h.advance(1);
    let messages = dark(&h);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("ANA group 1") && messages[0].contains("no gateway holds it"),
        "{messages:?}"
    );
}

#[test]
fn a_failback_that_outlasts_the_grace_is_dark_and_the_setting_is_flagged() {
    let config = MapConfig {
        failback_prepare_ms: 10_000,
        ..MapConfig::default()
    };
    let mut h = Harness::with_config(config.clone());
    assert!(
        codes(&h).contains(&"NVMEOF_FAILBACK_SLOW".to_owned()),
        "{:?}",
        codes(&h)
    );
    h.create("a");
    h.create("b");
    h.boot("a", &[1, 2]);
    // b does not come up within the grace: a takes its group meanwhile.
    h.tick(config.beacon_grace_ms);
    assert_eq!(h.state("a", 2), AnaState::Active);
    h.boot("b", &[1, 2]);
    assert_eq!(h.state("b", 2), AnaState::OwnerWaitFailbackPrepared);
    h.serve("b", &[1, 2]);
    // a does not confirm that it let go.
    h.advance(config.beacon_grace_ms + 1_000);
    let messages = dark(&h);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("ANA group 2") && messages[0].contains("failback from a to b"),
        "{messages:?}"
    );
    h.serve("a", &[1, 2]);
    assert_eq!(h.state("b", 2), AnaState::Active);
    assert!(dark(&h).is_empty(), "{:?}", dark(&h));
    assert!(!codes(&two_serving(MapConfig::default())).contains(&"NVMEOF_FAILBACK_SLOW".to_owned()));
}

/// A map written before the ranges existed may hold a grace of `u64::MAX`; it still loads,
/// and health says which setting to fix.
#[test]
fn a_stored_setting_out_of_range_is_reported() {
    let map = GatewayMap::new(MapConfig::default()).expect("valid");
    let mut value = serde_json::to_value(&map).expect("encode");
    value["config"]["beacon_grace_ms"] = serde_json::json!(u64::MAX);
    let old: GatewayMap = serde_json::from_value(value).expect("decode");
    let checks = health_checks(&old, Timestamp(1));
    let check = checks
        .iter()
        .find(|c| c.code == "NVMEOF_CONFIG_OUT_OF_RANGE")
        .expect("reported");
    assert!(
        check
            .message
            .contains("beacon_grace_ms 18446744073709551615"),
        "{}",
        check.message
    );
}

#[test]
fn a_flapping_gateway_is_named_until_its_damping_ends() {
    let mut h = two_serving(MapConfig::default());
    h.time_out("a");
    h.complete_fences();
    h.boot("a", &[1, 2]);
    assert!(!codes(&h).contains(&"NVMEOF_GATEWAY_FLAPPING".to_owned()));
    h.time_out("a");
    let flapping: Vec<String> = health_checks(&h.map, Timestamp(h.now))
        .into_iter()
        .filter(|c| c.code == "NVMEOF_GATEWAY_FLAPPING")
        .map(|c| c.message)
        .collect();
    assert_eq!(flapping.len(), 1, "{flapping:?}");
    assert!(flapping[0].contains("gateway a "), "{flapping:?}");
    h.advance(gwmon_monitor::map::damping::max_damped_ms());
    assert!(!codes(&h).contains(&"NVMEOF_GATEWAY_FLAPPING".to_owned()));
}
