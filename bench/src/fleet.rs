//! Simulated gateways: each is a task holding one `GatewayService.Session` stream, many
//! streams sharing a few HTTP/2 channels. A gateway behaves as `gwmon-client` does on the
//! wire: a `Hello`, then a beacon every interval with unchanged content, saying `Starting`
//! until a `Starting` beacon is acked; it echoes the epoch of the last slice it applied
//! (`applied_epoch`) and the fence epoch of every ANA group it serves (`fence_epoch`), so
//! a failover target turns active once its beacon confirms the fence. It follows the
//! leader redirect. It records when acks and slices arrive.
//!
//! A gateway is killed by dropping its stream: it stops beaconing without a goodbye, as a
//! dead process does; the monitors find out only when the grace runs out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gwmon_proto::leader::leader_hint;
use gwmon_proto::v1::{
    self, gateway_message, gateway_service_client::GatewayServiceClient, monitor_message, GroupKey,
};
use prost::Message;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::error::{BenchError, Result};

/// Gateways per HTTP/2 connection (below any server's concurrent-stream limit).
pub const PER_CHANNEL: usize = 100;
/// Acks matched to their beacons: the send times remembered.
const IN_FLIGHT: usize = 64;

/// A time both on the monotonic clock and as the Unix-epoch milliseconds the monitors'
/// committed times are in (the monitors run on this host, so the clocks agree).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub at: Instant,
    pub unix_ms: f64,
}

impl Stamp {
    pub fn now() -> Stamp {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        Stamp {
            at: Instant::now(),
            unix_ms,
        }
    }
}

/// A slice as it arrived.
#[derive(Debug, Clone)]
pub struct SliceSeen {
    pub stamp: Stamp,
    pub epoch: u64,
    /// ANA groups the gateway may serve: optimized with the fence confirmed.
    pub serving: Vec<u32>,
    /// ANA groups published optimized whose fence is not complete yet.
    pub waiting: Vec<u32>,
    /// Every ANA group the slice lists.
    pub ana_groups: usize,
    /// Encoded size of the `MonitorMessage` (protobuf, without gRPC/HTTP/2 framing).
    pub bytes: usize,
}

/// What a gateway is.
#[derive(Debug, Clone)]
pub struct GwSpec {
    pub index: usize,
    pub key: GroupKey,
    pub id: String,
    /// Its own ANA group (from CreateGateway).
    pub own_ana: u32,
    /// What it reports in every beacon.
    pub subsystems: Arc<Vec<v1::Subsystem>>,
}

/// What a gateway has seen in its current life.
#[derive(Debug, Default)]
pub struct GwState {
    pub running: bool,
    pub session_open: bool,
    pub starting: bool,
    pub seq: u64,
    pub applied_epoch: u64,
    pub fence_epoch: u64,
    pub lease_ms: u64,
    pub last_beacon: Option<Stamp>,
    pub serving: Vec<u32>,
    pub slices: Vec<SliceSeen>,
    pub shutdown: Option<String>,
    pub acks: u64,
}

pub struct SimGateway {
    pub spec: GwSpec,
    state: Mutex<GwState>,
    stop: Mutex<Option<CancellationToken>>,
}

impl SimGateway {
    pub fn state(&self) -> MutexGuard<'_, GwState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counters over the whole fleet.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub beacons_sent: AtomicU64,
    pub acks: AtomicU64,
    pub slices: AtomicU64,
    pub slice_bytes: AtomicU64,
    pub session_errors: AtomicU64,
    record_latency: AtomicBool,
    ack_latency_us: Mutex<Vec<u32>>,
}

impl FleetStats {
    /// Start (or stop) keeping every ack's latency.
    pub fn record_latency(&self, on: bool) {
        self.record_latency.store(on, Ordering::Relaxed);
    }

    /// The ack latencies kept since the last call, in microseconds.
    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(
            &mut *self
                .ack_latency_us
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub fn ack(&self, latency: Duration) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        if self.record_latency.load(Ordering::Relaxed) {
            let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
            self.ack_latency_us
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(us);
        }
    }
}

/// Channels and the leader hint the gateways share.
struct Shared {
    monitors: Vec<String>,
    leader: Mutex<Option<String>>,
    channels: Mutex<HashMap<(String, usize), Channel>>,
    interval_us: AtomicU64,
    /// Leave the subsystem list out of beacons where the monitor takes that (the default,
    /// as `gwmon-client` does); off, every beacon carries it, as older gateways' do.
    omit_unchanged: AtomicBool,
    stats: Arc<FleetStats>,
}

impl Shared {
    fn channel(&self, addr: &str, slot: usize) -> Result<Channel> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(&(addr.to_owned(), slot)) {
            return Ok(c.clone());
        }
        let c = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| BenchError::connect(format!("address {addr}"), e))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert((addr.to_owned(), slot), c.clone());
        Ok(c)
    }

    fn leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(PoisonError::into_inner) = addr;
    }

    fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us.load(Ordering::Relaxed).max(1000))
    }
}

pub struct Fleet {
    pub gateways: Vec<Arc<SimGateway>>,
    pub stats: Arc<FleetStats>,
    shared: Arc<Shared>,
    all: CancellationToken,
}

impl Fleet {
    /// Gateways (not started) talking to `monitors`, first to `leader`.
    pub fn new(
        specs: Vec<GwSpec>,
        monitors: Vec<String>,
        leader: Option<String>,
        beacon: Duration,
    ) -> Fleet {
        let stats = Arc::new(FleetStats::default());
        let shared = Arc::new(Shared {
            monitors,
            leader: Mutex::new(leader),
            channels: Mutex::new(HashMap::new()),
            interval_us: AtomicU64::new(u64::try_from(beacon.as_micros()).unwrap_or(u64::MAX)),
            omit_unchanged: AtomicBool::new(true),
            stats: stats.clone(),
        });
        let gateways = specs
            .into_iter()
            .map(|spec| {
                Arc::new(SimGateway {
                    spec,
                    state: Mutex::new(GwState::default()),
                    stop: Mutex::new(None),
                })
            })
            .collect();
        Fleet {
            gateways,
            stats,
            shared,
            all: CancellationToken::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.gateways.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }

    /// Change every gateway's beacon interval (taken at each gateway's next beacon).
    pub fn set_interval(&self, beacon: Duration) {
        self.shared.interval_us.store(
            u64::try_from(beacon.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn interval(&self) -> Duration {
        self.shared.interval()
    }

    /// Whether beacons leave out the unchanged subsystem list where the monitor takes it
    /// (the default); off, every beacon carries it, as an older gateway's does.
    pub fn set_omit_unchanged(&self, omit: bool) {
        self.shared.omit_unchanged.store(omit, Ordering::Relaxed);
    }

    /// Start gateway `i` as a new process: sequence 0, `Starting`, nothing applied.
    pub fn start(&self, i: usize) {
        let Some(gw) = self.gateways.get(i).cloned() else {
            return;
        };
        let stop = self.all.child_token();
        {
            let mut old = gw.stop.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(t) = old.replace(stop.clone()) {
                t.cancel();
            }
        }
        {
            let mut s = gw.state();
            *s = GwState {
                running: true,
                starting: true,
                ..GwState::default()
            };
        }
        tokio::spawn(run_gateway(gw, self.shared.clone(), stop));
    }

    pub fn start_all(&self) {
        for i in 0..self.gateways.len() {
            self.start(i);
        }
    }

    /// Kill gateway `i`: its stream is dropped; when it last beaconed.
    pub fn kill(&self, i: usize) -> Option<Stamp> {
        let gw = self.gateways.get(i)?;
        if let Some(t) = gw
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.cancel();
        }
        let mut s = gw.state();
        s.running = false;
        s.session_open = false;
        s.last_beacon
    }

    /// Wait until `pred` holds for every gateway.
    pub async fn wait_all(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&SimGateway, &GwState) -> bool,
    ) -> Result<()> {
        let end = Instant::now() + within;
        loop {
            let missing = self
                .gateways
                .iter()
                .filter(|g| !pred(g, &g.state()))
                .count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() >= end {
                return Err(BenchError::timeout(
                    format!(
                        "{what} ({missing} of {} gateways not yet)",
                        self.gateways.len()
                    ),
                    within,
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until every gateway serves its own ANA group.
    pub async fn wait_serving(&self, within: Duration) -> Result<()> {
        self.wait_all("every gateway serving its own ANA group", within, |g, s| {
            s.serving.contains(&g.spec.own_ana) && !s.starting
        })
        .await
    }

    /// Stop every gateway.
    pub fn stop_all(&self) {
        self.all.cancel();
    }

    /// The beacon a gateway sends, encoded size in bytes (for the report).
    /// The encoded size of a beacon listing the subsystems, and of one leaving them out.
    pub fn beacon_bytes(&self) -> (usize, usize) {
        self.gateways.first().map_or((0, 0), |g| {
            (
                beacon_message(&g.spec, 1, 1, (1, 1), false).encoded_len(),
                beacon_message(&g.spec, 1, 1, (1, 1), true).encoded_len(),
            )
        })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.all.cancel();
    }
}

/// The subsystems a gateway of a group with `ana_groups` ANA groups reports: one
/// subsystem, one listener, one namespace per ANA group, each with the gateway's fencing
/// nonce (so a failover issues a real fence).
pub fn subsystems(gateway: &str, port: u32, ana_groups: u32) -> Vec<v1::Subsystem> {
    vec![v1::Subsystem {
        nqn: "nqn.2016-06.io.spdk:cnode1".to_owned(),
        listeners: vec![v1::Listener {
            address: "127.0.0.1".to_owned(),
            port: port.clamp(1, 65535),
        }],
        namespaces: (1..=ana_groups)
            .map(|a| v1::Namespace {
                nsid: a,
                ana_group: a,
                nonce: format!("client.{gateway}"),
            })
            .collect(),
    }]
}

/// A beacon; `unchanged` leaves the subsystems out, as `gwmon-client` does once the
/// session's monitor said it takes that (a simulated gateway's list never changes).
fn beacon_message(
    spec: &GwSpec,
    seq: u64,
    availability: i32,
    (applied, fence): (u64, u64),
    unchanged: bool,
) -> v1::GatewayMessage {
    v1::GatewayMessage {
        body: Some(gateway_message::Body::Beacon(v1::Beacon {
            seq,
            availability,
            subsystems: if unchanged {
                Vec::new()
            } else {
                spec.subsystems.as_ref().clone()
            },
            applied_epoch: applied,
            fence_epoch: fence,
            incarnation: incarnation(spec),
            subsystems_unchanged: unchanged,
        })),
    }
}

/// One process per simulated gateway for the whole run: reconnects keep it.
fn incarnation(spec: &GwSpec) -> u64 {
    spec.index as u64 + 1
}

enum End {
    Stopped,
    Shutdown,
    Broken(Option<String>),
}

async fn run_gateway(gw: Arc<SimGateway>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    let mut next_monitor = gw.spec.index;
    let slot = gw.spec.index / PER_CHANNEL;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let addr = shared.leader().unwrap_or_else(|| {
            next_monitor += 1;
            shared.monitors[next_monitor % shared.monitors.len().max(1)].clone()
        });
        let Ok(channel) = shared.channel(&addr, slot) else {
            return;
        };
        let (tx, rx) = mpsc::channel(16);
        let hello = v1::GatewayMessage {
            body: Some(gateway_message::Body::Hello(v1::Hello {
                gateway_id: gw.spec.id.clone(),
                key: Some(gw.spec.key.clone()),
                software_version: "gwmon-bench".to_owned(),
                incarnation: incarnation(&gw.spec),
            })),
        };
        if tx.send(hello).await.is_err() {
            return;
        }
        let mut client = GatewayServiceClient::new(channel);
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            r = tokio::time::timeout(
                Duration::from_secs(10),
                client.session(tokio_stream::wrappers::ReceiverStream::new(rx)),
            ) => r,
        };
        let hint = match opened {
            Ok(Ok(resp)) => {
                backoff = Duration::from_millis(50);
                match session(&gw, &shared, tx, resp.into_inner(), &stop).await {
                    End::Stopped | End::Shutdown => return,
                    End::Broken(hint) => hint,
                }
            }
            Ok(Err(status)) => {
                shared.stats.session_errors.fetch_add(1, Ordering::Relaxed);
                if status.code() == Code::NotFound || status.code() == Code::InvalidArgument {
                    // Not created (yet), or refused: keep asking slowly, as the client does.
                    backoff = Duration::from_millis(500);
                }
                leader_hint(&status).map(str::to_owned)
            }
            Err(_) => {
                shared.stats.session_errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        match hint {
            Some(h) if Some(&h) != Some(&addr) => {
                shared.set_leader(Some(h));
            }
            _ => {
                if shared.leader().as_deref() == Some(addr.as_str()) {
                    shared.set_leader(None);
                }
                let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                backoff = (backoff * 2).min(Duration::from_secs(2));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

async fn session(
    gw: &SimGateway,
    shared: &Shared,
    tx: mpsc::Sender<v1::GatewayMessage>,
    mut inbound: tonic::Streaming<v1::MonitorMessage>,
    stop: &CancellationToken,
) -> End {
    gw.state().session_open = true;
    let interval = shared.interval();
    // Spread the fleet's beacons over the interval, as independent processes are.
    let mut next = Instant::now() + interval.mul_f64(rand::rng().random_range(0.0..1.0));
    let mut sent: VecDeque<(u64, Instant, bool)> = VecDeque::with_capacity(IN_FLIGHT);
    // Whether this session's monitor takes beacons without the unchanged subsystem list.
    let mut unchanged_accepted = false;
    let end = loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break End::Stopped,
            () = sleep_until(next) => {
                let msg = {
                    let mut s = gw.state();
                    let seq = s.seq;
                    s.seq += 1;
                    let availability = if s.starting {
                        v1::Availability::Starting
                    } else {
                        v1::Availability::Available
                    } as i32;
                    s.last_beacon = Some(Stamp::now());
                    if sent.len() == IN_FLIGHT {
                        sent.pop_front();
                    }
                    sent.push_back((seq, Instant::now(), s.starting));
                    beacon_message(
                        &gw.spec,
                        seq,
                        availability,
                        (s.applied_epoch, s.fence_epoch),
                        unchanged_accepted && shared.omit_unchanged.load(Ordering::Relaxed),
                    )
                };
                if tx.send(msg).await.is_err() {
                    break End::Broken(None);
                }
                shared.stats.beacons_sent.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                next += shared.interval();
                if next < now {
                    // Late (the machine is saturated): no burst to catch up.
                    next = now;
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    if let Some(monitor_message::Body::Ack(a)) = &m.body {
                        unchanged_accepted |= a.unchanged_subsystems_accepted;
                    }
                    if on_message(gw, shared, m, &sent) {
                        break End::Shutdown;
                    }
                }
                Ok(None) => break End::Broken(None),
                Err(status) => break End::Broken(leader_hint(&status).map(str::to_owned)),
            },
        }
    };
    gw.state().session_open = false;
    end
}

/// Handle one message; true when the monitors ordered the gateway to stop.
fn on_message(
    gw: &SimGateway,
    shared: &Shared,
    m: v1::MonitorMessage,
    sent: &VecDeque<(u64, Instant, bool)>,
) -> bool {
    let bytes = m.encoded_len();
    match m.body {
        Some(monitor_message::Body::Ack(ack)) => {
            let mut s = gw.state();
            s.acks += 1;
            s.lease_ms = ack.lease_ms;
            if let Some(&(_, at, was_starting)) = sent.iter().find(|(seq, _, _)| *seq == ack.seq) {
                shared.stats.ack(at.elapsed());
                if was_starting {
                    s.starting = false;
                }
            }
            false
        }
        Some(monitor_message::Body::MapSlice(slice)) => {
            let stamp = Stamp::now();
            shared.stats.slices.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .slice_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            let optimized = v1::AnaAccess::Optimized as i32;
            let mut serving = Vec::new();
            let mut waiting = Vec::new();
            let mut fence = 0;
            for v in &slice.ana_groups {
                if v.access == optimized {
                    if v.fence_complete {
                        serving.push(v.ana_group);
                        fence = fence.max(v.fence_epoch);
                    } else {
                        waiting.push(v.ana_group);
                    }
                }
            }
            let mut s = gw.state();
            s.applied_epoch = s.applied_epoch.max(slice.epoch);
            s.fence_epoch = s.fence_epoch.max(fence);
            s.serving = serving.clone();
            s.slices.push(SliceSeen {
                stamp,
                epoch: slice.epoch,
                serving,
                waiting,
                ana_groups: slice.ana_groups.len(),
                bytes,
            });
            false
        }
        Some(monitor_message::Body::Shutdown(order)) => {
            let mut s = gw.state();
            s.shutdown = Some(order.reason);
            s.serving.clear();
            true
        }
        None => false,
    }
}
