//! `nvme-gw`: parse the command line, run the command on a small runtime, exit with the
//! code of its outcome (see `nvme_gw::error::exit`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use nvme_gw::args::{Cli, Format};
use nvme_gw::error::exit;

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version 0: clap's own codes, as documented.
    let cli = Cli::parse();
    let format = cli
        .global
        .format
        .unwrap_or(if std::io::stdout().is_terminal() {
            Format::Plain
        } else {
            Format::JsonPretty
        });
    // One call at a time: a single-threaded runtime is all a CLI needs.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nvme-gw: cannot start the runtime: {e}");
            return ExitCode::from(exit::REFUSED);
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(nvme_gw::commands::run(cli, format, &mut stdout)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(nvme_gw::error::CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // `nvme-gw show ... | head -1`: the reader has what it wanted.
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("nvme-gw: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
