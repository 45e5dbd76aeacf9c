//! Deterministic simulation of gwmon.
//!
//! The real monitor (openraft, the map engine, the gateway, admin and Raft gRPC services,
//! liveness, the fence runner) and the real gwmon-client session run on turmoil's simulated
//! hosts, network and clock. Around them, everything a real deployment has is simulated and
//! recorded: each monitor's disk ([`gwmon_monitor::store::MemStore`], which loses unflushed
//! writes at a crash) and wall clock (which faults skew and jump), each gateway's target
//! (which outlives the gateway process, as a kernel target does), the storage backend with its
//! blocklist, the hosts whose I/O goes through the targets, and an operator.
//!
//! A run ([`run::run`]) draws a fault schedule from its seed, injects it during a safety
//! phase, heals everything for a liveness phase, and checks the history ([`check`]). One seed
//! replays one run exactly: turmoil and tokio are seeded (`--cfg tokio_unstable`, set in
//! `.cargo/config.toml`), the client's randomness is seeded, and iteration order is fixed.
//!
//! * [`net`]: tonic over turmoil's sockets.
//! * [`world`]: what outlives the processes, and the history.
//! * [`nodes`]: the monitor, gateway and operator hosts.
//! * [`run`]: the fault schedule and the driver.
//! * [`check`]: the checks, from what hosts and storage saw.
//! * [`real`]: the same checks over real `gwmon` and `gwmon-gateway` processes in network
//!   namespaces (`sim/tests/real.rs`).

pub mod agent;
pub mod check;
pub mod logs;
pub mod net;
pub mod nodes;
pub mod real;
pub mod run;
pub mod world;
