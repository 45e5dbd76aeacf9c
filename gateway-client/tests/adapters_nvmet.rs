//! The nvmet adapter against a generated configfs-like tree.
//!
//! The tree is what the kernel shows under `/sys/kernel/config/nvmet`: subsystems with
//! namespaces, ports with their address attributes, symlinks exporting subsystems on ports,
//! and ANA group 1 on every port (the kernel creates it with the port, optimized). Plain
//! directories cannot create `ana_state` on `mkdir` as configfs does; the adapter writes it.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gwmon_client::adapters::nvmet::{NvmetConfig, NvmetTarget};
use gwmon_client::{AnaEntry, AnaHandler, AnaStates, HandlerError};
use gwmon_proto::domain::{AnaAccess, AnaGroupId, Epoch, Listener, Namespace, Nqn, Subsystem};

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
        epoch: Epoch(3),
        entries,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, format!("{text}\n")).expect("write");
}

/// A configfs-like nvmet tree in a temporary directory.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("nvmet");
        for d in ["subsystems", "ports", "hosts"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        Tree { _dir: dir, root }
    }

    fn namespace(&self, nqn: &str, nsid: u32, ana_grpid: &str, enable: &str) {
        let ns = self
            .root
            .join("subsystems")
            .join(nqn)
            .join("namespaces")
            .join(nsid.to_string());
        write(&ns.join("device_path"), &format!("/dev/rbd{nsid}"));
        write(&ns.join("enable"), enable);
        write(&ns.join("ana_grpid"), ana_grpid);
        std::fs::create_dir_all(self.root.join("subsystems").join(nqn).join("allowed_hosts"))
            .expect("mkdir");
    }

    fn port(&self, id: u16, trtype: &str, adrfam: &str, traddr: &str, trsvcid: &str) {
        let port = self.port_dir(id);
        write(&port.join("addr_trtype"), trtype);
        write(&port.join("addr_adrfam"), adrfam);
        write(&port.join("addr_traddr"), traddr);
        write(&port.join("addr_trsvcid"), trsvcid);
        std::fs::create_dir_all(port.join("subsystems")).expect("mkdir");
        std::fs::create_dir_all(port.join("referrals")).expect("mkdir");
        // The kernel creates ANA group 1 with every port, optimized.
        write(&port.join("ana_groups/1/ana_state"), "optimized");
    }

    fn export(&self, port: u16, nqn: &str) {
        symlink(
            format!("../../../subsystems/{nqn}"),
            self.port_dir(port).join("subsystems").join(nqn),
        )
        .expect("symlink");
    }

    fn port_dir(&self, id: u16) -> PathBuf {
        self.root.join("ports").join(id.to_string())
    }

    fn state_path(&self, port: u16, grp: u32) -> PathBuf {
        self.port_dir(port)
            .join("ana_groups")
            .join(grp.to_string())
            .join("ana_state")
    }

    fn state(&self, port: u16, grp: u32) -> Option<String> {
        std::fs::read_to_string(self.state_path(port, grp))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Two subsystems on two TCP ports plus a loop port, namespaces in groups 1 and 2, a
    /// disabled namespace, and a subsystem gwmon cannot name.
    fn standard() -> Tree {
        let t = Tree::new();
        t.namespace(A, 1, "1", "1");
        t.namespace(A, 2, "2", "1");
        t.namespace(A, 3, "2", "0"); // disabled: not reported
        t.namespace(B, 1, "2", "1");
        t.namespace("testnqn", 1, "1", "1"); // not a valid NQN: skipped
        t.port(1, "tcp", "ipv4", "10.0.0.1", "4420");
        t.port(2, "tcp", "ipv6", "fd00::1", "4420");
        t.port(3, "loop", "", "", ""); // not an IP listener
        t.export(1, A);
        t.export(1, B);
        t.export(2, A);
        t.export(3, B);
        t.export(1, "testnqn");
        t
    }
}

fn listener(addr: &str, port: u16) -> Listener {
    Listener {
        address: addr.parse().expect("ip"),
        port,
    }
}

#[tokio::test]
async fn scan_reports_enabled_namespaces_and_ip_listeners() {
    let t = Tree::standard();
    let nonce = "10.0.0.1:0/4242".parse().expect("nonce");
    let target = NvmetTarget::with_config(NvmetConfig {
        root: t.root.clone(),
        nonce: Some(nonce),
        ports: None,
    });
    let got = target.subsystems().await.expect("scan");
    let ns = |nsid, g| Namespace {
        nsid,
        ana_group: grp(g),
        nonce: Some("10.0.0.1:0/4242".parse().expect("nonce")),
    };
    assert_eq!(
        got,
        vec![
            Subsystem {
                nqn: nqn(A),
                listeners: vec![listener("10.0.0.1", 4420), listener("fd00::1", 4420)],
                namespaces: vec![ns(1, 1), ns(2, 2)],
            },
            Subsystem {
                nqn: nqn(B),
                listeners: vec![listener("10.0.0.1", 4420)],
                namespaces: vec![ns(1, 2)],
            },
        ]
    );
    assert_eq!(target.subsystems().await.expect("scan again"), got);
}

#[tokio::test]
async fn apply_creates_groups_and_writes_states_on_every_exporting_port() {
    let t = Tree::standard();
    let target = NvmetTarget::new(&t.root);
    assert!(!t.port_dir(1).join("ana_groups/2").exists());

    target
        .apply(&states(vec![
            entry(A, 1, AnaAccess::Inaccessible),
            entry(A, 2, AnaAccess::Optimized),
            entry(B, 1, AnaAccess::Inaccessible),
            entry(B, 2, AnaAccess::Optimized),
        ]))
        .await
        .expect("apply");

    for port in [1, 2, 3] {
        assert_eq!(
            t.state(port, 1).as_deref(),
            Some("inaccessible"),
            "port {port}"
        );
        assert_eq!(
            t.state(port, 2).as_deref(),
            Some("optimized"),
            "port {port}"
        );
    }
    // Subsystems exported nowhere and groups nobody asked for are left alone.
    assert!(!t.port_dir(1).join("ana_groups/3").exists());
}

#[tokio::test]
async fn a_group_shared_by_subsystems_on_a_port_is_inaccessible_when_they_disagree() {
    let t = Tree::standard();
    let target = NvmetTarget::new(&t.root);
    // A wants group 2 optimized, B wants it inaccessible. Port 1 exports both, port 2 only A,
    // port 3 only B.
    target
        .apply(&states(vec![
            entry(A, 2, AnaAccess::Optimized),
            entry(B, 2, AnaAccess::Inaccessible),
        ]))
        .await
        .expect("apply");
    assert_eq!(t.state(1, 2).as_deref(), Some("inaccessible"));
    assert_eq!(t.state(2, 2).as_deref(), Some("optimized"));
    assert_eq!(t.state(3, 2).as_deref(), Some("inaccessible"));
}

#[tokio::test]
async fn applying_the_same_states_again_writes_nothing() {
    let t = Tree::standard();
    let target = NvmetTarget::new(&t.root);
    let want = states(vec![
        entry(A, 1, AnaAccess::Optimized),
        entry(A, 2, AnaAccess::Inaccessible),
    ]);
    target.apply(&want).await.expect("apply");

    // Backdate every state file; a write would move its modification time to now.
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let paths = [
        t.state_path(1, 1),
        t.state_path(1, 2),
        t.state_path(2, 1),
        t.state_path(2, 2),
    ];
    for p in &paths {
        let f = std::fs::File::options().write(true).open(p).expect("open");
        f.set_modified(old).expect("set mtime");
    }
    target.apply(&want).await.expect("apply again");
    for p in &paths {
        let mtime = std::fs::metadata(p)
            .expect("stat")
            .modified()
            .expect("mtime");
        assert_eq!(mtime, old, "{} was rewritten", p.display());
    }

    // A change is written.
    target
        .apply(&states(vec![entry(A, 2, AnaAccess::Optimized)]))
        .await
        .expect("apply a change");
    assert_eq!(t.state(1, 2).as_deref(), Some("optimized"));
    let mtime = std::fs::metadata(t.state_path(1, 2))
        .expect("stat")
        .modified()
        .expect("mtime");
    assert_ne!(mtime, old);
    assert_eq!(t.state(1, 1).as_deref(), Some("optimized"), "untouched");
}

#[tokio::test]
async fn a_non_numeric_ana_grpid_is_an_error_naming_the_file() {
    let t = Tree::standard();
    t.namespace(B, 7, "two", "1");
    let err = NvmetTarget::new(&t.root)
        .subsystems()
        .await
        .expect_err("the kernel never writes that");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            HandlerError::Invalid {
                target: "nvmet",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("namespaces/7/ana_grpid"), "{text}");
    assert!(text.contains("\"two\""), "{text}");
}

#[tokio::test]
async fn a_disabled_namespace_is_not_checked_beyond_enable() {
    // A disabled namespace is not reported, so its group does not matter and cannot fail the
    // scan; enable itself must be 0 or 1.
    let t = Tree::standard();
    t.namespace(B, 8, "", "0");
    assert!(NvmetTarget::new(&t.root).subsystems().await.is_ok());
    t.namespace(B, 9, "1", "yes");
    let err = NvmetTarget::new(&t.root)
        .subsystems()
        .await
        .expect_err("bad enable");
    assert!(err.to_string().contains("namespaces/9/enable"), "{err}");
}

#[tokio::test]
async fn a_missing_root_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("no-nvmet-module");
    let target = NvmetTarget::new(&root);
    let err = target.subsystems().await.expect_err("no tree");
    assert!(
        matches!(
            err,
            HandlerError::Io {
                target: "nvmet",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-nvmet-module"), "{err}");
    let err = target
        .apply(&states(vec![entry(A, 1, AnaAccess::Optimized)]))
        .await
        .expect_err("no tree");
    assert!(err.to_string().contains("no-nvmet-module"), "{err}");
}

#[tokio::test]
async fn default_config_points_at_the_kernel_tree() {
    let c = NvmetConfig::default();
    assert_eq!(c.root, PathBuf::from("/sys/kernel/config/nvmet"));
    assert_eq!(c.nonce, None);
}

/// A crashed predecessor may have left any group of any port optimized, including groups no
/// subsystem names any more: `demote_all` reaches every one of them.
#[tokio::test]
async fn demote_all_makes_every_group_of_every_port_inaccessible() {
    let t = Tree::standard();
    let target = NvmetTarget::new(&t.root);
    target
        .apply(&states(vec![
            entry(A, 1, AnaAccess::Optimized),
            entry(A, 2, AnaAccess::Optimized),
            entry(B, 1, AnaAccess::Optimized),
            entry(B, 2, AnaAccess::Optimized),
        ]))
        .await
        .expect("apply");
    // A group left behind that no namespace names.
    write(&t.state_path(1, 7), "optimized\n");
    target
        .demote_all(&AnaStates::default())
        .await
        .expect("demote");
    for port in [1, 2, 3] {
        for grp in [1, 2] {
            assert_eq!(
                t.state(port, grp).as_deref(),
                Some("inaccessible"),
                "port {port} group {grp}"
            );
        }
    }
    assert_eq!(t.state(1, 7).as_deref(), Some("inaccessible"));
}

/// Two gateways sharing one kernel target, each with its own port: one gateway's scan,
/// apply and demotion never touch the other's port.
#[tokio::test]
async fn a_gateway_that_owns_some_ports_leaves_the_others_alone() {
    let t = Tree::standard();
    let own = |ports: &[&str]| {
        NvmetTarget::with_config(NvmetConfig {
            root: t.root.clone(),
            ports: Some(ports.iter().map(|p| (*p).to_owned()).collect()),
            ..NvmetConfig::default()
        })
    };
    let first = own(&["1"]);
    let got = first.subsystems().await.expect("scan");
    let a = got.iter().find(|s| s.nqn == nqn(A)).expect("subsystem A");
    assert_eq!(a.listeners, vec![listener("10.0.0.1", 4420)]);

    // Port 2 says optimized (the other gateway serves through it).
    write(&t.state_path(2, 1), "optimized");
    first
        .apply(&states(vec![entry(A, 1, AnaAccess::Inaccessible)]))
        .await
        .expect("apply");
    assert_eq!(t.state(1, 1).as_deref(), Some("inaccessible"));
    assert_eq!(t.state(2, 1).as_deref(), Some("optimized"));
    first
        .demote_all(&AnaStates::default())
        .await
        .expect("demote");
    assert_eq!(t.state(2, 1).as_deref(), Some("optimized"));

    // A port that is not there is warned about, not an error: the others still work.
    let second = own(&["2", "9"]);
    second
        .apply(&states(vec![entry(A, 1, AnaAccess::Inaccessible)]))
        .await
        .expect("apply");
    assert_eq!(t.state(2, 1).as_deref(), Some("inaccessible"));
}

/// Namespace balancing: a placement rewrites the namespace's `ana_grpid` (the kernel lets
/// it change while the namespace is enabled, and tells hosts); one already in place, or a
/// namespace this target does not have, is left alone.
#[tokio::test]
async fn placements_rewrite_a_namespaces_ana_grpid() {
    let t = Tree::standard();
    let target = NvmetTarget::new(&t.root);
    let placed = |n: &str, nsid, g| gwmon_proto::domain::NamespacePlacement {
        nqn: nqn(n),
        nsid,
        ana_group: grp(g),
    };
    let ana_grpid = |n: &str, nsid: u32| {
        std::fs::read_to_string(
            t.root
                .join("subsystems")
                .join(n)
                .join("namespaces")
                .join(nsid.to_string())
                .join("ana_grpid"),
        )
        .expect("read")
        .trim()
        .to_owned()
    };
    let untouched = t
        .root
        .join("subsystems")
        .join(B)
        .join("namespaces/1/ana_grpid");
    let before = std::fs::metadata(&untouched)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut s = states(vec![
        entry(A, 1, AnaAccess::Optimized),
        entry(A, 2, AnaAccess::Inaccessible),
    ]);
    s.placements = vec![placed(A, 2, 1), placed(B, 1, 2), placed(A, 7, 1)];
    target.apply(&s).await.expect("apply");

    assert_eq!(ana_grpid(A, 2), "1");
    assert_eq!(ana_grpid(B, 1), "2");
    assert_eq!(
        std::fs::metadata(&untouched)
            .and_then(|m| m.modified())
            .expect("mtime"),
        before,
        "already in place: not written"
    );
    assert!(!t
        .root
        .join("subsystems")
        .join(A)
        .join("namespaces/7")
        .exists());
    let scanned = target.subsystems().await.expect("scan");
    let a = scanned.iter().find(|s| s.nqn == nqn(A)).expect("A");
    assert!(a.namespaces.iter().all(|n| n.ana_group == grp(1)));
    assert_eq!(t.state(1, 1).as_deref(), Some("optimized"));
}
