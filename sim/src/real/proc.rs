//! A child process that is killed when dropped, and signals to it.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running process of the harness (monitor or gateway), its output in a log file.
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Start `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Proc, String> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| format!("cannot open {}: {e}", log.display()))
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        Ok(Proc { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig` (`STOP`, `CONT`, ...) with kill(1).
    pub fn signal(&self, sig: &str) -> Result<(), String> {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Ok(())
        } else {
            Err(format!("kill -{sig} {pid} failed"))
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(mut self) {
        self.kill_and_wait();
    }

    fn kill_and_wait(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it has exited (reaping it if so), with its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}
