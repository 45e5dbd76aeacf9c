//! Disaster recovery: a one-monitor cluster from the store of one survivor, when the rest of
//! the monitors are lost for good and the quorum with them (`gwmon recover`; etcd's
//! `--force-new-cluster`, Ceph's monmap surgery).
//!
//! Offline, on a stopped monitor's data directory:
//! 1. the state as of the last entry this monitor knows to be committed: its snapshot,
//!    then its log applied up to the committed id;
//! 2. the entries after that are dropped: no leader can have reported them committed to
//!    this monitor, and no other monitor is left to say they were;
//! 3. a membership of this monitor alone is applied on top, at the next index, and the
//!    result is saved as the snapshot; the log behind it is purged.
//!
//! Started again (with its usual flags), the monitor is the only voter, elects itself and
//! serves the map it had; `nvme-gw cluster add` then grows the cluster back from empty
//! monitors started with `--join`.
//!
//! [`restore`] does the same from a backup (`nvme-gw cluster backup`) into an empty data
//! directory: `gwmon restore`. Recover the survivor with the highest committed index
//! (`gwmon_raft_committed_index`, or what this command prints for each): the others' newer
//! committed changes would be lost otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, LogId as RaftLogId, SnapshotMeta, StoredMembership};

use crate::codec;
use crate::error::MonitorError;
use crate::map::GatewayMap;
use crate::raft::state_machine::SnapshotPayload;
use crate::raft::{state_machine, Entry, LogId, Membership, MonitorNode, NodeId};
use crate::replica::ReplicaRegistry;
use crate::store::{Store, StoreError, StoreKind};

/// What [`force_new_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The last committed entry kept (applied into the map).
    pub committed: Option<LogId>,
    /// Entries after it, dropped.
    pub dropped: u64,
    /// The id of the new membership: the snapshot the monitor starts from.
    pub membership_at: LogId,
    /// The gateway map's epoch in that snapshot.
    pub map_epoch: u64,
    /// The members before, now gone.
    pub removed: BTreeSet<NodeId>,
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let committed = self.committed.map_or("none".to_owned(), |c| {
            format!("index {} (term {})", c.index, c.leader_id.term)
        });
        let removed: Vec<String> = self.removed.iter().map(ToString::to_string).collect();
        write!(
            f,
            "kept everything committed up to {committed}, map epoch {}; dropped {} uncommitted \
             entr{}; members removed: {}; this monitor is now the only member (from index {})",
            self.map_epoch,
            self.dropped,
            if self.dropped == 1 { "y" } else { "ies" },
            if removed.is_empty() {
                "none".to_owned()
            } else {
                removed.join(", ")
            },
            self.membership_at.index,
        )
    }
}

fn storage(e: impl std::fmt::Display) -> MonitorError {
    MonitorError::Recover(e.to_string())
}

/// Rewrite the store under `data_dir` (a stopped monitor's) into a one-member cluster of
/// monitor `id` at `node`, keeping everything it knows to be committed. See the module
/// documentation.
pub async fn force_new_cluster(
    data_dir: &Path,
    id: NodeId,
    node: MonitorNode,
    kind: Option<StoreKind>,
    cache_mb: u64,
) -> Result<Recovered, MonitorError> {
    let path = data_dir.join("store");
    if !path.exists() {
        return Err(MonitorError::Recover(format!(
            "no store at {}: give the data directory of a monitor that ran",
            path.display()
        )));
    }
    let store = open(kind, &path, cache_mb).await?;
    let (mut log, mut sm, reader) = state_machine::open_storage(store.clone())
        .await
        .map_err(storage)?;

    let (applied, _) = sm.applied_state().await.map_err(storage)?;
    let committed = log.read_committed().await.map_err(storage)?;
    let state = log.get_log_state().await.map_err(storage)?;
    let last = state.last_log_id.map_or(0, |l| l.index);
    if state.last_log_id.is_none() && applied.is_none() {
        return Err(MonitorError::Recover(format!(
            "the store at {} is empty: nothing to recover",
            path.display()
        )));
    }

    // 1. Everything committed, applied.
    let keep = committed.max(applied);
    let from = applied.map_or(0, |l| l.index + 1);
    if let Some(upto) = keep.filter(|k| k.index >= from) {
        let entries = log
            .try_get_log_entries(from..=upto.index)
            .await
            .map_err(storage)?;
        sm.apply(entries).await.map_err(storage)?;
    }
    let (applied, membership) = sm.applied_state().await.map_err(storage)?;
    let kept = applied.map_or(0, |l| l.index);

    // 2. The uncommitted tail, dropped.
    let dropped = last.saturating_sub(kept);
    if dropped > 0 {
        let first_dropped = RaftLogId::new(
            state.last_log_id.map(|l| l.leader_id).unwrap_or_default(),
            kept + 1,
        );
        log.truncate(first_dropped).await.map_err(storage)?;
    }

    // 3. This monitor alone, applied at the next index and saved as the snapshot.
    let leader_id = applied
        .or(state.last_log_id)
        .map(|l| l.leader_id)
        .unwrap_or_default();
    let at = RaftLogId::new(leader_id, kept + 1);
    let removed: BTreeSet<NodeId> = membership
        .membership()
        .nodes()
        .map(|(n, _)| *n)
        .filter(|n| *n != id)
        .collect();
    let alone = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, node)]));
    sm.apply([Entry {
        log_id: at,
        payload: EntryPayload::Membership(alone),
    }])
    .await
    .map_err(storage)?;
    let mut builder = sm.get_snapshot_builder().await;
    builder.build_snapshot().await.map_err(storage)?;
    log.purge(at).await.map_err(storage)?;
    log.save_committed(Some(at)).await.map_err(storage)?;
    store.flush().await.map_err(storage)?;

    Ok(Recovered {
        committed: keep,
        dropped,
        membership_at: at,
        map_epoch: reader.read(|m| m.epoch().0),
        removed,
    })
}

async fn open(
    kind: Option<StoreKind>,
    path: &Path,
    cache_mb: u64,
) -> Result<Arc<dyn Store>, MonitorError> {
    let opened = crate::node::open_store(kind, path, cache_mb.saturating_mul(1024 * 1024)).await;
    opened.map_err(|e| match e {
        StoreError::Locked { .. } => MonitorError::Recover(format!(
            "{e} (stop the monitor first: this works on a stopped one)"
        )),
        e => storage(e),
    })
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The index the backup was the state as of.
    pub backup_index: Option<LogId>,
    /// The gateway map's epoch in it.
    pub map_epoch: u64,
    /// The id of the snapshot the monitor starts from.
    pub membership_at: LogId,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.backup_index.map_or("the start".to_owned(), |c| {
            format!("index {} (term {})", c.index, c.leader_id.term)
        });
        write!(
            f,
            "restored the state as of {at}, map epoch {}; this monitor is its only member \
             (from index {})",
            self.map_epoch, self.membership_at.index
        )
    }
}

/// Start a one-member cluster of monitor `id` at `node` in the empty `data_dir` from
/// `backup`, the bytes `nvme-gw cluster backup` wrote (see the module documentation), in a
/// store of backend `kind` (redb if `None`).
pub async fn restore(
    data_dir: &Path,
    id: NodeId,
    node: MonitorNode,
    kind: Option<StoreKind>,
    cache_mb: u64,
    backup: &[u8],
) -> Result<Restored, MonitorError> {
    let bad = |e: codec::CodecError| {
        MonitorError::Recover(format!("not a gwmon backup, or a damaged one: {e}"))
    };
    let payload = SnapshotPayload::decode(backup).map_err(bad)?;
    let map: GatewayMap = codec::decode(&payload.map).map_err(bad)?;
    let _: ReplicaRegistry = codec::decode(&payload.registry).map_err(bad)?;

    let path = data_dir.join("store");
    let store = open(kind, &path, cache_mb).await?;
    let (mut log, mut sm, _) = state_machine::open_storage(store.clone())
        .await
        .map_err(storage)?;
    let (applied, _) = sm.applied_state().await.map_err(storage)?;
    let state = log.get_log_state().await.map_err(storage)?;
    if applied.is_some() || state.last_log_id.is_some() {
        return Err(MonitorError::Recover(format!(
            "{} already holds a monitor's store: restore into an empty data directory",
            data_dir.display()
        )));
    }
    let at = RaftLogId::new(
        payload
            .last_applied
            .map(|l| l.leader_id)
            .unwrap_or_default(),
        payload.last_applied.map_or(1, |l| l.index + 1),
    );
    let membership = StoredMembership::new(
        Some(at),
        Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, node)])),
    );
    let data = codec::encode(&SnapshotPayload {
        last_applied: Some(at),
        membership: membership.clone(),
        map: payload.map,
        registry: payload.registry,
    })
    .map_err(storage)?;
    let meta = SnapshotMeta {
        last_log_id: Some(at),
        last_membership: membership,
        snapshot_id: format!("restored-{}", at.index),
    };
    sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(data)))
        .await
        .map_err(storage)?;
    log.purge(at).await.map_err(storage)?;
    log.save_committed(Some(at)).await.map_err(storage)?;
    store.flush().await.map_err(storage)?;
    Ok(Restored {
        backup_index: payload.last_applied,
        map_epoch: map.epoch().0,
        membership_at: at,
    })
}
