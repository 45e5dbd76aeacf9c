//! The `WatchEvents` collector: every map event a monitor applies, with the leader's commit
//! time (`at_ms`), kept in memory for the scenarios to read failover phases from.
//!
//! The stream is read from any monitor (each applies the same log); when it breaks, the
//! collector resumes at another monitor after the last epoch it saw.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gwmon_proto::v1::{self, watch_events_response::Event as WireEvent};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::admin::Admin;
use crate::error::{BenchError, Result};

/// What happened, reduced to what the scenarios read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    FailoverStarted {
        ana: u32,
        to: String,
        fence_epoch: u64,
    },
    FenceIssued {
        gateway: String,
        fence_epoch: u64,
    },
    FenceCompleted {
        gateway: String,
        fence_epoch: u64,
    },
    Promoted {
        ana: u32,
        gateway: String,
    },
    GatewayCreated {
        gateway: String,
        ana: u32,
    },
    GatewayDeleted {
        gateway: String,
    },
    GatewayState {
        gateway: String,
        to: String,
    },
    Other,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub map_epoch: u64,
    /// The proposing leader's clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub pool: String,
    pub group: String,
    pub kind: Kind,
}

impl Event {
    fn from_wire(e: v1::WatchEventsResponse) -> Event {
        let (pool, group) = e.key.map(|k| (k.pool, k.group)).unwrap_or_default();
        let kind = match e.event {
            Some(WireEvent::FailoverStarted(f)) => Kind::FailoverStarted {
                ana: f.ana_group,
                to: f.to,
                fence_epoch: f.fence_epoch,
            },
            Some(WireEvent::FenceIssued(f)) => Kind::FenceIssued {
                gateway: f.gateway_id,
                fence_epoch: f.fence_epoch,
            },
            Some(WireEvent::FenceCompleted(f)) => Kind::FenceCompleted {
                gateway: f.gateway_id,
                fence_epoch: f.fence_epoch,
            },
            Some(WireEvent::AnaGroupPromoted(p)) => Kind::Promoted {
                ana: p.ana_group,
                gateway: p.gateway_id,
            },
            Some(WireEvent::GatewayCreated(c)) => Kind::GatewayCreated {
                gateway: c.gateway_id,
                ana: c.ana_group,
            },
            Some(WireEvent::GatewayDeleted(d)) => Kind::GatewayDeleted {
                gateway: d.gateway_id,
            },
            Some(WireEvent::GatewayState(s)) => Kind::GatewayState {
                gateway: s.gateway_id,
                to: s.to,
            },
            _ => Kind::Other,
        };
        Event {
            map_epoch: e.map_epoch,
            at_ms: e.at_ms,
            pool,
            group,
            kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchState {
    Connecting,
    Running,
    /// The monitors do not serve `WatchEvents`: phases that need events are reported n/a.
    Unimplemented,
}

pub struct Watcher {
    events: Arc<Mutex<Vec<Event>>>,
    state: Arc<Mutex<WatchState>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Subscribe (from the next event on) and keep collecting until dropped.
    pub fn start(admin: Admin, addrs: Vec<String>) -> Watcher {
        let events = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(WatchState::Connecting));
        let stop = CancellationToken::new();
        let task = tokio::spawn(collect(
            admin,
            addrs,
            events.clone(),
            state.clone(),
            stop.clone(),
        ));
        Watcher {
            events,
            state,
            stop,
            task,
        }
    }

    pub fn state(&self) -> WatchState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Wait until the stream is open (or known to be unavailable).
    pub async fn ready(&self, within: Duration) -> Result<WatchState> {
        let end = Instant::now() + within;
        loop {
            let s = self.state();
            if s != WatchState::Connecting {
                return Ok(s);
            }
            if Instant::now() >= end {
                return Err(BenchError::timeout("the WatchEvents stream", within));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The first event (in commit order) that `pred` accepts.
    pub fn find(&self, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|e| pred(e))
            .cloned()
    }

    /// Every event `pred` accepts.
    pub fn all(&self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| pred(e))
            .cloned()
            .collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

async fn collect(
    admin: Admin,
    addrs: Vec<String>,
    events: Arc<Mutex<Vec<Event>>>,
    state: Arc<Mutex<WatchState>>,
    stop: CancellationToken,
) {
    let set_state = |s: WatchState| {
        *state.lock().unwrap_or_else(PoisonError::into_inner) = s;
    };
    let mut after: Option<u64> = None;
    let mut next = 0usize;
    loop {
        if stop.is_cancelled() || addrs.is_empty() {
            return;
        }
        let addr = &addrs[next % addrs.len()];
        next += 1;
        let Ok(mut client) = admin.client_at(addr) else {
            continue;
        };
        let req = v1::WatchEventsRequest {
            after_epoch: after,
            from_oldest: false,
            stop_when_caught_up: false,
        };
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            r = client.watch_events(req) => r,
        };
        let mut stream = match opened {
            Ok(resp) => resp.into_inner(),
            Err(status) if status.code() == Code::Unimplemented => {
                set_state(WatchState::Unimplemented);
                return;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        set_state(WatchState::Running);
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(e)) => {
                    if e.log_index != 0 {
                        after = Some(after.map_or(e.map_epoch, |a| a.max(e.map_epoch)));
                    }
                    events
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Event::from_wire(e));
                }
                Ok(None) | Err(_) => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
