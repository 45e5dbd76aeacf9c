//! `nvmeof-agent`: parse the command line, set up logging, run the command on a small
//! runtime, exit 0 (done), 1 (failed at run time) or 2 (bad usage).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use gwmon_agent::cli::{self, Cli, LogFormat};
use gwmon_agent::error::exit;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version 0: clap's own codes.
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_env("NVMEOF_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.global.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Human => logs.init(),
    }
    // The agent makes one call or runs one command at a time: one thread is enough, and
    // leaves the compute node's cores to its guests.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nvmeof-agent: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let stop = CancellationToken::new();
    let result = runtime.block_on(async {
        // The handlers are installed before anything runs, so a signal that comes at once
        // still stops the agent cleanly instead of killing it.
        let signals = Signals::install();
        let cancel = stop.clone();
        tokio::spawn(async move {
            signals.recv().await;
            tracing::info!("signal received, stopping");
            cancel.cancel();
        });
        let mut stdout = std::io::stdout();
        cli::run(cli, stop, &mut stdout).await
    });
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("nvmeof-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// SIGINT and SIGTERM (systemd's stop).
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(i), Ok(t)) => Some((i, t)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn recv(self) {
        #[cfg(unix)]
        if let Some((mut int, mut term)) = self.streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handling to be had: run until killed rather than stop at once.
            std::future::pending::<()>().await;
        }
    }
}
