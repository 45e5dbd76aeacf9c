//! Host access: everything the agent reads from or does to the machine goes through [`Host`].
//!
//! Two implementations: [`linux::LinuxHost`] reads sysfs under a configurable root and runs
//! `nvme`/`mdadm` with a configurable prefix (`sudo -n`), and [`sim::SimHost`] models
//! controllers and md legs in memory for tests. The daemon and the connector are written
//! against the trait only, which is what lets their tests run without a kernel.
//!
//! * [`model`]: the typed snapshot (controllers, arrays, legs).
//! * [`parse`]: pure parsers of sysfs attribute contents.
//! * [`command`]: the `nvme`/`mdadm` invocations as values.
//! * [`sysfs`]: reading a snapshot from a sysfs tree.
//! * [`runner`]: running a command with a prefix and a timeout.
//! * [`linux`]: the real host.
//! * [`sim`]: the simulated host.

pub mod command;
pub mod linux;
pub mod model;
pub mod parse;
pub mod runner;
pub mod sim;
pub mod sysfs;

use std::future::Future;
use std::path::PathBuf;

pub use command::{ConnectSpec, HostCommand, Tool};
pub use model::{
    Address, ArrayName, ArrayState, Controller, CtrlState, Leg, LegFlags, LegState, MdArray,
    Namespace, Snapshot, SyncAction, SyncProgress, Transport,
};

/// What went wrong reading the host or running a command. Each variant's message is one
/// line that says what to do or what the tool said.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unexpected content in {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{program} not found: install {package}")]
    ToolMissing {
        program: String,
        package: &'static str,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        /// `exit code 1`, `killed by signal 9`.
        status: String,
        /// The tool's own explanation, trimmed to its last lines.
        stderr: String,
    },
    #[error("`{command}` did not finish within {seconds} s")]
    Timeout { command: String, seconds: u64 },
}

impl HostError {
    /// Whether a failed command's message contains `needle` (say mdadm's "No md superblock
    /// detected"): the tools' exit codes are too coarse to tell outcomes apart.
    pub fn says(&self, needle: &str) -> bool {
        match self {
            HostError::Failed { stderr, .. } => stderr.contains(needle),
            _ => false,
        }
    }
}

/// The machine, as the agent needs it.
pub trait Host: Send + Sync + 'static {
    /// Read every NVMe-oF controller and md array now present.
    ///
    /// Synchronous on purpose: sysfs attributes are served from kernel memory, a pass over
    /// a host's few dozen files takes microseconds, and a snapshot taken without awaits
    /// in between is as close to one moment as sysfs allows.
    fn snapshot(&self) -> Result<Snapshot, HostError>;

    /// Run one command; its standard output on success.
    fn run(&self, cmd: HostCommand) -> impl Future<Output = Result<String, HostError>> + Send;

    /// Set a controller's `fast_io_fail_tmo` (seconds): once it has been reconnecting that
    /// long, its I/O fails instead of waiting. nvme-cli before 2.4 has no option for it at
    /// connect time, so the agent sets it in sysfs on every replica controller it uses.
    fn set_fast_io_fail(&self, controller: &str, seconds: u64) -> Result<(), HostError>;
}

impl<H: Host> Host for std::sync::Arc<H> {
    fn snapshot(&self) -> Result<Snapshot, HostError> {
        (**self).snapshot()
    }

    fn run(&self, cmd: HostCommand) -> impl Future<Output = Result<String, HostError>> + Send {
        (**self).run(cmd)
    }

    fn set_fast_io_fail(&self, controller: &str, seconds: u64) -> Result<(), HostError> {
        (**self).set_fast_io_fail(controller, seconds)
    }
}
