//! A registered host: who it is and when it was last heard from.

use gwmon_proto::domain::{HostIdentity, VolumeId};
use serde::{Deserialize, Serialize};

use crate::map::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub identity: HostIdentity,
    pub registered_at: Timestamp,
    /// The time of the last committed heartbeat; `None` until the first. Readers compare it
    /// with their own clock to tell a silent host, whose reports may be out of date.
    pub last_heartbeat: Option<Timestamp>,
    /// The volumes the host said it has connected in its last heartbeat, sorted.
    pub volumes: Vec<VolumeId>,
}
