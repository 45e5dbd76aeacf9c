//! The `nvmeof-agent` binary: exit codes, one-line errors, clean stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nvmeof-agent");
const VOLUME: &str = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

/// An address nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn agent(root: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("NVMEOF_AGENT_LOG", "warn")
        .arg("--root")
        .arg(root)
        .arg("--state-dir")
        .arg(root.join("state"))
        .stdin(Stdio::null());
    c
}

fn stderr_line(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = agent(dir.path()).arg("connect").output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "missing VOLUME");

    let out = agent(dir.path())
        .args([
            "connect",
            "vol1",
            "--monitors",
            "nowhere",
            "--host-nqn",
            HOST_NQN,
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_line(&out);
    assert!(err.starts_with("nvmeof-agent: --monitors:"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = agent(dir.path())
        .args(["connect", "vol1", "--monitors", &closed_port()])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_line(&out);
    assert!(err.contains("no host NQN: pass --host-nqn"), "{err}");

    let out = agent(dir.path())
        .args([
            "connect",
            "../etc",
            "--monitors",
            &closed_port(),
            "--host-nqn",
            HOST_NQN,
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_line(&out).contains("volume id"),
        "{}",
        stderr_line(&out)
    );

    let out = agent(dir.path())
        .args([
            "run",
            "--period-s",
            "0",
            "--monitors",
            &closed_port(),
            "--host-nqn",
            HOST_NQN,
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));

    let out = agent(dir.path())
        .args([
            "run",
            "--fast-io-fail-s",
            "601",
            "--monitors",
            &closed_port(),
            "--host-nqn",
            HOST_NQN,
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "out of 0..=600");
    assert!(
        stderr_line(&out).contains("--fast-io-fail-s"),
        "{}",
        stderr_line(&out)
    );
}

#[test]
fn the_host_nqn_is_read_from_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("etc/nvme")).expect("mkdir");
    std::fs::write(dir.path().join("etc/nvme/hostnqn"), format!("{HOST_NQN}\n")).expect("write");
    // Gets past the checks to the cluster, which does not answer: a run-time failure.
    let out = agent(dir.path())
        .args([
            "connect",
            VOLUME,
            "--monitors",
            &closed_port(),
            "--retries",
            "0",
            "--timeout-ms",
            "500",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", stderr_line(&out));
    let err = stderr_line(&out);
    assert!(err.contains("no monitor could answer"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn run_stops_cleanly_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = agent(dir.path())
        .env("NVMEOF_AGENT_LOG", "info")
        .args([
            "run",
            "--period-s",
            "1",
            "--retries",
            "0",
            "--timeout-ms",
            "200",
        ])
        .args(["--host-nqn", HOST_NQN, "--monitors", &closed_port()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    // Wait for its "agent running" line, read on a thread so the wait has a deadline.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("agent running within 30 s");
        if line.contains("agent running") {
            break;
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "a clean stop");
    // The reader ends when the pipe closes with the process; collect what it read.
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l.contains("agent stopped")), "{rest:?}");
}
