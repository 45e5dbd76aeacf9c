//! `gwmon-sim`: run many seeds, or replay one with its trace.
//!
//! ```text
//! gwmon-sim --seeds 10000 [--from 0] [--jobs 2]   run seeds from..from+N, print seeds/s
//! gwmon-sim --seed 42 [--trace]                   replay one seed, print its history
//! gwmon-sim --mutation NAME --until-caught        search for the first seed that catches it
//! gwmon-sim --plan [--seed S | --seeds N]         print the faults seeds draw, run nothing
//! ```
//!
//! Every seed of a batch runs in a process of its own, exactly as its replay does: some
//! state outlives a run inside one process (counters in the libraries underneath), and a
//! seed must give the same run whether it is found in a batch or replayed alone. A single
//! `--seed` runs in this process. `GWMON_SIM_SEEDS` sets `--seeds` when it is not given.

use std::collections::VecDeque;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use gwmon_proto::mutation::Mutation;
use gwmon_sim::run::{run, Options, Plan};

const USAGE: &str = "usage: gwmon-sim [--seeds N] [--from S] [--jobs J] | --seed S [--trace]\n       \
                     [--mutation NAME [--until-caught]]  (mutations need --profile sim or a debug build)\n       \
                     --plan [--seed S | --seeds N [--from S]]  (print the faults drawn, run nothing)";

struct Args {
    from: u64,
    count: u64,
    single: bool,
    jobs: usize,
    trace: bool,
    mutation: Option<Mutation>,
    /// With a mutation: stop at the first seed that catches it.
    until_caught: bool,
    /// Print each seed's plan instead of running it.
    plan: bool,
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
        single: false,
        jobs: 1,
        trace: false,
        mutation: None,
        until_caught: false,
        plan: false,
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
                args.single = true;
            }
            "--from" => args.from = value("--from")?,
            "--seeds" => args.count = value("--seeds")?,
            "--jobs" => {
                let j = value("--jobs")?;
                if !(1..=64).contains(&j) {
                    return Err(format!("--jobs {j}: must be between 1 and 64"));
                }
                args.jobs = usize::try_from(j).unwrap_or(1);
            }
            "--trace" => args.trace = true,
            "--plan" => args.plan = true,
            "--until-caught" => args.until_caught = true,
            "--mutation" => {
                let v = it.next().ok_or("--mutation needs a value")?;
                args.mutation = Some(Mutation::from_name(&v).ok_or_else(|| {
                    let names: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
                    format!("--mutation {v}: not one of {}", names.join(", "))
                })?);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    if args.count == 0 {
        return Err("--seeds 0: nothing to run".into());
    }
    Ok(args)
}

/// Run one seed here and print its result: the report if it failed, then one line
/// `result seed=S ok=B recovery_ms=N digest=HEX` that a batch parent reads.
/// A run still going after this much wall time is stuck: simulated time moves only when
/// every task waits, so one task that never does stops it for good. A run takes about a
/// second in a release build, under a minute in a debug one.
const WALL_LIMIT: Duration = Duration::from_secs(300);

fn run_one(args: &Args) -> ExitCode {
    let seed = args.from;
    let (profile, mutation) = match args.mutation {
        Some(m) => ("--profile sim", format!(" --mutation {}", m.name())),
        None => ("--release", String::new()),
    };
    std::thread::spawn(move || {
        std::thread::sleep(WALL_LIMIT);
        println!(
            "seed {seed}: FAILED\n  harness: the run did not finish in {} s of wall time: simulated \
             time stopped, so some task never waits\n  replay: GWMON_SIM_LOG=info cargo run \
             {profile} -p gwmon-sim -- --seed {seed}{mutation} (the log's last lines show where)",
            WALL_LIMIT.as_secs()
        );
        println!("result seed={seed} ok=false recovery_ms=-1 digest=0000000000000000");
        std::process::exit(1);
    });
    let mut options = Options::new(args.from);
    options.mutation = args.mutation;
    let out = run(&options);
    if args.trace {
        print!("{}", out.trace());
    }
    if !out.ok() {
        print!("{}", out.report());
    }
    println!(
        "result seed={} ok={} recovery_ms={} digest={:016x}",
        out.seed,
        out.ok(),
        out.recovery
            .map_or(-1, |r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX)),
        out.digest()
    );
    if out.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What a child reported.
struct Result1 {
    seed: u64,
    ok: bool,
    recovery: Option<Duration>,
    report: String,
}

fn spawn(seed: u64, mutation: Option<Mutation>) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--seed").arg(seed.to_string());
    if let Some(m) = mutation {
        cmd.arg("--mutation").arg(m.name());
    }
    cmd.env_remove("GWMON_SIM_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start a run: {e}"))
}

fn collect(seed: u64, child: Child) -> Result1 {
    let output = match child.wait_with_output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("seed {seed}: FAILED\n  harness: the run's process failed: {e}\n"),
    };
    let result = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("result "))
        .map(str::to_owned);
    let Some(result) = result else {
        return Result1 {
            seed,
            ok: false,
            recovery: None,
            report: format!("seed {seed}: FAILED\n  harness: the run ended without a result (crashed?)\n{output}"),
        };
    };
    let field = |k: &str| {
        result
            .split_whitespace()
            .find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_default()
            .to_owned()
    };
    let ok = field("ok") == "true";
    let recovery = field("recovery_ms")
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis);
    let report = output
        .lines()
        .filter(|l| !l.starts_with("result "))
        .collect::<Vec<_>>()
        .join("\n");
    Result1 {
        seed,
        ok,
        recovery,
        report,
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.plan {
        for seed in args.from..args.from.saturating_add(args.count) {
            println!("seed {seed}: {}", Plan::draw(&Options::new(seed)));
        }
        return ExitCode::SUCCESS;
    }
    if args.single {
        return run_one(&args);
    }
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut worst = Duration::ZERO;
    let mut ran = 0u64;
    let mut next = args.from;
    let end = args.from.saturating_add(args.count);
    let mut running: VecDeque<(u64, Child)> = VecDeque::new();
    let mut stop = false;
    loop {
        while !stop && next < end && running.len() < args.jobs {
            match spawn(next, args.mutation) {
                Ok(c) => running.push_back((next, c)),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            }
            next += 1;
        }
        let Some((seed, child)) = running.pop_front() else {
            break;
        };
        let r = collect(seed, child);
        ran += 1;
        if let Some(rec) = r.recovery {
            worst = worst.max(rec);
        }
        if !r.ok {
            println!("{}", r.report);
            failed.push(r.seed);
            if args.until_caught {
                stop = true;
            }
        }
        if ran.is_multiple_of(100) {
            println!(
                "progress: {ran} seeds, {} failed, {:.2} seeds/s",
                failed.len(),
                ran as f64 / started.elapsed().as_secs_f64().max(1e-9)
            );
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
