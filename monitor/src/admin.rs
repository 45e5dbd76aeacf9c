//! `AdminService`: what `nvme-gw` and orchestrators use. Writes are committed through the
//! leader; reads are linearizable unless the request asks for a possibly stale answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use gwmon_proto::convert::required;
use gwmon_proto::domain::{AnaGroupId, Epoch, Field, FieldError, GatewayId, GroupKey, Location};
use gwmon_proto::v1::{self, admin_service_server::AdminService};
use openraft::ChangeMembers;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::core::{write_error, Committed, Core};
use crate::error::{Limit, MonitorError};
use crate::events;
use crate::map::{
    Availability, Command, ConfigUpdate, GatewayMap, GroupState, Holder, MapConfig, Timestamp,
};

/// How many events a watch stream buffers towards a slow watcher (and reads at once);
/// beyond that it waits, and the window keeps the rest until the watcher is overrun.
const WATCH_BUFFER: usize = 256;

/// How long a new monitor may take to catch up as a learner before it is refused.
const LEARNER_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(10);

pub struct AdminGrpc {
    core: Core,
    /// The name of the fencer this monitor's leader loop runs ([`crate::fence::Fencer::name`]):
    /// health reports `none` because it is this monitor's setting, not the map's.
    fencer: &'static str,
    /// One permit per open `WatchEvents` stream.
    watchers: Arc<Semaphore>,
    /// Open `WatchEvents` streams per caller identity (with TLS).
    per_client: Arc<Mutex<BTreeMap<String, usize>>>,
}

/// At most this many `WatchEvents` streams for one certificate identity on one monitor, so
/// one client cannot take the whole [`MAX_WATCHERS`]. Without TLS there are no identities,
/// and only the monitor's bound holds.
pub const MAX_WATCHERS_PER_CLIENT: usize = 32;

/// A caller's place among [`MAX_WATCHERS_PER_CLIENT`], given back when dropped.
struct ClientWatch {
    open: Arc<Mutex<BTreeMap<String, usize>>>,
    client: String,
}

impl ClientWatch {
    fn take(
        open: &Arc<Mutex<BTreeMap<String, usize>>>,
        client: String,
    ) -> Result<ClientWatch, MonitorError> {
        let mut counts = open.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(client.clone()).or_default();
        if *n >= MAX_WATCHERS_PER_CLIENT {
            return Err(MonitorError::Limit(Limit::WatchersPerClient {
                max: MAX_WATCHERS_PER_CLIENT,
                client,
            }));
        }
        *n += 1;
        Ok(ClientWatch {
            open: open.clone(),
            client,
        })
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// At most this many `WatchEvents` streams open on one monitor at once: each holds a task
/// and a buffer of [`WATCH_BUFFER`] events, and dashboards and scripts need a handful.
pub const MAX_WATCHERS: usize = 256;

impl AdminGrpc {
    pub fn new(core: Core, fencer: &'static str) -> Self {
        AdminGrpc {
            core,
            fencer,
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            per_client: Arc::default(),
        }
    }

    async fn write(&self, cmd: Command) -> Result<Committed, Status> {
        Ok(self.core.propose(cmd).await?)
    }
}

fn key(k: Option<v1::GroupKey>) -> Result<GroupKey, MonitorError> {
    Ok(GroupKey::try_from(required(k, "key")?).map_err(|e| e.within("key"))?)
}

fn gateway(s: &str) -> Result<GatewayId, MonitorError> {
    Ok(s.parse::<GatewayId>().field("gateway_id")?)
}

fn location(s: &str) -> Result<Location, MonitorError> {
    Ok(s.parse::<Location>().field("location")?)
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn create_gateway(
        &self,
        req: Request<v1::CreateGatewayRequest>,
    ) -> Result<Response<v1::CreateGatewayResponse>, Status> {
        let r = req.into_inner();
        let (k, g) = (key(r.key)?, gateway(&r.gateway_id)?);
        let loc = if r.location.is_empty() {
            None
        } else {
            Some(location(&r.location)?)
        };
        let mut done = self
            .write(Command::CreateGateway {
                key: k.clone(),
                gateway: g.clone(),
            })
            .await?;
        if let Some(location) = loc {
            done = self
                .write(Command::SetLocation {
                    key: k.clone(),
                    gateway: g.clone(),
                    location,
                })
                .await?;
        }
        let ana_group = self.core.reader().read(|m| {
            m.group(&k)
                .and_then(|grp| grp.gateways.get(&g))
                .map_or(0, |gw| gw.ana_group.get())
        });
        Ok(Response::new(v1::CreateGatewayResponse {
            map_epoch: done.map_epoch.0,
            ana_group,
        }))
    }

    async fn delete_gateway(
        &self,
        req: Request<v1::DeleteGatewayRequest>,
    ) -> Result<Response<v1::DeleteGatewayResponse>, Status> {
        let r = req.into_inner();
        let (k, g) = (key(r.key)?, gateway(&r.gateway_id)?);
        let done = self
            .write(Command::DeleteGateway {
                key: k.clone(),
                gateway: g.clone(),
            })
            .await?;
        let gone = self
            .core
            .reader()
            .read(|m| m.group(&k).is_none_or(|grp| !grp.gateways.contains_key(&g)));
        Ok(Response::new(v1::DeleteGatewayResponse {
            map_epoch: done.map_epoch.0,
            gone,
        }))
    }

    async fn set_admin_state(
        &self,
        req: Request<v1::SetAdminStateRequest>,
    ) -> Result<Response<v1::SetAdminStateResponse>, Status> {
        let r = req.into_inner();
        let cmd = Command::SetAdminState {
            key: key(r.key)?,
            gateway: gateway(&r.gateway_id)?,
            enabled: r.enabled,
        };
        let done = self.write(cmd).await?;
        Ok(Response::new(v1::SetAdminStateResponse {
            map_epoch: done.map_epoch.0,
        }))
    }

    async fn set_location(
        &self,
        req: Request<v1::SetLocationRequest>,
    ) -> Result<Response<v1::SetLocationResponse>, Status> {
        let r = req.into_inner();
        let cmd = Command::SetLocation {
            key: key(r.key)?,
            gateway: gateway(&r.gateway_id)?,
            location: location(&r.location)?,
        };
        let done = self.write(cmd).await?;
        Ok(Response::new(v1::SetLocationResponse {
            map_epoch: done.map_epoch.0,
        }))
    }

    async fn disaster_set(
        &self,
        req: Request<v1::DisasterSetRequest>,
    ) -> Result<Response<v1::DisasterSetResponse>, Status> {
        let r = req.into_inner();
        let cmd = Command::DisasterSet {
            key: key(r.key)?,
            location: location(&r.location)?,
        };
        let done = self.write(cmd).await?;
        Ok(Response::new(v1::DisasterSetResponse {
            map_epoch: done.map_epoch.0,
        }))
    }

    async fn disaster_clear(
        &self,
        req: Request<v1::DisasterClearRequest>,
    ) -> Result<Response<v1::DisasterClearResponse>, Status> {
        let r = req.into_inner();
        let cmd = Command::DisasterClear {
            key: key(r.key)?,
            location: location(&r.location)?,
        };
        let done = self.write(cmd).await?;
        Ok(Response::new(v1::DisasterClearResponse {
            map_epoch: done.map_epoch.0,
        }))
    }

    async fn show_group(
        &self,
        req: Request<v1::ShowGroupRequest>,
    ) -> Result<Response<v1::ShowGroupResponse>, Status> {
        let r = req.into_inner();
        let k = key(r.key)?;
        // A group that does not exist is shown empty, as Ceph answers it (`num gws: 0`): a
        // script asking whether a group has gateways gets its answer, not an error.
        let group = self
            .core
            .read(r.stale, |m| match m.group(&k) {
                Some(g) => group_view(m, &k, g),
                None => group_view(m, &k, &GroupState::default()),
            })
            .await?;
        Ok(Response::new(v1::ShowGroupResponse { group: Some(group) }))
    }

    async fn show_all(
        &self,
        req: Request<v1::ShowAllRequest>,
    ) -> Result<Response<v1::ShowAllResponse>, Status> {
        let r = req.into_inner();
        let (map_epoch, groups) = self
            .core
            .read(r.stale, |m| {
                let groups = m
                    .groups()
                    .iter()
                    .map(|(k, g)| group_view(m, k, g))
                    .collect();
                (m.epoch().0, groups)
            })
            .await?;
        Ok(Response::new(v1::ShowAllResponse { map_epoch, groups }))
    }

    async fn listeners(
        &self,
        req: Request<v1::ListenersRequest>,
    ) -> Result<Response<v1::ListenersResponse>, Status> {
        let r = req.into_inner();
        let k = key(r.key)?;
        let listeners = self
            .core
            .read(r.stale, |m| {
                // Only available gateways' listeners, as Ceph lists them: a host connecting
                // to a listed listener reaches a gateway that serves. A group that does not
                // exist has none.
                m.group(&k).map_or_else(Vec::new, |g| {
                    g.gateways
                        .iter()
                        .filter(|(_, gw)| gw.availability == Availability::Available)
                        .flat_map(|(id, gw)| {
                            gw.subsystems.iter().flat_map(move |s| {
                                s.listeners.iter().map(move |l| v1::ListenerEntry {
                                    gateway_id: id.to_string(),
                                    nqn: s.nqn.to_string(),
                                    listener: Some(l.clone().into()),
                                })
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .await?;
        Ok(Response::new(v1::ListenersResponse { listeners }))
    }

    async fn blocklist_list(
        &self,
        req: Request<v1::BlocklistListRequest>,
    ) -> Result<Response<v1::BlocklistListResponse>, Status> {
        let r = req.into_inner();
        let entries = self
            .core
            .read(r.stale, |m| {
                m.groups()
                    .iter()
                    .flat_map(|(k, g)| {
                        g.fences.iter().map(move |f| v1::BlocklistEntry {
                            key: Some(k.clone().into()),
                            gateway_id: f.gateway.to_string(),
                            nonces: f.nonces.iter().map(ToString::to_string).collect(),
                            fence_epoch: f.epoch.0,
                            issued_at_ms: f.issued_at.as_millis(),
                            expires_at_ms: f.expires_at.map_or(0, Timestamp::as_millis),
                            completed: f.completed_at.is_some(),
                        })
                    })
                    .collect()
            })
            .await?;
        Ok(Response::new(v1::BlocklistListResponse { entries }))
    }

    async fn health(
        &self,
        _req: Request<v1::HealthRequest>,
    ) -> Result<Response<v1::HealthResponse>, Status> {
        let now = self.core.now();
        let mut checks = self.core.read(true, |m| health_checks(m, now)).await?;
        checks.extend(fencer_check(self.fencer));
        Ok(Response::new(v1::HealthResponse { checks }))
    }

    async fn cluster_status(
        &self,
        _req: Request<v1::ClusterStatusRequest>,
    ) -> Result<Response<v1::ClusterStatusResponse>, Status> {
        let m = self.core.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .map(|l| l.map_or(0, |l| l.index));
                v1::MonitorMember {
                    id: *id,
                    addr: node.addr.clone(),
                    peer_addr: node.peer_addr.clone(),
                    voter: voters.contains(id),
                    matched_index: matched,
                    lag: matched.map(|i| last.saturating_sub(i)),
                }
            })
            .collect();
        let features = self.core.reader().read(|map| map.features());
        Ok(Response::new(v1::ClusterStatusResponse {
            members,
            features,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index: m.last_applied.map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
        }))
    }

    async fn add_monitor(
        &self,
        req: Request<v1::AddMonitorRequest>,
    ) -> Result<Response<v1::AddMonitorResponse>, Status> {
        let r = req.into_inner();
        if r.id == 0 {
            return Err(MonitorError::Invalid(FieldError::new(
                "id",
                gwmon_proto::domain::Invalid::Zero,
            ))
            .into());
        }
        crate::config::check_addr(&r.addr)
            .map_err(|e| Status::invalid_argument(format!("invalid request: addr {e}")))?;
        let peer_addr = if r.peer_addr.is_empty() {
            crate::raft::default_peer_addr(&r.addr).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "invalid request: addr {}: its port plus 2 is no port; give peer_addr",
                    r.addr
                ))
            })?
        } else {
            crate::config::check_addr(&r.peer_addr)
                .map_err(|e| Status::invalid_argument(format!("invalid request: peer_addr {e}")))?;
            r.peer_addr.clone()
        };
        if self.core.lease().is_none() {
            return Err(self.core.not_confirmed().into());
        }
        // The whole change runs as a task of its own, so a caller that gives up (a client
        // timeout, a dropped connection) does not cancel it half way: a learner that does not
        // catch up is always taken out again, whether or not anyone waits for the answer.
        let raft = self.core.raft().clone();
        let node = crate::raft::MonitorNode::new(r.addr.clone(), peer_addr.clone());
        let resp = tokio::spawn(add_voter(raft, r.id, node))
            .await
            .map_err(|e| Status::internal(format!("adding monitor {} failed: {e}", r.id)))??;
        Ok(Response::new(v1::AddMonitorResponse { log_index: resp }))
    }

    async fn export_snapshot(
        &self,
        _req: Request<v1::ExportSnapshotRequest>,
    ) -> Result<Response<v1::ExportSnapshotResponse>, Status> {
        // A linearizable read: everything committed before the call is in it.
        self.core.read(false, |_| ()).await?;
        let e = self.core.reader().export().map_err(MonitorError::from)?;
        Ok(Response::new(v1::ExportSnapshotResponse {
            snapshot: e.payload,
            index: e.last_applied.map_or(0, |l| l.index),
            term: e.last_applied.map_or(0, |l| l.leader_id.term),
            map_epoch: e.map_epoch,
        }))
    }

    async fn remove_monitor(
        &self,
        req: Request<v1::RemoveMonitorRequest>,
    ) -> Result<Response<v1::RemoveMonitorResponse>, Status> {
        let r = req.into_inner();
        if self.core.lease().is_none() {
            return Err(self.core.not_confirmed().into());
        }
        let m = self.core.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if !membership.nodes().any(|(id, _)| *id == r.id) {
            return Err(Status::not_found(format!(
                "no monitor {} in the cluster",
                r.id
            )));
        }
        // A voter leaves the voters and the membership in one change (not retained as a
        // learner); a learner is no voter, and only RemoveNodes takes it out (RemoveVoters
        // of a learner commits a change that changes nothing).
        let change = if membership.voter_ids().any(|id| id == r.id) {
            ChangeMembers::RemoveVoters([r.id].into())
        } else {
            ChangeMembers::RemoveNodes([r.id].into())
        };
        let resp = self
            .core
            .raft()
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        Ok(Response::new(v1::RemoveMonitorResponse {
            log_index: resp.log_id.index,
        }))
    }

    type WatchEventsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<v1::WatchEventsResponse, Status>> + Send>,
    >;

    async fn get_config(
        &self,
        req: Request<v1::GetConfigRequest>,
    ) -> Result<Response<v1::GetConfigResponse>, Status> {
        let stale = req.into_inner().stale;
        let (in_force, min, map_epoch) = self
            .core
            .read(stale, |m| {
                (
                    settings(m.config()),
                    settings(&m.config().lowest()),
                    m.epoch().0,
                )
            })
            .await?;
        Ok(Response::new(v1::GetConfigResponse {
            settings: Some(in_force),
            defaults: Some(settings_of_default()),
            map_epoch,
            min: Some(min),
            max: Some(settings(&MapConfig::highest())),
        }))
    }

    async fn set_config(
        &self,
        req: Request<v1::SetConfigRequest>,
    ) -> Result<Response<v1::SetConfigResponse>, Status> {
        let u = required(req.into_inner().update, "update").map_err(MonitorError::from)?;
        let update = ConfigUpdate {
            max_gateways_per_group: u.max_gateways_per_group,
            beacon_grace_ms: u.beacon_grace_ms,
            fence_timeout_ms: u.fence_timeout_ms,
            failback_prepare_ms: u.failback_prepare_ms,
            failback_delay_ms: u.failback_delay_ms,
            skip_failover_redeploy_ms: u.skip_failover_redeploy_ms,
            skip_failover_admin_ms: u.skip_failover_admin_ms,
            blocklist_expiry_ms: u.blocklist_expiry_ms,
            delete_grace_ms: u.delete_grace_ms,
            max_groups: u.max_groups,
            max_gateways: u.max_gateways,
        };
        if update.is_empty() {
            return Err(Status::invalid_argument(
                "invalid request: update sets no setting",
            ));
        }
        let done = self.write(Command::UpdateConfig(update)).await?;
        // Read on this (the leader's) copy, which has applied the change.
        let now = self.core.reader().read(|m| settings(m.config()));
        Ok(Response::new(v1::SetConfigResponse {
            map_epoch: done.map_epoch.0,
            settings: Some(now),
        }))
    }

    /// Served by any monitor from its own window of applied events (see `events`): a
    /// watcher needs no leader, which is when it most wants to watch.
    async fn watch_events(
        &self,
        req: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let client = match crate::auth::Caller::of(&req) {
            crate::auth::Caller::Anyone => None,
            caller => Some(ClientWatch::take(&self.per_client, caller.to_string())?),
        };
        let req = req.into_inner();
        let permit = self
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| MonitorError::Limit(Limit::Watchers { max: MAX_WATCHERS }))?;
        let log = self.core.events().clone();
        let mut cursor = match req.after_epoch {
            None if req.from_oldest => log.oldest(),
            after => log.cursor(after.map(Epoch)).map_err(MonitorError::from)?,
        };
        let stop_at = req.stop_when_caught_up.then(|| log.end());
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            // Held for as long as the stream is served.
            let _permit = (permit, client);
            loop {
                if stop_at.is_some_and(|end| cursor >= end) {
                    return;
                }
                let batch = match log.read_until(&mut cursor, WATCH_BUFFER, stop_at) {
                    Ok(batch) => batch,
                    Err(e) => {
                        // The watcher may be gone already; nothing more to tell anyone.
                        let _ = tx.send(Err(MonitorError::from(e).into())).await;
                        return;
                    }
                };
                if batch.is_empty() {
                    tokio::select! {
                        () = log.wait(&cursor) => continue,
                        () = tx.closed() => return,
                    }
                }
                for record in &batch {
                    if tx.send(Ok(events::to_wire(record))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The `nvme-gw show` view of one group.
pub fn group_view(map: &GatewayMap, key: &GroupKey, g: &GroupState) -> v1::GroupView {
    let counts = g.namespace_counts(false);
    let ana_groups: Vec<u32> = g
        .gateways
        .values()
        .filter(|gw| gw.availability != Availability::Deleting)
        .map(|gw| gw.ana_group.get())
        .collect();
    v1::GroupView {
        key: Some(key.clone().into()),
        epoch: g.epoch.0,
        map_epoch: map.epoch().0,
        gateways: g
            .gateways
            .iter()
            .map(|(id, gw)| v1::GatewayView {
                gateway_id: id.to_string(),
                ana_group: gw.ana_group.get(),
                location: gw.location.to_string(),
                admin_enabled: gw.admin == crate::map::AdminState::Enabled,
                availability: gw.availability.to_string(),
                performed_full_startup: gw.performed_full_startup,
                num_namespaces: u32::try_from(g.own_namespaces_of(gw, &counts)).unwrap_or(u32::MAX),
                num_listeners: u32::try_from(gw.num_listeners()).unwrap_or(u32::MAX),
                ana_states: g
                    .ana
                    .keys()
                    .map(|a| v1::AnaStateEntry {
                        ana_group: a.get(),
                        state: g.ana_state(id, *a).to_string(),
                    })
                    .collect(),
            })
            .collect(),
        ana_groups,
        num_namespaces: u32::try_from(g.num_namespaces()).unwrap_or(u32::MAX),
        disaster_locations: g.disaster.keys().map(ToString::to_string).collect(),
        features: if map.features() >= crate::map::features::NAMESPACE_BALANCING {
            "LB".to_owned()
        } else {
            String::new()
        },
        moving_namespaces: u32::try_from(g.placement.moving.len()).unwrap_or(u32::MAX),
    }
}

/// Warnings an operator should see, as Ceph raises them and a few more.
pub fn health_checks(map: &GatewayMap, now: Timestamp) -> Vec<v1::HealthCheck> {
    let config = map.config();
    let mut checks = config_checks(config);
    for (k, g) in map.groups() {
        gateway_checks(k, g, config, now, &mut checks);
        group_checks(k, g, config, now, &mut checks);
    }
    checks
}

fn check(severity: v1::Severity, code: &str, message: String) -> v1::HealthCheck {
    v1::HealthCheck {
        code: code.to_owned(),
        severity: severity.into(),
        message,
    }
}

fn warn(code: &str, message: String) -> v1::HealthCheck {
    check(v1::Severity::Warning, code, message)
}

/// Settings out of range or at odds with each other.
fn config_checks(config: &MapConfig) -> Vec<v1::HealthCheck> {
    let mut checks = Vec::new();
    // A map written by an older monitor may hold values the ranges now refuse; the map
    // keeps working with them, but the operator should set them back in range.
    if let Err(e) = config.validate() {
        checks.push(warn("NVMEOF_CONFIG_OUT_OF_RANGE", e.to_string()));
    }
    if config.failback_prepare_ms > config.beacon_grace_ms {
        checks.push(warn(
            "NVMEOF_FAILBACK_SLOW",
            format!(
                "failback_prepare_ms ({} ms) is longer than beacon_grace_ms ({} ms): every failback leaves its ANA group without an optimized path longer than a gateway failure would",
                config.failback_prepare_ms, config.beacon_grace_ms
            ),
        ));
    }
    checks
}

/// A group without a second gateway, and gateways down, flapping or stuck deleting.
fn gateway_checks(
    k: &GroupKey,
    g: &GroupState,
    config: &MapConfig,
    now: Timestamp,
    checks: &mut Vec<v1::HealthCheck>,
) {
    let live = g
        .gateways
        .values()
        .filter(|gw| gw.availability != Availability::Deleting)
        .count();
    if live == 1 {
        checks.push(warn(
            "NVMEOF_SINGLE_GATEWAY",
            format!("group {k} has only 1 gateway; high availability is not possible"),
        ));
    }
    for (id, gw) in &g.gateways {
        if gw.availability == Availability::Unavailable {
            checks.push(warn(
                "NVMEOF_GATEWAY_DOWN",
                format!("gateway {id} of group {k} is unavailable"),
            ));
        }
        if let Some(until) = g.damping.get(id).and_then(|d| d.until(now)) {
            checks.push(warn(
                "NVMEOF_GATEWAY_FLAPPING",
                format!(
                    "gateway {id} of group {k} keeps going down: it is damped for another {} s and gets no failback until then",
                    until.as_millis().saturating_sub(now.as_millis()).div_ceil(1000)
                ),
            ));
        }
        if let Some(since) = gw.deleting_since {
            if now.as_millis().saturating_sub(since.as_millis()) > config.delete_grace_ms {
                checks.push(warn(
                    "NVMEOF_GATEWAY_DELETING",
                    format!(
                        "gateway {id} of group {k} has been deleting for over {} s; its ANA group still has namespaces",
                        config.delete_grace_ms / 1000
                    ),
                ));
            }
        }
    }
}

/// Balancing paused, ANA groups without an optimized path, fences not completing.
fn group_checks(
    k: &GroupKey,
    g: &GroupState,
    config: &MapConfig,
    now: Timestamp,
    checks: &mut Vec<v1::HealthCheck>,
) {
    if g.placement.paused_until > now {
        checks.push(warn(
            "NVMEOF_BALANCE_PAUSED",
            format!(
                "namespace balancing in group {k} is paused for another {} s: a gateway did not move a namespace within the grace (a release before balancing, or a target that cannot move namespaces)",
                g.placement
                    .paused_until
                    .as_millis()
                    .saturating_sub(now.as_millis())
                    .div_ceil(1000)
            ),
        ));
    }
    let counts = g.namespace_counts(true);
    for ana_group in g.ana.keys() {
        if counts.get(ana_group).is_none_or(|n| *n == 0) {
            continue;
        }
        let Some(since) = g.dark_since(*ana_group, config) else {
            continue;
        };
        let dark_ms = now.as_millis().saturating_sub(since.as_millis());
        if dark_ms > config.beacon_grace_ms {
            checks.push(check(
                v1::Severity::Error,
                "NVMEOF_ANA_GROUP_DARK",
                format!(
                    "ANA group {ana_group} of group {k} has had no optimized path for {} s ({}); hosts cannot do I/O through it",
                    dark_ms / 1000,
                    dark_reason(g, *ana_group)
                ),
            ));
        }
    }
    for f in g.fences.iter().filter(|f| f.completed_at.is_none()) {
        if now.as_millis().saturating_sub(f.issued_at.as_millis()) > config.fence_timeout_ms {
            checks.push(check(
                v1::Severity::Error,
                "NVMEOF_FENCE_PENDING",
                format!(
                    "fence of gateway {} in group {k} (epoch {}) is not complete; its ANA groups stay unserved until it is",
                    f.gateway, f.epoch
                ),
            ));
        }
    }
}

/// Why an ANA group has no optimized path, for the health message.
fn dark_reason(g: &GroupState, ana_group: AnaGroupId) -> String {
    match g.ana.get(&ana_group).map(|a| &a.holder) {
        Some(Holder::WaitFence { gateway, .. }) => {
            format!("failover to {gateway} waits for its fence")
        }
        Some(Holder::Handover { from, to, .. }) => format!("failback from {from} to {to}"),
        _ => "no gateway holds it".to_owned(),
    }
}

/// `NVMEOF_NO_FENCER` when the answering monitor runs no fencer: a failover then promotes
/// the new owner without cutting off the old one, which is unsafe for a gateway whose
/// process is paused or dead while its data plane keeps serving. Separate from
/// [`health_checks`] because it is this monitor's configuration, not the map.
pub fn fencer_check(fencer: &str) -> Option<v1::HealthCheck> {
    (fencer == crate::fence::NoFence::NAME).then(|| v1::HealthCheck {
        code: "NVMEOF_NO_FENCER".into(),
        severity: v1::Severity::Warning.into(),
        message: "this monitor's fencer is none: a paused or crashed gateway whose data plane keeps serving is not cut off before its ANA groups fail over".into(),
    })
}

/// The wire form of the tunables.
fn settings(c: &MapConfig) -> v1::MapSettings {
    v1::MapSettings {
        max_gateways_per_group: c.max_gateways_per_group,
        beacon_grace_ms: c.beacon_grace_ms,
        fence_timeout_ms: c.fence_timeout_ms,
        failback_prepare_ms: c.failback_prepare_ms,
        failback_delay_ms: c.failback_delay_ms,
        skip_failover_redeploy_ms: c.skip_failover_redeploy_ms,
        skip_failover_admin_ms: c.skip_failover_admin_ms,
        blocklist_expiry_ms: c.blocklist_expiry_ms,
        delete_grace_ms: c.delete_grace_ms,
        max_groups: c.max_groups,
        max_gateways: c.max_gateways,
    }
}

fn settings_of_default() -> v1::MapSettings {
    settings(&MapConfig::default())
}

/// Add monitor `id` as a learner, wait for it to catch up, and make it a voter; one that
/// does not catch up within [`LEARNER_CATCH_UP`] (a wrong address, a monitor not started)
/// is taken out again instead of being made a voter the quorum would then wait for.
/// Returns the log index of the change that made it a voter.
async fn add_voter(
    raft: crate::raft::Raft,
    id: u64,
    node: crate::raft::MonitorNode,
) -> Result<u64, Status> {
    let (addr, peer) = (node.addr.clone(), node.peer_addr.clone());
    // Not blocking: openraft's own wait for the learner has no time limit.
    let added = raft
        .add_learner(id, node, false)
        .await
        .map_err(write_error)?;
    let target = added.log_id.index;
    let caught_up = raft
        .wait(Some(LEARNER_CATCH_UP))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|rep| rep.get(&id))
                    .is_some_and(|l| l.is_some_and(|l| l.index >= target))
            },
            "learner caught up",
        )
        .await;
    if caught_up.is_err() {
        if let Err(e) = raft
            .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
            .await
        {
            tracing::warn!(monitor = id, error = %write_error(e), "could not take back the learner that did not catch up");
        }
        return Err(Status::failed_precondition(format!(
            "monitor {id} at {addr} (peers: {peer}) did not catch up within {} s; it was not added (is it running with --join, its peer port at that address?)",
            LEARNER_CATCH_UP.as_secs()
        )));
    }
    let resp = raft
        .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
        .await
        .map_err(write_error)?;
    Ok(resp.log_id.index)
}
