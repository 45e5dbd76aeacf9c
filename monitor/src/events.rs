//! The event stream behind `AdminService.WatchEvents`: a bounded, in-memory window of what
//! this monitor applied, which watchers read from and resume into by map epoch.
//!
//! ```text
//!  state machine ── AppliedEvents (broadcast) ─┐
//!                                              ├─▶ EventLog::feed ─▶ window (VecDeque) ─▶ watchers
//!  Raft metrics ── leader / term changes ──────┘                      floor epoch, seq watch
//! ```
//!
//! Every monitor applies the same log, so every monitor produces the same map events and
//! any of them can serve a watcher; only leader changes are a monitor's own observation.
//! The window is not persisted: after a restart it holds the events of the entries
//! replayed since the last snapshot, then new ones, and its *floor* (the epoch a resume
//! must be at or above) is the snapshot's epoch. A resume from below the floor is refused
//! rather than answered with a silent gap, the way etcd refuses a watch on a compacted
//! revision.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gwmon_proto::domain::{Epoch, GatewayId, GroupKey};
use gwmon_proto::v1;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::map::{Event, Timestamp};
use crate::raft::state_machine::AppliedEvents;
use crate::raft::NodeId;

/// How many events a monitor keeps for watchers to resume into. An event is a few hundred
/// bytes, so the window costs a few MiB at most; at one failover a minute it reaches back
/// days.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// What one record of the window says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// A map event of an applied log entry.
    Map { index: u64, event: Event },
    /// This monitor saw a new leader (`None`: none known) or a new term.
    LeaderChanged { leader: Option<NodeId>, term: u64 },
}

/// One event as watchers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in this process's window; a watcher's cursor.
    pub seq: u64,
    /// The map epoch after the change (for a leader change: the epoch when it was seen).
    pub map_epoch: Epoch,
    /// The proposing leader's time for map events; this monitor's time for leader changes.
    pub at: Timestamp,
    pub what: Happened,
}

impl Record {
    /// The group a map event is about.
    pub fn key(&self) -> Option<&GroupKey> {
        match &self.what {
            Happened::Map { event, .. } => Some(event.key()),
            Happened::LeaderChanged { .. } => None,
        }
    }
}

/// Why a watcher cannot be served from the window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error(
        "events after epoch {asked} are no longer kept here (this monitor keeps events after \
         epoch {floor}); read the map and watch from its epoch"
    )]
    Gone { asked: u64, floor: u64 },
    #[error(
        "the watcher fell more than {capacity} events behind; resume from the last epoch it saw"
    )]
    Overrun { capacity: usize },
    #[error("the monitor is shutting down")]
    Closed,
}

/// Cheap to clone; one per monitor.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    window: Mutex<Window>,
    /// The seq the next record will get; watchers wait on it.
    next_tx: watch::Sender<u64>,
    capacity: usize,
}

struct Window {
    records: VecDeque<Record>,
    next_seq: u64,
    /// Watchers resuming after an epoch below this one would miss events.
    floor: Epoch,
    /// The map epoch of the newest map event, stamped on leader changes.
    epoch: Epoch,
    closed: bool,
}

/// Where a new watcher starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(u64);

impl EventLog {
    /// An empty window whose history starts at `floor`, the epoch of the map this process
    /// restored (its snapshot's epoch, or zero for a new monitor).
    pub fn new(capacity: usize, floor: Epoch) -> Self {
        let (next_tx, _) = watch::channel(0);
        EventLog {
            inner: Arc::new(Inner {
                window: Mutex::new(Window {
                    records: VecDeque::new(),
                    next_seq: 0,
                    floor,
                    epoch: floor,
                    closed: false,
                }),
                next_tx,
                capacity: capacity.max(1),
            }),
        }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        // Nothing panics while holding the lock; a poisoned lock still holds a whole window.
        self.inner
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, map_epoch: Epoch, at: Timestamp, what: Happened) {
        let next = {
            let mut w = self.window();
            let seq = w.next_seq;
            w.next_seq += 1;
            if w.records.len() >= self.inner.capacity {
                if let Some(old) = w.records.pop_front() {
                    w.floor = w.floor.max(old.map_epoch);
                }
            }
            w.records.push_back(Record {
                seq,
                map_epoch,
                at,
                what,
            });
            w.next_seq
        };
        self.inner.next_tx.send_replace(next);
    }

    /// Appends the events of one applied entry.
    pub fn record_applied(&self, applied: &AppliedEvents) {
        {
            let mut w = self.window();
            w.epoch = w.epoch.max(applied.map_epoch);
        }
        for event in applied.events.iter() {
            // The log tells the same story as the stream, one line per event, with the
            // fields an operator filters on.
            let key = event.key();
            info!(pool = %key.pool, group = %key.group, epoch = applied.map_epoch.0,
                  index = applied.index, ?event, "map event");
            self.push(
                applied.map_epoch,
                applied.at,
                Happened::Map {
                    index: applied.index,
                    event: event.clone(),
                },
            );
        }
    }

    /// Appends a leader change seen at `now`.
    pub fn record_leader(&self, leader: Option<NodeId>, term: u64, now: Timestamp) {
        let epoch = self.window().epoch;
        self.push(epoch, now, Happened::LeaderChanged { leader, term });
    }

    /// Events were lost before reaching the window: nobody may resume from before now.
    fn skip_to(&self, epoch: Epoch) {
        let mut w = self.window();
        w.records.clear();
        w.floor = w.floor.max(epoch);
        w.epoch = w.epoch.max(epoch);
    }

    /// Ends every watcher (shutdown).
    pub fn close(&self) {
        self.window().closed = true;
        let next = self.window().next_seq;
        self.inner.next_tx.send_replace(next);
    }

    /// Where a watcher starts: after the retained events of epochs up to `after` (refused
    /// if the window no longer reaches back that far), or at the end when `after` is absent.
    pub fn cursor(&self, after: Option<Epoch>) -> Result<Cursor, WatchError> {
        let w = self.window();
        let Some(after) = after else {
            return Ok(Cursor(w.next_seq));
        };
        Self::cursor_after(&w, after)
    }

    /// Where a watcher of everything retained starts: the oldest record.
    pub fn oldest(&self) -> Cursor {
        let w = self.window();
        Cursor(w.records.front().map_or(w.next_seq, |r| r.seq))
    }

    /// The cursor just past the newest record: a watcher that stops when caught up stops
    /// there.
    pub fn end(&self) -> Cursor {
        Cursor(self.window().next_seq)
    }

    fn cursor_after(w: &Window, after: Epoch) -> Result<Cursor, WatchError> {
        if after < w.floor {
            return Err(WatchError::Gone {
                asked: after.0,
                floor: w.floor.0,
            });
        }
        let pos = w.records.partition_point(|r| r.map_epoch <= after);
        Ok(Cursor(w.records.get(pos).map_or(w.next_seq, |r| r.seq)))
    }

    /// The records from `cursor` on (up to `max`), advancing it; empty when there is nothing
    /// new yet.
    pub fn read(&self, cursor: &mut Cursor, max: usize) -> Result<Vec<Record>, WatchError> {
        self.read_until(cursor, max, None)
    }

    /// [`EventLog::read`], stopping before `end` when one is given.
    pub fn read_until(
        &self,
        cursor: &mut Cursor,
        max: usize,
        end: Option<Cursor>,
    ) -> Result<Vec<Record>, WatchError> {
        let w = self.window();
        if w.closed {
            return Err(WatchError::Closed);
        }
        let first = w.records.front().map_or(w.next_seq, |r| r.seq);
        if cursor.0 < first {
            return Err(WatchError::Overrun {
                capacity: self.inner.capacity,
            });
        }
        let skip = usize::try_from(cursor.0 - first).unwrap_or(usize::MAX);
        let out: Vec<Record> = w
            .records
            .iter()
            .skip(skip)
            .take(max)
            .take_while(|r| end.is_none_or(|e| r.seq < e.0))
            .cloned()
            .collect();
        if let Some(last) = out.last() {
            cursor.0 = last.seq + 1;
        }
        Ok(out)
    }

    /// Waits until a record at or after `cursor` exists, or the log closes.
    pub async fn wait(&self, cursor: &Cursor) {
        let mut rx = self.inner.next_tx.subscribe();
        // `wait_for` checks the current value first, so a record pushed between `read` and
        // here is not missed.
        let _ = rx
            .wait_for(|next| *next > cursor.0 || self.window().closed)
            .await;
    }

    /// Feeds the window until `stop`: applied events in log order, and leader changes from
    /// Raft's metrics. Subscribe `applied` before Raft starts applying so replayed entries
    /// are included.
    pub async fn feed(
        &self,
        mut applied: broadcast::Receiver<AppliedEvents>,
        mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, crate::raft::MonitorNode>>,
        now: impl Fn() -> Timestamp,
        current_epoch: impl Fn() -> Epoch,
        stop: CancellationToken,
    ) {
        let mut seen: Option<(Option<NodeId>, u64)> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                got = applied.recv() => match got {
                    Ok(a) => self.record_applied(&a),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(entries = n, "event stream fell behind the state machine; \
                              watchers must resume from the current epoch");
                        self.skip_to(current_epoch());
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                changed = metrics.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let (leader, term) = {
                        let m = metrics.borrow_and_update();
                        (m.current_leader, m.current_term)
                    };
                    if seen != Some((leader, term)) && (leader.is_some() || seen.is_some()) {
                        seen = Some((leader, term));
                        self.record_leader(leader, term, now());
                    }
                }
            }
        }
        self.close();
    }
}

/// The wire form of one record.
pub fn to_wire(record: &Record) -> v1::WatchEventsResponse {
    use v1::watch_events_response::Event as W;
    let gw = |g: &GatewayId| g.as_str().to_owned();
    let (log_index, key, event) = match &record.what {
        Happened::LeaderChanged { leader, term } => (
            0,
            None,
            W::LeaderChanged(v1::LeaderChangedEvent {
                leader_id: leader.unwrap_or(0),
                term: *term,
            }),
        ),
        Happened::Map { index, event } => {
            let wire = match event {
                Event::GatewayCreated {
                    gateway, ana_group, ..
                } => W::GatewayCreated(v1::GatewayCreatedEvent {
                    gateway_id: gw(gateway),
                    ana_group: ana_group.get(),
                }),
                Event::GatewayRemoved { gateway, .. } => {
                    W::GatewayDeleted(v1::GatewayDeletedEvent {
                        gateway_id: gw(gateway),
                    })
                }
                Event::AvailabilityChanged {
                    gateway, from, to, ..
                } => W::GatewayState(v1::GatewayStateEvent {
                    gateway_id: gw(gateway),
                    from: from.as_str().to_owned(),
                    to: to.as_str().to_owned(),
                }),
                Event::ZombieRefused { gateway, .. } => W::ZombieRefused(v1::ZombieRefusedEvent {
                    gateway_id: gw(gateway),
                }),
                Event::Released {
                    gateway, ana_group, ..
                } => W::AnaGroupReleased(v1::AnaGroupReleasedEvent {
                    gateway_id: gw(gateway),
                    ana_group: ana_group.get(),
                }),
                Event::FenceIssued { gateway, epoch, .. } => W::FenceIssued(fence(gateway, *epoch)),
                Event::FenceCompleted { gateway, epoch, .. } => {
                    W::FenceCompleted(fence(gateway, *epoch))
                }
                Event::FenceExpired { gateway, epoch, .. } => {
                    W::FenceExpired(fence(gateway, *epoch))
                }
                Event::FailoverStarted {
                    ana_group,
                    to,
                    fence_epoch,
                    ..
                } => W::FailoverStarted(v1::FailoverStartedEvent {
                    ana_group: ana_group.get(),
                    to: gw(to),
                    fence_epoch: fence_epoch.0,
                }),
                Event::Promoted {
                    ana_group, gateway, ..
                } => W::AnaGroupPromoted(v1::AnaGroupPromotedEvent {
                    ana_group: ana_group.get(),
                    gateway_id: gw(gateway),
                }),
                Event::FailbackStarted {
                    ana_group,
                    from,
                    to,
                    ..
                } => W::FailbackStarted(v1::FailbackStartedEvent {
                    ana_group: ana_group.get(),
                    from: gw(from),
                    to: gw(to),
                }),
                Event::FenceWaitExpired {
                    ana_group, gateway, ..
                } => W::FenceWaitExpired(v1::FenceWaitExpiredEvent {
                    ana_group: ana_group.get(),
                    gateway_id: gw(gateway),
                }),
                Event::DisasterRecovered { location, .. } => {
                    W::DisasterRecovered(v1::DisasterRecoveredEvent {
                        location: location.clone(),
                    })
                }
            };
            (*index, Some(event.key().clone().into()), wire)
        }
    };
    v1::WatchEventsResponse {
        map_epoch: record.map_epoch.0,
        log_index,
        at_ms: record.at.as_millis(),
        key,
        event: Some(event),
    }
}

fn fence(gateway: &GatewayId, epoch: Epoch) -> v1::FenceEvent {
    v1::FenceEvent {
        gateway_id: gateway.as_str().to_owned(),
        fence_epoch: epoch.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gwmon_proto::domain::AnaGroupId;

    fn key() -> GroupKey {
        GroupKey::new("p".parse().expect("pool"), "g".parse().expect("group"))
    }

    fn applied(index: u64, epoch: u64, n: usize) -> AppliedEvents {
        let events: Vec<Event> = (0..n)
            .map(|i| Event::GatewayCreated {
                key: key(),
                gateway: format!("gw{index}-{i}").parse::<GatewayId>().expect("id"),
                ana_group: AnaGroupId::new(1).expect("ana group"),
            })
            .collect();
        AppliedEvents {
            index,
            map_epoch: Epoch(epoch),
            at: Timestamp(index * 10),
            events: events.into(),
        }
    }

    fn epochs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.map_epoch.0).collect()
    }

    #[test]
    fn resume_delivers_exactly_the_later_epochs() {
        let log = EventLog::new(100, Epoch(0));
        log.record_applied(&applied(1, 1, 1));
        log.record_applied(&applied(2, 2, 2));
        log.record_applied(&applied(3, 3, 1));
        let mut c = log.cursor(Some(Epoch(1))).unwrap();
        let got = log.read(&mut c, 10).unwrap();
        assert_eq!(epochs(&got), vec![2, 2, 3]);
        assert!(log.read(&mut c, 10).unwrap().is_empty());
        log.record_applied(&applied(4, 4, 1));
        assert_eq!(epochs(&log.read(&mut c, 10).unwrap()), vec![4]);
        // A live watcher sees only what comes next.
        let mut live = log.cursor(None).unwrap();
        assert!(log.read(&mut live, 10).unwrap().is_empty());
    }

    #[test]
    fn eviction_raises_the_floor_and_refuses_older_resumes() {
        let log = EventLog::new(3, Epoch(0));
        for i in 1..=5 {
            log.record_applied(&applied(i, i, 1));
        }
        // Epochs 1 and 2 were evicted: a resume after 1 would miss epoch 2.
        assert_eq!(
            log.cursor(Some(Epoch(1))),
            Err(WatchError::Gone { asked: 1, floor: 2 })
        );
        let mut c = log.cursor(Some(Epoch(2))).unwrap();
        assert_eq!(epochs(&log.read(&mut c, 10).unwrap()), vec![3, 4, 5]);
    }

    #[test]
    fn a_watcher_overrun_by_the_window_is_told() {
        let log = EventLog::new(2, Epoch(0));
        let mut c = log.cursor(None).unwrap();
        for i in 1..=3 {
            log.record_applied(&applied(i, i, 1));
        }
        assert_eq!(
            log.read(&mut c, 10),
            Err(WatchError::Overrun { capacity: 2 })
        );
    }

    #[test]
    fn leader_changes_carry_the_current_epoch_and_close_ends_watchers() {
        let log = EventLog::new(10, Epoch(7));
        log.record_leader(Some(2), 3, Timestamp(5));
        log.record_applied(&applied(9, 8, 1));
        // Nothing before the floor (the restored map's epoch) can be resumed from.
        assert!(log.cursor(Some(Epoch(6))).is_err());
        let mut c = log.oldest();
        let got = log.read(&mut c, 10).unwrap();
        assert_eq!(epochs(&got), vec![7, 8]);
        assert_eq!(
            got[0].what,
            Happened::LeaderChanged {
                leader: Some(2),
                term: 3
            }
        );
        log.close();
        assert_eq!(log.read(&mut c, 10), Err(WatchError::Closed));
    }

    #[tokio::test]
    async fn wait_returns_once_something_is_recorded() {
        let log = EventLog::new(10, Epoch(0));
        let c = log.cursor(None).unwrap();
        let writer = log.clone();
        let waiter = tokio::spawn(async move { log.wait(&c).await });
        writer.record_applied(&applied(1, 1, 1));
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("wait returned")
            .expect("task");
    }
}
