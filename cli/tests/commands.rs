//! The real `nvme-gw` binary against an in-process cluster of three monitors (real gRPC,
//! real stores): every command, its JSON checked against the documented shape, the plain
//! table, each error class with its exit code, and leader following.

mod common;

use common::*;
use gwmon_monitor::map::Availability;
use gwmon_proto::domain::GroupKey;
use gwmon_tests::{eventually, Cluster};

const J: &str = "--format=json";
const P: &str = "--format=plain";

fn key() -> GroupKey {
    GroupKey::new("rbd".parse().expect("pool"), "grp1".parse().expect("group"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_works_and_prints_the_documented_json() {
    // Three voters and a fourth monitor waiting to be added.
    let cluster = Cluster::start(3, 1, |_| {}).await;
    cluster.leader().await;
    fast_map(&cluster, |_| {}).await;
    let voters: Vec<String> = (1..=3).map(|id| cluster.addrs[&id].clone()).collect();
    let m = voters.join(",");
    let dir = tempfile::tempdir().expect("tempdir");

    // create, idempotently
    let c = nvme_gw(&m, &[J, "create", "gw1", "rbd", "grp1"])
        .await
        .json();
    assert_write_shape(&c, "create");
    assert_eq!(c["anagrp-id"], 1);
    let c = nvme_gw(
        &m,
        &[J, "create", "gw2", "rbd", "grp1", "--location", "siteA"],
    )
    .await
    .json();
    assert_write_shape(&c, "create");
    assert_eq!(
        (c["anagrp-id"].as_u64(), c["location"].as_str()),
        (Some(2), Some("siteA"))
    );
    let again = nvme_gw(&m, &[J, "create", "gw1", "rbd", "grp1"])
        .await
        .json();
    assert_eq!(again["anagrp-id"], 1, "creating again changes nothing");
    let c = nvme_gw(
        &m,
        &[J, "create", "gw3", "rbd", "grp1", "--location", "siteC"],
    )
    .await
    .json();
    assert_eq!(c["anagrp-id"], 3);

    // Two gateways come up; gw3 never does.
    let gw1 = Gateway::start(
        &cluster,
        "gw1",
        "rbd",
        "grp1",
        &target_file(dir.path(), "gw1", 4420),
    );
    let gw2 = Gateway::start(
        &cluster,
        "gw2",
        "rbd",
        "grp1",
        &target_file(dir.path(), "gw2", 4421),
    );
    let show = until_json(
        &m,
        &[J, "show", "rbd", "grp1"],
        "both gateways active",
        |v| {
            gateway(v, "gw1")["ana states"]
                .as_str()
                .is_some_and(|s| s.contains(" 1: ACTIVE "))
                && gateway(v, "gw2")["ana states"]
                    .as_str()
                    .is_some_and(|s| s.contains(" 2: ACTIVE "))
        },
    )
    .await;
    assert_show_shape(&show);
    assert_eq!(
        (show["pool"].as_str(), show["group"].as_str()),
        (Some("rbd"), Some("grp1"))
    );
    assert_eq!(show["num gws"], 3);
    assert_eq!(show["Anagrp list"], "[ 1 2 3 ]");
    let g1 = gateway(&show, "gw1");
    assert_eq!(g1["Availability"], "AVAILABLE");
    assert_eq!(g1["performed-full-startup"], 1);
    assert_eq!(g1["num-listeners"], 1);
    assert_eq!(g1["ana states"], " 1: ACTIVE ,  2: STANDBY ,  3: STANDBY ");
    assert_eq!(gateway(&show, "gw3")["Availability"], "CREATED");
    // Per gateway, the namespaces of its own ANA group, as Ceph counts them: they add up
    // to the group's (each gateway reports nsid 1 in ANA group 1 and nsid 2 in 2).
    assert_eq!(show["num-namespaces"], 2);
    let counts: Vec<u64> = ["gw1", "gw2", "gw3"]
        .iter()
        .map(|id| gateway(&show, id)["num-namespaces"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(counts, [1, 1, 0], "{show}");

    // status: the whole system in one line (gw3 was never started)
    let st = nvme_gw(&m, &[J, "status"]).await.json();
    assert_eq!(
        (
            st["monitors"].as_u64(),
            st["groups"].as_u64(),
            st["gateways"].as_u64(),
            st["gateways_available"].as_u64(),
            st["ana_groups"].as_u64(),
            st["ana_groups_active"].as_u64()
        ),
        (Some(3), Some(1), Some(3), Some(2), Some(3), Some(2)),
        "{st}"
    );
    assert!(st["leader"].is_u64() && st["health"].is_string(), "{st}");
    let line = nvme_gw(&m, &[P, "status"]).await;
    assert_eq!(line.ok().lines().count(), 1, "{line:?}");
    assert!(
        line.stdout
            .contains("; 2 of 3 gateways available; 2 of 3 ANA groups active"),
        "{line:?}"
    );

    // show-all, listeners (Ceph's shape), stale reads from a follower
    let all = nvme_gw(&m, &[J, "show-all"]).await.json();
    assert_show_all_shape(&all);
    assert_eq!(all["groups"].as_array().map(Vec::len), Some(1));
    let l = nvme_gw(&m, &[J, "listeners", "rbd", "grp1"]).await.json();
    assert_listeners_shape(&l);
    let list = l["Created listeners"]["nqn.2016-06.io.spdk:cnode1"]
        .as_array()
        .expect("the subsystem's listeners");
    assert_eq!(list.len(), 2, "{l}");
    assert_eq!(list[0]["gw_id"], "gw1");
    assert_eq!(list[0]["svcid"], "4420");
    assert_eq!(list[0]["address_family"], "IPv4");
    let leader = cluster.leader().await;
    let follower = cluster.addrs[&(1..=3).find(|id| *id != leader).expect("a follower")].clone();
    let stale = nvme_gw(&follower, &[J, "--stale", "show", "rbd", "grp1"])
        .await
        .json();
    assert_show_shape(&stale);

    // disable / enable, set-location
    let d = nvme_gw(&m, &[J, "disable", "gw3", "rbd", "grp1"])
        .await
        .json();
    assert_write_shape(&d, "disable");
    let show = nvme_gw(&m, &[J, "show", "rbd", "grp1"]).await.json();
    assert_eq!(gateway(&show, "gw3")["admin state"], "DISABLED");
    let e = nvme_gw(&m, &[J, "enable", "gw3", "rbd", "grp1"])
        .await
        .json();
    assert_write_shape(&e, "enable");
    assert!(e["epoch"].as_u64() > d["epoch"].as_u64(), "epochs grow");
    let s = nvme_gw(&m, &[J, "set-location", "gw1", "rbd", "grp1", "siteB"])
        .await
        .json();
    assert_write_shape(&s, "set-location");
    let show = nvme_gw(&m, &[J, "show", "rbd", "grp1"]).await.json();
    assert_eq!(gateway(&show, "gw1")["location"], "siteB");

    // disaster-set / disaster-clear on gw3's location, where nothing is available
    let ds = nvme_gw(&m, &[J, "disaster-set", "rbd", "grp1", "siteC"])
        .await
        .json();
    assert_write_shape(&ds, "disaster-set");
    let show = nvme_gw(&m, &[J, "show", "rbd", "grp1"]).await.json();
    assert_show_shape(&show);
    assert_eq!(gateway(&show, "gw3")["disaster state"], "Disaster");
    assert!(gateway(&show, "gw1").get("disaster state").is_none());
    let dc = nvme_gw(&m, &[J, "disaster-clear", "rbd", "grp1", "siteC"])
        .await
        .json();
    assert_write_shape(&dc, "disaster-clear");

    // A gateway dies: failover, a fence in the blocklist, a health warning.
    gw1.kill();
    let show = until_json(
        &m,
        &[J, "show", "rbd", "grp1"],
        "gw1's group failed over to gw2",
        |v| {
            gateway(v, "gw1")["Availability"] == "UNAVAILABLE"
                && gateway(v, "gw2")["ana states"]
                    .as_str()
                    .is_some_and(|s| s.contains(" 1: ACTIVE "))
        },
    )
    .await;
    assert_show_shape(&show);
    let b = until_json(&m, &[J, "blocklist", "ls"], "gw1 fenced", |v| {
        v["entries"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    assert_blocklist_shape(&b);
    assert_eq!(b["entries"][0]["gw_id"], "gw1");
    // Only available gateways' listeners are listed, as in Ceph: gw1's are gone.
    let l = nvme_gw(&m, &[J, "listeners", "rbd", "grp1"]).await.json();
    assert_listeners_shape(&l);
    let list = l["Created listeners"]["nqn.2016-06.io.spdk:cnode1"]
        .as_array()
        .expect("the subsystem's listeners");
    let ids: Vec<&str> = list.iter().filter_map(|e| e["gw_id"].as_str()).collect();
    assert_eq!(ids, ["gw2"], "{l}");
    let h = nvme_gw(&m, &[J, "health"]).await.json();
    assert_health_shape(&h);
    assert_eq!(h["status"], "HEALTH_WARN");
    assert!(
        h["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .any(|c| c["code"] == "NVMEOF_GATEWAY_DOWN"),
        "{h}"
    );

    // cluster status (from the leader, with lags), add and remove a monitor
    let st = nvme_gw(&follower, &[J, "cluster", "status"]).await.json();
    assert_status_shape(&st);
    assert_eq!(st["leader"], leader);
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3));
    assert!(
        st["members"]
            .as_array()
            .expect("members")
            .iter()
            .all(|m| m["lag"].is_u64()),
        "asked of the leader, every member has a lag: {st}"
    );
    let add = nvme_gw(
        &m,
        &[
            J,
            "cluster",
            "add",
            "4",
            &cluster.addrs[&4],
            "--peer",
            &cluster.peer_addrs[&4],
        ],
    )
    .await
    .json();
    assert_membership_shape(&add, "add");
    let st = nvme_gw(&m, &[J, "cluster", "status"]).await.json();
    let four = st["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"] == 4)
        .cloned();
    assert_eq!(four.map(|m| m["voter"].clone()), Some(true.into()), "{st}");
    let rm = nvme_gw(&m, &[J, "cluster", "remove", "4"]).await.json();
    assert_membership_shape(&rm, "remove");
    let st = nvme_gw(&m, &[J, "cluster", "status"]).await.json();
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3), "{st}");

    // A backup: written owner-only, never over a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gwmon.backup");
    let path = file.display().to_string();
    let b = nvme_gw(&m, &[J, "cluster", "backup", &path]).await.json();
    assert_eq!(b["file"], path.as_str());
    let written = std::fs::metadata(&file).expect("backup written");
    assert_eq!(b["bytes"].as_u64(), Some(written.len()));
    assert!(written.len() > 0 && b["index"].as_u64() > Some(0), "{b}");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&written.permissions()) & 0o777,
        0o600
    );
    let again = nvme_gw(&m, &[J, "cluster", "backup", &path]).await;
    assert!(again.refused_with(1).contains("exists"), "{again:?}");
    assert_eq!(std::fs::metadata(&file).expect("kept").len(), written.len());

    // A monitor nobody runs: refused once the leader has given it its 10 s, in one
    // attempt (the CLI's 5 s attempts used to be retried while the leader still waited,
    // for up to a minute, each retry adding the learner again), and no learner is left.
    let dead = closed_port();
    let add = nvme_gw(&m, &[J, "cluster", "add", "9", &dead, "--peer", &dead]).await;
    let err = add.refused_with(1);
    assert!(err.contains("did not catch up"), "{err}");
    let st = nvme_gw(&m, &[J, "cluster", "status"]).await.json();
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3), "{st}");

    // delete: the gateway drains (DELETING), and its ANA group leaves the list
    let del = nvme_gw(&m, &[J, "delete", "gw3", "rbd", "grp1"])
        .await
        .json();
    assert_write_shape(&del, "delete");
    let show = nvme_gw(&m, &[J, "show", "rbd", "grp1"]).await.json();
    assert!(
        !show["Anagrp list"].as_str().expect("list").contains('3'),
        "{show}"
    );
    // gw3 had no namespace in its ANA group, so it is erased at once; deleting it again,
    // as a script whose answer was lost would, succeeds (Ceph answers 0 too).
    assert_eq!(del["gone"], true, "{del}");
    let again = nvme_gw(&m, &[J, "delete", "gw3", "rbd", "grp1"])
        .await
        .json();
    assert_write_shape(&again, "delete");
    assert_eq!(again["gone"], true);

    // completions need no monitor at all
    let comp = nvme_gw(&closed_port(), &["completions", "bash"]).await;
    assert!(comp.ok().contains("nvme-gw"), "{comp:?}");
    assert!(comp.stdout.contains("show-all") && comp.stdout.contains("disaster-set"));

    gw2.stop.cancel();
    let _ = gw2.task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_output_is_an_aligned_table_with_one_row_per_gateway() {
    // A fresh cluster whose map only sees these commands, so the epochs are exact.
    let cluster = Cluster::start(3, 0, |_| {}).await;
    cluster.leader().await;
    let m = all(&cluster);
    let out = nvme_gw(&m, &[P, "create", "gw1", "rbd", "grp1"]).await;
    assert_eq!(
        out.ok(),
        "gateway gw1 created in rbd/grp1, ANA group 1 (map epoch 1)\n"
    );
    let out = nvme_gw(
        &m,
        &[P, "create", "gw2", "rbd", "grp1", "--location", "siteB"],
    )
    .await;
    // Creating with a location is two commits: the gateway, then its location.
    assert_eq!(
        out.ok(),
        "gateway gw2 created in rbd/grp1, ANA group 2 (map epoch 3)\n"
    );
    let out = nvme_gw(&m, &[P, "disable", "gw2", "rbd", "grp1"]).await;
    assert_eq!(out.ok(), "gateway gw2 of rbd/grp1 disabled (map epoch 4)\n");
    // Epochs are exact: this fresh map has seen only these commands.
    let show = nvme_gw(&m, &[P, "show", "rbd", "grp1"]).await;
    assert_eq!(
        show.ok(),
        "rbd/grp1  gateways 2  namespaces 0  ANA groups [ 1 2 ]  epoch 4  gw-epoch 2\n\
         GATEWAY  ANA  AVAILABILITY  ADMIN     LOCATION  NS  LISTENERS  STARTED  ANA STATES\n\
         gw1      1    CREATED       ENABLED   -         0   0          no       1:STANDBY 2:STANDBY\n\
         gw2      2    CREATED       DISABLED  siteB     0   0          no       1:STANDBY 2:STANDBY\n"
    );
    let all = nvme_gw(&m, &[P, "show-all"]).await;
    assert_eq!(all.ok(), show.stdout, "show-all of one group is its show");
    // Nothing is wrong with the map; the only check is the test cluster's `fencer = none`.
    let health = nvme_gw(&m, &[P, "health"]).await;
    let lines: Vec<&str> = health.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{}", health.stdout);
    assert_eq!(lines[0], "HEALTH_WARN");
    assert!(
        lines[2].starts_with("HEALTH_WARN") && lines[2].contains("NVMEOF_NO_FENCER"),
        "{}",
        health.stdout
    );
    let none = nvme_gw(&m, &[P, "blocklist", "ls"]).await;
    assert_eq!(none.ok(), "blocklist empty\n");
    let listeners = nvme_gw(&m, &[P, "listeners", "rbd", "grp1"]).await;
    assert_eq!(listeners.ok(), "rbd/grp1: no listeners\n");
    let status = nvme_gw(&m, &[P, "cluster", "status"]).await;
    let text = status.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("leader "), "{text}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["ID", "ADDRESS", "PEER", "ROLE", "MATCHED", "LAG"]
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(" leader ")).count(),
        1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_class_has_its_exit_code_and_one_line() {
    let cluster = Cluster::start(3, 0, |_| {}).await;
    cluster.leader().await;
    fast_map(&cluster, |c| c.max_gateways_per_group = 2).await;
    let m = all(&cluster);
    nvme_gw(&m, &["create", "gw1", "rbd", "grp1"]).await.ok();
    nvme_gw(&m, &["create", "gw2", "rbd", "grp1"]).await.ok();

    // 1: refused
    let full = nvme_gw(&m, &["create", "gw3", "rbd", "grp1"]).await;
    assert!(
        full.refused_with(1).contains("already has 2 gateways"),
        "{full:?}"
    );
    let unknown = nvme_gw(&m, &["enable", "nosuch", "rbd", "grp1"]).await;
    assert!(
        unknown.refused_with(1).contains("no gateway nosuch"),
        "{unknown:?}"
    );
    // Ceph answers these with 0, and so does gwmon: deleting what is not there changes
    // nothing, and a group that does not exist is shown empty.
    let nothing = nvme_gw(&m, &[P, "delete", "nosuch", "rbd", "grp1"]).await;
    assert_eq!(
        nothing.ok(),
        format!(
            "gateway nosuch is not in rbd/grp1: nothing left to delete (map epoch {})\n",
            nvme_gw(&m, &[J, "show", "rbd", "grp1"]).await.json()["epoch"]
        )
    );
    let no_group = nvme_gw(&m, &[J, "show", "rbd", "nosuch"]).await.json();
    assert_show_shape(&no_group);
    assert_eq!(no_group["num gws"], 0);
    assert_eq!(no_group["group"], "nosuch");
    let no_listeners = nvme_gw(&m, &[J, "listeners", "rbd", "nosuch"]).await.json();
    assert_listeners_shape(&no_listeners);
    assert_eq!(no_listeners["num gws"], 0);
    // Ceph's `set beacon-diff`: on is how gwmon works; off cannot be had.
    let on = nvme_gw(&m, &[J, "set", "beacon-diff", "true"]).await.json();
    assert_eq!(on["value"], true);
    let off = nvme_gw(&m, &["set", "beacon-diff", "false"]).await;
    assert!(
        off.refused_with(1).contains("cannot be turned off"),
        "{off:?}"
    );
    let invalid = nvme_gw(&m, &["create", "bad id!", "rbd", "grp1"]).await;
    assert!(
        invalid.refused_with(1).contains("invalid gateway id"),
        "{invalid:?}"
    );
    let no_pool = nvme_gw(&m, &["show", "", "grp1"]).await;
    assert!(
        no_pool.refused_with(1).contains("invalid pool"),
        "{no_pool:?}"
    );
    let up = nvme_gw(&m, &["disaster-clear", "rbd", "grp1", "siteZ"]).await;
    let line = up.refused_with(1);
    // The location as a person wrote it, never Rust's `Location("siteZ")`.
    assert!(
        line.contains("location \"siteZ\"") && !line.contains("Location("),
        "{line}"
    );

    // 2: usage
    for args in [
        &["create", "gw1"][..],
        &["frobnicate"][..],
        &["show", "rbd", "grp1", "--format", "yaml"][..],
        &["set", "beacon-interval", "1"][..],
        &["cluster", "add", "x", "127.0.0.1:1"][..],
    ] {
        let run = nvme_gw(&m, args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty());
    }

    // 3: no monitor answers; every address tried is named
    let (a, b) = (closed_port(), closed_port());
    let dead = nvme_gw(
        &format!("{a},{b}"),
        &["--retries", "2", "--timeout-ms", "500", "health"],
    )
    .await;
    let line = dead.refused_with(3);
    assert!(line.contains(&a) && line.contains(&b), "{line}");
    assert!(line.contains("cannot connect"), "{line}");
    // No retries still tries every monitor once: any one will do.
    let once = nvme_gw(
        &format!("{a},{b}"),
        &["--retries", "0", "--timeout-ms", "500", "health"],
    )
    .await;
    let line = once.refused_with(3);
    assert!(line.contains(&a) && line.contains(&b), "{line}");
    // A port out of range is named as such, before anything is dialled (usage: exit 2).
    let wide = nvme_gw("127.0.0.1:99999", &["health"]).await;
    assert_eq!(wide.code, 2, "{wide:?}");
    assert!(
        wide.stderr.contains("port 99999 is out of range"),
        "{wide:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_follow_the_leader_even_while_it_is_replaced() {
    let mut cluster = Cluster::start(3, 0, |_| {}).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let at_follower = cluster.addrs[&follower].clone();

    // A write and a linearizable read sent to a follower are redirected to the leader.
    nvme_gw(&at_follower, &[J, "create", "gw1", "rbd", "grp1"])
        .await
        .json();
    let show = nvme_gw(&at_follower, &[J, "show", "rbd", "grp1"])
        .await
        .json();
    assert_eq!(show["num gws"], 1);

    // The leader stops; the command is sent to it first and must still succeed by finding
    // the new leader within its retries.
    let old = cluster.addrs[&leader].clone();
    let rest: Vec<String> = (1..=3)
        .filter(|id| *id != leader)
        .map(|id| cluster.addrs[&id].clone())
        .collect();
    let monitors = format!("{old},{}", rest.join(","));
    cluster.stop(leader).await;
    let created = nvme_gw(&monitors, &[J, "create", "gw2", "rbd", "grp1"])
        .await
        .json();
    assert_eq!(created["anagrp-id"], 2);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    eventually("gw2 in the new leader's map", || {
        let map = cluster.map(new_leader);
        let ok = map
            .group(&key())
            .and_then(|g| g.gateways.get(&"gw2".parse().expect("id")))
            .is_some_and(|gw| gw.availability == Availability::Created);
        std::future::ready(ok)
    })
    .await;
    let show = nvme_gw(&monitors, &[J, "show", "rbd", "grp1"]).await.json();
    assert_eq!(show["num gws"], 2);
}

/// Whether `show` says `id` is ACTIVE for ANA group `ana`.
fn active_for(show: &serde_json::Value, id: &str, ana: u32) -> bool {
    gateway(show, id)["ana states"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .any(|e| {
            let (k, v) = e.split_once(':').unwrap_or_default();
            k.trim() == ana.to_string() && v.trim() == "ACTIVE"
        })
}

/// `ok-to-stop` and `maintenance enter|exit` against serving gateways: enter returns only
/// once another gateway serves the group, is refused (16, nothing changed) when it would
/// leave nobody, and exit returns once the gateway serves its own group again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_moves_a_gateways_group_away_and_back() {
    let cluster = Cluster::start(3, 0, |_| {}).await;
    cluster.leader().await;
    fast_map(&cluster, |_| {}).await;
    let m: String = (1..=3)
        .map(|id| cluster.addrs[&id].clone())
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().expect("tempdir");
    for g in ["gw1", "gw2"] {
        nvme_gw(&m, &[J, "create", g, "rbd", "grp1"]).await.json();
    }
    let _gw1 = Gateway::start(
        &cluster,
        "gw1",
        "rbd",
        "grp1",
        &target_file(dir.path(), "gw1", 4420),
    );
    let _gw2 = Gateway::start(
        &cluster,
        "gw2",
        "rbd",
        "grp1",
        &target_file(dir.path(), "gw2", 4421),
    );
    until_json(&m, &[J, "show", "rbd", "grp1"], "both serving", |v| {
        active_for(v, "gw1", 1) && active_for(v, "gw2", 2)
    })
    .await;

    let yes = nvme_gw(&m, &[J, "ok-to-stop", "rbd", "grp1", "gw1"]).await;
    assert_eq!(yes.json()["ok_to_stop"], true);
    let no = nvme_gw(&m, &[J, "ok-to-stop", "rbd", "grp1", "gw1", "gw2"]).await;
    assert_eq!(no.code, 16, "{no:?}");
    assert!(no.stderr.contains("fewer than the minimum 1"), "{no:?}");

    let entered = nvme_gw(&m, &[J, "maintenance", "enter", "gw1", "rbd", "grp1"])
        .await
        .json();
    assert_eq!(entered["state"], "maintenance");
    assert_eq!(entered["ana_groups"][0]["served_by"], "gw2");
    // Already so when the command returned: no waiting here.
    let show = nvme_gw(&m, &[J, "show", "rbd", "grp1"]).await.json();
    assert!(active_for(&show, "gw2", 1) && !active_for(&show, "gw1", 1));
    assert_eq!(gateway(&show, "gw1")["admin state"], "DISABLED");

    // gw2 may not follow it: nobody would be left; refused before anything changed.
    let refused = nvme_gw(&m, &[J, "maintenance", "enter", "gw2", "rbd", "grp1"]).await;
    assert_eq!(refused.code, 16, "{refused:?}");
    let show = nvme_gw(&m, &[J, "show", "rbd", "grp1"]).await.json();
    assert_eq!(gateway(&show, "gw2")["admin state"], "ENABLED");

    let back = nvme_gw(&m, &[J, "maintenance", "exit", "gw1", "rbd", "grp1"])
        .await
        .json();
    assert_eq!(back["state"], "serving");
    let show = nvme_gw(&m, &[J, "show", "rbd", "grp1"]).await.json();
    assert!(active_for(&show, "gw1", 1) && !active_for(&show, "gw2", 1));

    let unknown = nvme_gw(&m, &[J, "maintenance", "enter", "gw9", "rbd", "grp1"]).await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("gateway gw9 is not in rbd/grp1"),
        "{unknown:?}"
    );
}
