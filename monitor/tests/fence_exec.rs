//! The exec fencer against real scripts in a temp dir.
//!
//! Scripts are run as `/bin/sh SCRIPT ...` (the script is the first configured argument)
//! rather than executed directly: executing a file this process just wrote can fail with
//! "text file busy" when another test forks meanwhile. The fencer is the same either way.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use gwmon_monitor::fence::{ExecFencer, FenceError, FenceOrder, Fencer};
use gwmon_proto::domain::{Epoch, GroupKey};
use tokio::time::Instant;

fn order(group: &str, nonces: &[&str]) -> FenceOrder {
    FenceOrder {
        key: GroupKey::new("rbd".parse().expect("pool"), group.parse().expect("group")),
        gateway: "client.nvmeof.rbd.host1.abc".parse().expect("gateway"),
        epoch: Epoch(7),
        nonces: nonces.iter().map(|n| n.parse().expect("nonce")).collect(),
    }
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    path
}

fn sh(script: &Path, extra: &[&str], timeout: Duration) -> ExecFencer {
    let mut args = vec![script.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    ExecFencer::new("/bin/sh", args, timeout)
}

/// A script that appends each argument, bracketed, one per line, to `argv.log`.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("argv.log");
    let path = script(
        dir,
        "record.sh",
        &format!(
            "for a in \"$@\"; do printf '[%s]\\n' \"$a\" >> '{}'; done\necho fenced",
            log.display()
        ),
    );
    (path, log)
}

fn recorded(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .expect("argv log")
        .lines()
        .map(|l| {
            l.strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .expect("bracketed")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_command_gets_its_args_then_the_order_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec, log) = recorder(dir.path());
    // A nonce full of shell syntax arrives verbatim: nothing goes through a shell.
    let nonces = [
        "10.0.0.5:0/3141",
        "10.0.0.5:0/2718",
        "`id`;$(touch${IFS}x)|&>y",
    ];
    let o = order("grp1", &nonces);
    let fencer = sh(&rec, &["--cluster", "ceph"], Duration::from_secs(10));
    assert_eq!(fencer.name(), "exec");
    fencer.fence(&o).await.expect("fenced");
    let want = [
        "--cluster",
        "ceph",
        "--gateway",
        "client.nvmeof.rbd.host1.abc",
        "--pool",
        "rbd",
        "--group",
        "grp1",
        "--epoch",
        "7",
        "--nonce",
        "10.0.0.5:0/3141",
        "--nonce",
        "10.0.0.5:0/2718",
        "--nonce",
        "`id`;$(touch${IFS}x)|&>y",
    ];
    assert_eq!(recorded(&log), want);
    assert!(!dir.path().join("x").exists() && !dir.path().join("y").exists());
    // What the docs promise: the configured args, then exactly this.
    let mut argv = vec![rec.display().to_string()];
    argv.extend(want.iter().map(|s| s.to_string()));
    assert_eq!(fencer.argv(&o), argv);
}

#[tokio::test]
async fn the_default_group_is_an_empty_argument_and_no_nonces_mean_no_nonce_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec, log) = recorder(dir.path());
    sh(&rec, &[], Duration::from_secs(10))
        .fence(&order("", &[]))
        .await
        .expect("fenced");
    assert_eq!(
        recorded(&log),
        [
            "--gateway",
            "client.nvmeof.rbd.host1.abc",
            "--pool",
            "rbd",
            "--group",
            "",
            "--epoch",
            "7"
        ]
    );
}

#[tokio::test]
async fn a_nonzero_exit_is_an_error_with_the_code_and_the_end_of_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fail = script(
        dir.path(),
        "fail.sh",
        "i=0\nwhile [ $i -lt 200 ]; do echo \"noise line $i\" >&2; i=$((i+1)); done\n\
         echo 'Error EINVAL: no such pool' >&2\nexit 3",
    );
    let err = sh(&fail, &[], Duration::from_secs(10))
        .fence(&order("grp1", &["n1"]))
        .await
        .expect_err("exit 3");
    let FenceError::Exit { code, stderr } = &err else {
        panic!("expected an exit error, got {err}");
    };
    assert_eq!(*code, Some(3));
    assert!(stderr.ends_with("Error EINVAL: no such pool"), "{stderr}");
    assert!(stderr.len() <= 520, "only the tail: {} bytes", stderr.len());
    let line = err.to_string();
    assert!(
        line.starts_with("fence command exited with code 3: "),
        "{line}"
    );
    assert!(!line.contains('\n'), "one line: {line}");
}

#[tokio::test]
async fn a_hung_command_times_out_fast_and_is_killed_with_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child_pid = dir.path().join("child.pid");
    let hang = script(
        dir.path(),
        "hang.sh",
        &format!("sleep 30 &\necho $! > '{}'\nwait", child_pid.display()),
    );
    let started = Instant::now();
    let err = sh(&hang, &[], Duration::from_millis(300))
        .fence(&order("grp1", &["n1"]))
        .await
        .expect_err("timeout");
    assert!(
        matches!(err, FenceError::Timeout { .. }),
        "expected a timeout, got {err}"
    );
    assert_eq!(err.to_string(), "fence command timed out after 300 ms");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // The script's own child went with it (the whole process group is killed).
    let pid = std::fs::read_to_string(&child_pid).expect("child pid");
    let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let alive = match std::fs::read_to_string(&stat) {
            // Field 3 is the state; a killed, unreaped orphan is a zombie (Z).
            Ok(s) => s
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
            Err(_) => false,
        };
        if !alive {
            break;
        }
        assert!(
            Instant::now() < end,
            "the script's child {} still runs",
            pid.trim()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_background_child_holding_the_output_open_does_not_turn_success_into_a_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bg = script(dir.path(), "bg.sh", "sleep 5 &\necho done\nexit 0");
    let started = Instant::now();
    sh(&bg, &[], Duration::from_secs(4))
        .fence(&order("grp1", &[]))
        .await
        .expect("exit 0 is success");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_is_a_spawn_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-fencer");
    let err = ExecFencer::new(&missing, vec![], Duration::from_secs(1))
        .fence(&order("grp1", &[]))
        .await
        .expect_err("missing");
    assert!(matches!(err, FenceError::Spawn { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot run fence command {}: ", missing.display())),
        "{err}"
    );
}
