//! `gwmon`: the monitor daemon. Parses flags, sets up logging, runs until SIGTERM/SIGINT.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use gwmon_monitor::config::{Args, LogFormat, MonitorConfig};
use gwmon_monitor::node;
use tracing_subscriber::EnvFilter;

/// The log filter without `GWMON_LOG`. openraft's replication logs every failed RPC to a
/// peer, with its address, at each retry (four lines every 500 ms for a monitor that is
/// down); the monitor's network logs a peer's loss and return once each instead.
const DEFAULT_LOG: &str = "info,openraft=warn,openraft::replication=off,\
     openraft::engine::handler::replication_handler=off,sled=warn,h2=warn,tower=warn";

/// `gwmon recover`: see [`gwmon_monitor::recover`].
#[derive(Debug, Parser)]
#[command(
    name = "gwmon recover",
    about = "Rewrite a stopped monitor's store into a one-monitor cluster, when the other \
             monitors and the quorum are lost for good; then start it as usual and add \
             new monitors with `nvme-gw cluster add`"
)]
struct RecoverArgs {
    /// The stopped monitor's data directory.
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
}

fn recover(args: RecoverArgs) -> ExitCode {
    let check = |what: &str, addr: &str| {
        gwmon_monitor::config::check_addr(addr).map_err(|e| format!("--{what} {e}"))
    };
    let peer = match &args.peer_listen {
        Some(p) => check("peer-listen", p).map(|()| p.clone()),
        None => check("listen", &args.listen).and_then(|()| {
            gwmon_monitor::raft::default_peer_addr(&args.listen).ok_or_else(|| {
                format!(
                    "--listen {}: its port plus 2 is no port; give --peer-listen",
                    args.listen
                )
            })
        }),
    };
    let peer = match check("listen", &args.listen).and(peer) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gwmon recover: {e}");
            return ExitCode::from(2);
        }
    };
    let node = gwmon_monitor::raft::MonitorNode::new(args.listen.clone(), peer);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gwmon recover: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(gwmon_monitor::recover::force_new_cluster(
        &args.data_dir,
        args.node_id,
        node,
        args.cache_mb,
    )) {
        Ok(done) => {
            println!("gwmon recover: {done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gwmon recover: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "recover") {
        return recover(RecoverArgs::parse_from(std::env::args_os().skip(1)));
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
