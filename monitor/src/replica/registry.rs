//! The replica registry and its one way of changing: [`ReplicaRegistry::apply`].

use std::collections::BTreeMap;

use gwmon_proto::domain::{
    Epoch, HostIdentity, Nqn, ReplacementId, ReplicaId, ReplicaReport, ReplicaSpec, ReplicaState,
    VolumeAlias, VolumeId,
};
use serde::{Deserialize, Serialize};

use super::command::ReplicaCommand;
use super::connection::{connection, Connection};
use super::error::ReplicaError;
use super::event::ReplicaEvent;
use super::host::Host;
use super::replacement::Replacement;
use super::volume::Volume;
use crate::map::Timestamp;

/// The replicated registry of hosts, volumes, replicas and replacements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRegistry {
    /// Grows by one with every applied command that changed something.
    epoch: Epoch,
    /// The latest command time applied; an earlier one (a new leader whose clock is a
    /// little behind) is applied at this time instead, so grace periods never run backwards.
    time: Timestamp,
    /// The id the next replacement gets; ids are never reused, even after a volume is
    /// deleted, so a late call cannot reach a later replacement.
    next_replacement: ReplacementId,
    hosts: BTreeMap<Nqn, Host>,
    volumes: BTreeMap<VolumeId, Volume>,
}

impl Default for ReplicaRegistry {
    fn default() -> Self {
        ReplicaRegistry {
            epoch: Epoch::ZERO,
            time: Timestamp::ZERO,
            next_replacement: ReplacementId::FIRST,
            hosts: BTreeMap::new(),
            volumes: BTreeMap::new(),
        }
    }
}

/// A command that was applied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Applied {
    /// False when the command was valid but had nothing to do (a repeated report, create,
    /// acknowledgement): the registry epoch did not move.
    pub changed: bool,
    pub events: Vec<ReplicaEvent>,
    /// For the replacement commands: the replacement as it now stands.
    pub replacement: Option<Replacement>,
    /// For a state report: the replicas whose recorded state or progress it changed.
    pub changed_replicas: Vec<ReplicaId>,
}

/// The result of applying a command. A refusal leaves the registry exactly as it was.
pub type Outcome = Result<Applied, ReplicaError>;

impl ReplicaRegistry {
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The latest command time applied.
    pub fn time(&self) -> Timestamp {
        self.time
    }

    pub fn hosts(&self) -> &BTreeMap<Nqn, Host> {
        &self.hosts
    }

    pub fn host(&self, nqn: &Nqn) -> Result<&Host, ReplicaError> {
        self.hosts
            .get(nqn)
            .ok_or_else(|| ReplicaError::UnknownHost(nqn.clone()))
    }

    pub fn volumes(&self) -> &BTreeMap<VolumeId, Volume> {
        &self.volumes
    }

    pub fn volume(&self, id: &VolumeId) -> Result<&Volume, ReplicaError> {
        self.volumes.get(id).ok_or(ReplicaError::UnknownVolume(*id))
    }

    pub fn volume_by_alias(&self, alias: &VolumeAlias) -> Result<&Volume, ReplicaError> {
        self.volumes
            .values()
            .find(|v| &v.spec.alias == alias)
            .ok_or_else(|| ReplicaError::UnknownAlias(alias.clone()))
    }

    /// What `host` may connect for `volume`; see [`connection`].
    pub fn connection(&self, host: &Nqn, volume: &VolumeId) -> Result<Connection, ReplicaError> {
        self.host(host)?;
        connection(self.volume(volume)?)
    }

    /// The replacements under way on `volumes` (unknown ids are skipped).
    pub fn replacements_of(&self, volumes: &[VolumeId]) -> Vec<Replacement> {
        volumes
            .iter()
            .filter_map(|v| self.volumes.get(v)?.replacement.clone())
            .collect()
    }

    /// Whether a state report would change anything. The leader asks before proposing, so
    /// that a host repeating what it sees every period costs no Raft write. When in doubt
    /// (an unknown host, volume or replica) the answer is yes, and the engine's refusal
    /// reaches the caller.
    pub fn report_is_news(&self, host: &Nqn, volume: &VolumeId, reports: &[ReplicaReport]) -> bool {
        let (Some(_), Some(v)) = (self.hosts.get(host), self.volumes.get(volume)) else {
            return true;
        };
        let mut copy = v.clone();
        let mut events = Vec::new();
        if report(&mut copy, host, reports, self.time, &mut events).is_err() {
            return true;
        }
        copy.settle(&mut events);
        copy != *v
    }

    /// Apply one committed command at the leader's time `now`. Deterministic, and
    /// transactional: a refused command changes nothing.
    pub fn apply(&mut self, cmd: &ReplicaCommand, now: Timestamp) -> Outcome {
        let now = now.max(self.time);
        let mut events = Vec::new();
        let mut replacement = None;
        let mut changed_replicas = Vec::new();
        let changed = match cmd {
            ReplicaCommand::RegisterHost { host } => {
                self.register_host(host, None, now, &mut events)
            }
            ReplicaCommand::Heartbeat { host, volumes } => {
                self.register_host(host, Some(volumes), now, &mut events)
            }
            ReplicaCommand::CreateVolume { spec, replicas } => {
                self.create_volume(spec, replicas, now, &mut events)?
            }
            ReplicaCommand::DeleteVolume { volume } => {
                self.volumes
                    .remove(volume)
                    .ok_or(ReplicaError::UnknownVolume(*volume))?;
                events.push(ReplicaEvent::VolumeDeleted { volume: *volume });
                true
            }
            ReplicaCommand::ExpandVolume {
                volume,
                capacity_bytes,
            } => self.expand_volume(volume, *capacity_bytes, &mut events)?,
            ReplicaCommand::ReportStates {
                host,
                volume,
                reports,
            } => {
                self.host(host)?;
                let (ids, changed) = self.transact(volume, &mut events, |v, events| {
                    report(v, host, reports, now, events)
                })?;
                changed_replicas = ids;
                changed
            }
            ReplicaCommand::RequestReplacement { .. }
            | ReplicaCommand::SupplyReplacement { .. }
            | ReplicaCommand::AcknowledgeReplacement { .. }
            | ReplicaCommand::CancelReplacement { .. }
            | ReplicaCommand::ConfirmReplicaDeleted { .. } => {
                let (p, changed) = self.replacement_step(cmd, now, &mut events)?;
                replacement = p;
                changed
            }
        };
        if changed {
            self.epoch = self.epoch.next();
            self.time = now;
        }
        Ok(Applied {
            changed,
            events,
            replacement,
            changed_replicas,
        })
    }

    /// Grow a volume to `capacity_bytes`; shrinking is refused, the same size changes
    /// nothing.
    fn expand_volume(
        &mut self,
        volume: &VolumeId,
        capacity_bytes: u64,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<bool, ReplicaError> {
        let ((), changed) = self.transact(volume, events, |v, events| {
            let from = v.spec.capacity_bytes;
            if capacity_bytes < from {
                return Err(ReplicaError::ShrinkRefused {
                    volume: v.spec.id,
                    capacity: from,
                    requested: capacity_bytes,
                });
            }
            if capacity_bytes > from {
                v.spec.capacity_bytes = capacity_bytes;
                events.push(ReplicaEvent::VolumeExpanded {
                    volume: v.spec.id,
                    from,
                    to: capacity_bytes,
                });
            }
            Ok(())
        })?;
        Ok(changed)
    }

    /// A step of a replica's replacement: the replacement as it now stands, and whether
    /// the registry changed. Other commands are not steps: `(None, false)`.
    fn replacement_step(
        &mut self,
        cmd: &ReplicaCommand,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<(Option<Replacement>, bool), ReplicaError> {
        let (p, changed) = match cmd {
            ReplicaCommand::RequestReplacement {
                volume,
                replica,
                by,
                force,
            } => {
                if let Some(h) = by {
                    self.host(h)?;
                }
                let id = self.next_replacement;
                let ((p, created), changed) = self.transact(volume, events, |v, events| {
                    v.request_replacement(*replica, by.clone(), *force, id, now, events)
                })?;
                if created {
                    self.next_replacement = id.next();
                }
                (p, changed)
            }
            ReplicaCommand::SupplyReplacement {
                volume,
                replacement: id,
                replica,
            } => {
                self.replica_id_free(volume, replica)?;
                self.transact(volume, events, |v, events| {
                    v.supply_replacement(*id, replica, now, events)
                })?
            }
            ReplicaCommand::AcknowledgeReplacement {
                host,
                volume,
                replacement: id,
                done,
            } => {
                self.host(host)?;
                self.transact(volume, events, |v, events| {
                    v.acknowledge_replacement(host, *id, *done, now, events)
                })?
            }
            ReplicaCommand::CancelReplacement {
                volume,
                replacement: id,
                reason,
            } => self.transact(volume, events, |v, events| {
                v.cancel_replacement(*id, reason, now, events)
            })?,
            ReplicaCommand::ConfirmReplicaDeleted { volume, replica } => {
                self.transact(volume, events, |v, events| {
                    v.confirm_deleted(*replica, now, events)
                })?
            }
            ReplicaCommand::RegisterHost { .. }
            | ReplicaCommand::Heartbeat { .. }
            | ReplicaCommand::CreateVolume { .. }
            | ReplicaCommand::DeleteVolume { .. }
            | ReplicaCommand::ExpandVolume { .. }
            | ReplicaCommand::ReportStates { .. } => return Ok((None, false)),
        };
        Ok((Some(p), changed))
    }

    /// Register or update a host; with `volumes`, also record a heartbeat. Never refuses.
    fn register_host(
        &mut self,
        identity: &HostIdentity,
        volumes: Option<&Vec<VolumeId>>,
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> bool {
        let existed = self.hosts.contains_key(&identity.nqn);
        let host = self
            .hosts
            .entry(identity.nqn.clone())
            .or_insert_with(|| Host {
                identity: identity.clone(),
                registered_at: now,
                last_heartbeat: None,
                volumes: Vec::new(),
            });
        let before = host.clone();
        if !existed {
            events.push(ReplicaEvent::HostRegistered {
                host: identity.nqn.clone(),
            });
        } else if host.identity != *identity {
            host.identity = identity.clone();
            events.push(ReplicaEvent::HostUpdated {
                host: identity.nqn.clone(),
            });
        }
        if let Some(volumes) = volumes {
            host.last_heartbeat = Some(now);
            host.volumes.clone_from(volumes);
        }
        !existed || *host != before
    }

    fn create_volume(
        &mut self,
        spec: &gwmon_proto::domain::VolumeSpec,
        replicas: &[ReplicaSpec],
        now: Timestamp,
        events: &mut Vec<ReplicaEvent>,
    ) -> Result<bool, ReplicaError> {
        if replicas.len() > spec.replica_count as usize {
            return Err(ReplicaError::TooManyReplicas {
                given: replicas.len(),
                replica_count: spec.replica_count,
            });
        }
        if let Some(existing) = self.volumes.get(&spec.id) {
            let same = existing.spec == *spec
                && existing.replicas.len() == replicas.len()
                && replicas
                    .iter()
                    .all(|r| existing.replicas.get(&r.id).map(|e| &e.spec) == Some(r));
            return if same {
                Ok(false)
            } else {
                Err(ReplicaError::VolumeExists(spec.id))
            };
        }
        if let Some(other) = self.volumes.values().find(|v| v.spec.alias == spec.alias) {
            return Err(ReplicaError::AliasTaken {
                alias: spec.alias.clone(),
                volume: other.spec.id,
            });
        }
        for r in replicas {
            if let Some(owner) = self.owner_of(&r.id) {
                return Err(ReplicaError::ReplicaIdTaken {
                    replica: r.id,
                    volume: owner,
                });
            }
        }
        let volume = Volume::new(spec.clone(), replicas.to_vec(), now);
        volume.check().map_err(ReplicaError::Invariant)?;
        events.push(ReplicaEvent::VolumeCreated {
            volume: spec.id,
            alias: spec.alias.clone(),
            replicas: replicas.len(),
        });
        self.volumes.insert(spec.id, volume);
        Ok(true)
    }

    /// The volume a replica id belongs to, if any.
    fn owner_of(&self, replica: &ReplicaId) -> Option<VolumeId> {
        self.volumes
            .values()
            .find(|v| v.replicas.contains_key(replica))
            .map(|v| v.spec.id)
    }

    /// A supplied replica must not belong to another volume (within its own volume the
    /// engine decides: the same supply again is fine, a clash is refused).
    fn replica_id_free(
        &self,
        volume: &VolumeId,
        replica: &ReplicaSpec,
    ) -> Result<(), ReplicaError> {
        match self.owner_of(&replica.id) {
            Some(owner) if owner != *volume => Err(ReplicaError::ReplicaIdTaken {
                replica: replica.id,
                volume: owner,
            }),
            _ => Ok(()),
        }
    }

    /// Run `f` on a copy of one volume, settle its generations and check its invariants;
    /// keep the copy only if all went well. Returns `f`'s value and whether the volume
    /// changed. Events are kept only for a change.
    fn transact<T>(
        &mut self,
        id: &VolumeId,
        events: &mut Vec<ReplicaEvent>,
        f: impl FnOnce(&mut Volume, &mut Vec<ReplicaEvent>) -> Result<T, ReplicaError>,
    ) -> Result<(T, bool), ReplicaError> {
        let original = self.volume(id)?;
        let mut volume = original.clone();
        let mut produced = Vec::new();
        let value = f(&mut volume, &mut produced)?;
        volume.settle(&mut produced);
        volume.check().map_err(ReplicaError::Invariant)?;
        if volume == *original {
            return Ok((value, false));
        }
        events.append(&mut produced);
        self.volumes.insert(*id, volume);
        Ok((value, true))
    }
}

/// Record a host's view of some replicas: edge-triggered, only a change of state is an
/// event (and restarts the state's `since`). A retiring replica's state is the registry's,
/// not the host's, so reports about it are ignored.
fn report(
    v: &mut Volume,
    host: &Nqn,
    reports: &[ReplicaReport],
    now: Timestamp,
    events: &mut Vec<ReplicaEvent>,
) -> Result<Vec<ReplicaId>, ReplicaError> {
    let volume = v.spec.id;
    let mut changed = Vec::new();
    for rep in reports {
        let r = v
            .replicas
            .get_mut(&rep.replica)
            .ok_or(ReplicaError::UnknownReplica {
                volume,
                replica: rep.replica,
            })?;
        if r.state == ReplicaState::Terminating {
            continue;
        }
        let mut touched = false;
        if let Some(from) = r.set_state(rep.state, now) {
            r.reported_by = Some(host.clone());
            events.push(ReplicaEvent::ReplicaStateChanged {
                volume,
                replica: rep.replica,
                from,
                to: rep.state,
                host: Some(host.clone()),
            });
            touched = true;
        }
        let permille = rep
            .sync_permille
            .filter(|_| rep.state == ReplicaState::Synchronizing);
        if r.sync_permille != permille {
            r.sync_permille = permille;
            touched = true;
        }
        if touched {
            changed.push(rep.replica);
        }
    }
    // A stale leg reported in sync is trusted again only beside an in-sync leg of the same
    // host; otherwise (seed 001: a host that sees only the legs lost earlier) it stays stale.
    let available: Vec<ReplicaId> = reports
        .iter()
        .filter(|rep| rep.state == ReplicaState::Available)
        .map(|rep| rep.replica)
        .collect();
    v.trust(&available, &available, host, events);
    Ok(changed)
}
