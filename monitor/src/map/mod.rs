//! The gateway map engine: a pure, deterministic state machine. No I/O, no clock: time
//! arrives inside each command, so every replica computes the same map.
//!
//! * [`command`]: everything that can change the map.
//! * [`engine`]: the map and `apply`, which runs each command as a transaction.
//! * [`group`]: one `(pool, group)`: gateways, ANA group holders, fences, disasters.
//! * [`gateway`]: one gateway, its availability and admin state.
//! * [`commands`]: what each command does to a group.
//! * [`transition`]: release, fence, promote, failback, repair: the moves of ANA groups.
//! * [`check`]: the invariants every result must satisfy.
//! * [`slice`]: what a gateway is told.
//! * [`damping`]: flap damping of gateways that keep going down.
//! * [`placement`]: namespace balancing, the moves of namespaces between ANA groups.
//! * [`features`]: the levels of the engine's rules, raised once every monitor has them.
//! * [`config`], [`time`], [`event`], [`error`]: tunables, timestamps, events, refusals.

pub mod check;
pub mod command;
pub mod commands;
pub mod config;
pub mod damping;
pub mod engine;
pub mod error;
pub mod event;
pub mod features;
pub mod gateway;
pub mod group;
pub mod placement;
pub mod slice;
pub mod time;
pub mod transition;

pub use command::Command;
pub use config::{ConfigUpdate, MapConfig};
pub use engine::{Applied, BeaconCheck, GatewayMap, Outcome};
pub use error::MapError;
pub use event::Event;
pub use gateway::{AdminState, AnaState, Availability, Gateway};
pub use group::{AnaGroup, DisasterState, Fence, GroupState, Holder, Release};
pub use time::Timestamp;
