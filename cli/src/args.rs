//! The command line: every command and flag, with the help text `nvme-gw --help` prints.
//!
//! Ids, pools, groups and locations are taken as plain strings here and checked with
//! gwmon-proto's domain rules in [`crate::commands`]: a bad id is a *refusal* (exit 1, like
//! the monitor's own answer to one), not a usage error (exit 2), so a script gets the same
//! exit code whether the CLI or the monitor caught it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use crate::certs::{Role, DEFAULT_DIR, MAX_DAYS};

/// The embedded monitor's address: `gwmon` with no options listens there.
pub const DEFAULT_MONITORS: &str = "127.0.0.1:7400";

#[derive(Debug, Parser)]
#[command(
    name = "nvme-gw",
    version,
    about = "Administer gwmon, the NVMe-oF gateway monitor cluster",
    long_about = "Administer gwmon, the NVMe-oF gateway monitor cluster.\n\n\
        Commands and JSON keys follow `ceph nvme-gw`, so scripts written for Ceph keep \
        working. Exit codes: 0 success; 1 the command was refused (unknown gateway, group \
        full, invalid id, nothing to delete); 2 usage error; 3 no monitor could answer."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, before or after the command name.
#[derive(Debug, Args)]
pub struct Global {
    /// Monitor addresses (host:port), comma-separated. Any one will do: the CLI follows
    /// the leader a monitor names and tries the others when one does not answer.
    #[arg(
        long,
        global = true,
        env = "GWMON_MONITORS",
        value_delimiter = ',',
        default_value = DEFAULT_MONITORS,
        value_parser = monitor_addr
    )]
    pub monitors: Vec<String>,
    /// Output format. Without this flag: `plain` (aligned tables) when standard output is a
    /// terminal, `json-pretty` otherwise, so that scripts get Ceph-compatible JSON as `ceph
    /// nvme-gw` gives it and people get tables. `json` is the same on one line.
    #[arg(long, global = true, env = "GWMON_FORMAT", value_enum)]
    pub format: Option<Format>,
    /// Reads only: accept an answer from any monitor's own copy of the map, which may lag
    /// behind the leader. Works while the cluster has no leader, when looking matters most.
    #[arg(long, global = true)]
    pub stale: bool,
    /// How long one attempt at one monitor may take (connecting and answering), in
    /// milliseconds.
    #[arg(long, global = true, env = "GWMON_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// How many times to retry when no monitor can serve the request (unreachable, no
    /// leader elected yet, no quorum, membership change under way). Waits double from 50 ms
    /// to 1 s between tries; following a leader redirect is not a retry. Every monitor
    /// named is tried at least once, even with 0.
    #[arg(long, global = true, env = "GWMON_RETRIES", default_value_t = 10)]
    pub retries: u32,
    /// Mutual TLS: the cluster's CA (PEM), which the monitors' certificates must come from.
    /// With --tls-cert and --tls-key; the monitors are then dialled over https.
    #[arg(long, global = true, env = "GWMON_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: this operator's certificate (`nvme-gw certs issue admin NAME`, or
    /// `reader NAME` for reads only).
    #[arg(long, global = true, env = "GWMON_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: this operator's private key.
    #[arg(long, global = true, env = "GWMON_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

/// A `--monitors` entry that can be dialled; a bad one is a usage error (exit 2).
fn monitor_addr(s: &str) -> Result<String, String> {
    crate::client::check_addr(s).map(|()| s.to_owned())
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Stable JSON with Ceph's keys where Ceph has the command (documented in README.md),
    /// on one line as Ceph's `json`.
    Json,
    /// The same JSON, indented (Ceph's `json-pretty`).
    JsonPretty,
    /// Aligned tables and one-line messages for people.
    Plain,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a gateway in (POOL, GROUP) and allocate its ANA group. Creating an existing
    /// gateway again succeeds and changes nothing, as in Ceph.
    Create {
        #[command(flatten)]
        gw: GatewayArgs,
        /// The gateway's location (site or rack); failover prefers gateways of the same
        /// location.
        #[arg(long)]
        location: Option<String>,
    },
    /// Delete a gateway. Its ANA group fails over first; it stays DELETING until no
    /// namespace is left in that ANA group.
    Delete {
        #[command(flatten)]
        gw: GatewayArgs,
    },
    /// Enable a gateway again after `disable`; its ANA group fails back once it reports in.
    Enable {
        #[command(flatten)]
        gw: GatewayArgs,
    },
    /// Disable a gateway (e.g. for host maintenance): its ANA group fails over.
    Disable {
        #[command(flatten)]
        gw: GatewayArgs,
    },
    /// Set a gateway's location.
    SetLocation {
        #[command(flatten)]
        gw: GatewayArgs,
        /// The new location; "" for none.
        location: String,
    },
    /// Declare a location of a group a disaster: its gateways' ANA groups move elsewhere
    /// and do not come back until `disaster-clear`. Every gateway there must be down.
    DisasterSet {
        #[command(flatten)]
        group: GroupArgs,
        /// The location.
        location: String,
    },
    /// End a disaster declaration: the location's gateways get their ANA groups back.
    DisasterClear {
        #[command(flatten)]
        group: GroupArgs,
        /// The location.
        location: String,
    },
    /// Show one group: its gateways, their availability and per-ANA-group states.
    Show {
        #[command(flatten)]
        group: GroupArgs,
    },
    /// Show every group of the map.
    ShowAll,
    /// Host maintenance: `enter` disables the gateway after an ok-to-stop check and waits
    /// until every ANA group it served is served by another gateway (then stop it); `exit`
    /// enables it and waits until it serves its own ANA group again.
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Whether stopping these gateways (an upgrade, host maintenance) leaves their group
    /// served: at least --min-available of its other gateways are available, enabled and
    /// not in a disaster location to take the ANA groups over. Without GW, whether any one
    /// gateway may stop. Prints the answer; exits 0 for yes, 16 (EBUSY, as Ceph's
    /// ok-to-stop) for no.
    OkToStop {
        #[command(flatten)]
        group: GroupArgs,
        /// The gateways to stop.
        gateways: Vec<String>,
        /// The fewest gateways of the group that must stay available.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
        min_available: u32,
    },
    /// List the listeners the gateways of a group report, by subsystem NQN.
    Listeners {
        #[command(flatten)]
        group: GroupArgs,
    },
    /// Ceph's `nvme-gw set VAR VALUE`. Only `beacon-diff` exists, and in gwmon it is always
    /// on: a beacon is committed only when what it reports changed. `true` (or on, yes, 1)
    /// is accepted and changes nothing; `false` is refused. No monitor is contacted.
    Set {
        /// The setting: `beacon-diff`.
        var: SetVar,
        /// `true` or `false` (also on/off, yes/no, 1/0).
        value: String,
    },
    /// One line for the whole system, as `ceph status` gives one for its services: health,
    /// monitors and leader, gateways available of those created, ANA groups served.
    Status,
    /// The blocklist: fences issued against failed gateways.
    Blocklist {
        #[command(subcommand)]
        command: BlocklistCommand,
    },
    /// Health checks: a group with a single gateway, a gateway down, a gateway stuck
    /// deleting, a fence not completing. Exits 0 whatever the health; read the status.
    Health,
    /// The event stream: gateways coming and going, failovers, fences, promotions,
    /// failbacks and leader changes, one line each, oldest first. Prints the events the
    /// monitor still keeps (its window reaches back to its last snapshot) and exits; with
    /// --follow keeps printing new ones, and after a lost connection resumes at another
    /// monitor without a gap or a repeat.
    Events {
        /// Keep printing new events until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Start after this map epoch (the `epoch` of the last event you saw) instead of
        /// with the oldest event kept. Refused when the monitors no longer keep it.
        #[arg(long)]
        after_epoch: Option<u64>,
    },
    /// The map's tunables (timers and limits), replicated with the map: show them, or
    /// change some of them.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The monitor cluster: status and membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Replicated volumes: hosts build an MD RAID1 over their NVMe-oF replicas, report each
    /// replica's health, and get a bad replica replaced in committed stages.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// The hosts (compute nodes) whose agents report replica health.
    Host {
        #[command(subcommand)]
        command: HostCommand,
    },
    /// Certificates for gwmon's mutual TLS, made offline (no monitor is contacted): the
    /// cluster's CA, then one certificate from it per monitor, gateway, operator, host and
    /// storage backend.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Print a shell completion script, e.g. `nvme-gw completions bash > /etc/bash_completion.d/nvme-gw`.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
}

/// The settings of `nvme-gw set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetVar {
    /// Beacons carry (and commit) only what changed.
    BeaconDiff,
}

/// A gateway: `ID POOL GROUP`, in Ceph's order.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway's id, unique within its group (e.g. `client.nvmeof.rbd.grp1.host1.abc`).
    pub id: String,
    #[command(flatten)]
    pub group: GroupArgs,
}

/// A gateway group: `POOL GROUP`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// The storage pool the group serves.
    pub pool: String,
    /// The group's name within the pool; "" is Ceph's default group.
    pub group: String,
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Disable the gateway and wait until its ANA groups are served elsewhere. Refused
    /// (exit 16, nothing changed) when ok-to-stop says no, unless --force.
    Enter {
        #[command(flatten)]
        gw: GatewayArgs,
        /// Disable it even if fewer than --min-available other gateways stay available.
        #[arg(long)]
        force: bool,
        /// The fewest other gateways of the group that must stay available.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
        min_available: u32,
        /// How long to wait for the hand-over, in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_s: u64,
    },
    /// Enable the gateway and wait until it serves its own ANA group again (it must be
    /// running and reporting in).
    Exit {
        #[command(flatten)]
        gw: GatewayArgs,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout_s: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum BlocklistCommand {
    /// List every fence on record, completed or not, oldest first.
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Every setting, its value and its default (asked of the leader unless --stale).
    Show,
    /// Change settings, e.g. `config set beacon_grace_ms=2000 failback_delay_ms=500`; the
    /// others keep their values. Each must be within its range (`config show` lists them);
    /// while gateways are available the grace may at most halve in one change, and a shorter
    /// grace shortens the gateways' leases within one beacon.
    Set {
        /// `NAME=VALUE` pairs; durations in milliseconds. `config show` lists the names.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit and applied indexes, and each member's lag behind the
    /// leader (asked of the leader unless --stale).
    Status,
    /// Add a monitor started with `gwmon --join`: it joins as a learner, catches up, then
    /// becomes a voter.
    Add {
        /// The new monitor's id (its `--node-id`); not 0 and not already a member.
        id: u64,
        /// The new monitor's gRPC address for clients, host:port.
        addr: String,
        /// Where the other monitors reach its Raft (its --peer-listen), host:port
        /// [default: the host of ADDR with its port plus 2].
        #[arg(long, value_name = "HOST:PORT")]
        peer: Option<String>,
    },
    /// Whether monitor ID may stop (an upgrade, host maintenance): the other voters that
    /// are caught up with the leader still make a quorum. Asks the leader. Prints the
    /// answer; exits 0 for yes, 16 (EBUSY) for no.
    OkToStop {
        /// The monitor's id.
        id: u64,
        /// How many log entries behind the leader a voter may be and still count as caught
        /// up.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        max_lag: u64,
    },
    /// Remove a monitor from the cluster.
    Remove {
        /// The monitor's id.
        id: u64,
    },
    /// Save a backup of the replicated state (the gateway map and the replica registry) as
    /// of an index the leader confirms committed. `gwmon restore` starts a one-monitor
    /// cluster from it. Needs an admin certificate.
    Backup {
        /// Where to write it; an existing file is never overwritten. Readable by its owner
        /// only.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Register a volume with its replicas, all in sync (what a storage backend does when
    /// it creates one). Registering the same volume again changes nothing.
    Create {
        /// The volume's UUID.
        volume_id: String,
        /// The name of the host's md array, /dev/md/ALIAS (at most 32 characters).
        #[arg(long)]
        alias: String,
        /// The volume's size: bytes, or with a binary suffix K, M, G or T (10G = 10 GiB).
        #[arg(long)]
        capacity: String,
        /// One replica, repeated for each: ID,NQN,PORTAL[,PORTAL...][,ns=UUID], where
        /// PORTAL is TRANSPORT:ADDRESS:PORT (tcp or rdma; an IPv6 address in brackets), e.g.
        /// 7b6a...,nqn.2016-06.io.spdk:r1,tcp:10.0.0.5:4420.
        #[arg(long = "replica", required = true)]
        replicas: Vec<String>,
        /// How many replicas the volume should have; defaults to the number given.
        #[arg(long)]
        replica_count: Option<u32>,
        /// How long a replica must be missing or faulty before a replacement is accepted,
        /// in seconds. The default, 5 minutes, lets a path that flaps (md's failfast marks
        /// a leg faulty at the first error) come back before a whole new replica is synced.
        #[arg(long, default_value_t = 300)]
        grace_secs: u64,
    },
    /// Show a volume (by UUID or alias): every replica, its state and whether it is stale,
    /// and the replacement under way.
    Show {
        /// The volume's UUID or alias.
        volume: String,
    },
    /// List every volume.
    List,
    /// Ask for a replica to be replaced. Accepted once it has been missing or faulty for
    /// the volume's grace period; --force replaces it now, whatever its state.
    Replace {
        /// The volume's UUID.
        volume: String,
        /// The replica's UUID.
        replica: String,
        /// Skip the grace period and the missing-or-faulty requirement (e.g. to move a
        /// volume off a backend).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the cluster's CA in DIR: ca.pem, a self-signed certificate (CN "gwmon CA",
    /// ECDSA P-256), and ca.key, its private key (mode 0600). Refuses to overwrite either.
    Init {
        /// The directory to write to; created (mode 0700) if missing.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// How long the CA is valid, in days. Every certificate it issues must expire before
        /// it does.
        #[arg(long, default_value_t = 3650, value_parser = days())]
        days: u32,
    },
    /// Issue a certificate signed by DIR's CA: DIR/ROLE-NAME.pem and DIR/ROLE-NAME.key
    /// (mode 0600), with each '/' of NAME as '_'. Its holder is the URI gwmon://ROLE/NAME.
    /// Refuses to overwrite either file.
    Issue {
        /// Who holds the certificate.
        role: Role,
        /// monitor: its id (--node-id, not 0); gateway: POOL/GROUP/ID (rbd//gw1 in the
        /// default group); admin, reader, host, backend: 1 to 255 ASCII letters, digits and
        /// . _ - : @ (not starting with '-').
        name: String,
        /// The directory holding the CA (`certs init`), where the files are written.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// How long the certificate is valid, in days; no longer than the CA.
        #[arg(long, default_value_t = 365, value_parser = days())]
        days: u32,
        /// Monitor certificates only: a DNS name or IP address the monitor is dialled by;
        /// repeat for each. Without it: localhost and 127.0.0.1.
        #[arg(long = "san", value_name = "HOST_OR_IP")]
        sans: Vec<String>,
    },
}

/// `--days`: 1 to [`MAX_DAYS`]; anything else is a usage error.
fn days() -> impl clap::builder::TypedValueParser<Value = u32> {
    clap::value_parser!(u32).range(1..=MAX_DAYS)
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List every registered host and its last heartbeat.
    List,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let a = Cli::try_parse_from(["nvme-gw", "--format", "json", "show", "rbd", "g"])
            .expect("before");
        let b = Cli::try_parse_from(["nvme-gw", "show", "rbd", "g", "--format", "json"])
            .expect("after");
        assert_eq!(a.global.format, Some(Format::Json));
        assert_eq!(b.global.format, Some(Format::Json));
        let c = Cli::try_parse_from(["nvme-gw", "show", "rbd", "g", "--format", "json-pretty"])
            .expect("Ceph's json-pretty");
        assert_eq!(c.global.format, Some(Format::JsonPretty));
    }

    #[test]
    fn a_bad_monitor_address_is_a_usage_error() {
        for bad in ["", "localhost", "a:1,", "a b:1"] {
            let e = Cli::try_parse_from(["nvme-gw", "--monitors", bad, "health"]).expect_err(bad);
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn monitors_are_comma_separated() {
        let c = Cli::try_parse_from(["nvme-gw", "--monitors", "a:1,b:2", "health"]).expect("ok");
        assert_eq!(c.global.monitors, ["a:1", "b:2"]);
    }

    #[test]
    fn every_flag_and_argument_is_documented() {
        fn walk(cmd: &clap::Command) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "{} {id} has no help",
                    cmd.get_name()
                );
            }
            for sub in cmd.get_subcommands() {
                assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
                walk(sub);
            }
        }
        walk(&Cli::command());
    }
}
