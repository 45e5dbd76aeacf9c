//! Running `nvme` and `mdadm`: with an optional prefix (`sudo -n`), a time limit, and
//! errors that say what happened in one line.

use std::process::Stdio;
use std::time::Duration;

use super::command::HostCommand;
use super::HostError;

/// How commands are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// Words put before the tool, e.g. `["sudo", "-n"]`; empty to run it directly.
    pub prefix: Vec<String>,
    /// Longest a command may take. `nvme connect` to an unreachable target blocks for the
    /// kernel's connect timeout, and mdadm can wait on a busy array; neither may hold up
    /// the daemon's period for ever.
    pub timeout: Duration,
}

/// The longest line count of a tool's stderr kept in an error: the explanation is at the
/// end, and a whole usage text would not fit in one log line.
const STDERR_LINES: usize = 3;

impl Runner {
    /// The program and arguments actually spawned.
    pub fn argv(&self, cmd: &HostCommand) -> Vec<String> {
        let mut argv = self.prefix.clone();
        argv.push(cmd.tool().program().to_owned());
        argv.extend(cmd.args());
        argv
    }

    pub async fn run(&self, cmd: &HostCommand) -> Result<String, HostError> {
        let argv = self.argv(cmd);
        let text = cmd.to_string();
        let Some((program, args)) = argv.split_first() else {
            // argv always holds the tool at least; kept as an error rather than a panic.
            return Err(HostError::Spawn {
                command: text,
                source: std::io::Error::other("empty command line"),
            });
        };
        let tool = cmd.tool();
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A command cut off by the timeout (or by shutdown) must not live on.
            .kill_on_drop(true)
            // Plain C locale: the messages matched ("already connected", "No md
            // superblock") are the English ones.
            .env("LC_ALL", "C");
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HostError::ToolMissing {
                    program: program.clone(),
                    package: if self.prefix.is_empty() {
                        tool.package()
                    } else {
                        "it (it is the command prefix)"
                    },
                })
            }
            Err(source) => {
                return Err(HostError::Spawn {
                    command: text,
                    source,
                })
            }
        };
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(o)) => o,
            Ok(Err(source)) => {
                return Err(HostError::Spawn {
                    command: text,
                    source,
                })
            }
            Err(_) => {
                return Err(HostError::Timeout {
                    command: text,
                    seconds: self.timeout.as_secs(),
                })
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        // `sudo` (or `env`) as prefix: the tool missing shows as the prefix's complaint
        // ("sudo: nvme: command not found", "env: 'nvme': No such file or directory", a
        // shell's exit code 127), not as ENOENT.
        if !self.prefix.is_empty()
            && (output.status.code() == Some(127) || stderr.contains("command not found"))
            && stderr.contains(tool.program())
        {
            return Err(HostError::ToolMissing {
                program: tool.program().to_owned(),
                package: tool.package(),
            });
        }
        Err(HostError::Failed {
            command: text,
            status: status_text(&output.status),
            stderr: last_lines(&stderr, STDERR_LINES),
        })
    }
}

fn status_text(status: &std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    "no exit code".to_owned()
}

/// The last `n` non-empty lines of `text`, joined by " | " to stay one line.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(n);
    let joined = lines[start..].join(" | ");
    if joined.is_empty() {
        "(no message)".to_owned()
    } else {
        joined
    }
}
