//! The client's session with the monitors: one task that keeps a stream to the leader,
//! beacons, applies map slices to the target, and enforces the lease.
//!
//! Everything runs in one `select!` loop, so the handler is never called concurrently and
//! the lease is enforced even while the client is reconnecting.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use gwmon_proto::domain::{
    self, AnaAccess, Epoch, GatewayReport, Hello, MapSlice, ReportedAvailability, Subsystem,
};
use gwmon_proto::leader::leader_hint;
use gwmon_proto::v1::{self, gateway_service_client::GatewayServiceClient};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::{ClientConfig, OnMonitorLoss};
use crate::handler::{AnaEntry, AnaHandler, AnaStates, HandlerError};
use crate::ClientError;

/// How long one handler call may take before it counts as failed.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(5);
/// Beacons remembered to match acks to their send times.
const IN_FLIGHT: usize = 256;

/// Why a session ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The monitors ordered the gateway to stop (declared failed, deleted).
    Shutdown(String),
    /// The caller cancelled the session.
    Stopped,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<Connection, (Option<String>, String)>> + Send>>;

struct Connection {
    addr: String,
    tx: mpsc::Sender<v1::GatewayMessage>,
    inbound: Streaming<v1::MonitorMessage>,
}

/// Turn a map slice into the states the target must expose. A failover target whose fence
/// is not yet complete holds the group inaccessible: that is what makes it safe to publish
/// it as optimized before the old owner is fenced.
pub fn slice_states(slice: &MapSlice) -> AnaStates {
    let mut entries = Vec::new();
    for nqn in &slice.nqns {
        for v in &slice.ana_groups {
            let serve = v.access == AnaAccess::Optimized && v.fence_complete;
            entries.push(AnaEntry {
                nqn: nqn.clone(),
                ana_group: v.ana_group,
                access: if serve {
                    AnaAccess::Optimized
                } else {
                    AnaAccess::Inaccessible
                },
                fence_epoch: if serve { v.fence_epoch } else { Epoch::ZERO },
            });
        }
    }
    AnaStates {
        epoch: slice.epoch,
        entries,
    }
}

struct State<H> {
    config: ClientConfig,
    handler: Arc<H>,
    started: Instant,
    seq: u64,
    /// Until a `Starting` beacon is acked, beacons say `Starting`: the monitors then know
    /// this is a new process, whatever the map remembers of the previous one.
    starting: bool,
    first_map: bool,
    slice: Option<MapSlice>,
    applied: Option<AnaStates>,
    applied_epoch: Epoch,
    fence_epoch: Epoch,
    lease_until: Option<Instant>,
    last_contact: Instant,
    target_ok: bool,
    subsystems: Vec<Subsystem>,
    sent: VecDeque<(u64, Instant, bool)>,
    next_monitor: usize,
    leader: Option<String>,
    backoff: Duration,
    /// Whether a session was open before: the next one is a reconnect.
    opened_before: bool,
}

/// Run a gateway's session until the monitors order it to stop, `stop` is cancelled, or a
/// panic timer fires. Every ANA group is made inaccessible before this returns.
pub async fn run<H: AnaHandler>(
    config: ClientConfig,
    handler: Arc<H>,
    stop: CancellationToken,
) -> Result<Exit, ClientError> {
    let now = Instant::now();
    let mut s = State {
        backoff: config.reconnect_min,
        config,
        handler,
        started: now,
        seq: 0,
        starting: true,
        first_map: false,
        slice: None,
        applied: None,
        applied_epoch: Epoch::ZERO,
        fence_epoch: Epoch::ZERO,
        lease_until: None,
        last_contact: now,
        target_ok: true,
        subsystems: Vec::new(),
        sent: VecDeque::new(),
        next_monitor: 0,
        leader: None,
        opened_before: false,
    };
    // Every log line of the session names the gateway and its group.
    let span = info_span!("gwmon_client", pool = %s.config.key.pool, group = %s.config.key.group,
        gateway = %s.config.gateway);
    async move {
        let result = s.run(stop).await;
        s.config.metrics.session_closed();
        s.demote().await;
        if let Err(e) = &result {
            s.shutdown_handler(&e.to_string()).await;
        }
        result
    }
    .instrument(span)
    .await
}

impl<H: AnaHandler> State<H> {
    async fn run(&mut self, stop: CancellationToken) -> Result<Exit, ClientError> {
        let mut conn: Option<Connection> = None;
        let mut connecting: Option<Connecting> = Some(self.connect());
        let mut reconnect_at = Instant::now();
        let mut beacon = tokio::time::interval(self.config.beacon_interval);
        beacon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            let lease_deadline = self.lease_deadline().unwrap_or(far);
            let panic_deadline = self.panic_deadline();
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(Exit::Stopped),
                () = sleep_until(panic_deadline) => return Err(self.panic_reason()),
                () = sleep_until(lease_deadline) => {
                    self.reconcile().await;
                }
                done = async { match connecting.as_mut() { Some(c) => c.await, None => std::future::pending().await } } => {
                    connecting = None;
                    match done {
                        Ok(c) => {
                            info!(monitor = %c.addr, "session open");
                            self.config.metrics.session_opened(!self.opened_before);
                            self.opened_before = true;
                            self.backoff = self.config.reconnect_min;
                            conn = Some(c);
                            beacon.reset_immediately();
                        }
                        Err((hint, why)) => {
                            debug!(error = %why, "cannot open a session");
                            reconnect_at = self.after_failure(hint);
                        }
                    }
                }
                () = sleep_until(reconnect_at), if conn.is_none() && connecting.is_none() => {
                    connecting = Some(self.connect());
                }
                _ = beacon.tick(), if conn.is_some() => {
                    let report = self.beacon().await;
                    let sent = match conn.as_ref() {
                        Some(c) => c.tx.send(v1::GatewayMessage::from(domain::GatewayMessage::Beacon(report))).await.is_ok(),
                        None => false,
                    };
                    if sent {
                        self.config.metrics.beacon_sent();
                    } else {
                        self.config.metrics.session_closed();
                        conn = None;
                        reconnect_at = self.after_failure(None);
                    }
                }
                msg = async { match conn.as_mut() { Some(c) => c.inbound.next().await, None => std::future::pending().await } } => {
                    match msg {
                        Some(Ok(m)) => {
                            if let Some(exit) = self.on_message(m).await {
                                return Ok(exit);
                            }
                        }
                        Some(Err(status)) => {
                            let hint = leader_hint(&status).map(str::to_owned);
                            debug!(code = ?status.code(), message = status.message(), "session ended by the monitor");
                            if status.code() == Code::NotFound {
                                warn!("{}", status.message());
                            }
                            self.config.metrics.session_closed();
                            conn = None;
                            reconnect_at = self.after_failure(hint);
                        }
                        None => {
                            self.config.metrics.session_closed();
                            conn = None;
                            reconnect_at = self.after_failure(None);
                        }
                    }
                }
            }
        }
    }

    /// Open a session with the leader if known, else the next monitor in the list.
    fn connect(&mut self) -> Connecting {
        let addr = self.leader.take().unwrap_or_else(|| {
            let a = self.config.monitors[self.next_monitor % self.config.monitors.len()].clone();
            self.next_monitor += 1;
            a
        });
        let hello = Hello {
            gateway: self.config.gateway.clone(),
            key: self.config.key.clone(),
            software_version: self.config.software_version.clone(),
        };
        let timeout = self.config.connect_timeout;
        Box::pin(async move {
            let uri = if addr.contains("://") {
                addr.clone()
            } else {
                format!("http://{addr}")
            };
            let endpoint = tonic::transport::Endpoint::from_shared(uri)
                .map_err(|e| (None, format!("{addr}: {e}")))?
                .connect_timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true);
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| (None, format!("{addr}: {e}")))?;
            let (tx, rx) = mpsc::channel(16);
            tx.send(domain::GatewayMessage::Hello(hello).into())
                .await
                .map_err(|_| (None, "session closed".to_owned()))?;
            let mut client = GatewayServiceClient::new(channel);
            let opened = tokio::time::timeout(
                timeout * 5,
                client.session(tokio_stream::wrappers::ReceiverStream::new(rx)),
            )
            .await
            .map_err(|_| (None, format!("{addr}: no answer to hello")))?;
            match opened {
                Ok(resp) => Ok(Connection {
                    addr,
                    tx,
                    inbound: resp.into_inner(),
                }),
                Err(status) => Err((
                    leader_hint(&status).map(str::to_owned),
                    format!("{addr}: {}", status.message()),
                )),
            }
        })
    }

    /// When to try again after a failed or lost session: at once toward a named leader,
    /// else after a backoff that doubles, with jitter so gateways do not reconnect in step.
    fn after_failure(&mut self, hint: Option<String>) -> Instant {
        if let Some(leader) = hint {
            self.leader = Some(leader);
            return Instant::now();
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.reconnect_max);
        let jitter = rand::rng().random_range(0.5..1.0);
        Instant::now() + wait.mul_f64(jitter)
    }

    fn panic_deadline(&self) -> Instant {
        if self.first_map {
            self.last_contact + self.config.disconnect_panic
        } else {
            self.started + self.config.connect_panic
        }
    }

    fn panic_reason(&self) -> ClientError {
        if self.first_map {
            ClientError::DisconnectPanic(self.config.disconnect_panic)
        } else {
            ClientError::ConnectPanic(self.config.connect_panic)
        }
    }

    /// Whether the monitors' lease lets this gateway serve optimized paths now.
    fn lease_valid(&self, now: Instant) -> bool {
        self.lease_until.is_some_and(|t| now < t)
    }

    /// When the states applied now must be reconsidered because the lease runs out.
    fn lease_deadline(&self) -> Option<Instant> {
        let serving = self
            .applied
            .as_ref()
            .is_some_and(|a| a.optimized().next().is_some());
        (serving && self.config.on_monitor_loss == OnMonitorLoss::Demote)
            .then_some(self.lease_until)
            .flatten()
    }

    /// What the target should expose now.
    fn desired(&self) -> Option<AnaStates> {
        let slice = self.slice.as_ref()?;
        let states = slice_states(slice);
        let allowed = self.lease_valid(Instant::now())
            || (self.config.on_monitor_loss == OnMonitorLoss::Hold
                && self.applied.as_ref() == Some(&states));
        Some(if allowed {
            states
        } else {
            states.all_inaccessible()
        })
    }

    /// Bring the target to the desired states, with bounded retries.
    async fn reconcile(&mut self) {
        let Some(want) = self.desired() else {
            return;
        };
        if self.applied.as_ref() == Some(&want) {
            return;
        }
        // The lease ran out (whichever check noticed first: its deadline or a beacon) while
        // this gateway served: it stops serving on its own, before the monitors promote
        // anyone else.
        let serving = self
            .applied
            .as_ref()
            .is_some_and(|a| a.optimized().next().is_some());
        let demoting = serving
            && want.optimized().next().is_none()
            && !self.lease_valid(Instant::now())
            && self
                .slice
                .as_ref()
                .is_some_and(|s| slice_states(s).optimized().next().is_some());
        if demoting {
            warn!("no ack from the monitors within the lease: every ANA group goes inaccessible");
        }
        match self.apply(&want).await {
            Ok(()) => {
                if demoting {
                    self.config.metrics.demoted();
                }
                for e in want.optimized() {
                    self.fence_epoch = self.fence_epoch.max(e.fence_epoch);
                }
                self.applied_epoch = want.epoch;
                info!(
                    epoch = %want.epoch,
                    optimized = ?want.optimized().map(|e| e.ana_group.get()).collect::<std::collections::BTreeSet<_>>(),
                    "ANA states applied"
                );
                self.config.metrics.serving(want.optimized().count());
                self.applied = Some(want);
                self.target_ok = true;
            }
            Err(e) => {
                warn!(error = %e, "cannot apply ANA states; reporting the target unavailable");
                self.applied = None;
                self.target_ok = false;
            }
        }
    }

    async fn apply(&self, want: &AnaStates) -> Result<(), HandlerError> {
        let mut wait = self.config.handler_backoff;
        let mut last = None;
        for attempt in 1..=self.config.handler_attempts {
            match tokio::time::timeout(HANDLER_TIMEOUT, self.handler.apply(want)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => {
                    self.config.metrics.handler_error("apply");
                    last = Some(e);
                }
                Err(_) => {
                    self.config.metrics.handler_error("apply");
                    last = Some(HandlerError::Target {
                        target: "handler",
                        op: "apply",
                        message: format!("no answer within {HANDLER_TIMEOUT:?}"),
                    })
                }
            }
            if attempt < self.config.handler_attempts {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
        Err(last.unwrap_or(HandlerError::Target {
            target: "handler",
            op: "apply",
            message: "no attempt made".into(),
        }))
    }

    /// Every ANA group inaccessible, whatever the map says: before exiting.
    async fn demote(&mut self) {
        let Some(applied) = self.applied.clone() else {
            return;
        };
        let down = applied.all_inaccessible();
        if down != applied && self.apply(&down).await.is_ok() {
            self.applied = Some(down);
        }
    }

    async fn shutdown_handler(&self, reason: &str) {
        // The handler's shutdown cannot fail; it can only hang.
        if tokio::time::timeout(HANDLER_TIMEOUT, self.handler.shutdown(reason))
            .await
            .is_err()
        {
            self.config.metrics.handler_error("shutdown");
            warn!("the target did not shut down in time");
        }
    }

    async fn beacon(&mut self) -> GatewayReport {
        // A state change that failed to apply earlier is retried at every beacon.
        self.reconcile().await;
        match tokio::time::timeout(HANDLER_TIMEOUT, self.handler.subsystems()).await {
            Ok(Ok(mut subs)) => {
                for s in &mut subs {
                    s.canonicalize();
                }
                subs.sort_by(|a, b| a.nqn.cmp(&b.nqn));
                self.subsystems = subs;
                if self.applied.is_some() || self.slice.is_none() {
                    self.target_ok = true;
                }
            }
            Ok(Err(e)) => {
                self.config.metrics.handler_error("subsystems");
                warn!(error = %e, "cannot read the target's subsystems");
                self.target_ok = false;
            }
            Err(_) => {
                self.config.metrics.handler_error("subsystems");
                warn!("the target did not list its subsystems in time");
                self.target_ok = false;
            }
        }
        let availability = if self.starting {
            ReportedAvailability::Starting
        } else if self.target_ok {
            ReportedAvailability::Available
        } else {
            ReportedAvailability::Unavailable
        };
        let seq = self.seq;
        self.seq += 1;
        self.sent.push_back((
            seq,
            Instant::now(),
            availability == ReportedAvailability::Starting,
        ));
        while self.sent.len() > IN_FLIGHT {
            self.sent.pop_front();
        }
        GatewayReport {
            seq,
            availability,
            subsystems: self.subsystems.clone(),
            applied_epoch: self.applied_epoch,
            fence_epoch: self.fence_epoch,
        }
    }

    async fn on_message(&mut self, msg: v1::MonitorMessage) -> Option<Exit> {
        let msg = match domain::MonitorMessage::try_from(msg) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "malformed message from the monitor ignored");
                return None;
            }
        };
        match msg {
            domain::MonitorMessage::Ack(ack) => {
                let now = Instant::now();
                self.last_contact = now;
                if let Some(&(_, sent_at, was_starting)) =
                    self.sent.iter().find(|(seq, _, _)| *seq == ack.seq)
                {
                    // The lease counts from when the acked beacon left, not from when the
                    // ack arrived: the monitor's grace started no earlier than that.
                    let until = sent_at + ack.lease;
                    self.lease_until = Some(self.lease_until.map_or(until, |t| t.max(until)));
                    self.config.metrics.ack(now, self.lease_until);
                    if was_starting {
                        self.starting = false;
                    }
                }
                self.reconcile().await;
                None
            }
            domain::MonitorMessage::MapSlice(slice) => {
                self.config.metrics.slice();
                self.last_contact = Instant::now();
                self.first_map = true;
                self.slice = Some(slice);
                self.reconcile().await;
                None
            }
            domain::MonitorMessage::Shutdown { reason } => {
                info!(%reason, "the monitors ordered this gateway to stop");
                self.demote().await;
                self.shutdown_handler(&reason).await;
                Some(Exit::Shutdown(reason))
            }
        }
    }
}
