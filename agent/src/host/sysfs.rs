//! Reading a [`Snapshot`] from a sysfs tree under a root directory (`/` on a real host, a
//! generated tree in a temp dir in tests).
//!
//! Paths read:
//!
//! ```text
//! <root>/sys/class/nvme-fabrics/ctl/nvme*/{subsysnqn,transport,address,state,hostnqn,fast_io_fail_tmo}
//! <root>/sys/class/nvme-fabrics/ctl/nvme*/nvme*n*/{uuid,nsid}   (nvme*c*n* with multipath)
//! <root>/sys/block/md*/md/{array_state,level,raid_disks,degraded,sync_action,sync_completed}
//! <root>/sys/block/md*/md/dev-*/{state,slot,block -> device}
//! <root>/dev/md/<name> -> ../md127
//! ```
//!
//! Entries come and go while they are read (a controller being deleted, an array being
//! stopped): an entry whose directory has vanished by the time its attributes are read is
//! left out, as if the read had happened a moment later. Anything else unreadable fails
//! the whole snapshot, naming the file: a partial view would make a present replica look
//! missing and be reported as such. A controller whose subsystem NQN is not a valid NQN is
//! not one of ours (the cluster hands out valid NQNs only) and is skipped with a warning.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use gwmon_proto::domain::Nqn;

use super::model::{Controller, Leg, MdArray, Namespace, Snapshot, SyncAction};
use super::parse::{self, ParseError};
use super::HostError;

/// Where the controllers are listed, under the root.
pub const CTL_DIR: &str = "sys/class/nvme-fabrics/ctl";
/// Where the block devices (and so the md arrays) are listed, under the root.
pub const BLOCK_DIR: &str = "sys/block";
/// Where md's named device links are, under the root.
pub const MD_NAMES_DIR: &str = "dev/md";

/// Read controllers and arrays under `root`.
pub fn read_snapshot(root: &Path) -> Result<Snapshot, HostError> {
    Ok(Snapshot {
        controllers: read_controllers(root)?,
        arrays: read_arrays(root)?,
    })
}

/// Turn an entry's read error into "skip" when its directory is gone.
fn settle<T>(dir: &Path, r: Result<T, HostError>) -> Result<Option<T>, HostError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(_) if !dir.exists() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The sorted names in `dir`; an absent directory is empty (no nvme-fabrics module loaded,
/// no md arrays ever created).
fn entries(dir: &Path) -> Result<Vec<String>, HostError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(HostError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| HostError::Read {
            path: dir.to_owned(),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort_by_key(|a| natural(a));
    Ok(names)
}

/// Sort key putting `nvme2` before `nvme10`.
fn natural(name: &str) -> (String, u64, String) {
    let split = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let (head, tail) = name.split_at(split);
    let end = tail
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(tail.len());
    let n = tail[..end].parse().unwrap_or(0);
    (head.to_owned(), n, tail[end..].to_owned())
}

fn read(path: PathBuf) -> Result<String, HostError> {
    std::fs::read_to_string(&path).map_err(|source| HostError::Read { path, source })
}

/// An attribute that older kernels or some array levels do not have.
fn read_optional(path: PathBuf) -> Result<Option<String>, HostError> {
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostError::Read { path, source }),
    }
}

fn parse_err(path: PathBuf, e: ParseError) -> HostError {
    HostError::Parse {
        path,
        reason: e.to_string(),
    }
}

/// A controller's directory, `<root>/sys/class/nvme-fabrics/ctl/<name>`.
pub fn controller_dir(root: &Path, name: &str) -> PathBuf {
    root.join(CTL_DIR).join(name)
}

/// Every controller under `<root>/sys/class/nvme-fabrics/ctl`.
pub fn read_controllers(root: &Path) -> Result<Vec<Controller>, HostError> {
    let base = root.join(CTL_DIR);
    let mut out = Vec::new();
    for name in entries(&base)? {
        if !parse::is_controller_name(&name) {
            continue;
        }
        let dir = base.join(&name);
        if let Some(Some(c)) = settle(&dir, read_controller(&dir, &name))? {
            out.push(c);
        }
    }
    Ok(out)
}

/// One controller; `Ok(None)` for one that is not ours to look at.
fn read_controller(dir: &Path, name: &str) -> Result<Option<Controller>, HostError> {
    let nqn_text = read(dir.join("subsysnqn"))?;
    let subsysnqn: Nqn = match nqn_text.trim().parse() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(
                controller = name,
                nqn = nqn_text.trim(),
                "skipping a controller: {e}"
            );
            return Ok(None);
        }
    };
    let transport = parse::transport(&read(dir.join("transport"))?);
    let address = parse::address(&read(dir.join("address"))?)
        .map_err(|e| parse_err(dir.join("address"), e))?;
    let state = parse::ctrl_state(&read(dir.join("state"))?);
    let hostnqn = read_optional(dir.join("hostnqn"))?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let fast_io_fail_s =
        read_optional(dir.join("fast_io_fail_tmo"))?.and_then(|s| parse::fast_io_fail(&s));
    let mut namespaces = Vec::new();
    for entry in entries(dir)? {
        let Some(device) = parse::namespace_device(&entry) else {
            continue;
        };
        let ns_dir = dir.join(&entry);
        let uuid = read_optional(ns_dir.join("uuid"))?.and_then(|s| parse::ns_uuid(&s));
        let nsid = match read_optional(ns_dir.join("nsid"))? {
            Some(s) => {
                Some(parse::number("nsid", &s).map_err(|e| parse_err(ns_dir.join("nsid"), e))?)
            }
            None => None,
        };
        namespaces.push(Namespace { device, uuid, nsid });
    }
    Ok(Some(Controller {
        name: name.to_owned(),
        subsysnqn,
        transport,
        address,
        state,
        hostnqn,
        fast_io_fail_s,
        namespaces,
    }))
}

/// Every md array under `<root>/sys/block`, named from `<root>/dev/md`.
pub fn read_arrays(root: &Path) -> Result<Vec<MdArray>, HostError> {
    let names = read_md_names(root)?;
    let base = root.join(BLOCK_DIR);
    let mut out = Vec::new();
    for device in entries(&base)? {
        if !parse::is_md_name(&device) {
            continue;
        }
        let md = base.join(&device).join("md");
        if !md.is_dir() {
            // An md block device without the md directory is not set up (yet).
            continue;
        }
        if let Some(mut a) = settle(&md, read_array(&md, &device))? {
            a.name = names.get(&device).cloned();
            out.push(a);
        }
    }
    Ok(out)
}

/// `md127 -> name` from the links in `<root>/dev/md`.
fn read_md_names(root: &Path) -> Result<BTreeMap<String, String>, HostError> {
    let dir = root.join(MD_NAMES_DIR);
    let mut names = BTreeMap::new();
    for name in entries(&dir)? {
        let Ok(target) = std::fs::read_link(dir.join(&name)) else {
            // Not a link (or gone): not a name md made.
            continue;
        };
        if let Some(device) = target.file_name().and_then(|f| f.to_str()) {
            names.insert(device.to_owned(), name);
        }
    }
    Ok(names)
}

fn read_array(md: &Path, device: &str) -> Result<MdArray, HostError> {
    let array_state = parse::array_state(&read(md.join("array_state"))?);
    let level = read_optional(md.join("level"))?
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    // md prints nothing here for an array without disks: one just stopped whose device
    // lingers (seen on Linux 6.1 after `mdadm --stop`), or one not set up yet.
    let raid_disks = match read_optional(md.join("raid_disks"))? {
        Some(s) if s.trim().is_empty() => 0,
        _ => number_attr(md, "raid_disks")?.unwrap_or(0),
    };
    let degraded = number_attr(md, "degraded")?.unwrap_or(0);
    let sync_action = read_optional(md.join("sync_action"))?
        .map(|s| parse::sync_action(&s))
        .unwrap_or(SyncAction::Idle);
    let sync = match read_optional(md.join("sync_completed"))? {
        Some(s) => {
            parse::sync_completed(&s).map_err(|e| parse_err(md.join("sync_completed"), e))?
        }
        None => None,
    };
    let mut legs = Vec::new();
    for entry in entries(md)? {
        let Some(suffix) = entry.strip_prefix("dev-") else {
            continue;
        };
        let leg_dir = md.join(&entry);
        if let Some(leg) = settle(&leg_dir, read_leg(&leg_dir, suffix))? {
            legs.push(leg);
        }
    }
    Ok(MdArray {
        device: device.to_owned(),
        name: None,
        array_state,
        level,
        raid_disks,
        degraded,
        sync_action,
        sync,
        legs,
    })
}

fn number_attr(dir: &Path, attr: &'static str) -> Result<Option<u32>, HostError> {
    match read_optional(dir.join(attr))? {
        Some(s) => parse::number(attr, &s)
            .map(Some)
            .map_err(|e| parse_err(dir.join(attr), e)),
        None => Ok(None),
    }
}

fn read_leg(dir: &Path, suffix: &str) -> Result<Leg, HostError> {
    let flags = parse::leg_flags(&read(dir.join("state"))?);
    let slot = match read_optional(dir.join("slot"))? {
        Some(s) => parse::slot(&s).map_err(|e| parse_err(dir.join("slot"), e))?,
        None => None,
    };
    // `block` links to the member's block device; its name is what mdadm and the
    // controllers' namespaces call it. The `dev-` suffix is the same name in practice.
    let device = std::fs::read_link(dir.join("block"))
        .ok()
        .and_then(|t| t.file_name().and_then(|f| f.to_str()).map(str::to_owned))
        .unwrap_or_else(|| suffix.to_owned());
    Ok(Leg {
        device,
        flags,
        slot,
    })
}
