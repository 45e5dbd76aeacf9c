//! `gwmon-e2e`: runs inside the e2e guest (see `e2e/run`). For each scenario it sets up
//! kernel nvmet targets, gwmon's monitors and gateways and a connected nvme-tcp multipath
//! host, injects the scenario's fault `--runs` times with fio running, and writes what the
//! host saw to `--out` (results.json, summary.txt, the processes' logs). Exit 0 only when
//! every phase passed: no fio error, the host served again, its ANA states matching the
//! map. The longest I/O of each phase is measured against its target and reported (a
//! figure, not a pass condition).

mod adapter;
mod cluster;
mod host;
mod kernel;
mod raid;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use scenario::{Env, Measure};

#[derive(Debug, Parser)]
#[command(
    name = "gwmon-e2e",
    about = "gwmon against real Linux NVMe, inside the e2e guest"
)]
struct Args {
    /// Where results and logs go.
    #[arg(long, default_value = "/results")]
    out: PathBuf,
    /// Where gwmon's binaries and nvmet-fence are.
    #[arg(long, default_value = "/bin")]
    bins: PathBuf,
    /// Scenarios, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Runs of each scenario (the victim alternates between gw1 and gw2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Internal to the adapter scenario: apply one ANA state as the nvmet adapter would
    /// (`PORT:GROUP` optimized) and exit, run without the right to write configfs.
    #[arg(long, hide = true)]
    probe_apply: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(spec) = &args.probe_apply {
        return match adapter::probe_apply(spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gwmon-e2e: {e}");
                ExitCode::from(1)
            }
        };
    }
    let known = names();
    let wanted: Vec<&str> = if args.scenarios == "all" {
        known.clone()
    } else {
        args.scenarios.split(',').collect()
    };
    if let Some(bad) = wanted.iter().find(|w| !known.contains(w)) {
        eprintln!(
            "gwmon-e2e: unknown scenario {bad}; known: {}",
            known.join(", ")
        );
        return ExitCode::from(2);
    }
    let mut results: Vec<Measure> = Vec::new();
    let mut failures = Vec::new();
    let mut record = |m: Measure, failures: &mut Vec<String>| {
        println!("e2e: {}", line(&m));
        if !m.passed() {
            failures.push(line(&m));
        }
        results.push(m);
    };
    for (name, monitors) in scenario::ALL.iter().filter(|(n, _)| wanted.contains(n)) {
        let work = args.out.join(name);
        println!("e2e: {name}: setting up ({monitors} monitor(s), 2 gateways)");
        let mut env = match Env::up(&args.bins, &work, *monitors) {
            Ok(env) => env,
            Err(e) => {
                println!("e2e: {name}: set-up failed: {e}");
                failures.push(format!("{name}: set-up: {e}"));
                continue;
            }
        };
        for run in 1..=args.runs {
            for m in scenario::run(&mut env, name, run) {
                record(m, &mut failures);
            }
        }
        if let Err(e) = env.down() {
            println!("e2e: {name}: tear-down failed: {e}");
            failures.push(format!("{name}: tear-down: {e}"));
        }
    }
    if wanted.contains(&adapter::NAME) {
        println!(
            "e2e: {}: the nvmet adapter on the kernel's configfs",
            adapter::NAME
        );
        for run in 1..=args.runs {
            for m in adapter::run(&args.bins, run) {
                record(m, &mut failures);
            }
        }
    }
    if wanted.contains(&raid::NAME) {
        println!(
            "e2e: {}: nvmeof-agent, MD RAID1 over nvmet replicas",
            raid::NAME
        );
        for run in 1..=args.runs {
            for m in raid::run(&args.bins, &args.out.join(raid::NAME), run) {
                record(m, &mut failures);
            }
        }
    }
    let json: Vec<_> = results.iter().map(Measure::json).collect();
    let summary = summary(&results, &failures);
    print!("{summary}");
    let written = std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .and_then(|()| std::fs::write(args.out.join("summary.txt"), &summary));
    if let Err(e) = written {
        eprintln!(
            "gwmon-e2e: cannot write results to {}: {e}",
            args.out.display()
        );
        return ExitCode::from(1);
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Every scenario, in the order they run.
fn names() -> Vec<&'static str> {
    let mut all: Vec<&str> = scenario::ALL.iter().map(|(n, _)| *n).collect();
    all.extend([adapter::NAME, raid::NAME]);
    all
}

fn line(m: &Measure) -> String {
    format!(
        "{} {} run {}: pause {:.1} ms (target {}), host served after {} ms, fio errors {}, {} I/Os, host {}{}{}",
        m.scenario,
        m.phase,
        m.run,
        m.pause_ms,
if m.within_target() { format!("{:.0} ms", m.target_ms) } else { format!("{:.0} ms, OVER", m.target_ms) },
        m.recovered_ms,
        m.errors,
        m.ios,
        if m.matched { "matches the cluster" } else { "DOES NOT match the cluster" },
        m.detail.as_deref().map(|d| format!("; {d}")).unwrap_or_default(),
        m.failure.as_deref().map(|f| format!(", FAILED: {f}")).unwrap_or_default(),
    )
}

/// Median and max of the pause per scenario phase, and the failures.
fn summary(results: &[Measure], failures: &[String]) -> String {
    let mut out = String::from(
        "| scenario | phase | runs | I/O pause median ms | max ms | target ms | runs over target | host served after, median ms | fio errors | host matches cluster |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for m in results {
        if !keys.contains(&(m.scenario.as_str(), m.phase.as_str())) {
            keys.push((&m.scenario, &m.phase));
        }
    }
    for (s, p) in keys {
        let ms: Vec<&Measure> = results
            .iter()
            .filter(|m| m.scenario == s && m.phase == p)
            .collect();
        let mut pauses: Vec<f64> = ms.iter().map(|m| m.pause_ms).collect();
        pauses.sort_by(f64::total_cmp);
        let mut served: Vec<u128> = ms.iter().map(|m| m.recovered_ms).collect();
        served.sort_unstable();
        out.push_str(&format!(
            "| {s} | {p} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {} | {}/{} |\n",
            ms.len(),
            pauses[(pauses.len() - 1) / 2],
            pauses[pauses.len() - 1],
            ms[0].target_ms,
            ms.iter().filter(|m| !m.within_target()).count(),
            served[(served.len() - 1) / 2],
            ms.iter().map(|m| m.errors).sum::<u64>(),
            ms.iter().filter(|m| m.matched).count(),
            ms.len(),
        ));
    }
    if failures.is_empty() {
        out.push_str("\nevery phase passed\n");
    } else {
        out.push_str(&format!("\n{} failure(s):\n", failures.len()));
        for f in failures {
            out.push_str(&format!("- {f}\n"));
        }
    }
    out
}
