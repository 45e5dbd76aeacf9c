//! The sysfs reader against generated trees: the layouts a real kernel shows, including the
//! odd moments (a controller connecting or being deleted, a leg marked faulty, a resync in
//! progress, an entry vanishing between listing and reading).

use std::path::Path;

use gwmon_agent::host::linux::LinuxHost;
use gwmon_agent::host::runner::Runner;
use gwmon_agent::host::sysfs::{read_arrays, read_controllers, read_snapshot};
use gwmon_agent::host::{
    ArrayState, CtrlState, Host, HostError, LegState, SyncAction, SyncProgress, Transport,
};

mod tree {
    use std::path::{Path, PathBuf};

    /// Builds a sysfs-like tree in a temp dir.
    pub struct Tree {
        pub dir: tempfile::TempDir,
    }

    impl Tree {
        pub fn new() -> Tree {
            Tree {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }

        pub fn root(&self) -> &Path {
            self.dir.path()
        }

        pub fn file(&self, rel: &str, content: &str) -> PathBuf {
            let p = self.root().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
            p
        }

        pub fn link(&self, rel: &str, target: &str) {
            let p = self.root().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::os::unix::fs::symlink(target, &p).expect("symlink");
        }

        /// A fabrics controller with one namespace per `(entry, uuid)`.
        pub fn controller(
            &self,
            name: &str,
            nqn: &str,
            addr: &str,
            state: &str,
            namespaces: &[(&str, &str)],
        ) {
            let base = format!("sys/class/nvme-fabrics/ctl/{name}");
            self.file(&format!("{base}/subsysnqn"), &format!("{nqn}\n"));
            self.file(&format!("{base}/transport"), "tcp\n");
            self.file(&format!("{base}/address"), &format!("{addr}\n"));
            self.file(&format!("{base}/state"), &format!("{state}\n"));
            self.file(
                &format!("{base}/hostnqn"),
                "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555\n",
            );
            self.file(&format!("{base}/cntlid"), "1\n");
            std::fs::create_dir_all(self.root().join(format!("{base}/power"))).expect("mkdir");
            for (i, (entry, uuid)) in namespaces.iter().enumerate() {
                self.file(&format!("{base}/{entry}/uuid"), &format!("{uuid}\n"));
                self.file(&format!("{base}/{entry}/nsid"), &format!("{}\n", i + 1));
            }
        }

        /// An md array with its attributes and `(device, state, slot)` legs.
        #[allow(clippy::too_many_arguments)]
        pub fn array(
            &self,
            md: &str,
            name: Option<&str>,
            array_state: &str,
            raid_disks: u32,
            degraded: u32,
            sync_action: &str,
            sync_completed: &str,
            legs: &[(&str, &str, &str)],
        ) {
            let base = format!("sys/block/{md}/md");
            self.file(&format!("{base}/array_state"), &format!("{array_state}\n"));
            self.file(&format!("{base}/level"), "raid1\n");
            self.file(&format!("{base}/raid_disks"), &format!("{raid_disks}\n"));
            self.file(&format!("{base}/degraded"), &format!("{degraded}\n"));
            self.file(&format!("{base}/sync_action"), &format!("{sync_action}\n"));
            self.file(
                &format!("{base}/sync_completed"),
                &format!("{sync_completed}\n"),
            );
            self.file(&format!("{base}/bitmap/location"), "+8\n");
            for (dev, state, slot) in legs {
                self.file(&format!("{base}/dev-{dev}/state"), &format!("{state}\n"));
                self.file(&format!("{base}/dev-{dev}/slot"), &format!("{slot}\n"));
                self.link(
                    &format!("{base}/dev-{dev}/block"),
                    &format!("../../../../../devices/virtual/nvme-subsystem/x/{dev}"),
                );
            }
            if let Some(name) = name {
                self.link(&format!("dev/md/{name}"), &format!("../{md}"));
            }
        }
    }
}

use tree::Tree;

const NQN_A: &str = "nqn.2016-06.io.spdk:replica-a";
const NQN_B: &str = "nqn.2016-06.io.spdk:replica-b";
const NQN_C: &str = "nqn.2016-06.io.spdk:replica-c";
const UUID_A: &str = "AAAAAAAA-0000-4000-8000-000000000001";
const UUID_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

fn host(root: &Path) -> LinuxHost {
    LinuxHost::new(
        root.to_owned(),
        Runner {
            prefix: Vec::new(),
            timeout: std::time::Duration::from_secs(5),
        },
    )
}

#[test]
fn an_empty_root_is_an_empty_host() {
    let t = Tree::new();
    let snap = host(t.root()).snapshot().expect("snapshot");
    assert!(snap.controllers.is_empty());
    assert!(snap.arrays.is_empty());
}

#[test]
fn controllers_in_every_state_are_listed_with_their_namespaces() {
    let t = Tree::new();
    t.controller(
        "nvme0",
        NQN_A,
        "traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.9",
        "live",
        &[("nvme0n1", UUID_A)],
    );
    t.controller(
        "nvme1",
        NQN_B,
        "traddr=10.0.0.2,trsvcid=4420",
        "connecting",
        &[("nvme1c1n1", UUID_B)],
    );
    t.controller(
        "nvme10",
        NQN_C,
        "traddr=10.0.0.3,trsvcid=4420",
        "deleting (no IO)",
        &[("nvme10n1", "00000000-0000-0000-0000-000000000000")],
    );
    t.controller(
        "nvme2",
        NQN_C,
        "traddr=10.0.0.3,trsvcid=4421",
        "resetting",
        &[],
    );
    t.controller("nvme3", NQN_C, "traddr=10.0.0.3,trsvcid=4422", "dead", &[]);

    let ctrls = read_controllers(t.root()).expect("read");
    let names: Vec<&str> = ctrls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["nvme0", "nvme1", "nvme2", "nvme3", "nvme10"]);

    let a = &ctrls[0];
    assert_eq!(a.subsysnqn.as_str(), NQN_A);
    assert_eq!(a.transport, Transport::Tcp);
    assert_eq!(a.address.traddr, "10.0.0.1");
    assert_eq!(a.address.trsvcid, "4420");
    assert_eq!(a.state, CtrlState::Live);
    assert!(a.hostnqn.is_some());
    assert_eq!(a.namespaces.len(), 1);
    assert_eq!(a.namespaces[0].device, "nvme0n1");
    assert_eq!(
        a.namespaces[0].uuid.as_deref(),
        Some("aaaaaaaa-0000-4000-8000-000000000001"),
        "uuids are compared lower case"
    );
    assert_eq!(a.namespaces[0].nsid, Some(1));

    // Native multipath: the path device nvme1c1n1 stands for the head nvme1n1.
    assert_eq!(ctrls[1].state, CtrlState::Connecting);
    assert!(!ctrls[1].state.is_live() && !ctrls[1].state.is_going());
    assert_eq!(ctrls[1].namespaces[0].device, "nvme1n1");

    assert_eq!(ctrls[2].state, CtrlState::Resetting);
    assert_eq!(ctrls[3].state, CtrlState::Dead);
    assert!(ctrls[3].state.is_going());
    assert_eq!(ctrls[4].state, CtrlState::Deleting);
    assert!(ctrls[4].state.is_going());
    // A target without namespace UUIDs sends zeros: no identity.
    assert_eq!(ctrls[4].namespaces[0].uuid, None);
}

#[test]
fn a_controller_that_is_not_ours_is_skipped_not_fatal() {
    let t = Tree::new();
    t.controller(
        "nvme0",
        "not-an-nqn",
        "traddr=1.1.1.1,trsvcid=1",
        "live",
        &[],
    );
    t.controller("nvme1", NQN_A, "traddr=10.0.0.1,trsvcid=4420", "live", &[]);
    let ctrls = read_controllers(t.root()).expect("read");
    assert_eq!(ctrls.len(), 1);
    assert_eq!(ctrls[0].name, "nvme1");
}

#[test]
fn a_garbled_attribute_fails_the_snapshot_naming_the_file() {
    let t = Tree::new();
    t.controller("nvme0", NQN_A, "nonsense", "live", &[]);
    let err = read_controllers(t.root()).expect_err("bad address");
    match &err {
        HostError::Parse { path, .. } => assert!(path.ends_with("nvme0/address"), "{err}"),
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("nvme0/address"));
}

#[test]
fn a_controller_missing_an_attribute_fails_while_it_exists() {
    let t = Tree::new();
    t.controller("nvme0", NQN_A, "traddr=10.0.0.1,trsvcid=4420", "live", &[]);
    std::fs::remove_file(t.root().join("sys/class/nvme-fabrics/ctl/nvme0/state")).expect("rm");
    let err = read_controllers(t.root()).expect_err("no state");
    assert!(matches!(err, HostError::Read { .. }), "{err}");
}

#[test]
fn a_healthy_array_with_a_name() {
    let t = Tree::new();
    t.array(
        "md127",
        Some("vol1"),
        "clean",
        2,
        0,
        "idle",
        "none",
        &[
            ("nvme0n1", "in_sync,failfast", "0"),
            ("nvme1n1", "in_sync,write_mostly", "1"),
        ],
    );
    let arrays = read_arrays(t.root()).expect("read");
    assert_eq!(arrays.len(), 1);
    let a = &arrays[0];
    assert_eq!(a.device, "md127");
    assert_eq!(a.name.as_deref(), Some("vol1"));
    assert_eq!(a.array_state, ArrayState::Clean);
    assert!(a.array_state.is_running());
    assert_eq!(a.level, "raid1");
    assert_eq!((a.raid_disks, a.degraded), (2, 0));
    assert_eq!(a.sync_action, SyncAction::Idle);
    assert_eq!(a.sync, None);
    assert_eq!(a.legs.len(), 2);
    assert!(a.legs.iter().all(|l| l.state() == LegState::InSync));
    assert!(a.legs[0].flags.failfast);
    assert!(a.legs[1].flags.write_mostly);
    assert_eq!(a.legs[1].slot, Some(1));
}

#[test]
fn a_leg_marked_faulty_degrades_the_array() {
    let t = Tree::new();
    t.array(
        "md127",
        Some("vol1"),
        "active",
        2,
        1,
        "idle",
        "none",
        &[
            ("nvme0n1", "in_sync", "0"),
            ("nvme1n1", "faulty,failfast", "none"),
        ],
    );
    let a = &read_arrays(t.root()).expect("read")[0];
    assert_eq!(a.degraded, 1);
    let faulty = a.leg("nvme1n1").expect("leg");
    assert_eq!(faulty.state(), LegState::Faulty);
    assert_eq!(faulty.slot, None);
    assert_eq!(a.leg("nvme0n1").map(|l| l.state()), Some(LegState::InSync));
}

#[test]
fn a_resync_in_progress_shows_the_recovering_leg_and_progress() {
    let t = Tree::new();
    t.array(
        "md126",
        Some("vol2"),
        "active",
        2,
        1,
        "recover",
        "1048576 / 4194304",
        &[
            ("nvme0n1", "in_sync", "0"),
            ("nvme3n1", "spare", "1"),
            ("nvme4n1", "spare", "none"),
            ("nvme1n1", "faulty", "none"),
        ],
    );
    let a = &read_arrays(t.root()).expect("read")[0];
    assert_eq!(a.sync_action, SyncAction::Recover);
    assert_eq!(
        a.sync,
        Some(SyncProgress {
            done: 1_048_576,
            total: 4_194_304
        })
    );
    assert_eq!(a.sync.map(|s| s.permille()), Some(250));
    // A spare with a slot is being recovered; one without a slot waits.
    assert_eq!(
        a.leg("nvme3n1").map(|l| l.state()),
        Some(LegState::Recovering)
    );
    assert_eq!(a.leg("nvme4n1").map(|l| l.state()), Some(LegState::Spare));
    assert_eq!(a.leg("nvme1n1").map(|l| l.state()), Some(LegState::Faulty));
}

#[test]
fn arrays_without_names_inactive_or_half_set_up() {
    let t = Tree::new();
    // Assembled by hand, no /dev/md link.
    t.array("md1", None, "inactive", 0, 0, "idle", "none", &[]);
    // A block device md without its md directory is skipped.
    std::fs::create_dir_all(t.root().join("sys/block/md2")).expect("mkdir");
    // Not md at all.
    std::fs::create_dir_all(t.root().join("sys/block/nvme0n1")).expect("mkdir");
    // A delayed resync has no progress yet.
    t.array(
        "md3",
        Some("vol3"),
        "active",
        2,
        0,
        "resync",
        "delayed",
        &[("nvme5n1", "in_sync", "0"), ("nvme6n1", "in_sync", "1")],
    );
    // Just stopped (mdadm --stop) while its device lingers: md prints an empty
    // raid_disks. Found on Linux 6.1, where it failed every pass of the agent.
    t.array("md4", None, "clear", 0, 0, "idle", "none", &[]);
    t.file("sys/block/md4/md/raid_disks", "\n");
    let arrays = read_arrays(t.root()).expect("read");
    let devices: Vec<&str> = arrays.iter().map(|a| a.device.as_str()).collect();
    assert_eq!(devices, ["md1", "md3", "md4"]);
    assert_eq!(arrays[2].raid_disks, 0);
    assert!(!arrays[2].array_state.is_running());
    assert_eq!(arrays[0].name, None);
    assert_eq!(arrays[0].array_state, ArrayState::Inactive);
    assert!(!arrays[0].array_state.is_running());
    assert_eq!(arrays[1].sync_action, SyncAction::Resync);
    assert_eq!(arrays[1].sync, None);
}

#[test]
fn a_garbled_sync_completed_is_an_error_naming_the_file() {
    let t = Tree::new();
    t.array(
        "md127",
        Some("v"),
        "active",
        2,
        0,
        "recover",
        "12 of 40",
        &[],
    );
    let err = read_arrays(t.root()).expect_err("bad progress");
    assert!(err.to_string().contains("sync_completed"), "{err}");
}

#[test]
fn legs_match_controllers_through_the_block_device() {
    let t = Tree::new();
    t.controller(
        "nvme0",
        NQN_A,
        "traddr=10.0.0.1,trsvcid=4420",
        "live",
        &[("nvme0n1", UUID_A)],
    );
    t.controller(
        "nvme1",
        NQN_B,
        "traddr=10.0.0.2,trsvcid=4420",
        "connecting",
        &[("nvme1n1", UUID_B)],
    );
    t.array(
        "md127",
        Some("vol1"),
        "active",
        2,
        1,
        "idle",
        "none",
        &[("nvme0n1", "in_sync", "0"), ("nvme1n1", "faulty", "none")],
    );
    let snap = read_snapshot(t.root()).expect("read");
    let a = snap.array_named("vol1").expect("named");
    let faulty = a.leg("nvme1n1").expect("leg");
    let ctrl = snap.controller_of(&faulty.device).expect("controller");
    assert_eq!(ctrl.subsysnqn.as_str(), NQN_B);
    assert_eq!(ctrl.state, CtrlState::Connecting);
    assert!(snap.array_named("nope").is_none());
}
