//! `GatewayService`: one long-lived bidirectional stream per gateway.
//!
//! Up: `Hello`, then beacons. Down: an ack for every beacon (the gateway's lease renewal),
//! the gateway's map slice whenever it changes, and a shutdown order when the map has
//! declared the gateway gone. Only the leader holds sessions: the others refuse with the
//! leader's address, and a session ends when its monitor stops leading, so the gateway
//! follows the leader.

use std::pin::Pin;
use std::time::Duration;

use gwmon_proto::domain::{
    self, AnaAccess, AnaGroupId, GatewayId, GatewayReport, GroupKey, MapSlice,
    ReportedAvailability, ShutdownKind, Subsystem,
};
use gwmon_proto::v1::{self, gateway_service_server::GatewayService};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::auth::Caller;
use crate::core::Core;
use crate::error::{Limit, MonitorError};
use crate::liveness::{Liveness, Unchanged};
use crate::map::{Availability, MapError};
use std::sync::Arc;

/// How long a gateway may take to say hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for a gateway before the session is considered stuck.
const OUTBOX: usize = 64;

/// What a session queues for its gateway. Boxed: a channel allocates its slots in blocks
/// of 32 up front, and a block of messages held inline was 2.8 KiB per session.
type Outgoing = Box<Result<v1::MonitorMessage, Status>>;

/// Beacons one session may send per second, sustained, and in a burst. Five times the
/// fastest interval anyone configures (100 ms), with room for the extra beacons a gateway
/// sends right after applying a map: a session over it is broken or hostile, and each of
/// its beacons costs the leader a conversion, a comparison and possibly a commit.
const BEACONS_PER_SECOND: u32 = 50;
const BEACON_BURST: u32 = 100;

/// A token bucket over a session's beacons.
struct BeaconBudget {
    tokens: f64,
    at: tokio::time::Instant,
}

impl BeaconBudget {
    fn new() -> Self {
        BeaconBudget {
            tokens: f64::from(BEACON_BURST),
            at: tokio::time::Instant::now(),
        }
    }

    /// Take one beacon's token; false if the session is over its rate.
    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * f64::from(BEACONS_PER_SECOND);
        self.tokens = (self.tokens + refill).min(f64::from(BEACON_BURST));
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

pub struct GatewayGrpc {
    core: Core,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
}

impl GatewayGrpc {
    pub fn new(core: Core, liveness: Arc<Liveness>, shutdown: CancellationToken) -> Self {
        GatewayGrpc {
            core,
            liveness,
            shutdown,
        }
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<v1::MonitorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl GatewayService for GatewayGrpc {
    type SessionStream = Outbound;

    async fn session(
        &self,
        req: Request<Streaming<v1::GatewayMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if self.core.lease().is_none() {
            return Err(self.core.not_confirmed().into());
        }
        let caller = Caller::of(&req);
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10 s"))?
            .ok_or_else(|| Status::cancelled("stream closed before hello"))??;
        let hello = match domain::GatewayMessage::try_from(first) {
            Ok(domain::GatewayMessage::Hello(h)) => h,
            Ok(domain::GatewayMessage::Beacon { .. }) => {
                return Err(Status::invalid_argument(
                    "invalid request: the first message must be a hello",
                ))
            }
            Err(e) => return Err(MonitorError::Invalid(e).into()),
        };
        caller
            .check_gateway(&hello.key, &hello.gateway)
            .map_err(MonitorError::from)?;
        // Refuse unknown gateways up front: the gateway retries until an admin creates it.
        let known = self.core.reader().read(|m| {
            let group = m
                .group(&hello.key)
                .ok_or_else(|| MapError::UnknownGroup(hello.key.clone()))?;
            let gw =
                group
                    .gateways
                    .get(&hello.gateway)
                    .ok_or_else(|| MapError::UnknownGateway {
                        key: hello.key.clone(),
                        gateway: hello.gateway.clone(),
                    })?;
            if gw.availability == Availability::Deleting {
                return Err(MapError::GatewayDeleting {
                    key: hello.key.clone(),
                    gateway: hello.gateway.clone(),
                });
            }
            Ok(())
        });
        known.map_err(MonitorError::Refused)?;
        // A second process with this id is refused while the first holds a lease.
        if let Err(e) = self
            .liveness
            .admit(&hello.key, &hello.gateway, hello.incarnation)
        {
            warn!(pool = %hello.key.pool, group = %hello.key.group, gateway = %hello.gateway,
                  incarnation = hello.incarnation, error = %e, "session refused");
            return Err(e.into());
        }
        // Every log line of the session carries the gateway and its group.
        let span = info_span!("gateway_session", pool = %hello.key.pool, group = %hello.key.group, gateway = %hello.gateway);
        span.in_scope(|| info!(version = %hello.software_version, "gateway session opened"));

        let (tx, rx) = mpsc::channel(OUTBOX);
        let session = Session {
            core: self.core.clone(),
            liveness: self.liveness.clone(),
            key: hello.key,
            gateway: hello.gateway,
            incarnation: hello.incarnation,
            tx,
            last_sent: None,
            listed: None,
            matched: None,
            beaconed: false,
            budget: BeaconBudget::new(),
        };
        let stop = self.shutdown.clone();
        tokio::spawn(session.run(inbound, stop).instrument(span));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(|m| *m),
        )))
    }
}

struct Session {
    core: Core,
    liveness: Arc<Liveness>,
    key: GroupKey,
    gateway: GatewayId,
    /// The process this session serves; its beacons must name it.
    incarnation: u64,
    tx: mpsc::Sender<Outgoing>,
    last_sent: Option<MapSlice>,
    /// The subsystems of this session's last beacon that listed them: what a beacon with
    /// `subsystems_unchanged` stands for.
    listed: Option<Vec<Subsystem>>,
    /// The map's list of the gateway's subsystems last found equal to `listed`.
    matched: Option<Arc<Vec<Subsystem>>>,
    /// Whether a beacon of this session has been taken: until then an `Unavailable` map
    /// entry is the previous process's, which this one is about to replace.
    beaconed: bool,
    budget: BeaconBudget,
}

enum Next {
    Continue,
    End,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<v1::GatewayMessage>, stop: CancellationToken) {
        // Counted open for exactly as long as this task runs, however it ends.
        let _open = self.core.telemetry().session_opened();
        // Only this gateway's group's changes (and changes of every group) concern it.
        let mut changes = self.core.reader().group_changes(&self.key);
        let mut leadership = self.core.leadership();
        if let Next::End = self.push_slice().await {
            return;
        }
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => {
                    self.refuse(Status::unavailable("monitor shutting down")).await
                }
                msg = inbound.next() => match msg {
                    None => Next::End,
                    Some(Err(e)) => {
                        debug!(error = %e, "gateway stream ended");
                        Next::End
                    }
                    // Boxed, as is a slice's push: the task's future then holds only
                    // what waits between messages (it was 4.3 KiB per gateway).
                    Some(Ok(m)) => Box::pin(self.on_message(m)).await,
                },
                () = changes.changed() => Box::pin(self.push_slice()).await,
                changed = leadership.changed() => match changed {
                    Err(_) => Next::End,
                    Ok(()) => {
                        let now = *leadership.borrow_and_update();
                        if !now.leading {
                            self.refuse(MonitorError::NotLeader {
                                leader: self.core.leader_addr(),
                            }.into()).await
                        } else if !now.in_contact {
                            // Acks would stop for want of quorum contact: closing the
                            // session sends the gateway to the monitor that leads now.
                            info!("no quorum contact: closing the session so the gateway finds the leader");
                            self.refuse(self.core.not_confirmed().into()).await
                        } else {
                            Next::Continue
                        }
                    }
                },
            };
            if let Next::End = next {
                info!("gateway session closed");
                return;
            }
        }
    }

    /// Tell the gateway why its session ends, and end it.
    async fn refuse(&self, status: Status) -> Next {
        let _ = self.tx.send(Box::new(Err(status))).await;
        Next::End
    }

    async fn send(&self, msg: v1::MonitorMessage) -> Next {
        match self.tx.send(Box::new(Ok(msg))).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::End,
        }
    }

    async fn on_message(&mut self, msg: v1::GatewayMessage) -> Next {
        // Checked before the message is even converted: that is work too.
        if !self.budget.take() {
            let limit = Limit::BeaconRate {
                per_second: BEACONS_PER_SECOND,
                burst: BEACON_BURST,
            };
            warn!(error = %limit, "session closed");
            return self.refuse(MonitorError::Limit(limit).into()).await;
        }
        let (report, subsystems_unchanged) = match self.take_beacon(msg) {
            Ok(beacon) => beacon,
            Err(status) => return self.refuse(status).await,
        };
        let seq = report.seq;
        let restarted = report.availability == ReportedAvailability::Starting;
        let unchanged = match (&self.listed, subsystems_unchanged) {
            (Some(listed), true) => Some(Unchanged {
                listed,
                matched: &mut self.matched,
            }),
            _ => None,
        };
        match self
            .liveness
            .beacon(
                &self.key,
                &self.gateway,
                self.incarnation,
                report,
                unchanged,
            )
            .await
        {
            Ok(ack) => {
                let first = !std::mem::replace(&mut self.beaconed, true);
                if let Some(lease) = ack.lease {
                    let ack = domain::MonitorMessage::Ack(domain::Ack {
                        seq,
                        epoch: ack.group_epoch,
                        map_epoch: ack.map_epoch,
                        lease,
                        unchanged_subsystems_accepted: true,
                    });
                    if let Next::End = self.send(ack.into()).await {
                        return Next::End;
                    }
                }
                if restarted {
                    // A restarted process has applied nothing yet: resend even an
                    // unchanged slice.
                    self.last_sent = None;
                }
                // A beacon that committed nothing left the map as it was, and any other
                // change of the gateway's group wakes the session by itself: building the
                // slice again on every beacon would find it unchanged. The first beacon may
                // end a failed gateway's session.
                if ack.committed || restarted || first {
                    self.push_slice().await
                } else {
                    Next::Continue
                }
            }
            Err(MonitorError::Refused(MapError::StaleBeacon { .. })) => {
                debug!(seq, "late beacon ignored");
                Next::Continue
            }
            Err(e) => {
                warn!(error = %e, "beacon refused");
                self.refuse(e.into()).await
            }
        }
    }

    /// A beacon of this session's process: its report, and whether it left its
    /// subsystems out as unchanged. Anything else is refused with the status that ends the
    /// session.
    fn take_beacon(&mut self, msg: v1::GatewayMessage) -> Result<(GatewayReport, bool), Status> {
        match domain::GatewayMessage::try_from(msg) {
            Ok(domain::GatewayMessage::Beacon {
                incarnation,
                report,
                subsystems_unchanged,
            }) if incarnation == self.incarnation => {
                if !subsystems_unchanged {
                    self.listed = Some(report.subsystems.clone());
                    self.matched = None;
                } else if self.listed.is_none() {
                    return Err(Status::invalid_argument(
                        "invalid request: beacon.subsystems_unchanged before any beacon \
                         of this session listed the subsystems",
                    ));
                }
                Ok((report, subsystems_unchanged))
            }
            Ok(domain::GatewayMessage::Beacon { incarnation, .. }) => {
                Err(Status::invalid_argument(format!(
                    "invalid request: beacon.incarnation {incarnation:016x} is not the session's {:016x}",
                    self.incarnation
                )))
            }
            Ok(domain::GatewayMessage::Hello(_)) => Err(Status::invalid_argument(
                "invalid request: hello sent twice",
            )),
            Err(e) => Err(MonitorError::Invalid(e).into()),
        }
    }

    /// Send the gateway's slice if it changed, or the order to stop if the map says the
    /// gateway is gone.
    async fn push_slice(&mut self) -> Next {
        // The session wakes as soon as the change is applied: the delivery phase is timed
        // from here to the slice being handed to the stream.
        let woke = tokio::time::Instant::now();
        // A monitor that has lost quorum contact may have been deposed: its map may be
        // older than what the gateway serves under a newer leader's lease.
        if self.core.contact_deadline() <= woke
            && !gwmon_proto::mutation::active(gwmon_proto::mutation::Mutation::StaleSliceUnderLease)
        {
            info!("no quorum contact: closing the session so the gateway finds the leader");
            return self.refuse(self.core.not_confirmed().into()).await;
        }
        let (slice, availability, releasing) = self.core.reader().read(|m| {
            let group = m.group(&self.key);
            let slice = group.and_then(|g| g.slice(&self.gateway));
            let availability = group
                .and_then(|g| g.gateways.get(&self.gateway))
                .map(|gw| gw.availability);
            let releasing = group.is_some_and(|g| g.releasing(&self.gateway));
            (slice, availability, releasing)
        });
        let reason = match availability {
            None => Some((ShutdownKind::Removed, "the gateway was removed from the map")),
            // A deleted gateway is first sent the slice that stops it, and ordered to exit
            // once it has confirmed (or been fenced): its groups then move without a fence.
            Some(Availability::Deleting) if !releasing => {
                Some((ShutdownKind::Deleted, "the gateway was deleted"))
            }
            Some(Availability::Unavailable) if self.beaconed => Some((
                ShutdownKind::DeclaredFailed,
                "the monitors declared the gateway failed; it must stop serving and rejoin as a new process",
            )),
            _ => None,
        };
        if let Some(slice) = slice {
            if self.last_sent.as_ref() != Some(&slice) {
                let newly_serving = serving(&slice).into_iter().any(|g| {
                    !self
                        .last_sent
                        .as_ref()
                        .is_some_and(|s| serving(s).contains(&g))
                });
                let epoch = slice.epoch;
                self.last_sent = Some(slice.clone());
                if let Next::End = self
                    .send(domain::MonitorMessage::MapSlice(slice).into())
                    .await
                {
                    return Next::End;
                }
                if newly_serving {
                    self.core.telemetry().delivered(woke.elapsed());
                    debug!(%epoch, "slice sent: the gateway may now serve an ANA group");
                }
            }
        }
        if let Some((kind, reason)) = reason {
            info!(reason, "ordering the gateway to stop");
            let _ = self
                .send(
                    domain::MonitorMessage::Shutdown {
                        kind,
                        reason: reason.to_owned(),
                    }
                    .into(),
                )
                .await;
            return Next::End;
        }
        Next::Continue
    }
}

/// The ANA groups a slice lets its gateway serve: optimized with the fence confirmed.
fn serving(slice: &MapSlice) -> Vec<AnaGroupId> {
    slice
        .ana_groups
        .iter()
        .filter(|v| v.access == AnaAccess::Optimized && v.fence_complete)
        .map(|v| v.ana_group)
        .collect()
}
