//! `gwmon-bench`: parses flags and runs the selected scenarios (see the library).

use std::process::ExitCode;

use clap::Parser;
use gwmon_bench::Config;

fn main() -> ExitCode {
    let config = Config::parse();
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
