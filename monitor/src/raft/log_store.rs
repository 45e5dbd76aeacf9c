//! openraft's log storage (`RaftLogStorage` + `RaftLogReader`) over the narrow
//! [`Store`]: the vote, the log entries, the committed and last-purged log ids.
//!
//! Entries are persisted as [`StoredEntry`], our own versioned type, not as openraft's
//! `Entry`: the map command inside keeps its own format version ([`crate::codec`]), so a later
//! release can tell an old command encoding from a corrupt one.
#![allow(clippy::result_large_err)] // openraft's StorageError is large; its API returns it.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, Membership, OptionalSend,
    RaftLogReader, StorageIOError, Vote,
};
use serde::{Deserialize, Serialize};

use super::recent::Recent;
use super::{
    upgrade_membership, Entry, LogId, MonitorNode, NodeId, Request, StorageError, TypeConfig,
};
use crate::codec::{self, CodecError, Versioned};
use crate::map::{Command, Timestamp};
use crate::replica::ReplicaCommand;
use crate::store::{MetaKey, Store, StoreError};

impl Versioned for Vote<NodeId> {
    const WHAT: &'static str = "raft vote";
    const VERSION: u8 = 1;
}

/// The committed and the last purged log ids are stored as `Option` so that "none" is a
/// value, not a missing key.
impl Versioned for Option<LogId> {
    const WHAT: &'static str = "raft log id";
    const VERSION: u8 = 1;
}

/// A log entry as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub log_id: LogId,
    pub payload: StoredPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredPayload {
    Blank,
    /// [`Request::Map`]; `cmd` is the command's own versioned encoding.
    Map {
        now: Timestamp,
        cmd: Vec<u8>,
    },
    Membership(Membership<NodeId, BasicNode>),
    /// [`Request::Replica`]; `cmd` is the command's own versioned encoding. Added after
    /// the others, so logs written before the replica registry existed still decode.
    Replica {
        now: Timestamp,
        cmd: Vec<u8>,
    },
    /// [`Request::Leader`]; `cmd` is the command's own versioned encoding. Added after
    /// the others, for the same reason.
    Leader {
        now: Timestamp,
        term: u64,
        cmd: Vec<u8>,
    },
    /// A membership whose members have a peer port ([`MonitorNode`]). Added last; the
    /// older [`StoredPayload::Membership`] is read as members on their default peer port
    /// ([`crate::raft::upgrade_membership`]) and no longer written.
    Members(Membership<NodeId, MonitorNode>),
    /// [`Request::Batch`]: its commands, each as the entry it would be alone (only the
    /// command variants). Added last; written only at the feature level that allows it.
    Batch(Vec<StoredPayload>),
}

impl Versioned for StoredEntry {
    const WHAT: &'static str = "raft log entry";
    const VERSION: u8 = 1;
}

impl StoredEntry {
    pub fn from_entry(entry: &Entry) -> Result<StoredEntry, CodecError> {
        let payload = match &entry.payload {
            EntryPayload::Blank => StoredPayload::Blank,
            EntryPayload::Normal(request) => StoredPayload::of_request(request)?,
            EntryPayload::Membership(m) => StoredPayload::Members(m.clone()),
        };
        Ok(StoredEntry {
            log_id: entry.log_id,
            payload,
        })
    }

    pub fn into_entry(self) -> Result<Entry, CodecError> {
        let payload = match self.payload {
            StoredPayload::Blank => EntryPayload::Blank,
            StoredPayload::Membership(m) => EntryPayload::Membership(upgrade_membership(&m)),
            StoredPayload::Members(m) => EntryPayload::Membership(m),
            request => EntryPayload::Normal(request.into_request()?),
        };
        Ok(Entry {
            log_id: self.log_id,
            payload,
        })
    }
}

impl StoredPayload {
    fn of_request(request: &Request) -> Result<StoredPayload, CodecError> {
        Ok(match request {
            Request::Map { now, cmd } => StoredPayload::Map {
                now: *now,
                cmd: codec::encode(cmd)?,
            },
            Request::Replica { now, cmd } => StoredPayload::Replica {
                now: *now,
                cmd: codec::encode(cmd)?,
            },
            Request::Leader { now, term, cmd } => StoredPayload::Leader {
                now: *now,
                term: *term,
                cmd: codec::encode(cmd)?,
            },
            Request::Batch(requests) => StoredPayload::Batch(
                requests
                    .iter()
                    .map(StoredPayload::of_request)
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The request a command payload holds; blank and membership payloads are no request
    /// and are refused as corrupt where one is expected (inside a batch).
    fn into_request(self) -> Result<Request, CodecError> {
        Ok(match self {
            StoredPayload::Map { now, cmd } => Request::Map {
                now,
                cmd: codec::decode::<Command>(&cmd)?,
            },
            StoredPayload::Replica { now, cmd } => Request::Replica {
                now,
                cmd: codec::decode::<ReplicaCommand>(&cmd)?,
            },
            StoredPayload::Leader { now, term, cmd } => Request::Leader {
                now,
                term,
                cmd: codec::decode::<Command>(&cmd)?,
            },
            StoredPayload::Batch(payloads) => Request::Batch(
                payloads
                    .into_iter()
                    .map(StoredPayload::into_request)
                    .collect::<Result<_, _>>()?,
            ),
            StoredPayload::Blank | StoredPayload::Membership(_) | StoredPayload::Members(_) => {
                return Err(CodecError::Malformed {
                    what: StoredEntry::WHAT,
                    detail: "a batch of commands holds an entry that is not a command".into(),
                })
            }
        })
    }
}

/// Encodes an entry for the log.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    codec::encode(&StoredEntry::from_entry(entry)?)
}

/// Decodes an entry read from the log.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, CodecError> {
    codec::decode::<StoredEntry>(bytes)?.into_entry()
}

/// The Raft log of one monitor. Cheap to clone: clones share the store, and a clone is the
/// reader openraft's replication tasks use.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<dyn Store>,
    /// The latest entries, decoded (see [`super::recent`]); shared by the clones.
    recent: Arc<Mutex<Recent>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: &dyn std::error::Error,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::error(error_chain(e))).into()
}

/// The error and its sources on one line, so openraft's log shows the cause, not just "corrupt".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Decodes the entry stored under `index`, checking that it is the entry for that index: a
/// misplaced entry would make openraft trust a log it does not have.
/// The most encoded log bytes one AppendEntries message carries (one entry more when a
/// single entry is larger): small enough to be sent, decoded and made durable by a follower
/// well within a heartbeat interval on the machines gwmon is measured on, large enough that
/// thousands of small commands still travel together.
pub const REPLICATION_BATCH_BYTES: usize = 1024 * 1024;

fn decode_at(index: u64, bytes: &[u8]) -> Result<Entry, StorageError> {
    let entry = decode_entry(bytes)
        .map_err(|e| io_error(ErrorSubject::LogIndex(index), ErrorVerb::Read, &e))?;
    if entry.log_id.index != index {
        let e = StoreError::Inconsistent {
            what: "raft log entry",
            op: "reading the log",
            detail: format!("key {index} holds entry {}", entry.log_id),
        };
        return Err(io_error(ErrorSubject::LogIndex(index), ErrorVerb::Read, &e));
    }
    Ok(entry)
}

/// The committed log id as this monitor last saved it: openraft 0.9's metrics do not carry
/// the commit index, and readiness needs "applied up to what this monitor knows is
/// committed". Cheap: both stores keep metadata in their page caches.
pub fn stored_committed(store: &dyn Store) -> Result<Option<LogId>, StoreError> {
    let Some(bytes) = store.get_meta(MetaKey::Committed)? else {
        return Ok(None);
    };
    codec::decode::<Option<LogId>>(&bytes).map_err(|source| StoreError::Corrupt {
        op: "reading the committed log id",
        source,
    })
}

impl LogStore {
    pub fn new(store: Arc<dyn Store>) -> LogStore {
        LogStore {
            store,
            recent: Arc::default(),
        }
    }

    fn read_log_id(&self, key: MetaKey) -> Result<Option<LogId>, StorageError> {
        let Some(bytes) = self
            .store
            .get_meta(key)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        codec::decode::<Option<LogId>>(&bytes)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }

    fn write_log_id(&self, key: MetaKey, id: Option<LogId>) -> Result<(), StorageError> {
        let bytes =
            codec::encode(&id).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        self.store
            .put_meta(key, bytes)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, &e))
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        // Taken as it is if poisoned: each step of the window's methods (none of which
        // panics) leaves it a run of consecutive entries.
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        self.store
            .flush()
            .await
            .map_err(|e| io_error(subject, ErrorVerb::Write, &e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        if let Some(entries) = self.recent().range(start, end) {
            return Ok(entries);
        }
        let raw = self
            .store
            .read_range(start, end)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        raw.into_iter()
            .map(|(index, bytes)| decode_at(index, &bytes))
            .collect()
    }

    /// What replication sends in one message: at most [`REPLICATION_BATCH_BYTES`] of
    /// entries (and always one). openraft asks for up to `max_payload_entries` (300)
    /// whatever their size and gives the message one heartbeat interval; 300 reports of a
    /// gateway with 8,192 namespaces are 55 MiB, which never arrived in time, so followers
    /// lost contact and the cluster kept electing leaders.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if let Some(entries) = self.recent().prefix(start, end, REPLICATION_BATCH_BYTES) {
            return Ok(entries);
        }
        let raw = self
            .store
            .read_prefix(start, end, REPLICATION_BATCH_BYTES)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        raw.into_iter()
            .map(|(index, bytes)| decode_at(index, &bytes))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.read_log_id(MetaKey::LastPurged)?;
        let last_in_log = match self
            .store
            .last_entry()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?
        {
            Some((index, bytes)) => Some(decode_at(index, &bytes)?.log_id),
            None => None,
        };
        // A crash between recording a purge and deleting the entries can leave entries at or
        // below the purge point; the purge point still wins.
        let last_log_id = last_in_log.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Durable before returning: Raft's safety rests on a node never voting twice in a term,
    /// even across a crash, and a store on its own may hold the write in memory (sled for up
    /// to 500 ms).
    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes =
            codec::encode(vote).map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        self.store
            .put_meta(MetaKey::Vote, bytes)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        let Some(bytes) = self
            .store
            .get_meta(MetaKey::Vote)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        codec::decode(&bytes)
            .map(Some)
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    /// Not flushed: the state machine is rebuilt on restart from the snapshot plus the log up
    /// to this id. If the latest value is lost in a crash the node replays less and catches up
    /// when the leader next tells it the commit index; nothing it acknowledged is lost.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_log_id(MetaKey::Committed, committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_log_id(MetaKey::Committed)
    }

    /// The callback runs only after the flush: it tells openraft the entries are on disk, and
    /// the leader counts this node towards a quorum on that word.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut decoded = Vec::new();
        let mut raw = Vec::new();
        for entry in entries {
            let bytes = encode_entry(&entry)
                .map_err(|e| io_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e))?;
            let index = entry.log_id.index;
            decoded.push((entry, bytes.len()));
            raw.push((index, bytes));
        }
        let first = raw.first().map(|(index, _)| *index);
        let durable = self.store.append_durable(raw);
        self.recent().appended(decoded);
        match durable.await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                // Not in the store, so not in the window either (Raft stops on the error).
                if let Some(first) = first {
                    self.recent().truncated(first);
                }
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, &e))
            }
        }
    }

    /// Flushed, though openraft does not require it: truncation is rare (a new leader
    /// overriding this node's unreplicated suffix), and a durable truncation means a restart
    /// never brings the overridden entries back.
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.store
            .truncate_from(log_id.index)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        self.recent().truncated(log_id.index);
        self.flush(ErrorSubject::Logs).await
    }

    /// Records the purge point first, then deletes: a crash in between leaves extra entries
    /// below the purge point (harmless), never a log whose start is unknown. Not flushed:
    /// openraft purges only what a snapshot, already durable, covers.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write_log_id(MetaKey::LastPurged, Some(log_id))?;
        self.recent().purged(log_id.index);
        self.store
            .purge_upto(log_id.index)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}
