//! A simulated host for tests: NVMe-oF targets the test makes reachable or not, the
//! controllers `nvme connect` creates to them, and md arrays whose legs go faulty, recover
//! and sync as the test drives them.
//!
//! It answers commands the way the real tools do where the agent depends on it: a second
//! `nvme connect` to a connected target fails with "already connected", `mdadm --remove`
//! of an in-sync leg fails with "Device or resource busy", `mdadm --examine` of a device
//! without a superblock fails with "No md superblock detected", and so on. Superblocks are
//! kept per replica (namespace UUID), not per device name, so an array stopped and
//! assembled again over new controller names is recognised as the kernel would.
//!
//! Every command is logged, so a test can assert that an idempotent step ran once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use gwmon_proto::domain::Nqn;

use super::command::{ConnectSpec, HostCommand, Tool};
use super::model::{
    Address, ArrayName, ArrayState, Controller, CtrlState, Leg, LegFlags, MdArray, Namespace,
    Snapshot, SyncAction, SyncProgress, Transport,
};
use super::{Host, HostError};

/// A remote subsystem with one namespace: one replica as the backend exports it.
#[derive(Debug, Clone)]
struct Target {
    transport: Transport,
    address: Address,
    ns_uuid: String,
    reachable: bool,
}

#[derive(Debug, Clone)]
struct SimController {
    name: String,
    nqn: Nqn,
    transport: Transport,
    address: Address,
    state: CtrlState,
    device: String,
    ns_uuid: String,
    hostnqn: Option<String>,
    fast_io_fail_s: Option<u64>,
}

#[derive(Debug, Clone)]
struct SimLeg {
    device: String,
    /// The replica behind the device when the leg was added.
    ns_uuid: Option<String>,
    flags: LegFlags,
    slot: Option<u32>,
}

#[derive(Debug, Clone)]
struct SimArray {
    device: String,
    raid_disks: u32,
    legs: Vec<SimLeg>,
    /// Progress of the running recovery, when a leg is recovering.
    recovery: Option<SyncProgress>,
}

/// What an md superblock on a replica says.
#[derive(Debug, Clone)]
struct Superblock {
    name: String,
    raid_disks: u32,
}

#[derive(Debug, Default)]
struct Sim {
    targets: BTreeMap<Nqn, Target>,
    controllers: Vec<SimController>,
    next_ctrl: u32,
    arrays: BTreeMap<String, SimArray>,
    next_md: u32,
    superblocks: BTreeMap<String, Superblock>,
    missing_tools: Vec<Tool>,
    /// Failures to inject: the next command whose text contains the key fails with the
    /// given stderr.
    fail_next: Vec<(String, String)>,
    log: Vec<HostCommand>,
    /// Sectors of a fresh recovery, for progress reports.
    recovery_total: u64,
}

/// The simulated host. Clones share one model: the test keeps one to drive it, the agent
/// gets another.
#[derive(Debug, Clone, Default)]
pub struct SimHost {
    inner: Arc<Mutex<Sim>>,
}

fn failed(cmd: &HostCommand, stderr: impl Into<String>) -> HostError {
    HostError::Failed {
        command: cmd.to_string(),
        status: "exit code 1".to_owned(),
        stderr: stderr.into(),
    }
}

impl SimHost {
    pub fn new() -> Self {
        let host = SimHost::default();
        host.lock().recovery_total = 2048;
        host
    }

    fn lock(&self) -> MutexGuard<'_, Sim> {
        // A test that panicked while holding the lock has failed already; the model is
        // still usable for its remaining assertions.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Export a replica: subsystem `nqn` at `traddr:trsvcid` over TCP with one namespace.
    pub fn add_target(&self, nqn: &Nqn, traddr: &str, trsvcid: &str, ns_uuid: &str) {
        self.lock().targets.insert(
            nqn.clone(),
            Target {
                transport: Transport::Tcp,
                address: Address {
                    traddr: traddr.to_owned(),
                    trsvcid: trsvcid.to_owned(),
                },
                ns_uuid: ns_uuid.to_ascii_lowercase(),
                reachable: true,
            },
        );
    }

    /// The target stops answering: its controllers go `connecting` (ctrl-loss-tmo -1 keeps
    /// them). Where a controller has `fast_io_fail_tmo` set, its I/O fails after it and md
    /// fails the leg (failfast). Where it is off, as the kernel has it by default, I/O waits
    /// for the controller: md sees no error, the leg stays in sync and the array's writes
    /// wait with it ([`SimHost::stalled`]).
    pub fn lose_target(&self, nqn: &Nqn) {
        let mut sim = self.lock();
        if let Some(t) = sim.targets.get_mut(nqn) {
            t.reachable = false;
        }
        let devices: Vec<String> = sim
            .controllers
            .iter_mut()
            .filter(|c| &c.nqn == nqn)
            .filter_map(|c| {
                c.state = CtrlState::Connecting;
                c.fast_io_fail_s.is_some().then(|| c.device.clone())
            })
            .collect();
        for array in sim.arrays.values_mut() {
            for leg in array
                .legs
                .iter_mut()
                .filter(|l| devices.contains(&l.device))
            {
                leg.flags.faulty = true;
                leg.flags.in_sync = false;
            }
        }
    }

    /// The target answers again: its controllers reconnect (md legs stay faulty until
    /// re-added, as in the kernel).
    pub fn restore_target(&self, nqn: &Nqn) {
        let mut sim = self.lock();
        if let Some(t) = sim.targets.get_mut(nqn) {
            t.reachable = true;
        }
        for c in sim.controllers.iter_mut().filter(|c| &c.nqn == nqn) {
            c.state = CtrlState::Live;
        }
    }

    /// Set a controller's state directly (`resetting`, `deleting`, ...).
    pub fn set_controller_state(&self, nqn: &Nqn, state: CtrlState) {
        for c in self.lock().controllers.iter_mut().filter(|c| &c.nqn == nqn) {
            c.state = state.clone();
        }
    }

    /// Whether the writes of `array` hang: md still uses a leg whose controller is
    /// reconnecting with `fast_io_fail_tmo` off, so that leg's writes, and with them the
    /// array's, wait until the target comes back.
    pub fn stalled(&self, array: &ArrayName) -> bool {
        let sim = self.lock();
        sim.arrays.get(array.as_str()).is_some_and(|a| {
            a.legs.iter().filter(|l| !l.flags.faulty).any(|l| {
                sim.controllers.iter().any(|c| {
                    c.device == l.device && !c.state.is_live() && c.fast_io_fail_s.is_none()
                })
            })
        })
    }

    /// md fails one leg (say, a media error) while its controller stays live.
    pub fn fail_leg(&self, array: &ArrayName, device: &str) {
        let mut sim = self.lock();
        if let Some(a) = sim.arrays.get_mut(array.as_str()) {
            for leg in a.legs.iter_mut().filter(|l| l.device == device) {
                leg.flags.faulty = true;
                leg.flags.in_sync = false;
            }
        }
    }

    /// Move the running recovery of `array` to `done` of its total.
    pub fn sync_to(&self, array: &ArrayName, done: u64) {
        let mut sim = self.lock();
        if let Some(r) = sim
            .arrays
            .get_mut(array.as_str())
            .and_then(|a| a.recovery.as_mut())
        {
            r.done = done.min(r.total);
        }
    }

    /// Finish the running recovery: recovering legs become in sync.
    pub fn finish_sync(&self, array: &ArrayName) {
        let mut sim = self.lock();
        if let Some(a) = sim.arrays.get_mut(array.as_str()) {
            a.recovery = None;
            for leg in a.legs.iter_mut() {
                if !leg.flags.faulty && leg.slot.is_some() {
                    leg.flags.in_sync = true;
                    leg.flags.spare = false;
                }
            }
        }
    }

    /// The recovery total a newly added leg starts with, in sectors.
    pub fn recovery_total(&self) -> u64 {
        self.lock().recovery_total
    }

    /// Make `tool` absent, as on a host without the package.
    pub fn remove_tool(&self, tool: Tool) {
        self.lock().missing_tools.push(tool);
    }

    /// The next command whose text contains `needle` fails with `stderr`.
    pub fn fail_next(&self, needle: &str, stderr: &str) {
        self.lock()
            .fail_next
            .push((needle.to_owned(), stderr.to_owned()));
    }

    /// Every command run so far, in order.
    pub fn commands(&self) -> Vec<HostCommand> {
        self.lock().log.clone()
    }

    /// How many commands so far match `pred`.
    pub fn count(&self, pred: impl Fn(&HostCommand) -> bool) -> usize {
        self.lock().log.iter().filter(|c| pred(c)).count()
    }

    /// The block device of the live-or-not controller to `nqn`, if connected.
    pub fn device_of(&self, nqn: &Nqn) -> Option<String> {
        self.lock()
            .controllers
            .iter()
            .find(|c| &c.nqn == nqn)
            .map(|c| c.device.clone())
    }
}

impl Sim {
    fn snapshot(&self) -> Snapshot {
        let controllers = self
            .controllers
            .iter()
            .map(|c| Controller {
                name: c.name.clone(),
                subsysnqn: c.nqn.clone(),
                transport: c.transport.clone(),
                address: c.address.clone(),
                state: c.state.clone(),
                hostnqn: c.hostnqn.clone(),
                fast_io_fail_s: c.fast_io_fail_s,
                namespaces: vec![Namespace {
                    device: c.device.clone(),
                    uuid: Some(c.ns_uuid.clone()),
                    nsid: Some(1),
                }],
            })
            .collect();
        let arrays = self
            .arrays
            .iter()
            .map(|(name, a)| {
                let in_sync = a.legs.iter().filter(|l| l.flags.in_sync).count();
                let in_sync = u32::try_from(in_sync).unwrap_or(u32::MAX);
                MdArray {
                    device: a.device.clone(),
                    name: Some(name.clone()),
                    array_state: if in_sync == 0 {
                        ArrayState::Broken
                    } else {
                        ArrayState::Clean
                    },
                    level: "raid1".to_owned(),
                    raid_disks: a.raid_disks,
                    degraded: a.raid_disks.saturating_sub(in_sync),
                    sync_action: if a.recovery.is_some() {
                        SyncAction::Recover
                    } else {
                        SyncAction::Idle
                    },
                    sync: a.recovery,
                    legs: a
                        .legs
                        .iter()
                        .map(|l| Leg {
                            device: l.device.clone(),
                            flags: l.flags.clone(),
                            slot: l.slot,
                        })
                        .collect(),
                }
            })
            .collect();
        Snapshot {
            controllers,
            arrays,
        }
    }

    fn controller_for_device(&self, device: &str) -> Option<&SimController> {
        self.controllers.iter().find(|c| c.device == device)
    }

    fn leg_in_any_array(&self, device: &str) -> bool {
        self.arrays
            .values()
            .any(|a| a.legs.iter().any(|l| l.device == device))
    }

    fn exec(&mut self, cmd: &HostCommand) -> Result<String, HostError> {
        if self.missing_tools.contains(&cmd.tool()) {
            return Err(HostError::ToolMissing {
                program: cmd.tool().program().to_owned(),
                package: cmd.tool().package(),
            });
        }
        let text = cmd.to_string();
        if let Some(i) = self
            .fail_next
            .iter()
            .position(|(n, _)| text.contains(n.as_str()))
        {
            let (_, stderr) = self.fail_next.remove(i);
            return Err(failed(cmd, stderr));
        }
        match cmd {
            HostCommand::NvmeConnect(spec) => self.nvme_connect(cmd, spec),
            HostCommand::NvmeDisconnect { .. } | HostCommand::NvmeDisconnectController { .. } => {
                let hit = |c: &SimController| match cmd {
                    HostCommand::NvmeDisconnect { nqn } => &c.nqn == nqn,
                    HostCommand::NvmeDisconnectController { controller } => &c.name == controller,
                    _ => false,
                };
                let gone: BTreeSet<String> = self
                    .controllers
                    .iter()
                    .filter(|c| hit(c))
                    .map(|c| c.device.clone())
                    .collect();
                self.controllers.retain(|c| !hit(c));
                for a in self.arrays.values_mut() {
                    for leg in a.legs.iter_mut().filter(|l| gone.contains(&l.device)) {
                        leg.flags.faulty = true;
                        leg.flags.in_sync = false;
                    }
                }
                Ok(format!("disconnected {} controller(s)\n", gone.len()))
            }
            HostCommand::MdCreate { name, legs } => self.md_create(cmd, name, legs),
            HostCommand::MdAssemble { name, legs } => self.md_assemble(cmd, name, legs),
            HostCommand::MdAdd { name, leg } => self.md_add(cmd, name, leg),
            HostCommand::MdFail { name, leg } => self.md_fail(cmd, name, leg),
            HostCommand::MdRemove { name, leg } => self.md_remove(cmd, name, leg),
            HostCommand::MdGrowSize { name } => {
                self.array_mut(cmd, name)?;
                Ok(String::new())
            }
            HostCommand::MdStop { name } => {
                if self.arrays.remove(name.as_str()).is_none() {
                    return Err(failed(
                        cmd,
                        format!(
                            "mdadm: error opening {}: No such file or directory",
                            name.dev_path()
                        ),
                    ));
                }
                Ok(format!("mdadm: stopped {}\n", name.dev_path()))
            }
            HostCommand::MdExamine { leg } => {
                let uuid = self.usable_device(cmd, leg)?;
                match self.superblocks.get(&uuid) {
                    Some(sb) => Ok(format!(
                        "/dev/{leg}:\n          Magic : a92b4efc\n           Name : any:{}\n",
                        sb.name
                    )),
                    None => Err(failed(
                        cmd,
                        format!("mdadm: No md superblock detected on /dev/{leg}."),
                    )),
                }
            }
        }
    }

    fn nvme_connect(&mut self, cmd: &HostCommand, spec: &ConnectSpec) -> Result<String, HostError> {
        let target = self
            .targets
            .get(&spec.nqn)
            .filter(|t| t.transport == spec.transport && t.address == spec.address)
            .cloned()
            .ok_or_else(|| {
                failed(
                    cmd,
                    "Failed to write to /dev/nvme-fabrics: Input/output error",
                )
            })?;
        let hostnqn = spec.host_nqn.as_ref().map(ToString::to_string);
        if self.controllers.iter().any(|c| {
            c.nqn == spec.nqn
                && c.address == spec.address
                && c.hostnqn == hostnqn
                && !c.state.is_going()
        }) {
            return Err(failed(
                cmd,
                "Failed to write to /dev/nvme-fabrics: Operation already in progress \
                 (already connected)",
            ));
        }
        if !target.reachable {
            return Err(failed(
                cmd,
                "Failed to write to /dev/nvme-fabrics: Connection refused",
            ));
        }
        let n = self.next_ctrl;
        self.next_ctrl += 1;
        let name = format!("nvme{n}");
        self.controllers.push(SimController {
            device: format!("{name}n1"),
            name: name.clone(),
            nqn: spec.nqn.clone(),
            transport: spec.transport.clone(),
            address: spec.address.clone(),
            state: CtrlState::Live,
            ns_uuid: target.ns_uuid.clone(),
            hostnqn,
            // The kernel's default: off.
            fast_io_fail_s: None,
        });
        Ok(format!("device: {name}\n"))
    }

    /// mdadm's refusal to make or assemble an array whose name is taken.
    fn not_in_use(&self, cmd: &HostCommand, name: &ArrayName) -> Result<(), HostError> {
        if self.arrays.contains_key(name.as_str()) {
            return Err(failed(
                cmd,
                format!("mdadm: {} is already in use.", name.dev_path()),
            ));
        }
        Ok(())
    }

    fn md_create(
        &mut self,
        cmd: &HostCommand,
        name: &ArrayName,
        legs: &[String],
    ) -> Result<String, HostError> {
        self.not_in_use(cmd, name)?;
        let mut sim_legs = Vec::new();
        for (slot, device) in legs.iter().enumerate() {
            let uuid = self.usable_device(cmd, device)?;
            sim_legs.push(SimLeg {
                device: device.clone(),
                ns_uuid: Some(uuid),
                flags: LegFlags {
                    in_sync: true,
                    failfast: true,
                    ..LegFlags::default()
                },
                slot: u32::try_from(slot).ok(),
            });
        }
        let raid_disks = u32::try_from(legs.len()).unwrap_or(u32::MAX);
        for leg in &sim_legs {
            if let Some(u) = &leg.ns_uuid {
                self.superblocks.insert(
                    u.clone(),
                    Superblock {
                        name: name.to_string(),
                        raid_disks,
                    },
                );
            }
        }
        let device = self.new_md();
        self.arrays.insert(
            name.to_string(),
            SimArray {
                device,
                raid_disks,
                legs: sim_legs,
                recovery: None,
            },
        );
        Ok(String::new())
    }

    fn md_assemble(
        &mut self,
        cmd: &HostCommand,
        name: &ArrayName,
        legs: &[String],
    ) -> Result<String, HostError> {
        self.not_in_use(cmd, name)?;
        let mut sim_legs = Vec::new();
        let mut raid_disks = 0;
        for device in legs {
            let uuid = self.usable_device(cmd, device)?;
            let Some(sb) = self
                .superblocks
                .get(&uuid)
                .filter(|sb| sb.name == name.as_str())
            else {
                return Err(failed(
                    cmd,
                    format!("mdadm: no RAID superblock on /dev/{device}"),
                ));
            };
            raid_disks = raid_disks.max(sb.raid_disks);
            sim_legs.push(SimLeg {
                device: device.clone(),
                ns_uuid: Some(uuid),
                flags: LegFlags {
                    in_sync: true,
                    failfast: true,
                    ..LegFlags::default()
                },
                slot: None,
            });
        }
        if sim_legs.is_empty() {
            return Err(failed(cmd, "mdadm: No devices given"));
        }
        for (i, leg) in sim_legs.iter_mut().enumerate() {
            leg.slot = u32::try_from(i).ok();
        }
        let device = self.new_md();
        self.arrays.insert(
            name.to_string(),
            SimArray {
                device,
                raid_disks,
                legs: sim_legs,
                recovery: None,
            },
        );
        Ok(String::new())
    }

    fn md_add(
        &mut self,
        cmd: &HostCommand,
        name: &ArrayName,
        leg: &str,
    ) -> Result<String, HostError> {
        let uuid = self.usable_device(cmd, leg)?;
        let total = self.recovery_total;
        let array = self.array_mut(cmd, name)?;
        let occupied = array
            .legs
            .iter()
            .filter(|l| !l.flags.faulty && l.slot.is_some())
            .count();
        let free = usize::try_from(array.raid_disks).unwrap_or(0) > occupied;
        // md takes a failed leg out of its slot before it recovers onto a new one.
        let used: BTreeSet<u32> = array
            .legs
            .iter()
            .filter(|l| !l.flags.faulty)
            .filter_map(|l| l.slot)
            .collect();
        for l in array.legs.iter_mut().filter(|l| l.flags.faulty) {
            l.slot = None;
        }
        let slot = if free {
            (0..array.raid_disks).find(|s| !used.contains(s))
        } else {
            None
        };
        array.legs.push(SimLeg {
            device: leg.to_owned(),
            ns_uuid: Some(uuid.clone()),
            flags: LegFlags {
                spare: true,
                failfast: true,
                ..LegFlags::default()
            },
            slot,
        });
        if slot.is_some() {
            array.recovery = Some(SyncProgress { done: 0, total });
        }
        let sb = Superblock {
            name: name.to_string(),
            raid_disks: array.raid_disks,
        };
        self.superblocks.insert(uuid, sb);
        Ok(format!("mdadm: added /dev/{leg}\n"))
    }

    fn md_fail(
        &mut self,
        cmd: &HostCommand,
        name: &ArrayName,
        leg: &str,
    ) -> Result<String, HostError> {
        let array = self.array_mut(cmd, name)?;
        let others_in_sync = array
            .legs
            .iter()
            .filter(|l| l.device != *leg && l.flags.in_sync)
            .count();
        let Some(l) = array.legs.iter_mut().find(|l| l.device == *leg) else {
            return Err(failed(
                cmd,
                format!("mdadm: set device faulty failed for /dev/{leg}: No such device"),
            ));
        };
        if l.flags.in_sync && others_in_sync == 0 {
            return Err(failed(
                cmd,
                format!("mdadm: set /dev/{leg} faulty in {name} failed: Device or resource busy"),
            ));
        }
        l.flags.faulty = true;
        l.flags.in_sync = false;
        Ok(format!(
            "mdadm: set /dev/{leg} faulty in {}\n",
            name.dev_path()
        ))
    }

    fn md_remove(
        &mut self,
        cmd: &HostCommand,
        name: &ArrayName,
        leg: &str,
    ) -> Result<String, HostError> {
        let array = self.array_mut(cmd, name)?;
        let Some(i) = array.legs.iter().position(|l| l.device == *leg) else {
            return Err(failed(
                cmd,
                format!("mdadm: hot remove failed for /dev/{leg}: No such device or address"),
            ));
        };
        let l = &array.legs[i];
        if !(l.flags.faulty || (l.slot.is_none() && !l.flags.in_sync)) {
            return Err(failed(
                cmd,
                format!("mdadm: hot remove failed for /dev/{leg}: Device or resource busy"),
            ));
        }
        array.legs.remove(i);
        Ok(format!(
            "mdadm: hot removed /dev/{leg} from {}\n",
            name.dev_path()
        ))
    }

    /// The namespace UUID behind `/dev/<device>`, or the error mdadm gives for a device
    /// that does not exist.
    fn usable_device(&self, cmd: &HostCommand, device: &str) -> Result<String, HostError> {
        let c = self.controller_for_device(device).ok_or_else(|| {
            failed(
                cmd,
                format!("mdadm: cannot open /dev/{device}: No such file or directory"),
            )
        })?;
        if matches!(
            cmd,
            HostCommand::MdCreate { .. }
                | HostCommand::MdAdd { .. }
                | HostCommand::MdAssemble { .. }
        ) && self.leg_in_any_array(device)
        {
            return Err(failed(
                cmd,
                format!("mdadm: cannot open /dev/{device}: Device or resource busy"),
            ));
        }
        Ok(c.ns_uuid.clone())
    }

    fn array_mut(
        &mut self,
        cmd: &HostCommand,
        name: &ArrayName,
    ) -> Result<&mut SimArray, HostError> {
        self.arrays.get_mut(name.as_str()).ok_or_else(|| {
            failed(
                cmd,
                format!(
                    "mdadm: error opening {}: No such file or directory",
                    name.dev_path()
                ),
            )
        })
    }

    fn new_md(&mut self) -> String {
        let n = 127u32.saturating_sub(self.next_md);
        self.next_md += 1;
        format!("md{n}")
    }
}

impl Host for SimHost {
    fn snapshot(&self) -> Result<Snapshot, HostError> {
        Ok(self.lock().snapshot())
    }

    fn set_fast_io_fail(&self, controller: &str, seconds: u64) -> Result<(), HostError> {
        let mut sim = self.lock();
        let c = sim
            .controllers
            .iter_mut()
            .find(|c| c.name == controller)
            .ok_or_else(|| HostError::Write {
                path: format!("/sys/class/nvme-fabrics/ctl/{controller}/fast_io_fail_tmo").into(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
        c.fast_io_fail_s = Some(seconds);
        Ok(())
    }

    async fn run(&self, cmd: HostCommand) -> Result<String, HostError> {
        let mut sim = self.lock();
        sim.log.push(cmd.clone());
        sim.exec(&cmd)
    }
}
