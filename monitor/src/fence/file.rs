//! The fencer for the file adapter's targets (`gwmon-gateway --adapter file`): the target
//! file *is* the data plane there, so fencing a gateway means rewriting its file.
//!
//! # What a fence does
//!
//! For the order's gateway, with `fencer_file_targets = "/var/lib/gwmon/{gateway}.json"`:
//!
//! 1. take the exclusive lock the file adapter takes around its own writes
//!    (`{gateway}.json.lock`, see [`gwmon_proto::target_file`]), waiting at most the fencer's
//!    timeout: a lock held that long is a failed, retried attempt, never a skipped fence;
//! 2. read the JSON document, set every ANA group of every subsystem under `"ana"` to
//!    `"inaccessible"`, and record the fence as `"fenced_epoch": N` (the highest epoch
//!    fenced so far: an older order run late does not lower it);
//! 3. replace the file atomically (temporary file, flush, rename).
//!
//! The adapter, under the same lock, then refuses to make any group optimized for states
//! of epoch `N` or older: a gateway process that was paused, and resumes with the map it had,
//! cannot undo the fence. A restarted gateway receives newer epochs and serves again.
//!
//! A missing file is fenced too: it is written as `{"fenced_epoch": N}`, so a stale process
//! that would create it finds the fence. A missing *directory* is an error (retried): the
//! template is wrong or the file lives where this monitor cannot reach it, and the fence is
//! not done until it is. The document's other keys are kept as they are; only `"ana"` and
//! `"fenced_epoch"` are touched, so a document the adapter would refuse for another reason
//! is fenced all the same.
//!
//! The files must be reachable from whichever monitor leads: the same host, or a shared
//! file system. This fencer is for demos and tests of the file adapter, where that holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gwmon_proto::target_file::{self, FENCED_EPOCH_KEY};
use serde_json::{Map, Value};
use tracing::info;

use super::config::FenceConfigError;
use super::{BoxFuture, FenceError, FenceOrder, Fencer};

/// The placeholders a target template may use; `{gateway}` is required.
const GATEWAY: &str = "{gateway}";
const POOL: &str = "{pool}";
const GROUP: &str = "{group}";

/// Fences a gateway by rewriting its target file; see the module documentation.
#[derive(Debug, Clone)]
pub struct FileFencer {
    targets: String,
    timeout: Duration,
}

impl FileFencer {
    /// `targets` names each gateway's file with `{gateway}` (and optionally `{pool}` and
    /// `{group}`); `timeout` bounds the wait for the file's lock.
    pub fn new(targets: &str, timeout: Duration) -> Result<Self, FenceConfigError> {
        if !targets.contains(GATEWAY) {
            return Err(FenceConfigError::new(
                "fencer_file_targets",
                format!("{targets:?} must contain {GATEWAY}: every gateway has a file of its own"),
            ));
        }
        Ok(FileFencer {
            targets: targets.to_owned(),
            timeout,
        })
    }

    /// The file of the order's gateway. Ids cannot hold `/` or be `..` (the id types refuse
    /// it), so a substitution never leaves the directory the template names.
    pub fn target(&self, order: &FenceOrder) -> PathBuf {
        PathBuf::from(
            self.targets
                .replace(GATEWAY, order.gateway.as_str())
                .replace(POOL, order.key.pool.as_str())
                .replace(GROUP, order.key.group.as_str()),
        )
    }

    async fn run(&self, order: &FenceOrder) -> Result<(), FenceError> {
        let path = self.target(order);
        let (epoch, timeout) = (order.epoch.0, self.timeout);
        let blocking_path = path.clone();
        let fenced =
            tokio::task::spawn_blocking(move || fence_file(&blocking_path, epoch, timeout))
                .await
                .map_err(|e| file_error(&path, format!("the fence task failed: {e}")))??;
        info!(key = %order.key, gateway = %order.gateway, epoch = %order.epoch,
            path = %path.display(), groups = fenced, "target file fenced");
        Ok(())
    }
}

impl Fencer for FileFencer {
    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
        Box::pin(self.run(order))
    }

    fn name(&self) -> &'static str {
        "file"
    }
}

fn file_error(path: &Path, message: impl Into<String>) -> FenceError {
    FenceError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Fence `path` at `epoch` under its lock; the number of ANA groups it now shows
/// inaccessible.
fn fence_file(path: &Path, epoch: u64, wait: Duration) -> Result<usize, FenceError> {
    let _lock = target_file::lock(path, wait).map_err(|e| file_error(path, e.to_string()))?;
    let mut doc = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| file_error(path, format!("is not JSON: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Object(Map::new()),
        Err(e) => return Err(file_error(path, e.to_string())),
    };
    let groups = fence_document(&mut doc, epoch).map_err(|m| file_error(path, m))?;
    let mut bytes = serde_json::to_vec_pretty(&doc)
        .map_err(|e| file_error(path, format!("cannot encode the document: {e}")))?;
    bytes.push(b'\n');
    target_file::replace(path, &bytes).map_err(|e| file_error(path, e.to_string()))?;
    Ok(groups)
}

/// Every ANA group inaccessible and the fence recorded; the number of groups. Refuses a
/// document whose `ana` is not the adapter's shape, rather than guess what serves.
fn fence_document(doc: &mut Value, epoch: u64) -> Result<usize, String> {
    let obj = doc
        .as_object_mut()
        .ok_or("is not a JSON object, so it cannot be fenced")?;
    let mut groups = 0;
    if let Some(ana) = obj.get_mut("ana") {
        let subsystems = ana
            .as_object_mut()
            .ok_or("\"ana\" is not an object of subsystems")?;
        for (nqn, states) in subsystems.iter_mut() {
            let states = states
                .as_object_mut()
                .ok_or_else(|| format!("\"ana\".{nqn:?} is not an object of ANA groups"))?;
            for state in states.values_mut() {
                *state = Value::from("inaccessible");
                groups += 1;
            }
        }
    }
    let recorded = match obj.get(FENCED_EPOCH_KEY) {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("\"{FENCED_EPOCH_KEY}\" is not an epoch: {v}"))?,
    };
    obj.insert(
        FENCED_EPOCH_KEY.to_owned(),
        Value::from(recorded.max(epoch)),
    );
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_is_made_inaccessible_and_keeps_the_newest_fence() {
        let mut doc = json!({
            "subsystems": [{"nqn": "nqn.2016-06.io.spdk:a"}],
            "ana": {"nqn.2016-06.io.spdk:a": {"1": "optimized", "2": "inaccessible"}},
            "shutdown": null
        });
        assert_eq!(fence_document(&mut doc, 7), Ok(2));
        assert_eq!(
            doc,
            json!({
                "subsystems": [{"nqn": "nqn.2016-06.io.spdk:a"}],
                "ana": {"nqn.2016-06.io.spdk:a": {"1": "inaccessible", "2": "inaccessible"}},
                "shutdown": null,
                "fenced_epoch": 7
            })
        );
        // An older order run late does not lower the recorded fence.
        assert_eq!(fence_document(&mut doc, 5), Ok(2));
        assert_eq!(doc["fenced_epoch"], 7);

        let mut empty = json!({});
        assert_eq!(fence_document(&mut empty, 3), Ok(0));
        assert_eq!(empty, json!({"fenced_epoch": 3}));

        let err = |mut v: Value| fence_document(&mut v, 1).expect_err("refused");
        assert!(err(json!([])).contains("not a JSON object"));
        assert!(err(json!({"ana": []})).contains("not an object of subsystems"));
        assert!(err(json!({"ana": {"x": 1}})).contains("not an object of ANA groups"));
        assert!(err(json!({"fenced_epoch": "x"})).contains("is not an epoch"));
    }

    #[test]
    fn a_template_must_name_the_gateway() {
        let e = FileFencer::new("/var/lib/gwmon/target.json", Duration::from_secs(1))
            .expect_err("one file for all");
        assert!(e.to_string().starts_with("fencer_file_targets: "), "{e}");
        let f = FileFencer::new("/t/{pool}-{group}/{gateway}.json", Duration::from_secs(1))
            .expect("template");
        let order = FenceOrder {
            key: gwmon_proto::domain::GroupKey::new(
                "rbd".parse().expect("pool"),
                "grp1".parse().expect("group"),
            ),
            gateway: "gw1".parse().expect("gateway"),
            epoch: gwmon_proto::domain::Epoch(4),
            nonces: vec![],
        };
        assert_eq!(f.target(&order), PathBuf::from("/t/rbd-grp1/gw1.json"));
    }
}
