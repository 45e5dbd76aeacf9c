//! The fencer that runs a command: the storage backend's own blocklist tool, or a script
//! around it.
//!
//! # The command line
//!
//! The configured command is run directly (`execve`, **never through a shell**, so no id
//! or nonce can inject anything) with the configured arguments first, then the order:
//!
//! ```text
//! COMMAND [ARGS...] --gateway ID --pool POOL --group GROUP --epoch N [--nonce X]...
//! ```
//!
//! Every value is a separate argument, never `--key=value`. `GROUP` may be the empty
//! string (Ceph's default group). Gateway, pool and group ids never start with `-` (the id
//! types refuse it); nonces are opaque printable ASCII, passed in sorted order, one
//! `--nonce` each, possibly none, so a parser must take the word after `--nonce` verbatim.
//! The environment is the monitor's, stdin is `/dev/null`.
//!
//! Exit code 0 means the gateway is fenced. Anything else, or running past the timeout, is
//! a failed attempt: the runner retries it later, so the command must be idempotent.
//! stdout and stderr are logged; the end of stderr goes into the error.
//!
//! # Example: Ceph
//!
//! ```sh
//! #!/bin/sh
//! # /usr/libexec/gwmon/fence-ceph: blocklist every RADOS client of the failed gateway.
//! # Re-adding an entry only refreshes its expiry, so running it twice is harmless.
//! set -eu
//! while [ $# -gt 0 ]; do
//!   case "$1" in
//!     --nonce) ceph osd blocklist add "$2" 3600; shift 2 ;;
//!     *) shift 2 ;;
//!   esac
//! done
//! ```
//!
//! # Timeouts
//!
//! On timeout the command's whole process group is killed (it runs in a group of its own,
//! so a script's children go too, not just the shell) and the child is reaped. The child is
//! also killed if the attempt is dropped (`kill_on_drop`), e.g. when the monitor shuts down.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{one_line_tail, BoxFuture, FenceError, FenceOrder, Fencer};

/// Bytes of stderr quoted in an error: enough for a tool's error message, short enough for
/// one log line and a CLI column.
const ERROR_TAIL: usize = 500;
/// Bytes of each stream kept for the log: the end matters, and a chatty command must not
/// grow the monitor's memory.
const KEEP: usize = 8 * 1024;
/// After the command exits, how long its output is still read. A child it left running in
/// the background may hold the pipes open; that must not turn a success into a timeout.
const DRAIN: Duration = Duration::from_millis(500);

/// Runs `command args... --gateway ... --nonce ...` per fence; see the module docs.
#[derive(Debug, Clone)]
pub struct ExecFencer {
    command: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

impl ExecFencer {
    /// `args` come before the order's arguments; `timeout` bounds one attempt.
    pub fn new(command: impl Into<PathBuf>, args: Vec<String>, timeout: Duration) -> Self {
        ExecFencer {
            command: command.into(),
            args,
            timeout,
        }
    }

    pub fn command(&self) -> &Path {
        &self.command
    }

    /// The arguments the command gets for `order` (everything after the program itself).
    pub fn argv(&self, order: &FenceOrder) -> Vec<String> {
        let mut argv = self.args.clone();
        argv.extend([
            "--gateway".to_owned(),
            order.gateway.to_string(),
            "--pool".to_owned(),
            order.key.pool.to_string(),
            "--group".to_owned(),
            order.key.group.to_string(),
            "--epoch".to_owned(),
            order.epoch.0.to_string(),
        ]);
        for n in &order.nonces {
            argv.push("--nonce".to_owned());
            argv.push(n.to_string());
        }
        argv
    }

    async fn run(&self, order: &FenceOrder) -> Result<(), FenceError> {
        let mut cmd = Command::new(&self.command);
        cmd.args(self.argv(order))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // A group of its own, so a timeout can kill everything the command started.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|source| FenceError::Spawn {
            command: self.command.display().to_string(),
            source,
        })?;
        let pid = child.id();
        debug!(command = %self.command.display(), pid, key = %order.key, gateway = %order.gateway, epoch = %order.epoch, "fence command started");

        let mut out = Output::default();
        let finished = tokio::time::timeout(self.timeout, out.collect(&mut child)).await;
        if finished.is_err() {
            if out.status.is_none() {
                // Not reaped yet, so the pid (and the group id) cannot have been reused.
                kill_group(pid);
            }
            if let Err(e) = child.kill().await {
                debug!(error = %e, "fence command already gone");
            }
        }
        self.log(order, &out);
        // An exit status, once known, decides, even if the output drain ran past the timeout.
        match (out.status, finished) {
            (Some(status), _) if status.success() => Ok(()),
            (Some(status), _) => Err(FenceError::Exit {
                code: status.code(),
                stderr: one_line_tail(&out.stderr, ERROR_TAIL),
            }),
            (None, Err(_)) => Err(FenceError::Timeout {
                what: "fence command",
                after: self.timeout,
            }),
            (None, Ok(Err(e))) => Err(FenceError::Spawn {
                command: self.command.display().to_string(),
                source: e,
            }),
            // `collect` returns `Ok` only once the status is known.
            (None, Ok(Ok(()))) => Err(FenceError::Exit {
                code: None,
                stderr: one_line_tail(&out.stderr, ERROR_TAIL),
            }),
        }
    }

    fn log(&self, order: &FenceOrder, out: &Output) {
        let ok = out.status.is_some_and(|s| s.success());
        if !out.stdout.is_empty() {
            info!(key = %order.key, gateway = %order.gateway, epoch = %order.epoch,
                stdout = %one_line_tail(&out.stdout, KEEP), "fence command output");
        }
        if !out.stderr.is_empty() {
            let stderr = one_line_tail(&out.stderr, KEEP);
            if ok {
                info!(key = %order.key, gateway = %order.gateway, epoch = %order.epoch, %stderr, "fence command stderr");
            } else {
                warn!(key = %order.key, gateway = %order.gateway, epoch = %order.epoch, %stderr, "fence command stderr");
            }
        }
    }
}

impl Fencer for ExecFencer {
    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
        Box::pin(self.run(order))
    }

    fn name(&self) -> &'static str {
        "exec"
    }
}

/// What a run produced so far. It lives outside the timed future, so whatever was read
/// before a timeout is still there to log.
#[derive(Default)]
struct Output {
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Output {
    /// Wait for the child while reading both pipes (a full pipe would block it), then read
    /// what is left for at most [`DRAIN`]. `Err` only if waiting for the child failed.
    async fn collect(&mut self, child: &mut Child) -> std::io::Result<()> {
        let mut stdout: Option<ChildStdout> = child.stdout.take();
        let mut stderr: Option<ChildStderr> = child.stderr.take();
        let mut out_buf = [0u8; 4096];
        let mut err_buf = [0u8; 4096];
        let mut drain_until: Option<Instant> = None;
        loop {
            if self.status.is_some() && stdout.is_none() && stderr.is_none() {
                return Ok(());
            }
            tokio::select! {
                s = child.wait(), if self.status.is_none() => {
                    self.status = Some(s?);
                    drain_until = Some(Instant::now() + DRAIN);
                }
                n = read(&mut stdout, &mut out_buf), if stdout.is_some() => {
                    keep(&mut self.stdout, &mut stdout, n, &out_buf);
                }
                n = read(&mut stderr, &mut err_buf), if stderr.is_some() => {
                    keep(&mut self.stderr, &mut stderr, n, &err_buf);
                }
                () = tokio::time::sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() => {
                    return Ok(());
                }
            }
        }
    }
}

async fn read<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => Ok(0),
    }
}

/// Append what was read, keeping only the last [`KEEP`] bytes; close the pipe at its end.
fn keep<R>(kept: &mut Vec<u8>, pipe: &mut Option<R>, n: std::io::Result<usize>, buf: &[u8]) {
    match n {
        Ok(n) if n > 0 => {
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > KEEP {
                kept.drain(..kept.len() - KEEP);
            }
        }
        _ => *pipe = None,
    }
}

/// SIGKILL the process group the child leads.
#[cfg(unix)]
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) else {
        return;
    };
    // SAFETY: kill(2) takes no pointers. `-pid` names the process group created for the
    // child by `process_group(0)` (its id is the child's pid), and the child has not been
    // reaped, so that id still belongs to it; `pid > 1` keeps `-pid` from meaning "our own
    // group" (0) or "every process" (-1).
    let rc = unsafe { libc::kill(-pid, libc::SIGKILL) };
    if rc != 0 {
        debug!(pid, error = %std::io::Error::last_os_error(), "cannot kill the fence command's process group");
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: Option<u32>) {}
