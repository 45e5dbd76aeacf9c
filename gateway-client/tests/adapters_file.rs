//! The JSON-file target: hand-written subsystems in, ANA states out, atomically.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gwmon_client::adapters::file::FileTarget;
use gwmon_client::{AnaEntry, AnaHandler, AnaStates, HandlerError};
use gwmon_proto::domain::{AnaAccess, AnaGroupId, Epoch, Listener, Namespace, Nqn, Subsystem};
use serde_json::{json, Value};

const A: &str = "nqn.2016-06.io.spdk:cnode1";
const B: &str = "nqn.2016-06.io.spdk:cnode2";

fn nqn(s: &str) -> Nqn {
    s.parse().expect("valid NQN")
}

fn grp(n: u32) -> AnaGroupId {
    AnaGroupId::new(n).expect("valid group")
}

fn entry(n: &str, g: u32, access: AnaAccess) -> AnaEntry {
    AnaEntry {
        nqn: nqn(n),
        ana_group: grp(g),
        access,
        fence_epoch: Epoch::ZERO,
    }
}

fn states(entries: Vec<AnaEntry>) -> AnaStates {
    AnaStates {
        placements: Vec::new(),
        epoch: Epoch(7),
        entries,
    }
}

/// A file as a person would write it: lists in no particular order, one nonce left out.
fn hand_written() -> Value {
    json!({
        "subsystems": [
            {
                "nqn": B,
                "listeners": [{"address": "10.0.0.2", "port": 4420}],
                "namespaces": [{"nsid": 1, "ana_group": 2}]
            },
            {
                "nqn": A,
                "listeners": [
                    {"address": "fd00::1", "port": 4420},
                    {"address": "10.0.0.1", "port": 4420}
                ],
                "namespaces": [
                    {"nsid": 2, "ana_group": 2, "nonce": "10.0.0.9:0/22"},
                    {"nsid": 1, "ana_group": 1, "nonce": "10.0.0.9:0/11"}
                ]
            }
        ]
    })
}

fn write_json(path: &std::path::Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).expect("encode")).expect("write");
}

fn expected_subsystems() -> Vec<Subsystem> {
    vec![
        Subsystem {
            nqn: nqn(A),
            listeners: vec![
                Listener {
                    address: "10.0.0.1".parse().expect("ip"),
                    port: 4420,
                },
                Listener {
                    address: "fd00::1".parse().expect("ip"),
                    port: 4420,
                },
            ],
            namespaces: vec![
                Namespace {
                    nsid: 1,
                    ana_group: grp(1),
                    nonce: Some("10.0.0.9:0/11".parse().expect("nonce")),
                },
                Namespace {
                    nsid: 2,
                    ana_group: grp(2),
                    nonce: Some("10.0.0.9:0/22".parse().expect("nonce")),
                },
            ],
        },
        Subsystem {
            nqn: nqn(B),
            listeners: vec![Listener {
                address: "10.0.0.2".parse().expect("ip"),
                port: 4420,
            }],
            namespaces: vec![Namespace {
                nsid: 1,
                ana_group: grp(2),
                nonce: None,
            }],
        },
    ]
}

#[tokio::test]
async fn a_missing_file_is_a_target_with_nothing_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = FileTarget::new(dir.path().join("gw.json"));
    assert_eq!(target.subsystems().await.expect("no file is fine"), vec![]);
    assert!(target.ana_states().await.expect("no file").is_empty());
    assert_eq!(target.shutdown_reason().await.expect("no file"), None);
    assert!(!target.path().exists(), "reading must not create the file");
}

#[tokio::test]
async fn round_trip_keeps_the_subsystems_and_records_the_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.json");
    write_json(&path, &hand_written());
    let target = FileTarget::new(&path);

    let before = target.subsystems().await.expect("valid file");
    assert_eq!(before, expected_subsystems(), "canonical order");
    assert_eq!(target.subsystems().await.expect("again"), before);

    target
        .apply(&states(vec![
            entry(A, 1, AnaAccess::Optimized),
            entry(A, 2, AnaAccess::Inaccessible),
            entry(B, 2, AnaAccess::Inaccessible),
        ]))
        .await
        .expect("apply");

    let want: BTreeMap<_, _> = [
        ((nqn(A), grp(1)), AnaAccess::Optimized),
        ((nqn(A), grp(2)), AnaAccess::Inaccessible),
        ((nqn(B), grp(2)), AnaAccess::Inaccessible),
    ]
    .into_iter()
    .collect();
    assert_eq!(target.ana_states().await.expect("read back"), want);
    assert_eq!(target.subsystems().await.expect("kept"), before);

    // The documented layout, readable by a person or a script.
    let raw: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(raw["ana"][A]["1"], "optimized");
    assert_eq!(raw["ana"][A]["2"], "inaccessible");
    assert_eq!(raw["ana"][B]["2"], "inaccessible");
    assert_eq!(raw["shutdown"], Value::Null);

    // Groups not listed keep their state; listed ones change.
    target
        .apply(&states(vec![entry(A, 2, AnaAccess::Optimized)]))
        .await
        .expect("apply");
    let now = target.ana_states().await.expect("read back");
    assert_eq!(now[&(nqn(A), grp(1))], AnaAccess::Optimized);
    assert_eq!(now[&(nqn(A), grp(2))], AnaAccess::Optimized);
    assert_eq!(now[&(nqn(B), grp(2))], AnaAccess::Inaccessible);

    // No temporary file is left behind; the lock file stays (removing it would let two
    // writers lock two different files).
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            std::ffi::OsString::from("gw.json"),
            std::ffi::OsString::from("gw.json.lock")
        ]
    );
}

#[tokio::test]
async fn a_person_can_edit_subsystems_between_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.json");
    let target = FileTarget::new(&path);

    // apply creates the file when there is none.
    target
        .apply(&states(vec![entry(A, 1, AnaAccess::Optimized)]))
        .await
        .expect("apply creates the file");
    assert_eq!(target.subsystems().await.expect("read"), vec![]);

    // A person adds subsystems, keeping the ANA part as they found it.
    let mut doc: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    doc["subsystems"] = hand_written()["subsystems"].clone();
    write_json(&path, &doc);

    target
        .apply(&states(vec![entry(B, 2, AnaAccess::Optimized)]))
        .await
        .expect("apply");
    assert_eq!(
        target.subsystems().await.expect("read"),
        expected_subsystems()
    );
    assert_eq!(target.ana_states().await.expect("read").len(), 2);
}

#[tokio::test]
async fn conflicting_entries_for_one_group_are_made_inaccessible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = FileTarget::new(dir.path().join("gw.json"));
    target
        .apply(&states(vec![
            entry(A, 1, AnaAccess::Optimized),
            entry(A, 1, AnaAccess::Inaccessible),
            entry(A, 1, AnaAccess::Optimized),
        ]))
        .await
        .expect("apply");
    let got = target.ana_states().await.expect("read");
    assert_eq!(got[&(nqn(A), grp(1))], AnaAccess::Inaccessible);
}

#[tokio::test]
async fn a_malformed_file_is_an_error_naming_it_and_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.json");
    let broken = "{\n  \"subsystems\": [\n    {\"nqn\": \"nqn.2016-06.io.spdk:cnode1\",\n";
    std::fs::write(&path, broken).expect("write");
    let target = FileTarget::new(&path);

    let err = target.subsystems().await.expect_err("malformed");
    let text = err.to_string();
    assert!(
        matches!(err, HandlerError::Invalid { target: "file", .. }),
        "{err:?}"
    );
    assert!(text.contains("gw.json"), "{text}");
    assert!(text.contains("line"), "serde's position: {text}");

    let err = target
        .apply(&states(vec![entry(A, 1, AnaAccess::Optimized)]))
        .await
        .expect_err("apply must not replace a file it cannot read");
    assert!(err.to_string().contains("gw.json"), "{err}");
    target.shutdown("test").await;
    assert_eq!(std::fs::read_to_string(&path).expect("read"), broken);
}

#[tokio::test]
async fn bad_values_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.json");
    let target = FileTarget::new(&path);
    let sub = |listeners: Value, namespaces: Value| json!({"subsystems": [{"nqn": A, "listeners": listeners, "namespaces": namespaces}]});
    let ok_l = json!([{"address": "10.0.0.1", "port": 4420}]);
    let ok_ns = json!([{"nsid": 1, "ana_group": 1}]);
    let cases: Vec<(Value, &str)> = vec![
        (
            sub(ok_l.clone(), json!([{"nsid": 0, "ana_group": 1}])),
            "namespaces[0].nsid",
        ),
        (
            sub(ok_l.clone(), json!([{"nsid": 1, "ana_group": 0}])),
            "must not be zero",
        ),
        (
            sub(ok_l.clone(), json!([{"nsid": 1, "ana_group": 129}])),
            "outside 1..=128",
        ),
        (
            sub(
                ok_l.clone(),
                json!([{"nsid": 1, "ana_group": 1}, {"nsid": 1, "ana_group": 2}]),
            ),
            "namespaces[1].nsid",
        ),
        (
            sub(json!([{"address": "10.0.0.1", "port": 0}]), ok_ns.clone()),
            "listeners[0].port",
        ),
        (
            sub(json!([{"address": "10.0.0.x", "port": 1}]), ok_ns.clone()),
            "address",
        ),
        (
            sub(
                json!([{"address": "10.0.0.1", "port": 1}, {"address": "10.0.0.1", "port": 1}]),
                ok_ns.clone(),
            ),
            "listeners[1]",
        ),
        (
            sub(
                ok_l.clone(),
                json!([{"nsid": 1, "ana_group": 1, "nonce": "a b"}]),
            ),
            "' '",
        ),
        (json!({"subsystems": [{"nqn": "testnqn"}]}), "NQN"),
        (
            json!({"subsystems": [{"nqn": A}, {"nqn": A}]}),
            "subsystems[1].nqn",
        ),
        (json!({"subsytems": []}), "unknown field"),
        (json!({"ana": {A: {"1": "optimised"}}}), "unknown variant"),
    ];
    for (doc, needle) in cases {
        write_json(&path, &doc);
        let err = target.subsystems().await.expect_err(&doc.to_string());
        let text = err.to_string();
        assert!(text.contains("gw.json"), "{text}");
        assert!(
            text.contains(needle),
            "{doc}: {text} should mention {needle:?}"
        );
    }
}

#[tokio::test]
async fn shutdown_records_the_reason_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.json");
    write_json(&path, &hand_written());
    let target = FileTarget::new(&path);
    target
        .apply(&states(vec![entry(A, 1, AnaAccess::Inaccessible)]))
        .await
        .expect("apply");
    target
        .shutdown("declared unavailable by the monitors")
        .await;
    assert_eq!(
        target.shutdown_reason().await.expect("read").as_deref(),
        Some("declared unavailable by the monitors")
    );
    assert_eq!(
        target.subsystems().await.expect("kept"),
        expected_subsystems()
    );
    assert_eq!(target.ana_states().await.expect("kept").len(), 1);
}

#[tokio::test]
async fn a_reader_never_sees_half_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.json");
    write_json(&path, &hand_written());
    let target = FileTarget::new(&path);

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, path) = (Arc::clone(&done), path.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !done.load(Ordering::Acquire) || reads == 0 {
                let bytes = std::fs::read(&path).expect("the file always exists");
                let doc: Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("read a partial file ({e}): {bytes:?}"));
                assert_eq!(doc["subsystems"].as_array().map(Vec::len), Some(2));
                reads += 1;
            }
            reads
        })
    };
    for i in 0..200u32 {
        let access = if i % 2 == 0 {
            AnaAccess::Optimized
        } else {
            AnaAccess::Inaccessible
        };
        let entries = (1..=16).map(|g| entry(A, g, access)).collect();
        target.apply(&states(entries)).await.expect("apply");
    }
    done.store(true, Ordering::Release);
    let reads = reader.join().expect("the reader saw only whole files");
    assert!(reads > 0);
    let last = target.ana_states().await.expect("read");
    assert_eq!(last.len(), 16);
    assert!(last.values().all(|a| *a == AnaAccess::Inaccessible));
}

fn at(epoch: u64, entries: Vec<AnaEntry>) -> AnaStates {
    AnaStates {
        placements: Vec::new(),
        epoch: Epoch(epoch),
        entries,
    }
}

/// What the monitors' file fencer leaves (see gwmon-monitor's `fence::file`): every group
/// inaccessible and the fence's epoch recorded.
fn fenced_at(path: &std::path::Path, epoch: u64) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
    for states in v["ana"].as_object_mut().expect("ana").values_mut() {
        for s in states.as_object_mut().expect("groups").values_mut() {
            *s = json!("inaccessible");
        }
    }
    v["fenced_epoch"] = json!(epoch);
    write_json(path, &v);
}

#[tokio::test]
async fn a_fenced_target_refuses_optimized_states_from_before_the_fence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw1.json");
    write_json(&path, &hand_written());
    let target = FileTarget::new(&path);
    let optimized = |epoch| {
        at(
            epoch,
            vec![
                entry(A, 1, AnaAccess::Optimized),
                entry(A, 2, AnaAccess::Inaccessible),
            ],
        )
    };
    target
        .apply(&optimized(5))
        .await
        .expect("serves before any fence");
    fenced_at(&path, 8);

    // A paused gateway resuming with the map it had: refused, and nothing optimized.
    for stale in [5, 8] {
        let err = target.apply(&optimized(stale)).await.expect_err("stale");
        assert!(
            matches!(err, HandlerError::Fenced { target: "file", epoch, fenced }
                if epoch == Epoch(stale) && fenced == Epoch(8)),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("file: refused to serve states of epoch {stale}: this gateway was fenced at epoch 8")
        );
        let now = target.ana_states().await.expect("read");
        assert!(
            now.values().all(|a| *a == AnaAccess::Inaccessible),
            "{now:?}"
        );
    }
    // Inaccessible is always applied, whatever its epoch.
    target
        .apply(&at(3, vec![entry(B, 2, AnaAccess::Inaccessible)]))
        .await
        .expect("inaccessible is always allowed");
    assert_eq!(
        target.ana_states().await.expect("read")[&(nqn(B), grp(2))],
        AnaAccess::Inaccessible
    );
    // A gateway restarted after the fence gets newer epochs and serves again; the fence
    // stays recorded.
    target.apply(&optimized(9)).await.expect("newer epoch");
    assert_eq!(
        target.ana_states().await.expect("read")[&(nqn(A), grp(1))],
        AnaAccess::Optimized
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(v["fenced_epoch"], 8);
    assert_eq!(
        target.subsystems().await.expect("subsystems"),
        expected_subsystems()
    );
}

#[tokio::test]
async fn writes_wait_for_the_target_lock_and_give_up_in_bounded_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw1.json");
    let target = FileTarget::new(&path);
    let held = gwmon_proto::target_file::lock(&path, std::time::Duration::from_secs(1))
        .expect("lock the target");
    let started = std::time::Instant::now();
    let err = target
        .apply(&states(vec![entry(A, 1, AnaAccess::Optimized)]))
        .await
        .expect_err("the lock is held");
    assert!(err.to_string().contains("held by another process"), "{err}");
    assert!(
        started.elapsed() >= gwmon_client::adapters::file::LOCK_WAIT,
        "it waited for the lock"
    );
    assert!(!path.exists(), "nothing was written");
    drop(held);
    target
        .apply(&states(vec![entry(A, 1, AnaAccess::Optimized)]))
        .await
        .expect("the lock is free");
}

/// Namespace balancing: a placement moves a namespace to another ANA group in the same
/// write as the states; a namespace the file does not have is left alone.
#[tokio::test]
async fn placements_move_namespaces_in_the_same_write_as_the_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.json");
    write_json(&path, &hand_written());
    let target = FileTarget::new(&path);
    let placed = |n: &str, nsid, g| gwmon_proto::domain::NamespacePlacement {
        nqn: nqn(n),
        nsid,
        ana_group: grp(g),
    };
    let mut s = states(vec![entry(A, 1, AnaAccess::Optimized)]);
    s.placements = vec![placed(A, 2, 1), placed(B, 1, 3), placed(B, 9, 1)];
    target.apply(&s).await.expect("apply");

    let subs = target.subsystems().await.expect("read");
    let group_of = |n: &str, nsid: u32| {
        subs.iter()
            .find(|s| s.nqn == nqn(n))
            .and_then(|s| s.namespaces.iter().find(|ns| ns.nsid == nsid))
            .map(|ns| ns.ana_group.get())
    };
    assert_eq!(group_of(A, 1), Some(1), "not placed: unchanged");
    assert_eq!(group_of(A, 2), Some(1), "moved from 2");
    assert_eq!(group_of(B, 1), Some(3), "moved from 2");
    assert_eq!(group_of(B, 9), None, "not created");
    let raw: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(raw["ana"][A]["1"], "optimized");
}
