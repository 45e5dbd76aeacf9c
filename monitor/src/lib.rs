//! The gwmon monitor.
//!
//! * [`map`]: the pure gateway-map engine (no I/O, no clock).
//! * [`replica`]: the pure replica-registry engine: hosts, replicated volumes, replacements.
//! * [`codec`]: versioned binary encodings of everything the monitor persists.
//! * [`store`]: the narrow byte-oriented storage under Raft (redb by default, sled for older data directories).
//! * [`raft`]: replication of the map with openraft: types, storage adapters, network.
//! * [`core`]: proposing commands and reading the map, shared by every service.
//! * [`liveness`]: the leader's beacon timers.
//! * [`balance`]: the leader's namespace balancing steps.
//! * [`events`]: the window of applied events behind the `WatchEvents` stream.
//! * [`auth`]: who is calling (the client certificate's identity) and what they may do.
//! * [`admin`]: the `AdminService` gRPC service.
//! * [`replica_service`]: the `ReplicaService` gRPC service: host agents and storage backends.
//! * [`session`]: the `GatewayService` gRPC service: one stream per gateway.
//! * [`fence`]: the pluggable fence (none, exec, webhook) and the leader's loop running it.
//! * [`metrics`], [`http`]: Prometheus metrics and the HTTP listener (`/metrics`, `/health`,
//!   `/status`).
//! * [`node`]: one monitor, wired and started; the daemon's `run`.
//! * [`connections`]: the gRPC listener's bound on connections, keepalives and stream limits.
//! * [`config`], [`clock`], [`error`]: settings, time, errors and their gRPC codes.

pub mod admin;
pub mod auth;
pub mod balance;
pub mod clock;
pub mod codec;
pub mod config;
pub mod connections;
pub mod core;
pub mod error;
pub mod events;
pub mod fence;
pub mod http;
pub mod liveness;
pub mod map;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod recover;
pub mod replica;
pub mod replica_service;
pub mod session;
pub mod store;
