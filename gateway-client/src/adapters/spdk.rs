//! SPDK's NVMe-oF target, driven through its JSON-RPC 2.0 unix socket.
//!
//! This is how Ceph's NVMe-oF gateway drives SPDK, and the adapter follows it:
//!
//! * **Scan**: `nvmf_get_subsystems` lists every subsystem. The discovery subsystem (subtype
//!   `Discovery`) is not served data and is skipped. Each NVMe subsystem gives its
//!   `listen_addresses` (`trtype`, `adrfam`, `traddr`, `trsvcid`) and its `namespaces`
//!   (`nsid`, `bdev_name`, `anagrpid`).
//! * **Apply**: SPDK keeps an ANA state per *listener* and ANA group, so for each entry, for
//!   each listener of its subsystem, `nvmf_subsystem_listener_set_ana_state` with
//!   `{nqn, listen_address, ana_state, anagrpid}` (Ceph's `set_ana_state` does the same per
//!   listener). Every listener SPDK listed gets the state, including ones gwmon cannot report
//!   (RDMA over InfiniBand, Fibre Channel): a path left optimized on any transport is a path
//!   a host may write through. Demotions are sent before promotions, and when two entries
//!   disagree about one group of one subsystem, `inaccessible` wins.
//! * **Nonces**: Ceph derives a namespace's fencing nonce from the RADOS cluster context its
//!   bdev uses, which SPDK does not show in `nvmf_get_subsystems`; the gateway supplies them
//!   as a map from bdev name to nonce ([`SpdkConfig::nonces`]). A namespace whose bdev is not
//!   in the map reports none.
//!
//! The listeners of the last scan are kept for `apply`: the client scans with every beacon, so
//! they are at most a beacon old, and `apply` scans again when it is asked about a subsystem
//! the last scan did not see.
//!
//! **What is skipped and what is an error.** SPDK serves things gwmon cannot represent: a
//! subsystem NQN outside the specification's syntax, a non-IP listener, a namespace without
//! `anagrpid` (its subsystem was created without ANA reporting) or with an ANA group above
//! 128 (SPDK defaults the group to the nsid). Those are left out of the report with a warning,
//! logged once per item. An answer that is not what SPDK sends (a field of the wrong type, a
//! missing `nqn`, nsid 0) fails the scan with an error naming the field.
//!
//! A JSON-RPC error object becomes [`HandlerError::Target`] with SPDK's code and message. In
//! `apply`, an error answer for one listener does not stop the others (SPDK is up, and every
//! state that can be set should be); a connection failure or timeout stops at once, since the
//! following calls would only wait out their own timeouts.

mod jsonrpc;

use super::WarnOnce;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use gwmon_proto::domain::{
    AnaAccess, AnaGroupId, Listener, Namespace, NamespacePlacement, Nonce, Nqn, Subsystem,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::jsonrpc::{RpcClient, RpcError};
use crate::handler::{AnaHandler, AnaStates, HandlerError};

const TARGET: &str = "spdk";
const GET_SUBSYSTEMS: &str = "nvmf_get_subsystems";
const SET_ANA_STATE: &str = "nvmf_subsystem_listener_set_ana_state";
const SET_NS_ANA_GROUP: &str = "nvmf_subsystem_set_ns_ana_group";

/// How to reach SPDK and what to report for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdkConfig {
    /// SPDK's JSON-RPC unix socket (`spdk_tgt -r`, [`SpdkConfig::DEFAULT_SOCKET`] by default).
    pub socket: PathBuf,
    /// How long one call may take, connecting included. SPDK answers these calls in
    /// milliseconds; a call that takes longer means the target is stuck, and the handler's
    /// caller must hear about it rather than wait.
    pub timeout: Duration,
    /// The `tgt_name` of the NVMe-oF target to drive, for an SPDK running several; `None`
    /// drives the default one.
    pub target_name: Option<String>,
    /// The fencing nonce of each bdev, by bdev name (see the module documentation).
    pub nonces: BTreeMap<String, Nonce>,
}

impl SpdkConfig {
    /// Where `spdk_tgt` listens unless told otherwise.
    pub const DEFAULT_SOCKET: &'static str = "/var/tmp/spdk.sock";
    /// The default per-call timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The defaults, on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        SpdkConfig {
            socket: socket.into(),
            timeout: Self::DEFAULT_TIMEOUT,
            target_name: None,
            nonces: BTreeMap::new(),
        }
    }
}

impl Default for SpdkConfig {
    fn default() -> Self {
        Self::new(Self::DEFAULT_SOCKET)
    }
}

/// An [`AnaHandler`] for SPDK (see the module documentation).
pub struct SpdkTarget {
    config: SpdkConfig,
    rpc: RpcClient,
    /// The listeners of each subsystem as of the last scan; `None` before the first.
    listeners: Mutex<Option<BTreeMap<Nqn, Vec<ListenAddress>>>>,
    warned: WarnOnce,
}

impl std::fmt::Debug for SpdkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdkTarget")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SpdkTarget {
    /// A target on `socket` with the default timeout and no nonces.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self::with_config(SpdkConfig::new(socket))
    }

    pub fn with_config(config: SpdkConfig) -> Self {
        SpdkTarget {
            rpc: RpcClient::new(config.socket.clone(), config.timeout),
            config,
            listeners: Mutex::new(None),
            warned: WarnOnce::default(),
        }
    }

    pub fn config(&self) -> &SpdkConfig {
        &self.config
    }

    async fn call(&self, method: &'static str, params: Value) -> Result<Value, CallError> {
        let mut params = params;
        if let (Some(name), Some(obj)) = (&self.config.target_name, params.as_object_mut()) {
            obj.insert("tgt_name".into(), Value::String(name.clone()));
        }
        let params = match &params {
            Value::Object(m) if m.is_empty() => None,
            _ => Some(params),
        };
        self.rpc
            .call(method, params)
            .await
            .map_err(|e| CallError { method, error: e })
    }

    /// Scan SPDK, refresh the cached listeners and return the report.
    async fn scan(&self) -> Result<Vec<Subsystem>, HandlerError> {
        let result = self
            .call(GET_SUBSYSTEMS, Value::Object(Default::default()))
            .await?;
        let scan = self.parse_subsystems(result)?;
        *self.listeners.lock().unwrap_or_else(|e| e.into_inner()) = Some(scan.listeners);
        Ok(scan.subsystems)
    }

    fn parse_subsystems(&self, result: Value) -> Result<Scan, HandlerError> {
        let Value::Array(items) = result else {
            return Err(bad_answer("result", "is not an array".into()));
        };
        let mut scan = Scan::default();
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("result[{i}]");
            let raw: RawSubsystem =
                serde_json::from_value(item).map_err(|e| bad_answer(&at, e.to_string()))?;
            if raw.subtype != "NVMe" {
                continue;
            }
            let nqn = match raw.nqn.parse::<Nqn>() {
                Ok(n) => n,
                Err(e) => {
                    self.warned.warn(format!(
                        "SPDK subsystem {:?} is skipped: its NQN {e}",
                        raw.nqn
                    ));
                    continue;
                }
            };
            if scan.listeners.contains_key(&nqn) {
                return Err(bad_answer(&at, format!("{nqn} is listed twice")));
            }

            let mut addresses = BTreeSet::new();
            let mut listeners = BTreeSet::new();
            for (j, l) in raw.listen_addresses.into_iter().enumerate() {
                let at = format!("{at}.listen_addresses[{j}]");
                let raw: RawListenAddress =
                    serde_json::from_value(l).map_err(|e| bad_answer(&at, e.to_string()))?;
                let address = raw.into_address().map_err(|m| bad_answer(&at, m))?;
                match address.listener() {
                    Ok(l) => {
                        listeners.insert(l);
                    }
                    Err(why) => self.warned.warn(format!(
                        "SPDK listener {address} of {nqn} is not reported: {why}; its ANA \
                         states are still set"
                    )),
                }
                addresses.insert(address);
            }

            let mut namespaces = BTreeMap::new();
            for (j, ns) in raw.namespaces.into_iter().enumerate() {
                let at = format!("{at}.namespaces[{j}]");
                let raw: RawNamespace =
                    serde_json::from_value(ns).map_err(|e| bad_answer(&at, e.to_string()))?;
                let nsid = Namespace::check_nsid(raw.nsid)
                    .map_err(|e| bad_answer(&format!("{at}.nsid"), e.to_string()))?;
                let grp = match raw.anagrpid.map(AnaGroupId::new) {
                    Some(Ok(g)) => g,
                    Some(Err(e)) => {
                        self.warned.warn(format!(
                            "SPDK namespace {nsid} of {nqn} is not reported: its anagrpid {e}"
                        ));
                        continue;
                    }
                    None => {
                        self.warned.warn(format!(
                            "SPDK namespace {nsid} of {nqn} is not reported: it has no \
                             anagrpid (the subsystem was created without ANA reporting)"
                        ));
                        continue;
                    }
                };
                let nonce = raw
                    .bdev_name
                    .as_deref()
                    .and_then(|b| self.config.nonces.get(b))
                    .cloned();
                let namespace = Namespace {
                    nsid,
                    ana_group: grp,
                    nonce,
                };
                if namespaces.insert(nsid, namespace).is_some() {
                    return Err(bad_answer(
                        &format!("{at}.nsid"),
                        format!("{nsid} is listed twice"),
                    ));
                }
            }

            let mut sub = Subsystem {
                nqn: nqn.clone(),
                listeners: listeners.into_iter().collect(),
                namespaces: namespaces.into_values().collect(),
            };
            sub.canonicalize();
            scan.subsystems.push(sub);
            scan.listeners.insert(nqn, addresses.into_iter().collect());
        }
        scan.subsystems.sort();
        Ok(scan)
    }

    /// The listeners of each subsystem in `nqns`, scanning first when the last scan did not
    /// see one of them.
    async fn listeners_of(
        &self,
        nqns: &BTreeSet<&Nqn>,
    ) -> Result<BTreeMap<Nqn, Vec<ListenAddress>>, HandlerError> {
        let known = |cache: &Option<BTreeMap<Nqn, Vec<ListenAddress>>>| {
            cache
                .as_ref()
                .is_some_and(|m| nqns.iter().all(|n| m.contains_key(*n)))
        };
        if !known(&self.listeners.lock().unwrap_or_else(|e| e.into_inner())) {
            self.scan().await?;
        }
        let cache = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cache
            .iter()
            .flatten()
            .filter(|(n, _)| nqns.contains(n))
            .map(|(n, l)| (n.clone(), l.clone()))
            .collect())
    }
}

/// The calls SPDK refused during one apply: the rest still go ahead.
#[derive(Default)]
struct Refusals {
    first_error: Option<CallError>,
    failed: usize,
}

impl Refusals {
    fn note(&mut self, e: CallError) {
        self.failed += 1;
        self.first_error.get_or_insert(e);
    }
}

impl SpdkTarget {
    /// Set each `(subsystem, ANA group)` state on every listener of the subsystem. A call
    /// SPDK refuses is noted; one that gets no answer ends the apply.
    async fn set_states(
        &self,
        states: Vec<((&Nqn, AnaGroupId), AnaAccess)>,
        listeners: &BTreeMap<Nqn, Vec<ListenAddress>>,
        refused: &mut Refusals,
    ) -> Result<(), HandlerError> {
        for ((nqn, grp), access) in states {
            let Some(addresses) = listeners.get(nqn) else {
                self.warned.warn(format!(
                    "SPDK does not serve {nqn}: its ANA states have nowhere to go"
                ));
                continue;
            };
            for address in addresses {
                let params = serde_json::json!({
                    "nqn": nqn.as_str(),
                    "listen_address": address,
                    "ana_state": access.to_string(),
                    "anagrpid": grp.get(),
                });
                match self.call(SET_ANA_STATE, params).await {
                    Ok(_) => {
                        tracing::debug!(%nqn, ana_group = %grp, %access, listener = %address,
                            "set SPDK ANA state");
                    }
                    Err(e) if e.error.is_answer() => {
                        tracing::error!(%nqn, ana_group = %grp, %access, listener = %address,
                            error = %e.error, "SPDK refused the ANA state");
                        refused.note(e);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Move each namespace the placements name, and SPDK has in another ANA group, with
    /// `nvmf_subsystem_set_ns_ana_group` (SPDK pauses the subsystem for the change and
    /// announces it to hosts). Scans only when there are placements.
    async fn place(
        &self,
        placements: &[NamespacePlacement],
        refused: &mut Refusals,
    ) -> Result<(), HandlerError> {
        if placements.is_empty() {
            return Ok(());
        }
        let current: BTreeMap<(Nqn, u32), AnaGroupId> = self
            .scan()
            .await?
            .into_iter()
            .flat_map(|s| {
                let nqn = s.nqn;
                s.namespaces
                    .into_iter()
                    .map(move |n| ((nqn.clone(), n.nsid), n.ana_group))
            })
            .collect();
        for p in placements {
            match current.get(&(p.nqn.clone(), p.nsid)) {
                Some(g) if *g != p.ana_group => {}
                _ => continue,
            }
            let params = serde_json::json!({
                "nqn": p.nqn.as_str(),
                "nsid": p.nsid,
                "anagrpid": p.ana_group.get(),
            });
            match self.call(SET_NS_ANA_GROUP, params).await {
                Ok(_) => tracing::info!(nqn = %p.nqn, nsid = p.nsid, ana_group = %p.ana_group,
                    "moved SPDK namespace"),
                Err(e) if e.error.is_answer() => {
                    tracing::error!(nqn = %p.nqn, nsid = p.nsid, ana_group = %p.ana_group,
                        error = %e.error, "SPDK refused to move the namespace");
                    refused.note(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl AnaHandler for SpdkTarget {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        self.scan().await
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        let mut wanted: BTreeMap<(&Nqn, AnaGroupId), AnaAccess> = BTreeMap::new();
        for e in &states.entries {
            let access = wanted.entry((&e.nqn, e.ana_group)).or_insert(e.access);
            if *access != e.access {
                tracing::warn!(nqn = %e.nqn, ana_group = %e.ana_group,
                    "conflicting ANA states for one group: setting inaccessible");
                *access = AnaAccess::Inaccessible;
            }
        }
        let nqns: BTreeSet<&Nqn> = wanted.keys().map(|(n, _)| *n).collect();
        let listeners = self.listeners_of(&nqns).await?;

        // Demote, then move namespaces, then promote.
        let (demote, promote): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|(_, access)| *access == AnaAccess::Inaccessible);
        let mut refused = Refusals::default();
        self.set_states(demote, &listeners, &mut refused).await?;
        self.place(&states.placements, &mut refused).await?;
        self.set_states(promote, &listeners, &mut refused).await?;
        let Refusals {
            first_error,
            failed,
        } = refused;
        match first_error {
            None => Ok(()),
            Some(e) if failed == 1 => Err(e.into()),
            Some(e) => Err(HandlerError::Target {
                target: TARGET,
                op: SET_ANA_STATE,
                message: format!("{failed} calls failed, the first: {}", e.error),
            }),
        }
    }

    async fn shutdown(&self, reason: &str) {
        // Every group was made inaccessible before this call. SPDK is a separate process the
        // deployment manages (Ceph's container stops both together); we do not kill it.
        tracing::warn!(socket = %self.rpc.socket().display(), %reason,
            "gateway shutting down; SPDK keeps running with every group inaccessible");
    }
}

#[derive(Default)]
struct Scan {
    subsystems: Vec<Subsystem>,
    listeners: BTreeMap<Nqn, Vec<ListenAddress>>,
}

/// A failed call and the method it was for.
struct CallError {
    method: &'static str,
    error: RpcError,
}

impl From<CallError> for HandlerError {
    fn from(e: CallError) -> Self {
        match e.error {
            RpcError::Io { socket, source } => HandlerError::Io {
                target: TARGET,
                op: e.method,
                source: std::io::Error::new(source.kind(), format!("{socket}: {source}")),
            },
            other => HandlerError::Target {
                target: TARGET,
                op: e.method,
                message: other.to_string(),
            },
        }
    }
}

fn bad_answer(at: &str, message: String) -> HandlerError {
    HandlerError::Invalid {
        target: TARGET,
        what: format!("{GET_SUBSYSTEMS} {at}"),
        message,
    }
}

/// One subsystem of `nvmf_get_subsystems`; fields we do not use are ignored. The lists are
/// kept raw so that an error can name the element.
#[derive(Deserialize)]
struct RawSubsystem {
    nqn: String,
    subtype: String,
    #[serde(default)]
    listen_addresses: Vec<Value>,
    #[serde(default)]
    namespaces: Vec<Value>,
}

/// A listen address as SPDK prints it. Older releases print `transport` (a compatibility name
/// for `trtype`) as well; it is used when `trtype` is absent.
#[derive(Deserialize)]
struct RawListenAddress {
    #[serde(default)]
    trtype: Option<String>,
    #[serde(default)]
    transport: Option<String>,
    #[serde(default)]
    adrfam: Option<String>,
    traddr: String,
    #[serde(default)]
    trsvcid: Option<String>,
}

impl RawListenAddress {
    fn into_address(self) -> Result<ListenAddress, String> {
        let trtype = self
            .trtype
            .or(self.transport)
            .ok_or_else(|| "missing field `trtype`".to_owned())?;
        Ok(ListenAddress {
            trtype,
            adrfam: self.adrfam,
            traddr: self.traddr,
            trsvcid: self.trsvcid,
        })
    }
}

#[derive(Deserialize)]
struct RawNamespace {
    nsid: u32,
    #[serde(default)]
    bdev_name: Option<String>,
    #[serde(default)]
    anagrpid: Option<u32>,
}

/// A listener exactly as SPDK names it, to be sent back in `listen_address`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct ListenAddress {
    trtype: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    adrfam: Option<String>,
    traddr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    trsvcid: Option<String>,
}

impl ListenAddress {
    /// The gwmon listener this address is, if it is an IP address and port.
    fn listener(&self) -> Result<Listener, &'static str> {
        let address: IpAddr = match (self.adrfam.as_deref(), self.traddr.parse::<IpAddr>()) {
            (Some(f), Ok(a @ IpAddr::V4(_))) if f.eq_ignore_ascii_case("ipv4") => a,
            (Some(f), Ok(a @ IpAddr::V6(_))) if f.eq_ignore_ascii_case("ipv6") => a,
            (Some(f), _) if f.eq_ignore_ascii_case("ipv4") || f.eq_ignore_ascii_case("ipv6") => {
                return Err("traddr is not an address of its adrfam")
            }
            _ => return Err("not an IP listener"),
        };
        match self.trsvcid.as_deref().map(str::parse::<u16>) {
            Some(Ok(port)) if port != 0 => Ok(Listener { address, port }),
            _ => Err("trsvcid is not a port number 1..=65535"),
        }
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}:{}",
            self.trtype,
            self.adrfam.as_deref().unwrap_or("-"),
            self.traddr,
            self.trsvcid.as_deref().unwrap_or("-")
        )
    }
}
