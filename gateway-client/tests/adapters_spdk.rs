//! The SPDK adapter against a small JSON-RPC 2.0 server on a unix socket, which answers
//! `nvmf_get_subsystems` with output shaped like SPDK's and records every call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gwmon_client::adapters::spdk::{SpdkConfig, SpdkTarget};
use gwmon_client::{AnaEntry, AnaHandler, AnaStates, HandlerError};
use gwmon_proto::domain::{AnaAccess, AnaGroupId, Epoch, Listener, Namespace, Nqn, Subsystem};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

const A: &str = "nqn.2016-06.io.spdk:cnode1";
const B: &str = "nqn.2016-06.io.spdk:cnode2";
const C: &str = "nqn.2016-06.io.spdk:cnode3";
const DISCOVERY: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// A guard against a hung test: every await on the adapter finishes well within this.
const DEADLINE: Duration = Duration::from_secs(20);

/// `nvmf_get_subsystems` as SPDK prints it: the discovery subsystem first; cnode1 with two
/// TCP listeners and namespaces listed out of order; cnode2 with a TCP and a Fibre Channel
/// listener; cnode3 created without ANA reporting (no `anagrpid`).
fn spdk_subsystems() -> Value {
    json!([
        {
            "nqn": DISCOVERY,
            "subtype": "Discovery",
            "listen_addresses": [
                {"trtype": "TCP", "adrfam": "IPv4", "traddr": "10.0.0.1", "trsvcid": "8009"}
            ],
            "allow_any_host": true,
            "hosts": []
        },
        {
            "nqn": A,
            "subtype": "NVMe",
            "listen_addresses": [
                {"trtype": "TCP", "adrfam": "IPv4", "traddr": "10.0.0.1", "trsvcid": "4420"},
                {"trtype": "TCP", "adrfam": "IPv6", "traddr": "fd00::1", "trsvcid": "4420"}
            ],
            "allow_any_host": true,
            "hosts": [],
            "serial_number": "Ceph12345678901234",
            "model_number": "Ceph bdev Controller",
            "max_namespaces": 1024,
            "passthrough": false,
            "min_cntlid": 1,
            "max_cntlid": 2040,
            "namespaces": [
                {
                    "nsid": 2,
                    "bdev_name": "bdev_b2c1f5c0",
                    "name": "bdev_b2c1f5c0",
                    "uuid": "b2c1f5c0-6b1e-4c5a-9d7e-0d2f1a3b4c5d",
                    "anagrpid": 2
                },
                {
                    "nsid": 1,
                    "bdev_name": "bdev_5e0f2a11",
                    "name": "bdev_5e0f2a11",
                    "nguid": "5E0F2A11C0DE4B1A9F3E6D7C8B9A0F1E",
                    "uuid": "5e0f2a11-c0de-4b1a-9f3e-6d7c8b9a0f1e",
                    "anagrpid": 1
                }
            ]
        },
        {
            "nqn": B,
            "subtype": "NVMe",
            "listen_addresses": [
                {"trtype": "TCP", "adrfam": "IPv4", "traddr": "10.0.0.1", "trsvcid": "4420"},
                {
                    "trtype": "FC",
                    "adrfam": "FC",
                    "traddr": "nn-0x20000090fa942779:pn-0x10000090fa942779",
                    "trsvcid": "none"
                }
            ],
            "allow_any_host": false,
            "hosts": [{"nqn": "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"}],
            "serial_number": "Ceph00000000000002",
            "model_number": "Ceph bdev Controller",
            "namespaces": [
                {"nsid": 1, "bdev_name": "bdev_99", "name": "bdev_99", "anagrpid": 2}
            ]
        },
        {
            "nqn": C,
            "subtype": "NVMe",
            "listen_addresses": [],
            "allow_any_host": true,
            "hosts": [],
            "serial_number": "SPDK00000000000003",
            "model_number": "SPDK bdev Controller",
            "namespaces": [{"nsid": 1, "bdev_name": "Malloc0", "name": "Malloc0"}]
        }
    ])
}

#[derive(Clone, Default)]
struct Behavior {
    /// The `nvmf_get_subsystems` result.
    subsystems: Value,
    /// Refuse `nvmf_subsystem_listener_set_ana_state` for listeners with this traddr.
    refuse_traddr: Option<String>,
    /// Write answers this many bytes at a time.
    chunk: Option<usize>,
    /// Close the connection after each answer (as a restarted SPDK would).
    close_after_answer: bool,
    /// Never answer.
    silent: bool,
}

/// The test server: records `(method, params)` of every request.
struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn start(behavior: Behavior) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("spdk.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = {
            let (calls, connections) = (Arc::clone(&calls), Arc::clone(&connections));
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, behavior.clone(), Arc::clone(&calls)));
                }
            })
        };
        Server {
            _dir: dir,
            socket,
            calls,
            connections,
            task,
        }
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().expect("lock").clone()
    }

    fn set_calls(&self) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|(m, _)| m == "nvmf_subsystem_listener_set_ana_state")
            .map(|(_, p)| p)
            .collect()
    }

    fn methods(&self) -> Vec<String> {
        self.calls().into_iter().map(|(m, _)| m).collect()
    }
}

async fn serve(mut stream: UnixStream, b: Behavior, calls: Arc<Mutex<Vec<(String, Value)>>>) {
    let mut buf = Vec::new();
    loop {
        // Take every complete request in the buffer.
        let (request, used) = {
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => (Some(v), it.byte_offset()),
                Some(Err(e)) if e.is_eof() => (None, 0),
                None => (None, 0),
                Some(Err(_)) => return,
            }
        };
        let Some(request) = request else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        buf.drain(..used);

        let method = request["method"].as_str().unwrap_or_default().to_owned();
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        calls
            .lock()
            .expect("lock")
            .push((method.clone(), params.clone()));
        if b.silent {
            continue;
        }
        let id = request["id"].clone();
        let answer = match method.as_str() {
            "nvmf_get_subsystems" => json!({"jsonrpc": "2.0", "id": id, "result": b.subsystems}),
            "nvmf_subsystem_listener_set_ana_state"
                if b.refuse_traddr.as_deref() == params["listen_address"]["traddr"].as_str() =>
            {
                json!({"jsonrpc": "2.0", "id": id,
                       "error": {"code": -32602, "message": "Invalid parameters"}})
            }
            "nvmf_subsystem_listener_set_ana_state" | "nvmf_subsystem_set_ns_ana_group" => {
                json!({"jsonrpc": "2.0", "id": id, "result": true})
            }
            _ => json!({"jsonrpc": "2.0", "id": id,
                        "error": {"code": -32601, "message": "Method not found"}}),
        };
        // SPDK pretty-prints its answers.
        let bytes = serde_json::to_vec_pretty(&answer).expect("encode");
        let chunk = b.chunk.unwrap_or(bytes.len()).max(1);
        for part in bytes.chunks(chunk) {
            if stream.write_all(part).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        if b.close_after_answer {
            return;
        }
    }
}

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
        epoch: Epoch(5),
        entries,
    }
}

fn standard() -> Behavior {
    Behavior {
        subsystems: spdk_subsystems(),
        ..Behavior::default()
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("the adapter answered within the deadline")
}

fn set_call(nqn: &str, listen_address: Value, state: &str, grp: u32) -> Value {
    json!({
        "nqn": nqn,
        "listen_address": listen_address,
        "ana_state": state,
        "anagrpid": grp,
    })
}

fn tcp4() -> Value {
    json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "10.0.0.1", "trsvcid": "4420"})
}

fn tcp6() -> Value {
    json!({"trtype": "TCP", "adrfam": "IPv6", "traddr": "fd00::1", "trsvcid": "4420"})
}

fn fc() -> Value {
    json!({"trtype": "FC", "adrfam": "FC",
           "traddr": "nn-0x20000090fa942779:pn-0x10000090fa942779", "trsvcid": "none"})
}

#[tokio::test]
async fn scan_reports_nvme_subsystems_and_skips_discovery() {
    let server = Server::start(standard());
    let nonce = "10.0.0.5:0/1234".parse().expect("nonce");
    let mut config = SpdkConfig::new(&server.socket);
    config.nonces = BTreeMap::from([("bdev_5e0f2a11".to_owned(), nonce)]);
    let target = SpdkTarget::with_config(config);

    let got = within(target.subsystems()).await.expect("scan");
    let l = |a: &str| Listener {
        address: a.parse().expect("ip"),
        port: 4420,
    };
    assert_eq!(
        got,
        vec![
            Subsystem {
                nqn: nqn(A),
                listeners: vec![l("10.0.0.1"), l("fd00::1")],
                namespaces: vec![
                    Namespace {
                        nsid: 1,
                        ana_group: grp(1),
                        nonce: Some("10.0.0.5:0/1234".parse().expect("nonce")),
                    },
                    Namespace {
                        nsid: 2,
                        ana_group: grp(2),
                        nonce: None,
                    },
                ],
            },
            Subsystem {
                nqn: nqn(B),
                listeners: vec![l("10.0.0.1")],
                namespaces: vec![Namespace {
                    nsid: 1,
                    ana_group: grp(2),
                    nonce: None,
                }],
            },
            // No anagrpid: the namespace is left out, the subsystem is still served.
            Subsystem {
                nqn: nqn(C),
                listeners: vec![],
                namespaces: vec![],
            },
        ]
    );
    assert_eq!(within(target.subsystems()).await.expect("again"), got);
    assert_eq!(server.methods(), vec!["nvmf_get_subsystems"; 2]);
    assert_eq!(
        server.calls()[0].1,
        Value::Null,
        "no params without tgt_name"
    );
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "the connection is kept"
    );
}

#[tokio::test]
async fn apply_sets_each_listener_demotions_first() {
    let server = Server::start(standard());
    let target = SpdkTarget::new(&server.socket);
    within(target.subsystems()).await.expect("scan");

    within(target.apply(&states(vec![
        entry(A, 1, AnaAccess::Optimized),
        entry(A, 2, AnaAccess::Inaccessible),
        entry(B, 1, AnaAccess::Optimized),
        entry(B, 2, AnaAccess::Inaccessible),
    ])))
    .await
    .expect("apply");

    assert_eq!(
        server.set_calls(),
        vec![
            // Demotions, by subsystem and group, each on every listener (FC included).
            set_call(A, tcp4(), "inaccessible", 2),
            set_call(A, tcp6(), "inaccessible", 2),
            set_call(B, fc(), "inaccessible", 2),
            set_call(B, tcp4(), "inaccessible", 2),
            // Then promotions.
            set_call(A, tcp4(), "optimized", 1),
            set_call(A, tcp6(), "optimized", 1),
            set_call(B, fc(), "optimized", 1),
            set_call(B, tcp4(), "optimized", 1),
        ]
    );
    // The cached listeners were used: one scan in all.
    assert_eq!(
        server
            .methods()
            .iter()
            .filter(|m| *m == "nvmf_get_subsystems")
            .count(),
        1
    );
}

#[tokio::test]
async fn apply_scans_when_a_subsystem_is_unknown_and_skips_what_spdk_lacks() {
    let server = Server::start(standard());
    let target = SpdkTarget::new(&server.socket);
    // No scan yet: apply must scan first. cnode9 is not served: nothing to set for it.
    within(target.apply(&states(vec![
        entry(A, 1, AnaAccess::Optimized),
        entry(A, 1, AnaAccess::Inaccessible),
        entry("nqn.2016-06.io.spdk:cnode9", 1, AnaAccess::Optimized),
        entry(C, 1, AnaAccess::Optimized),
    ])))
    .await
    .expect("apply");
    assert_eq!(
        server.calls(),
        vec![
            ("nvmf_get_subsystems".to_owned(), Value::Null),
            (
                "nvmf_subsystem_listener_set_ana_state".to_owned(),
                set_call(A, tcp4(), "inaccessible", 1)
            ),
            (
                "nvmf_subsystem_listener_set_ana_state".to_owned(),
                set_call(A, tcp6(), "inaccessible", 1)
            ),
        ],
        "conflicting entries resolve to inaccessible; C has no listener; cnode9 is unknown"
    );
}

#[tokio::test]
async fn a_json_rpc_error_names_spdk_code_and_message_and_the_rest_is_still_set() {
    let server = Server::start(Behavior {
        refuse_traddr: Some("fd00::1".into()),
        ..standard()
    });
    let target = SpdkTarget::new(&server.socket);
    let err = within(target.apply(&states(vec![
        entry(A, 1, AnaAccess::Optimized),
        entry(B, 1, AnaAccess::Optimized),
    ])))
    .await
    .expect_err("one listener refused");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            HandlerError::Target {
                target: "spdk",
                op: "nvmf_subsystem_listener_set_ana_state",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("-32602"), "{text}");
    assert!(text.contains("Invalid parameters"), "{text}");
    assert_eq!(
        server.set_calls(),
        vec![
            set_call(A, tcp4(), "optimized", 1),
            set_call(A, tcp6(), "optimized", 1),
            set_call(B, fc(), "optimized", 1),
            set_call(B, tcp4(), "optimized", 1),
        ]
    );
}

#[tokio::test]
async fn answers_split_over_many_reads_are_reassembled() {
    let server = Server::start(Behavior {
        chunk: Some(7),
        ..standard()
    });
    let target = SpdkTarget::new(&server.socket);
    let got = within(target.subsystems()).await.expect("scan");
    assert_eq!(got.len(), 3);
    within(target.apply(&states(vec![entry(A, 2, AnaAccess::Optimized)])))
        .await
        .expect("apply");
    assert_eq!(server.set_calls().len(), 2);
}

#[tokio::test]
async fn a_closed_connection_is_reopened() {
    let server = Server::start(Behavior {
        close_after_answer: true,
        ..standard()
    });
    let target = SpdkTarget::new(&server.socket);
    for _ in 0..3 {
        within(target.subsystems()).await.expect("scan");
    }
    assert_eq!(server.methods(), vec!["nvmf_get_subsystems"; 3]);
    assert_eq!(server.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_silent_target_times_out() {
    let server = Server::start(Behavior {
        silent: true,
        ..standard()
    });
    let mut config = SpdkConfig::new(&server.socket);
    config.timeout = Duration::from_millis(200);
    let target = SpdkTarget::with_config(config);
    let err = within(target.subsystems()).await.expect_err("no answer");
    let text = err.to_string();
    assert!(text.contains("nvmf_get_subsystems"), "{text}");
    assert!(text.contains("no answer within 200ms"), "{text}");
}

#[tokio::test]
async fn no_socket_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("absent.sock");
    let target = SpdkTarget::new(&socket);
    let err = within(target.subsystems())
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(err, HandlerError::Io { target: "spdk", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("absent.sock"), "{err}");
    let err = within(target.apply(&states(vec![entry(A, 1, AnaAccess::Optimized)])))
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().contains("absent.sock"), "{err}");
}

#[tokio::test]
async fn the_target_name_is_passed_to_every_call() {
    let server = Server::start(standard());
    let mut config = SpdkConfig::new(&server.socket);
    config.target_name = Some("nvmf_tgt_2".into());
    let target = SpdkTarget::with_config(config);
    within(target.apply(&states(vec![entry(B, 2, AnaAccess::Inaccessible)])))
        .await
        .expect("apply");
    let calls = server.calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls.iter().all(|(_, p)| p["tgt_name"] == "nvmf_tgt_2"),
        "{calls:?}"
    );
}

#[tokio::test]
async fn malformed_answers_are_errors_naming_the_field() {
    let cases = [
        (json!({"not": "a list"}), "nvmf_get_subsystems result"),
        (
            json!([{"nqn": A, "subtype": "NVMe", "namespaces": [{"nsid": "one"}]}]),
            "result[0].namespaces[0]",
        ),
        (
            json!([{"nqn": A, "subtype": "NVMe", "namespaces": [{"nsid": 0, "anagrpid": 1}]}]),
            "result[0].namespaces[0].nsid",
        ),
        (
            json!([{"nqn": A, "subtype": "NVMe", "listen_addresses": [{"traddr": "10.0.0.1"}]}]),
            "result[0].listen_addresses[0]",
        ),
        (json!([{"subtype": "NVMe"}]), "result[0]"),
        (
            json!([{"nqn": A, "subtype": "NVMe"}, {"nqn": A, "subtype": "NVMe"}]),
            "listed twice",
        ),
    ];
    for (subsystems, needle) in cases {
        let server = Server::start(Behavior {
            subsystems: subsystems.clone(),
            ..Behavior::default()
        });
        let err = within(SpdkTarget::new(&server.socket).subsystems())
            .await
            .expect_err(&subsystems.to_string());
        let text = err.to_string();
        assert!(
            matches!(err, HandlerError::Invalid { target: "spdk", .. }),
            "{err:?}"
        );
        assert!(
            text.contains(needle),
            "{subsystems}: {text} should mention {needle:?}"
        );
    }
}

#[tokio::test]
async fn older_spdk_listeners_named_transport_are_understood() {
    let mut subsystems = spdk_subsystems();
    subsystems[1]["listen_addresses"] = json!([
        {"transport": "TCP", "trtype": "TCP", "adrfam": "IPv4", "traddr": "10.0.0.1", "trsvcid": "4420"},
        {"transport": "TCP", "adrfam": "IPv6", "traddr": "fd00::1", "trsvcid": "4420"}
    ]);
    let server = Server::start(Behavior {
        subsystems,
        ..Behavior::default()
    });
    let target = SpdkTarget::new(&server.socket);
    let got = within(target.subsystems()).await.expect("scan");
    assert_eq!(got[0].listeners.len(), 2);
    within(target.apply(&states(vec![entry(A, 1, AnaAccess::Inaccessible)])))
        .await
        .expect("apply");
    assert_eq!(
        server.set_calls(),
        vec![
            set_call(A, tcp4(), "inaccessible", 1),
            set_call(A, tcp6(), "inaccessible", 1),
        ]
    );
}

/// Namespace balancing: after the demotions and before the promotions, a namespace SPDK has
/// in another ANA group is moved with `nvmf_subsystem_set_ns_ana_group`; one already in
/// place is not touched.
#[tokio::test]
async fn placements_move_namespaces_between_demotions_and_promotions() {
    let server = Server::start(standard());
    let target = SpdkTarget::new(&server.socket);
    within(target.subsystems()).await.expect("scan");
    let placed = |n: &str, nsid, g| gwmon_proto::domain::NamespacePlacement {
        nqn: nqn(n),
        nsid,
        ana_group: grp(g),
    };
    let mut s = states(vec![
        entry(A, 1, AnaAccess::Optimized),
        entry(A, 2, AnaAccess::Inaccessible),
    ]);
    s.placements = vec![placed(A, 1, 1), placed(A, 2, 1), placed(B, 1, 2)];
    within(target.apply(&s)).await.expect("apply");

    let calls = server.calls();
    let methods: Vec<&str> = calls.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        methods,
        [
            "nvmf_get_subsystems",
            "nvmf_subsystem_listener_set_ana_state",
            "nvmf_subsystem_listener_set_ana_state",
            "nvmf_get_subsystems",
            "nvmf_subsystem_set_ns_ana_group",
            "nvmf_subsystem_listener_set_ana_state",
            "nvmf_subsystem_listener_set_ana_state",
        ]
    );
    assert_eq!(calls[1].1["ana_state"], "inaccessible");
    assert_eq!(calls[4].1, json!({"nqn": A, "nsid": 2, "anagrpid": 1}));
    assert_eq!(calls[5].1["ana_state"], "optimized");
}
