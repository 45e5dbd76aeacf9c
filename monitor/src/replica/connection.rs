//! What a host may build a volume's array from: the replicas safe to use, and why the
//! others are left out. A pure read of a [`Volume`].

use gwmon_proto::domain::{ReplicaId, ReplicaSpec, ReplicaState};
use serde::{Deserialize, Serialize};

use super::error::ReplicaError;
use super::volume::{Volume, NEVER_IN_SYNC};

/// Why a replica is left out of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exclusion {
    /// A host reported it faulty: md failed it, its data cannot be trusted.
    Faulty,
    /// A replacement is retiring it.
    Terminating,
    /// It dropped out of the in-sync set while others kept receiving writes.
    Stale,
    /// The new replica of a replacement, before its first sync completed.
    NotSynced,
    /// Being resynchronized while no in-sync replica is available: md is rebuilding it
    /// from a leg the registry does not hold in sync, so its data is incomplete.
    Resyncing,
}

/// A replica left out, with a one-line explanation for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub replica: ReplicaId,
    pub reason: Exclusion,
    pub message: String,
}

/// The answer to "what do I connect" for one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The replicas safe to build the array from, never empty. Some may be missing:
    /// unreachable when last reported but holding the newest data.
    pub replicas: Vec<ReplicaSpec>,
    pub excluded: Vec<Excluded>,
    /// The volume's in-sync generation the answer was computed at.
    pub generation: u64,
}

/// Which replicas of `volume` a host may connect. Refuses with
/// [`ReplicaError::NoSafeReplica`], carrying every reason, when none is: an array built from
/// what is left would serve old or broken data, so building none is the safe answer.
pub fn connection(volume: &Volume) -> Result<Connection, ReplicaError> {
    let mut replicas = Vec::new();
    let mut excluded = Vec::new();
    for r in volume.replicas.values() {
        let id = r.spec.id;
        let left_out = if r.state == ReplicaState::Terminating {
            Some((
                Exclusion::Terminating,
                format!("replica {id} is being retired by a replacement"),
            ))
        } else if r.generation == NEVER_IN_SYNC {
            Some((
                Exclusion::NotSynced,
                format!("replica {id} is a new replica that has not completed its first sync"),
            ))
        } else if volume.is_stale(r) {
            Some((
                Exclusion::Stale,
                format!(
                    "replica {id} is stale: it left the in-sync set at generation {} and the volume is at generation {}, so it misses writes",
                    r.generation, volume.generation
                ),
            ))
        } else if r.state == ReplicaState::Faulty {
            Some((
                Exclusion::Faulty,
                format!("replica {id} was reported faulty"),
            ))
        } else if r.state == ReplicaState::Synchronizing {
            Some((
                Exclusion::Resyncing,
                format!("replica {id} is being resynchronized and its data is incomplete"),
            ))
        } else {
            None
        };
        match left_out {
            Some((reason, message)) => excluded.push(Excluded {
                replica: id,
                reason,
                message,
            }),
            None => replicas.push(r.spec.clone()),
        }
    }
    if replicas.is_empty() {
        return Err(ReplicaError::NoSafeReplica {
            volume: volume.spec.id,
            reasons: excluded.into_iter().map(|e| e.message).collect(),
        });
    }
    Ok(Connection {
        replicas,
        excluded,
        generation: volume.generation,
    })
}
