//! openraft's state machine (`RaftStateMachine` + `RaftSnapshotBuilder`) around the pure map
//! engine and the pure replica registry, their snapshots, and [`MapReader`], the read handle
//! the rest of the monitor uses.
//!
//! The state machine lives in memory and is made durable only through snapshots: `apply` does
//! no I/O, it decodes nothing beyond what openraft hands it and calls
//! [`GatewayMap::apply`] or [`ReplicaRegistry::apply`]. On restart, [`open_storage`] loads the latest snapshot and openraft
//! replays the log after it, up to the saved committed id. That is why every snapshot is
//! flushed before it is reported: openraft purges the log it covers.
//!
//! ```text
//!   openraft ──apply(entries)──▶ StateMachine ──write lock──▶ AppliedState { map, registry, last_applied, membership }
//!                                     │                             ▲ read lock
//!                                     ├─ watch::Sender<u64> ──▶ MapReader (clone per gateway session)
//!                                     └─ broadcast::Sender<AppliedEvents> ──▶ metrics (and the event stream)
//! ```
#![allow(clippy::result_large_err)] // openraft's StorageError is large; its API returns it.

use std::fmt::Debug;
use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use gwmon_proto::domain::{Epoch, GroupKey};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageIOError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Mutex};
use tokio::time::Instant;

use super::log_store::LogStore;
use super::signals::{GroupChanges, Signals, Touched};
use super::{
    upgrade_stored_membership, Applied, Entry, LogId, MonitorNode, NodeId, Request, Response,
    StorageError, StoredMembership, TypeConfig,
};
use crate::clock::TimeAnchor;
use crate::codec::{self, Versioned};
use crate::map::{Event, GatewayMap, MapError, Timestamp};
use crate::replica::ReplicaRegistry;
use crate::store::{MetaKey, Store, StoreError};

/// The state a snapshot captures. The map and the registry are nested in their own
/// versioned encodings, so a change of either format is detected as such, not as a corrupt
/// snapshot.
///
/// Version 2 added the replica registry, version 3 the members' peer ports. Older
/// snapshots still decode: a version 1 snapshot (taken before the registry existed) with an
/// empty registry, which is exactly what it held, and both with their members on the
/// default peer port ([`crate::raft::upgrade_stored_membership`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPayload {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// `codec::encode(&GatewayMap)`.
    pub map: Vec<u8>,
    /// `codec::encode(&ReplicaRegistry)`.
    pub registry: Vec<u8>,
}

impl Versioned for SnapshotPayload {
    const WHAT: &'static str = "map snapshot";
    const VERSION: u8 = 3;
}

/// The snapshot payload before peer ports: read, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPayloadV2 {
    pub last_applied: Option<LogId>,
    pub membership: openraft::StoredMembership<NodeId, BasicNode>,
    pub map: Vec<u8>,
    pub registry: Vec<u8>,
}

impl Versioned for SnapshotPayloadV2 {
    const WHAT: &'static str = "map snapshot";
    const VERSION: u8 = 2;
}

/// The snapshot payload before the replica registry: read, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPayloadV1 {
    pub last_applied: Option<LogId>,
    pub membership: openraft::StoredMembership<NodeId, BasicNode>,
    /// `codec::encode(&GatewayMap)`.
    pub map: Vec<u8>,
}

impl Versioned for SnapshotPayloadV1 {
    const WHAT: &'static str = "map snapshot";
    const VERSION: u8 = 1;
}

impl SnapshotPayload {
    /// Decodes the current version, or an older one (see the type's documentation).
    pub fn decode(bytes: &[u8]) -> Result<SnapshotPayload, codec::CodecError> {
        match bytes.first() {
            Some(&SnapshotPayloadV1::VERSION) => {
                let old: SnapshotPayloadV1 = codec::decode(bytes)?;
                Ok(SnapshotPayload {
                    last_applied: old.last_applied,
                    membership: upgrade_stored_membership(&old.membership),
                    map: old.map,
                    registry: codec::encode(&ReplicaRegistry::default())?,
                })
            }
            Some(&SnapshotPayloadV2::VERSION) => {
                let old: SnapshotPayloadV2 = codec::decode(bytes)?;
                Ok(SnapshotPayload {
                    last_applied: old.last_applied,
                    membership: upgrade_stored_membership(&old.membership),
                    map: old.map,
                    registry: old.registry,
                })
            }
            _ => codec::decode(bytes),
        }
    }
}

/// A snapshot as persisted in the store: openraft's metadata and the encoded
/// [`SnapshotPayload`], in one value so that they cannot disagree after a crash. Version 2
/// carries the members' peer ports; version 1 is read through [`StoredSnapshotV1`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta<NodeId, MonitorNode>,
    pub data: Vec<u8>,
}

impl Versioned for StoredSnapshot {
    const WHAT: &'static str = "raft snapshot";
    const VERSION: u8 = 2;
}

/// A snapshot stored before peer ports: read, never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshotV1 {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    pub data: Vec<u8>,
}

impl Versioned for StoredSnapshotV1 {
    const WHAT: &'static str = "raft snapshot";
    const VERSION: u8 = 1;
}

impl StoredSnapshot {
    /// Decodes the current version or version 1, whose members move to their default peer
    /// port.
    pub fn decode(bytes: &[u8]) -> Result<StoredSnapshot, codec::CodecError> {
        if bytes.first() == Some(&StoredSnapshotV1::VERSION) {
            let old: StoredSnapshotV1 = codec::decode(bytes)?;
            return Ok(StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: old.meta.last_log_id,
                    last_membership: upgrade_stored_membership(&old.meta.last_membership),
                    snapshot_id: old.meta.snapshot_id,
                },
                data: old.data,
            });
        }
        codec::decode(bytes)
    }
}

/// Everything `apply` changes, behind one lock so that a reader or a snapshot sees a map and
/// the log id it reflects together.
#[derive(Debug)]
struct AppliedState {
    map: GatewayMap,
    registry: ReplicaRegistry,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Not replicated: the latest command time applied here and the local instant it was
    /// applied at, so a leader can bound the time it stamps on its next command by the
    /// monotonic time elapsed since (see `Core::now`).
    anchor: TimeAnchor,
}

/// The latest command time this monitor applied, and when (on its monotonic clock).
fn anchor_now(time: Timestamp) -> TimeAnchor {
    TimeAnchor {
        time,
        at: Instant::now(),
    }
}

/// A command stamped `time` was applied just now. A command of the same time keeps the
/// earlier instant: bounds count from the first moment that time was known.
fn advance(anchor: &mut TimeAnchor, time: Timestamp) {
    if time > anchor.time {
        *anchor = anchor_now(time);
    }
}

impl AppliedState {
    fn empty() -> AppliedState {
        AppliedState {
            // Every replica must start from the same map, so the initial tunables are the
            // defaults; they change only through a committed `Command::SetConfig`.
            map: GatewayMap::default(),
            registry: ReplicaRegistry::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            anchor: anchor_now(Timestamp::ZERO),
        }
    }

    /// Restores the state a snapshot captured, checking it against the metadata it was
    /// stored or sent with.
    fn from_snapshot(
        meta: &SnapshotMeta<NodeId, MonitorNode>,
        data: &[u8],
        op: &'static str,
    ) -> Result<AppliedState, StoreError> {
        let payload =
            SnapshotPayload::decode(data).map_err(|source| StoreError::Corrupt { op, source })?;
        let mut map: GatewayMap =
            codec::decode(&payload.map).map_err(|source| StoreError::Corrupt { op, source })?;
        map.share_nonces();
        let registry: ReplicaRegistry = codec::decode(&payload.registry)
            .map_err(|source| StoreError::Corrupt { op, source })?;
        if payload.last_applied != meta.last_log_id || payload.membership != meta.last_membership {
            return Err(StoreError::Inconsistent {
                what: SnapshotPayload::WHAT,
                op,
                detail: format!(
                    "data is at {:?} with {:?}, metadata says {:?} with {:?}",
                    payload.last_applied,
                    payload.membership,
                    meta.last_log_id,
                    meta.last_membership
                ),
            });
        }
        Ok(AppliedState {
            anchor: anchor_now(map.time()),
            map,
            registry,
            last_applied: payload.last_applied,
            membership: payload.membership,
        })
    }

    fn last_index(&self) -> u64 {
        self.last_applied.map_or(0, |id| id.index)
    }

    /// The response of an entry that changes neither the map nor the registry.
    fn unchanged(&self) -> Response {
        Response {
            map_epoch: self.map.epoch(),
            outcome: Ok(Applied {
                changed: false,
                events: Vec::new(),
            }),
            replica: None,
            batch: Vec::new(),
        }
    }

    /// Applies one request of the entry at `log_id`, a batch command by command.
    fn apply_request(
        &mut self,
        request: Request,
        log_id: LogId,
        effects: &mut Effects,
    ) -> Response {
        let (at, outcome, replica) = match request {
            Request::Batch(requests) => {
                let batch = requests
                    .into_iter()
                    .map(|r| match r {
                        // A batch never holds a batch; one that did is refused like a
                        // command the engine refuses, the same way on every replica.
                        Request::Batch(_) => Response {
                            outcome: Err(MapError::NestedBatch),
                            ..self.unchanged()
                        },
                        r => self.apply_request(r, log_id, effects),
                    })
                    .collect();
                return Response {
                    batch,
                    ..self.unchanged()
                };
            }
            Request::Leader { now, term, cmd } => {
                advance(&mut self.anchor, now);
                let appended = log_id.leader_id.term;
                let outcome = if appended == term
                    || gwmon_proto::mutation::active(
                        gwmon_proto::mutation::Mutation::StaleTermTimeout,
                    ) {
                    self.map.apply(&cmd, now)
                } else {
                    Err(MapError::StaleLeaderCommand {
                        decided: term,
                        appended,
                    })
                };
                if outcome.as_ref().is_ok_and(|a| a.changed) {
                    effects.touched.add(cmd.key());
                }
                (now, outcome, None)
            }
            Request::Map { now, cmd } => {
                advance(&mut self.anchor, now);
                let outcome = self.map.apply(&cmd, now);
                if outcome.as_ref().is_ok_and(|a| a.changed) {
                    effects.touched.add(cmd.key());
                }
                (now, outcome, None)
            }
            Request::Replica { now, cmd } => {
                advance(&mut self.anchor, now);
                let replica = Some(self.registry.apply(&cmd, now));
                (
                    now,
                    Ok(crate::map::Applied {
                        changed: false,
                        events: Vec::new(),
                    }),
                    replica,
                )
            }
        };
        let outcome = outcome.map(|a| Applied {
            changed: a.changed,
            events: a.events,
        });
        if let Ok(a) = &outcome {
            if !a.events.is_empty() {
                effects.published.push(AppliedEvents {
                    index: log_id.index,
                    map_epoch: self.map.epoch(),
                    at,
                    events: a.events.as_slice().into(),
                });
            }
        }
        Response {
            map_epoch: self.map.epoch(),
            outcome,
            replica,
            batch: Vec::new(),
        }
    }
}

/// What an apply leaves to do once the state's lock is released: the groups to signal and
/// the events to publish.
#[derive(Default)]
struct Effects {
    touched: Touched,
    published: Vec<AppliedEvents>,
}

type SharedState = Arc<RwLock<AppliedState>>;

/// Readers do not panic on a lock poisoned by a panicking `apply`: such a panic is a bug, the
/// state machine refuses further writes (see [`StateMachine::write_state`]) so openraft stops
/// the node, and until it is stopped readers still get the map (the engine changes a copy of a
/// group and swaps it in, so at worst some groups miss that one command).
fn read_state(state: &RwLock<AppliedState>) -> RwLockReadGuard<'_, AppliedState> {
    state.read().unwrap_or_else(PoisonError::into_inner)
}

fn sm_error(verb: ErrorVerb, e: &dyn std::error::Error) -> StorageError {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn snapshot_error(
    meta: Option<&SnapshotMeta<NodeId, MonitorNode>>,
    verb: ErrorVerb,
    e: &dyn std::error::Error,
) -> StorageError {
    let subject = ErrorSubject::Snapshot(meta.map(|m| m.signature()));
    StorageIOError::new(subject, verb, AnyError::error(e.to_string())).into()
}

/// Writes of the current snapshot, serialized. openraft builds snapshots in a spawned task,
/// so a build that started before a snapshot install can finish after it; the older one must
/// not replace the newer, whose log prefix may already be purged.
struct SnapshotSlot {
    store: Arc<dyn Store>,
    /// The metadata of the snapshot in the store, if any.
    current: Mutex<Option<SnapshotMeta<NodeId, MonitorNode>>>,
    /// Snapshots built by this process, to make snapshot ids unique.
    built: std::sync::atomic::AtomicU64,
}

impl SnapshotSlot {
    /// Stores the snapshot durably unless `force` is off and the store already holds a newer
    /// one. Returns whether it was stored.
    async fn save(&self, snapshot: &StoredSnapshot, force: bool) -> Result<bool, StoreError> {
        let mut current = self.current.lock().await;
        if !force {
            if let Some(cur) = current.as_ref() {
                if cur.last_log_id > snapshot.meta.last_log_id {
                    return Ok(false);
                }
            }
        }
        let meta = snapshot.meta.clone();
        let bytes = codec::encode(snapshot).map_err(|source| StoreError::Encode {
            op: "saving a snapshot",
            source,
        })?;
        self.store.put_meta(MetaKey::Snapshot, bytes)?;
        // Durable before openraft learns of it: it will purge the log the snapshot covers.
        self.store.flush().await?;
        *current = Some(meta);
        Ok(true)
    }

    fn load(&self, op: &'static str) -> Result<Option<StoredSnapshot>, StoreError> {
        load_snapshot(&*self.store, op)
    }
}

fn load_snapshot(
    store: &dyn Store,
    op: &'static str,
) -> Result<Option<StoredSnapshot>, StoreError> {
    let Some(bytes) = store.get_meta(MetaKey::Snapshot)? else {
        return Ok(None);
    };
    StoredSnapshot::decode(&bytes)
        .map(Some)
        .map_err(|source| StoreError::Corrupt { op, source })
}

/// The events one applied log entry produced, as the state machine publishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEvents {
    /// The log index of the entry: each index is published at most once per process, so a
    /// subscriber counting events counts each one once on this monitor.
    pub index: u64,
    /// The map epoch after the entry.
    pub map_epoch: Epoch,
    /// The time the leader proposed the entry with (the command's `now`).
    pub at: Timestamp,
    /// Shared, not copied per subscriber.
    pub events: Arc<[Event]>,
}

/// How many entries' events a slow subscriber may fall behind before it misses some (it is
/// told how many, see `broadcast::error::RecvError::Lagged`). `apply` never waits for one.
pub const EVENTS_BACKLOG: usize = 4096;

/// The replicated gateway map as openraft drives it.
pub struct StateMachine {
    state: SharedState,
    slot: Arc<SnapshotSlot>,
    applied_tx: watch::Sender<u64>,
    signals: Signals,
    events_tx: broadcast::Sender<AppliedEvents>,
}

impl Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("last_applied", &read_state(&self.state).last_applied)
            .finish_non_exhaustive()
    }
}

/// Builds a snapshot of the state at the moment `build_snapshot` runs.
pub struct SnapshotBuilder {
    state: SharedState,
    slot: Arc<SnapshotSlot>,
}

/// A cheap, clone-able read handle on the applied map for the rest of the monitor (gateway
/// sessions, admin reads). It never blocks `apply` for longer than the closure given to
/// [`MapReader::read`] runs, so keep those closures short (copy out what you need).
#[derive(Clone)]
pub struct MapReader {
    state: SharedState,
    applied_rx: watch::Receiver<u64>,
    signals: Signals,
    events_tx: broadcast::Sender<AppliedEvents>,
}

impl Debug for MapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapReader")
            .field("last_applied_index", &self.last_applied_index())
            .finish_non_exhaustive()
    }
}

/// A backup of the applied state: the encoded [`SnapshotPayload`], and what it is as of.
#[derive(Debug, Clone)]
pub struct Exported {
    pub payload: Vec<u8>,
    pub last_applied: Option<LogId>,
    pub map_epoch: u64,
}

impl MapReader {
    /// The applied state as a snapshot payload: what a backup holds (`ExportSnapshot`).
    pub fn export(&self) -> Result<Exported, codec::CodecError> {
        let state = read_state(&self.state);
        let payload = SnapshotPayload {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            map: codec::encode(&state.map)?,
            registry: codec::encode(&state.registry)?,
        };
        Ok(Exported {
            payload: codec::encode(&payload)?,
            last_applied: state.last_applied,
            map_epoch: state.map.epoch().0,
        })
    }

    /// Runs `f` on the map as last applied.
    pub fn read<T>(&self, f: impl FnOnce(&GatewayMap) -> T) -> T {
        f(&read_state(&self.state).map)
    }

    /// Runs `f` on the replica registry as last applied.
    pub fn read_registry<T>(&self, f: impl FnOnce(&ReplicaRegistry) -> T) -> T {
        f(&read_state(&self.state).registry)
    }

    /// Runs `f` on the map and the registry, read together (one lock: never nest `read`
    /// and `read_registry`, a waiting writer would block the inner read).
    pub fn read_both<T>(&self, f: impl FnOnce(&GatewayMap, &ReplicaRegistry) -> T) -> T {
        let state = read_state(&self.state);
        f(&state.map, &state.registry)
    }

    /// Runs `f` on the map and the index of the last log entry it reflects (0 before anything
    /// was applied), read together.
    pub fn read_at<T>(&self, f: impl FnOnce(&GatewayMap, u64) -> T) -> T {
        let state = read_state(&self.state);
        f(&state.map, state.last_index())
    }

    /// The index of the last applied log entry; 0 before anything was applied.
    pub fn last_applied_index(&self) -> u64 {
        read_state(&self.state).last_index()
    }

    /// The full id (term, leader, index) of the last applied log entry.
    pub fn last_applied(&self) -> Option<LogId> {
        read_state(&self.state).last_applied
    }

    /// The latest command time applied here and when it was applied.
    pub fn time_anchor(&self) -> TimeAnchor {
        read_state(&self.state).anchor
    }

    /// A receiver that changes to the last applied index after every `apply` batch and every
    /// snapshot install, so a gateway session can wait for a new map and push its slice. The
    /// current value counts as seen; `changed().await` waits for the next one. It errors once
    /// the state machine is dropped (the Raft node shut down).
    pub fn changes(&self) -> watch::Receiver<u64> {
        let mut rx = self.applied_rx.clone();
        rx.mark_unchanged();
        rx
    }

    /// A waiter for applied changes of `key`'s group (or of every group): what a gateway
    /// session waits on to push its slice, instead of every applied entry.
    pub fn group_changes(&self, key: &GroupKey) -> GroupChanges {
        self.signals.watch(key)
    }

    /// A receiver of the events of every entry applied from now on, in log order. Entries
    /// that produced no event are not sent, and a snapshot install sends nothing (the
    /// history it skips is not replayed). Replaying the log after a restart sends the
    /// replayed entries' events again, once per process.
    pub fn events(&self) -> broadcast::Receiver<AppliedEvents> {
        self.events_tx.subscribe()
    }
}

/// Opens the storage openraft needs over one [`Store`]: the log, the state machine (restored
/// from the latest stored snapshot; openraft replays the log after it), and a read handle.
///
/// Pass the three to `openraft::Raft::new` (log store, state machine) and to the components
/// that read the map (reader).
pub async fn open_storage(
    store: Arc<dyn Store>,
) -> Result<(LogStore, StateMachine, MapReader), StoreError> {
    const OP: &str = "loading the snapshot";
    let (state, current) = match load_snapshot(&*store, OP)? {
        Some(stored) => (
            AppliedState::from_snapshot(&stored.meta, &stored.data, OP)?,
            Some(stored.meta),
        ),
        None => (AppliedState::empty(), None),
    };
    let slot = SnapshotSlot {
        store: store.clone(),
        current: Mutex::new(current),
        built: std::sync::atomic::AtomicU64::new(0),
    };
    let (applied_tx, applied_rx) = watch::channel(state.last_index());
    let signals = Signals::new(state.last_index());
    let (events_tx, _) = broadcast::channel(EVENTS_BACKLOG);
    let state = Arc::new(RwLock::new(state));
    let sm = StateMachine {
        state: state.clone(),
        slot: Arc::new(slot),
        applied_tx,
        signals: signals.clone(),
        events_tx: events_tx.clone(),
    };
    let reader = MapReader {
        state,
        applied_rx,
        signals,
        events_tx,
    };
    Ok((LogStore::new(store), sm, reader))
}

impl StateMachine {
    /// Another read handle on this state machine's map.
    pub fn reader(&self) -> MapReader {
        MapReader {
            state: self.state.clone(),
            applied_rx: self.applied_tx.subscribe(),
            signals: self.signals.clone(),
            events_tx: self.events_tx.clone(),
        }
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, AppliedState>, StorageError> {
        self.state.write().map_err(|_| {
            StorageIOError::write_state_machine(AnyError::error(
                "the gateway map was left half-applied by a panic in an earlier apply",
            ))
            .into()
        })
    }

    fn publish(&self, index: u64) {
        // `send_replace`, not `send`: it must succeed with no reader subscribed.
        self.applied_tx.send_replace(index);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let payload = {
            let state = read_state(&self.state);
            let map = codec::encode(&state.map).map_err(|e| sm_error(ErrorVerb::Read, &e))?;
            let registry =
                codec::encode(&state.registry).map_err(|e| sm_error(ErrorVerb::Read, &e))?;
            SnapshotPayload {
                last_applied: state.last_applied,
                membership: state.membership.clone(),
                map,
                registry,
            }
        };
        let data = codec::encode(&payload).map_err(|e| sm_error(ErrorVerb::Read, &e))?;
        let seq = self
            .slot
            .built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot_id = match payload.last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("none-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: payload.last_applied,
            last_membership: payload.membership,
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, data };
        self.slot
            .save(&stored, false)
            .await
            .map_err(|e| snapshot_error(Some(&stored.meta), ErrorVerb::Write, &e))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = read_state(&self.state);
        Ok((state.last_applied, state.membership.clone()))
    }

    /// Blank and membership entries move only the applied id and the membership. A command
    /// the engine refuses is a normal response carrying the refusal: it is committed and
    /// every replica refuses it the same way; it is not a storage failure.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut responses = Vec::new();
        let mut effects = Effects::default();
        let index = {
            let mut state = self.write_state()?;
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => state.unchanged(),
                    EntryPayload::Normal(request) => {
                        state.apply_request(request, entry.log_id, &mut effects)
                    }
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                        state.unchanged()
                    }
                };
                responses.push(response);
            }
            state.last_index()
        };
        let Effects { touched, published } = effects;
        self.publish(index);
        self.signals.signal(&touched, index);
        for events in published {
            // Never blocks; an error only means nobody is subscribed.
            let _ = self.events_tx.send(events);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
            slot: self.slot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Replaces the whole state with the snapshot's, after storing the snapshot durably (the
    /// log it covers is purged next, so it is the only copy of that history).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MonitorNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let restored = AppliedState::from_snapshot(meta, &data, "installing a snapshot")
            .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Read, &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.slot
            .save(&stored, true)
            .await
            .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, &e))?;
        let index = restored.last_index();
        *self.write_state()? = restored;
        self.publish(index);
        let mut everything = Touched::default();
        everything.everything();
        self.signals.signal(&everything, index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self
            .slot
            .load("reading the current snapshot")
            .map_err(|e| snapshot_error(None, ErrorVerb::Read, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
