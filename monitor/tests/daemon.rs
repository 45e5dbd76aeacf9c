//! The `gwmon` binary itself: bad configuration gives one clear line and a non-zero exit,
//! never a panic.

use std::process::{Command, Output};

fn gwmon(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gwmon"))
        .args(args)
        .current_dir(dir)
        .env_remove("GWMON_CONFIG")
        .output()
        .expect("the gwmon binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_configuration_is_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&[&str], &str)] = &[
        (&["--initial-members", "1=nohost"], "has no :PORT"),
        (&["--initial-members", "1=a:1,1=b:2"], "appears twice"),
        (&["--node-id", "0"], "monitor ids start at 1"),
        (
            &["--node-id", "5", "--initial-members", "1=a:1,2=b:1"],
            "does not include",
        ),
        (
            &["--config", "/nonexistent/gwmon.toml"],
            "cannot read config file",
        ),
        (&["--heartbeat-ms", "1000"], "election_timeout_min_ms"),
        (
            &["--node-id", "2", "--initial-members", "1=a:1,2=b:1,3=c:1"],
            "fencer: not set, and this monitor is one of several",
        ),
        (&["--join"], "choose a fencer"),
    ];
    for (args, want) in cases {
        let out = gwmon(args, dir.path());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(want),
            "{args:?}: the first line says why: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn an_unusable_data_dir_is_a_clear_error_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file where the data directory should be.
    let blocker = dir.path().join("data");
    std::fs::write(&blocker, b"not a directory").expect("write");
    let out = gwmon(
        &[
            "--data-dir",
            "data",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
        ],
        dir.path(),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("data"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_store_of_the_other_backend_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("data").join("store");
    drop(gwmon_monitor::store::open(
        Some(gwmon_monitor::store::StoreKind::Sled),
        &store,
        1 << 20,
    ));
    let out = gwmon(
        &[
            "--data-dir",
            "data",
            "--store",
            "redb",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
        ],
        dir.path(),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("written by sled") && err.contains("asks for redb"),
        "{err}"
    );
    let bad = gwmon(&["--store", "rocksdb"], dir.path());
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("rocksdb"), "{}", stderr(&bad));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = gwmon(&["--listen", &addr], dir.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}
