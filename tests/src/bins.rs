//! Other packages' binaries for tests that run them as processes.
//!
//! `CARGO_BIN_EXE_*` exists only for a test's own package, and a dev-dependency builds a
//! package's library, not its binaries. So a test that needs `gwmon` (or `gwmon-gateway`)
//! asks the cargo that runs it (`CARGO`) to build them, with the profile the test itself was
//! built with and `--locked`, and takes their paths from cargo's JSON messages rather than
//! guessing the target directory. Cargo releases its build lock before it runs tests, so this
//! does not deadlock; after `cargo test --workspace` it only finds them fresh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root: the parent of this crate's directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `--profile NAME` of the build that made `exe` (cargo's `debug` directory is the `dev`
/// profile).
fn profile_of(exe: &str) -> String {
    let dir = Path::new(exe)
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    if dir == "debug" { "dev" } else { dir }.to_owned()
}

/// Builds the binaries of `packages` in the profile of `own_exe` (a `CARGO_BIN_EXE_*` of
/// the calling test), returning their paths by binary name; panics with cargo's message if
/// the build fails or `want` names a binary it did not produce.
pub fn build(own_exe: &str, packages: &[&str], want: &[&str]) -> BTreeMap<String, PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace())
        .args(["build", "--locked", "--bins"])
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .args(["--message-format", "json-render-diagnostics"])
        .args(["--profile", &profile_of(own_exe)])
        .stderr(Stdio::inherit());
    let out = cmd.output().expect("run cargo build");
    assert!(out.status.success(), "cargo build of {packages:?} failed");
    let mut bins = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            bins.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    for name in want {
        assert!(bins.contains_key(*name), "cargo built no {name}: {bins:?}");
    }
    bins
}
