//! gwmon's initiator side: `nvmeof-agent`, after the os-brick NVMe-oF connector with
//! MDRAID replication and the "NVMeoF Connection Agent" spec (seeds 000-002). It builds an
//! MD RAID1 over the replicas of a volume and keeps it healthy: reports what it sees of
//! each replica to the monitors and carries out the replacements they commit.
//!
//! * [`host`]: host access behind a trait: sysfs snapshots, `nvme`/`mdadm` commands, a
//!   simulated host for tests.
//! * [`cluster`]: what the agent needs from the monitors, as a trait; the gRPC client and an
//!   in-memory fake.
//! * [`observe`]: a replica's state as the host shows it (pure).
//! * [`attach`]: the idempotent host steps (connect, wait for a device, disconnect).
//! * [`connector`]: `connect`, `disconnect`, `extend`.
//! * [`replace`]: one replacement stage's step.
//! * [`daemon`]: `run`, the periodic pass.
//! * [`state`]: the local record of connected volumes.
//! * [`cli`]: the command line, its checks, and running a command.
//! * [`config`]: settings and their defaults.
//! * [`error`]: the error type and exit codes.

pub mod attach;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connector;
pub mod daemon;
pub mod error;
pub mod host;
pub mod observe;
pub mod replace;
pub mod state;

pub use config::AgentConfig;
pub use error::AgentError;
