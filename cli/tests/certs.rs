//! `nvme-gw certs init|issue` over the real binary, offline: the files, their modes, and
//! what the certificates say, read back with x509-parser; then every refusal.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

const BIN: &str = env!("CARGO_BIN_EXE_nvme-gw");

/// One run of the binary: exit code, stdout, stderr.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "failed: {self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Assert exit code 1, nothing on stdout and exactly `line` on stderr.
    fn refused(&self, line: &str) {
        assert_eq!(self.code, 1, "exit code: {self:?}");
        assert!(self.stdout.is_empty(), "stdout: {self:?}");
        assert_eq!(self.stderr, format!("nvme-gw: {line}\n"), "{self:?}");
    }
}

/// Run `nvme-gw certs ARGS --format json` in `cwd`. No monitor runs anywhere: the
/// commands must not need one (`--monitors` points at a port nothing listens on).
fn certs(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .current_dir(cwd)
        .env_remove("GWMON_FORMAT")
        .env("GWMON_MONITORS", "127.0.0.1:1")
        .arg("certs")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run nvme-gw");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn pem(path: &Path) -> Pem {
    let bytes = std::fs::read(path).expect("read certificate");
    let (rest, pem) = x509_parser::pem::parse_x509_pem(&bytes).expect("PEM");
    assert!(rest.iter().all(u8::is_ascii_whitespace), "one PEM block");
    pem
}

fn cert(pem: &Pem) -> X509Certificate<'_> {
    pem.parse_x509().expect("X.509")
}

fn names<'a>(c: &'a X509Certificate<'_>) -> Vec<GeneralName<'a>> {
    c.subject_alternative_name()
        .expect("one SAN extension")
        .expect("has SANs")
        .value
        .general_names
        .clone()
}

fn common_name(c: &X509Certificate<'_>) -> String {
    let cn = c.subject().iter_common_name().next().expect("a CN");
    cn.as_str().expect("CN text").to_owned()
}

/// (serverAuth, clientAuth).
fn auth(c: &X509Certificate<'_>) -> (bool, bool) {
    let eku = c
        .extended_key_usage()
        .expect("one EKU")
        .expect("has EKU")
        .value;
    (eku.server_auth, eku.client_auth)
}

/// Everything a leaf must be: signed by the CA, under its name, signing-only, not a CA,
/// with a P-256 key file of mode 0600 that matches it.
fn check_leaf(ca: &X509Certificate<'_>, leaf: &X509Certificate<'_>, key_path: &Path) {
    assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
    leaf.verify_signature(Some(ca.public_key()))
        .expect("signed by the CA");
    assert!(!leaf.is_ca());
    let ku = leaf.key_usage().expect("one KU").expect("has KU").value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    assert_eq!(mode(key_path), 0o600, "{}", key_path.display());
    let key = std::fs::read_to_string(key_path).expect("read key");
    let key = rcgen::KeyPair::from_pem(&key).expect("PEM key");
    assert!(std::ptr::eq(
        key.algorithm(),
        &rcgen::PKCS_ECDSA_P256_SHA256
    ));
    assert_eq!(
        &*leaf.public_key().subject_public_key.data,
        key.public_key_raw()
    );
    let days =
        (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp()) / 86_400;
    assert_eq!(
        days, 365,
        "default validity (plus a few minutes' backdating)"
    );
}

#[test]
fn init_then_issue_gateway_and_monitor_certificates() {
    let tmp = TempDir::new().expect("tmp");
    let dir = tmp.path().join("certs");
    let d = dir.to_str().expect("utf-8 path");

    let init = certs(tmp.path(), &["init", "--dir", d]).ok();
    assert_eq!(init["certificate"], format!("{d}/ca.pem"));
    assert_eq!(init["identity"], serde_json::Value::Null);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.pem")), 0o644);
    let ca_pem = pem(&dir.join("ca.pem"));
    let ca = cert(&ca_pem);
    assert!(ca.is_ca());
    assert_eq!(common_name(&ca), "gwmon CA");
    assert_eq!(ca.issuer().as_raw(), ca.subject().as_raw(), "self-signed");
    ca.verify_signature(None).expect("self-signed");
    let ca_days =
        (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86_400;
    assert_eq!(ca_days, 3650);

    let gw = certs(
        tmp.path(),
        &["issue", "gateway", "rbd/grp1/gw1", "--dir", d],
    )
    .ok();
    assert_eq!(gw["identity"], "gwmon://gateway/rbd/grp1/gw1");
    assert_eq!(gw["certificate"], format!("{d}/gateway-rbd_grp1_gw1.pem"));
    assert_eq!(gw["names"], serde_json::json!([]));
    let gw_pem = pem(&dir.join("gateway-rbd_grp1_gw1.pem"));
    let gw = cert(&gw_pem);
    check_leaf(&ca, &gw, &dir.join("gateway-rbd_grp1_gw1.key"));
    assert_eq!(mode(&dir.join("gateway-rbd_grp1_gw1.pem")), 0o644);
    assert_eq!(
        names(&gw),
        [GeneralName::URI("gwmon://gateway/rbd/grp1/gw1")],
        "the URI alone"
    );
    assert_eq!(common_name(&gw), "gateway rbd/grp1/gw1");
    assert_eq!(auth(&gw), (false, true), "clientAuth only");

    let args = [
        "issue",
        "monitor",
        "1",
        "--dir",
        d,
        "--san",
        "10.0.0.5",
        "--san",
        "mon1.example",
    ];
    let mon = certs(tmp.path(), &args).ok();
    assert_eq!(
        mon["names"],
        serde_json::json!(["10.0.0.5", "mon1.example"])
    );
    let mon_pem = pem(&dir.join("monitor-1.pem"));
    let mon = cert(&mon_pem);
    check_leaf(&ca, &mon, &dir.join("monitor-1.key"));
    assert_eq!(
        names(&mon),
        [
            GeneralName::URI("gwmon://monitor/1"),
            GeneralName::IPAddress(&[10, 0, 0, 5]),
            GeneralName::DNSName("mon1.example"),
        ]
    );
    assert_eq!(common_name(&mon), "monitor 1");
    assert_eq!(auth(&mon), (true, true), "serverAuth and clientAuth");

    // Without --san a monitor is named for a single-host trial.
    certs(tmp.path(), &["issue", "monitor", "2", "--dir", d]).ok();
    let mon2_pem = pem(&dir.join("monitor-2.pem"));
    assert_eq!(
        names(&cert(&mon2_pem)),
        [
            GeneralName::URI("gwmon://monitor/2"),
            GeneralName::DNSName("localhost"),
            GeneralName::IPAddress(&[127, 0, 0, 1]),
        ]
    );

    // Ceph's default group is the empty one.
    certs(tmp.path(), &["issue", "gateway", "rbd//gw1", "--dir", d]).ok();
    let default_pem = pem(&dir.join("gateway-rbd__gw1.pem"));
    assert_eq!(
        names(&cert(&default_pem)),
        [GeneralName::URI("gwmon://gateway/rbd//gw1")]
    );

    for role in ["admin", "reader", "host", "backend"] {
        let out = certs(tmp.path(), &["issue", role, "ops@site-1", "--dir", d]).ok();
        assert_eq!(out["identity"], format!("gwmon://{role}/ops@site-1"));
        let p = pem(&dir.join(format!("{role}-ops@site-1.pem")));
        let c = cert(&p);
        check_leaf(&ca, &c, &dir.join(format!("{role}-ops@site-1.key")));
        assert_eq!(auth(&c), (false, true), "{role}");
    }
}

/// The files of `dir`, sorted, to show a refusal wrote nothing.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn refusals_name_the_file_or_argument_and_write_nothing() {
    let tmp = TempDir::new().expect("tmp");
    let cwd = tmp.path();

    // Before init, with the default --dir.
    certs(cwd, &["issue", "gateway", "rbd/grp1/gw1"]).refused(
        "cannot read gwmon-certs/ca.pem: no such file; run `nvme-gw certs init --dir \
         gwmon-certs` first",
    );
    assert!(listing(cwd).is_empty(), "nothing created");

    certs(cwd, &["init"]).ok();
    let dir = cwd.join("gwmon-certs");
    let ca_before = std::fs::read(dir.join("ca.pem")).expect("ca");
    certs(cwd, &["init"]).refused(
        "cannot write gwmon-certs/ca.key: file exists; remove it first or use another --dir",
    );
    assert_eq!(std::fs::read(dir.join("ca.pem")).expect("ca"), ca_before);
    let files = listing(&dir);

    let bad_role = certs(cwd, &["issue", "operator", "alice"]);
    assert_eq!(bad_role.code, 2, "a usage error: {bad_role:?}");
    assert!(
        bad_role
            .stderr
            .starts_with("error: invalid value 'operator' for '<ROLE>'"),
        "{bad_role:?}"
    );
    assert!(
        bad_role
            .stderr
            .contains("[possible values: monitor, gateway, admin, reader, host, backend]"),
        "{bad_role:?}"
    );

    certs(cwd, &["issue", "gateway", "rbd/gw1"]).refused(
        "invalid gateway name \"rbd/gw1\": expected POOL/GROUP/ID, e.g. rbd/grp1/gw1 \
         (rbd//gw1 in the default group)",
    );
    certs(cwd, &["issue", "gateway", "rbd/grp1/gw 1"]).refused(
        "invalid gateway name \"rbd/grp1/gw 1\": its id has the character ' ' at byte 2; \
         allowed: ASCII letters, digits and . _ - : @, not starting with '-'",
    );
    certs(cwd, &["issue", "monitor", "0"]).refused(
        "invalid monitor name \"0\": a monitor is named by its id (--node-id), which must \
         not be zero",
    );
    certs(cwd, &["issue", "admin", "../x"]).refused(
        "invalid admin name \"../x\": has the character '/' at byte 2; allowed: ASCII \
         letters, digits and . _ - : @, not starting with '-'",
    );
    certs(
        cwd,
        &["issue", "gateway", "rbd/grp1/gw1", "--san", "gw1.example"],
    )
    .refused(
        "--san is only for monitor certificates (monitors are the only servers); gateway \
         certificates name their holder by the gwmon:// URI alone",
    );
    certs(cwd, &["issue", "monitor", "1", "--san", "mon 1"]).refused(
        "invalid --san \"mon 1\": neither an IP address nor a DNS name (labels of 1 to 63 \
         ASCII letters, digits and '-', separated by dots)",
    );
    let zero_days = certs(cwd, &["issue", "admin", "alice", "--days", "0"]);
    assert_eq!(zero_days.code, 2, "{zero_days:?}");
    assert_eq!(listing(&dir), files, "no refusal wrote a file");

    // Issuing the same holder twice.
    certs(cwd, &["issue", "admin", "alice"]).ok();
    let first = std::fs::read(dir.join("admin-alice.pem")).expect("cert");
    certs(cwd, &["issue", "admin", "alice"]).refused(
        "cannot write gwmon-certs/admin-alice.key: file exists; remove it first or use \
         another --dir",
    );
    assert_eq!(
        std::fs::read(dir.join("admin-alice.pem")).expect("cert"),
        first
    );
}

#[test]
fn a_ca_is_checked_before_it_signs() {
    let tmp = TempDir::new().expect("tmp");
    let cwd = tmp.path();
    certs(cwd, &["init", "--dir", "a"]).ok();
    certs(cwd, &["init", "--dir", "b", "--days", "10"]).ok();

    // A key that is not the certificate's would sign certificates that never verify.
    std::fs::create_dir(cwd.join("mixed")).expect("mkdir");
    std::fs::copy(cwd.join("a/ca.pem"), cwd.join("mixed/ca.pem")).expect("copy");
    std::fs::copy(cwd.join("b/ca.key"), cwd.join("mixed/ca.key")).expect("copy");
    certs(cwd, &["issue", "host", "node1", "--dir", "mixed"]).refused(
        "mixed/ca.key is not the private key of mixed/ca.pem; both must come from the same \
         `nvme-gw certs init`",
    );

    std::fs::write(cwd.join("mixed/ca.pem"), "not a certificate").expect("write");
    certs(cwd, &["issue", "host", "node1", "--dir", "mixed"])
        .refused("mixed/ca.pem is not a PEM certificate");

    // A certificate may not outlive its CA.
    let out = certs(cwd, &["issue", "host", "node1", "--dir", "b"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with(
            "nvme-gw: cannot issue a certificate valid for 365 days: the CA in b/ca.pem \
             expires at "
        ) && out
            .stderr
            .ends_with("; pass a smaller --days or create a new CA\n"),
        "{out:?}"
    );
    certs(
        cwd,
        &["issue", "host", "node1", "--dir", "b", "--days", "9"],
    )
    .ok();
}
