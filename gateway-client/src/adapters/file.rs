//! A target that is a JSON file: for demos, tests and trying gwmon without a real target.
//!
//! The file stands in for a target's configuration and its ANA state: a person (or a test)
//! writes the subsystems, gwmon writes the ANA states, and either can read both. It is kept
//! small enough to edit by hand:
//!
//! ```json
//! {
//!   "subsystems": [
//!     {
//!       "nqn": "nqn.2016-06.io.spdk:cnode1",
//!       "listeners": [{ "address": "127.0.0.1", "port": 4420 }],
//!       "namespaces": [{ "nsid": 1, "ana_group": 1, "nonce": "10.0.0.1:0/3141592" }]
//!     }
//!   ],
//!   "ana": { "nqn.2016-06.io.spdk:cnode1": { "1": "optimized", "2": "inaccessible" } },
//!   "shutdown": null,
//!   "fenced_epoch": 8
//! }
//! ```
//!
//! * `subsystems` is what [`AnaHandler::subsystems`] reports. `nonce` may be left out; every
//!   value is checked with the domain types' rules (NQN syntax, nsid 1..=0xFFFFFFFE, ANA group
//!   1..=128, port 1..=65535) and a subsystem, listener or nsid listed twice is refused.
//! * `ana` maps each NQN to its ANA groups (decimal ids as JSON keys) and their state,
//!   `optimized` or `inaccessible`. [`AnaHandler::apply`] writes it; groups it is not told
//!   about keep the state the file has. It also writes a namespace's `ana_group` when the
//!   monitors move the namespace to another ANA group (namespace balancing), in the same
//!   write as the states.
//! * `shutdown` is `null` while the gateway runs, and the reason once it was told to stop.
//! * `fenced_epoch` is written by the monitors' `file` fencer when they fence this gateway
//!   (absent until then): the fencer makes every ANA group inaccessible and records the
//!   group epoch of the fence. From then on `apply` refuses to make any group optimized for
//!   states of that epoch or older ([`HandlerError::Fenced`]; the optimized groups are
//!   written inaccessible instead): such states come from a gateway process that was
//!   paused or cut off and resumed with the map it had before the fence. Inaccessible is
//!   always applied. A gateway restarted after the fence is sent newer epochs and serves
//!   again. The key stays; remove it by hand only if the monitors' map is recreated from
//!   scratch (its epochs start over).
//!
//! Every key may be left out (an empty `{}` is a valid file), and a missing file is a target
//! with no subsystems yet. Unknown keys are refused rather than ignored: the file is edited by
//! hand, and a misspelt `"subsytems"` silently meaning "no subsystems" would be a trap.
//!
//! Writes are read-modify-write of the whole document under an exclusive lock on the
//! sibling file `TARGET.lock` (a `flock`, the same one the file fencer takes; waited for at
//! most [`LOCK_WAIT`]), so a fence can never land between our read and our write and be
//! overwritten. They are atomic: the new document goes to a temporary file in the same
//! directory, is flushed, and is renamed over the old one, so a reader sees the old file or
//! the new one, never half of one, and needs no lock (see [`gwmon_proto::target_file`]). A
//! malformed file is never overwritten: `apply` fails and says why, because replacing it
//! would destroy what a person was in the middle of writing. (An editor does not take the
//! lock, so an edit saved between our read and our rename is lost; acceptable for a demo
//! target.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gwmon_proto::domain::{
    AnaAccess, AnaGroupId, Epoch, Listener, Namespace, Nonce, Nqn, Subsystem,
};
use gwmon_proto::target_file;
use serde::{Deserialize, Serialize};

use crate::handler::{AnaHandler, AnaStates, HandlerError};

const TARGET: &str = "file";

/// The longest wait for the target file's lock. The other holder is a fence, which only
/// rewrites a small file; a lock held longer is a stuck process, and the call fails (the
/// client retries it) rather than hang the gateway's handler.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// An [`AnaHandler`] backed by one JSON file (see the module documentation for the format).
///
/// Cloning is cheap and clones share one lock, so a test can keep a clone to read the
/// states back while the client owns the other.
#[derive(Debug, Clone)]
pub struct FileTarget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Serializes our own read-modify-write cycles (apply and shutdown) with each other,
    /// and holds the ticket of the newest apply written.
    lock: Mutex<u64>,
    /// Handed out to each apply in call order. The write runs on a blocking thread that
    /// outlives a call the client gave up on; a late write whose ticket is older than one
    /// already written is dropped, so it can never undo a later demotion.
    tickets: AtomicU64,
}

impl FileTarget {
    /// A target kept in `path`. Nothing is read or created until the first call.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileTarget {
            inner: Arc::new(Inner {
                path: path.into(),
                lock: Mutex::new(0),
                tickets: AtomicU64::new(0),
            }),
        }
    }

    /// The file this target reads and writes.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The ANA states the file holds now: what the last `apply` calls left there, plus
    /// whatever a person wrote by hand.
    pub async fn ana_states(&self) -> Result<BTreeMap<(Nqn, AnaGroupId), AnaAccess>, HandlerError> {
        let doc = self.read("read ANA states").await?;
        Ok(doc
            .ana
            .into_iter()
            .flat_map(|(nqn, groups)| {
                groups
                    .into_iter()
                    .map(move |(grp, access)| ((nqn.clone(), grp), access.into()))
            })
            .collect())
    }

    /// The reason recorded by [`AnaHandler::shutdown`], if the gateway was told to stop.
    pub async fn shutdown_reason(&self) -> Result<Option<String>, HandlerError> {
        Ok(self.read("read shutdown").await?.shutdown)
    }

    async fn read(&self, op: &'static str) -> Result<Document, HandlerError> {
        let inner = Arc::clone(&self.inner);
        blocking(op, move || read_document(&inner.path, op)).await
    }

    /// Under the target's lock: read the document, change it with `edit`, and replace the
    /// file atomically. Returns what `edit` returned.
    async fn update<T: Send + 'static>(
        &self,
        op: &'static str,
        edit: impl FnOnce(&mut Document) -> T + Send + 'static,
    ) -> Result<T, HandlerError> {
        self.update_in_order(op, None, edit)
            .await?
            .ok_or_else(|| HandlerError::Target {
                target: TARGET,
                op,
                message: "skipped".into(),
            })
    }

    /// [`FileTarget::update`], skipped (`None`) if `ticket` is older than a write already
    /// made.
    async fn update_in_order<T: Send + 'static>(
        &self,
        op: &'static str,
        ticket: Option<u64>,
        edit: impl FnOnce(&mut Document) -> T + Send + 'static,
    ) -> Result<Option<T>, HandlerError> {
        let inner = Arc::clone(&self.inner);
        blocking(op, move || {
            let mut newest = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = ticket {
                if t < *newest {
                    return Ok(None);
                }
                *newest = t;
            }
            let _lock =
                target_file::lock(&inner.path, LOCK_WAIT).map_err(|e| HandlerError::Target {
                    target: TARGET,
                    op,
                    message: e.to_string(),
                })?;
            let mut doc = read_document(&inner.path, op)?;
            let out = edit(&mut doc);
            write_atomically(&inner.path, &doc, op)?;
            Ok(Some(out))
        })
        .await
    }
}

impl AnaHandler for FileTarget {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        let doc = self.read("read subsystems").await?;
        to_domain(doc.subsystems, &self.inner.path)
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        // Two entries for the same group that disagree: keep the safe one.
        let mut wanted: BTreeMap<(Nqn, AnaGroupId), FileAccess> = BTreeMap::new();
        for e in &states.entries {
            let access = FileAccess::from(e.access);
            wanted
                .entry((e.nqn.clone(), e.ana_group))
                .and_modify(|a| *a = (*a).min(access))
                .or_insert(access);
        }
        let placements = states.placements.clone();
        let epoch = states.epoch;
        let ticket = self.inner.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let fenced = self
            .update_in_order("apply ANA states", Some(ticket), move |doc| {
                // States of the fenced epoch or older come from before the fence: serve
                // nothing from them, and say so.
                let fenced = doc.fenced_epoch.filter(|f| epoch <= *f);
                let refused =
                    fenced.filter(|_| wanted.values().any(|a| *a == FileAccess::Optimized));
                for ((nqn, grp), access) in wanted {
                    let access = if fenced.is_some() {
                        FileAccess::Inaccessible
                    } else {
                        access
                    };
                    doc.ana.entry(nqn).or_default().insert(grp, access);
                }
                // One write holds the states and the placements: hosts see both at once.
                for p in &placements {
                    let placed = doc
                        .subsystems
                        .iter_mut()
                        .filter(|s| s.nqn == p.nqn)
                        .flat_map(|s| s.namespaces.iter_mut())
                        .find(|n| n.nsid == p.nsid);
                    if let Some(n) = placed {
                        n.ana_group = p.ana_group;
                    }
                }
                refused
            })
            .await?
            .flatten();
        match fenced {
            Some(fenced) => Err(HandlerError::Fenced {
                target: TARGET,
                epoch,
                fenced,
            }),
            None => Ok(()),
        }
    }

    async fn shutdown(&self, reason: &str) {
        let reason = reason.to_owned();
        let recorded = reason.clone();
        if let Err(e) = self
            .update("record shutdown", move |doc| doc.shutdown = Some(recorded))
            .await
        {
            tracing::error!(path = %self.inner.path.display(), %reason, error = %e,
                "could not record the shutdown in the target file");
        }
    }
}

/// The file as written on disk. Every field is optional so that `{}` is a valid file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    subsystems: Vec<FileSubsystem>,
    #[serde(default)]
    ana: BTreeMap<Nqn, BTreeMap<AnaGroupId, FileAccess>>,
    #[serde(default)]
    shutdown: Option<String>,
    /// Written by the monitors' file fencer: the newest group epoch this gateway was fenced
    /// at. Never written by the adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fenced_epoch: Option<Epoch>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSubsystem {
    nqn: Nqn,
    #[serde(default)]
    listeners: Vec<FileListener>,
    #[serde(default)]
    namespaces: Vec<FileNamespace>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListener {
    address: IpAddr,
    port: u16,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    nsid: u32,
    ana_group: AnaGroupId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<Nonce>,
}

/// An ANA state as the file spells it. Ordered so that `min` is the safer of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileAccess {
    Inaccessible,
    Optimized,
}

impl From<AnaAccess> for FileAccess {
    fn from(a: AnaAccess) -> Self {
        match a {
            AnaAccess::Optimized => FileAccess::Optimized,
            AnaAccess::Inaccessible => FileAccess::Inaccessible,
        }
    }
}

impl From<FileAccess> for AnaAccess {
    fn from(a: FileAccess) -> Self {
        match a {
            FileAccess::Optimized => AnaAccess::Optimized,
            FileAccess::Inaccessible => AnaAccess::Inaccessible,
        }
    }
}

/// Check what serde could not (nsid range, port 0, duplicates) and put the result in one
/// order, so that two reads of an unchanged file compare equal.
fn to_domain(subsystems: Vec<FileSubsystem>, path: &Path) -> Result<Vec<Subsystem>, HandlerError> {
    let invalid = |what: String, message: String| HandlerError::Invalid {
        target: TARGET,
        what: format!("{}: {what}", path.display()),
        message,
    };
    let mut nqns = BTreeSet::new();
    let mut out = Vec::with_capacity(subsystems.len());
    for (i, s) in subsystems.into_iter().enumerate() {
        if !nqns.insert(s.nqn.clone()) {
            return Err(invalid(
                format!("subsystems[{i}].nqn"),
                format!("{} is listed twice", s.nqn),
            ));
        }
        let mut listeners = BTreeSet::new();
        for (j, l) in s.listeners.iter().enumerate() {
            let at = format!("subsystems[{i}].listeners[{j}]");
            if l.port == 0 {
                return Err(invalid(format!("{at}.port"), "must not be zero".into()));
            }
            let listener = Listener {
                address: l.address,
                port: l.port,
            };
            if !listeners.insert(listener.clone()) {
                return Err(invalid(at, format!("{listener} is listed twice")));
            }
        }
        let mut namespaces = BTreeMap::new();
        for (j, ns) in s.namespaces.into_iter().enumerate() {
            let at = format!("subsystems[{i}].namespaces[{j}].nsid");
            let nsid =
                Namespace::check_nsid(ns.nsid).map_err(|e| invalid(at.clone(), e.to_string()))?;
            let namespace = Namespace {
                nsid,
                ana_group: ns.ana_group,
                nonce: ns.nonce,
            };
            if namespaces.insert(nsid, namespace).is_some() {
                return Err(invalid(at, format!("{nsid} is listed twice")));
            }
        }
        let mut sub = Subsystem {
            nqn: s.nqn,
            listeners: listeners.into_iter().collect(),
            namespaces: namespaces.into_values().collect(),
        };
        sub.canonicalize();
        out.push(sub);
    }
    out.sort();
    Ok(out)
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, HandlerError> + Send + 'static,
) -> Result<T, HandlerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HandlerError::Target {
            target: TARGET,
            op,
            message: format!("the file task failed: {e}"),
        })?
}

fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> HandlerError {
    HandlerError::Io {
        target: TARGET,
        op,
        source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    }
}

/// Read and parse the file; a missing file is an empty document.
fn read_document(path: &Path, op: &'static str) -> Result<Document, HandlerError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Document::default()),
        Err(e) => return Err(io_error(op, path, e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| HandlerError::Invalid {
        target: TARGET,
        what: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Write `doc` over `path` atomically (see [`target_file::replace`]).
fn write_atomically(path: &Path, doc: &Document, op: &'static str) -> Result<(), HandlerError> {
    let mut text = serde_json::to_vec_pretty(doc).map_err(|e| HandlerError::Target {
        target: TARGET,
        op,
        message: format!("cannot encode the document: {e}"),
    })?;
    text.push(b'\n');
    target_file::replace(path, &text).map_err(|e| io_error(op, path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_order_makes_min_the_safe_choice() {
        assert_eq!(
            FileAccess::Optimized.min(FileAccess::Inaccessible),
            FileAccess::Inaccessible
        );
    }

    #[test]
    fn an_empty_object_is_an_empty_document() {
        let doc: Document = serde_json::from_str("{}").expect("valid");
        assert!(doc.subsystems.is_empty() && doc.ana.is_empty() && doc.shutdown.is_none());
    }

    #[test]
    fn ana_group_keys_are_checked() {
        let bad = serde_json::from_str::<Document>(
            r#"{"ana": {"nqn.2016-06.io.spdk:a": {"0": "optimized"}}}"#,
        );
        assert!(bad.is_err());
        let bad = serde_json::from_str::<Document>(
            r#"{"ana": {"nqn.2016-06.io.spdk:a": {"1": "optimised"}}}"#,
        );
        assert!(bad.is_err());
    }
}
