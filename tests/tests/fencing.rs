//! The fencers that really cut a gateway off, against the targets they fence:
//!
//! * the built-in `file` fencer against the file adapter (`FileTarget`) it fences: after a
//!   fence at epoch E the target shows nothing optimized, the adapter refuses optimized
//!   states of epoch <= E (a paused gateway resuming with its old map) and accepts newer
//!   ones (a restarted gateway);
//! * `deploy/fence/nvmet-fence` and `deploy/fence/spdk-fence`, run by the real
//!   `ExecFencer` exactly as the leader runs them, against a generated configfs-like tree
//!   and a fake SPDK JSON-RPC server on a unix socket, locally and through a stand-in for
//!   ssh that records which host it was asked to reach.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gwmon_client::adapters::file::FileTarget;
use gwmon_client::{AnaEntry, AnaHandler, AnaStates, HandlerError};
use gwmon_monitor::fence::{ExecFencer, FenceError, FenceOrder, Fencer, FencerConfig};
use gwmon_proto::domain::{AnaAccess, AnaGroupId, Epoch, GroupKey, Nqn};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

fn order(gateway: &str, epoch: u64) -> FenceOrder {
    FenceOrder {
        key: GroupKey::new("rbd".parse().expect("pool"), "grp1".parse().expect("group")),
        gateway: gateway.parse().expect("gateway"),
        epoch: Epoch(epoch),
        nonces: vec!["10.0.0.9:0/11".parse().expect("nonce")],
    }
}

fn states(epoch: u64, one: AnaAccess, two: AnaAccess) -> AnaStates {
    let entry = |g: u32, access| AnaEntry {
        nqn: NQN.parse::<Nqn>().expect("nqn"),
        ana_group: AnaGroupId::new(g).expect("group"),
        access,
        fence_epoch: Epoch::ZERO,
    };
    AnaStates {
        placements: Vec::new(),
        epoch: Epoch(epoch),
        entries: vec![entry(1, one), entry(2, two)],
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

fn file_fencer(dir: &Path, timeout: Duration) -> Arc<dyn Fencer> {
    FencerConfig::File {
        targets: format!("{}/{{gateway}}.json", dir.display()),
        timeout,
    }
    .build()
    .expect("file fencer")
}

#[tokio::test]
async fn the_file_fencer_cuts_a_file_target_off_until_it_is_sent_newer_epochs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw1.json");
    std::fs::write(
        &path,
        format!(r#"{{"subsystems": [{{"nqn": "{NQN}", "namespaces": [{{"nsid": 1, "ana_group": 1}}]}}]}}"#),
    )
    .expect("write");
    let target = FileTarget::new(&path);
    target
        .apply(&states(5, AnaAccess::Optimized, AnaAccess::Inaccessible))
        .await
        .expect("serves");
    let fencer = file_fencer(dir.path(), Duration::from_secs(5));
    assert_eq!(fencer.name(), "file");

    fencer.fence(&order("gw1", 6)).await.expect("fenced");
    let fenced = read_json(&path);
    assert_eq!(
        fenced["ana"],
        json!({NQN: {"1": "inaccessible", "2": "inaccessible"}})
    );
    assert_eq!(fenced["fenced_epoch"], 6);
    assert_eq!(fenced["subsystems"][0]["nqn"], NQN, "the rest is kept");
    // Idempotent: the same order again (a retry, a new leader) changes nothing, and an older
    // order run late does not lower the fence.
    fencer.fence(&order("gw1", 6)).await.expect("again");
    fencer.fence(&order("gw1", 4)).await.expect("older");
    assert_eq!(read_json(&path), fenced);

    // The paused gateway resumes with the map it had: refused, still nothing optimized.
    let err = target
        .apply(&states(5, AnaAccess::Optimized, AnaAccess::Inaccessible))
        .await
        .expect_err("stale states");
    assert!(matches!(err, HandlerError::Fenced { .. }), "{err}");
    assert_eq!(read_json(&path)["ana"], fenced["ana"]);
    // Restarted after the fence, it is sent newer epochs and serves again.
    target
        .apply(&states(7, AnaAccess::Optimized, AnaAccess::Inaccessible))
        .await
        .expect("newer epoch");
    assert_eq!(read_json(&path)["ana"][NQN]["1"], "optimized");
}

#[tokio::test]
async fn a_missing_file_is_fenced_and_a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fencer = file_fencer(dir.path(), Duration::from_secs(5));
    // No file yet: nothing serves from it, and the fence is written so that a stale
    // process creating it finds it.
    fencer.fence(&order("gw2", 3)).await.expect("fenced");
    assert_eq!(
        read_json(&dir.path().join("gw2.json")),
        json!({"fenced_epoch": 3})
    );
    let target = FileTarget::new(dir.path().join("gw2.json"));
    let err = target
        .apply(&states(3, AnaAccess::Optimized, AnaAccess::Optimized))
        .await
        .expect_err("fenced before it ever served");
    assert!(matches!(err, HandlerError::Fenced { .. }), "{err}");

    // A directory that is not there: the template is wrong or the file is out of reach,
    // and the fence is not done.
    let elsewhere = file_fencer(&dir.path().join("absent"), Duration::from_secs(5));
    let err = elsewhere
        .fence(&order("gw1", 3))
        .await
        .expect_err("no directory");
    let text = err.to_string();
    assert!(
        text.starts_with("file fencer: ") && text.contains("absent/gw1.json"),
        "{text}"
    );
}

#[tokio::test]
async fn a_held_lock_fails_the_attempt_in_bounded_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw1.json");
    let held =
        gwmon_proto::target_file::lock(&path, Duration::from_secs(1)).expect("hold the lock");
    let fencer = file_fencer(dir.path(), Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = fencer.fence(&order("gw1", 2)).await.expect_err("busy");
    assert!(matches!(err, FenceError::File { .. }), "{err}");
    assert!(err.to_string().contains("held by another process"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded");
    assert!(!path.exists(), "nothing written without the lock");
    drop(held);
    fencer.fence(&order("gw1", 2)).await.expect("free again");
}

fn script(name: &str) -> PathBuf {
    gwmon_tests::bins::workspace()
        .join("deploy/fence")
        .join(name)
}

/// A stand-in for ssh: records the host it was given, then runs the command here. Run as
/// `sh FILE` so that no file this process wrote is executed ("text file busy").
fn fake_ssh(dir: &Path) -> (String, PathBuf) {
    let file = dir.join("fake-ssh");
    let log = dir.join("hosts.log");
    std::fs::write(
        &file,
        format!("echo \"$1\" >> '{}'\nshift\nexec \"$@\"\n", log.display()),
    )
    .expect("write fake ssh");
    (format!("sh {} {{host}}", file.display()), log)
}

/// A configfs-like nvmet tree: two ports, ANA groups 1 and 2 on port 1, group 1 on port 2.
fn nvmet_tree(root: &Path) {
    for (port, grp, state) in [
        (1, 1, "optimized"),
        (1, 2, "inaccessible"),
        (2, 1, "optimized"),
    ] {
        let d = root.join(format!("ports/{port}/ana_groups/{grp}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("ana_state"), format!("{state}\n")).expect("write");
    }
    std::fs::create_dir_all(root.join("ports/2/subsystems")).expect("mkdir");
}

fn nvmet_states(root: &Path) -> Vec<String> {
    ["1/ana_groups/1", "1/ana_groups/2", "2/ana_groups/1"]
        .iter()
        .map(|p| {
            std::fs::read_to_string(root.join("ports").join(p).join("ana_state"))
                .expect("state")
                .trim()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn nvmet_fence_makes_every_port_inaccessible_through_the_exec_fencer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("nvmet");
    nvmet_tree(&root);
    let local = ExecFencer::new(
        script("nvmet-fence"),
        vec!["--root".into(), root.display().to_string()],
        Duration::from_secs(20),
    );
    local.fence(&order("gw1", 4)).await.expect("fenced locally");
    assert_eq!(nvmet_states(&root), ["inaccessible"; 3]);
    local.fence(&order("gw1", 4)).await.expect("idempotent");

    // Through the remote command, with the host taken from the map.
    nvmet_tree(&root);
    let (ssh, hosts) = fake_ssh(dir.path());
    let remote = ExecFencer::new(
        script("nvmet-fence"),
        vec![
            "--root".into(),
            root.display().to_string(),
            "--ssh".into(),
            ssh,
            "--hosts".into(),
            "gw0=node-z,gw1=node-a".into(),
        ],
        Duration::from_secs(20),
    );
    remote
        .fence(&order("gw1", 5))
        .await
        .expect("fenced remotely");
    assert_eq!(nvmet_states(&root), ["inaccessible"; 3]);
    // A gateway not in the map is reached at its id.
    remote.fence(&order("gw2", 5)).await.expect("by id");
    assert_eq!(
        std::fs::read_to_string(&hosts).expect("hosts"),
        "node-a\ngw2\n"
    );

    // No nvmet there: a failed attempt with one line saying why.
    let missing = ExecFencer::new(
        script("nvmet-fence"),
        vec![
            "--root".into(),
            dir.path().join("none").display().to_string(),
        ],
        Duration::from_secs(20),
    );
    let err = missing.fence(&order("gw1", 6)).await.expect_err("no nvmet");
    let text = err.to_string();
    assert!(
        matches!(err, FenceError::Exit { code: Some(1), .. }),
        "{text}"
    );
    assert!(
        text.contains("ports does not exist (is nvmet loaded?)"),
        "{text}"
    );
}

/// Gateways sharing one kernel target (gwmon-gateway --nvmet-ports): only the failed
/// gateway's ports are fenced, the others keep serving.
#[tokio::test]
async fn nvmet_fence_with_a_port_map_fences_only_the_gateways_ports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("nvmet");
    nvmet_tree(&root);
    let fencer = |map: &str| {
        ExecFencer::new(
            script("nvmet-fence"),
            vec![
                "--root".into(),
                root.display().to_string(),
                "--ports".into(),
                map.into(),
            ],
            Duration::from_secs(20),
        )
    };
    fencer("gw1=2,gw2=1")
        .fence(&order("gw1", 4))
        .await
        .expect("fenced");
    assert_eq!(
        nvmet_states(&root),
        ["optimized", "inaccessible", "inaccessible"]
    );
    fencer("gw1=2,gw2=1:3")
        .fence(&order("gw2", 5))
        .await
        .expect("fenced");
    assert_eq!(nvmet_states(&root), ["inaccessible"; 3]);

    let err = fencer("gw1=2;x")
        .fence(&order("gw1", 6))
        .await
        .expect_err("bad map");
    assert!(err.to_string().contains("port ids are numbers"), "{err}");
}

/// A fake SPDK: answers `nvmf_get_subsystems` with `subsystems`, accepts
/// `nvmf_subsystem_listener_set_ana_state` unless `refuse` is set, records every call.
struct Spdk {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Spdk {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Spdk {
    fn start(subsystems: Value, refuse: bool) -> Spdk {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("spdk.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (calls, subsystems) = (Arc::clone(&recorded), subsystems.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let parsed = {
                            let mut it =
                                serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                            match it.next() {
                                Some(Ok(v)) => Some((v, it.byte_offset())),
                                _ => None,
                            }
                        };
                        let Some((req, used)) = parsed else {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        buf.drain(..used);
                        let method = req["method"].as_str().unwrap_or_default().to_owned();
                        let params = req.get("params").cloned().unwrap_or(Value::Null);
                        calls.lock().expect("calls").push((method.clone(), params));
                        let id = req["id"].clone();
                        let answer = match method.as_str() {
                            "nvmf_get_subsystems" => {
                                json!({"jsonrpc": "2.0", "id": id, "result": subsystems})
                            }
                            "nvmf_subsystem_listener_set_ana_state" if refuse => {
                                json!({"jsonrpc": "2.0", "id": id,
                                       "error": {"code": -32602, "message": "Invalid parameters"}})
                            }
                            "nvmf_subsystem_listener_set_ana_state" => {
                                json!({"jsonrpc": "2.0", "id": id, "result": true})
                            }
                            _ => json!({"jsonrpc": "2.0", "id": id,
                                        "error": {"code": -32601, "message": "Method not found"}}),
                        };
                        let bytes = serde_json::to_vec_pretty(&answer).expect("encode");
                        if stream.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Spdk {
            _dir: dir,
            socket,
            calls,
            task,
        }
    }

    fn sets(&self) -> Vec<Value> {
        self.calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|(m, _)| m == "nvmf_subsystem_listener_set_ana_state")
            .map(|(_, p)| p.clone())
            .collect()
    }
}

fn tcp(addr: &str, port: &str) -> Value {
    json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": addr, "trsvcid": port})
}

#[tokio::test]
async fn spdk_fence_sets_every_listener_inaccessible_through_the_exec_fencer() {
    let subsystems = json!([
        {"nqn": "nqn.2014-08.org.nvmexpress.discovery", "subtype": "Discovery",
         "listen_addresses": [tcp("10.0.0.1", "8009")]},
        {"nqn": NQN, "subtype": "NVMe",
         "listen_addresses": [tcp("10.0.0.1", "4420"), tcp("10.0.0.2", "4420")],
         "namespaces": [{"nsid": 1, "anagrpid": 1}]},
        {"nqn": "nqn.2016-06.io.spdk:cnode2", "subtype": "NVMe", "listen_addresses": []}
    ]);
    let spdk = Spdk::start(subsystems.clone(), false);
    let dir = tempfile::tempdir().expect("tempdir");
    let (ssh, hosts) = fake_ssh(dir.path());
    let fencer = ExecFencer::new(
        script("spdk-fence"),
        vec![
            "--socket".into(),
            spdk.socket.display().to_string(),
            "--ssh".into(),
            ssh,
        ],
        Duration::from_secs(20),
    );
    fencer.fence(&order("gw1", 4)).await.expect("fenced");
    let want = |addr| json!({"nqn": NQN, "listen_address": tcp(addr, "4420"), "ana_state": "inaccessible"});
    assert_eq!(spdk.sets(), vec![want("10.0.0.1"), want("10.0.0.2")]);
    assert_eq!(std::fs::read_to_string(&hosts).expect("hosts"), "gw1\n");
    fencer.fence(&order("gw1", 4)).await.expect("idempotent");
    assert_eq!(spdk.sets().len(), 4);

    // SPDK refuses: not done, and the error says what SPDK said.
    let refusing = Spdk::start(subsystems, true);
    let fencer = ExecFencer::new(
        script("spdk-fence"),
        vec!["--socket".into(), refusing.socket.display().to_string()],
        Duration::from_secs(20),
    );
    let err = fencer.fence(&order("gw1", 5)).await.expect_err("refused");
    assert!(
        err.to_string().contains(
            "nvmf_subsystem_listener_set_ana_state: SPDK error -32602: Invalid parameters"
        ),
        "{err}"
    );

    // No SPDK at all.
    let fencer = ExecFencer::new(
        script("spdk-fence"),
        vec![
            "--socket".into(),
            dir.path().join("nothing.sock").display().to_string(),
        ],
        Duration::from_secs(20),
    );
    let err = fencer.fence(&order("gw1", 6)).await.expect_err("no socket");
    assert!(err.to_string().contains("cannot connect to"), "{err}");
}
