//! `gwmon-sim`: run many seeds, or replay one with its trace.
//!
//! ```text
//! gwmon-sim --seeds 10000 [--from 0]     run seeds from..from+N, print seeds per second
//! gwmon-sim --seed 42 [--trace]          replay one seed, print its event history
//! ```
//! `GWMON_SIM_SEEDS` sets `--seeds` when no argument is given.

use std::process::ExitCode;
use std::time::Instant;

use gwmon_proto::mutation::Mutation;
use gwmon_sim::run::{run, Options};

struct Args {
    from: u64,
    count: u64,
    trace: bool,
    mutation: Option<Mutation>,
    /// With a mutation: stop at the first seed that catches it.
    until_caught: bool,
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
        mutation: None,
        until_caught: false,
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
            "--until-caught" => args.until_caught = true,
            "--mutation" => {
                let v = it.next().ok_or("--mutation needs a value")?;
                args.mutation = Some(Mutation::from_name(&v).ok_or_else(|| {
                    let names: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
                    format!("--mutation {v}: not one of {}", names.join(", "))
                })?);
            }
            "-h" | "--help" => {
                return Err("usage: gwmon-sim [--seeds N] [--from S] | --seed S [--trace]\n       \
                            [--mutation NAME [--until-caught]]  (needs --profile sim or a debug build)"
                    .into())
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
    let mut ran = 0u64;
    for seed in args.from..args.from.saturating_add(args.count) {
        let mut options = Options::new(seed);
        options.mutation = args.mutation;
        let out = run(&options);
        ran += 1;
        if let Some(r) = out.recovery {
            worst = worst.max(r);
        }
        if args.trace {
            print!("{}", out.trace());
        }
        if !out.ok() {
            print!("{}", out.report());
            failed.push(seed);
            if args.until_caught && out.error.is_none() {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{ran} seeds from {} in {secs:.1} s ({:.2} seeds/s), {} failed; slowest recovery after faults {:.3} s",
        args.from,
        ran as f64 / secs.max(1e-9),
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
