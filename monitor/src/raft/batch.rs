//! Group commit: the commands proposed while earlier ones are being committed go into Raft
//! together, as one [`Request::Batch`] entry.
//!
//! openraft 0.9 appends and flushes each client write as its own log entry, with the Raft
//! core waiting for the flush, so a leader commits at most one entry per flush: about 3,000
//! admin writes a second on this machine's disk, however many clients write at once. A
//! batch shares the flush, the replication round and the follower's flush among all of its
//! commands.
//!
//! ```text
//!   proposers ──(request, reply)──▶ queue ──▶ batcher: waits for a free slot (at most
//!                                             IN_FLIGHT entries uncommitted), takes what
//!                                             queued meanwhile, writes one entry
//!                                                     │
//!   proposer ◀── its own response ◀── committed ◀────┘
//! ```
//!
//! A lone command is written as itself, so a quiet cluster writes what it always wrote and
//! waits for nothing: the batcher does not hold a command back to wait for company. Batches
//! are written only from the map's feature level
//! [`BATCHED_WRITES`](crate::map::features::BATCHED_WRITES) on (monitors of earlier releases
//! cannot read them); below it every command goes to Raft as its own entry at once, as
//! before batches existed.

use std::sync::Arc;

use openraft::error::{ClientWriteError, Fatal, RaftError};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::state_machine::MapReader;
use super::{LogId, MonitorNode, NodeId, Raft, Request, Response};
use crate::map::features::BATCHED_WRITES;

/// Batch entries written and not yet committed and applied. Two let a batch be flushed on
/// the leader while the one before it is on its way to the followers.
pub const IN_FLIGHT: usize = 2;
/// The most commands in one entry.
pub const MAX_COMMANDS: usize = 256;
/// The encoded size a batch stops growing at (a single larger command goes alone): the
/// entry is replicated in one message and decoded in one piece.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Proposals waiting for the batcher before proposers wait to queue.
const QUEUE: usize = 4096;

/// A committed command: the entry it was committed in and its own response.
#[derive(Debug)]
pub struct Written {
    pub log_id: LogId,
    pub response: Response,
}

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, MonitorNode>>;

/// Why a command was not committed.
#[derive(Debug)]
pub enum BatchError {
    /// What openraft said: not the leader (with where it is), a membership change refused,
    /// or the Raft core stopped.
    Raft(Box<WriteError>),
    /// The batch's answer did not hold one response per command: a bug, never expected.
    Mismatch { commands: usize, responses: usize },
}

struct Proposal {
    request: Request,
    reply: oneshot::Sender<Result<Written, BatchError>>,
}

/// The proposers' side: cheap to clone, one batcher behind all clones. The batcher stops
/// once every clone is dropped.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Proposal>,
    slots: Arc<Semaphore>,
    raft: Raft,
    reader: MapReader,
}

impl Proposer {
    /// Starts the batcher for `raft` (on the current Tokio runtime); `reader` tells it the
    /// map's feature level.
    pub fn start(raft: Raft, reader: MapReader) -> Proposer {
        let (queue, rx) = mpsc::channel(QUEUE);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        tokio::spawn(run(raft.clone(), reader.clone(), rx, slots.clone()));
        Proposer {
            queue,
            slots,
            raft,
            reader,
        }
    }

    /// Commits `request`, alone or in a batch, and returns its own response once it is
    /// applied on this monitor. With a slot free and nobody queued the request goes to Raft
    /// from here, without passing through the batcher. Below the batched-writes level every
    /// request goes to Raft from here at once, as many in flight as proposers, as before
    /// batches existed: the slots are what lets a batch gather, and without batches they
    /// would only hold writes back.
    pub async fn write(&self, request: Request) -> Result<Written, BatchError> {
        if self.reader.read(|m| m.features()) < BATCHED_WRITES {
            return self.alone(request, None).await;
        }
        if self.queue.capacity() == self.queue.max_capacity() {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                return self.alone(request, Some(slot)).await;
            }
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Proposal { request, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// `request` to Raft as an entry of its own, from the proposer's task.
    async fn alone(
        &self,
        request: Request,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Written, BatchError> {
        let (reply, answer) = oneshot::channel();
        submit(&self.raft, request, Replies::One(reply), slot, false).await;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> BatchError {
    BatchError::Raft(Box::new(RaftError::Fatal(Fatal::Stopped)))
}

async fn run(
    raft: Raft,
    reader: MapReader,
    mut queue: mpsc::Receiver<Proposal>,
    slots: Arc<Semaphore>,
) {
    while let Some(first) = queue.recv().await {
        // Waiting for a slot is what lets a batch gather: proposals queue meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Queued at the batched-writes level; read again, it costs a read lock.
        let mut batch = vec![first];
        if reader.read(|m| m.features()) >= BATCHED_WRITES {
            gather(&mut batch, &mut queue);
        }
        let (request, replies) = combine(batch);
        submit(&raft, request, replies, Some(slot), true).await;
    }
}

/// Hands `request` to Raft; its answer goes to `replies` and frees `slot` (if it holds
/// one) once committed and applied. The wait for the commit is spawned when `detach` (the
/// batcher goes on gathering meanwhile); else the caller's task waits, as the proposer of a
/// lone command does for its answer anyway.
async fn submit(
    raft: &Raft,
    request: Request,
    replies: Replies,
    slot: Option<OwnedSemaphorePermit>,
    detach: bool,
) {
    match raft.client_write_ff(request).await {
        Ok(committed) => {
            let wait = async move {
                let result = match committed.await {
                    Ok(written) => written.map_err(RaftError::APIError),
                    Err(_) => Err(RaftError::Fatal(Fatal::Stopped)),
                };
                answer(replies, result, slot);
            };
            if detach {
                tokio::spawn(wait);
            } else {
                wait.await;
            }
        }
        Err(fatal) => answer(replies, Err(RaftError::Fatal(fatal)), slot),
    }
}

/// Takes queued proposals into `batch` up to the bounds, without waiting for more.
fn gather(batch: &mut Vec<Proposal>, queue: &mut mpsc::Receiver<Proposal>) {
    let mut bytes: u64 = batch.iter().map(|p| weight(&p.request)).sum();
    while batch.len() < MAX_COMMANDS && bytes < MAX_BYTES {
        let Ok(next) = queue.try_recv() else {
            return;
        };
        bytes = bytes.saturating_add(weight(&next.request));
        batch.push(next);
    }
}

/// A request's encoded size, about as the log will hold it (the bound is soft).
fn weight(request: &Request) -> u64 {
    crate::codec::body_len(request).unwrap_or(MAX_BYTES)
}

/// One request for the proposals (a batch unless there is just one) and where each answer
/// goes.
fn combine(mut batch: Vec<Proposal>) -> (Request, Replies) {
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            return (p.request, Replies::One(p.reply));
        }
    }
    let (requests, replies) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    (Request::Batch(requests), Replies::Batch(replies))
}

enum Replies {
    One(oneshot::Sender<Result<Written, BatchError>>),
    Batch(Vec<oneshot::Sender<Result<Written, BatchError>>>),
}

/// Hands each proposer its answer, then frees the slot. A proposer that stopped waiting
/// (its caller went away) is skipped: its command is committed all the same.
fn answer(
    replies: Replies,
    result: Result<openraft::raft::ClientWriteResponse<super::TypeConfig>, WriteError>,
    slot: Option<OwnedSemaphorePermit>,
) {
    match (replies, result) {
        (Replies::One(reply), result) => {
            let _ = reply.send(
                result
                    .map(|r| Written {
                        log_id: r.log_id,
                        response: r.data,
                    })
                    .map_err(|e| BatchError::Raft(Box::new(e))),
            );
        }
        (Replies::Batch(replies), Ok(r)) if r.data.batch.len() == replies.len() => {
            for (reply, response) in replies.into_iter().zip(r.data.batch) {
                let _ = reply.send(Ok(Written {
                    log_id: r.log_id,
                    response,
                }));
            }
        }
        (Replies::Batch(replies), Ok(r)) => {
            let (commands, responses) = (replies.len(), r.data.batch.len());
            for reply in replies {
                let _ = reply.send(Err(BatchError::Mismatch {
                    commands,
                    responses,
                }));
            }
        }
        (Replies::Batch(replies), Err(e)) => {
            for reply in replies {
                let _ = reply.send(Err(BatchError::Raft(Box::new(e.clone()))));
            }
        }
    }
    drop(slot);
}
