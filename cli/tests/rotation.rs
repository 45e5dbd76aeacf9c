//! Certificate rotation without a restart: a real `gwmon` process serving mutual TLS takes
//! new files on SIGHUP (here a whole new CA, the hardest case), keeps the files it has when
//! the new ones are unusable, and serves throughout.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NVME_GW: &str = env!("CARGO_BIN_EXE_nvme-gw");
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills the monitor when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A CA in `dir` with a certificate for monitor 1 and for the admin alice.
fn pki(dir: &Path) {
    for args in [
        &["init"][..],
        &["issue", "monitor", "1"],
        &["issue", "admin", "alice"],
    ] {
        let out = Command::new(NVME_GW)
            .arg("certs")
            .args(args)
            .arg("--dir")
            .arg(dir)
            .output()
            .expect("run nvme-gw certs");
        assert!(out.status.success(), "certs {args:?}: {out:?}");
    }
}

/// `nvme-gw cluster status` as alice of the CA in `dir`.
fn status_as(monitor: &str, dir: &Path) -> Output {
    Command::new(NVME_GW)
        .args(["--monitors", monitor, "--timeout-ms", "2000"])
        .arg("--tls-ca")
        .arg(dir.join("ca.pem"))
        .arg("--tls-cert")
        .arg(dir.join("admin-alice.pem"))
        .arg("--tls-key")
        .arg(dir.join("admin-alice.key"))
        .args(["cluster", "status"])
        .output()
        .expect("run nvme-gw")
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hangup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -HUP {}", child.id());
}

/// Write `bytes` to `path` by a rename, as a deployment tool would.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn sighup_takes_new_certificates_and_keeps_the_old_ones_when_the_new_are_unusable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new, live) = (
        dir.path().join("old"),
        dir.path().join("new"),
        dir.path().join("live"),
    );
    pki(&old);
    pki(&new);
    std::fs::create_dir_all(&live).expect("live dir");
    for f in ["ca.pem", "monitor-1.pem", "monitor-1.key"] {
        replace(&live.join(f), &read(old.join(f)));
    }

    let bins = gwmon_tests::bins::build(NVME_GW, &["gwmon-monitor", "gwmon-client"], &["gwmon"]);
    let port = free_port();
    let monitor = format!("127.0.0.1:{port}");
    let log = dir.path().join("gwmon.log");
    let proc = Proc(
        Command::new(&bins["gwmon"])
            .args([
                "--node-id",
                "1",
                "--listen",
                &monitor,
                "--http-listen",
                "off",
                "--peer-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--tls-ca")
            .arg(live.join("ca.pem"))
            .arg("--tls-cert")
            .arg(live.join("monitor-1.pem"))
            .arg("--tls-key")
            .arg(live.join("monitor-1.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start gwmon"),
    );
    until("the monitor serving the old CA's admin", || {
        status_as(&monitor, &old).status.success()
    });
    let refused = status_as(&monitor, &new);
    assert!(
        !refused.status.success(),
        "an admin of a CA the monitor does not know was served: {refused:?}"
    );

    // Rotate to the new CA. The CA file trusts both while clients move over; the monitor's
    // own certificate comes from the new CA. Until the signal nothing changes.
    let mut bundle = read(new.join("ca.pem"));
    bundle.extend(read(old.join("ca.pem")));
    replace(&live.join("ca.pem"), &bundle);
    replace(
        &live.join("monitor-1.pem"),
        &read(new.join("monitor-1.pem")),
    );
    replace(
        &live.join("monitor-1.key"),
        &read(new.join("monitor-1.key")),
    );
    let before = status_as(&monitor, &new);
    assert!(
        !before.status.success(),
        "new files were used before SIGHUP: {before:?}"
    );

    hangup(&proc.0);
    until("the new CA's admin served after SIGHUP", || {
        status_as(&monitor, &new).status.success()
    });

    // A key that is not the certificate's: the reload is refused, logged, and the monitor
    // keeps serving with the files it has.
    replace(
        &live.join("monitor-1.key"),
        &read(old.join("monitor-1.key")),
    );
    hangup(&proc.0);
    until("the refused reload logged", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("TLS files not reloaded"))
    });
    let after = status_as(&monitor, &new);
    assert!(
        after.status.success(),
        "the monitor stopped serving after a bad reload: {after:?}"
    );
}
