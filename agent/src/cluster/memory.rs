//! An in-memory cluster for tests: the replica registry's rules without Raft or gRPC.
//!
//! It keeps what the agent depends on: a replacement is accepted only after the volume's
//! grace period measured here (on `tokio::time`, so a test with paused time controls it),
//! stages advance one at a time and only on acknowledgement, a repeated acknowledgement
//! answers with the current state, and connection info leaves out replicas that are not
//! available. The test plays the storage backend through [`MemoryCluster::supply`] and
//! [`MemoryCluster::confirm_deleted`], and can make the cluster unreachable or lose the
//! answer to a call that it did commit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use super::types::{
    HostIdentity, Replacement, ReplacementId, ReplicaId, ReplicaInfo, ReplicaReport, ReplicaState,
    Stage, VolumeId, VolumeInfo,
};
use super::{Cluster, ClusterError, Refusal};

/// One call the cluster received, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Register,
    Heartbeat(Vec<VolumeId>),
    ConnectionInfo(VolumeId),
    Volume(VolumeId),
    Report(VolumeId, Vec<ReplicaReport>),
    Request(VolumeId, ReplicaId),
    /// An acknowledgement and whether it moved the stage (false for a repeat).
    Ack(VolumeId, Stage, bool),
}

#[derive(Debug)]
struct Volume {
    info: VolumeInfo,
    /// When each replica entered its current state.
    since: BTreeMap<ReplicaId, Instant>,
    sync: BTreeMap<ReplicaId, u16>,
}

#[derive(Debug, Default)]
struct Mem {
    volumes: BTreeMap<VolumeId, Volume>,
    heartbeats: BTreeMap<String, Instant>,
    registered: std::collections::BTreeSet<String>,
    /// The last replacement id handed out.
    last_replacement: Option<ReplacementId>,
    calls: Vec<Call>,
    unavailable: bool,
    /// Commit the next acknowledgement but answer as if no monitor had answered.
    lose_next_ack_answer: bool,
    /// Refuse the next acknowledgement as if no monitor had answered, committing nothing
    /// (the agent's host step done, its acknowledgement never arrived).
    drop_next_ack: bool,
}

/// See the module documentation. Clones share one cluster.
#[derive(Debug, Clone, Default)]
pub struct MemoryCluster {
    inner: Arc<Mutex<Mem>>,
}

fn not_found(what: impl std::fmt::Display) -> ClusterError {
    ClusterError::refused(Refusal::NotFound, format!("unknown {what}"))
}

impl MemoryCluster {
    pub fn new() -> Self {
        MemoryCluster::default()
    }

    fn lock(&self) -> MutexGuard<'_, Mem> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend registers a volume with its replicas (their states as given).
    pub fn add_volume(&self, info: VolumeInfo) {
        let now = Instant::now();
        let since = info.replicas.iter().map(|r| (r.id, now)).collect();
        self.lock().volumes.insert(
            info.id,
            Volume {
                info,
                since,
                sync: BTreeMap::new(),
            },
        );
    }

    /// The backend supplies the new replica of the requested replacement.
    pub fn supply(
        &self,
        volume: &VolumeId,
        mut new: ReplicaInfo,
    ) -> Result<Replacement, ClusterError> {
        let mut mem = self.lock();
        let v = mem
            .volumes
            .get_mut(volume)
            .ok_or_else(|| not_found(volume))?;
        let Some(rep) = v.info.replacement.as_mut() else {
            return Err(ClusterError::refused(
                Refusal::NotYet,
                "no replacement requested",
            ));
        };
        if rep.stage != Stage::Requested {
            return Err(ClusterError::refused(
                Refusal::NotYet,
                format!("replacement is {}", rep.stage),
            ));
        }
        // As the registry does: listed, resyncing-to-be, not safe to connect yet.
        new.state = ReplicaState::Synchronizing;
        rep.new = Some(new.clone());
        rep.stage = Stage::Supplied;
        let rep = rep.clone();
        v.since.insert(new.id, Instant::now());
        v.info.replicas.push(new);
        Ok(rep)
    }

    /// The backend confirms the old replica deleted: the replacement is done.
    pub fn confirm_deleted(&self, volume: &VolumeId) -> Result<(), ClusterError> {
        let mut mem = self.lock();
        let v = mem
            .volumes
            .get_mut(volume)
            .ok_or_else(|| not_found(volume))?;
        let Some(rep) = v.info.replacement.clone() else {
            return Err(ClusterError::refused(Refusal::NotYet, "no replacement"));
        };
        if rep.stage != Stage::Retired {
            return Err(ClusterError::refused(
                Refusal::NotYet,
                format!("replacement is {}", rep.stage),
            ));
        }
        v.info.replicas.retain(|r| r.id != rep.old);
        v.since.remove(&rep.old);
        v.info.replacement = None;
        Ok(())
    }

    /// The volume as held now.
    pub fn volume_now(&self, volume: &VolumeId) -> Option<VolumeInfo> {
        self.lock().volumes.get(volume).map(|v| v.info.clone())
    }

    pub fn state_of(&self, volume: &VolumeId, replica: &ReplicaId) -> Option<ReplicaState> {
        self.volume_now(volume)
            .and_then(|v| v.replica(replica).map(|r| r.state))
    }

    pub fn sync_of(&self, volume: &VolumeId, replica: &ReplicaId) -> Option<u16> {
        self.lock()
            .volumes
            .get(volume)
            .and_then(|v| v.sync.get(replica).copied())
    }

    pub fn replacement(&self, volume: &VolumeId) -> Option<Replacement> {
        self.volume_now(volume).and_then(|v| v.replacement)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn heartbeats(&self) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| matches!(c, Call::Heartbeat(_)))
            .count()
    }

    /// Make every call fail as if no monitor answered (or stop doing so).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    /// Commit the next acknowledgement, then answer as if the connection broke.
    pub fn lose_next_ack_answer(&self) {
        self.lock().lose_next_ack_answer = true;
    }

    /// Let the next acknowledgement fail as unreachable without committing it.
    pub fn drop_next_ack(&self) {
        self.lock().drop_next_ack = true;
    }

    fn enter(&self, call: Call) -> Result<MutexGuard<'_, Mem>, ClusterError> {
        let mut mem = self.lock();
        if mem.unavailable {
            return Err(ClusterError::Unavailable(
                "test: cluster unreachable".into(),
            ));
        }
        mem.calls.push(call);
        Ok(mem)
    }
}

impl Cluster for MemoryCluster {
    async fn register(&self, host: &HostIdentity) -> Result<(), ClusterError> {
        let mut mem = self.enter(Call::Register)?;
        mem.registered.insert(host.nqn.to_string());
        Ok(())
    }

    async fn heartbeat(
        &self,
        host: &HostIdentity,
        volumes: &[VolumeId],
    ) -> Result<(), ClusterError> {
        let mut mem = self.enter(Call::Heartbeat(volumes.to_vec()))?;
        mem.heartbeats.insert(host.nqn.to_string(), Instant::now());
        mem.registered.insert(host.nqn.to_string());
        Ok(())
    }

    async fn connection_info(
        &self,
        _host: &HostIdentity,
        volume: &VolumeId,
    ) -> Result<VolumeInfo, ClusterError> {
        let mem = self.enter(Call::ConnectionInfo(*volume))?;
        let v = mem
            .volumes
            .get(volume)
            .ok_or_else(|| not_found(format!("volume {volume}")))?;
        let mut info = v.info.clone();
        let (safe, out): (Vec<_>, Vec<_>) = info
            .replicas
            .into_iter()
            .partition(|r| r.state == ReplicaState::Available);
        info.left_out = out
            .iter()
            .map(|r| format!("replica {} is {}", r.id, r.state))
            .collect();
        info.replicas = safe;
        if info.replicas.is_empty() {
            return Err(ClusterError::refused(
                Refusal::NotYet,
                format!(
                    "volume {volume} has no replica safe to use: {}",
                    info.left_out.join(", ")
                ),
            ));
        }
        Ok(info)
    }

    async fn volume(
        &self,
        _host: &HostIdentity,
        volume: &VolumeId,
    ) -> Result<VolumeInfo, ClusterError> {
        let mem = self.enter(Call::Volume(*volume))?;
        mem.volumes
            .get(volume)
            .map(|v| v.info.clone())
            .ok_or_else(|| not_found(format!("volume {volume}")))
    }

    async fn report(
        &self,
        _host: &HostIdentity,
        volume: &VolumeId,
        reports: &[ReplicaReport],
    ) -> Result<(), ClusterError> {
        let mut mem = self.enter(Call::Report(*volume, reports.to_vec()))?;
        let v = mem
            .volumes
            .get_mut(volume)
            .ok_or_else(|| not_found(format!("volume {volume}")))?;
        if let Some(r) = reports
            .iter()
            .find(|r| v.info.replica(&r.replica).is_none())
        {
            return Err(not_found(format!(
                "replica {} of volume {volume}",
                r.replica
            )));
        }
        let now = Instant::now();
        for report in reports {
            if let Some(r) = v.info.replicas.iter_mut().find(|r| r.id == report.replica) {
                if r.state == ReplicaState::Terminating {
                    continue;
                }
                if r.state != report.state {
                    r.state = report.state;
                    v.since.insert(r.id, now);
                }
                match report.sync_permille {
                    Some(p) => {
                        v.sync.insert(r.id, p);
                    }
                    None => {
                        v.sync.remove(&r.id);
                    }
                }
            }
        }
        Ok(())
    }

    async fn request_replacement(
        &self,
        _host: &HostIdentity,
        volume: &VolumeId,
        replica: &ReplicaId,
    ) -> Result<Replacement, ClusterError> {
        let mut mem = self.enter(Call::Request(*volume, *replica))?;
        let id = mem
            .last_replacement
            .map_or(ReplacementId::FIRST, ReplacementId::next);
        let v = mem
            .volumes
            .get_mut(volume)
            .ok_or_else(|| not_found(format!("volume {volume}")))?;
        if let Some(rep) = &v.info.replacement {
            if &rep.old == replica {
                return Ok(rep.clone());
            }
            return Err(ClusterError::refused(
                Refusal::NotYet,
                format!("replica {} is being replaced already", rep.old),
            ));
        }
        let r = v
            .info
            .replica(replica)
            .ok_or_else(|| not_found(format!("replica {replica} of volume {volume}")))?;
        if !r.state.is_bad() {
            return Err(ClusterError::refused(
                Refusal::NotYet,
                format!("replica {replica} is {}", r.state),
            ));
        }
        let since = v.since.get(replica).copied().unwrap_or_else(Instant::now);
        let waited = Instant::now().saturating_duration_since(since);
        if waited < v.info.grace {
            return Err(ClusterError::refused(
                Refusal::NotYet,
                format!(
                    "replica {replica} has been {} for {} ms of the {} ms grace period",
                    r.state,
                    waited.as_millis(),
                    v.info.grace.as_millis()
                ),
            ));
        }
        let rep = Replacement {
            id,
            old: *replica,
            new: None,
            stage: Stage::Requested,
        };
        v.info.replacement = Some(rep.clone());
        mem.last_replacement = Some(id);
        Ok(rep)
    }

    async fn acknowledge(
        &self,
        _host: &HostIdentity,
        volume: &VolumeId,
        replacement: &Replacement,
        done: Stage,
    ) -> Result<Replacement, ClusterError> {
        let mut mem = self.lock();
        if mem.unavailable {
            return Err(ClusterError::Unavailable(
                "test: cluster unreachable".into(),
            ));
        }
        if std::mem::take(&mut mem.drop_next_ack) {
            return Err(ClusterError::Unavailable(
                "test: acknowledgement dropped".into(),
            ));
        }
        let lose = std::mem::take(&mut mem.lose_next_ack_answer);
        let v = mem
            .volumes
            .get_mut(volume)
            .ok_or_else(|| not_found(format!("volume {volume}")))?;
        let Some(rep) = v
            .info
            .replacement
            .as_mut()
            .filter(|r| r.id == replacement.id)
        else {
            return Err(not_found(format!(
                "replacement {} of volume {volume}",
                replacement.id
            )));
        };
        let next = match rep.stage {
            Stage::Supplied => Some(Stage::Attached),
            Stage::Attached => Some(Stage::Synced),
            Stage::Synced => Some(Stage::Retired),
            _ => None,
        };
        let moved = if done <= rep.stage {
            false
        } else if Some(done) == next {
            rep.stage = done;
            true
        } else {
            return Err(ClusterError::refused(
                Refusal::NotYet,
                format!("replacement is {}, cannot acknowledge {done}", rep.stage),
            ));
        };
        let rep = rep.clone();
        if moved {
            let now = Instant::now();
            let new = rep.new.as_ref().map(|n| n.id);
            for r in v.info.replicas.iter_mut() {
                let state = match done {
                    Stage::Attached if Some(&r.id) == new.as_ref() => ReplicaState::Synchronizing,
                    Stage::Synced if Some(&r.id) == new.as_ref() => ReplicaState::Available,
                    Stage::Synced if r.id == rep.old => ReplicaState::Terminating,
                    _ => continue,
                };
                if r.state != state {
                    r.state = state;
                    v.since.insert(r.id, now);
                }
            }
        }
        mem.calls.push(Call::Ack(*volume, done, moved));
        if lose {
            return Err(ClusterError::Unavailable("test: answer lost".into()));
        }
        Ok(rep)
    }
}
