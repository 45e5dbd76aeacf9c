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

fn main() -> ExitCode {
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
