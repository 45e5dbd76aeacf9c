//! What a gateway implements so the client can drive its target: the `AnaHandler`.

use std::future::Future;

use gwmon_proto::domain::{AnaAccess, AnaGroupId, Epoch, NamespacePlacement, Nqn, Subsystem};

/// The ANA state of one ANA group of one subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaEntry {
    pub nqn: Nqn,
    pub ana_group: AnaGroupId,
    pub access: AnaAccess,
    /// For a group taken over from a failed gateway, the fence epoch that had to complete
    /// before serving; zero otherwise. A storage backend that orders writes by epoch can tag
    /// the group's I/O with it.
    pub fence_epoch: Epoch,
}

/// Everything the target must expose: the full desired state, not a delta, so applying it
/// again is harmless and a missed call is repaired by the next one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnaStates {
    /// The group epoch of the map slice these states come from.
    pub epoch: Epoch,
    pub entries: Vec<AnaEntry>,
    /// Namespaces the monitors moved between ANA groups: each must be in the ANA group
    /// given (namespace balancing). A target applies them after the entries that make
    /// groups inaccessible and before those that make groups optimized, so no namespace is
    /// ever served where neither the states before nor those after serve it. Namespaces
    /// not listed stay where they are.
    pub placements: Vec<NamespacePlacement>,
}

impl AnaStates {
    /// The same subsystems and groups, every one inaccessible: what the gateway exposes when
    /// it has lost the monitors (self-demotion) or is shutting down.
    pub fn all_inaccessible(&self) -> AnaStates {
        AnaStates {
            epoch: self.epoch,
            entries: self
                .entries
                .iter()
                .map(|e| AnaEntry {
                    access: AnaAccess::Inaccessible,
                    fence_epoch: Epoch::ZERO,
                    ..e.clone()
                })
                .collect(),
            placements: self.placements.clone(),
        }
    }

    /// Every ANA group of every subsystem listed, on every one of them, inaccessible: what
    /// a target that knows only its subsystems is told to make sure nothing is served.
    /// The groups are those the subsystems' namespaces are in and those `told` names: the
    /// monitors may make a group optimized that holds none of the gateway's namespaces
    /// (one that namespace balancing has not filled yet), and it must go inaccessible too.
    pub fn inaccessible_for(subsystems: &[Subsystem], told: &AnaStates) -> AnaStates {
        let groups: std::collections::BTreeSet<AnaGroupId> = subsystems
            .iter()
            .flat_map(|s| s.namespaces.iter().map(|n| n.ana_group))
            .chain(told.entries.iter().map(|e| e.ana_group))
            .collect();
        AnaStates {
            epoch: Epoch::ZERO,
            entries: subsystems
                .iter()
                .flat_map(|s| {
                    groups.iter().map(|g| AnaEntry {
                        nqn: s.nqn.clone(),
                        ana_group: *g,
                        access: AnaAccess::Inaccessible,
                        fence_epoch: Epoch::ZERO,
                    })
                })
                .collect(),
            placements: Vec::new(),
        }
    }

    /// These states, with every entry that is not optimized in `now` (nothing is, with
    /// `None`) made inaccessible, and the placements of `now`: they can take ANA groups
    /// away, never give new ones, and move no namespace into a group that serves it.
    pub(crate) fn optimized_only_where(&self, now: Option<&AnaStates>) -> AnaStates {
        let serving = |e: &AnaEntry| {
            now.is_some_and(|n| {
                n.optimized()
                    .any(|o| o.nqn == e.nqn && o.ana_group == e.ana_group)
            })
        };
        AnaStates {
            epoch: self.epoch,
            entries: self
                .entries
                .iter()
                .map(|e| {
                    if e.access == AnaAccess::Optimized && !serving(e) {
                        AnaEntry {
                            access: AnaAccess::Inaccessible,
                            fence_epoch: Epoch::ZERO,
                            ..e.clone()
                        }
                    } else {
                        e.clone()
                    }
                })
                .collect(),
            placements: now.map(|n| n.placements.clone()).unwrap_or_default(),
        }
    }

    /// Where the placements put namespace `nsid` of `nqn`, if they name it.
    pub fn placement(&self, nqn: &Nqn, nsid: u32) -> Option<AnaGroupId> {
        self.placements
            .iter()
            .find(|p| &p.nqn == nqn && p.nsid == nsid)
            .map(|p| p.ana_group)
    }

    /// ANA groups exposed optimized.
    pub fn optimized(&self) -> impl Iterator<Item = &AnaEntry> {
        self.entries
            .iter()
            .filter(|e| e.access == AnaAccess::Optimized)
    }
}

/// A target operation that failed. The client retries it with a bounded backoff.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{target}: {op} failed: {message}")]
    Target {
        target: &'static str,
        op: &'static str,
        message: String,
    },
    #[error("{target}: {op}: {source}")]
    Io {
        target: &'static str,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: {what} is not valid: {message}")]
    Invalid {
        target: &'static str,
        what: String,
        message: String,
    },
    /// The target was fenced by the monitors at group epoch `fenced`, and was asked to serve
    /// optimized with states of epoch `epoch`, no newer: states from before the fence, held
    /// by a process that was paused or cut off. Nothing was made optimized.
    #[error("{target}: refused to serve states of epoch {epoch}: this gateway was fenced at epoch {fenced}")]
    Fenced {
        target: &'static str,
        epoch: Epoch,
        fenced: Epoch,
    },
}

/// The gateway's side of the contract. The client calls these from one task, never
/// concurrently, one call after the other, and retries a failing call with a bounded
/// backoff (never a tight loop). A call that does not answer within the handler timeout is
/// dropped and counts as failed: a target whose operations can outlive their future (a
/// blocking write on another thread) must make sure such a late write cannot land after a
/// later call's.
pub trait AnaHandler: Send + Sync + 'static {
    /// The subsystems the target serves now: listeners, and namespaces with their ANA group
    /// and fencing nonce. Reported in every beacon.
    fn subsystems(&self) -> impl Future<Output = Result<Vec<Subsystem>, HandlerError>> + Send;

    /// Expose exactly these ANA states. Groups not listed are left as they are.
    fn apply(&self, states: &AnaStates) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Make every ANA group of the target inaccessible, whatever the client last told it:
    /// at start (a crashed predecessor may have left groups optimized), when the lease runs
    /// out, and before stopping. `told` holds every ANA group this process told the target
    /// about (the latest state of each; empty at start): a target must cover at least
    /// those, including groups that hold none of its namespaces. The default lists the
    /// subsystems and applies [`AnaStates::inaccessible_for`]; a target that can reach
    /// every group more directly (every port of a kernel target, say) should do that
    /// instead.
    fn demote_all(
        &self,
        told: &AnaStates,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            let subsystems = self.subsystems().await?;
            self.apply(&AnaStates::inaccessible_for(&subsystems, told))
                .await
        }
    }

    /// The gateway must stop: the monitors declared it failed or deleted it, or it lost them
    /// for too long. Called once, after every ANA group was made inaccessible.
    fn shutdown(&self, reason: &str) -> impl Future<Output = ()> + Send;
}
