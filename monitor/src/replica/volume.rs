//! A volume's replicas, their health, and the in-sync generation that keeps a stale leg from
//! ever being trusted again.
//!
//! # The in-sync generation
//!
//! Seed 001 describes the failure this guards against: a four-replica array loses two legs
//! and keeps writing to the other two; after a reboot the host reaches only the two legs lost
//! earlier, and an array built from them silently serves old data. Only the host saw the legs
//! go, so the registry records it, as a number:
//!
//! * the volume has a `generation`, and every replica the generation at which it was last in
//!   the in-sync set; a new volume's replicas are all in sync at generation 1;
//! * the *current* replicas are those at the volume's generation (and not terminating);
//! * whenever some current replicas are available and others are not (missing, faulty,
//!   resyncing), the available ones keep receiving writes the others miss: the generation
//!   moves on and only the available ones are stamped with it ([`Volume::settle`]). The
//!   others are *stale* from then on;
//! * when every current replica goes away together, nothing is written to any of them, so
//!   the generation stays and all of them stay current: they hold the newest data even
//!   while unreachable, and they are what a host must connect to;
//! * a faulty replica is left behind as soon as a non-faulty current one remains: md failed
//!   it, and writes may have gone on to the others before they went too;
//! * a stale (or new) replica becomes current again only when a host reports it available
//!   while a current replica is available on that same host: md then holds both in sync in
//!   one array ([`Volume::trust`]).
//!
//! A connection ([`super::connection`]) lists only current replicas that are not faulty.

use std::collections::{BTreeMap, BTreeSet};

use gwmon_proto::domain::{Nqn, ReplicaId, ReplicaSpec, ReplicaState, VolumeSpec};
use serde::{Deserialize, Serialize};

use super::event::ReplicaEvent;
use super::replacement::Replacement;
use crate::map::Timestamp;

/// The generation of a replica that has never been in sync: the new replica of a
/// replacement until its first sync completes. Volumes start at 1, so it is always stale.
pub const NEVER_IN_SYNC: u64 = 0;

/// One replica of a volume and its recorded health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub spec: ReplicaSpec,
    pub state: ReplicaState,
    /// When it entered `state`.
    pub since: Timestamp,
    /// When it went missing or faulty, while it is; a move between the two keeps it, so the
    /// grace period is measured from the first sign of trouble.
    pub bad_since: Option<Timestamp>,
    /// The newest generation of the volume at which it was in the in-sync set.
    pub generation: u64,
    /// Resync progress in per mille while synchronizing, when the host knows it.
    pub sync_permille: Option<u16>,
    /// The host whose report set `state`.
    pub reported_by: Option<Nqn>,
}

impl Replica {
    /// A replica registered with its volume: in sync, at the volume's first generation.
    pub(crate) fn in_sync(spec: ReplicaSpec, generation: u64, now: Timestamp) -> Replica {
        Replica {
            spec,
            state: ReplicaState::Available,
            since: now,
            bad_since: None,
            generation,
            sync_permille: None,
            reported_by: None,
        }
    }

    /// The new replica of a replacement: empty until the host's array has synced onto it.
    pub(crate) fn supplied(spec: ReplicaSpec, now: Timestamp) -> Replica {
        Replica {
            spec,
            state: ReplicaState::Synchronizing,
            since: now,
            bad_since: None,
            generation: NEVER_IN_SYNC,
            sync_permille: None,
            reported_by: None,
        }
    }

    /// Set the state; returns the previous one if it changed. Keeps `since` and `bad_since`
    /// consistent with the state.
    pub(crate) fn set_state(&mut self, to: ReplicaState, now: Timestamp) -> Option<ReplicaState> {
        let from = self.state;
        if from == to {
            return None;
        }
        self.state = to;
        self.since = now;
        if to.is_bad() {
            self.bad_since.get_or_insert(now);
        } else {
            self.bad_since = None;
        }
        if to != ReplicaState::Synchronizing {
            self.sync_permille = None;
        }
        Some(from)
    }
}

/// A registered volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub spec: VolumeSpec,
    pub created_at: Timestamp,
    /// The in-sync generation (see the module documentation). Starts at 1, never goes back.
    pub generation: u64,
    pub replicas: BTreeMap<ReplicaId, Replica>,
    /// The replacement under way; at most one per volume, so two legs are never swapped at
    /// once and the array never drops below its other in-sync legs.
    pub replacement: Option<Replacement>,
    /// The last replacement that finished (done or cancelled), kept so that a repeated final
    /// call about it is answered rather than refused.
    pub last_replacement: Option<Replacement>,
}

impl Volume {
    pub const FIRST_GENERATION: u64 = 1;

    pub(crate) fn new(spec: VolumeSpec, replicas: Vec<ReplicaSpec>, now: Timestamp) -> Volume {
        let replicas = replicas
            .into_iter()
            .map(|r| (r.id, Replica::in_sync(r, Self::FIRST_GENERATION, now)))
            .collect();
        Volume {
            spec,
            created_at: now,
            generation: Self::FIRST_GENERATION,
            replicas,
            replacement: None,
            last_replacement: None,
        }
    }

    /// Whether a replica is at the volume's generation: holding the newest data, whether
    /// reachable or not.
    pub fn is_current(&self, r: &Replica) -> bool {
        r.generation == self.generation && r.state != ReplicaState::Terminating
    }

    /// Whether `r` dropped out of the in-sync set at some point (or never joined it).
    pub fn is_stale(&self, r: &Replica) -> bool {
        r.generation < self.generation
    }

    /// The current replicas that are available: the ones serving writes, and the only
    /// valid source to sync a new or returning leg from. `except` is left out.
    pub fn in_sync_available<'a>(
        &'a self,
        except: Option<&'a ReplicaId>,
    ) -> impl Iterator<Item = &'a Replica> + 'a {
        self.replicas.values().filter(move |r| {
            Some(&r.spec.id) != except && r.state == ReplicaState::Available && self.is_current(r)
        })
    }

    /// The replica spec of the current replacement's new replica, if supplied.
    pub fn replacement_by_id(
        &self,
        id: gwmon_proto::domain::ReplacementId,
    ) -> Option<&Replacement> {
        [self.replacement.as_ref(), self.last_replacement.as_ref()]
            .into_iter()
            .flatten()
            .find(|r| r.id == id)
    }

    /// Bring the generation in line with the states, after any change of a state. If some
    /// current replicas are available and others are not, the available ones keep
    /// receiving writes the others miss: move the generation on and leave the others
    /// behind. With none available, a faulty current replica is left behind if a
    /// non-faulty one remains: md failed it while the others were still being written (its
    /// failure and theirs may fall in one reporting period, so the order is unknown and the
    /// faulty one is the one not to trust).
    pub(crate) fn settle(&mut self, events: &mut Vec<ReplicaEvent>) {
        let current: BTreeSet<ReplicaId> = self
            .replicas
            .values()
            .filter(|r| self.is_current(r))
            .map(|r| r.spec.id)
            .collect();
        let available: BTreeSet<ReplicaId> =
            self.in_sync_available(None).map(|r| r.spec.id).collect();
        let keep = if !available.is_empty() {
            available
        } else {
            current
                .iter()
                .filter(|id| {
                    self.replicas
                        .get(id)
                        .is_some_and(|r| r.state != ReplicaState::Faulty)
                })
                .copied()
                .collect()
        };
        if keep.is_empty() || keep == current {
            return;
        }
        let next = self.generation.saturating_add(1);
        self.generation = next;
        for id in &keep {
            if let Some(r) = self.replicas.get_mut(id) {
                r.generation = next;
            }
        }
        events.push(ReplicaEvent::GenerationAdvanced {
            volume: self.spec.id,
            generation: next,
            dropped: current.difference(&keep).copied().collect(),
        });
    }

    /// Trust again the stale (or new) replicas in `candidates` that `host` reports
    /// available, if an in-sync replica is available on the same host: md then holds them in
    /// sync in one array. An in-sync replica counts for `host` if `host` reported it, if no
    /// host has yet (it was registered in sync), or if it is among `candidates`' report
    /// (`same_report`). Without one, the candidates stay stale and an event says why.
    pub(crate) fn trust(
        &mut self,
        candidates: &[ReplicaId],
        same_report: &[ReplicaId],
        host: &Nqn,
        events: &mut Vec<ReplicaEvent>,
    ) {
        let volume = self.spec.id;
        let generation = self.generation;
        let anchored = self.in_sync_available(None).any(|r| {
            r.reported_by.as_ref().is_none_or(|h| h == host) || same_report.contains(&r.spec.id)
        });
        for id in candidates {
            let Some(r) = self.replicas.get_mut(id) else {
                continue;
            };
            if r.state != ReplicaState::Available || r.generation >= generation {
                continue;
            }
            if anchored {
                r.generation = generation;
                events.push(ReplicaEvent::ReplicaTrusted {
                    volume,
                    replica: *id,
                    generation,
                });
            } else {
                events.push(ReplicaEvent::StaleReplicaNotTrusted {
                    volume,
                    replica: *id,
                    replica_generation: r.generation,
                    volume_generation: generation,
                });
            }
        }
    }

    /// The invariants every committed volume satisfies; a command whose result breaks one
    /// is refused (a bug caught before it is written down).
    pub fn check(&self) -> Result<(), String> {
        let id = self.spec.id;
        if self.replicas.is_empty() {
            return Err(format!("volume {id} has no replica"));
        }
        if self.generation < Self::FIRST_GENERATION {
            return Err(format!("volume {id} is at generation {}", self.generation));
        }
        let mut max = self.spec.replica_count as usize;
        if self.replacement.as_ref().is_some_and(|r| r.new.is_some()) {
            max += 1;
        }
        if self.replicas.len() > max {
            return Err(format!(
                "volume {id} has {} replicas, more than {max}",
                self.replicas.len()
            ));
        }
        for (rid, r) in &self.replicas {
            if *rid != r.spec.id {
                return Err(format!("replica {} is filed under {rid}", r.spec.id));
            }
            if r.generation > self.generation {
                return Err(format!(
                    "replica {rid} is at generation {}, beyond the volume's {}",
                    r.generation, self.generation
                ));
            }
            if r.bad_since.is_some() != r.state.is_bad() {
                return Err(format!(
                    "replica {rid} is {} with bad_since {:?}",
                    r.state, r.bad_since
                ));
            }
            if r.state == ReplicaState::Terminating {
                let retiring = self.replacement.as_ref().is_some_and(|p| {
                    p.old == *rid && p.stage >= gwmon_proto::domain::Stage::Synced
                });
                if !retiring {
                    return Err(format!(
                        "replica {rid} is terminating outside a replacement"
                    ));
                }
            }
        }
        let current: Vec<&Replica> = self
            .replicas
            .values()
            .filter(|r| self.is_current(r))
            .collect();
        let available = current
            .iter()
            .filter(|r| r.state == ReplicaState::Available)
            .count();
        if available > 0 && available != current.len() {
            return Err(format!(
                "volume {id}: {available} of {} current replicas available but the generation did not move",
                current.len()
            ));
        }
        let faulty = current
            .iter()
            .filter(|r| r.state == ReplicaState::Faulty)
            .count();
        if available == 0 && faulty > 0 && faulty < current.len() {
            return Err(format!(
                "volume {id}: {faulty} faulty replicas stayed current beside non-faulty ones"
            ));
        }
        if let Some(p) = &self.replacement {
            if p.stage.is_final() {
                return Err(format!("finished replacement {} is still under way", p.id));
            }
            if p.volume != id || !self.replicas.contains_key(&p.old) {
                return Err(format!(
                    "replacement {} lost its old replica {}",
                    p.id, p.old
                ));
            }
            match (&p.new, p.stage >= gwmon_proto::domain::Stage::Supplied) {
                (Some(new), true) if self.replicas.get(&new.id).map(|r| &r.spec) == Some(new) => {}
                (None, false) => {}
                _ => {
                    return Err(format!(
                        "replacement {} at {} has new replica {:?}",
                        p.id, p.stage, p.new
                    ))
                }
            }
        }
        if let Some(p) = &self.last_replacement {
            if !p.stage.is_final() {
                return Err(format!(
                    "replacement {} is kept as finished at {}",
                    p.id, p.stage
                ));
            }
        }
        Ok(())
    }
}
