//! The replica registry: a pure, deterministic state machine beside the gateway map, with
//! the same rules (no I/O, no clock: time arrives inside each command), replicated through
//! the same Raft log.
//!
//! Hosts that build an MD RAID1 over replicated NVMe-oF volumes report what they see of
//! each replica; the registry keeps the replicas' health, decides which replicas are safe
//! to build an array from, and drives the replacement of a bad replica in committed stages.
//!
//! * [`command`]: everything that can change the registry.
//! * [`registry`]: the registry and `apply`, which runs each command as a transaction.
//! * [`volume`]: a volume's replicas, their states and the in-sync generation.
//! * [`replacement`]: a replacement and the order of its stages.
//! * [`connection`]: which replicas a host may connect, and why the others not.
//! * [`host`], [`event`], [`error`]: hosts, events, refusals.

pub mod command;
pub mod connection;
pub mod error;
pub mod event;
pub mod host;
pub mod registry;
pub mod replacement;
pub mod volume;

pub use command::ReplicaCommand;
pub use connection::{Connection, Excluded, Exclusion};
pub use error::ReplicaError;
pub use event::ReplicaEvent;
pub use host::Host;
pub use registry::{Applied, Outcome, ReplicaRegistry};
pub use replacement::Replacement;
pub use volume::{Replica, Volume, NEVER_IN_SYNC};
