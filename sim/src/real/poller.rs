//! The gateways' target files, as a host would see the paths: read every few milliseconds,
//! each change turned into history events (see the module documentation of
//! [`crate::real`] for how a file maps to the checker's events).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use gwmon_proto::target_file;
use serde_json::{json, Value};

use super::history::Recorder;
use crate::world::Event;

/// The one subsystem every target exposes.
pub const NQN: &str = "nqn.2016-06.io.spdk:cnode1";

/// How long the poller waits for one target's lock before it skips a snapshot. A gateway or
/// a fence holds it only while rewriting a small file.
const LOCK_WAIT: Duration = Duration::from_millis(50);

/// Writes are recorded every this many snapshots (and at every snapshot that changed
/// something), so the history stays a few thousand records long.
const WRITE_EVERY: u64 = 10;

/// A new target file: one subsystem with a listener on `addr` and a namespace in each of
/// `ana_groups`, so the gateway can serve any of them. No ANA states yet: the gateway writes
/// them.
pub fn write_target(path: &Path, addr: Ipv4Addr, ana_groups: &[u32]) -> std::io::Result<()> {
    let namespaces: Vec<Value> = ana_groups
        .iter()
        .map(|g| json!({"nsid": g, "ana_group": g}))
        .collect();
    let doc = json!({
        "subsystems": [{
            "nqn": NQN,
            "listeners": [{"address": addr.to_string(), "port": 4420}],
            "namespaces": namespaces,
        }]
    });
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let _lock = target_file::lock(path, Duration::from_secs(2)).map_err(std::io::Error::other)?;
    target_file::replace(path, &bytes)
}

/// What one target file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetView {
    /// The ANA groups of [`NQN`] it says optimized.
    pub optimized: BTreeSet<u32>,
    /// The epoch the file fencer last fenced it at.
    pub fenced_epoch: Option<u64>,
}

/// Parse a target document. A missing file is a target with nothing yet.
fn read_view(path: &Path) -> Result<TargetView, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TargetView::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let mut view = TargetView {
        fenced_epoch: doc
            .get(target_file::FENCED_EPOCH_KEY)
            .and_then(Value::as_u64),
        ..TargetView::default()
    };
    if let Some(groups) = doc
        .get("ana")
        .and_then(|a| a.get(NQN))
        .and_then(Value::as_object)
    {
        for (grp, state) in groups {
            let id: u32 = grp
                .parse()
                .map_err(|_| format!("{}: ANA group {grp:?}", path.display()))?;
            match state.as_str() {
                Some("optimized") => {
                    view.optimized.insert(id);
                }
                Some("inaccessible") => {}
                _ => return Err(format!("{}: ANA state {state}", path.display())),
            }
        }
    }
    Ok(view)
}

/// Every file read under its lock, all locks held at once: a snapshot no write falls into
/// the middle of. `Err` if a lock stayed busy or a file could not be read.
fn snapshot(files: &BTreeMap<String, PathBuf>) -> Result<BTreeMap<String, TargetView>, String> {
    let mut locks = Vec::with_capacity(files.len());
    for path in files.values() {
        locks.push(target_file::lock(path, LOCK_WAIT).map_err(|e| e.to_string())?);
    }
    let views = files
        .iter()
        .map(|(g, p)| Ok((g.clone(), read_view(p)?)))
        .collect();
    drop(locks);
    views
}

/// The storage identity a target's I/O carries: its gateway and the fence it was last fenced
/// at. A fence ends one identity; whatever the file makes optimized after it carries the
/// next.
pub fn identity(gateway: &str, fenced_epoch: Option<u64>) -> String {
    format!("{gateway}@fence{}", fenced_epoch.unwrap_or(0))
}

#[derive(Default)]
struct State {
    views: BTreeMap<String, TargetView>,
    snapshots: u64,
    skipped: u64,
}

/// Reads the target files until stopped or dropped.
pub struct Poller {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    /// Poll `files` (gateway to target file) every `interval`, recording into `rec`.
    pub fn start(files: BTreeMap<String, PathBuf>, rec: Recorder, interval: Duration) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State {
            views: files
                .keys()
                .map(|g| (g.clone(), TargetView::default()))
                .collect(),
            ..State::default()
        }));
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::spawn(move || poll(&files, &rec, interval, &stop, &state))
        };
        Poller {
            stop,
            state,
            thread: Some(thread),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every target as of the last snapshot.
    pub fn views(&self) -> BTreeMap<String, TargetView> {
        self.lock().views.clone()
    }

    /// The gateways whose file says `ana` optimized, as of the last snapshot.
    pub fn servers(&self, ana: u32) -> Vec<String> {
        self.lock()
            .views
            .iter()
            .filter(|(_, v)| v.optimized.contains(&ana))
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Snapshots taken, and skipped because a lock stayed busy or a file was unreadable.
    pub fn stats(&self) -> (u64, u64) {
        let s = self.lock();
        (s.snapshots, s.skipped)
    }

    /// Stop polling and wait for the thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop();
    }
}

fn poll(
    files: &BTreeMap<String, PathBuf>,
    rec: &Recorder,
    interval: Duration,
    stop: &AtomicBool,
    state: &Mutex<State>,
) {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut prev: BTreeMap<String, TargetView> = lock().views.clone();
    // (gateway, ANA group) to the identity the target carried when it became optimized.
    let mut serving_as: BTreeMap<(String, u32), String> = BTreeMap::new();
    let mut last_error = String::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let views = match snapshot(files) {
            Ok(v) => v,
            Err(e) => {
                lock().skipped += 1;
                if e != last_error && !e.contains("held by another process") {
                    rec.record(Event::Fault(format!("poller: {e}")));
                }
                last_error = e;
                std::thread::sleep(interval);
                continue;
            }
        };
        n += 1;
        let mut changed = false;
        // Fences first, then demotions, then promotions: of changes that fell between two
        // snapshots only the end state is known, and this order never invents an overlap.
        for (g, v) in &views {
            let old = prev.get(g).and_then(|p| p.fenced_epoch);
            if let Some(epoch) = v.fenced_epoch.filter(|e| Some(*e) > old) {
                changed = true;
                rec.record(Event::Fenced {
                    gateway: g.clone(),
                    nonces: vec![identity(g, old)],
                    epoch,
                });
            }
        }
        for (g, v) in &views {
            let was = prev.get(g).map(|p| p.optimized.clone()).unwrap_or_default();
            for ana in was.difference(&v.optimized) {
                changed = true;
                let nonce = serving_as
                    .remove(&(g.clone(), *ana))
                    .unwrap_or_else(|| identity(g, v.fenced_epoch));
                rec.record(Event::Target {
                    gateway: g.clone(),
                    ana: *ana,
                    optimized: false,
                    nonce,
                });
            }
        }
        for (g, v) in &views {
            let was = prev.get(g).map(|p| p.optimized.clone()).unwrap_or_default();
            for ana in v.optimized.difference(&was) {
                changed = true;
                let nonce = identity(g, v.fenced_epoch);
                serving_as.insert((g.clone(), *ana), nonce.clone());
                rec.record(Event::Target {
                    gateway: g.clone(),
                    ana: *ana,
                    optimized: true,
                    nonce,
                });
            }
        }
        // A file target serves whatever it says optimized; nothing below it refuses I/O.
        if changed || n.is_multiple_of(WRITE_EVERY) {
            for (g, v) in &views {
                for ana in &v.optimized {
                    let nonce = serving_as
                        .get(&(g.clone(), *ana))
                        .cloned()
                        .unwrap_or_else(|| identity(g, v.fenced_epoch));
                    rec.record(Event::Write {
                        gateway: g.clone(),
                        ana: *ana,
                        nonce,
                        accepted: true,
                    });
                }
            }
        }
        {
            let mut s = lock();
            s.views = views.clone();
            s.snapshots += 1;
        }
        prev = views;
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_reads_optimized_groups_and_the_fence() {
        let dir = std::env::temp_dir().join(format!("gwmon-real-view-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("gw1.json");
        assert_eq!(read_view(&path), Ok(TargetView::default()));
        write_target(&path, Ipv4Addr::new(10, 77, 0, 21), &[1, 2]).expect("write");
        assert_eq!(read_view(&path), Ok(TargetView::default()));
        let doc = json!({"ana": {NQN: {"1": "optimized", "2": "inaccessible"}}, "fenced_epoch": 4});
        std::fs::write(&path, doc.to_string()).expect("write");
        let want = TargetView {
            optimized: [1].into(),
            fenced_epoch: Some(4),
        };
        assert_eq!(read_view(&path), Ok(want.clone()));
        let files: BTreeMap<String, PathBuf> = [("gw1".to_owned(), path.clone())].into();
        assert_eq!(snapshot(&files), Ok([("gw1".to_owned(), want)].into()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
