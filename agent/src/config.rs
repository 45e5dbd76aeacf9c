//! The agent's settings, built from the command line (see `bin/nvmeof-agent.rs`).

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::HostIdentity;

/// The default period of `run`: the Cinder spec's 30 s. Replica health changes slowly
/// next to it, and md's failfast takes a failed leg out of service at once anyway; the
/// period only bounds how late the cluster hears of it.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30);

/// How long a replica's controller may be away before I/O to it fails instead of waiting
/// (nvme's fast_io_fail_tmo). Controllers are connected with ctrl-loss-tmo -1, so without
/// it the kernel queues a lost leg's writes until the target returns, and md's RAID1 write,
/// which waits for both legs, waits with them: the whole array stops. Failing them lets md
/// fail the leg and go on with the other.
pub const DEFAULT_FAST_IO_FAIL: Duration = Duration::from_secs(2);

/// How long `connect` waits for a namespace's block device after `nvme connect`: the
/// kernel scans namespaces asynchronously (os-brick retries for about as long).
pub const DEFAULT_DEVICE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub identity: HostIdentity,
    /// Period of the daemon's pass.
    pub period: Duration,
    /// Longest wait for a block device to appear after connecting.
    pub device_wait: Duration,
    /// How long a lost replica's controller queues I/O before failing it (whole seconds;
    /// see [`DEFAULT_FAST_IO_FAIL`]).
    pub fast_io_fail: Duration,
    /// Where connected volumes are recorded.
    pub state_dir: PathBuf,
}
