//! `gwmon-sim`: run many seeds, or replay one with its trace.
//!
//! ```text
//! gwmon-sim --seeds 10000 [--from 0]     run seeds from..from+N, print seeds per second
//! gwmon-sim --seed 42 [--trace]          replay one seed, print its event history
//! ```
//! `GWMON_SIM_SEEDS` sets `--seeds` when no argument is given.

use std::process::ExitCode;
use std::time::Instant;

use gwmon_sim::run::{run, Options};

struct Args {
    from: u64,
    count: u64,
    trace: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        from: 0,
        count: std::env::var("GWMON_SIM_SEEDS")
            .ok()
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("GWMON_SIM_SEEDS={v}: not a number"))
            })
            .transpose()?
            .unwrap_or(100),
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name} {v}: not a number"))
        };
        match a.as_str() {
            "--seed" => {
                args.from = value("--seed")?;
                args.count = 1;
            }
            "--from" => args.from = value("--from")?,
            "--seeds" => args.count = value("--seeds")?,
            "--trace" => args.trace = true,
            "-h" | "--help" => {
                return Err("usage: gwmon-sim [--seeds N] [--from S] | --seed S [--trace]".into())
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Ok(filter) = std::env::var("GWMON_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .without_time()
            .try_init();
    }
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut worst = std::time::Duration::ZERO;
    for seed in args.from..args.from.saturating_add(args.count) {
        let out = run(&Options::new(seed));
        if let Some(r) = out.recovery {
            worst = worst.max(r);
        }
        if args.trace {
            print!("{}", out.trace());
        }
        if !out.ok() {
            println!("seed {seed}: FAILED");
            if let Some(e) = &out.error {
                println!("  harness: {e}");
            }
            for v in &out.violations {
                println!("  {v}");
            }
            println!("  replay: cargo run --release -p gwmon-sim -- --seed {seed} --trace");
            failed.push(seed);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds from {} in {secs:.1} s ({:.2} seeds/s), {} failed; slowest recovery after faults {:.3} s",
        args.count,
        args.from,
        args.count as f64 / secs.max(1e-9),
        failed.len(),
        worst.as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        ExitCode::FAILURE
    }
}
