//! The client's session with the monitors: a stream to the leader, beacons, map slices, and
//! the lease; and, on a task of its own, the target.
//!
//! The session loop never waits for the target: it sends *orders* to the target task
//! ([`Order`]: apply these states, or make everything inaccessible) through a channel that
//! keeps only the latest one, and hears back when one is done. So a target call that hangs
//! cannot hold up beacons or the lease deadline, a demotion can never queue behind older
//! work (it replaces whatever was pending, and an apply still retrying gives up at once),
//! and the target still sees one call at a time, in order.
//!
//! Safety rests on one flag, `may_serve`: whether the target may expose an optimized path.
//! It becomes true when an order with an optimized group is *sent* (a call that failed or
//! timed out may still have taken effect), and false only when a later order that serves
//! nothing is *done*. While it is true and the lease runs out, the gateway demotes; it starts
//! true, so a process that starts over a target left optimized by a crashed predecessor
//! makes it inaccessible before its first beacon.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use gwmon_proto::domain::{
    self, AnaAccess, Epoch, GatewayReport, Hello, MapSlice, ReportedAvailability, ShutdownKind,
    Subsystem,
};
use gwmon_proto::leader::leader_hint;
use gwmon_proto::mutation::{self, Mutation};
use gwmon_proto::tls::Tls;
use gwmon_proto::v1::{self, gateway_service_client::GatewayServiceClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::config::{ClientConfig, OnDelete, OnMonitorLoss};
use crate::handler::{AnaEntry, AnaHandler, AnaStates, HandlerError};
use crate::metrics::ClientMetrics;
use crate::ClientError;

/// Beacons remembered to match acks to their send times.
const IN_FLIGHT: usize = 256;
/// The longest wait between two attempts at a demotion that keeps failing: a demotion is
/// never given up on.
const DEMOTE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// How long a monitor just lost is skipped and not followed (see `Session::lost`): longer
/// than the monitors' longest election timeout (600 ms by default) plus a heartbeat, so
/// that the hints of followers who still name it come from followers that hear it, and
/// short enough that a gateway goes back to a leader restarted at once while the lease it
/// granted lasts (2 s with the default grace). Half the grace when that is shorter.
const LOST_FOR: Duration = Duration::from_secs(1);

/// How often a gateway that the monitors do not know (yet) says so in its log.
const NOT_IN_MAP_LOG: Duration = Duration::from_secs(10);

/// Why a session ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The monitors ordered the gateway to stop (deleted, removed from the map).
    Shutdown(String),
    /// The caller cancelled the session.
    Stopped,
}

type Connecting = Pin<Box<dyn Future<Output = Result<Connection, Refusal>> + Send>>;

/// Why a session could not be opened.
struct Refusal {
    /// The monitor that refused, or could not be reached.
    addr: String,
    leader: Option<String>,
    code: Option<Code>,
    why: String,
}

impl Refusal {
    fn transport(addr: &str, why: String) -> Self {
        Refusal {
            addr: addr.to_owned(),
            leader: None,
            code: None,
            why,
        }
    }
}

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
            let serve = v.access == AnaAccess::Optimized
                && (v.fence_complete || mutation::active(Mutation::PromoteBeforeFence));
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
        placements: slice.placements.clone(),
    }
}

/// What the target task is told to do. Only the latest order counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Apply(AnaStates),
    /// Every ANA group inaccessible, retried until it succeeds or a newer order comes.
    DemoteAll,
}

impl Action {
    fn serves(&self) -> bool {
        matches!(self, Action::Apply(s) if s.optimized().next().is_some())
    }
}

#[derive(Debug, Clone)]
struct Order {
    seq: u64,
    action: Action,
}

/// What the target task reports.
enum Report {
    Done {
        seq: u64,
        result: Result<(), HandlerError>,
    },
    Subsystems(Result<Vec<Subsystem>, HandlerError>),
}

/// Every ANA group of every subsystem the target task told the target about, with the
/// latest state it was told: what a demotion must cover, since a target may expose groups
/// that hold none of its namespaces.
#[derive(Default)]
struct Told(std::collections::BTreeMap<(domain::Nqn, domain::AnaGroupId), AnaEntry>);

impl Told {
    fn remember(&mut self, states: &AnaStates) {
        for e in &states.entries {
            self.0.insert((e.nqn.clone(), e.ana_group), e.clone());
        }
    }

    fn states(&self) -> AnaStates {
        AnaStates {
            entries: self.0.values().cloned().collect(),
            ..AnaStates::default()
        }
    }
}

/// The target task's settings.
#[derive(Clone)]
struct TargetSettings {
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
    metrics: ClientMetrics,
}

/// The target task: runs orders one call at a time, and lists subsystems when asked and
/// no order is pending. Ends when the session drops its channels.
async fn target_task<H: AnaHandler>(
    handler: Arc<H>,
    mut orders: watch::Receiver<Option<Order>>,
    mut listings: watch::Receiver<u64>,
    reports: mpsc::Sender<Report>,
    settings: TargetSettings,
) {
    let mut pending: Option<Order> = None;
    let mut told = Told::default();
    loop {
        if pending.is_none() {
            tokio::select! {
                biased;
                changed = orders.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending = orders.borrow_and_update().clone();
                }
                changed = listings.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    listings.borrow_and_update();
                    let listed = call(&settings, "subsystems", handler.subsystems()).await;
                    if reports.send(Report::Subsystems(listed)).await.is_err() {
                        return;
                    }
                }
            }
            continue;
        }
        let Some(order) = pending.take() else {
            continue;
        };
        if let Action::Apply(states) = &order.action {
            // Before the call: one that fails or times out may still have taken effect.
            told.remember(states);
        }
        let mut wait = settings.backoff;
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            let outcome = match &order.action {
                Action::Apply(states) => call(&settings, "apply", handler.apply(states)).await,
                Action::DemoteAll => {
                    call(&settings, "demote", handler.demote_all(&told.states())).await
                }
            };
            let e = match outcome {
                Ok(()) => break Ok(()),
                Err(e) => e,
            };
            let demoting = order.action == Action::DemoteAll;
            if !demoting && attempt >= settings.attempts {
                break Err(e);
            }
            if demoting {
                error!(error = %e, attempt, "cannot make the target inaccessible; retrying");
            } else {
                debug!(error = %e, attempt, "handler call failed; retrying");
            }
            // A newer order ends the wait and this order: it is what counts now.
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = orders.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending = orders.borrow_and_update().clone();
                    break Err(e);
                }
            }
            let cap = if demoting {
                DEMOTE_BACKOFF_MAX
            } else {
                Duration::from_secs(2)
            };
            wait = (wait * 2).min(cap);
        };
        if reports
            .send(Report::Done {
                seq: order.seq,
                result,
            })
            .await
            .is_err()
        {
            return;
        }
        // An order that came in while this one ran is next.
        if pending.is_none() && orders.has_changed().unwrap_or(false) {
            pending = orders.borrow_and_update().clone();
        }
    }
}

/// One handler call within the timeout; a timeout is a failed call.
async fn call<T>(
    settings: &TargetSettings,
    op: &'static str,
    fut: impl Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    let result = match tokio::time::timeout(settings.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(HandlerError::Target {
            target: "handler",
            op,
            message: format!("no answer within {} ms", settings.timeout.as_millis()),
        }),
    };
    if result.is_err() {
        settings.metrics.handler_error(op);
    }
    result
}

struct State<H> {
    config: ClientConfig,
    handler: Arc<H>,
    started: Instant,
    /// This process's incarnation; drawn again when it rejoins after being declared failed.
    incarnation: u64,
    rng: StdRng,
    dialer: Arc<dyn Dialer>,
    /// Rejoins since the monitors last acked a beacon.
    rejoins: u32,
    seq: u64,
    /// Until a `Starting` beacon is acked, beacons say `Starting`: the monitors then know
    /// this is a new process, whatever the map remembers of the previous one.
    starting: bool,
    first_map: bool,
    slice: Option<MapSlice>,
    /// What the target last confirmed it applied (for the epochs beacons echo).
    applied: Option<AnaStates>,
    applied_epoch: Epoch,
    fence_epoch: Epoch,
    /// Whether the target may expose an optimized path (see the module docs).
    may_serve: bool,
    lease_until: Option<Instant>,
    /// Sessions opened so far; the current one is the latest.
    sessions: u64,
    /// The session whose ack granted the lease, and the one the slice came from. A lease
    /// vouches for the map of the monitor that granted it: a slice from another session
    /// (another monitor, perhaps a deposed leader with an old map) may take ANA groups away
    /// under it, but gives none until its own session acks.
    lease_session: u64,
    slice_session: u64,
    last_contact: Instant,
    target_ok: bool,
    subsystems: Vec<Subsystem>,
    /// The session whose monitor said (in an ack) that it takes beacons without an
    /// unchanged subsystem list, and the session and list of the last beacon that carried
    /// one: a beacon leaves the list out only when both are the current session's and the
    /// list is the same.
    unchanged_accepted: Option<u64>,
    listed: Option<(u64, Vec<Subsystem>)>,
    sent: VecDeque<(u64, Instant, bool)>,
    next_monitor: usize,
    /// Monitors still to try in this round, each right after the last: a round tries every
    /// monitor before the backoff grows, so a gateway finds the leader (which may be the
    /// last of the list, with the others unable to name it) well within the grace.
    round_left: usize,
    leader: Option<String>,
    /// Monitors whose session just broke, went silent, or that could not be reached (not
    /// those that answered with a refusal: they are alive), each until when: skipped, and
    /// not followed when another monitor names one leader, until a session opens. A
    /// follower names the leader it last heard from, which after a crash or a pause of that
    /// leader is the one monitor that cannot answer; a paused one would even hold a new
    /// session's hello unanswered. Forgotten after [`LOST_FOR`] (or half the grace, if
    /// shorter): by then an election is over, so a follower still naming the monitor hears
    /// from it again (a leader restarted at once takes its office back in the same term),
    /// and a leader that was only slow is followed again, both inside the lease.
    lost: Vec<(String, Instant)>,
    /// A new map was applied: beacon now, so the monitors learn it without waiting for
    /// the next interval (the beacon rate limit leaves room for it).
    beacon_now: bool,
    /// Beacon as soon as the target's next listing is in: it applied namespace placements,
    /// and the monitors move a namespace on once a beacon shows it where it was placed.
    beacon_on_listing: bool,
    /// When the current session last acked a beacon (or opened): a leader that stops
    /// acking (paused, stuck) is left for the others before the lease runs out.
    last_ack: Instant,
    backoff: Duration,
    /// Whether a session was open before: the next one is a reconnect.
    opened_before: bool,
    orders: watch::Sender<Option<Order>>,
    listings: watch::Sender<u64>,
    reports: mpsc::Receiver<Report>,
    order_seq: u64,
    /// The latest order sent to the target.
    ordered: Option<Order>,
    /// Whether the latest order is done (successfully).
    ordered_done: bool,
    /// When a monitor last answered that this gateway is not in the map (never created, or
    /// deleted): the monitors are there, so the panic timers wait while they keep saying so.
    not_in_map_at: Option<Instant>,
    /// When that was last logged: once every [`NOT_IN_MAP_LOG`], not at every attempt.
    not_in_map_logged: Option<Instant>,
}

/// A future that opens a gRPC channel to one monitor.
pub type DialFuture = Pin<Box<dyn Future<Output = Result<Channel, String>> + Send>>;

/// Opens channels to monitors. The default dials TCP; a test or a simulation swaps in its own
/// transport (an in-memory pipe, a simulated network).
pub trait Dialer: Send + Sync + 'static {
    /// A channel to `addr` (`host:port` or a URI), connected within `timeout`. The error is
    /// one line for a log.
    fn dial(&self, addr: &str, timeout: Duration) -> DialFuture;
}

/// Dials monitors over TCP, with HTTP/2 keepalives that notice a dead peer in seconds, and
/// mutual TLS when it has a certificate.
#[derive(Debug, Default, Clone)]
pub struct TcpDialer {
    tls: Option<Tls>,
}

impl TcpDialer {
    pub fn new(tls: Option<Tls>) -> Self {
        TcpDialer { tls }
    }
}

impl Dialer for TcpDialer {
    fn dial(&self, addr: &str, timeout: Duration) -> DialFuture {
        let addr = addr.to_owned();
        if let Some(tls) = &self.tls {
            take_new_tls_files(tls);
        }
        let endpoint = gwmon_proto::tls::endpoint(&addr, self.tls.as_ref());
        Box::pin(async move {
            let endpoint = endpoint
                .map_err(|e| format!("{addr}: {e}"))?
                .connect_timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true);
            endpoint.connect().await.map_err(|e| format!("{addr}: {e}"))
        })
    }
}

/// Certificates are rotated by replacing the files: the next connection takes them, with no
/// restart and no signal. Files that cannot be used (half written, a key that is not the
/// certificate's) leave the previous ones in use, with a warning at each connection.
pub(crate) fn take_new_tls_files(tls: &Tls) {
    match tls.reload_if_changed() {
        Ok(true) => info!(files = ?tls.files(), "TLS files changed: new connections use them"),
        Ok(false) => {}
        Err(e) => {
            warn!(error = %e, "TLS files changed but cannot be used; connecting with the previous ones")
        }
    }
}

/// What a session runs on besides its configuration: how it reaches monitors and where its
/// randomness comes from. [`run`] uses the defaults; a simulation injects both, so one seed
/// replays one run.
#[derive(Clone)]
pub struct Plumbing {
    pub dialer: Arc<dyn Dialer>,
    /// Seeds the session's randomness (its incarnation, reconnect jitter). `None`: from the
    /// operating system, as a real gateway must, so two processes never share an incarnation.
    pub seed: Option<u64>,
}

impl Default for Plumbing {
    fn default() -> Self {
        Plumbing {
            dialer: Arc::new(TcpDialer::default()),
            seed: None,
        }
    }
}

/// Run a gateway's session until the monitors order it to stop, `stop` is cancelled, or a
/// panic timer fires. Every ANA group is made inaccessible before this returns.
pub async fn run<H: AnaHandler>(
    config: ClientConfig,
    handler: Arc<H>,
    stop: CancellationToken,
) -> Result<Exit, ClientError> {
    let plumbing = Plumbing {
        dialer: Arc::new(TcpDialer::new(config.tls.clone())),
        ..Plumbing::default()
    };
    run_with(config, handler, stop, plumbing).await
}

/// [`run`] over the given [`Plumbing`].
pub async fn run_with<H: AnaHandler>(
    config: ClientConfig,
    handler: Arc<H>,
    stop: CancellationToken,
    plumbing: Plumbing,
) -> Result<Exit, ClientError> {
    let now = Instant::now();
    let mut rng = match plumbing.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    };
    let incarnation = rng.random_range(1..=u64::MAX);
    let (orders, orders_rx) = watch::channel(None);
    let (listings, listings_rx) = watch::channel(0);
    let (reports_tx, reports) = mpsc::channel(16);
    let settings = TargetSettings {
        timeout: config.handler_timeout,
        attempts: config.handler_attempts,
        backoff: config.handler_backoff,
        metrics: config.metrics.clone(),
    };
    let target = tokio::spawn(
        target_task(
            handler.clone(),
            orders_rx,
            listings_rx,
            reports_tx,
            settings,
        )
        .instrument(tracing::Span::current()),
    );
    let round_left = config.monitors.len().saturating_sub(1);
    let mut s = State {
        backoff: config.reconnect_min,
        config,
        handler,
        started: now,
        incarnation,
        rng,
        dialer: plumbing.dialer,
        rejoins: 0,
        seq: 0,
        starting: true,
        first_map: false,
        slice: None,
        applied: None,
        applied_epoch: Epoch::ZERO,
        fence_epoch: Epoch::ZERO,
        may_serve: true,
        lease_until: None,
        sessions: 0,
        lease_session: 0,
        slice_session: 0,
        last_contact: now,
        target_ok: true,
        subsystems: Vec::new(),
        unchanged_accepted: None,
        listed: None,
        sent: VecDeque::new(),
        next_monitor: 0,
        round_left,
        leader: None,
        lost: Vec::new(),
        beacon_now: false,
        beacon_on_listing: false,
        last_ack: now,
        opened_before: false,
        orders,
        listings,
        reports,
        order_seq: 0,
        ordered: None,
        ordered_done: false,
        not_in_map_at: None,
        not_in_map_logged: None,
    };
    // Every log line of the session names the gateway and its group.
    let span = info_span!("gwmon_client", pool = %s.config.key.pool, group = %s.config.key.group,
        gateway = %s.config.gateway);
    let result = async {
        let result = s.run(stop).await;
        s.config.metrics.session_closed();
        s.demote_and_wait().await;
        let reason = match &result {
            Ok(Exit::Shutdown(reason)) => Some(reason.clone()),
            Ok(Exit::Stopped) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(reason) = reason {
            s.shutdown_handler(&reason).await;
        }
        result
    }
    .instrument(span)
    .await;
    drop(s);
    let _ = target.await;
    result
}

impl<H: AnaHandler> State<H> {
    async fn run(&mut self, stop: CancellationToken) -> Result<Exit, ClientError> {
        // Before anything else: a crashed predecessor may have left groups optimized.
        self.order(Action::DemoteAll);
        self.listings.send_modify(|n| *n += 1);
        let mut conn: Option<Connection> = None;
        let mut connecting: Option<Connecting> = Some(self.connect());
        let mut reconnect_at = Instant::now();
        let mut beacon = tokio::time::interval(self.config.beacon_interval);
        beacon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The lease arm below waits only for a deadline still ahead. A lease that ran
            // out while the loop was busy with another arm (a refused reconnection a moment
            // before the deadline) is acted on here, or the gateway would go on serving.
            if self.may_serve && self.lease_until.is_some_and(|t| t <= Instant::now()) {
                self.reconcile();
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let lease_deadline = self.lease_deadline().unwrap_or(far);
            let panic_deadline = self.panic_deadline();
            let ack_overdue = self.ack_overdue();
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(Exit::Stopped),
                () = sleep_until(panic_deadline) => return Err(self.panic_reason()),
                () = sleep_until(lease_deadline) => self.reconcile(),
                report = self.reports.recv() => match report {
                    Some(r) => self.on_report(r),
                    None => return Err(ClientError::Config("the target task ended".into())),
                },
                done = async { match connecting.as_mut() { Some(c) => c.await, None => std::future::pending().await } } => {
                    connecting = None;
                    match self.opened(done) {
                        Ok(c) => {
                            conn = Some(c);
                            beacon.reset_immediately();
                        }
                        Err(at) => reconnect_at = at,
                    }
                }
                () = sleep_until(reconnect_at), if conn.is_none() && connecting.is_none() => {
                    connecting = Some(self.connect());
                }
                () = sleep_until(ack_overdue), if conn.is_some() => {
                    // Beacons go out and nothing comes back: the leader is paused, stuck or
                    // deposed without knowing it. The others have elected a new one by now,
                    // or will soon; waiting here would only let the lease run out.
                    if let Some(c) = conn.take() {
                        warn!(monitor = %c.addr, "no ack from the monitor for two beacon intervals: trying the others");
                        self.mark_lost(c.addr);
                    }
                    self.config.metrics.session_closed();
                    reconnect_at = self.after_failure(None);
                }
                _ = beacon.tick(), if conn.is_some() => {
                    let msg = self.beacon();
                    let sent = match conn.as_ref() {
                        Some(c) => c.tx.send(msg).await.is_ok(),
                        None => false,
                    };
                    if sent {
                        self.config.metrics.beacon_sent();
                    } else {
                        self.config.metrics.session_closed();
                        if let Some(c) = conn.take() {
                            self.mark_lost(c.addr);
                        }
                        reconnect_at = self.after_failure(None);
                    }
                }
                msg = async { match conn.as_mut() { Some(c) => c.inbound.next().await, None => std::future::pending().await } } => {
                    match msg {
                        Some(Ok(m)) => match self.on_message(m) {
                            Next::Continue => {}
                            Next::Exit(exit) => return Ok(exit),
                            Next::Rejoin => {
                                self.config.metrics.session_closed();
                                conn = None;
                                reconnect_at = Instant::now() + self.rejoin_wait();
                            }
                        },
                        Some(Err(status)) => reconnect_at = self.ended(&mut conn, Some(&status)),
                        None => reconnect_at = self.ended(&mut conn, None),
                    }
                }
            }
            if std::mem::take(&mut self.beacon_now) && conn.is_some() {
                beacon.reset_immediately();
            }
        }
    }

    /// A session attempt ended: the session, or when to try again.
    fn opened(&mut self, done: Result<Connection, Refusal>) -> Result<Connection, Instant> {
        match done {
            Ok(c) => {
                info!(monitor = %c.addr, "session open");
                self.not_in_map_logged = None;
                self.lost.clear();
                self.last_ack = Instant::now();
                self.sessions += 1;
                self.config.metrics.session_opened(!self.opened_before);
                self.opened_before = true;
                self.backoff = self.config.reconnect_min;
                self.round_left = self.config.monitors.len().saturating_sub(1);
                Ok(c)
            }
            Err(refusal) => {
                if refusal.code == Some(Code::AlreadyExists) {
                    warn!("{}", refusal.why);
                } else if matches!(
                    refusal.code,
                    Some(Code::NotFound | Code::FailedPrecondition)
                ) {
                    self.not_in_map(&refusal.why);
                } else {
                    debug!(error = %refusal.why, "cannot open a session");
                }
                if refusal.code.is_none() {
                    self.mark_lost(refusal.addr.clone());
                }
                Err(self.after_failure(refusal.leader))
            }
        }
    }

    /// The open session ended, by the monitor's `status` or by its stream closing: when
    /// to try again. A monitor that named the leader is not marked lost.
    fn ended(&mut self, conn: &mut Option<Connection>, status: Option<&Status>) -> Instant {
        let hint = status.and_then(leader_hint).map(str::to_owned);
        if let Some(status) = status {
            debug!(code = ?status.code(), message = status.message(), "session ended by the monitor");
            if matches!(
                status.code(),
                Code::NotFound | Code::AlreadyExists | Code::InvalidArgument
            ) {
                warn!("{}", status.message());
            }
        }
        self.config.metrics.session_closed();
        if let Some(c) = conn.take().filter(|_| hint.is_none()) {
            self.mark_lost(c.addr);
        }
        self.after_failure(hint)
    }

    /// Open a session with the leader if known, else the next monitor in the list.
    fn connect(&mut self) -> Connecting {
        let addr = self.leader.take().unwrap_or_else(|| {
            let n = self.config.monitors.len();
            let mut a = self.config.monitors[self.next_monitor % n].clone();
            self.next_monitor += 1;
            // Skip the lost ones, unless every monitor is lost.
            for _ in 1..n {
                if !self.is_lost(&a) {
                    break;
                }
                a = self.config.monitors[self.next_monitor % n].clone();
                self.next_monitor += 1;
            }
            a
        });
        let hello = Hello {
            gateway: self.config.gateway.clone(),
            key: self.config.key.clone(),
            software_version: self.config.software_version.clone(),
            incarnation: self.incarnation,
        };
        let timeout = self.config.connect_timeout;
        let dial = self.dialer.dial(&addr, timeout);
        Box::pin(async move {
            let channel = tokio::time::timeout(timeout, dial)
                .await
                .map_err(|_| Refusal::transport(&addr, format!("{addr}: connect timed out")))?
                .map_err(|e| Refusal::transport(&addr, e))?;
            let (tx, rx) = mpsc::channel(16);
            tx.send(domain::GatewayMessage::Hello(hello).into())
                .await
                .map_err(|_| Refusal::transport(&addr, "session closed".to_owned()))?;
            let mut client = GatewayServiceClient::new(channel);
            // A monitor that accepted the connection but does not answer the hello (paused,
            // stuck) is given up on soon: the lease may be running out meanwhile.
            let opened = tokio::time::timeout(
                timeout * 2,
                client.session(tokio_stream::wrappers::ReceiverStream::new(rx)),
            )
            .await
            .map_err(|_| Refusal::transport(&addr, format!("{addr}: no answer to hello")))?;
            match opened {
                Ok(resp) => Ok(Connection {
                    addr,
                    tx,
                    inbound: resp.into_inner(),
                }),
                Err(status) => Err(Refusal {
                    addr: addr.clone(),
                    leader: leader_hint(&status).map(str::to_owned),
                    code: Some(status.code()),
                    why: format!("{addr}: {}", status.message()),
                }),
            }
        })
    }

    /// When to try again after a failed or lost session: at once toward a named leader;
    /// else the next monitor of this round after `reconnect_min`; else, the round over,
    /// after a backoff that doubles. With jitter, so gateways do not reconnect in step.
    fn after_failure(&mut self, hint: Option<String>) -> Instant {
        // A hint naming the monitor just lost is the follower's memory of a leader that is
        // gone or paused: ask the next monitor instead, which knows the new one soon.
        if let Some(leader) = hint.filter(|h| !self.is_lost(h)) {
            self.leader = Some(leader);
            return Instant::now();
        }
        let jitter = self.rng.random_range(0.5..1.0);
        if self.round_left > 0 {
            self.round_left -= 1;
            return Instant::now() + self.config.reconnect_min.mul_f64(jitter);
        }
        self.round_left = self.config.monitors.len().saturating_sub(1);
        // While the lease lasts the target may be serving, and an election is under way:
        // keep asking at the shortest interval, so the new leader's first ack comes before
        // the lease runs out. The backoff grows only once there is nothing left to lose.
        if self.lease_valid(Instant::now()) {
            return Instant::now() + self.config.reconnect_min.mul_f64(jitter);
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.reconnect_max);
        Instant::now() + wait.mul_f64(jitter)
    }

    fn mark_lost(&mut self, addr: String) {
        let now = Instant::now();
        self.lost.retain(|(a, until)| *a != addr && now < *until);
        self.lost
            .push((addr, now + LOST_FOR.min(self.config.beacon_grace / 2)));
    }

    fn is_lost(&self, addr: &str) -> bool {
        let now = Instant::now();
        self.lost.iter().any(|(a, until)| a == addr && now < *until)
    }

    /// When the open session counts as stuck: two beacon intervals without an ack.
    fn ack_overdue(&self) -> Instant {
        self.last_ack + self.config.beacon_interval.saturating_mul(2)
    }

    /// How long to wait before rejoining after being declared failed: nothing the first
    /// time, then doubling up to `reconnect_max` while the monitors keep declaring this
    /// gateway failed before acking it once (its fence, say, is still pending), so a
    /// refused rejoin does not become a loop of sessions.
    fn rejoin_wait(&mut self) -> Duration {
        let n = self.rejoins;
        self.rejoins = self.rejoins.saturating_add(1);
        if n == 0 {
            return Duration::ZERO;
        }
        let wait = self
            .config
            .reconnect_min
            .saturating_mul(1u32 << n.min(16))
            .min(self.config.reconnect_max);
        wait.mul_f64(self.rng.random_range(0.5..1.0))
    }

    fn panic_deadline(&self) -> Instant {
        let deadline = if self.first_map {
            self.last_contact + self.config.disconnect_panic
        } else {
            self.started + self.config.connect_panic
        };
        // A gateway the monitors do not know yet (started before `nvme-gw create`, or
        // deleted and waiting to be created again) waits as long as they keep answering:
        // the panic is for monitors that cannot be reached.
        match self.not_in_map_at {
            Some(t) => deadline.max(t + self.config.connect_panic),
            None => deadline,
        }
    }

    /// A monitor answered that this gateway is not in the map (yet), or is being deleted.
    fn not_in_map(&mut self, why: &str) {
        let now = Instant::now();
        self.not_in_map_at = Some(now);
        if self
            .not_in_map_logged
            .is_some_and(|t| now < t + NOT_IN_MAP_LOG)
        {
            debug!(error = %why, "not in the map yet");
            return;
        }
        self.not_in_map_logged = Some(now);
        let c = &self.config;
        let group = if c.key.group.as_str().is_empty() {
            "\"\"".to_owned()
        } else {
            c.key.group.to_string()
        };
        info!(
            "not a gateway of the map yet ({why}): serving nothing, waiting for `nvme-gw create {} {} {group}`",
            c.gateway, c.key.pool
        );
    }

    /// Serve nothing and open a new session as a new process would: the monitors see a
    /// start, whatever they remember of this one.
    fn rejoin_as_new_incarnation(&mut self) {
        self.slice = None;
        self.lease_until = None;
        self.order(Action::DemoteAll);
        self.incarnation = self.rng.random_range(1..=u64::MAX);
        self.starting = true;
        self.seq = 0;
        self.sent.clear();
        self.applied_epoch = Epoch::ZERO;
        self.fence_epoch = Epoch::ZERO;
        info!(
            incarnation = format_args!("{:016x}", self.incarnation),
            "rejoining as a new incarnation"
        );
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

    /// When the target may be serving and the lease runs out, if it has not already.
    fn lease_deadline(&self) -> Option<Instant> {
        if !self.may_serve || self.config.on_monitor_loss != OnMonitorLoss::Demote {
            return None;
        }
        self.lease_until.filter(|t| Instant::now() < *t)
    }

    /// What the target should do now.
    fn desired(&self) -> Action {
        let Some(slice) = self.slice.as_ref() else {
            return Action::DemoteAll;
        };
        let states = slice_states(slice);
        let held = self.config.on_monitor_loss == OnMonitorLoss::Hold
            && self.applied.as_ref() == Some(&states);
        if held || states.optimized().next().is_none() {
            return Action::Apply(states);
        }
        if !self.lease_valid(Instant::now()) {
            return Action::DemoteAll;
        }
        if self.lease_session == self.slice_session
            || mutation::active(Mutation::StaleSliceUnderLease)
        {
            Action::Apply(states)
        } else {
            // Until this session acks: only what is optimized now stays optimized.
            Action::Apply(states.optimized_only_where(self.applied.as_ref()))
        }
    }

    /// Send the target the desired order if it differs from the latest one.
    fn reconcile(&mut self) {
        let want = self.desired();
        let serving_before = self.may_serve;
        if want == Action::DemoteAll && serving_before && self.slice.is_some() {
            let lease_ran_out = !self.lease_valid(Instant::now());
            if lease_ran_out && self.ordered.as_ref().is_none_or(|o| o.action.serves()) {
                warn!(
                    "no ack from the monitors within the lease: every ANA group goes inaccessible"
                );
                self.config.metrics.demoted();
            }
        }
        self.order(want);
    }

    fn order(&mut self, action: Action) {
        if self.ordered.as_ref().is_some_and(|o| o.action == action) {
            // Already ordered; a failed apply is retried by ordering it again.
            if self.ordered_done || self.target_ok {
                return;
            }
        }
        if action == Action::DemoteAll
            && mutation::active(Mutation::SkipDemotionAfterFailedApply)
            && !self.ordered_done
            && self.ordered.as_ref().is_some_and(|o| o.action.serves())
        {
            return;
        }
        if action.serves() {
            self.may_serve = true;
        }
        self.order_seq += 1;
        let order = Order {
            seq: self.order_seq,
            action,
        };
        self.ordered = Some(order.clone());
        self.ordered_done = false;
        self.orders.send_replace(Some(order));
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Subsystems(Ok(mut subs)) => {
                for s in &mut subs {
                    s.canonicalize();
                }
                subs.sort_by(|a, b| a.nqn.cmp(&b.nqn));
                self.subsystems = subs;
                if std::mem::take(&mut self.beacon_on_listing) {
                    self.beacon_now = true;
                }
                if self.ordered_done {
                    self.target_ok = true;
                }
            }
            Report::Subsystems(Err(e)) => {
                warn!(error = %e, "cannot read the target's subsystems");
                self.target_ok = false;
            }
            Report::Done { seq, result } => {
                let Some(order) = self.ordered.clone().filter(|o| o.seq == seq) else {
                    return; // superseded
                };
                match result {
                    Ok(()) => {
                        self.ordered_done = true;
                        self.target_ok = true;
                        match order.action {
                            Action::Apply(states) => {
                                for e in states.optimized() {
                                    self.fence_epoch = self.fence_epoch.max(e.fence_epoch);
                                }
                                let placed = !states.placements.is_empty()
                                    && self.applied.as_ref().map(|a| &a.placements)
                                        != Some(&states.placements);
                                if placed {
                                    // The beacon that confirms must list the namespaces
                                    // where they are now.
                                    self.listings.send_modify(|n| *n += 1);
                                    self.beacon_on_listing = true;
                                } else if states.epoch > self.applied_epoch {
                                    // Say so at once, not at the next tick: a planned move
                                    // waits for exactly this confirmation.
                                    self.beacon_now = true;
                                }
                                self.applied_epoch = states.epoch;
                                self.may_serve = states.optimized().next().is_some();
                                info!(
                                    epoch = %states.epoch,
                                    optimized = ?states.optimized().map(|e| e.ana_group.get()).collect::<std::collections::BTreeSet<_>>(),
                                    "ANA states applied"
                                );
                                self.config.metrics.serving(states.optimized().count());
                                self.applied = Some(states);
                            }
                            Action::DemoteAll => {
                                self.may_serve = false;
                                self.config.metrics.serving(0);
                                self.applied =
                                    self.applied.as_ref().map(AnaStates::all_inaccessible);
                                debug!("every ANA group inaccessible");
                            }
                        }
                        // The lease may have run out meanwhile, or a slice come in.
                        self.reconcile();
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot apply ANA states; reporting the target unavailable");
                        self.target_ok = false;
                    }
                }
            }
        }
    }

    /// Make every ANA group inaccessible and wait for it, bounded: before exiting.
    async fn demote_and_wait(&mut self) {
        self.order(Action::DemoteAll);
        let bound = self
            .config
            .handler_timeout
            .saturating_mul(self.config.handler_attempts.max(1))
            .saturating_add(self.config.handler_timeout);
        let deadline = Instant::now() + bound;
        while !self.ordered_done || self.may_serve {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(Report::Done { seq, result })) => {
                    if self.ordered.as_ref().is_some_and(|o| o.seq == seq) && result.is_ok() {
                        self.ordered_done = true;
                        self.may_serve = false;
                        self.config.metrics.serving(0);
                    }
                }
                Ok(Some(Report::Subsystems(_))) => {}
                Ok(None) | Err(_) => {
                    error!("the target did not confirm every ANA group inaccessible before exit");
                    return;
                }
            }
        }
    }

    async fn shutdown_handler(&self, reason: &str) {
        // The handler's shutdown cannot fail; it can only hang.
        if tokio::time::timeout(self.config.handler_timeout, self.handler.shutdown(reason))
            .await
            .is_err()
        {
            self.config.metrics.handler_error("shutdown");
            warn!("the target did not shut down in time");
        }
    }

    fn beacon(&mut self) -> v1::GatewayMessage {
        // A fresh listing for the next beacon; this one carries the last.
        self.listings.send_modify(|n| *n += 1);
        // A state change that failed to apply earlier is retried at every beacon.
        self.reconcile();
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
        let session = self.sessions;
        let unchanged = self.unchanged_accepted == Some(session)
            && self
                .listed
                .as_ref()
                .is_some_and(|(s, l)| *s == session && *l == self.subsystems);
        let subsystems = if unchanged {
            Vec::new()
        } else {
            self.listed = Some((session, self.subsystems.clone()));
            self.subsystems.clone()
        };
        domain::GatewayMessage::Beacon {
            incarnation: self.incarnation,
            report: GatewayReport {
                seq,
                availability,
                subsystems,
                applied_epoch: self.applied_epoch,
                fence_epoch: self.fence_epoch,
            },
            subsystems_unchanged: unchanged,
        }
        .into()
    }

    fn on_message(&mut self, msg: v1::MonitorMessage) -> Next {
        let msg = match domain::MonitorMessage::try_from(msg) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "malformed message from the monitor ignored");
                return Next::Continue;
            }
        };
        match msg {
            domain::MonitorMessage::Ack(ack) => {
                if ack.unchanged_subsystems_accepted {
                    self.unchanged_accepted = Some(self.sessions);
                }
                let now = Instant::now();
                self.last_contact = now;
                self.last_ack = now;
                if let Some(&(_, sent_at, was_starting)) =
                    self.sent.iter().find(|(seq, _, _)| *seq == ack.seq)
                {
                    // The lease counts from when the acked beacon left, not from when the
                    // ack arrived: the monitor's grace started no earlier than that. The
                    // newest ack decides, shorter or not: a lowered grace, or a leader with
                    // less quorum contact left, shortens the lease at once.
                    self.lease_until = Some(sent_at + ack.lease);
                    self.lease_session = self.sessions;
                    self.rejoins = 0;
                    self.config.metrics.ack(now, self.lease_until);
                    if was_starting {
                        self.starting = false;
                    }
                }
                self.reconcile();
                Next::Continue
            }
            domain::MonitorMessage::MapSlice(slice) => {
                self.config.metrics.slice();
                self.last_contact = Instant::now();
                self.first_map = true;
                self.slice = Some(slice);
                self.slice_session = self.sessions;
                self.reconcile();
                Next::Continue
            }
            domain::MonitorMessage::Shutdown { kind, reason } => {
                info!(%reason, "the monitors ordered this gateway to stop");
                let deleted = matches!(kind, ShutdownKind::Deleted | ShutdownKind::Removed);
                if kind == ShutdownKind::DeclaredFailed
                    || (deleted && self.config.on_delete == OnDelete::Wait)
                {
                    // Stop serving now, then come back as a new process: the monitors
                    // know it restarted, and give its group back once it is available. A
                    // deleted gateway is refused until it is created again, and waits.
                    self.rejoin_as_new_incarnation();
                    if deleted {
                        self.not_in_map_at = Some(Instant::now());
                    }
                    return Next::Rejoin;
                }
                Next::Exit(Exit::Shutdown(reason))
            }
        }
    }
}

enum Next {
    Continue,
    Exit(Exit),
    /// Declared failed: open a new session as a new incarnation.
    Rejoin,
}
