//! The monitor daemon's configuration: a TOML file, flags and `GWMON_*` environment
//! variables, in that order of precedence from lowest to highest, over documented defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use gwmon_proto::tls::TlsFiles;

use crate::fence::{FencerConfig, FencerKind, FencerSettings};
use crate::raft::MonitorNode;
use crate::store::StoreKind;

/// Where the embedded default monitor listens; `nvme-gw` and gateways look here by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";

/// Where the HTTP listener (`/metrics`, `/health/*`, `/status`) listens by default: next to
/// the gRPC port, loopback only, so nothing is exposed beyond the host unless asked.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7401";

/// Open gRPC connections served at once by default: a gateway, an agent, an operator or a
/// peer monitor holds one each, so this leaves room for thousands of gateways while a
/// flood of idle connections cannot exhaust the process's file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16_384;
/// The range `balance_moves` is checked against, and its default.
pub const BALANCE_MOVES: std::ops::RangeInclusive<u32> = 0..=1024;
pub const DEFAULT_BALANCE_MOVES: u32 = 32;

/// The range `max_connections` is checked against.
/// The store's page cache, in MiB (the same range `gwmon recover` and `restore` take).
pub const CACHE_MB: std::ops::RangeInclusive<u64> = 1..=65_536;

pub const MAX_CONNECTIONS: std::ops::RangeInclusive<u32> = 1..=1_000_000;

/// The `http_listen` setting: an address, or `off` for no HTTP listener at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    Off,
    At(SocketAddr),
}

impl FromStr for HttpListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(HttpListen::Off);
        }
        s.trim()
            .parse()
            .map(HttpListen::At)
            .map_err(|_| format!("{s:?} is neither IP:PORT nor off"))
    }
}

impl HttpListen {
    fn addr(self) -> Option<SocketAddr> {
        match self {
            HttpListen::Off => None,
            HttpListen::At(a) => Some(a),
        }
    }
}

/// A configuration that cannot be used. One line, naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Fencer(String),
    /// Several monitors and no `fencer` setting: `none` must be chosen, not fallen into.
    #[error("fencer: not set, and this monitor is one of several: choose a fencer that cuts a failed gateway's data plane off (exec, webhook or file), or set fencer = none to accept that a paused or crashed gateway whose target keeps serving is not stopped")]
    NoFencerChosen,
    #[error("{0}")]
    Tls(#[from] gwmon_proto::tls::TlsError),
    /// A listener others can reach, serving without TLS, and nobody said so on purpose.
    #[error("listen: {0} is reachable from other hosts and TLS is off, so anyone who reaches it could vote in Raft, change the map or act as any gateway; give tls_ca, tls_cert and tls_key (see `nvme-gw certs`), listen on a loopback address, or set insecure = true to serve it unauthenticated")]
    Insecure(SocketAddr),
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// A monitor of the initial cluster: `ID=HOST:PORT` (its client address; its peer port is
/// the default one, that port plus 2) or `ID=HOST:PORT/PEERHOST:PEERPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub peer_addr: String,
}

impl FromStr for Member {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, addrs) = s.split_once('=').ok_or_else(|| {
            format!("{s:?} is not ID=HOST:PORT or ID=HOST:PORT/PEERHOST:PEERPORT")
        })?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the id {id:?} is not a number"))?;
        if id == 0 {
            return Err(format!("{s:?}: monitor ids start at 1"));
        }
        let (addr, peer) = match addrs.split_once('/') {
            Some((addr, peer)) => (addr.trim(), Some(peer.trim())),
            None => (addrs.trim(), None),
        };
        check_addr(addr).map_err(|e| format!("{s:?}: {e}"))?;
        let peer_addr = match peer {
            Some(peer) => {
                check_addr(peer).map_err(|e| format!("{s:?}: peer: {e}"))?;
                if peer == addr {
                    return Err(format!(
                        "{s:?}: the peer address is the client address; Raft has a port of its own"
                    ));
                }
                peer.to_owned()
            }
            None => crate::raft::default_peer_addr(addr).ok_or_else(|| {
                format!("{s:?}: the port plus 2 is no port; give /PEERHOST:PEERPORT")
            })?,
        };
        Ok(Member {
            id,
            addr: addr.to_owned(),
            peer_addr,
        })
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}/{}", self.id, self.addr, self.peer_addr)
    }
}

/// The longest address accepted: a DNS name (253), a colon and a port.
pub const MAX_ADDR_LEN: usize = 260;

/// An address peers and gateways can dial: `HOST:PORT` with a port that is a number.
pub fn check_addr(addr: &str) -> Result<(), String> {
    if addr.len() > MAX_ADDR_LEN {
        return Err(format!(
            "the address of {} bytes is longer than {MAX_ADDR_LEN}",
            addr.len()
        ));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("the address {addr:?} has no :PORT"))?;
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
        return Err(format!("the address {addr:?} has no usable host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("the address {addr:?} has no valid port (1-65535)")),
        Ok(_) => Ok(()),
    }
}

/// Flags and environment variables. Every option can also be set in the TOML file under the
/// same name with `_` for `-`.
#[derive(Debug, Default, Clone, Parser)]
#[command(
    name = "gwmon",
    version,
    about = "The gwmon monitor: Raft-replicated high availability for NVMe-oF gateways",
    long_about = "The gwmon monitor: Raft-replicated high availability for NVMe-oF gateways.\n\n\
                  Started with no options it runs a single-node monitor with its store in \
                  ./gwmon-data, listening on 127.0.0.1:7400."
)]
pub struct Args {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "GWMON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This monitor's id, unique in the cluster [default: 1].
    #[arg(long, env = "GWMON_NODE_ID")]
    pub node_id: Option<u64>,
    /// Directory of the Raft log, votes and snapshots [default: ./gwmon-data].
    #[arg(long, env = "GWMON_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address for gateways, agents and the CLI [default: 127.0.0.1:7400].
    #[arg(long, env = "GWMON_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// The address clients use to reach this monitor [default: the listen address].
    #[arg(long, env = "GWMON_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Raft listen address, for the other monitors only [default: the listen address's IP
    /// and its port plus 2, 127.0.0.1:7402].
    #[arg(long, env = "GWMON_PEER_LISTEN", value_name = "ADDR")]
    pub peer_listen: Option<SocketAddr>,
    /// The address the other monitors use to reach this one's Raft [default: the peer
    /// listen address].
    #[arg(long, env = "GWMON_ADVERTISE_PEER", value_name = "HOST:PORT")]
    pub advertise_peer: Option<String>,
    /// HTTP listen address for /metrics, /health/live, /health/ready and /status, or `off`
    /// [default: 127.0.0.1:7401].
    #[arg(long, env = "GWMON_HTTP_LISTEN", value_name = "ADDR|off")]
    pub http_listen: Option<HttpListen>,
    /// Serve the HTTP listener over TLS with this monitor's certificate (needs tls_ca,
    /// tls_cert and tls_key); no client certificate is asked for.
    #[arg(long, env = "GWMON_HTTP_TLS")]
    pub http_tls: bool,
    /// The initial cluster, `ID=HOST:PORT` comma-separated (each monitor's client address;
    /// its peer port is that port plus 2 unless given as `ID=HOST:PORT/PEERHOST:PEERPORT`).
    /// The lowest id bootstraps it once; restarts are harmless. Without it the monitor bootstraps a single-node cluster of
    /// itself, unless --join is given.
    #[arg(
        long,
        env = "GWMON_INITIAL_MEMBERS",
        value_delimiter = ',',
        value_name = "ID=ADDR,..."
    )]
    pub initial_members: Option<Vec<Member>>,
    /// Start empty and wait to be added to an existing cluster (`nvme-gw cluster add`).
    #[arg(long, env = "GWMON_JOIN")]
    pub join: bool,
    /// Raft leader heartbeat interval in milliseconds [default: 100].
    #[arg(long, env = "GWMON_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Smallest election timeout in milliseconds [default: 300].
    #[arg(long, env = "GWMON_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    /// Largest election timeout in milliseconds [default: 600]. A new leader is elected
    /// within about twice this after the old one stops (openraft's voters refuse votes for
    /// this long after the last heartbeat), and gateways ride through an election only if
    /// it ends within their lease (half the beacon grace, less a beacon interval).
    #[arg(long, env = "GWMON_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Take a snapshot after this many log entries since the last one [default: 5000].
    #[arg(long, env = "GWMON_SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,
    /// Log entries kept behind a snapshot for slow followers [default: 1000].
    #[arg(long, env = "GWMON_LOGS_KEPT")]
    pub logs_kept: Option<u64>,
    /// Store page cache in MiB [default: 64].
    #[arg(long, env = "GWMON_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// The store's backend: redb or sled [default: the one the data directory holds; redb
    /// for a new one]. A directory the other one wrote is refused.
    #[arg(long, env = "GWMON_STORE", value_enum)]
    pub store: Option<StoreKind>,
    /// Open connections the gRPC listener serves at once; more are closed as they arrive
    /// [default: 16384].
    #[arg(long, env = "GWMON_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// The longest the leader goes between looks at the map's timers, and the watchdog's
    /// period (two periods late is a stall), in milliseconds; silent gateways are timed out
    /// at their deadline, not on this period [default: 250].
    #[arg(long, env = "GWMON_LIVENESS_TICK_MS")]
    pub liveness_tick_ms: Option<u64>,
    /// Namespaces the leader moves between ANA groups per step of namespace balancing, in
    /// each group (0 to 1024; 0 turns balancing off) [default: 32].
    #[arg(long, env = "GWMON_BALANCE_MOVES")]
    pub balance_moves: Option<u32>,
    /// Log format: `human` or `json` [default: human].
    #[arg(long, env = "GWMON_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// How a failed gateway is cut off from storage before its ANA groups move: `exec` (run
    /// --fencer-command), `webhook` (POST to --fencer-url), `file` (rewrite the file
    /// adapter's target, --fencer-file-targets) or `none`. Required when the cluster has more
    /// than one monitor; a single-node monitor defaults to none.
    #[arg(long, env = "GWMON_FENCER")]
    pub fencer: Option<FencerKind>,
    /// exec: the program to run; it gets `--gateway ID --pool P --group G --epoch N
    /// --nonce X...` after --fencer-args, and must exit 0 once the gateway is cut off.
    #[arg(long, env = "GWMON_FENCER_COMMAND", value_name = "PATH")]
    pub fencer_command: Option<PathBuf>,
    /// exec: arguments put before the fence's own, comma-separated.
    #[arg(long, env = "GWMON_FENCER_ARGS", value_delimiter = ',')]
    pub fencer_args: Option<Vec<String>>,
    /// webhook: `http://HOST[:PORT]/PATH` to POST the fence to.
    #[arg(long, env = "GWMON_FENCER_URL")]
    pub fencer_url: Option<String>,
    /// file: the path of each gateway's target file, with `{gateway}` (and optionally
    /// `{pool}`, `{group}`) in it, e.g. `/var/lib/gwmon/{gateway}.json`.
    #[arg(long, env = "GWMON_FENCER_FILE_TARGETS", value_name = "TEMPLATE")]
    pub fencer_file_targets: Option<String>,
    /// One fence attempt's time limit in milliseconds [default: 10000].
    #[arg(long, env = "GWMON_FENCER_TIMEOUT_MS")]
    pub fencer_timeout_ms: Option<u64>,
    /// webhook: quick retries of a failed request [default: 3].
    #[arg(long, env = "GWMON_FENCER_RETRIES")]
    pub fencer_retries: Option<u32>,
    /// webhook: first wait between quick retries, doubling, in milliseconds [default: 200].
    #[arg(long, env = "GWMON_FENCER_BACKOFF_MS")]
    pub fencer_backoff_ms: Option<u64>,
    /// webhook: the CA (PEM) of an https:// endpoint's certificate.
    #[arg(long, env = "GWMON_FENCER_CA", value_name = "PEM")]
    pub fencer_ca: Option<PathBuf>,
    /// webhook: a file holding a bearer token sent with every request.
    #[arg(long, env = "GWMON_FENCER_TOKEN_FILE", value_name = "FILE")]
    pub fencer_token_file: Option<PathBuf>,
    /// Mutual TLS: the cluster's CA (PEM), which every peer and client certificate must come
    /// from. With --tls-cert and --tls-key.
    #[arg(long, env = "GWMON_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: this monitor's certificate (`nvme-gw certs issue monitor ID`).
    #[arg(long, env = "GWMON_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: this monitor's private key.
    #[arg(long, env = "GWMON_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Serve a non-loopback listen address without TLS, to anyone who reaches it.
    #[arg(long, env = "GWMON_INSECURE")]
    pub insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The TOML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    peer_listen: Option<String>,
    advertise_peer: Option<String>,
    http_listen: Option<String>,
    http_tls: Option<bool>,
    initial_members: Option<Vec<String>>,
    join: Option<bool>,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    snapshot_logs: Option<u64>,
    logs_kept: Option<u64>,
    cache_mb: Option<u64>,
    store: Option<StoreKind>,
    max_connections: Option<u32>,
    liveness_tick_ms: Option<u64>,
    balance_moves: Option<u32>,
    log_format: Option<LogFormat>,
    fencer: Option<FencerKind>,
    fencer_command: Option<PathBuf>,
    fencer_args: Option<Vec<String>>,
    fencer_url: Option<String>,
    fencer_file_targets: Option<String>,
    fencer_timeout_ms: Option<u64>,
    fencer_retries: Option<u32>,
    fencer_backoff_ms: Option<u64>,
    fencer_ca: Option<PathBuf>,
    fencer_token_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure: Option<bool>,
}

/// How the monitor joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Initialize a single-node cluster of itself if the store is empty.
    Single,
    /// The initial members; the lowest id initializes them if its store is empty.
    Members(BTreeMap<u64, MonitorNode>),
    /// Wait to be added by an existing cluster.
    Join,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `None`: the bound listen address (useful with port 0 in tests).
    pub advertise: Option<String>,
    /// Where Raft is served, to the other monitors only; `None`: the listen address's IP
    /// with its port plus 2 ([`MonitorConfig::peer_listen`]). (`Monitor::start` takes an
    /// already bound listener instead, so this is read only by `node::run`.)
    pub peer_listen: Option<SocketAddr>,
    /// `None`: the bound peer listen address.
    pub advertise_peer: Option<String>,
    /// Where the daemon serves HTTP; `None`: not at all. (`Monitor::start_with_http` takes
    /// an already bound listener instead, so this is read only by `node::run`.)
    pub http_listen: Option<SocketAddr>,
    /// Serve HTTP over TLS with the gRPC listener's certificate.
    pub http_tls: bool,
    pub bootstrap: Bootstrap,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs: u64,
    pub logs_kept: u64,
    pub cache_mb: u64,
    /// The store's backend; `None`: the one the data directory holds, redb for a new one.
    pub store: Option<StoreKind>,
    /// Open connections the gRPC listener serves at once (TCP listener only).
    pub max_connections: u32,
    pub liveness_tick_ms: u64,
    /// Namespaces moved per balancing step and group; 0: no balancing.
    pub balance_moves: u32,
    pub log_format: LogFormat,
    /// The `fencer` setting; `None` when it was not given, which only a single-node monitor
    /// may leave so (see [`MonitorConfig::chosen_fencer`]). Kept apart from an explicit
    /// `none` because the two mean different things: one is a decision, the other is not.
    pub fencer: Option<FencerConfig>,
    /// Mutual TLS on the gRPC listener and to the other monitors; `None`: plain h2c.
    pub tls: Option<TlsFiles>,
    /// Serve without TLS on an address other hosts can reach (see [`MonitorConfig::validate`]).
    pub insecure: bool,
}

impl MonitorConfig {
    /// A single-node monitor in `data_dir` on `listen`, with every other value at its
    /// default.
    pub fn new(node_id: u64, data_dir: impl AsRef<Path>, listen: SocketAddr) -> Self {
        MonitorConfig {
            node_id,
            data_dir: data_dir.as_ref().to_path_buf(),
            listen,
            advertise: None,
            peer_listen: None,
            advertise_peer: None,
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7401))),
            http_tls: false,
            bootstrap: Bootstrap::Single,
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs: 5000,
            logs_kept: 1000,
            cache_mb: 64,
            store: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            liveness_tick_ms: 250,
            balance_moves: DEFAULT_BALANCE_MOVES,
            log_format: LogFormat::Human,
            fencer: None,
            tls: None,
            insecure: false,
        }
    }

    /// Resolve flags and environment over the file over the defaults, and check the result.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let fencer = fencer(&args, &file)?;
        let listen = match (args.listen, file.listen) {
            (Some(l), _) => l,
            (None, Some(l)) => l
                .parse()
                .map_err(|_| invalid("listen", format!("{l:?} is not IP:PORT")))?,
            (None, None) => DEFAULT_LISTEN
                .parse()
                .map_err(|_| invalid("listen", "bad built-in default"))?,
        };
        let mut c = MonitorConfig::new(
            args.node_id.or(file.node_id).unwrap_or(1),
            args.data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("gwmon-data")),
            listen,
        );
        c.advertise = args.advertise.or(file.advertise);
        c.advertise_peer = args.advertise_peer.or(file.advertise_peer);
        c.peer_listen = match (args.peer_listen, file.peer_listen) {
            (Some(p), _) => Some(p),
            (None, Some(p)) => Some(
                p.parse()
                    .map_err(|_| invalid("peer_listen", format!("{p:?} is not IP:PORT")))?,
            ),
            (None, None) => None,
        };
        let http_listen = match (args.http_listen, file.http_listen) {
            (Some(h), _) => h,
            (None, Some(h)) => h.parse().map_err(|e| invalid("http_listen", e))?,
            (None, None) => DEFAULT_HTTP_LISTEN
                .parse()
                .map_err(|e| invalid("http_listen", e))?,
        };
        c.http_listen = http_listen.addr();
        c.http_tls = args.http_tls || file.http_tls.unwrap_or(false);
        let members = match (args.initial_members, file.initial_members) {
            (Some(m), _) => Some(m),
            (None, Some(list)) => Some(
                list.iter()
                    .map(|s| s.parse::<Member>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("initial_members", e))?,
            ),
            (None, None) => None,
        };
        let join = args.join || file.join.unwrap_or(false);
        c.bootstrap = bootstrap(members, join)?;
        macro_rules! pick {
            ($field:ident) => {
                if let Some(v) = args.$field.or(file.$field) {
                    c.$field = v;
                }
            };
        }
        pick!(heartbeat_ms);
        pick!(election_timeout_min_ms);
        pick!(election_timeout_max_ms);
        pick!(snapshot_logs);
        pick!(logs_kept);
        pick!(cache_mb);
        c.store = args.store.or(file.store);
        pick!(max_connections);
        pick!(liveness_tick_ms);
        pick!(balance_moves);
        pick!(log_format);
        c.fencer = fencer;
        let tls_setting =
            if args.tls_ca.is_some() || args.tls_cert.is_some() || args.tls_key.is_some() {
                "--tls-"
            } else {
                "tls_"
            };
        c.tls = TlsFiles::from_parts(
            args.tls_ca.or(file.tls_ca),
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            tls_setting,
        )?;
        c.insecure = args.insecure || file.insecure.unwrap_or(false);
        c.validate()?;
        // The daemon has no other fencer than the configured one: refuse now, before
        // anything is opened, rather than when the monitor starts.
        c.chosen_fencer()?;
        Ok(c)
    }

    /// The fencer this monitor runs when none is injected: the one configured, or `none`
    /// when nothing was set and the cluster is this monitor alone.
    ///
    /// A cluster of several monitors (initial members, or joining one) must choose: there,
    /// `none` means a gateway whose process is paused, crashed or OOM-killed while its data
    /// plane (kernel nvmet, SPDK) keeps serving stays optimized while another gateway is
    /// promoted, and that risk must be taken on purpose (`fencer = none`), not by default.
    /// A single-node monitor is a demo or a test bed, where the default keeps it easy.
    pub fn chosen_fencer(&self) -> Result<FencerConfig, ConfigError> {
        let alone = match &self.bootstrap {
            Bootstrap::Single => true,
            Bootstrap::Members(m) => m.len() == 1,
            Bootstrap::Join => false,
        };
        match &self.fencer {
            Some(f) => Ok(f.clone()),
            None if alone => Ok(FencerConfig::None),
            None => Err(ConfigError::NoFencerChosen),
        }
    }

    /// Refuse settings that cannot work, with the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("node_id", "monitor ids start at 1"));
        }
        if let Some(a) = &self.advertise {
            check_addr(a).map_err(|e| invalid("advertise", e))?;
        }
        if let Some(a) = &self.advertise_peer {
            check_addr(a).map_err(|e| invalid("advertise_peer", e))?;
        }
        let peer_listen = self.peer_listen()?;
        if let Bootstrap::Members(members) = &self.bootstrap {
            self.check_members(members)?;
        }
        if self.http_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(invalid(
                "http_listen",
                format!("{} is also the gRPC listen address", self.listen),
            ));
        }
        if peer_listen.port() != 0 {
            for (name, other) in [
                ("listen", Some(self.listen)),
                ("http_listen", self.http_listen),
            ] {
                if other == Some(peer_listen) {
                    return Err(invalid(
                        "peer_listen",
                        format!(
                            "{peer_listen} is also the {name} address; Raft has a port of its own"
                        ),
                    ));
                }
            }
        }
        if self.heartbeat_ms == 0 {
            return Err(invalid("heartbeat_ms", "must be more than 0"));
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms * 2 {
            return Err(invalid(
                "election_timeout_min_ms",
                "must be more than twice heartbeat_ms, or followers start elections against a healthy leader",
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(invalid(
                "election_timeout_max_ms",
                "must be more than election_timeout_min_ms",
            ));
        }
        self.check_ranges()?;
        if self.http_tls && self.tls.is_none() {
            return Err(invalid(
                "http_tls",
                "needs tls_ca, tls_cert and tls_key: HTTP is served with the monitor's certificate",
            ));
        }
        if self.tls.is_none() && !self.insecure {
            for addr in [self.listen, peer_listen] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Insecure(addr));
                }
            }
        }
        Ok(())
    }

    /// The initial members must include this monitor, agree with what it advertises and
    /// give every monitor addresses of its own.
    fn check_members(&self, members: &BTreeMap<u64, MonitorNode>) -> Result<(), ConfigError> {
        if !members.contains_key(&self.node_id) {
            return Err(invalid(
                "initial_members",
                format!("does not include this monitor's id {}", self.node_id),
            ));
        }
        let mine = members.get(&self.node_id);
        let advertised = [
            ("", mine.map(|m| &m.addr), &self.advertise),
            (
                "'s peer port",
                mine.map(|m| &m.peer_addr),
                &self.advertise_peer,
            ),
        ];
        for (what, listed, adv) in advertised {
            if let (Some(listed), Some(adv)) = (listed, adv) {
                if listed != adv {
                    return Err(invalid(
                        "initial_members",
                        format!(
                            "lists monitor {}{what} at {listed} but it advertises {adv}",
                            self.node_id
                        ),
                    ));
                }
            }
        }
        let mut seen = BTreeMap::new();
        for (id, node) in members {
            for addr in [&node.addr, &node.peer_addr] {
                if let Some(other) = seen.insert(addr.clone(), *id).filter(|o| o != id) {
                    return Err(invalid(
                        "initial_members",
                        format!("monitors {other} and {id} share the address {addr}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The numeric settings that have a range of their own.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        if self.snapshot_logs == 0 {
            return Err(invalid("snapshot_logs", "must be more than 0"));
        }
        if self.liveness_tick_ms == 0 {
            return Err(invalid("liveness_tick_ms", "must be more than 0"));
        }
        if !BALANCE_MOVES.contains(&self.balance_moves) {
            return Err(invalid(
                "balance_moves",
                format!(
                    "{} is out of range: it must be {} to {} (0 turns balancing off)",
                    self.balance_moves,
                    BALANCE_MOVES.start(),
                    BALANCE_MOVES.end()
                ),
            ));
        }
        if !MAX_CONNECTIONS.contains(&self.max_connections) {
            return Err(invalid(
                "max_connections",
                format!(
                    "must be {} to {}: every gateway, agent, operator and monitor holds one",
                    MAX_CONNECTIONS.start(),
                    MAX_CONNECTIONS.end()
                ),
            ));
        }
        if !CACHE_MB.contains(&self.cache_mb) {
            return Err(invalid(
                "cache_mb",
                format!(
                    "{} is out of range: it must be {} to {} (MiB)",
                    self.cache_mb,
                    CACHE_MB.start(),
                    CACHE_MB.end()
                ),
            ));
        }
        Ok(())
    }

    /// Where Raft is served: `peer_listen`, or the listen address's IP with its port plus
    /// 2 (port 0 stays 0: any free port).
    pub fn peer_listen(&self) -> Result<SocketAddr, ConfigError> {
        if let Some(p) = self.peer_listen {
            return Ok(p);
        }
        let port = match self.listen.port() {
            0 => 0,
            p => p
                .checked_add(crate::raft::PEER_PORT_OFFSET)
                .ok_or_else(|| {
                    invalid(
                        "peer_listen",
                        format!(
                            "{} leaves no port 2 above it for Raft; set peer_listen",
                            self.listen
                        ),
                    )
                })?,
        };
        Ok(SocketAddr::new(self.listen.ip(), port))
    }
}

/// How a monitor starts: alone, joining, or as one of the initial members.
fn bootstrap(members: Option<Vec<Member>>, join: bool) -> Result<Bootstrap, ConfigError> {
    Ok(match (members, join) {
        (Some(_), true) => {
            return Err(invalid(
                "join",
                "give either --join or --initial-members, not both",
            ))
        }
        (None, true) => Bootstrap::Join,
        (None, false) => Bootstrap::Single,
        (Some(list), false) => {
            let mut map = BTreeMap::new();
            for m in list {
                let node = MonitorNode::new(m.addr.clone(), m.peer_addr.clone());
                if let Some(other) = map.insert(m.id, node) {
                    return Err(invalid(
                        "initial_members",
                        format!(
                            "monitor id {} appears twice ({} and {})",
                            m.id, other.addr, m.addr
                        ),
                    ));
                }
            }
            Bootstrap::Members(map)
        }
    })
}

/// The fencer settings, flags over the file; `None` when no fencer kind was given.
fn fencer(args: &Args, file: &FileConfig) -> Result<Option<FencerConfig>, ConfigError> {
    let kind = args.fencer.or(file.fencer);
    fn or<T: Clone>(a: &Option<T>, f: &Option<T>) -> Option<T> {
        a.clone().or_else(|| f.clone())
    }
    let fencer = FencerSettings {
        kind: kind.unwrap_or_default(),
        command: or(&args.fencer_command, &file.fencer_command),
        args: or(&args.fencer_args, &file.fencer_args).unwrap_or_default(),
        url: or(&args.fencer_url, &file.fencer_url),
        ca: or(&args.fencer_ca, &file.fencer_ca),
        token_file: or(&args.fencer_token_file, &file.fencer_token_file),
        file_targets: or(&args.fencer_file_targets, &file.fencer_file_targets),
        timeout: args
            .fencer_timeout_ms
            .or(file.fencer_timeout_ms)
            .map_or(FencerSettings::DEFAULT_TIMEOUT, Duration::from_millis),
        retries: args
            .fencer_retries
            .or(file.fencer_retries)
            .unwrap_or(FencerSettings::DEFAULT_RETRIES),
        backoff: args
            .fencer_backoff_ms
            .or(file.fencer_backoff_ms)
            .map_or(FencerSettings::DEFAULT_BACKOFF, Duration::from_millis),
    }
    .resolve()
    .map_err(|e| ConfigError::Fencer(e.to_string()))?;
    Ok(kind.map(|_| fencer))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<MonitorConfig, String> {
        let args = Args::try_parse_from(std::iter::once("gwmon").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        MonitorConfig::from_args(args).map_err(|e| e.to_string())
    }

    #[test]
    fn no_options_give_the_embedded_single_node_monitor() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.node_id, 1);
        assert_eq!(c.data_dir, PathBuf::from("gwmon-data"));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.bootstrap, Bootstrap::Single);
        assert_eq!(
            c.http_listen.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_HTTP_LISTEN)
        );
    }

    #[test]
    fn the_http_listener_is_set_from_flag_or_file_or_turned_off() {
        let c = parse(&["--http-listen", "0.0.0.0:9100"]).expect("flag");
        assert_eq!(c.http_listen.map(|a| a.port()), Some(9100));
        let c = parse(&["--http-listen", "off"]).expect("off");
        assert_eq!(c.http_listen, None);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gwmon.toml");
        std::fs::write(&path, "http_listen = \"127.0.0.1:7411\"\n").expect("write");
        let file = path.to_str().expect("utf-8 path");
        let c = parse(&["--config", file]).expect("file");
        assert_eq!(c.http_listen.map(|a| a.port()), Some(7411));
        let c = parse(&["--config", file, "--http-listen", "OFF"]).expect("flag wins");
        assert_eq!(c.http_listen, None);

        std::fs::write(&path, "http_listen = \"nowhere\"\n").expect("write");
        let err = parse(&["--config", file]).expect_err("bad address");
        assert!(err.contains("http_listen"), "{err}");
        let err = parse(&["--http-listen", "7401"]).expect_err("no ip");
        assert!(err.contains("neither IP:PORT nor off"), "{err}");
        let err = parse(&[
            "--listen",
            "127.0.0.1:7500",
            "--http-listen",
            "127.0.0.1:7500",
        ])
        .expect_err("same port");
        assert!(err.contains("also the gRPC listen address"), "{err}");
    }

    #[test]
    fn members_are_parsed_and_checked() {
        let c = parse(&[
            "--node-id",
            "2",
            "--initial-members",
            "1=10.0.0.1:7400,2=10.0.0.2:7400,3=mon3:7400",
            "--fencer",
            "none",
        ])
        .expect("members");
        let Bootstrap::Members(m) = c.bootstrap else {
            panic!("members expected")
        };
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], MonitorNode::new("mon3:7400", "mon3:7402"));
        let c = parse(&[
            "--initial-members",
            "1=10.0.0.1:7400/10.1.0.1:9000,2=10.0.0.2:7400",
            "--fencer",
            "none",
        ])
        .expect("a peer address of its own");
        let Bootstrap::Members(m) = c.bootstrap else {
            panic!("members expected")
        };
        assert_eq!(m[&1], MonitorNode::new("10.0.0.1:7400", "10.1.0.1:9000"));
        assert_eq!(m[&2].peer_addr, "10.0.0.2:7402");
        let err = parse(&["--initial-members", "1=a:65535"]).expect_err("no port above");
        assert!(err.contains("plus 2 is no port"), "{err}");
        let err = parse(&["--initial-members", "1=a:7400/b"]).expect_err("peer without port");
        assert!(
            err.contains("peer: the address \"b\" has no :PORT"),
            "{err}"
        );
        let err = parse(&["--initial-members", "1=a:7400/a:7400"]).expect_err("one port");
        assert!(err.contains("a port of its own"), "{err}");
        let err = parse(&["--initial-members", "1=a:7400,2=b:7400/a:7402"])
            .expect_err("a peer port on another's");
        assert!(err.contains("share the address a:7402"), "{err}");
        let long = format!("1={}:7400", "h".repeat(300));
        let err = parse(&["--initial-members", &long]).expect_err("too long");
        assert!(err.contains("longer than 260"), "{err}");

        let err = parse(&["--initial-members", "1=10.0.0.1"]).expect_err("no port");
        assert!(err.contains("no :PORT"), "{err}");
        let err = parse(&["--initial-members", "x=10.0.0.1:1"]).expect_err("bad id");
        assert!(err.contains("is not a number"), "{err}");
        let err = parse(&["--initial-members", "1=a:1,1=b:2"]).expect_err("collision");
        assert!(err.contains("appears twice"), "{err}");
        let err = parse(&["--initial-members", "1=a:1,2=a:1"]).expect_err("same address");
        assert!(err.contains("share the address"), "{err}");
        let err = parse(&["--node-id", "4", "--initial-members", "1=a:1"]).expect_err("absent");
        assert!(err.contains("does not include"), "{err}");
        let err = parse(&["--node-id", "0"]).expect_err("zero");
        assert!(err.contains("start at 1"), "{err}");
    }

    #[test]
    fn raft_has_a_port_of_its_own() {
        let c = parse(&[]).expect("defaults");
        assert_eq!(c.peer_listen().ok(), "127.0.0.1:7402".parse().ok());
        let c = parse(&["--listen", "127.0.0.1:9000"]).expect("listen");
        assert_eq!(c.peer_listen().ok(), "127.0.0.1:9002".parse().ok());
        let c = parse(&["--peer-listen", "127.0.0.2:7500"]).expect("peer listen");
        assert_eq!(c.peer_listen().ok(), "127.0.0.2:7500".parse().ok());
        let err = parse(&["--peer-listen", "127.0.0.1:7400"]).expect_err("shared with clients");
        assert!(err.contains("is also the listen address"), "{err}");
        let err = parse(&["--peer-listen", "127.0.0.1:7401"]).expect_err("shared with HTTP");
        assert!(err.contains("is also the http_listen address"), "{err}");
        let err = parse(&["--listen", "127.0.0.1:65534"]).expect_err("no port above");
        assert!(err.contains("set peer_listen"), "{err}");
        let err = parse(&["--peer-listen", "0.0.0.0:7402"]).expect_err("plain Raft for all");
        assert!(
            err.starts_with("listen: 0.0.0.0:7402 is reachable"),
            "{err}"
        );
    }

    #[test]
    fn a_listener_other_hosts_reach_needs_tls_or_insecure() {
        let err = parse(&["--listen", "0.0.0.0:7400"]).expect_err("plain on every address");
        assert!(
            err.starts_with("listen: 0.0.0.0:7400 is reachable from other hosts and TLS is off"),
            "{err}"
        );
        let c = parse(&["--listen", "0.0.0.0:7400", "--insecure"]).expect("insecure by choice");
        assert!(c.insecure && c.tls.is_none());
        let c = parse(&["--listen", "[::1]:7400"]).expect("loopback needs no TLS");
        assert!(c.tls.is_none());
        let c = parse(&[
            "--listen",
            "10.0.0.1:7400",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "m1.pem",
            "--tls-key",
            "m1.key",
        ])
        .expect("TLS");
        assert_eq!(c.tls.map(|t| t.key), Some(PathBuf::from("m1.key")));
        let err = parse(&["--tls-ca", "ca.pem"]).expect_err("half of TLS");
        assert_eq!(
            err,
            "TLS needs a CA, a certificate and a key; --tls-cert and --tls-key not given"
        );
    }

    #[test]
    fn the_file_is_read_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gwmon.toml");
        std::fs::write(
            &path,
            "node_id = 3\nlisten = \"127.0.0.1:7500\"\nheartbeat_ms = 50\ninitial_members = [\"3=127.0.0.1:7500\"]\nstore = \"redb\"\n",
        )
        .expect("write");
        let file = path.to_str().expect("utf-8 path");
        let c = parse(&["--config", file, "--heartbeat-ms", "80"]).expect("file");
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listen.port(), 7500);
        assert_eq!(c.heartbeat_ms, 80);
        assert_eq!(c.store, Some(StoreKind::Redb));
        let c = parse(&["--config", file, "--store", "sled"]).expect("flag over file");
        assert_eq!(c.store, Some(StoreKind::Sled));
        assert_eq!(
            parse(&[]).expect("defaults").store,
            None,
            "the directory's own"
        );

        std::fs::write(&path, "node_idd = 3\n").expect("write");
        let err = parse(&["--config", file]).expect_err("unknown key");
        assert!(err.contains("unknown field"), "{err}");
        let err = parse(&["--config", "/nonexistent/gwmon.toml"]).expect_err("missing file");
        assert!(err.contains("cannot read config file"), "{err}");
    }

    #[test]
    fn several_monitors_must_choose_their_fencer() {
        let three = ["--initial-members", "1=a:1,2=b:1,3=c:1"];
        let err = parse(&three).expect_err("no fencer");
        assert!(err.starts_with("fencer: not set"), "{err}");
        assert!(err.contains("set fencer = none"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = parse(&["--join"]).expect_err("joining a cluster");
        assert!(err.starts_with("fencer: not set"), "{err}");

        // Explicitly none, from a flag, the environment's equivalent or the file.
        let c = parse(&[three[0], three[1], "--fencer", "none"]).expect("explicit none");
        assert_eq!(c.fencer, Some(FencerConfig::None));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gwmon.toml");
        std::fs::write(
            &path,
            "initial_members = [\"1=a:1\", \"2=b:1\"]\nfencer = \"file\"\nfencer_file_targets = \"/srv/{gateway}.json\"\n",
        )
        .expect("write");
        let file = path.to_str().expect("utf-8 path");
        let c = parse(&["--config", file]).expect("file fencer from the file");
        assert_eq!(
            c.chosen_fencer().expect("chosen"),
            FencerConfig::File {
                targets: "/srv/{gateway}.json".into(),
                timeout: FencerSettings::DEFAULT_TIMEOUT,
            }
        );
        let c = parse(&[
            "--config",
            file,
            "--fencer",
            "none",
            "--fencer-file-targets",
            "x",
        ]);
        assert!(c
            .expect_err("targets without file")
            .contains("fencer_file_targets"));
        let err = parse(&["--fencer", "file"]).expect_err("no targets");
        assert_eq!(err, "fencer_file_targets: is required with fencer = file");

        // One monitor alone may leave it unset: it falls back to none.
        for alone in [&[][..], &["--initial-members", "1=a:1"][..]] {
            let c = parse(alone).expect("single monitor");
            assert_eq!(c.fencer, None);
            assert_eq!(c.chosen_fencer().expect("none"), FencerConfig::None);
        }
    }

    #[test]
    fn timings_that_cannot_work_are_refused() {
        let err = parse(&["--heartbeat-ms", "400"]).expect_err("heartbeat too slow");
        assert!(err.contains("election_timeout_min_ms"), "{err}");
        let err = parse(&["--election-timeout-max-ms", "100"]).expect_err("max below min");
        assert!(err.contains("election_timeout_max_ms"), "{err}");
        for bad in ["0", "65537"] {
            let err = parse(&["--cache-mb", bad]).expect_err("cache out of range");
            assert!(
                err.contains("cache_mb") && err.contains("1 to 65536"),
                "{err}"
            );
        }
        assert_eq!(
            parse(&["--cache-mb", "65536"])
                .expect("top of the range")
                .cache_mb,
            65_536
        );
    }
}
