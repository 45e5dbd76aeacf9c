//! `gwmon`: the monitor daemon. Parses flags, sets up logging, runs until SIGTERM/SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use gwmon_monitor::config::{Args, LogFormat, MonitorConfig};
use gwmon_monitor::node;
use tracing_subscriber::EnvFilter;

/// glibc's malloc spent over half of a leader's CPU at 20,000 gateways consolidating and
/// unlinking free chunks; mimalloc serves the same allocations from per-thread pages
/// (BENCHMARKS.md, "Beacons at 10,000 and 20,000 gateways").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The log filter without `GWMON_LOG`. openraft's replication logs every failed RPC to a
/// peer, with its address, at each retry (four lines every 500 ms for a monitor that is
/// down); the monitor's network logs a peer's loss and return once each instead.
const DEFAULT_LOG: &str = "info,openraft=warn,openraft::replication=off,\
     openraft::engine::handler::replication_handler=off,sled=warn,h2=warn,tower=warn";

/// The stopped (or new) monitor `gwmon recover` and `gwmon restore` work on.
#[derive(Debug, clap::Args)]
struct Target {
    /// The monitor's data directory.
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// Its monitor id.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    node_id: u64,
    /// The address it serves clients on (`--listen`), as the others will dial it.
    #[arg(long)]
    listen: String,
    /// Its Raft peer address (`--peer-listen`); default: the listen port plus 2.
    #[arg(long)]
    peer_listen: Option<String>,
    /// Store page cache in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    cache_mb: u64,
    /// The store's backend (`--store` of the monitor): for `recover`, the one the directory
    /// holds if not given; for `restore`, redb if not given.
    #[arg(long, value_enum)]
    store: Option<gwmon_monitor::store::StoreKind>,
}

impl Target {
    fn node(&self) -> Result<gwmon_monitor::raft::MonitorNode, String> {
        let check = |what: &str, addr: &str| {
            gwmon_monitor::config::check_addr(addr).map_err(|e| format!("--{what} {e}"))
        };
        check("listen", &self.listen)?;
        let peer = match &self.peer_listen {
            Some(p) => check("peer-listen", p).map(|()| p.clone())?,
            None => gwmon_monitor::raft::default_peer_addr(&self.listen).ok_or_else(|| {
                format!(
                    "--listen {}: its port plus 2 is no port; give --peer-listen",
                    self.listen
                )
            })?,
        };
        Ok(gwmon_monitor::raft::MonitorNode::new(
            self.listen.clone(),
            peer,
        ))
    }
}

/// `gwmon recover`: see [`gwmon_monitor::recover`].
#[derive(Debug, Parser)]
#[command(
    name = "gwmon recover",
    about = "Rewrite a stopped monitor's store into a one-monitor cluster, when the other \
             monitors and the quorum are lost for good; then start it as usual and add \
             new monitors with `nvme-gw cluster add`"
)]
struct RecoverArgs {
    #[command(flatten)]
    target: Target,
}

/// `gwmon restore`: see [`gwmon_monitor::recover::restore`].
#[derive(Debug, Parser)]
#[command(
    name = "gwmon restore",
    about = "Start a one-monitor cluster in an empty data directory from a backup made with \
             `nvme-gw cluster backup`; then start it as usual and add monitors with \
             `nvme-gw cluster add`"
)]
struct RestoreArgs {
    #[command(flatten)]
    target: Target,
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    from: std::path::PathBuf,
}

/// Run `gwmon recover` or `gwmon restore` on a current-thread runtime.
fn surgery<F, T>(
    what: &str,
    target: &Target,
    run: impl FnOnce(gwmon_monitor::raft::MonitorNode) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = Result<T, gwmon_monitor::error::MonitorError>>,
    T: std::fmt::Display,
{
    let node = match target.node() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("gwmon {what}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gwmon {what}: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(node)) {
        Ok(done) => {
            println!("gwmon {what}: {done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gwmon {what}: {e}");
            ExitCode::from(1)
        }
    }
}

fn recover(args: RecoverArgs) -> ExitCode {
    let t = &args.target;
    surgery("recover", t, |node| {
        gwmon_monitor::recover::force_new_cluster(&t.data_dir, t.node_id, node, t.store, t.cache_mb)
    })
}

fn restore(args: RestoreArgs) -> ExitCode {
    let backup = match std::fs::read(&args.from) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gwmon restore: cannot read {}: {e}", args.from.display());
            return ExitCode::from(1);
        }
    };
    let t = &args.target;
    surgery("restore", t, |node| async move {
        gwmon_monitor::recover::restore(&t.data_dir, t.node_id, node, t.store, t.cache_mb, &backup)
            .await
    })
}

fn main() -> ExitCode {
    match std::env::args_os().nth(1) {
        Some(a) if a == "recover" => {
            return recover(RecoverArgs::parse_from(std::env::args_os().skip(1)))
        }
        Some(a) if a == "restore" => {
            return restore(RestoreArgs::parse_from(std::env::args_os().skip(1)))
        }
        _ => {}
    }
    let args = Args::parse();
    let config = match MonitorConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gwmon: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_env("GWMON_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    // Logs go to stderr, coloured only on a terminal; stdout carries the start line.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Human => logs.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gwmon: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(node::run(config, signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gwmon: {e}");
            ExitCode::from(1)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
