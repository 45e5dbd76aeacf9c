//! Domain types: what the rest of gwmon works with once a value has been validated.

pub mod error;
pub mod ids;
pub mod nqn;
pub mod replica;
pub mod report;
pub mod session;
pub mod uuid;

pub use error::{Field, FieldError, Invalid};
pub use ids::{AnaGroupId, Epoch, GatewayId, Group, GroupKey, Location, MonitorId, Nonce, Pool};
pub use nqn::Nqn;
pub use replica::{
    HostId, HostIdentity, HostName, Portal, ReplacementId, ReplicaId, ReplicaReport, ReplicaSpec,
    ReplicaState, Stage, Transport, VolumeAlias, VolumeId, VolumeSpec,
};
pub use report::{
    share_nonces, AnaAccess, AnaGroupView, GatewayReport, Listener, MapSlice, Namespace,
    NamespacePlacement, ReportedAvailability, SliceAvailability, Subsystem,
};
pub use session::{Ack, GatewayMessage, Hello, MonitorMessage, ShutdownKind};
pub use uuid::Uuid;
