//! The replica-registry engine: registration, edge-triggered reports, the in-sync generation
//! (the seed 001 four-replica scenario), the grace period, every stage of a replacement and
//! its idempotence, and properties over random command sequences: refusals change nothing,
//! invariants hold, repeats change nothing, and a connection never lists a replica that
//! misses writes.

use std::collections::BTreeMap;

use gwmon_monitor::map::Timestamp;
use gwmon_monitor::replica::{
    Applied, Exclusion, ReplicaCommand, ReplicaError, ReplicaEvent, ReplicaRegistry,
};
use gwmon_proto::domain::{
    HostIdentity, HostName, Nqn, Portal, ReplacementId, ReplicaId, ReplicaReport, ReplicaSpec,
    ReplicaState, Stage, Transport, VolumeAlias, VolumeId, VolumeSpec,
};
use proptest::prelude::*;

const GRACE_MS: u64 = 60_000;

fn uuid(kind: u8, n: u64) -> String {
    format!("00000000-0000-4000-8{kind:03x}-{n:012x}")
}

fn vol(n: u64) -> VolumeId {
    uuid(1, n).parse().expect("volume id")
}

fn rep(n: u64) -> ReplicaId {
    uuid(2, n).parse().expect("replica id")
}

fn host(n: u8) -> Nqn {
    format!("nqn.2014-08.org.nvmexpress:uuid:{}", uuid(3, n.into()))
        .parse()
        .expect("host nqn")
}

fn identity(n: u8) -> HostIdentity {
    HostIdentity {
        nqn: host(n),
        id: Some(uuid(4, n.into()).parse().expect("host id")),
        name: format!("compute-{n}").parse::<HostName>().expect("name"),
    }
}

fn replica_spec(n: u64) -> ReplicaSpec {
    ReplicaSpec {
        id: rep(n),
        target_nqn: format!("nqn.2016-06.io.spdk:replica{n}")
            .parse()
            .expect("target nqn"),
        portals: vec![Portal {
            transport: Transport::Tcp,
            address: format!("10.0.0.{}", n % 250 + 1).parse().expect("address"),
            port: 4420,
        }],
        namespace_uuid: None,
    }
}

fn volume_spec(n: u64, replicas: u32) -> VolumeSpec {
    VolumeSpec {
        id: vol(n),
        alias: format!("vol{n}").parse::<VolumeAlias>().expect("alias"),
        capacity_bytes: 1 << 30,
        replica_count: replicas,
        grace_period_ms: GRACE_MS,
    }
}

fn report(replica: u64, state: ReplicaState) -> ReplicaReport {
    ReplicaReport {
        replica: rep(replica),
        state,
        sync_permille: None,
    }
}

/// A registry with host 1 and volume 1 of `replicas` replicas numbered 1..=replicas.
fn registry(replicas: u32) -> ReplicaRegistry {
    let mut reg = ReplicaRegistry::default();
    apply_ok(
        &mut reg,
        ReplicaCommand::RegisterHost { host: identity(1) },
        1_000,
    );
    apply_ok(
        &mut reg,
        ReplicaCommand::CreateVolume {
            spec: volume_spec(1, replicas),
            replicas: (1..=u64::from(replicas)).map(replica_spec).collect(),
        },
        1_000,
    );
    reg
}

#[track_caller]
fn apply_ok(reg: &mut ReplicaRegistry, cmd: ReplicaCommand, now: u64) -> Applied {
    match reg.apply(&cmd, Timestamp(now)) {
        Ok(a) => {
            check_all(reg);
            a
        }
        Err(e) => panic!("{cmd:?} refused: {e}"),
    }
}

/// Applies `cmd`, which must be refused, and checks that the refusal changed nothing.
#[track_caller]
fn apply_err(reg: &mut ReplicaRegistry, cmd: ReplicaCommand, now: u64) -> ReplicaError {
    let before = reg.clone();
    match reg.apply(&cmd, Timestamp(now)) {
        Ok(a) => panic!("{cmd:?} was accepted: {a:?}"),
        Err(e) => {
            assert_eq!(*reg, before, "a refusal changed the registry");
            e
        }
    }
}

#[track_caller]
fn check_all(reg: &ReplicaRegistry) {
    for v in reg.volumes().values() {
        if let Err(e) = v.check() {
            panic!("invariant broken: {e}");
        }
    }
}

fn reports(reg: &mut ReplicaRegistry, now: u64, list: &[(u64, ReplicaState)]) -> Applied {
    apply_ok(
        reg,
        ReplicaCommand::ReportStates {
            host: host(1),
            volume: vol(1),
            reports: list.iter().map(|&(r, s)| report(r, s)).collect(),
        },
        now,
    )
}

fn state(reg: &ReplicaRegistry, replica: u64) -> ReplicaState {
    reg.volume(&vol(1)).expect("volume").replicas[&rep(replica)].state
}

fn usable(reg: &ReplicaRegistry) -> Vec<ReplicaId> {
    reg.connection(&host(1), &vol(1))
        .expect("connection")
        .replicas
        .iter()
        .map(|r| r.id)
        .collect()
}

fn request(replica: u64, force: bool) -> ReplicaCommand {
    ReplicaCommand::RequestReplacement {
        volume: vol(1),
        replica: rep(replica),
        by: (!force).then(|| host(1)),
        force,
    }
}

fn ack(id: ReplacementId, done: Stage) -> ReplicaCommand {
    ReplicaCommand::AcknowledgeReplacement {
        host: host(1),
        volume: vol(1),
        replacement: id,
        done,
    }
}

fn supply(id: ReplacementId, replica: u64) -> ReplicaCommand {
    ReplicaCommand::SupplyReplacement {
        volume: vol(1),
        replacement: id,
        replica: replica_spec(replica),
    }
}

fn confirm(replica: u64) -> ReplicaCommand {
    ReplicaCommand::ConfirmReplicaDeleted {
        volume: vol(1),
        replica: rep(replica),
    }
}

#[test]
fn a_created_volume_has_every_replica_in_sync_and_creating_it_again_changes_nothing() {
    let mut reg = registry(3);
    let v = reg.volume(&vol(1)).expect("volume");
    assert_eq!(v.generation, 1);
    assert!(v
        .replicas
        .values()
        .all(|r| r.state == ReplicaState::Available));
    assert_eq!(usable(&reg), vec![rep(1), rep(2), rep(3)]);

    let again = apply_ok(
        &mut reg,
        ReplicaCommand::CreateVolume {
            spec: volume_spec(1, 3),
            replicas: vec![replica_spec(3), replica_spec(1), replica_spec(2)],
        },
        2_000,
    );
    assert!(!again.changed && again.events.is_empty());

    let mut other = volume_spec(1, 3);
    other.capacity_bytes *= 2;
    let e = apply_err(
        &mut reg,
        ReplicaCommand::CreateVolume {
            spec: other,
            replicas: vec![replica_spec(1)],
        },
        2_000,
    );
    assert_eq!(e, ReplicaError::VolumeExists(vol(1)));

    let mut same_alias = volume_spec(2, 1);
    same_alias.alias = "vol1".parse().expect("alias");
    let e = apply_err(
        &mut reg,
        ReplicaCommand::CreateVolume {
            spec: same_alias,
            replicas: vec![replica_spec(9)],
        },
        2_000,
    );
    assert!(matches!(e, ReplicaError::AliasTaken { .. }), "{e}");

    let e = apply_err(
        &mut reg,
        ReplicaCommand::CreateVolume {
            spec: volume_spec(2, 2),
            replicas: vec![replica_spec(1)],
        },
        2_000,
    );
    assert_eq!(
        e,
        ReplicaError::ReplicaIdTaken {
            replica: rep(1),
            volume: vol(1)
        }
    );

    let e = apply_err(
        &mut reg,
        ReplicaCommand::CreateVolume {
            spec: volume_spec(2, 1),
            replicas: vec![replica_spec(8), replica_spec(9)],
        },
        2_000,
    );
    assert!(matches!(e, ReplicaError::TooManyReplicas { given: 2, .. }));
}

#[test]
fn reports_are_edge_triggered_and_idempotent() {
    let mut reg = registry(2);
    let first = reports(&mut reg, 5_000, &[(1, ReplicaState::Missing)]);
    assert!(first.changed);
    assert_eq!(first.changed_replicas, vec![rep(1)]);
    assert!(first.events.iter().any(|e| matches!(
        e,
        ReplicaEvent::ReplicaStateChanged {
            from: ReplicaState::Available,
            to: ReplicaState::Missing,
            ..
        }
    )));
    let epoch = reg.epoch();

    // The same view again, later: nothing changes, no event, and the state's age is kept.
    assert!(!reg.report_is_news(&host(1), &vol(1), &[report(1, ReplicaState::Missing)]));
    let again = reports(&mut reg, 9_000, &[(1, ReplicaState::Missing)]);
    assert!(!again.changed && again.events.is_empty() && again.changed_replicas.is_empty());
    assert_eq!(reg.epoch(), epoch);
    let r1 = &reg.volume(&vol(1)).expect("volume").replicas[&rep(1)];
    assert_eq!(r1.since, Timestamp(5_000));
    assert_eq!(r1.reported_by, Some(host(1)));

    // Progress while synchronizing is recorded without an event.
    reports(&mut reg, 10_000, &[(1, ReplicaState::Synchronizing)]);
    let progress = apply_ok(
        &mut reg,
        ReplicaCommand::ReportStates {
            host: host(1),
            volume: vol(1),
            reports: vec![ReplicaReport {
                replica: rep(1),
                state: ReplicaState::Synchronizing,
                sync_permille: Some(400),
            }],
        },
        11_000,
    );
    assert!(progress.changed && progress.events.is_empty());
    assert_eq!(
        reg.volume(&vol(1)).expect("volume").replicas[&rep(1)].sync_permille,
        Some(400)
    );
}

#[test]
fn unknown_hosts_volumes_and_replicas_are_refused_and_named() {
    let mut reg = registry(2);
    let e = apply_err(
        &mut reg,
        ReplicaCommand::ReportStates {
            host: host(9),
            volume: vol(1),
            reports: vec![report(1, ReplicaState::Missing)],
        },
        2_000,
    );
    assert_eq!(e, ReplicaError::UnknownHost(host(9)));
    assert!(e.is_not_found());

    let e = apply_err(
        &mut reg,
        ReplicaCommand::ReportStates {
            host: host(1),
            volume: vol(7),
            reports: vec![report(1, ReplicaState::Missing)],
        },
        2_000,
    );
    assert_eq!(e.to_string(), format!("unknown volume {}", vol(7)));

    // A report naming an unknown replica is refused whole, even its valid part.
    let e = apply_err(
        &mut reg,
        ReplicaCommand::ReportStates {
            host: host(1),
            volume: vol(1),
            reports: vec![
                report(1, ReplicaState::Missing),
                report(5, ReplicaState::Missing),
            ],
        },
        2_000,
    );
    assert_eq!(
        e,
        ReplicaError::UnknownReplica {
            volume: vol(1),
            replica: rep(5)
        }
    );
    assert_eq!(state(&reg, 1), ReplicaState::Available);
    assert!(reg
        .connection(&host(9), &vol(1))
        .is_err_and(|e| e.is_not_found()));
    assert!(apply_err(
        &mut reg,
        ReplicaCommand::DeleteVolume { volume: vol(7) },
        2_000
    )
    .is_not_found());
}

/// Seed 001: a four-replica array loses two legs and keeps writing to the other two; after
/// a reboot the host sees only the two legs lost earlier. The registry must not offer them.
#[test]
fn seed_001_the_two_stale_legs_are_never_offered_and_the_refusal_says_why() {
    let mut reg = registry(4);
    let lost = reports(
        &mut reg,
        10_000,
        &[(1, ReplicaState::Missing), (2, ReplicaState::Missing)],
    );
    assert!(lost.events.iter().any(|e| matches!(
        e,
        ReplicaEvent::GenerationAdvanced { generation: 2, dropped, .. } if *dropped == vec![rep(1), rep(2)]
    )));
    assert_eq!(usable(&reg), vec![rep(3), rep(4)]);

    // Reboot: only legs 1 and 2 answer. The host sees them "in sync" in an array of their
    // own; the good legs are missing.
    let after_reboot = reports(
        &mut reg,
        20_000,
        &[
            (1, ReplicaState::Available),
            (2, ReplicaState::Available),
            (3, ReplicaState::Missing),
            (4, ReplicaState::Missing),
        ],
    );
    assert!(after_reboot.events.iter().any(|e| matches!(
        e,
        ReplicaEvent::StaleReplicaNotTrusted { replica, replica_generation: 1, volume_generation: 2, .. } if *replica == rep(1)
    )));
    let v = reg.volume(&vol(1)).expect("volume");
    assert_eq!(
        v.generation, 2,
        "losing every good leg at once does not move the generation"
    );
    let conn = reg.connection(&host(1), &vol(1)).expect("connection");
    assert_eq!(
        conn.replicas.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![rep(3), rep(4)],
        "only the legs with the newest data are offered, unreachable as they are"
    );
    assert_eq!(conn.excluded.len(), 2);
    for e in &conn.excluded {
        assert_eq!(e.reason, Exclusion::Stale);
        assert!(
            e.message.contains("generation 1") && e.message.contains("generation 2"),
            "{}",
            e.message
        );
    }

    // The good legs then fail for good: nothing is safe, and the refusal names both stale legs.
    reports(
        &mut reg,
        30_000,
        &[(3, ReplicaState::Faulty), (4, ReplicaState::Faulty)],
    );
    let err = reg
        .connection(&host(1), &vol(1))
        .expect_err("nothing is safe");
    let text = err.to_string();
    assert!(matches!(err, ReplicaError::NoSafeReplica { .. }));
    assert!(
        text.contains(&format!("replica {} is stale", rep(1))),
        "{text}"
    );
    assert!(
        text.contains(&format!("replica {} is stale", rep(2))),
        "{text}"
    );
    assert!(text.contains("faulty"), "{text}");

    // A replacement cannot be synced from stale data either.
    let e = apply_err(&mut reg, request(3, false), 30_000 + 2 * GRACE_MS);
    assert_eq!(e, ReplicaError::NoSyncSource { volume: vol(1) });
}

#[test]
fn a_stale_leg_is_trusted_again_only_beside_an_in_sync_leg_of_the_same_report() {
    let mut reg = registry(3);
    reports(&mut reg, 10_000, &[(1, ReplicaState::Missing)]);
    assert_eq!(usable(&reg), vec![rep(2), rep(3)]);
    // md re-adds it and resyncs: synchronizing, then in sync beside 2 and 3.
    reports(&mut reg, 11_000, &[(1, ReplicaState::Synchronizing)]);
    assert_eq!(usable(&reg), vec![rep(2), rep(3)]);
    let back = reports(
        &mut reg,
        12_000,
        &[
            (1, ReplicaState::Available),
            (2, ReplicaState::Available),
            (3, ReplicaState::Available),
        ],
    );
    assert!(back
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::ReplicaTrusted { replica, .. } if *replica == rep(1))));
    assert_eq!(usable(&reg), vec![rep(1), rep(2), rep(3)]);
}

#[test]
fn a_faulty_leg_is_left_behind_even_when_the_others_go_missing_in_the_same_period() {
    let mut reg = registry(2);
    reports(
        &mut reg,
        10_000,
        &[(1, ReplicaState::Faulty), (2, ReplicaState::Missing)],
    );
    let conn = reg.connection(&host(1), &vol(1)).expect("connection");
    assert_eq!(
        conn.replicas.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![rep(2)]
    );
    assert_eq!(conn.excluded[0].reason, Exclusion::Stale);
    // It coming back alone does not make it trusted.
    reports(&mut reg, 11_000, &[(1, ReplicaState::Available)]);
    assert_eq!(usable(&reg), vec![rep(2)]);
}

#[test]
fn a_replacement_waits_for_the_grace_period_measured_from_the_first_bad_report() {
    let mut reg = registry(3);
    let e = apply_err(&mut reg, request(1, false), 2_000);
    assert!(matches!(
        e,
        ReplicaError::ReplicaNotBad {
            state: ReplicaState::Available,
            ..
        }
    ));

    reports(&mut reg, 10_000, &[(1, ReplicaState::Missing)]);
    // Missing -> faulty does not restart the clock.
    reports(&mut reg, 40_000, &[(1, ReplicaState::Faulty)]);
    let e = apply_err(&mut reg, request(1, false), 69_999);
    assert_eq!(
        e,
        ReplicaError::GraceNotPassed {
            volume: vol(1),
            replica: rep(1),
            bad_for_ms: 59_999,
            grace_ms: GRACE_MS
        }
    );
    assert!(e.to_string().contains("ask again in 1 ms"), "{e}");

    // Coming back (even briefly) restarts it.
    reports(&mut reg, 50_000, &[(1, ReplicaState::Synchronizing)]);
    reports(&mut reg, 55_000, &[(1, ReplicaState::Missing)]);
    apply_err(&mut reg, request(1, false), 70_000);
    // A leader whose clock is behind cannot make time run backwards.
    let e = apply_err(&mut reg, request(1, false), 1_000);
    assert!(
        matches!(e, ReplicaError::GraceNotPassed { bad_for_ms: 0, .. }),
        "{e}"
    );

    let ok = apply_ok(&mut reg, request(1, false), 115_000);
    let p = ok.replacement.expect("replacement");
    assert_eq!(
        (p.stage, p.old, p.forced),
        (Stage::Requested, rep(1), false)
    );
    assert_eq!(p.requested_by, Some(host(1)));
}

#[test]
fn an_operator_may_force_a_replacement_of_a_healthy_replica() {
    let mut reg = registry(2);
    let p = apply_ok(&mut reg, request(2, true), 2_000)
        .replacement
        .expect("replacement");
    assert!(p.forced && p.requested_by.is_none());
    let id = p.id;
    apply_ok(&mut reg, supply(id, 3), 3_000);
    apply_ok(&mut reg, ack(id, Stage::Attached), 4_000);
    apply_ok(&mut reg, ack(id, Stage::Synced), 5_000);
    assert_eq!(state(&reg, 2), ReplicaState::Terminating);
    assert_eq!(usable(&reg), vec![rep(1), rep(3)]);
}

#[test]
fn the_full_replacement_flow_commits_every_stage_once_and_repeats_change_nothing() {
    let mut reg = registry(3);
    reports(&mut reg, 10_000, &[(1, ReplicaState::Faulty)]);
    let now = 10_000 + GRACE_MS;

    let p = apply_ok(&mut reg, request(1, false), now)
        .replacement
        .expect("p");
    let id = p.id;
    // Asking again (a lost answer, a restarted agent) answers with the same replacement.
    let again = apply_ok(&mut reg, request(1, false), now + 1);
    assert!(!again.changed);
    assert_eq!(again.replacement.map(|p| p.id), Some(id));
    // Another replica of the same volume must wait.
    reports(&mut reg, now, &[(2, ReplicaState::Missing)]);
    let e = apply_err(&mut reg, request(2, false), now + 2 * GRACE_MS);
    assert!(matches!(e, ReplicaError::ReplacementBusy { .. }));
    reports(&mut reg, now, &[(2, ReplicaState::Available)]);

    // Stages cannot be skipped.
    let e = apply_err(&mut reg, ack(id, Stage::Attached), now);
    assert_eq!(
        e,
        ReplicaError::StageOutOfOrder {
            replacement: id,
            stage: Stage::Requested,
            requested: Stage::Attached
        }
    );
    let e = apply_err(&mut reg, confirm(1), now);
    assert!(matches!(e, ReplicaError::StageOutOfOrder { .. }));

    let supplied = apply_ok(&mut reg, supply(id, 4), now + 100);
    assert_eq!(
        supplied.replacement.as_ref().map(|p| p.stage),
        Some(Stage::Supplied)
    );
    assert!(!apply_ok(&mut reg, supply(id, 4), now + 150).changed);
    let e = apply_err(&mut reg, supply(id, 5), now + 150);
    assert_eq!(
        e,
        ReplicaError::ConflictingSupply {
            replacement: id,
            supplied: rep(4)
        }
    );
    // The new replica is listed in the volume but not offered for connection yet.
    let conn = reg.connection(&host(1), &vol(1)).expect("connection");
    assert!(conn
        .excluded
        .iter()
        .any(|e| e.replica == rep(4) && e.reason == Exclusion::NotSynced));
    assert!(apply_err(&mut reg, ack(id, Stage::Done), now)
        .to_string()
        .contains("acknowledges only"));

    apply_ok(&mut reg, ack(id, Stage::Attached), now + 200);
    assert!(!apply_ok(&mut reg, ack(id, Stage::Attached), now + 250).changed);
    reports(&mut reg, now + 300, &[(4, ReplicaState::Synchronizing)]);

    let synced = apply_ok(&mut reg, ack(id, Stage::Synced), now + 400);
    assert!(synced.changed);
    assert_eq!(state(&reg, 4), ReplicaState::Available);
    assert_eq!(state(&reg, 1), ReplicaState::Terminating);
    assert_eq!(usable(&reg), vec![rep(2), rep(3), rep(4)]);
    // A host cannot talk a retiring replica back.
    let ignored = reports(&mut reg, now + 450, &[(1, ReplicaState::Available)]);
    assert!(!ignored.changed);
    // An acknowledgement of an earlier stage, arriving late, changes nothing.
    assert!(!apply_ok(&mut reg, ack(id, Stage::Attached), now + 460).changed);

    apply_ok(&mut reg, ack(id, Stage::Retired), now + 500);
    let done = apply_ok(&mut reg, confirm(1), now + 600);
    let p = done.replacement.expect("p");
    assert_eq!(p.stage, Stage::Done);
    let v = reg.volume(&vol(1)).expect("volume");
    assert!(v.replacement.is_none());
    assert!(!v.replicas.contains_key(&rep(1)));
    assert_eq!(v.last_replacement.as_ref().map(|p| p.id), Some(id));

    // Every final call repeated is answered, not refused, and changes nothing.
    for cmd in [
        confirm(1),
        ack(id, Stage::Retired),
        supply(id, 4),
        request(1, false),
    ] {
        let a = apply_ok(&mut reg, cmd, now + 700);
        assert!(!a.changed);
        assert_eq!(
            a.replacement.map(|p| (p.id, p.stage)),
            Some((id, Stage::Done))
        );
    }
    // A replica that is not being retired cannot be confirmed deleted.
    assert!(matches!(
        apply_err(&mut reg, confirm(2), now + 800),
        ReplicaError::NotRetiring { .. }
    ));
}

#[test]
fn a_replacement_can_be_cancelled_only_before_a_replica_is_supplied_and_ids_are_not_reused() {
    let mut reg = registry(2);
    reports(&mut reg, 10_000, &[(1, ReplicaState::Missing)]);
    let now = 10_000 + GRACE_MS;
    let first = apply_ok(&mut reg, request(1, false), now)
        .replacement
        .expect("p")
        .id;
    let cancel = |id, reason: &str| ReplicaCommand::CancelReplacement {
        volume: vol(1),
        replacement: id,
        reason: reason.into(),
    };
    let c = apply_ok(&mut reg, cancel(first, "no room"), now + 1);
    assert_eq!(
        c.replacement.as_ref().map(|p| p.stage),
        Some(Stage::Cancelled)
    );
    assert!(!apply_ok(&mut reg, cancel(first, "no room"), now + 2).changed);
    assert!(matches!(
        apply_err(&mut reg, supply(first, 3), now + 3),
        ReplicaError::ReplacementFinished { .. }
    ));

    let second = apply_ok(&mut reg, request(1, false), now + 4)
        .replacement
        .expect("p")
        .id;
    assert!(second > first);
    apply_ok(&mut reg, supply(second, 3), now + 5);
    let e = apply_err(&mut reg, cancel(second, "too late"), now + 6);
    assert!(matches!(
        e,
        ReplicaError::StageOutOfOrder {
            stage: Stage::Supplied,
            ..
        }
    ));
    let unknown = ReplacementId::new(99).expect("id");
    assert!(apply_err(&mut reg, ack(unknown, Stage::Attached), now).is_not_found());
}

#[test]
fn expanding_grows_only_and_hosts_heartbeat() {
    let mut reg = registry(1);
    let expand = |bytes| ReplicaCommand::ExpandVolume {
        volume: vol(1),
        capacity_bytes: bytes,
    };
    assert!(apply_ok(&mut reg, expand(2 << 30), 2_000).changed);
    assert!(!apply_ok(&mut reg, expand(2 << 30), 2_000).changed);
    assert!(matches!(
        apply_err(&mut reg, expand(1 << 30), 2_000),
        ReplicaError::ShrinkRefused { .. }
    ));

    let hb = ReplicaCommand::Heartbeat {
        host: identity(2),
        volumes: vec![vol(1)],
    };
    let a = apply_ok(&mut reg, hb.clone(), 3_000);
    assert!(a
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::HostRegistered { .. })));
    assert!(!apply_ok(&mut reg, hb.clone(), 3_000).changed);
    assert!(apply_ok(&mut reg, hb, 4_000).changed);
    let h = reg.host(&host(2)).expect("host");
    assert_eq!(
        (h.registered_at, h.last_heartbeat),
        (Timestamp(3_000), Some(Timestamp(4_000)))
    );
    assert_eq!(h.volumes, vec![vol(1)]);
}

// ---- properties ----

#[derive(Debug, Clone)]
enum Op {
    Report(Vec<(u8, u8)>),
    Write,
    Request(u8, bool),
    Supply(u8),
    Ack(u8),
    Cancel,
    Confirm,
    Tick(u32),
}

const STATES: [ReplicaState; 4] = [
    ReplicaState::Available,
    ReplicaState::Synchronizing,
    ReplicaState::Missing,
    ReplicaState::Faulty,
];
const ACKS: [Stage; 4] = [Stage::Attached, Stage::Synced, Stage::Retired, Stage::Done];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((1..=8u8, 0..4u8), 1..4).prop_map(Op::Report),
        3 => Just(Op::Write),
        2 => (1..=8u8, any::<bool>()).prop_map(|(r, f)| Op::Request(r, f)),
        2 => (5..=12u8).prop_map(Op::Supply),
        3 => (0..4u8).prop_map(Op::Ack),
        1 => Just(Op::Cancel),
        2 => Just(Op::Confirm),
        2 => (0..120_000u32).prop_map(Op::Tick),
    ]
}

/// What the data on each replica really is: the number of the last write it holds. A write
/// reaches every leg the host holds in sync, and is made only by an honest host, whose array
/// holds a leg with every write (it connected what the registry offered).
#[derive(Default)]
struct Truth {
    writes: u64,
    holds: BTreeMap<ReplicaId, u64>,
}

impl Truth {
    fn up_to_date(&self, r: &ReplicaId) -> bool {
        self.holds.get(r) == Some(&self.writes)
    }

    /// The host writes whenever its array runs, and every leg it holds in sync gets the
    /// write. The registry is never told of writes, so the property runs one between any two
    /// steps. The host is honest: its array was built from legs the registry offered, so it
    /// runs only while it holds a leg the registry holds current (an array assembled from
    /// stale legs alone, against the registry's answer, is the host's fault and beyond
    /// what the registry can prevent).
    fn write(&mut self, reg: &ReplicaRegistry) {
        let Ok(v) = reg.volume(&vol(1)) else {
            return;
        };
        let in_array: Vec<ReplicaId> = v
            .replicas
            .values()
            .filter(|r| r.state == ReplicaState::Available)
            .map(|r| r.spec.id)
            .collect();
        let runs = v
            .in_sync_available(None)
            .any(|r| self.up_to_date(&r.spec.id));
        if runs {
            self.writes += 1;
            for r in in_array {
                self.holds.insert(r, self.writes);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn refusals_change_nothing_repeats_change_nothing_and_no_stale_leg_is_offered(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let mut reg = registry(4);
        let mut truth = Truth::default();
        for n in 1..=4 {
            truth.holds.insert(rep(n), 0);
        }
        let mut now = 10_000u64;
        let mut last_generation = 1;
        let mut stages: BTreeMap<ReplacementId, Stage> = BTreeMap::new();
        for op in ops {
            truth.write(&reg);
            let active = reg.volume(&vol(1)).expect("volume").replacement.as_ref().map(|p| p.id);
            let cmd = match op {
                Op::Tick(ms) => { now += u64::from(ms); continue; }
                Op::Write => { truth.write(&reg); continue; }
                Op::Report(list) => {
                    let mut seen = std::collections::BTreeSet::new();
                    let reports: Vec<ReplicaReport> = list.into_iter()
                        .filter(|(r, _)| seen.insert(*r))
                        .map(|(r, s)| report(r.into(), STATES[usize::from(s)]))
                        .collect();
                    ReplicaCommand::ReportStates { host: host(1), volume: vol(1), reports }
                }
                Op::Request(r, force) => request(r.into(), force),
                Op::Supply(r) => supply(active.unwrap_or(ReplacementId::FIRST), r.into()),
                Op::Ack(s) => ack(active.unwrap_or(ReplacementId::FIRST), ACKS[usize::from(s)]),
                Op::Cancel => ReplicaCommand::CancelReplacement {
                    volume: vol(1),
                    replacement: active.unwrap_or(ReplacementId::FIRST),
                    reason: "test".into(),
                },
                Op::Confirm => {
                    let old = reg.volume(&vol(1)).expect("volume").replacement.as_ref().map(|p| p.old);
                    ReplicaCommand::ConfirmReplicaDeleted { volume: vol(1), replica: old.unwrap_or(rep(1)) }
                }
            };
            // What an honest host's md does, as the registry is told: a leg reported in
            // sync beside a leg holding every write holds every write too; a new leg
            // acknowledged synced was synced from one.
            let before = reg.clone();
            let anchor = before.volume(&vol(1)).expect("volume").replicas.values()
                .any(|r| r.state == ReplicaState::Available && truth.up_to_date(&r.spec.id));
            match reg.apply(&cmd, Timestamp(now)) {
                Err(_) => prop_assert_eq!(&reg, &before, "a refusal changed the registry"),
                Ok(applied) => {
                    for v in reg.volumes().values() {
                        prop_assert!(v.check().is_ok(), "{:?}", v.check());
                    }
                    // The same command again at the same time changes nothing.
                    let snapshot = reg.clone();
                    let again = reg.apply(&cmd, Timestamp(now));
                    prop_assert!(again.as_ref().is_ok_and(|a| !a.changed), "repeat of {:?}: {:?}", cmd, again);
                    prop_assert_eq!(&reg, &snapshot);

                    if let ReplicaCommand::ReportStates { reports, .. } = &cmd {
                        let now_anchor = reg.volume(&vol(1)).expect("volume").replicas.values()
                            .any(|r| r.state == ReplicaState::Available && truth.up_to_date(&r.spec.id));
                        for rep in reports {
                            let current = reg.volume(&vol(1)).expect("volume").replicas[&rep.replica].state;
                            if rep.state == ReplicaState::Available
                                && current == ReplicaState::Available
                                && now_anchor
                            {
                                truth.holds.insert(rep.replica, truth.writes);
                            }
                        }
                    }
                    if let Some(p) = &applied.replacement {
                        if let (Stage::Synced, Some(new)) = (p.stage, &p.new) {
                            if applied.changed && anchor {
                                truth.holds.insert(new.id, truth.writes);
                            }
                        }
                        if applied.changed {
                            if let Some(prev) = stages.get(&p.id) {
                                prop_assert!(*prev <= p.stage, "stage went back");
                            }
                        }
                        stages.insert(p.id, p.stage);
                    }
                    if let ReplicaCommand::SupplyReplacement { replica, .. } = &cmd {
                        truth.holds.entry(replica.id).or_insert(0);
                    }
                }
            }
            truth.write(&reg);
            let v = reg.volume(&vol(1)).expect("volume");
            prop_assert!(v.generation >= last_generation, "generation went back");
            last_generation = v.generation;
            if let Ok(conn) = reg.connection(&host(1), &vol(1)) {
                for r in &conn.replicas {
                    let rec = &v.replicas[&r.id];
                    prop_assert!(rec.state != ReplicaState::Faulty && rec.state != ReplicaState::Terminating);
                    prop_assert!(
                        truth.up_to_date(&r.id),
                        "replica {} offered without write {} (it holds {:?}); volume {:?}",
                        r.id, truth.writes, truth.holds.get(&r.id), v
                    );
                }
            }
        }
    }
}
