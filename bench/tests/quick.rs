//! The CI smoke of the benchmark tool: `gwmon-bench --quick` against real `gwmon`
//! processes. It proves that every scenario runs and prints its tables; it judges no speed.
//!
//! `CARGO_BIN_EXE_*` names only this package's binaries, so `gwmon` is built here with the
//! cargo that runs the test (`env!("CARGO")`), this test's profile and `--locked`, and its
//! path is taken from cargo's JSON messages, as `cli/tests/quickstart.rs` does. After
//! `cargo test --workspace` it is already built and this only checks it is fresh.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_gwmon-bench");
/// The quick mode aims at under 2 minutes in a debug build; room for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(400);

fn build_gwmon() -> PathBuf {
    let mut bins = gwmon_tests::bins::build(BENCH, &["gwmon-monitor"], &["gwmon"]);
    bins.remove("gwmon").unwrap_or_default()
}

#[test]
fn the_quick_mode_runs_every_scenario_against_real_monitors() {
    let gwmon = build_gwmon();
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("bench.out");
    let err_path = dir.path().join("bench.err");
    let mut child = Command::new(BENCH)
        .arg("--quick")
        .arg("--gwmon")
        .arg(&gwmon)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("output file"))
        .stderr(std::fs::File::create(&err_path).expect("error file"))
        .spawn()
        .expect("start gwmon-bench");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for gwmon-bench") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gwmon-bench --quick did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let read = |p: &Path| {
        let mut s = String::new();
        std::fs::File::open(p)
            .and_then(|mut f| f.read_to_string(&mut s))
            .expect("read output");
        s
    };
    let out = read(&out_path);
    let err = read(&err_path);
    assert!(status.success(), "gwmon-bench --quick failed: {err}\n{out}");
    for heading in [
        "## Commit",
        "## Failover",
        "## Availability",
        "## Beacons",
        "## Fan-out",
        "## Footprint",
        "## etcd side by side",
        "## Namespace balancing",
        "## Group scale",
    ] {
        assert!(out.contains(heading), "no {heading:?} section in:\n{out}");
    }
    // Every failover trial completed, and its phases came from the event stream.
    assert!(out.contains("3 of 3 trials complete"), "{out}");
    assert!(
        out.contains("| fence issued → fence completed |")
            && !out.contains("| fence issued → fence completed | n/a"),
        "{out}"
    );
    // Every availability event ran (two targets optimized at once fails the run).
    for event in [
        "| disable |",
        "| delete |",
        "| failback (enable) |",
        "| leader kill -9 |",
        "| leader SIGSTOP 2 x election timeout |",
        "| failover target deleted while it waits for the fence |",
    ] {
        assert!(out.contains(event), "no {event:?} row in:\n{out}");
    }
    // The large group came up and its report sizes were taken from the monitors' codec.
    assert!(
        out.contains("| a changed report, committed (the Raft entry's command) |"),
        "{out}"
    );
    // etcd either ran or said clearly why not.
    assert!(
        out.contains("### gwmon against etcd") || out.contains("**Skipped:**"),
        "{out}"
    );
    println!("{out}");
}
