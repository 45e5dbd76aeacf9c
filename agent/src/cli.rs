//! The command line of `nvmeof-agent`: flags, their defaults, and turning them into
//! checked settings. Kept in the library so that the checks are tested; the binary only
//! parses, sets up logging and calls [`run`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use gwmon_proto::tls::{Tls, TlsFiles};
use tokio_util::sync::CancellationToken;

use crate::cluster::grpc::{self, GrpcCluster, Settings};
use crate::cluster::{HostId, HostIdentity, HostName, VolumeId};
use crate::config::AgentConfig;
use crate::connector::{Connected, Connector};
use crate::daemon::Daemon;
use crate::error::AgentError;
use crate::host::linux::LinuxHost;
use crate::host::runner::Runner;

#[derive(Debug, Parser)]
#[command(
    name = "nvmeof-agent",
    version,
    about = "Builds MD RAID1 over replicated NVMe-oF volumes and keeps it healthy with the gwmon monitors"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect every safe replica of VOLUME, create or assemble its RAID1, print the device.
    Connect { volume: String },
    /// Stop VOLUME's array and disconnect the replicas no other array uses.
    Disconnect { volume: String },
    /// Grow VOLUME's array to its replicas' (grown) size; print the device.
    Extend { volume: String },
    /// Watch the connected volumes, report replica health, carry out replacements.
    Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Global {
    /// Monitor addresses, comma-separated; any one will do (the leader is followed).
    #[arg(
        long,
        global = true,
        env = "GWMON_MONITORS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400"
    )]
    pub monitors: Vec<String>,
    /// This host's NQN [default: the content of <root>/etc/nvme/hostnqn].
    #[arg(long, global = true, env = "NVMEOF_AGENT_HOST_NQN")]
    pub host_nqn: Option<String>,
    /// This host's id [default: the content of <root>/etc/nvme/hostid, else none].
    #[arg(long, global = true, env = "NVMEOF_AGENT_HOST_ID")]
    pub host_id: Option<String>,
    /// A name for people [default: the kernel's hostname].
    #[arg(long, global = true, env = "NVMEOF_AGENT_HOST_NAME")]
    pub host_name: Option<String>,
    /// The directory sysfs (sys/...) and md's device links (dev/md/...) are read under.
    #[arg(long, global = true, env = "NVMEOF_AGENT_ROOT", default_value = "/")]
    pub root: PathBuf,
    /// Words run before nvme and mdadm, e.g. "sudo -n"; empty to run them directly.
    #[arg(
        long,
        global = true,
        env = "NVMEOF_AGENT_COMMAND_PREFIX",
        default_value = ""
    )]
    pub command_prefix: String,
    /// Longest an nvme or mdadm command may run, in seconds.
    #[arg(long, global = true, default_value_t = 120)]
    pub command_timeout_s: u64,
    /// Seconds between two passes of `run`.
    #[arg(
        long,
        global = true,
        env = "NVMEOF_AGENT_PERIOD_S",
        default_value_t = 30
    )]
    pub period_s: u64,
    /// Seconds a lost replica's controller holds I/O before failing it, so md fails that
    /// leg and the array goes on (nvme's fast_io_fail_tmo; 0 fails it at once).
    #[arg(
        long,
        global = true,
        env = "NVMEOF_AGENT_FAST_IO_FAIL_S",
        default_value_t = 2,
        value_parser = clap::value_parser!(u64).range(0..=600)
    )]
    pub fast_io_fail_s: u64,
    /// Seconds to wait for a replica's block device after connecting it.
    #[arg(long, global = true, default_value_t = 10)]
    pub device_wait_s: u64,
    /// Where connected volumes are recorded (read by `run`).
    #[arg(
        long,
        global = true,
        env = "NVMEOF_AGENT_STATE_DIR",
        default_value = "/var/lib/gwmon-agent"
    )]
    pub state_dir: PathBuf,
    /// Limit of one call to one monitor, in milliseconds.
    #[arg(long, global = true, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Failed attempts retried before a call to the monitors gives up.
    #[arg(long, global = true, default_value_t = 3)]
    pub retries: u32,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// Mutual TLS: the cluster's CA (PEM). With --tls-cert and --tls-key; the monitors are
    /// then dialled over https.
    #[arg(long, global = true, env = "GWMON_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: this host's certificate (`nvme-gw certs issue host HOST_NQN`).
    #[arg(long, global = true, env = "GWMON_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: this host's private key.
    #[arg(long, global = true, env = "GWMON_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

/// A command line that parses but does not make sense; one line, exit code 2.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Everything a command needs, checked.
#[derive(Debug)]
pub struct Checked {
    pub config: AgentConfig,
    pub cluster: Settings,
    pub host: LinuxHost,
}

/// The first line of a file under `root`, trimmed; `None` if absent or empty.
fn first_line(root: &Path, rel: &str) -> Option<String> {
    let text = std::fs::read_to_string(root.join(rel)).ok()?;
    let line = text.lines().next()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}

impl Global {
    /// Check the flags and fill in the defaults read from the host.
    pub fn check(&self) -> Result<Checked, UsageError> {
        if self.monitors.is_empty() {
            return Err(UsageError(
                "--monitors: at least one address is needed".into(),
            ));
        }
        for m in &self.monitors {
            grpc::check_addr(m).map_err(|e| UsageError(format!("--monitors: {e}")))?;
        }
        let nqn_text = match &self.host_nqn {
            Some(n) => n.clone(),
            None => first_line(&self.root, "etc/nvme/hostnqn").ok_or_else(|| {
                UsageError(format!(
                    "no host NQN: pass --host-nqn or create {} (nvme gen-hostnqn)",
                    self.root.join("etc/nvme/hostnqn").display()
                ))
            })?,
        };
        let nqn = nqn_text
            .parse()
            .map_err(|e| UsageError(format!("host NQN {nqn_text:?} {e}")))?;
        let id_text = match &self.host_id {
            Some(i) => Some(i.trim().to_owned()).filter(|i| !i.is_empty()),
            None => first_line(&self.root, "etc/nvme/hostid"),
        };
        let id: Option<HostId> = id_text
            .map(|t| {
                t.parse()
                    .map_err(|e| UsageError(format!("host id {t:?} {e}")))
            })
            .transpose()?;
        let name: HostName = match &self.host_name {
            Some(n) => n
                .trim()
                .parse()
                .map_err(|e| UsageError(format!("--host-name {n:?} {e}")))?,
            // The name is only for people: an odd kernel hostname leaves it empty rather
            // than stopping the agent.
            None => first_line(&self.root, "proc/sys/kernel/hostname")
                .or_else(|| first_line(&self.root, "etc/hostname"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_default(),
        };
        if self.period_s == 0 {
            return Err(UsageError("--period-s must be at least 1".into()));
        }
        if self.command_timeout_s == 0 || self.timeout_ms == 0 {
            return Err(UsageError(
                "--command-timeout-s and --timeout-ms must not be 0".into(),
            ));
        }
        let tls = TlsFiles::from_parts(
            self.tls_ca.clone(),
            self.tls_cert.clone(),
            self.tls_key.clone(),
            "--tls-",
        )
        .and_then(|files| files.map(|f| Tls::load(&f)).transpose())
        .map_err(|e| UsageError(e.to_string()))?;
        let prefix: Vec<String> = self
            .command_prefix
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Ok(Checked {
            config: AgentConfig {
                identity: HostIdentity { nqn, id, name },
                period: Duration::from_secs(self.period_s),
                device_wait: Duration::from_secs(self.device_wait_s),
                fast_io_fail: Duration::from_secs(self.fast_io_fail_s),
                state_dir: self.state_dir.clone(),
            },
            cluster: Settings {
                monitors: self.monitors.clone(),
                timeout: Duration::from_millis(self.timeout_ms),
                retries: self.retries,
                tls,
            },
            host: LinuxHost::new(
                self.root.clone(),
                Runner {
                    prefix,
                    timeout: Duration::from_secs(self.command_timeout_s),
                },
            ),
        })
    }
}

/// A VOLUME argument.
pub fn volume_arg(text: &str) -> Result<VolumeId, UsageError> {
    text.parse()
        .map_err(|e| UsageError(format!("volume id {text:?} {e}")))
}

/// How a command ended.
#[derive(Debug, thiserror::Error)]
pub enum Outcome {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Failed(#[from] AgentError),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Usage(_) => crate::error::exit::USAGE,
            Outcome::Failed(e) => e.exit_code(),
        }
    }
}

/// Run the command. `stop` ends `run`; `out` gets the device path of `connect`/`extend`.
pub async fn run(
    cli: Cli,
    stop: CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<(), Outcome> {
    let checked = cli.global.check()?;
    let cluster = GrpcCluster::new(checked.cluster);
    let host = checked.host;
    let config = checked.config;
    let connector = Connector {
        host: &host,
        cluster: &cluster,
        config: &config,
    };
    let print = |out: &mut (dyn Write + Send), line: &str| {
        writeln!(out, "{line}").map_err(|e| {
            Outcome::Failed(AgentError::Protocol(format!(
                "cannot write the output: {e}"
            )))
        })
    };
    match cli.command {
        Command::Connect { volume } => {
            let v = volume_arg(&volume)?;
            let done = connector.connect(&v).await?;
            if let Connected::Already { .. } = done {
                tracing::info!(volume = %v, "already connected");
            }
            print(out, done.path())?;
        }
        Command::Disconnect { volume } => connector.disconnect(&volume_arg(&volume)?).await?,
        Command::Extend { volume } => {
            let path = connector.extend(&volume_arg(&volume)?).await?;
            print(out, &path)?;
        }
        Command::Run => Daemon::new(host, cluster, config).run(stop).await?,
    }
    Ok(())
}
