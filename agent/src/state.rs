//! The agent's local record of the volumes connected on this host: one small JSON file per
//! volume under `<state dir>/volumes/`, written by `connect`, removed by `disconnect`, read
//! by `run` to know what to watch.
//!
//! Only what this host did is kept here; everything about a replacement lives in the
//! cluster (committed stages), so losing this directory loses no replacement progress,
//! only the list of volumes to watch (which `connect` rebuilds, idempotently).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::VolumeId;
use crate::host::ArrayName;

/// The encoding version of a volume record; a record of another version is refused with a
/// message rather than misread.
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the state directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unreadable volume record {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// A connected volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub volume: VolumeId,
    pub array: ArrayName,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    volume: String,
    array: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    fn volumes(&self) -> PathBuf {
        self.dir.join("volumes")
    }

    fn path_of(&self, volume: &VolumeId) -> PathBuf {
        // Volume ids are UUIDs (hex digits and '-'), safe as file names.
        self.volumes().join(format!("{volume}.json"))
    }

    /// Record a connected volume; written to a temporary file and renamed, so a crash
    /// leaves the old record or the new one, never half of one.
    pub fn save(&self, record: &VolumeRecord) -> Result<(), StateError> {
        let dir = self.volumes();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let stored = Stored {
            version: VERSION,
            volume: record.volume.to_string(),
            array: record.array.to_string(),
        };
        let text = serde_json::to_string_pretty(&stored).map_err(|e| StateError::Corrupt {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let path = self.path_of(&record.volume);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }

    /// Forget a volume; forgetting one not recorded is not an error.
    pub fn remove(&self, volume: &VolumeId) -> Result<(), StateError> {
        let path = self.path_of(volume);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    pub fn get(&self, volume: &VolumeId) -> Result<Option<VolumeRecord>, StateError> {
        let path = self.path_of(volume);
        match std::fs::read_to_string(&path) {
            Ok(text) => decode(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Every recorded volume, sorted by id. Leftover temporary files are ignored.
    pub fn list(&self) -> Result<Vec<VolumeRecord>, StateError> {
        let dir = self.volumes();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StateError::Io { path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StateError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
            out.push(decode(&path, &text)?);
        }
        out.sort_by_key(|a| a.volume);
        Ok(out)
    }
}

fn decode(path: &Path, text: &str) -> Result<VolumeRecord, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let stored: Stored = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    if stored.version != VERSION {
        return Err(corrupt(format!(
            "version {} (this agent reads version {VERSION})",
            stored.version
        )));
    }
    Ok(VolumeRecord {
        volume: stored
            .volume
            .parse()
            .map_err(|e| corrupt(format!("volume id {e}")))?,
        array: stored
            .array
            .parse()
            .map_err(|e| corrupt(format!("array name {e}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(v: &str) -> VolumeRecord {
        VolumeRecord {
            volume: format!("f81d4fae-7dec-11d0-a765-00a0c91e6bf{}", &v[3..])
                .parse()
                .expect("id"),
            array: v.parse().expect("name"),
        }
    }

    #[test]
    fn records_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        assert!(state.list().expect("empty").is_empty());
        state.save(&record("vol2")).expect("save");
        state.save(&record("vol1")).expect("save");
        state.save(&record("vol1")).expect("save again");
        let list = state.list().expect("list");
        assert_eq!(list, vec![record("vol1"), record("vol2")]);
        assert_eq!(
            state.get(&record("vol2").volume).expect("get"),
            Some(record("vol2"))
        );
        state.remove(&record("vol1").volume).expect("remove");
        state.remove(&record("vol1").volume).expect("remove twice");
        assert_eq!(state.list().expect("list"), vec![record("vol2")]);
    }

    #[test]
    fn a_corrupt_or_future_record_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        std::fs::create_dir_all(dir.path().join("volumes")).expect("mkdir");
        std::fs::write(dir.path().join("volumes/x.json"), "{not json").expect("write");
        let err = state.list().expect_err("corrupt");
        assert!(err.to_string().contains("x.json"), "{err}");
        std::fs::write(
            dir.path().join("volumes/x.json"),
            r#"{"version":9,"volume":"f81d4fae-7dec-11d0-a765-00a0c91e6bf6","array":"x"}"#,
        )
        .expect("write");
        let err = state.list().expect_err("future");
        assert!(err.to_string().contains("version 9"), "{err}");
        std::fs::write(
            dir.path().join("volumes/x.json"),
            r#"{"version":1,"volume":"../etc","array":"x"}"#,
        )
        .expect("write");
        assert!(state.list().is_err());
    }
}
