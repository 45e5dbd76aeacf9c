//! What the agent sees on the host: NVMe-oF controllers and md arrays, as typed values.
//!
//! These are snapshots, read whole each period. The kernel's names (`nvme3`, `md127`,
//! `dev-nvme3n1`) are kept as they are because they are what `nvme` and `mdadm` take; the
//! replica a device belongs to is found by matching, never assumed from a name.

use std::fmt;

use gwmon_proto::domain::Nqn;

/// An NVMe-oF transport, as sysfs spells it in `transport`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Rdma,
    Fc,
    Loop,
    /// A transport this agent does not drive, kept so a controller is still listed.
    Other(String),
}

impl Transport {
    pub fn as_str(&self) -> &str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Rdma => "rdma",
            Transport::Fc => "fc",
            Transport::Loop => "loop",
            Transport::Other(s) => s,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A controller's `state`. The kernel's states, one for one, because each means something
/// different to the agent: `connecting` and `resetting` may come back (with ctrl-loss-tmo
/// -1 they keep trying forever), `deleting` and `dead` will not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlState {
    New,
    Live,
    Resetting,
    Connecting,
    /// `deleting` and `deleting (no IO)`.
    Deleting,
    Dead,
    /// A state string from a newer kernel; treated as not live.
    Other(String),
}

impl CtrlState {
    /// Whether I/O can flow through this controller now.
    pub fn is_live(&self) -> bool {
        matches!(self, CtrlState::Live)
    }

    /// Whether the controller is on its way out: it must not be counted as a connection
    /// to reuse, and a new `nvme connect` to the same target is right.
    pub fn is_going(&self) -> bool {
        matches!(self, CtrlState::Deleting | CtrlState::Dead)
    }

    pub fn as_str(&self) -> &str {
        match self {
            CtrlState::New => "new",
            CtrlState::Live => "live",
            CtrlState::Resetting => "resetting",
            CtrlState::Connecting => "connecting",
            CtrlState::Deleting => "deleting",
            CtrlState::Dead => "dead",
            CtrlState::Other(s) => s,
        }
    }
}

impl fmt::Display for CtrlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a controller is connected: sysfs `address`, `traddr=...,trsvcid=...[,src_addr=...]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub traddr: String,
    /// Empty for transports without service ids (fc, loop).
    pub trsvcid: String,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.traddr, self.trsvcid)
    }
}

/// A namespace block device reached through a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The block device name, `nvme3n1`. With native multipath sysfs lists the path device
    /// `nvme3c5n1` under the controller; this is already the head device it belongs to.
    pub device: String,
    /// The namespace UUID (`uuid`), lower case; how a replica's device is recognised.
    pub uuid: Option<String>,
    pub nsid: Option<u32>,
}

/// One entry of `/sys/class/nvme-fabrics/ctl/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// `nvme3`: what `nvme disconnect -d` would take.
    pub name: String,
    pub subsysnqn: Nqn,
    pub transport: Transport,
    pub address: Address,
    pub state: CtrlState,
    /// The host NQN it was connected with, when the kernel shows it.
    pub hostnqn: Option<String>,
    /// `fast_io_fail_tmo` in seconds; `None` when it is off (I/O waits for the controller
    /// as long as it reconnects) or the kernel does not show it.
    pub fast_io_fail_s: Option<u64>,
    pub namespaces: Vec<Namespace>,
}

impl Controller {
    /// Whether this controller is a connection to `nqn` at `address` over `transport`.
    pub fn reaches(&self, nqn: &Nqn, transport: &Transport, address: &Address) -> bool {
        &self.subsysnqn == nqn && &self.transport == transport && &self.address == address
    }
}

/// md's `array_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayState {
    Clear,
    Inactive,
    Suspended,
    Readonly,
    ReadAuto,
    Clean,
    Active,
    WritePending,
    ActiveIdle,
    /// RAID1 with every leg gone (kernel 5.x+ reports it).
    Broken,
    Other(String),
}

impl ArrayState {
    /// Whether the array is assembled and serving (read-only included).
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            ArrayState::Readonly
                | ArrayState::ReadAuto
                | ArrayState::Clean
                | ArrayState::Active
                | ArrayState::WritePending
                | ArrayState::ActiveIdle
        )
    }
}

/// md's `sync_action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncAction {
    Idle,
    Resync,
    Recover,
    Check,
    Repair,
    Reshape,
    Frozen,
    Other(String),
}

/// md's `sync_completed`, `done / total` in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncProgress {
    pub done: u64,
    pub total: u64,
}

impl SyncProgress {
    /// Per mille done, clamped: a `done` past `total` (seen at the end of a resync, when
    /// md rounds up to the chunk) is reported as complete, not as more than complete.
    pub fn permille(&self) -> u32 {
        if self.total == 0 {
            return 1000;
        }
        let p = (u128::from(self.done.min(self.total)) * 1000) / u128::from(self.total);
        u32::try_from(p).unwrap_or(1000)
    }
}

/// The flags of `dev-*/state`, comma-separated in sysfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegFlags {
    pub faulty: bool,
    pub in_sync: bool,
    pub write_mostly: bool,
    /// Not in sync and not faulty: a hot spare, or (with a slot) a leg being recovered.
    pub spare: bool,
    pub blocked: bool,
    pub write_error: bool,
    pub want_replacement: bool,
    pub replacement: bool,
    pub failfast: bool,
}

/// What a leg means for the replica behind it, derived from its flags and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// Holds a full, current copy.
    InSync,
    /// Being written by a resync/recovery into its slot.
    Recovering,
    /// A hot spare without a slot: holds nothing yet.
    Spare,
    /// Failed by md: not read from or written to.
    Faulty,
}

/// One `dev-*` entry of an md array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The member block device, `nvme3n1` (the `block` link, else the `dev-` suffix).
    pub device: String,
    pub flags: LegFlags,
    /// Its role in the array (`slot`), `None` for spares and removed-from-slot faulty legs.
    pub slot: Option<u32>,
}

impl Leg {
    pub fn state(&self) -> LegState {
        if self.flags.faulty {
            LegState::Faulty
        } else if self.flags.in_sync {
            LegState::InSync
        } else if self.slot.is_some() {
            LegState::Recovering
        } else {
            LegState::Spare
        }
    }
}

/// One md array, `/sys/block/md*/md/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdArray {
    /// `md127`.
    pub device: String,
    /// The name it is known by under `/dev/md/`, when it has one.
    pub name: Option<String>,
    pub array_state: ArrayState,
    /// `raid1`, `raid0`, ...; empty for an inactive array.
    pub level: String,
    pub raid_disks: u32,
    pub degraded: u32,
    pub sync_action: SyncAction,
    pub sync: Option<SyncProgress>,
    pub legs: Vec<Leg>,
}

impl MdArray {
    pub fn leg(&self, device: &str) -> Option<&Leg> {
        self.legs.iter().find(|l| l.device == device)
    }
}

/// Everything read in one pass: both lists come from the same moment (as near as sysfs
/// allows), so a leg's device can be matched to a controller's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub controllers: Vec<Controller>,
    pub arrays: Vec<MdArray>,
}

impl Snapshot {
    pub fn array_named(&self, name: &str) -> Option<&MdArray> {
        self.arrays.iter().find(|a| a.name.as_deref() == Some(name))
    }

    /// The controller whose namespace is the block device `device`.
    pub fn controller_of(&self, device: &str) -> Option<&Controller> {
        self.controllers
            .iter()
            .find(|c| c.namespaces.iter().any(|n| n.device == device))
    }
}

/// The name of a volume's array: `/dev/md/<name>`, also stored in the md superblock
/// (`--name`) so that assembly on another host finds the same name.
///
/// md keeps at most 32 bytes of name in a 1.2 superblock, `homehost:` prefix included;
/// `--homehost=any` drops the prefix, so 32 is the limit. Only characters that are safe in
/// a path and in udev rules are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArrayName(String);

impl ArrayName {
    pub const MAX_LEN: usize = 32;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `/dev/md/<name>`: the device path `connect` prints and `mdadm` takes.
    pub fn dev_path(&self) -> String {
        format!("/dev/md/{}", self.0)
    }
}

impl std::str::FromStr for ArrayName {
    type Err = gwmon_proto::domain::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use gwmon_proto::domain::Invalid;
        if s.is_empty() {
            return Err(Invalid::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(Invalid::TooLong {
                len: s.len(),
                max: Self::MAX_LEN,
            });
        }
        let allowed = "letters, digits, '-', '_' and '.', not first '.' or '-'";
        for (pos, ch) in s.char_indices() {
            let ok =
                ch.is_ascii_alphanumeric() || ch == '_' || (pos > 0 && (ch == '-' || ch == '.'));
            if !ok {
                return Err(Invalid::BadChar { ch, pos, allowed });
            }
        }
        Ok(ArrayName(s.to_owned()))
    }
}

impl fmt::Display for ArrayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
