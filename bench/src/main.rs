//! `gwmon-bench`: parses flags and runs the selected scenarios (see the library).

use std::process::ExitCode;

use clap::Parser;
use gwmon_bench::Config;

/// The simulated gateways share the machine with the monitors they load: mimalloc, as in
/// the daemon, keeps the bench's own allocations from taking CPU the monitors could use.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    // The in-process gateways of `--availability` log their sessions with RUST_LOG set
    // (say `RUST_LOG=gwmon_client=info`), to stderr, so the tables on stdout stay clean.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gwmon-bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(gwmon_bench::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gwmon-bench: {e}");
            ExitCode::from(1)
        }
    }
}
