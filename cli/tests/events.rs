//! `nvme-gw events`: the kept history, resuming after an epoch, and `--follow` carrying on
//! at another monitor when the one it reads from stops, without a gap or a repeat.

mod common;

use std::process::Stdio;

use common::*;
use gwmon_tests::{Cluster, DEADLINE};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

fn lines(run: &Run) -> Vec<Value> {
    assert_eq!(run.code, 0, "failed: {run:?}");
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn created(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e["type"] == "gateway_created")
        .map(|e| {
            (
                e["gateway"].as_str().unwrap_or_default().to_owned(),
                e["epoch"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Reads JSON lines from a running `--follow` until a `gateway_created` of `gw` arrives;
/// returns every line read.
async fn until_created(out: &mut Lines<BufReader<ChildStdout>>, gw: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let line = tokio::time::timeout(DEADLINE, out.next_line())
            .await
            .unwrap_or_else(|_| panic!("no gateway_created {gw}; read {got:#?}"))
            .expect("read")
            .unwrap_or_else(|| panic!("nvme-gw exited; read {got:#?}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let done = v["type"] == "gateway_created" && v["gateway"] == gw;
        got.push(v);
        if done {
            return got;
        }
    }
}

fn follow(monitors: &str) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--monitors",
            monitors,
            "--format=json",
            "events",
            "--follow",
        ])
        .env_remove("GWMON_MONITORS")
        .env_remove("GWMON_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nvme-gw");
    let out = child.stdout.take().expect("stdout");
    (child, BufReader::new(out).lines())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_history_resume_and_follow_across_a_monitor_stop() {
    let mut cluster = Cluster::start(3, 0, |_| {}).await;
    let leader = cluster.leader().await;
    let m = all(&cluster);
    for gw in ["gw1", "gw2"] {
        nvme_gw(&m, &["--format=json", "create", gw, "rbd", "grp1"])
            .await
            .json();
    }

    // The history: both creations, in order, and it ends by itself.
    let history = lines(&nvme_gw(&m, &["--format=json", "events"]).await);
    let made = created(&history);
    assert_eq!(
        made.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>(),
        ["gw1", "gw2"]
    );
    assert!(made[0].1 < made[1].1);

    // After gw1's epoch: gw2 only.
    let after = made[0].1.to_string();
    let later = lines(&nvme_gw(&m, &["--format=json", "events", "--after-epoch", &after]).await);
    assert_eq!(created(&later), vec![made[1].clone()]);

    // Plain output names the group and says what happened.
    let plain = nvme_gw(&m, &["--format=plain", "events"]).await;
    assert!(
        plain.ok().contains("rbd/grp1") && plain.ok().contains("gateway gw2 created"),
        "{plain:?}"
    );

    // Follow a follower, listed first so the CLI reads from it.
    let follower = *cluster
        .monitors
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    let others: Vec<String> = cluster
        .addrs
        .iter()
        .filter(|(id, _)| **id != follower)
        .map(|(_, a)| a.clone())
        .collect();
    let order = format!("{},{}", cluster.addrs[&follower], others.join(","));
    let (mut child, mut out) = follow(&order);
    until_created(&mut out, "gw2").await;
    nvme_gw(&m, &["--format=json", "create", "gw3", "rbd", "grp1"])
        .await
        .json();
    until_created(&mut out, "gw3").await;

    // The monitor it reads from stops; the stream resumes at another one.
    cluster.stop(follower).await;
    let rest = others.join(",");
    nvme_gw(&rest, &["--format=json", "create", "gw4", "rbd", "grp1"])
        .await
        .json();
    let resumed = until_created(&mut out, "gw4").await;
    assert_eq!(
        created(&resumed)
            .iter()
            .map(|(g, _)| g.as_str())
            .collect::<Vec<_>>(),
        ["gw4"],
        "nothing repeated, nothing missed: {resumed:#?}"
    );
    child.kill().await.expect("kill nvme-gw");
}
