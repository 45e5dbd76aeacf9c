//! The real host: sysfs under a root directory, `nvme`/`mdadm` through a [`Runner`].

use std::path::PathBuf;

use super::command::HostCommand;
use super::model::Snapshot;
use super::runner::Runner;
use super::{sysfs, Host, HostError};

#[derive(Debug, Clone)]
pub struct LinuxHost {
    /// `/` on a real machine; a generated tree in tests, or a container's view of the host.
    pub root: PathBuf,
    pub runner: Runner,
}

impl LinuxHost {
    pub fn new(root: PathBuf, runner: Runner) -> Self {
        LinuxHost { root, runner }
    }
}

impl Host for LinuxHost {
    fn snapshot(&self) -> Result<Snapshot, HostError> {
        sysfs::read_snapshot(&self.root)
    }

    async fn run(&self, cmd: HostCommand) -> Result<String, HostError> {
        tracing::info!(command = %cmd, "running");
        self.runner.run(&cmd).await
    }

    fn set_fast_io_fail(&self, controller: &str, seconds: u64) -> Result<(), HostError> {
        let path = sysfs::controller_dir(&self.root, controller).join("fast_io_fail_tmo");
        tracing::info!(%controller, seconds, "setting fast_io_fail_tmo");
        std::fs::write(&path, seconds.to_string())
            .map_err(|source| HostError::Write { path, source })
    }
}
