//! The leader's fence loop: run every pending fence until it is committed as complete.
//!
//! Only the leader runs fences (two monitors fencing at once would be harmless, since
//! fencers are idempotent, but pointless). The loop wakes on every applied map change, on a
//! periodic tick and when a retry falls due; each time, if this monitor leads, it starts
//! every pending fence that is neither running nor waiting out a backoff, each in its own
//! task, so one slow backend call does not hold up the fence of another group.
//!
//! ```text
//!              launch                 Ok ─▶ propose FenceCompleted ─▶ Ok / NotLeader / UnknownFence ─▶ forgotten
//!   pending ──────────▶ in flight ──┤
//!      ▲                            └ Err (fence or commit) ─▶ waiting (backoff doubles up to max) ─┐
//!      └──────────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! A fence is never given up on: the failover target holds I/O until it completes, and a
//! promotion without it is not an option. What keeps a broken fencer from hurting the
//! cluster is the backoff (Ceph's blocklist retry loops, without one, spun at 1 ms and took
//! monitors down). Only a leader a quorum confirmed starts fences (within
//! `election_timeout_min` of its last quorum contact, when no other leader can exist), and
//! its completion is committed as a leader command of that term. A leader that steps down,
//! changes term, or has been out of touch with its quorum for as long as a gateway lease may
//! last cancels the fences in flight (an exec fencer's command is killed); a moment without
//! contact only holds new ones back. A new leader starts over from its own map, which has
//! everything earlier terms committed: it reruns only fences still pending, which fencers
//! accept.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use gwmon_proto::domain::{Epoch, GatewayId, GroupKey};

use super::{BoxFuture, FenceError, FenceOrder, Fencer};
use crate::core::Core;
use crate::error::MonitorError;
use crate::map::{Command, MapError};

/// The first retry of a failed fence waits this long (or `retry_backoff_max` if smaller).
pub const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The loop looks at the map at least this often, so leadership gained without a map change
/// is noticed.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// The floor of every wait, whatever is configured: a zero backoff would be a tight loop.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// What the runner needs from its monitor: [`Core`] in production, a fake in unit tests
/// (which is how leadership loss and commit failures are tested without a cluster).
pub(crate) trait FenceBoard: Send + Sync + 'static {
    /// This monitor's leadership as a quorum last confirmed it, if it leads.
    fn lease(&self) -> Option<FenceLease>;
    /// Fences not completed, as the map last applied here says.
    fn pending(&self) -> Vec<FenceOrder>;
    /// Ticks after every applied change; errors once the monitor's state machine is gone.
    fn changes(&self) -> watch::Receiver<u64>;
    /// Commit the fence's completion, as decided by the leader of `term`.
    fn complete(
        &self,
        term: u64,
        order: FenceOrder,
    ) -> BoxFuture<'static, Result<(), MonitorError>>;
    /// One run of the fencer ended, `ok` or not (for metrics).
    fn fence_ended(&self, _ok: bool) {}
    /// The beacon grace: how long after its start a fence by a fencer that cannot cut a
    /// gateway off completes.
    fn grace(&self) -> Duration;
}

impl FenceBoard for Core {
    fn lease(&self) -> Option<FenceLease> {
        let lease = Core::lease(self)?;
        let grace = self
            .reader()
            .read(|m| Duration::from_millis(m.config().beacon_grace_ms));
        Some(FenceLease {
            term: lease.term,
            start_until: lease.exclusive_until,
            keep_until: lease.quorum_at + grace / 2,
        })
    }

    fn pending(&self) -> Vec<FenceOrder> {
        self.reader().read(FenceOrder::pending)
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.reader().changes()
    }

    fn fence_ended(&self, ok: bool) {
        self.telemetry().fence_result(ok);
    }

    fn grace(&self) -> Duration {
        self.reader()
            .read(|m| Duration::from_millis(m.config().beacon_grace_ms))
    }

    fn complete(
        &self,
        term: u64,
        order: FenceOrder,
    ) -> BoxFuture<'static, Result<(), MonitorError>> {
        let core = self.clone();
        Box::pin(async move {
            core.propose_as_leader(
                term,
                Command::FenceCompleted {
                    key: order.key,
                    gateway: order.gateway,
                    epoch: order.epoch,
                },
            )
            .await
            .map(|_| ())
        })
    }
}

/// What the runner may do, and until when, without new quorum contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FenceLease {
    /// The term this monitor leads in; fences in flight from another term are cancelled.
    pub term: u64,
    /// New fences start only before this: no other leader can exist yet.
    pub start_until: Instant,
    /// Fences in flight are cancelled after this: the leader has been out of touch with its
    /// quorum as long as a gateway lease may last, so another may lead by now. (A moment
    /// without contact does not cancel a slow fence that would then start over.)
    pub keep_until: Instant,
}

/// Identifies one fence in the map: a gateway may have several, one per epoch.
type FenceKey = (GroupKey, GatewayId, Epoch);

fn fence_key(order: &FenceOrder) -> FenceKey {
    (order.key.clone(), order.gateway.clone(), order.epoch)
}

/// How an attempt ended.
enum Outcome {
    /// Fenced and committed.
    Completed,
    /// Fenced, but this monitor no longer leads: the new leader reruns it.
    NotLeader,
    /// The map no longer has that fence pending (completed by an earlier attempt, or gone).
    Gone,
    /// Try again after a backoff.
    Failed(Failure),
}

enum Failure {
    Fence(FenceError),
    Commit(MonitorError),
    /// The attempt's task panicked (a bug in a fencer).
    Panicked(String),
}

/// What the loop knows of one pending fence.
#[derive(Default)]
struct Tracked {
    in_flight: bool,
    /// Failed attempts in a row.
    failures: u32,
    /// No new attempt before this.
    retry_at: Option<Instant>,
}

/// The leader's fence loop; see the module docs. Build it once per monitor and [`run`] it
/// on its own task.
///
/// [`run`]: FenceRunner::run
pub struct FenceRunner {
    board: Arc<dyn FenceBoard>,
    fencer: Arc<dyn Fencer>,
    first_backoff: Duration,
    max_backoff: Duration,
    tick: Duration,
}

impl FenceRunner {
    /// Failed fences are retried after [`DEFAULT_FIRST_BACKOFF`], doubling up to
    /// `retry_backoff_max` (at least 10 ms).
    pub fn new(core: Core, fencer: Arc<dyn Fencer>, retry_backoff_max: Duration) -> Self {
        Self::with_board(Arc::new(core), fencer, retry_backoff_max)
    }

    pub(crate) fn with_board(
        board: Arc<dyn FenceBoard>,
        fencer: Arc<dyn Fencer>,
        retry_backoff_max: Duration,
    ) -> Self {
        let max_backoff = retry_backoff_max.max(MIN_WAIT);
        FenceRunner {
            board,
            fencer,
            first_backoff: DEFAULT_FIRST_BACKOFF.min(max_backoff),
            max_backoff,
            tick: DEFAULT_TICK,
        }
    }

    /// The first retry's wait (default [`DEFAULT_FIRST_BACKOFF`]); at most the maximum.
    pub fn with_first_backoff(mut self, first: Duration) -> Self {
        self.first_backoff = first.clamp(MIN_WAIT, self.max_backoff);
        self
    }

    /// How often the map is looked at without a change (default [`DEFAULT_TICK`]).
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(MIN_WAIT);
        self
    }

    /// The wait after `failures` failed attempts in a row (1 or more).
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Run until `shutdown`, or until the monitor's state machine is gone. Fences still in
    /// flight then are abandoned (an exec fencer's command is killed); the next leader
    /// reruns them.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(fencer = self.fencer.name(), "fence runner started");
        let mut changes = self.board.changes();
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut tasks: JoinSet<(FenceKey, Outcome)> = JoinSet::new();
        let mut running: HashMap<Id, FenceKey> = HashMap::new();
        let mut fences: HashMap<FenceKey, Tracked> = HashMap::new();
        let mut leading: Option<u64> = None;
        loop {
            let lease_end = self.launch(&mut tasks, &mut running, &mut fences, &mut leading);
            // Only retries still to come: one already due that `launch` did not start waits
            // for a pass in which it may (a wake-up for it now would spin the loop).
            let now = Instant::now();
            let next_retry = fences
                .values()
                .filter(|t| !t.in_flight)
                .filter_map(|t| t.retry_at)
                .filter(|at| *at > now)
                .min();
            tokio::select! {
                // Leadership unconfirmed from then on unless a quorum answered meanwhile.
                () = sleep_until(lease_end) => {}
                () = shutdown.cancelled() => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        debug!("the map is gone: fence runner stops");
                        break;
                    }
                }
                _ = tick.tick() => {}
                Some(joined) = tasks.join_next_with_id() => {
                    self.finished(joined, &mut running, &mut fences);
                }
                () = sleep_until(next_retry) => {}
            }
        }
        tasks.shutdown().await;
        info!("fence runner stopped");
    }

    /// If leading, start every pending fence that is not running or backing off; if not,
    /// cancel every fence in flight. Returns when the leadership must be checked again.
    fn launch(
        &self,
        tasks: &mut JoinSet<(FenceKey, Outcome)>,
        running: &mut HashMap<Id, FenceKey>,
        fences: &mut HashMap<FenceKey, Tracked>,
        leading: &mut Option<u64>,
    ) -> Option<Instant> {
        let now = Instant::now();
        let lease = self.board.lease().filter(|l| now < l.keep_until);
        if leading.is_some() && lease.map(|l| l.term) != *leading {
            info!("no longer the leader: fences in flight are cancelled, no new ones start here");
            *leading = None;
            if !running.is_empty() {
                // A deposed leader must not keep cutting gateways off: the new leader
                // decides from its own, newer map (an exec fencer's command is killed).
                tasks.abort_all();
                running.clear();
            }
            // Backoffs restart from the first if leadership comes back.
            fences.clear();
        }
        let lease = lease?;
        if now >= lease.start_until {
            // Leading, but no quorum answered lately: start nothing, keep what runs.
            return Some(lease.keep_until);
        }
        let term = lease.term;
        if leading.is_none() {
            debug!("leading: running pending fences");
            *leading = Some(term);
        }
        let pending = self.board.pending();
        let keys: HashSet<FenceKey> = pending.iter().map(fence_key).collect();
        fences.retain(|k, t| t.in_flight || keys.contains(k));
        let now = Instant::now();
        for order in pending {
            let key = fence_key(&order);
            let t = fences.entry(key.clone()).or_default();
            if t.in_flight || t.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            t.in_flight = true;
            // The fencer's own log lines (an exec fencer's stderr, a webhook's answer) carry
            // the fence they belong to.
            let span = info_span!("fence", pool = %order.key.pool, group = %order.key.group,
                gateway = %order.gateway, epoch = %order.epoch);
            span.in_scope(|| {
                info!(
                    nonces = order.nonces.len(),
                    attempt = t.failures + 1,
                    fencer = self.fencer.name(),
                    "fencing"
                );
            });
            let fencer = self.fencer.clone();
            let board = self.board.clone();
            let task_key = key.clone();
            let handle = tasks.spawn(
                async move {
                    let outcome = attempt(&*fencer, &*board, term, order).await;
                    (task_key, outcome)
                }
                .instrument(span),
            );
            running.insert(handle.id(), key);
        }
        Some(lease.start_until)
    }

    fn finished(
        &self,
        joined: Result<(Id, (FenceKey, Outcome)), tokio::task::JoinError>,
        running: &mut HashMap<Id, FenceKey>,
        fences: &mut HashMap<FenceKey, Tracked>,
    ) {
        let (key, outcome) = match joined {
            Ok((id, done)) => {
                running.remove(&id);
                done
            }
            Err(e) => {
                // A fencer panicked: a failed attempt like any other, retried after a backoff.
                // (A cancelled one was aborted on losing leadership and is forgotten.)
                let Some(key) = running.remove(&e.id()) else {
                    return;
                };
                if e.is_cancelled() {
                    fences.remove(&key);
                    return;
                }
                (key, Outcome::Failed(Failure::Panicked(e.to_string())))
            }
        };
        let (group, gateway, epoch) = &key;
        match &outcome {
            Outcome::Completed | Outcome::NotLeader | Outcome::Failed(Failure::Commit(_)) => {
                self.board.fence_ended(true)
            }
            Outcome::Failed(Failure::Fence(_) | Failure::Panicked(_)) => {
                self.board.fence_ended(false);
            }
            Outcome::Gone => {}
        }
        match outcome {
            Outcome::Completed => {
                info!(key = %group, %gateway, %epoch, "fence completed");
                fences.remove(&key);
            }
            Outcome::NotLeader => {
                debug!(key = %group, %gateway, %epoch, "fenced, but no longer the leader to commit it; the new leader reruns it");
                fences.remove(&key);
            }
            Outcome::Gone => {
                debug!(key = %group, %gateway, %epoch, "fence no longer pending");
                fences.remove(&key);
            }
            Outcome::Failed(failure) => {
                let t = fences.entry(key.clone()).or_default();
                t.in_flight = false;
                t.failures = t.failures.saturating_add(1);
                let wait = self.backoff(t.failures);
                t.retry_at = Some(Instant::now() + wait);
                let (failures, wait_ms) = (t.failures, wait.as_millis() as u64);
                match failure {
                    Failure::Fence(e) if e.is_permanent() => {
                        error!(key = %group, %gateway, %epoch, error = %e, failures, retry_in_ms = wait_ms,
                            fencer = self.fencer.name(),
                            "fence refused; the failover target holds I/O until it succeeds: fix the fencer");
                    }
                    Failure::Fence(e) => {
                        warn!(key = %group, %gateway, %epoch, error = %e, failures, retry_in_ms = wait_ms,
                            fencer = self.fencer.name(), "fence failed; retrying");
                    }
                    Failure::Panicked(e) => {
                        error!(key = %group, %gateway, %epoch, error = %e, failures, retry_in_ms = wait_ms,
                            fencer = self.fencer.name(), "the fencer panicked; retrying");
                    }
                    Failure::Commit(e) => {
                        warn!(key = %group, %gateway, %epoch, error = %e, failures, retry_in_ms = wait_ms,
                            "fenced, but its completion could not be committed; retrying");
                    }
                }
            }
        }
    }
}

/// One attempt: fence, then commit.
async fn attempt(
    fencer: &dyn Fencer,
    board: &dyn FenceBoard,
    term: u64,
    order: FenceOrder,
) -> Outcome {
    let started = Instant::now();
    if let Err(e) = fencer.fence(&order).await {
        return Outcome::Failed(Failure::Fence(e));
    }
    if !fencer.cuts_off() {
        // Nothing cut the gateway off: wait until its lease has run out and its own
        // demotion has had its time (see `Fencer::cuts_off`).
        tokio::time::sleep_until(started + board.grace()).await;
    }
    match board.complete(term, order).await {
        Ok(()) => Outcome::Completed,
        Err(MonitorError::NotLeader { .. } | MonitorError::Unconfirmed) => Outcome::NotLeader,
        Err(MonitorError::Refused(MapError::StaleLeaderCommand { .. })) => Outcome::NotLeader,
        Err(MonitorError::Refused(MapError::UnknownFence { .. })) => Outcome::Gone,
        Err(e) => Outcome::Failed(Failure::Commit(e)),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::*;

    fn order(gateway: &str, epoch: u64) -> FenceOrder {
        FenceOrder {
            key: GroupKey::new("rbd".parse().expect("pool"), "g".parse().expect("group")),
            gateway: gateway.parse().expect("gateway"),
            epoch: Epoch(epoch),
            nonces: vec!["10.0.0.1:0/1".parse().expect("nonce")],
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().expect("test lock")
    }

    /// A map and a leadership flag; completions are scripted, `Ok` by default.
    struct FakeBoard {
        leader: AtomicBool,
        leader_checks: AtomicUsize,
        /// Whether a quorum answered lately (the lease allows starting fences).
        quorum: AtomicBool,
        pending: Mutex<Vec<FenceOrder>>,
        commits: Mutex<VecDeque<Result<(), MonitorError>>>,
        commit_calls: AtomicUsize,
        completed: Mutex<Vec<FenceOrder>>,
        tx: watch::Sender<u64>,
    }

    impl FakeBoard {
        fn new(leader: bool, pending: Vec<FenceOrder>) -> Arc<Self> {
            Arc::new(FakeBoard {
                leader: AtomicBool::new(leader),
                leader_checks: AtomicUsize::new(0),
                quorum: AtomicBool::new(true),
                pending: Mutex::new(pending),
                commits: Mutex::new(VecDeque::new()),
                commit_calls: AtomicUsize::new(0),
                completed: Mutex::new(Vec::new()),
                tx: watch::channel(0).0,
            })
        }

        fn changed(&self) {
            self.tx.send_modify(|i| *i += 1);
        }

        fn completed(&self) -> usize {
            lock(&self.completed).len()
        }

        fn checks(&self) -> usize {
            self.leader_checks.load(Ordering::SeqCst)
        }
    }

    /// The fake map's beacon grace.
    const FAKE_GRACE: Duration = Duration::from_millis(300);

    impl FenceBoard for FakeBoard {
        fn lease(&self) -> Option<FenceLease> {
            self.leader_checks.fetch_add(1, Ordering::SeqCst);
            let now = Instant::now();
            let far = now + Duration::from_secs(3600);
            let start_until = if self.quorum.load(Ordering::SeqCst) {
                far
            } else {
                now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
            };
            self.leader.load(Ordering::SeqCst).then_some(FenceLease {
                term: 1,
                start_until,
                keep_until: far,
            })
        }

        fn pending(&self) -> Vec<FenceOrder> {
            lock(&self.pending).clone()
        }

        fn changes(&self) -> watch::Receiver<u64> {
            self.tx.subscribe()
        }

        fn grace(&self) -> Duration {
            FAKE_GRACE
        }

        fn complete(
            &self,
            _term: u64,
            order: FenceOrder,
        ) -> BoxFuture<'static, Result<(), MonitorError>> {
            self.commit_calls.fetch_add(1, Ordering::SeqCst);
            let result = lock(&self.commits).pop_front().unwrap_or(Ok(()));
            let remove = matches!(
                result,
                Ok(()) | Err(MonitorError::Refused(MapError::UnknownFence { .. }))
            );
            if remove {
                lock(&self.pending).retain(|o| o != &order);
                if result.is_ok() {
                    lock(&self.completed).push(order);
                }
                self.changed();
            }
            Box::pin(async move { result })
        }
    }

    /// Scripted results (`Ok` once the script runs out), the instant of every call, and an
    /// optional gate every call must pass before it answers.
    struct FakeFencer {
        script: Mutex<VecDeque<Result<(), FenceError>>>,
        calls: Mutex<Vec<(FenceOrder, Instant)>>,
        gate: Option<Semaphore>,
        /// Attempts dropped before they finished (cancelled).
        dropped: Arc<AtomicUsize>,
    }

    /// Counts a drop unless disarmed: an attempt that ends normally disarms it.
    struct DropCount(Arc<AtomicUsize>, bool);

    impl DropCount {
        fn disarm(&mut self) {
            self.1 = false;
        }
    }

    impl Drop for DropCount {
        fn drop(&mut self) {
            if self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    impl FakeFencer {
        fn new(script: Vec<Result<(), FenceError>>, gated: bool) -> Arc<Self> {
            Arc::new(FakeFencer {
                script: Mutex::new(script.into()),
                calls: Mutex::new(Vec::new()),
                gate: gated.then(|| Semaphore::new(0)),
                dropped: Arc::new(AtomicUsize::new(0)),
            })
        }

        fn calls(&self) -> usize {
            lock(&self.calls).len()
        }

        fn dropped(&self) -> usize {
            self.dropped.load(Ordering::SeqCst)
        }

        fn open(&self, n: usize) {
            if let Some(g) = &self.gate {
                g.add_permits(n);
            }
        }
    }

    impl Fencer for FakeFencer {
        fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
            lock(&self.calls).push((order.clone(), Instant::now()));
            let mut guard = DropCount(self.dropped.clone(), true);
            Box::pin(async move {
                if let Some(g) = &self.gate {
                    g.acquire().await.expect("gate").forget();
                }
                guard.disarm();
                lock(&self.script).pop_front().unwrap_or(Ok(()))
            })
        }

        fn name(&self) -> &'static str {
            "fake"
        }
    }

    fn refused() -> FenceError {
        FenceError::Http {
            status: 503,
            body: "busy".into(),
        }
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn start(
        board: &Arc<FakeBoard>,
        fencer: &Arc<FakeFencer>,
        first: Duration,
        max: Duration,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let runner = FenceRunner::with_board(board.clone(), fencer.clone(), max)
            .with_first_backoff(first)
            .with_tick(Duration::from_millis(20));
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        (stop, task)
    }

    async fn stop(stop: CancellationToken, task: tokio::task::JoinHandle<()>) {
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the runner stops promptly")
            .expect("the runner does not panic");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_never_reaches_zero() {
        let board = FakeBoard::new(true, vec![]);
        let r = FenceRunner::with_board(
            board.clone(),
            Arc::new(super::super::NoFence),
            Duration::from_secs(8),
        );
        assert_eq!(r.backoff(1), Duration::from_millis(500));
        assert_eq!(r.backoff(2), Duration::from_secs(1));
        assert_eq!(r.backoff(5), Duration::from_secs(8));
        assert_eq!(r.backoff(u32::MAX), Duration::from_secs(8));
        let r = FenceRunner::with_board(board, Arc::new(super::super::NoFence), Duration::ZERO)
            .with_first_backoff(Duration::ZERO);
        assert_eq!(r.backoff(1), MIN_WAIT);
        assert_eq!(r.backoff(9), MIN_WAIT);
    }

    #[tokio::test]
    async fn a_failing_fence_is_retried_with_growing_waits_until_it_completes() {
        let board = FakeBoard::new(true, vec![order("a", 7)]);
        let fencer = FakeFencer::new(
            vec![
                Err(refused()),
                Err(refused()),
                Err(refused()),
                Err(refused()),
            ],
            false,
        );
        let (first, max) = (Duration::from_millis(20), Duration::from_millis(50));
        let (s, t) = start(&board, &fencer, first, max);
        until("the fence completes", || board.completed() == 1).await;
        let calls = lock(&fencer.calls).clone();
        assert_eq!(calls.len(), 5, "four failures, then success");
        assert!(calls.iter().all(|(o, _)| o == &order("a", 7)));
        let waits = [20, 40, 50, 50];
        for (i, want) in waits.iter().enumerate() {
            let gap = calls[i + 1].1 - calls[i].1;
            assert!(
                gap >= Duration::from_millis(*want),
                "retry {} came after {gap:?}, before its {want} ms backoff",
                i + 1
            );
        }
        assert_eq!(*lock(&board.completed), vec![order("a", 7)]);
        stop(s, t).await;
    }

    #[tokio::test]
    async fn a_fencer_that_cannot_cut_off_completes_only_a_grace_after_it_started() {
        // A gateway declared failed while alive may hold a lease for up to half a grace and
        // then needs time to demote: with nothing to cut it off, its group must not move
        // before a whole grace has passed.
        let board = FakeBoard::new(true, vec![order("a", 9)]);
        let began = Instant::now();
        let runner = FenceRunner::with_board(
            board.clone(),
            Arc::new(super::super::none::NoFence),
            Duration::from_millis(50),
        )
        .with_tick(Duration::from_millis(20));
        let s = CancellationToken::new();
        let t = tokio::spawn(runner.run(s.clone()));
        until("the fence completes", || board.completed() == 1).await;
        assert!(
            began.elapsed() >= FAKE_GRACE,
            "completed after {:?}, before the {FAKE_GRACE:?} grace",
            began.elapsed()
        );
        stop(s, t).await;
    }

    #[tokio::test]
    async fn fences_run_concurrently_and_each_only_once_at_a_time() {
        let board = FakeBoard::new(true, vec![order("a", 3), order("b", 4)]);
        let fencer = FakeFencer::new(vec![], true);
        let (s, t) = start(
            &board,
            &fencer,
            Duration::from_millis(10),
            Duration::from_millis(10),
        );
        until("both fences start", || fencer.calls() == 2).await;
        // Map changes and ticks while both are in flight start nothing new.
        let checks = board.checks();
        for _ in 0..5 {
            board.changed();
            tokio::task::yield_now().await;
        }
        until("the loop looked again", || board.checks() >= checks + 5).await;
        assert_eq!(fencer.calls(), 2);
        fencer.open(2);
        until("both complete", || board.completed() == 2).await;
        assert_eq!(fencer.calls(), 2);
        stop(s, t).await;
    }

    #[tokio::test]
    async fn only_the_leader_fences_and_a_lost_leadership_stops_new_attempts() {
        let board = FakeBoard::new(false, vec![order("a", 5)]);
        let fencer = FakeFencer::new(vec![], true);
        let (s, t) = start(
            &board,
            &fencer,
            Duration::from_millis(10),
            Duration::from_millis(10),
        );
        until("several passes", || board.checks() >= 5).await;
        assert_eq!(fencer.calls(), 0, "a follower runs no fence");

        board.leader.store(true, Ordering::SeqCst);
        until("the new leader fences", || fencer.calls() == 1).await;
        // Leadership goes while the fence is in flight: the attempt is cancelled, so a
        // deposed leader neither finishes cutting the gateway off nor commits it.
        board.leader.store(false, Ordering::SeqCst);
        until("the attempt is cancelled", || fencer.dropped() == 1).await;
        fencer.open(1);
        let checks = board.checks();
        until("several passes", || board.checks() >= checks + 5).await;
        assert_eq!(fencer.calls(), 1, "no new attempt without leadership");
        assert_eq!(board.commit_calls.load(Ordering::SeqCst), 0);
        assert_eq!(board.completed(), 0);

        // Leading again: the fence is still pending, so it runs again and completes.
        board.leader.store(true, Ordering::SeqCst);
        fencer.open(1);
        until("completed by the leader", || board.completed() == 1).await;
        assert_eq!(fencer.calls(), 2);
        stop(s, t).await;
    }

    /// A retry that falls due while the leader may start nothing (no quorum answered
    /// lately) waits for the next pass. It used to wake the loop at once, again and again:
    /// the monitor spun on a core until quorum contact came back, and in the simulation,
    /// where time moves only when every task waits, time stopped (seed 5398).
    #[tokio::test]
    async fn a_due_retry_waits_without_spinning_while_no_quorum_answered_lately() {
        let board = FakeBoard::new(true, vec![order("a", 7)]);
        let fencer = FakeFencer::new(vec![Err(refused())], false);
        let first = Duration::from_millis(30);
        let (s, t) = start(&board, &fencer, first, first);
        until("the first attempt", || fencer.calls() == 1).await;
        board.quorum.store(false, Ordering::SeqCst);
        let checks = board.checks();
        // Well past the retry's time: about ten 20 ms passes, not a busy loop.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let passes = board.checks() - checks;
        assert!(passes < 100, "{passes} passes in 200 ms");
        assert_eq!(
            fencer.calls(),
            1,
            "nothing starts without recent quorum contact"
        );

        board.quorum.store(true, Ordering::SeqCst);
        until("the retry completes", || board.completed() == 1).await;
        assert_eq!(fencer.calls(), 2);
        stop(s, t).await;
    }

    #[tokio::test]
    async fn a_fence_gone_from_the_map_is_dropped_and_a_failed_commit_is_retried() {
        let board = FakeBoard::new(true, vec![order("a", 5)]);
        lock(&board.commits).push_back(Err(MonitorError::Refused(MapError::UnknownFence {
            key: order("a", 5).key,
            gateway: order("a", 5).gateway,
            epoch: Epoch(5),
        })));
        let fencer = FakeFencer::new(vec![], false);
        let (s, t) = start(
            &board,
            &fencer,
            Duration::from_millis(10),
            Duration::from_millis(10),
        );
        until("the commit is tried", || {
            board.commit_calls.load(Ordering::SeqCst) == 1
        })
        .await;
        let checks = board.checks();
        until("several passes", || board.checks() >= checks + 5).await;
        assert_eq!(fencer.calls(), 1, "an unknown fence is not retried");
        assert_eq!(board.completed(), 0);

        // A commit that fails for want of a quorum is retried, fence and all.
        lock(&board.commits).push_back(Err(MonitorError::Raft("no quorum".into())));
        lock(&board.pending).push(order("b", 6));
        board.changed();
        until("completed on the second try", || board.completed() == 1).await;
        assert_eq!(fencer.calls(), 3);
        assert_eq!(board.commit_calls.load(Ordering::SeqCst), 3);
        stop(s, t).await;
    }

    /// Panics on its first call, then fences.
    struct PanicOnce(AtomicUsize);

    impl Fencer for PanicOnce {
        fn fence<'a>(&'a self, _: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
            let first = self.0.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                assert!(!first, "a buggy fencer panics (expected by the test)");
                Ok(())
            })
        }

        fn name(&self) -> &'static str {
            "panics"
        }
    }

    #[tokio::test]
    async fn a_panicking_fencer_is_a_failed_attempt_and_is_retried() {
        let board = FakeBoard::new(true, vec![order("a", 2)]);
        let fencer = Arc::new(PanicOnce(AtomicUsize::new(0)));
        let runner =
            FenceRunner::with_board(board.clone(), fencer.clone(), Duration::from_millis(10))
                .with_tick(Duration::from_millis(20));
        let s = CancellationToken::new();
        let t = tokio::spawn(runner.run(s.clone()));
        until("completed after the panic", || board.completed() == 1).await;
        assert_eq!(fencer.0.load(Ordering::SeqCst), 2);
        stop(s, t).await;
    }
}
