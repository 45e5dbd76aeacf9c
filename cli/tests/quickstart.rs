//! The README quickstart, run for real: `scripts/quickstart.sh` starts the `gwmon` daemon and
//! two `gwmon-gateway` processes, creates the gateways with `nvme-gw`, stops one and waits
//! for the failover, with the binaries the workspace builds. A second test checks that every
//! command line of the README's quickstart steps is in the script, so what CI runs is what
//! the README tells a newcomer to type.
//!
//! Getting the other packages' binaries. `CARGO_BIN_EXE_*` exists only for this package's own
//! binaries, and a dev-dependency on gwmon-monitor or gwmon-client builds their libraries, not
//! their binaries, so `cargo test -p nvme-gw` alone would find no `gwmon`. The test therefore
//! runs `cargo build --bins -p gwmon-monitor -p gwmon-client` itself, with the cargo that runs
//! the tests (`env!("CARGO")`), the profile this test binary was built with, and `--locked`,
//! and takes the executables' paths from cargo's JSON messages rather than guessing the
//! target directory. Cargo releases its build lock before it runs tests, so this does not
//! deadlock; after `cargo test --workspace` everything is already compiled and it only
//! links, or finds the binaries fresh.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NVME_GW: &str = env!("CARGO_BIN_EXE_nvme-gw");
/// The whole quickstart: a monitor start, two gateways, a failover after the 4 s grace.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(240);

fn workspace() -> PathBuf {
    gwmon_tests::bins::workspace()
}

/// Build `gwmon` and `gwmon-gateway`; their paths by binary name.
fn build_daemons() -> BTreeMap<String, PathBuf> {
    gwmon_tests::bins::build(
        NVME_GW,
        &["gwmon-monitor", "gwmon-client"],
        &["gwmon", "gwmon-gateway"],
    )
}

/// A port free right now (bound, then released) for the monitor to listen on.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn the_readme_quickstart_runs_as_written() {
    let bins = build_daemons();
    let mut path: Vec<PathBuf> = bins
        .values()
        .chain(std::iter::once(&PathBuf::from(NVME_GW)))
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    path.dedup();
    if let Some(old) = std::env::var_os("PATH") {
        path.extend(std::env::split_paths(&old));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let out_path = dir.path().join("quickstart.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut cmd = Command::new("bash");
    cmd.arg(workspace().join("scripts/quickstart.sh"))
        .current_dir(dir.path())
        .env("PATH", std::env::join_paths(path).expect("PATH"))
        .env("GWMON_LISTEN", &addr)
        .env("GWMON_MONITORS", &addr)
        // Not the default 127.0.0.1:7401: the test must not depend on that port being free.
        .env("GWMON_HTTP_LISTEN", "127.0.0.1:0")
        // Nor on the peer port next to the free one found for gRPC.
        .env("GWMON_PEER_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    for var in [
        "GWMON_CONFIG",
        "GWMON_NODE_ID",
        "GWMON_DATA_DIR",
        "GWMON_INITIAL_MEMBERS",
        "GWMON_ADVERTISE_PEER",
        "GWMON_JOIN",
        "GWMON_FORMAT",
        "GWMON_TIMEOUT_MS",
        "GWMON_RETRIES",
        "GWMON_GATEWAY_ID",
        "GWMON_POOL",
        "GWMON_GROUP",
        "GWMON_TLS_CA",
        "GWMON_TLS_CERT",
        "GWMON_TLS_KEY",
        "GWMON_INSECURE",
    ] {
        cmd.env_remove(var);
    }
    // Its own process group, so that a script stuck past the deadline is stopped together
    // with every daemon it started, and nothing else.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("run the quickstart");
    let end = Instant::now() + SCRIPT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= end {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    std::fs::File::open(&out_path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("read output");
    let logs: String = ["gwmon.log", "gw1.log", "gw2.log"]
        .iter()
        .map(|f| {
            let body = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
            format!("\n--- {f}\n{body}")
        })
        .collect();
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("quickstart failed ({s}):\n{text}{logs}"),
        None => panic!("quickstart still running after {SCRIPT_DEADLINE:?}:\n{text}{logs}"),
    }
    assert!(text.contains("quickstart: ok"), "{text}");
    // What the README promises a person sees after the failover.
    assert!(
        text.lines()
            .any(|l| l.starts_with("gw2 ") && l.ends_with("1:ACTIVE 2:ACTIVE")),
        "{text}"
    );
    assert!(text.contains("NVMEOF_GATEWAY_DOWN"), "{text}");
    // Safe as written: a real fencer, so no NVMEOF_NO_FENCER, and gw1's file was fenced.
    assert!(!text.contains("NVMEOF_NO_FENCER"), "{text}");
    assert!(
        text.contains("\"1\": \"inaccessible\",\n      \"2\": \"inaccessible\""),
        "{text}"
    );
}

/// The command lines of the README's quickstart steps: the `sh` blocks of its
/// "## Quickstart" section after the first (which builds the binaries and makes a scratch
/// directory: the test does both itself), without comments and blank lines.
fn readme_steps(readme: &str) -> Vec<String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Quickstart"))
        .expect("README.md has a ## Quickstart section");
    let mut blocks: Vec<Vec<String>> = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), l) if !l.is_empty() && !l.starts_with('#') => block.push(l.to_owned()),
            _ => {}
        }
    }
    assert!(
        blocks.len() > 2,
        "the quickstart has its steps in ```sh blocks"
    );
    blocks.into_iter().skip(1).flatten().collect()
}

#[test]
fn the_script_runs_every_command_of_the_readme_quickstart() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let script =
        std::fs::read_to_string(workspace().join("scripts/quickstart.sh")).expect("the script");
    let script_lines: Vec<&str> = script.lines().map(str::trim).collect();
    let steps = readme_steps(&readme);
    for step in &steps {
        assert!(
            script_lines.iter().any(|l| l.contains(step.as_str())),
            "README quickstart line not run by scripts/quickstart.sh: {step}"
        );
    }
    for must in [
        "gwmon ",
        "gwmon-gateway ",
        "nvme-gw create",
        "nvme-gw show",
        "kill $GW1",
    ] {
        assert!(
            steps.iter().any(|s| s.contains(must)),
            "the quickstart has a {must:?} step"
        );
    }
}
