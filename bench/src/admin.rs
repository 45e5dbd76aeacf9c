//! The admin API client: writes and reads go to the leader, following the `gwmon-leader`
//! redirect header and retrying another monitor while an election runs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gwmon_proto::leader::leader_hint;
use gwmon_proto::v1::admin_service_client::AdminServiceClient;
use gwmon_proto::v1::{self, GroupKey};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{BenchError, Result};

/// How long one admin call may keep retrying (elections included).
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// A channel to `addr` that connects on first use.
pub fn lazy_channel(addr: &str) -> Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| BenchError::connect(format!("address {addr}"), e))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

#[derive(Clone)]
pub struct Admin {
    addrs: Vec<String>,
    leader: Arc<Mutex<Option<String>>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Admin {
    pub fn new(addrs: Vec<String>) -> Admin {
        Admin {
            addrs,
            leader: Arc::new(Mutex::new(None)),
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = lazy_channel(addr)?;
        map.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// A client of one monitor, whoever leads.
    pub fn client_at(&self, addr: &str) -> Result<AdminServiceClient<Channel>> {
        Ok(AdminServiceClient::new(self.channel(addr)?))
    }

    fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(PoisonError::into_inner) = addr;
    }

    /// The leader's address, if a redirect or a status named it.
    pub fn known_leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Call the leader: follow a redirect at once, retry another monitor (after 50 ms)
    /// while none can serve, give up after 30 s or on a refusal.
    pub async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(AdminServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let end = Instant::now() + CALL_DEADLINE;
        let mut next = 0usize;
        loop {
            let addr = match self.known_leader() {
                Some(a) => a,
                None => {
                    if self.addrs.is_empty() {
                        return Err(BenchError::failed(format!("{what}: no monitor address")));
                    }
                    let a = self.addrs[next % self.addrs.len()].clone();
                    next += 1;
                    a
                }
            };
            let status = match f(self.client_at(&addr)?).await {
                Ok(resp) => {
                    self.set_leader(Some(addr));
                    return Ok(resp.into_inner());
                }
                Err(s) => s,
            };
            if Instant::now() >= end {
                return Err(BenchError::rpc(what, &status));
            }
            if let Some(hint) = leader_hint(&status) {
                if hint != addr {
                    self.set_leader(Some(hint.to_owned()));
                    continue;
                }
            }
            match status.code() {
                Code::Unavailable
                | Code::FailedPrecondition
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Internal => {
                    self.set_leader(None);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => return Err(BenchError::rpc(what, &status)),
            }
        }
    }

    /// The Raft view of one monitor, without any redirect.
    pub async fn cluster_status(&self, addr: &str) -> Result<v1::ClusterStatusResponse> {
        let mut c = self.client_at(addr)?;
        let resp = tokio::time::timeout(
            Duration::from_secs(2),
            c.cluster_status(v1::ClusterStatusRequest {}),
        )
        .await
        .map_err(|_| {
            BenchError::timeout(format!("cluster status of {addr}"), Duration::from_secs(2))
        })?
        .map_err(|s| BenchError::rpc(format!("cluster status of {addr}"), &s))?;
        Ok(resp.into_inner())
    }

    pub async fn create_gateway(&self, key: &GroupKey, id: &str) -> Result<u32> {
        let resp = self
            .call(&format!("create gateway {id}"), |mut c| {
                let req = v1::CreateGatewayRequest {
                    key: Some(key.clone()),
                    gateway_id: id.to_owned(),
                    location: String::new(),
                };
                async move { c.create_gateway(req).await }
            })
            .await?;
        Ok(resp.ana_group)
    }

    /// Sets the map's beacon grace (before gateways connect: with none available, any
    /// valid value is accepted at once).
    pub async fn set_grace(&self, grace_ms: u64) -> Result<u64> {
        let resp = self
            .call("set the beacon grace", |mut c| {
                let req = v1::SetConfigRequest {
                    update: Some(v1::MapSettingsUpdate {
                        beacon_grace_ms: Some(grace_ms),
                        ..Default::default()
                    }),
                };
                async move { c.set_config(req).await }
            })
            .await?;
        Ok(resp.map_epoch)
    }

    /// Lets the cluster take as many groups and gateways as the bench may create (the
    /// defaults, 1,024 groups and 4,096 gateways, are below the largest sizes).
    pub async fn lift_caps(&self) -> Result<u64> {
        let most = u32::try_from(crate::config::MAX_GATEWAYS).unwrap_or(u32::MAX);
        let resp = self
            .call("raise max_groups and max_gateways", |mut c| {
                let req = v1::SetConfigRequest {
                    update: Some(v1::MapSettingsUpdate {
                        max_groups: Some(most),
                        max_gateways: Some(most),
                        ..Default::default()
                    }),
                };
                async move { c.set_config(req).await }
            })
            .await?;
        Ok(resp.map_epoch)
    }

    /// Lets a group take `max` gateways (16 by default).
    pub async fn set_max_per_group(&self, max: u32) -> Result<u64> {
        let resp = self
            .call("raise max_gateways_per_group", |mut c| {
                let req = v1::SetConfigRequest {
                    update: Some(v1::MapSettingsUpdate {
                        max_gateways_per_group: Some(max),
                        ..Default::default()
                    }),
                };
                async move { c.set_config(req).await }
            })
            .await?;
        Ok(resp.map_epoch)
    }

    pub async fn delete_gateway(&self, key: &GroupKey, id: &str) -> Result<u64> {
        let resp = self
            .call(&format!("delete gateway {id}"), |mut c| {
                let req = v1::DeleteGatewayRequest {
                    key: Some(key.clone()),
                    gateway_id: id.to_owned(),
                };
                async move { c.delete_gateway(req).await }
            })
            .await?;
        Ok(resp.map_epoch)
    }

    pub async fn set_enabled(&self, key: &GroupKey, id: &str, enabled: bool) -> Result<u64> {
        let what = if enabled { "enable" } else { "disable" };
        let resp = self
            .call(&format!("{what} gateway {id}"), |mut c| {
                let req = v1::SetAdminStateRequest {
                    key: Some(key.clone()),
                    gateway_id: id.to_owned(),
                    enabled,
                };
                async move { c.set_admin_state(req).await }
            })
            .await?;
        Ok(resp.map_epoch)
    }

    /// One group as the leader's map shows it.
    pub async fn show_group(&self, key: &GroupKey) -> Result<v1::GroupView> {
        let resp = self
            .call(&format!("show group {}", key.group), |mut c| {
                let req = v1::ShowGroupRequest {
                    key: Some(key.clone()),
                    stale: false,
                };
                async move { c.show_group(req).await }
            })
            .await?;
        resp.group
            .ok_or_else(|| BenchError::failed("show group: the answer has no group"))
    }

    pub async fn set_location(&self, key: &GroupKey, id: &str, location: &str) -> Result<u64> {
        let resp = self
            .call(&format!("set location of {id}"), |mut c| {
                let req = v1::SetLocationRequest {
                    key: Some(key.clone()),
                    gateway_id: id.to_owned(),
                    location: location.to_owned(),
                };
                async move { c.set_location(req).await }
            })
            .await?;
        Ok(resp.map_epoch)
    }

    /// Create many gateways, `concurrency` writes at a time; their ANA groups in order.
    pub async fn create_gateways(
        &self,
        gateways: &[(GroupKey, String)],
        concurrency: usize,
    ) -> Result<Vec<u32>> {
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = Vec::with_capacity(gateways.len());
        for (key, id) in gateways {
            let admin = self.clone();
            let (key, id) = (key.clone(), id.clone());
            let permits = permits.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| BenchError::failed("admin writes: semaphore closed"))?;
                admin.create_gateway(&key, &id).await
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(
                t.await.map_err(|e| {
                    BenchError::failed(format!("create gateways: task failed: {e}"))
                })??,
            );
        }
        Ok(out)
    }
}
