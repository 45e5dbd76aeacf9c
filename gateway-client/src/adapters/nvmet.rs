//! The Linux kernel NVMe-oF target (`nvmet`), driven through configfs.
//!
//! Paths, relative to the configfs root (`/sys/kernel/config/nvmet` by default):
//!
//! | path | what we do with it |
//! |---|---|
//! | `subsystems/<nqn>/` | one subsystem; the directory name is its NQN |
//! | `subsystems/<nqn>/namespaces/<nsid>/enable` | `1` or `0`; only enabled namespaces are reported |
//! | `subsystems/<nqn>/namespaces/<nsid>/ana_grpid` | the namespace's ANA group, decimal |
//! | `ports/<portid>/addr_trtype` | `tcp`, `rdma`, `fc`, `loop` |
//! | `ports/<portid>/addr_adrfam` | `ipv4`, `ipv6`, `ib`, `fc`, or empty |
//! | `ports/<portid>/addr_traddr`, `addr_trsvcid` | the address and the port (TCP port for `tcp`) |
//! | `ports/<portid>/subsystems/<nqn>` | a symlink: the subsystem is exported on this port |
//! | `ports/<portid>/ana_groups/<grpid>/` | an ANA group on this port; `mkdir` creates it, group 1 always exists |
//! | `ports/<portid>/ana_groups/<grpid>/ana_state` | `optimized`, `non-optimized`, `inaccessible`, `persistent-loss` or `change` |
//!
//! **Why the ANA state is per port.** In nvmet the state lives in `port->ana_state[grpid]`:
//! the ANA log page a host reads through a port lists each group once, with that port's state,
//! whatever subsystem the controller belongs to. Two subsystems exported on the same port that
//! have namespaces in the same ANA group therefore share one state. gwmon gives every subsystem
//! of a gateway group the same ANA states, so they agree in practice; when the entries given to
//! [`AnaHandler::apply`] disagree for one `(port, group)`, `inaccessible` wins (the safe choice:
//! a path wrongly inaccessible costs a failover on the host, a path wrongly optimized on two
//! gateways can corrupt data) and a warning is logged.
//!
//! A group created with `mkdir` starts out inaccessible in the kernel (every group but 1 is
//! initialised inaccessible when the port is made), so creating one never briefly exposes an
//! optimized path. Group 1, though, starts *optimized* on every new port, on every gateway:
//! until the first `apply` reaches a fresh port, hosts see group 1 optimized there. Writes are skipped when `ana_state` already holds the wanted value, so
//! applying the same states again does not make the kernel send ANA change events to hosts.
//! Demotions are written before promotions.
//!
//! **What is skipped and what is an error.** The kernel accepts things gwmon cannot represent:
//! a subsystem named `testnqn` (not a valid NQN), a port on Fibre Channel or the loop
//! transport (not an IP listener). Those are skipped with a warning, logged once per item, and
//! the rest is reported. A value the kernel never produces (a non-numeric `ana_grpid` or
//! namespace directory, an `enable` other than 0 or 1, a missing attribute) means the tree is
//! not what we think it is, and the scan fails with an error naming the file.
//!
//! **Ports.** A gateway owns every port of the target unless [`NvmetConfig::ports`] names
//! some: then several gateways can share one kernel target (one host, or a test), each
//! scanning and writing only its own ports.
//!
//! nvmet has no per-namespace fencing nonce; [`NvmetConfig::nonce`] lets the gateway supply
//! one (for example the identity of its storage client) that is reported for every namespace.

use super::WarnOnce;
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gwmon_proto::domain::{
    AnaAccess, AnaGroupId, Listener, Namespace, NamespacePlacement, Nonce, Nqn, Subsystem,
};

use crate::handler::{AnaHandler, AnaStates, HandlerError};

const TARGET: &str = "nvmet";

/// How to reach the kernel target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmetConfig {
    /// The nvmet directory in configfs: [`NvmetConfig::DEFAULT_ROOT`] on a real host, a
    /// generated tree in tests.
    pub root: PathBuf,
    /// Reported as the fencing nonce of every namespace; `None` reports none.
    pub nonce: Option<Nonce>,
    /// The nvmet ports (configfs directory names under `ports/`) this gateway owns; `None`
    /// owns every port. Several gateways can share one kernel target this way, each
    /// serving through its own ports: the others' ports are never scanned nor written.
    pub ports: Option<BTreeSet<String>>,
}

impl NvmetConfig {
    /// Where the kernel mounts nvmet's configfs tree.
    pub const DEFAULT_ROOT: &'static str = "/sys/kernel/config/nvmet";
}

impl Default for NvmetConfig {
    fn default() -> Self {
        NvmetConfig {
            root: PathBuf::from(Self::DEFAULT_ROOT),
            nonce: None,
            ports: None,
        }
    }
}

/// An [`AnaHandler`] for the Linux kernel target (see the module documentation).
#[derive(Debug, Clone)]
pub struct NvmetTarget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NvmetConfig,
    warned: WarnOnce,
    /// The ticket of the newest apply written; configfs writes hold it. The writes run on
    /// blocking threads that outlive a call the client gave up on, and a late write whose
    /// ticket is older than one already made is dropped: it can never undo a demotion.
    newest: std::sync::Mutex<u64>,
    /// Handed out to each apply in call order.
    tickets: std::sync::atomic::AtomicU64,
}

impl NvmetTarget {
    /// A target under `root`, reporting no nonces.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_config(NvmetConfig {
            root: root.into(),
            ..NvmetConfig::default()
        })
    }

    pub fn with_config(config: NvmetConfig) -> Self {
        NvmetTarget {
            inner: Arc::new(Inner {
                config,
                warned: WarnOnce::default(),
                newest: std::sync::Mutex::new(0),
                tickets: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    pub fn config(&self) -> &NvmetConfig {
        &self.inner.config
    }

    /// Run blocking configfs work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Inner) -> Result<T, HandlerError> + Send + 'static,
    ) -> Result<T, HandlerError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| HandlerError::Target {
                target: TARGET,
                op,
                message: format!("the configfs task failed: {e}"),
            })?
    }
}

impl NvmetTarget {
    /// Run a configfs write on a blocking thread, in call order: it takes a ticket now, and
    /// is dropped if a write with a later ticket was made first (a call the client gave up
    /// on must never land after a later one).
    async fn write_in_order(
        &self,
        op: &'static str,
        write: impl FnOnce(&Inner) -> Result<(), HandlerError> + Send + 'static,
    ) -> Result<(), HandlerError> {
        let ticket = self
            .inner
            .tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        self.blocking(op, move |inner| {
            let mut newest = inner.newest.lock().unwrap_or_else(|e| e.into_inner());
            if ticket < *newest {
                return Ok(());
            }
            *newest = ticket;
            write(inner)
        })
        .await
    }
}

impl AnaHandler for NvmetTarget {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        self.blocking("scan", Inner::scan).await
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        let states = states.clone();
        self.write_in_order("apply ANA states", move |inner| inner.apply(&states))
            .await
    }

    /// Every ANA group of every port inaccessible, including groups no subsystem names any
    /// more: nvmet keeps one state per port and group, and a crashed predecessor may have
    /// left any of them optimized. That covers every group the client `told` it about.
    async fn demote_all(&self, _told: &AnaStates) -> Result<(), HandlerError> {
        self.write_in_order("demote every ANA group", Inner::demote_all)
            .await
    }

    async fn shutdown(&self, reason: &str) {
        // Every group was made inaccessible before this call; the kernel target outlives the
        // gateway process, and stopping it is the host's business, not ours.
        tracing::warn!(root = %self.inner.config.root.display(), %reason,
            "gateway shutting down; nvmet ports stay configured with every group inaccessible");
    }
}

/// One port as configfs shows it.
struct Port {
    id: String,
    dir: PathBuf,
    /// The names of the subsystems exported on the port (directory entries, not yet NQNs).
    subsystems: BTreeSet<String>,
}

impl Inner {
    fn root(&self) -> &Path {
        &self.config.root
    }

    fn scan(&self) -> Result<Vec<Subsystem>, HandlerError> {
        const OP: &str = "scan";
        let mut listeners: BTreeMap<String, BTreeSet<Listener>> = BTreeMap::new();
        for port in self.ports(OP)? {
            let Some(listener) = self.listener(&port, OP)? else {
                continue;
            };
            for name in &port.subsystems {
                listeners
                    .entry(name.clone())
                    .or_default()
                    .insert(listener.clone());
            }
        }

        let mut out = Vec::new();
        let dir = self.root().join("subsystems");
        for name in dir_names(&dir, OP)? {
            let nqn = match name.parse::<Nqn>() {
                Ok(n) => n,
                Err(e) => {
                    self.warned.warn(format!(
                        "nvmet subsystem {name:?} is skipped: its name {e}; gwmon manages \
                         subsystems with valid NQNs only"
                    ));
                    continue;
                }
            };
            let namespaces = self.namespaces(&dir.join(&name), OP)?;
            let mut sub = Subsystem {
                nqn,
                listeners: listeners
                    .remove(&name)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
                namespaces,
            };
            sub.canonicalize();
            out.push(sub);
        }
        out.sort();
        Ok(out)
    }

    /// The enabled namespaces of one subsystem directory.
    fn namespaces(&self, subsys: &Path, op: &'static str) -> Result<Vec<Namespace>, HandlerError> {
        let dir = subsys.join("namespaces");
        let mut out = Vec::new();
        for name in dir_names(&dir, op)? {
            let ns_dir = dir.join(&name);
            let nsid = name
                .parse::<u32>()
                .map_err(|e| e.to_string())
                .and_then(|n| Namespace::check_nsid(n).map_err(|e| e.to_string()))
                .map_err(|message| invalid(&ns_dir, message))?;
            let enable_path = ns_dir.join("enable");
            match read_attr(&enable_path, op)?.as_str() {
                "1" => {}
                "0" => continue,
                other => {
                    return Err(invalid(
                        &enable_path,
                        format!("is {other:?}, the kernel writes 0 or 1"),
                    ))
                }
            }
            let grp_path = ns_dir.join("ana_grpid");
            let grp = read_attr(&grp_path, op)?;
            let ana_group = grp
                .parse::<u32>()
                .map_err(|_| format!("is {grp:?}, not a decimal ANA group id"))
                .and_then(|n| AnaGroupId::new(n).map_err(|e| format!("ANA group id {e}")))
                .map_err(|message| invalid(&grp_path, message))?;
            out.push(Namespace {
                nsid,
                ana_group,
                nonce: self.config.nonce.clone(),
            });
        }
        Ok(out)
    }

    fn ports(&self, op: &'static str) -> Result<Vec<Port>, HandlerError> {
        // Every scan and apply starts here, so this is where a host without nvmet is told so.
        if let Err(e) = std::fs::metadata(self.root()) {
            return Err(HandlerError::Io {
                target: TARGET,
                op,
                source: std::io::Error::new(
                    e.kind(),
                    format!(
                        "{}: {e} (is the nvmet module loaded and configfs mounted?)",
                        self.root().display()
                    ),
                ),
            });
        }
        let dir = self.root().join("ports");
        let mut out = Vec::new();
        let names = dir_names(&dir, op)?;
        if let Some(wanted) = &self.config.ports {
            for missing in wanted.iter().filter(|p| !names.contains(p)) {
                self.warned.warn(format!(
                    "nvmet port {missing} is this gateway's but {} has no such port",
                    dir.display()
                ));
            }
        }
        let owned = |id: &String| self.config.ports.as_ref().is_none_or(|p| p.contains(id));
        for id in names.into_iter().filter(owned) {
            let port_dir = dir.join(&id);
            let subsystems = dir_names(&port_dir.join("subsystems"), op)?
                .into_iter()
                .collect();
            out.push(Port {
                id,
                dir: port_dir,
                subsystems,
            });
        }
        Ok(out)
    }

    /// The port's address as a gwmon listener, or `None` (with a warning once) when it is
    /// not an IP address and port: Fibre Channel, loop, InfiniBand, or not yet configured.
    fn listener(&self, port: &Port, op: &'static str) -> Result<Option<Listener>, HandlerError> {
        let attr = |name: &str| read_attr(&port.dir.join(name), op);
        let (trtype, adrfam) = (attr("addr_trtype")?, attr("addr_adrfam")?);
        let (traddr, trsvcid) = (attr("addr_traddr")?, attr("addr_trsvcid")?);
        let skip = |why: String| {
            self.warned.warn(format!(
                "nvmet port {} ({trtype} {adrfam} {traddr:?} {trsvcid:?}) is not reported as a \
                 listener: {why}",
                port.id
            ));
            Ok(None)
        };
        let address = match (adrfam.as_str(), traddr.parse::<IpAddr>()) {
            ("ipv4", Ok(a @ IpAddr::V4(_))) | ("ipv6", Ok(a @ IpAddr::V6(_))) => a,
            ("ipv4" | "ipv6", _) => return skip(format!("addr_traddr is not an {adrfam} address")),
            _ => return skip("not an IP transport".into()),
        };
        match trsvcid.parse::<u16>() {
            Ok(p) if p != 0 => Ok(Some(Listener { address, port: p })),
            _ => skip("addr_trsvcid is not a port number 1..=65535".into()),
        }
    }

    fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        const OP: &str = "apply ANA states";
        let ports = self.ports(OP)?;

        // The state of each (port, group): ports are shared by subsystems, so several entries
        // can land on one (see the module documentation).
        let mut wanted: BTreeMap<(&str, AnaGroupId), (AnaAccess, &Nqn)> = BTreeMap::new();
        for e in &states.entries {
            let mut exported = false;
            for port in ports
                .iter()
                .filter(|p| p.subsystems.contains(e.nqn.as_str()))
            {
                exported = true;
                let key = (port.id.as_str(), e.ana_group);
                match wanted.get_mut(&key) {
                    None => {
                        wanted.insert(key, (e.access, &e.nqn));
                    }
                    Some((access, by)) if *access != e.access => {
                        tracing::warn!(
                            port = %port.id, ana_group = %e.ana_group,
                            "{} wants {} and {} wants {}, but nvmet keeps one ANA state per \
                             port and group: setting inaccessible",
                            by, access, e.nqn, e.access
                        );
                        *access = AnaAccess::Inaccessible;
                    }
                    Some(_) => {}
                }
            }
            if !exported {
                self.warned.warn(format!(
                    "no nvmet port exports {}: its ANA states have nowhere to go",
                    e.nqn
                ));
            }
        }

        let dirs: BTreeMap<&str, &Path> = ports
            .iter()
            .map(|p| (p.id.as_str(), p.dir.as_path()))
            .collect();
        // Demote, then move namespaces, then promote (stable: within each half, port then
        // group order).
        let (demote, promote): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|(_, (access, _))| *access == AnaAccess::Inaccessible);

        let mut failures = Failures::default();
        set_states(&dirs, demote, &mut failures);
        for p in &states.placements {
            if let Err(e) = self.place(p, OP) {
                tracing::error!(nqn = %p.nqn, nsid = p.nsid, ana_group = %p.ana_group, error = %e,
                    "could not move the nvmet namespace");
                failures.note(e);
            }
        }
        set_states(&dirs, promote, &mut failures);
        let Failures {
            first_error,
            failed,
        } = failures;
        match first_error {
            None => Ok(()),
            Some(e) if failed == 1 => Err(e),
            Some(e) => Err(HandlerError::Target {
                target: TARGET,
                op: OP,
                message: format!("{failed} ANA state writes failed, the first: {e}"),
            }),
        }
    }
}

impl Inner {
    /// Put a namespace in the ANA group `p` names (its `ana_grpid`, which the kernel lets
    /// change while the namespace is enabled, and announces to hosts with an ANA change
    /// event). A namespace this target does not have is left alone: the monitors place
    /// every namespace of the group's subsystems, and this gateway may serve fewer.
    fn place(&self, p: &NamespacePlacement, op: &'static str) -> Result<(), HandlerError> {
        let path = self
            .root()
            .join("subsystems")
            .join(p.nqn.as_str())
            .join("namespaces")
            .join(p.nsid.to_string())
            .join("ana_grpid");
        let current = match std::fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(op, &path, e)),
        };
        let want = p.ana_group.to_string();
        if current.trim() == want {
            return Ok(());
        }
        std::fs::write(&path, format!("{want}\n")).map_err(|e| io_error(op, &path, e))?;
        tracing::info!(path = %path.display(), ana_group = %want, "moved nvmet namespace");
        Ok(())
    }

    fn demote_all(&self) -> Result<(), HandlerError> {
        const OP: &str = "demote every ANA group";
        let mut first_error = None;
        for port in self.ports(OP)? {
            let groups = port.dir.join("ana_groups");
            let names = match dir_names(&groups, OP) {
                Ok(n) => n,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            for name in names {
                let Ok(grp) = name
                    .parse::<u32>()
                    .map_err(|_| ())
                    .and_then(|n| AnaGroupId::new(n).map_err(|_| ()))
                else {
                    continue;
                };
                if let Err(e) = set_state(&port.dir, grp, AnaAccess::Inaccessible, OP) {
                    tracing::error!(port = %port.id, ana_group = %grp, error = %e,
                        "could not make the nvmet ANA group inaccessible");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The writes of one apply that failed: the rest still go ahead.
#[derive(Default)]
struct Failures {
    first_error: Option<HandlerError>,
    failed: usize,
}

impl Failures {
    fn note(&mut self, e: HandlerError) {
        self.failed += 1;
        self.first_error.get_or_insert(e);
    }
}

/// One `(port, group)` state to write, and the subsystem that asked for it.
type PortState<'a> = ((&'a str, AnaGroupId), (AnaAccess, &'a Nqn));

/// Set each `(port, group)` state of `states` on its port directory.
fn set_states(dirs: &BTreeMap<&str, &Path>, states: Vec<PortState<'_>>, failures: &mut Failures) {
    const OP: &str = "apply ANA states";
    for ((port, grp), (access, _)) in states {
        let Some(port_dir) = dirs.get(port) else {
            continue;
        };
        if let Err(e) = set_state(port_dir, grp, access, OP) {
            tracing::error!(%port, ana_group = %grp, %access, error = %e,
                "could not set the nvmet ANA state");
            failures.note(e);
        }
    }
}

/// Make `ports/<port>/ana_groups/<grp>` exist and hold `access`, writing only on a change.
fn set_state(
    port_dir: &Path,
    grp: AnaGroupId,
    access: AnaAccess,
    op: &'static str,
) -> Result<(), HandlerError> {
    let grp_dir = port_dir.join("ana_groups").join(grp.to_string());
    match std::fs::create_dir(&grp_dir) {
        Ok(()) => tracing::info!(dir = %grp_dir.display(), "created nvmet ANA group"),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(op, &grp_dir, e)),
    }
    let state_path = grp_dir.join("ana_state");
    let want = access.to_string();
    match std::fs::read_to_string(&state_path) {
        Ok(current) if current.trim() == want => return Ok(()),
        Ok(_) => {}
        // Configfs creates the attribute with the group; a plain directory (a test tree)
        // does not, and the write below creates it.
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(op, &state_path, e)),
    }
    std::fs::write(&state_path, format!("{want}\n")).map_err(|e| io_error(op, &state_path, e))?;
    tracing::info!(path = %state_path.display(), state = %want, "set nvmet ANA state");
    Ok(())
}

/// The names of the entries of a configfs directory, sorted. Names that are not UTF-8 are
/// not something the kernel target creates and are refused.
fn dir_names(dir: &Path, op: &'static str) -> Result<Vec<String>, HandlerError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(op, dir, e))? {
        let entry = entry.map_err(|e| io_error(op, dir, e))?;
        let name = entry.file_name();
        let name = name
            .into_string()
            .map_err(|n| invalid(&dir.join(&n), "is not a UTF-8 name".into()))?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// One configfs attribute, without the trailing newline the kernel prints.
fn read_attr(path: &Path, op: &'static str) -> Result<String, HandlerError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| io_error(op, path, e))
}

fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> HandlerError {
    HandlerError::Io {
        target: TARGET,
        op,
        source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    }
}

fn invalid(path: &Path, message: String) -> HandlerError {
    HandlerError::Invalid {
        target: TARGET,
        what: path.display().to_string(),
        message,
    }
}
