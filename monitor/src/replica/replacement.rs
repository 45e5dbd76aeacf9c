//! A replacement of one replica by another, and the order of its stages.
//!
//! ```text
//!  RequestReplacement      SupplyReplacement        ack ATTACHED       ack SYNCED
//!  (grace passed) ──▶ Requested ──────────▶ Supplied ──────────▶ Attached ──────────▶ Synced
//!                        │                   new replica          host added          new: Available
//!                        │ CancelReplacement  listed, not safe     the new leg         old: Terminating
//!                        ▼                                                                │ ack RETIRED
//!                    Cancelled                    Done ◀──────────────────────── Retired ◀┘
//!                                          ConfirmReplicaDeleted: old replica     host took the
//!                                          leaves the registry                    old leg out
//! ```
//!
//! Every arrow is one committed command, and each command names the replacement by id and
//! says which stage it completes, so a repeat (a lost answer, a restarted agent, a new
//! leader) finds the stage already reached and changes nothing.

use gwmon_proto::domain::{
    Nqn, ReplacementId, ReplicaId, ReplicaSpec, ReplicaState, Stage, VolumeId,
};
use serde::{Deserialize, Serialize};

use super::error::ReplicaError;
use super::event::ReplicaEvent;
use super::volume::{Replica, Volume};
use crate::map::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub id: ReplacementId,
    pub volume: VolumeId,
    /// The replica being replaced.
    pub old: ReplicaId,
    /// The new replica, from `Supplied` on.
    pub new: Option<ReplicaSpec>,
    pub stage: Stage,
    /// The host that asked; `None` when an operator or the backend did.
    pub requested_by: Option<Nqn>,
    pub forced: bool,
    pub requested_at: Timestamp,
    pub stage_since: Timestamp,
    /// Why it was cancelled, once it is.
    pub cancel_reason: Option<String>,
}

impl Replacement {
    /// Move to `stage` at `now`.
    pub(crate) fn advance(&mut self, stage: Stage, now: Timestamp) {
        self.stage = stage;
        self.stage_since = now;
    }
}

impl Volume {
    /// Start a replacement of `replica`, or answer with the one already under way for it
    /// (the `bool` says whether one was created). Without `force`, the replica must have
    /// been missing or faulty for the volume's grace period, measured with the cluster's
    /// `now`; in every case some in-sync replica must be available to sync the new leg from.
    pub(crate) fn request_replacement(
        &mut self,
        replica: ReplicaId,
        by: Option<Nqn>,
        force: bool,
        id: ReplacementId,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<(Replacement, bool), ReplicaError> {
        let volume = self.spec.id;
        if let Some(active) = &self.replacement {
            if active.old == replica {
                return Ok((active.clone(), false));
            }
            return Err(ReplicaError::ReplacementBusy {
                volume,
                active: active.id,
                old: active.old,
            });
        }
        if let Some(last) = &self.last_replacement {
            if last.old == replica && last.stage == Stage::Done {
                return Ok((last.clone(), false));
            }
        }
        let r = self
            .replicas
            .get(&replica)
            .ok_or(ReplicaError::UnknownReplica { volume, replica })?;
        if r.state == ReplicaState::Terminating {
            return Err(ReplicaError::AlreadyTerminating { volume, replica });
        }
        if !force {
            let Some(bad_since) = r.bad_since.filter(|_| r.state.is_bad()) else {
                return Err(ReplicaError::ReplicaNotBad {
                    volume,
                    replica,
                    state: r.state,
                });
            };
            let bad_for_ms = now.as_millis().saturating_sub(bad_since.as_millis());
            let grace_ms = self.spec.grace_period_ms;
            if bad_for_ms < grace_ms {
                return Err(ReplicaError::GraceNotPassed {
                    volume,
                    replica,
                    bad_for_ms,
                    grace_ms,
                });
            }
        }
        // A forced replacement of a healthy replica may sync the new leg from the old one.
        let except = if force { None } else { Some(&replica) };
        if self.in_sync_available(except).next().is_none() {
            return Err(ReplicaError::NoSyncSource { volume });
        }
        let replacement = Replacement {
            id,
            volume,
            old: replica,
            new: None,
            stage: Stage::Requested,
            requested_by: by.clone(),
            forced: force,
            requested_at: now,
            stage_since: now,
            cancel_reason: None,
        };
        self.replacement = Some(replacement.clone());
        events.push(ReplicaEvent::ReplacementRequested {
            volume,
            replacement: id,
            old: replica,
            by,
            forced: force,
        });
        Ok((replacement, true))
    }

    /// The backend's new replica for replacement `id`: stage `Supplied`. Supplying the same
    /// replica again changes nothing; a different one is refused.
    pub(crate) fn supply_replacement(
        &mut self,
        id: ReplacementId,
        spec: &ReplicaSpec,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<Replacement, ReplicaError> {
        let volume = self.spec.id;
        let p = self.live_or_finished(id)?;
        if p.stage.is_final() || p.stage >= Stage::Supplied {
            return match &p.new {
                Some(new) if new == spec => Ok(p.clone()),
                Some(new) => Err(ReplicaError::ConflictingSupply {
                    replacement: id,
                    supplied: new.id,
                }),
                None => Err(ReplicaError::ReplacementFinished {
                    replacement: id,
                    stage: p.stage,
                }),
            };
        }
        if self.replicas.contains_key(&spec.id) {
            return Err(ReplicaError::ReplicaIdTaken {
                replica: spec.id,
                volume,
            });
        }
        self.replicas
            .insert(spec.id, Replica::supplied(spec.clone(), now));
        let p = self.active_mut(id)?;
        p.new = Some(spec.clone());
        p.advance(Stage::Supplied, now);
        let p = p.clone();
        events.push(ReplicaEvent::ReplacementAdvanced {
            volume,
            replacement: id,
            stage: Stage::Supplied,
        });
        Ok(p)
    }

    /// A host did `done` for replacement `id`. Acknowledging a stage already reached
    /// changes nothing; skipping one is refused.
    pub(crate) fn acknowledge_replacement(
        &mut self,
        host: &Nqn,
        id: ReplacementId,
        done: Stage,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<Replacement, ReplicaError> {
        let volume = self.spec.id;
        let Some(after) = done.acknowledged_after() else {
            return Err(ReplicaError::NotAcknowledgeable(done));
        };
        let p = self.live_or_finished(id)?;
        if p.stage == Stage::Cancelled {
            return Err(ReplicaError::ReplacementFinished {
                replacement: id,
                stage: p.stage,
            });
        }
        if p.stage >= done {
            return Ok(p.clone());
        }
        if p.stage != after {
            return Err(ReplicaError::StageOutOfOrder {
                replacement: id,
                stage: p.stage,
                requested: done,
            });
        }
        let (old, new) = (p.old, p.new.as_ref().map(|n| n.id));
        if done == Stage::Synced {
            let new = new.ok_or_else(|| {
                ReplicaError::Invariant(format!(
                    "replacement {id} is past supplied without a new replica"
                ))
            })?;
            self.complete_sync(host, old, new, now, events)?;
        }
        let p = self.active_mut(id)?;
        p.advance(done, now);
        let p = p.clone();
        events.push(ReplicaEvent::ReplacementAdvanced {
            volume,
            replacement: id,
            stage: done,
        });
        Ok(p)
    }

    /// The new leg is in sync: trust the new replica (it synced from an in-sync one), then
    /// retire the old one. In that order, so that retiring the only other in-sync replica
    /// (a forced move) cannot leave the new one untrusted.
    fn complete_sync(
        &mut self,
        host: &Nqn,
        old: ReplicaId,
        new: ReplicaId,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<(), ReplicaError> {
        let volume = self.spec.id;
        let new_is_current = self.replicas.get(&new).is_some_and(|r| self.is_current(r));
        if !new_is_current {
            if self.in_sync_available(Some(&new)).next().is_none() {
                return Err(ReplicaError::NoSyncSource { volume });
            }
            let generation = self.generation;
            if let Some(r) = self.replicas.get_mut(&new) {
                r.generation = generation;
            }
            events.push(ReplicaEvent::ReplicaTrusted {
                volume,
                replica: new,
                generation,
            });
        }
        self.set_state(
            volume,
            new,
            ReplicaState::Available,
            Some(host),
            now,
            events,
        );
        self.settle(events);
        self.set_state(volume, old, ReplicaState::Terminating, None, now, events);
        self.settle(events);
        Ok(())
    }

    fn set_state(
        &mut self,
        volume: VolumeId,
        replica: ReplicaId,
        to: ReplicaState,
        host: Option<&Nqn>,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) {
        if let Some(r) = self.replicas.get_mut(&replica) {
            if let Some(from) = r.set_state(to, now) {
                if host.is_some() {
                    r.reported_by = host.cloned();
                }
                events.push(ReplicaEvent::ReplicaStateChanged {
                    volume,
                    replica,
                    from,
                    to,
                    host: host.cloned(),
                });
            }
        }
    }

    /// Give up replacement `id` before a replica was supplied.
    pub(crate) fn cancel_replacement(
        &mut self,
        id: ReplacementId,
        reason: &str,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<Replacement, ReplicaError> {
        let volume = self.spec.id;
        let p = self.live_or_finished(id)?;
        match p.stage {
            Stage::Cancelled => return Ok(p.clone()),
            Stage::Requested => {}
            stage => {
                return Err(ReplicaError::StageOutOfOrder {
                    replacement: id,
                    stage,
                    requested: Stage::Cancelled,
                })
            }
        }
        let mut p = self
            .replacement
            .take()
            .ok_or_else(|| ReplicaError::Invariant(format!("replacement {id} vanished")))?;
        p.cancel_reason = Some(reason.to_owned());
        p.advance(Stage::Cancelled, now);
        self.last_replacement = Some(p.clone());
        events.push(ReplicaEvent::ReplacementAdvanced {
            volume,
            replacement: id,
            stage: Stage::Cancelled,
        });
        Ok(p)
    }

    /// The backend deleted `replica`, the retired old replica of the replacement: it leaves
    /// the registry and the replacement is done.
    pub(crate) fn confirm_deleted(
        &mut self,
        replica: ReplicaId,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<Replacement, ReplicaError> {
        let volume = self.spec.id;
        if let Some(p) = self.replacement.as_ref().filter(|p| p.old == replica) {
            if p.stage != Stage::Retired {
                return Err(ReplicaError::StageOutOfOrder {
                    replacement: p.id,
                    stage: p.stage,
                    requested: Stage::Done,
                });
            }
            let mut p = self
                .replacement
                .take()
                .ok_or_else(|| ReplicaError::Invariant("replacement vanished".into()))?;
            self.replicas.remove(&replica);
            p.advance(Stage::Done, now);
            self.last_replacement = Some(p.clone());
            events.push(ReplicaEvent::ReplicaRemoved { volume, replica });
            events.push(ReplicaEvent::ReplacementAdvanced {
                volume,
                replacement: p.id,
                stage: Stage::Done,
            });
            self.settle(events);
            return Ok(p);
        }
        if let Some(p) = self
            .last_replacement
            .as_ref()
            .filter(|p| p.old == replica && p.stage == Stage::Done)
        {
            return Ok(p.clone());
        }
        if self.replicas.contains_key(&replica) {
            return Err(ReplicaError::NotRetiring { volume, replica });
        }
        Err(ReplicaError::UnknownReplica { volume, replica })
    }

    fn live_or_finished(&self, id: ReplacementId) -> Result<&Replacement, ReplicaError> {
        self.replacement_by_id(id)
            .ok_or(ReplicaError::UnknownReplacement {
                volume: self.spec.id,
                replacement: id,
            })
    }

    fn active_mut(&mut self, id: ReplacementId) -> Result<&mut Replacement, ReplicaError> {
        self.replacement
            .as_mut()
            .filter(|p| p.id == id)
            .ok_or_else(|| ReplicaError::Invariant(format!("replacement {id} is not under way")))
    }
}
