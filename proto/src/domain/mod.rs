//! Domain types: what the rest of gwmon works with once a value has been validated.

pub mod error;
pub mod ids;
pub mod nqn;
pub mod report;
pub mod session;

pub use error::{Field, FieldError, Invalid};
pub use ids::{AnaGroupId, Epoch, GatewayId, Group, GroupKey, Location, MonitorId, Nonce, Pool};
pub use nqn::Nqn;
pub use report::{
    AnaAccess, AnaGroupView, GatewayReport, Listener, MapSlice, Namespace, ReportedAvailability,
    SliceAvailability, Subsystem,
};
pub use session::{Ack, GatewayMessage, Hello, MonitorMessage};
