//! Choosing and configuring the fencer: the daemon's flat settings become a checked
//! [`FencerConfig`], which builds the `Arc<dyn Fencer>` the runner uses.
//!
//! Everything is checked when the monitor starts, not at the first failover: a fencer that
//! cannot work is found out by the operator who configured it, not by the hosts whose I/O
//! waits on it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::webhook::WebhookAuth;
use super::{ExecFencer, Fencer, FileFencer, NoFence, WebhookFencer};

/// A fencer setting that cannot work. One line, naming the setting (the daemon's
/// `fencer_*` key), so it maps one to one onto the daemon's own configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct FenceConfigError {
    pub setting: &'static str,
    pub message: String,
}

impl FenceConfigError {
    pub fn new(setting: &'static str, message: impl Into<String>) -> Self {
        FenceConfigError {
            setting,
            message: message.into(),
        }
    }
}

/// Which fencer: the daemon's `fencer` setting (`none`, `exec`, `webhook` or `file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FencerKind {
    /// No fencing; see [`NoFence`] for the risk. What a single-node monitor falls back to
    /// when nothing is set; a cluster of several monitors must name it explicitly.
    #[default]
    None,
    Exec,
    Webhook,
    /// [`FileFencer`]: the file adapter's targets.
    File,
}

impl FencerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FencerKind::None => "none",
            FencerKind::Exec => "exec",
            FencerKind::Webhook => "webhook",
            FencerKind::File => "file",
        }
    }
}

impl fmt::Display for FencerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FencerKind {
    type Err = FenceConfigError;
    fn from_str(s: &str) -> Result<Self, FenceConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(FencerKind::None),
            "exec" => Ok(FencerKind::Exec),
            "webhook" => Ok(FencerKind::Webhook),
            "file" => Ok(FencerKind::File),
            _ => Err(FenceConfigError::new(
                "fencer",
                format!("{s:?} is not one of none, exec, webhook, file"),
            )),
        }
    }
}

/// A complete fencer configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FencerConfig {
    /// [`NoFence`].
    #[default]
    None,
    /// [`ExecFencer`]: `command args... --gateway ...`, killed after `timeout`.
    Exec {
        command: PathBuf,
        args: Vec<String>,
        timeout: Duration,
    },
    /// [`WebhookFencer`]: POST to `url`, each attempt bounded by `timeout`, up to `retries`
    /// more attempts `backoff`, `2 × backoff`… apart.
    Webhook {
        url: String,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
        /// The endpoint's CA (https) and the bearer token's file.
        auth: WebhookAuth,
    },
    /// [`FileFencer`]: rewrite the target file `targets` names for the gateway, waiting at
    /// most `timeout` for the file's lock.
    File { targets: String, timeout: Duration },
}

impl FencerConfig {
    pub fn kind(&self) -> FencerKind {
        match self {
            FencerConfig::None => FencerKind::None,
            FencerConfig::Exec { .. } => FencerKind::Exec,
            FencerConfig::Webhook { .. } => FencerKind::Webhook,
            FencerConfig::File { .. } => FencerKind::File,
        }
    }

    /// Refuse values that cannot work, without touching the system.
    pub fn validate(&self) -> Result<(), FenceConfigError> {
        match self {
            FencerConfig::None => Ok(()),
            FencerConfig::Exec {
                command, timeout, ..
            } => {
                if command.as_os_str().is_empty() {
                    return Err(FenceConfigError::new(
                        "fencer_command",
                        "must name a program",
                    ));
                }
                positive("fencer_timeout_ms", *timeout)
            }
            FencerConfig::Webhook {
                url, timeout, auth, ..
            } => {
                positive("fencer_timeout_ms", *timeout)?;
                WebhookFencer::check(url, auth)
            }
            FencerConfig::File { targets, timeout } => {
                positive("fencer_timeout_ms", *timeout)?;
                FileFencer::new(targets, *timeout).map(|_| ())
            }
        }
    }

    /// Build the fencer. Beyond [`FencerConfig::validate`], an exec command given as a path
    /// (with a `/`) must exist and, on Unix, be executable now: a typo must stop the
    /// monitor at start, not the first failover. A bare name is looked up in `PATH` when it
    /// runs.
    pub fn build(&self) -> Result<Arc<dyn Fencer>, FenceConfigError> {
        self.validate()?;
        Ok(match self {
            FencerConfig::None => Arc::new(NoFence),
            FencerConfig::Exec {
                command,
                args,
                timeout,
            } => {
                check_program(command)?;
                Arc::new(ExecFencer::new(command.clone(), args.clone(), *timeout))
            }
            FencerConfig::Webhook {
                url,
                timeout,
                retries,
                backoff,
                auth,
            } => Arc::new(WebhookFencer::with_auth(
                url, *timeout, *retries, *backoff, auth,
            )?),
            FencerConfig::File { targets, timeout } => {
                Arc::new(FileFencer::new(targets, *timeout)?)
            }
        })
    }
}

fn positive(setting: &'static str, d: Duration) -> Result<(), FenceConfigError> {
    if d.is_zero() {
        Err(FenceConfigError::new(setting, "must be more than 0"))
    } else {
        Ok(())
    }
}

fn check_program(command: &Path) -> Result<(), FenceConfigError> {
    if command.components().count() < 2 {
        return Ok(());
    }
    let bad = |why: String| {
        FenceConfigError::new("fencer_command", format!("{}: {why}", command.display()))
    };
    let meta = std::fs::metadata(command).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("is not a file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(bad("is not executable".into()));
        }
    }
    Ok(())
}

/// The daemon's flat `fencer_*` settings, each optional in the file and on the command
/// line, resolved into a [`FencerConfig`]. A setting that does not apply to the chosen
/// kind is refused rather than ignored: it is almost always a mistake in the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencerSettings {
    /// `fencer`: none | exec | webhook | file.
    pub kind: FencerKind,
    /// `fencer_command` (exec): the program to run.
    pub command: Option<PathBuf>,
    /// `fencer_args` (exec): arguments before the order's own.
    pub args: Vec<String>,
    /// `fencer_url` (webhook): `http[s]://HOST[:PORT]/PATH`.
    pub url: Option<String>,
    /// `fencer_ca` (webhook, https): the endpoint's CA.
    pub ca: Option<PathBuf>,
    /// `fencer_token_file` (webhook): a bearer token sent with every request.
    pub token_file: Option<PathBuf>,
    /// `fencer_file_targets` (file): the target file's path, with `{gateway}` in it.
    pub file_targets: Option<String>,
    /// `fencer_timeout_ms`: one attempt (the command's run, one HTTP request, the wait for
    /// a target file's lock).
    pub timeout: Duration,
    /// `fencer_retries` (webhook): quick retries after a failed request.
    pub retries: u32,
    /// `fencer_backoff_ms` (webhook): the first wait between quick retries.
    pub backoff: Duration,
}

impl FencerSettings {
    /// 10 s: a storage blocklist call normally takes well under a second, but may wait for
    /// its own cluster's quorum; a hung attempt is cut off and the runner tries again.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// 3 quick retries, 200 ms apart doubling (0.2 + 0.4 + 0.8 s): rides out an endpoint
    /// restart without waiting for the runner's slower schedule.
    pub const DEFAULT_RETRIES: u32 = 3;
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);

    pub fn resolve(self) -> Result<FencerConfig, FenceConfigError> {
        let only = |setting: &'static str, kind: FencerKind| {
            FenceConfigError::new(
                setting,
                format!("applies only to fencer = {kind}, not {}", self.kind),
            )
        };
        if self.kind != FencerKind::Exec {
            if self.command.is_some() {
                return Err(only("fencer_command", FencerKind::Exec));
            }
            if !self.args.is_empty() {
                return Err(only("fencer_args", FencerKind::Exec));
            }
        }
        if self.kind != FencerKind::Webhook {
            for (setting, given) in [
                ("fencer_url", self.url.is_some()),
                ("fencer_ca", self.ca.is_some()),
                ("fencer_token_file", self.token_file.is_some()),
            ] {
                if given {
                    return Err(only(setting, FencerKind::Webhook));
                }
            }
        }
        if self.kind != FencerKind::File && self.file_targets.is_some() {
            return Err(only("fencer_file_targets", FencerKind::File));
        }
        let config = match self.kind {
            FencerKind::None => FencerConfig::None,
            FencerKind::Exec => FencerConfig::Exec {
                command: self.command.clone().ok_or_else(|| {
                    FenceConfigError::new("fencer_command", "is required with fencer = exec")
                })?,
                args: self.args.clone(),
                timeout: self.timeout,
            },
            FencerKind::Webhook => FencerConfig::Webhook {
                url: self.url.clone().ok_or_else(|| {
                    FenceConfigError::new("fencer_url", "is required with fencer = webhook")
                })?,
                timeout: self.timeout,
                retries: self.retries,
                backoff: self.backoff,
                auth: WebhookAuth {
                    ca: self.ca.clone(),
                    token_file: self.token_file.clone(),
                },
            },
            FencerKind::File => FencerConfig::File {
                targets: self.file_targets.clone().ok_or_else(|| {
                    FenceConfigError::new("fencer_file_targets", "is required with fencer = file")
                })?,
                timeout: self.timeout,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

impl Default for FencerSettings {
    fn default() -> Self {
        FencerSettings {
            kind: FencerKind::None,
            command: None,
            args: Vec::new(),
            url: None,
            ca: None,
            token_file: None,
            file_targets: None,
            timeout: Self::DEFAULT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            backoff: Self::DEFAULT_BACKOFF,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_the_config_words() {
        assert_eq!("none".parse::<FencerKind>(), Ok(FencerKind::None));
        assert_eq!(" Exec ".parse::<FencerKind>(), Ok(FencerKind::Exec));
        assert_eq!("webhook".parse::<FencerKind>(), Ok(FencerKind::Webhook));
        let e = "ipmi".parse::<FencerKind>().expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "fencer: \"ipmi\" is not one of none, exec, webhook, file"
        );
        #[derive(Deserialize)]
        struct File {
            fencer: FencerKind,
        }
        let f: File = toml::from_str("fencer = \"webhook\"").expect("toml");
        assert_eq!(f.fencer, FencerKind::Webhook);
        assert_eq!(FencerKind::Exec.to_string(), "exec");
    }

    #[test]
    fn settings_resolve_with_defaults_and_refuse_mistakes() {
        assert_eq!(FencerSettings::default().resolve(), Ok(FencerConfig::None));

        let exec = FencerSettings {
            kind: FencerKind::Exec,
            command: Some("/usr/libexec/gwmon/fence-ceph".into()),
            args: vec!["--cluster".into(), "ceph".into()],
            ..FencerSettings::default()
        };
        assert_eq!(
            exec.clone().resolve(),
            Ok(FencerConfig::Exec {
                command: "/usr/libexec/gwmon/fence-ceph".into(),
                args: vec!["--cluster".into(), "ceph".into()],
                timeout: FencerSettings::DEFAULT_TIMEOUT,
            })
        );

        let err = |s: FencerSettings| s.resolve().expect_err("refused").to_string();
        assert_eq!(
            err(FencerSettings {
                command: None,
                ..exec.clone()
            }),
            "fencer_command: is required with fencer = exec"
        );
        assert_eq!(
            err(FencerSettings {
                timeout: Duration::ZERO,
                ..exec.clone()
            }),
            "fencer_timeout_ms: must be more than 0"
        );
        assert_eq!(
            err(FencerSettings {
                kind: FencerKind::Webhook,
                ..exec.clone()
            }),
            "fencer_command: applies only to fencer = exec, not webhook"
        );
        assert_eq!(
            err(FencerSettings {
                kind: FencerKind::Webhook,
                ..FencerSettings::default()
            }),
            "fencer_url: is required with fencer = webhook"
        );
        assert_eq!(
            err(FencerSettings {
                url: Some("http://x/".into()),
                ..FencerSettings::default()
            }),
            "fencer_url: applies only to fencer = webhook, not none"
        );
        let e = err(FencerSettings {
            kind: FencerKind::Webhook,
            url: Some("https://x/".into()),
            ..FencerSettings::default()
        });
        assert!(
            e.starts_with("fencer_ca: is required with an https://"),
            "{e}"
        );
        assert_eq!(
            err(FencerSettings {
                kind: FencerKind::File,
                file_targets: Some("/t/{gateway}.json".into()),
                token_file: Some("/t/token".into()),
                ..FencerSettings::default()
            }),
            "fencer_token_file: applies only to fencer = webhook, not file"
        );
        let https = FencerSettings {
            kind: FencerKind::Webhook,
            url: Some("https://x/".into()),
            ca: Some("/etc/gwmon/fence-ca.pem".into()),
            ..FencerSettings::default()
        }
        .resolve();
        assert!(https.is_ok(), "{https:?}");
    }

    #[test]
    fn build_checks_that_the_command_can_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exec = |command: PathBuf| FencerConfig::Exec {
            command,
            args: vec![],
            timeout: Duration::from_secs(1),
        };
        let missing = dir.path().join("missing");
        let e = exec(missing).build().err().expect("missing").to_string();
        assert!(e.starts_with("fencer_command: "), "{e}");
        let e = exec(dir.path().to_path_buf())
            .build()
            .err()
            .expect("a directory");
        assert!(e.to_string().contains("is not a file"), "{e}");
        #[cfg(unix)]
        {
            let script = dir.path().join("fence.sh");
            std::fs::write(&script, "#!/bin/sh\n").expect("write");
            let e = exec(script.clone()).build().err().expect("not executable");
            assert!(e.to_string().contains("is not executable"), "{e}");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            assert_eq!(exec(script).build().expect("runs").name(), "exec");
        }
        // A bare name is looked up in PATH when it runs.
        assert!(exec("fence-ceph".into()).build().is_ok());
        assert_eq!(FencerConfig::None.build().expect("none").name(), "none");
        let hook = FencerConfig::Webhook {
            url: "http://127.0.0.1:9/fence".into(),
            timeout: Duration::from_secs(1),
            retries: 0,
            backoff: Duration::ZERO,
            auth: WebhookAuth::default(),
        };
        assert_eq!(hook.build().expect("webhook").name(), "webhook");
    }
}
