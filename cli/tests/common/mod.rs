//! Running the real `nvme-gw` binary against in-process monitors, and in-process gateways
//! (the gwmon-client library with the file adapter) for it to show.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use gwmon_client::adapters::file::FileTarget;
use gwmon_client::{ClientConfig, ClientError, Exit};
use gwmon_monitor::map::{Command as MapCommand, MapConfig};
use gwmon_proto::domain::GroupKey;
use gwmon_tests::Cluster;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const BIN: &str = env!("CARGO_BIN_EXE_nvme-gw");

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Assert success and parse stdout as JSON.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "failed: {self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Assert success and return stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "failed: {self:?}");
        &self.stdout
    }

    /// Assert the exit code, nothing on stdout and exactly one line on stderr.
    pub fn refused_with(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "exit code: {self:?}");
        assert!(self.stdout.is_empty(), "stdout: {self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "one line: {self:?}");
        self.stderr.trim_end()
    }
}

/// Run `nvme-gw ARGS` with `--monitors monitors`, in a clean environment (no GWMON_*
/// variables of the developer's shell leak in). Blocking: call from `spawn_blocking`, or
/// through [`nvme_gw`].
pub fn run_blocking(monitors: &str, args: &[String]) -> Run {
    let mut cmd = Command::new(BIN);
    for var in [
        "GWMON_MONITORS",
        "GWMON_FORMAT",
        "GWMON_TIMEOUT_MS",
        "GWMON_RETRIES",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg("--monitors").arg(monitors).args(args);
    Run::from(cmd.output().expect("run nvme-gw"))
}

/// Run the binary without blocking the runtime the monitors run on.
pub async fn nvme_gw(monitors: &str, args: &[&str]) -> Run {
    let monitors = monitors.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || run_blocking(&monitors, &args))
        .await
        .expect("join")
}

/// Every monitor of the cluster, comma-separated, as `--monitors` takes them.
pub fn all(cluster: &Cluster) -> String {
    cluster
        .addrs
        .values()
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}

/// A port nothing listens on: bound, then released.
pub fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Map timers short enough for a failover within a test: 1 s grace, quick failback.
pub async fn fast_map(cluster: &Cluster, tweak: impl Fn(&mut MapConfig)) {
    let mut config = MapConfig {
        beacon_grace_ms: 1_000,
        failback_prepare_ms: 200,
        skip_failover_admin_ms: 300,
        skip_failover_redeploy_ms: 3_000,
        ..MapConfig::default()
    };
    tweak(&mut config);
    cluster.write(MapCommand::SetConfig(config)).await;
}

/// A target file with one subsystem, one listener on `port`, and a namespace in each of
/// ANA groups 1 and 2 (the quickstart's shape).
pub fn target_file(dir: &Path, name: &str, port: u16) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    let doc = serde_json::json!({
        "subsystems": [{
            "nqn": "nqn.2016-06.io.spdk:cnode1",
            "listeners": [{ "address": "127.0.0.1", "port": port }],
            "namespaces": [
                { "nsid": 1, "ana_group": 1, "nonce": format!("{name}-client-1") },
                { "nsid": 2, "ana_group": 2, "nonce": format!("{name}-client-2") }
            ]
        }]
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).expect("json")).expect("write target");
    path
}

/// A gateway running in this process.
pub struct Gateway {
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<Exit, ClientError>>,
}

impl Gateway {
    /// Start gateway `id` of `pool/group` on `target`, beaconing every 100 ms.
    pub fn start(cluster: &Cluster, id: &str, pool: &str, group: &str, target: &Path) -> Self {
        let key = GroupKey::new(pool.parse().expect("pool"), group.parse().expect("group"));
        let config = ClientConfig::builder(id.parse().expect("id"), key)
            .monitors(cluster.addrs.values().cloned())
            .beacon_interval(Duration::from_millis(100))
            .beacon_grace(Duration::from_millis(1_000))
            .handler_timeout(Duration::from_millis(100))
            .reconnect_max(Duration::from_millis(300))
            .build()
            .expect("client config");
        let stop = CancellationToken::new();
        let task = tokio::spawn(gwmon_client::run(
            config,
            Arc::new(FileTarget::new(target)),
            stop.clone(),
        ));
        Gateway { stop, task }
    }

    /// The process dies: no goodbye.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Poll `nvme-gw ARGS` (JSON) until `cond` holds on its output, within the tests' deadline.
pub async fn until_json(
    monitors: &str,
    args: &[&str],
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let end = tokio::time::Instant::now() + gwmon_tests::DEADLINE;
    loop {
        let run = nvme_gw(monitors, args).await;
        if run.code == 0 {
            if let Ok(v) = serde_json::from_str::<Value>(&run.stdout) {
                if cond(&v) {
                    return v;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}; last: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gateway entry of a `show` answer by id.
pub fn gateway<'a>(show: &'a Value, id: &str) -> &'a Value {
    show["Created Gateways:"]
        .as_array()
        .and_then(|gws| gws.iter().find(|g| g["gw-id"] == id))
        .unwrap_or_else(|| panic!("no gateway {id} in {show}"))
}

// ---- the documented JSON shapes (README.md, "## CLI"), checked key by key ----

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// Assert `v` has exactly `required` keys plus any of `optional`.
fn exact(v: &Value, required: &[&str], optional: &[&str]) {
    let have = keys(v);
    for k in required {
        assert!(have.contains(k), "missing {k:?} in {v}");
    }
    for k in &have {
        assert!(
            required.contains(k) || optional.contains(k),
            "undocumented key {k:?} in {v}"
        );
    }
}

fn is_u64(v: &Value) -> bool {
    v.as_u64().is_some()
}

pub fn assert_show_shape(v: &Value) {
    exact(
        v,
        &[
            "epoch",
            "pool",
            "group",
            "num gws",
            "GW-epoch",
            "Anagrp list",
            "num-namespaces",
            "features",
            "moving-namespaces",
            "Created Gateways:",
        ],
        &[],
    );
    assert!(is_u64(&v["epoch"]) && is_u64(&v["GW-epoch"]) && is_u64(&v["num gws"]));
    assert!(is_u64(&v["num-namespaces"]) && is_u64(&v["moving-namespaces"]));
    let features = v["features"].as_str().expect("features is a string");
    assert!(features.is_empty() || features == "LB", "{features}");
    assert!(v["pool"].is_string() && v["group"].is_string());
    let list = v["Anagrp list"].as_str().expect("Anagrp list is a string");
    assert!(list.starts_with("[ ") && list.ends_with(']'), "{list}");
    let gws = v["Created Gateways:"].as_array().expect("array");
    assert_eq!(gws.len() as u64, v["num gws"].as_u64().expect("n"));
    for g in gws {
        exact(
            g,
            &[
                "gw-id",
                "anagrp-id",
                "location",
                "admin state",
                "num-namespaces",
                "performed-full-startup",
                "Availability",
                "num-listeners",
                "ana states",
            ],
            &["disaster state"],
        );
        assert!(g["gw-id"].is_string() && g["location"].is_string());
        assert!(
            is_u64(&g["anagrp-id"]) && is_u64(&g["num-namespaces"]) && is_u64(&g["num-listeners"])
        );
        assert!(matches!(
            g["admin state"].as_str(),
            Some("ENABLED" | "DISABLED")
        ));
        assert!(matches!(g["performed-full-startup"].as_u64(), Some(0 | 1)));
        assert!(matches!(
            g["Availability"].as_str(),
            Some("CREATED" | "AVAILABLE" | "UNAVAILABLE" | "DELETING")
        ));
        if let Some(d) = g.get("disaster state") {
            assert!(matches!(d.as_str(), Some("Disaster" | "Disaster-cleanup")));
        }
        let states = g["ana states"].as_str().expect("ana states is a string");
        for entry in states.split(',').filter(|e| !e.trim().is_empty()) {
            let (id, state) = entry.split_once(':').expect("id: STATE");
            id.trim().parse::<u32>().expect("numeric ANA group");
            assert!(
                matches!(
                    state.trim(),
                    "STANDBY"
                        | "ACTIVE"
                        | "WAIT_BLOCKLIST_CMPL"
                        | "WAIT_FAILBACK_PREPARED"
                        | "OWNER_FAILBACK_PREPARED"
                ),
                "{states}"
            );
        }
    }
}

pub fn assert_show_all_shape(v: &Value) {
    exact(v, &["epoch", "groups"], &[]);
    assert!(is_u64(&v["epoch"]));
    for g in v["groups"].as_array().expect("groups") {
        assert_show_shape(g);
    }
}

pub fn assert_listeners_shape(v: &Value) {
    exact(
        v,
        &[
            "epoch",
            "pool",
            "group",
            "num gws",
            "GW-epoch",
            "Created listeners",
        ],
        &[],
    );
    for (nqn, list) in v["Created listeners"].as_object().expect("object by NQN") {
        assert!(nqn.starts_with("nqn."), "{nqn}");
        for l in list.as_array().expect("array") {
            exact(l, &["address_family", "address", "svcid", "gw_id"], &[]);
            assert!(matches!(
                l["address_family"].as_str(),
                Some("IPv4" | "IPv6")
            ));
            assert!(l["svcid"]
                .as_str()
                .expect("svcid is text")
                .parse::<u16>()
                .is_ok());
        }
    }
}

pub fn assert_write_shape(v: &Value, command: &str) {
    let required: &[&str] = match command {
        "create" => &["command", "gw-id", "pool", "group", "anagrp-id", "epoch"],
        "delete" => &["command", "gw-id", "pool", "group", "gone", "epoch"],
        "enable" | "disable" => &["command", "gw-id", "pool", "group", "epoch"],
        "set-location" => &["command", "gw-id", "pool", "group", "location", "epoch"],
        _ => &["command", "pool", "group", "location", "epoch"],
    };
    let optional: &[&str] = if command == "create" {
        &["location"]
    } else {
        &[]
    };
    exact(v, required, optional);
    assert_eq!(v["command"], command);
    assert!(is_u64(&v["epoch"]));
    if command == "delete" {
        assert!(v["gone"].is_boolean(), "{v}");
    }
}

pub fn assert_blocklist_shape(v: &Value) {
    exact(v, &["entries"], &[]);
    for e in v["entries"].as_array().expect("entries") {
        exact(
            e,
            &[
                "pool",
                "group",
                "gw_id",
                "fence_epoch",
                "nonces",
                "issued_at_ms",
                "expires_at_ms",
                "completed",
            ],
            &[],
        );
        assert!(is_u64(&e["fence_epoch"]) && is_u64(&e["issued_at_ms"]));
        assert!(e["expires_at_ms"].is_null() || is_u64(&e["expires_at_ms"]));
        assert!(e["completed"].is_boolean());
        assert!(e["nonces"]
            .as_array()
            .expect("nonces")
            .iter()
            .all(Value::is_string));
    }
}

pub fn assert_health_shape(v: &Value) {
    exact(v, &["status", "checks"], &[]);
    assert!(matches!(
        v["status"].as_str(),
        Some("HEALTH_OK" | "HEALTH_WARN" | "HEALTH_ERR")
    ));
    for c in v["checks"].as_array().expect("checks") {
        exact(c, &["code", "severity", "message"], &[]);
        assert!(matches!(
            c["severity"].as_str(),
            Some("HEALTH_WARN" | "HEALTH_ERR")
        ));
    }
}

pub fn assert_status_shape(v: &Value) {
    exact(
        v,
        &[
            "leader",
            "term",
            "commit_index",
            "applied_index",
            "answered_by",
            "features",
            "members",
        ],
        &[],
    );
    assert!(v["leader"].is_null() || is_u64(&v["leader"]));
    assert!(is_u64(&v["features"]));
    assert!(is_u64(&v["term"]) && is_u64(&v["commit_index"]) && is_u64(&v["applied_index"]));
    for m in v["members"].as_array().expect("members") {
        exact(
            m,
            &[
                "id",
                "addr",
                "peer_addr",
                "role",
                "voter",
                "matched_index",
                "lag",
            ],
            &[],
        );
        assert!(matches!(
            m["role"].as_str(),
            Some("leader" | "follower" | "learner")
        ));
        assert!(m["lag"].is_null() || is_u64(&m["lag"]));
    }
}

pub fn assert_membership_shape(v: &Value, action: &str) {
    let required: &[&str] = if action == "add" {
        &["action", "id", "addr", "log_index"]
    } else {
        &["action", "id", "log_index"]
    };
    exact(v, required, &[]);
    assert_eq!(v["action"], action);
}
