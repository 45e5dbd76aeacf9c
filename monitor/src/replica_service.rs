//! `ReplicaService`: the replica registry over gRPC, for host agents (register, heartbeat,
//! connection info, state reports, replacement requests and acknowledgements) and storage
//! backends (volumes, supplying a replacement, confirming a replica deleted).
//!
//! Every request is converted to domain types at the edge (a bad field is INVALID_ARGUMENT
//! naming its path); writes are committed through the leader; reads are linearizable unless
//! the request asks for a possibly stale answer, and the connection info is always
//! linearizable (a lagging copy could offer a replica that has since gone stale). Refusals
//! of the registry become statuses in `crate::error`, the one place that maps them.

use gwmon_proto::convert::replica::{
    host_identity, replica_reports, replica_specs, stage, volume_ids,
};
use gwmon_proto::convert::required;
use gwmon_proto::domain::{
    replica::check_reason, Field, FieldError, Invalid, Nqn, ReplacementId, ReplicaId, ReplicaSpec,
    VolumeAlias, VolumeId, VolumeSpec,
};
use gwmon_proto::v1::{self, replica_service_server::ReplicaService};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::auth::Caller;
use crate::core::{Core, ReplicaCommitted};
use crate::error::MonitorError;
use crate::replica::{
    Connection, Exclusion, Host, Replacement, Replica, ReplicaCommand, ReplicaEvent,
    ReplicaRegistry, Volume,
};

pub struct ReplicaGrpc {
    core: Core,
}

impl ReplicaGrpc {
    pub fn new(core: Core) -> Self {
        ReplicaGrpc { core }
    }

    /// Commit `cmd` and log what it did: only the proposing leader logs, once per command
    /// that changed something, so the log reads as the registry's history.
    async fn write(&self, cmd: ReplicaCommand) -> Result<ReplicaCommitted, MonitorError> {
        let done = self.core.propose_replica(cmd).await?;
        for event in &done.applied.events {
            log_event(event, done.log_index);
        }
        Ok(done)
    }

    /// Read the registry as of the command just committed here (the write returned once it
    /// was applied on this monitor, so a local read sees it).
    fn local<T>(&self, f: impl FnOnce(&ReplicaRegistry) -> T) -> T {
        self.core.reader().read_registry(f)
    }
}

fn log_event(event: &ReplicaEvent, log_index: u64) {
    info!(target: "gwmon::replica", log_index, ?event, "replica registry");
}

fn nqn(s: String, field: &str) -> Result<Nqn, MonitorError> {
    Ok(Nqn::try_from(s).field(field)?)
}

fn volume_id(s: &str) -> Result<VolumeId, MonitorError> {
    Ok(s.parse::<VolumeId>().field("volume_id")?)
}

fn replica_id(s: &str) -> Result<ReplicaId, MonitorError> {
    Ok(s.parse::<ReplicaId>().field("replica_id")?)
}

fn replacement_id(raw: u64) -> Result<ReplacementId, MonitorError> {
    Ok(ReplacementId::new(raw).field("replacement_id")?)
}

fn replacement_of(done: &ReplicaCommitted) -> Result<v1::Replacement, MonitorError> {
    done.applied
        .replacement
        .as_ref()
        .map(replacement_view)
        .ok_or_else(|| {
            MonitorError::Raft("a replacement command came back without its replacement".into())
        })
}

/// A host-side request, which names the host it is about.
trait HostSide {
    fn host_nqn(&self) -> &str;
}

macro_rules! host_side {
    ($($request:ident),*) => {
        $(impl HostSide for v1::$request {
            fn host_nqn(&self) -> &str {
                &self.host_nqn
            }
        })*
    };
}

host_side!(
    RegisterHostRequest,
    HeartbeatRequest,
    GetVolumeConnectionRequest,
    ReportReplicaStatesRequest,
    RequestReplacementRequest,
    AcknowledgeReplacementRequest
);

/// The request, if its caller may act for the host it names (a host certificate only for
/// its own NQN, exactly as sent; see [`Caller::check_host`]).
fn own_host<T: HostSide>(req: Request<T>) -> Result<T, MonitorError> {
    let caller = Caller::of(&req);
    let r = req.into_inner();
    caller.check_host(r.host_nqn())?;
    Ok(r)
}

#[tonic::async_trait]
impl ReplicaService for ReplicaGrpc {
    async fn register_host(
        &self,
        req: Request<v1::RegisterHostRequest>,
    ) -> Result<Response<v1::RegisterHostResponse>, Status> {
        let r = own_host(req)?;
        let host = host_identity(r.host_nqn, &r.host_id, r.name).map_err(MonitorError::from)?;
        let nqn = host.nqn.clone();
        self.write(ReplicaCommand::RegisterHost { host }).await?;
        let view = self
            .local(|reg| reg.host(&nqn).map(host_view))
            .map_err(MonitorError::from)?;
        Ok(Response::new(v1::RegisterHostResponse { host: Some(view) }))
    }

    async fn heartbeat(
        &self,
        req: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let r = own_host(req)?;
        let host = host_identity(r.host_nqn, &r.host_id, r.name).map_err(MonitorError::from)?;
        let volumes = volume_ids(r.volume_ids).map_err(MonitorError::from)?;
        let nqn = host.nqn.clone();
        self.write(ReplicaCommand::Heartbeat {
            host,
            volumes: volumes.clone(),
        })
        .await?;
        let (at, replacements) = self.local(|reg| {
            let at = reg
                .host(&nqn)
                .ok()
                .and_then(|h| h.last_heartbeat)
                .map_or(0, |t| t.as_millis());
            let replacements = reg
                .replacements_of(&volumes)
                .iter()
                .map(replacement_view)
                .collect();
            (at, replacements)
        });
        Ok(Response::new(v1::HeartbeatResponse {
            heartbeat_at_ms: at,
            replacements,
        }))
    }

    async fn get_volume_connection(
        &self,
        req: Request<v1::GetVolumeConnectionRequest>,
    ) -> Result<Response<v1::GetVolumeConnectionResponse>, Status> {
        let r = own_host(req)?;
        let host = nqn(r.host_nqn, "host_nqn")?;
        let volume = volume_id(&r.volume_id)?;
        let answer = self
            .core
            .read_replicas(
                gwmon_proto::mutation::active(gwmon_proto::mutation::Mutation::StaleConnectionRead),
                |reg| {
                    let conn = reg.connection(&host, &volume)?;
                    let v = reg.volume(&volume)?;
                    Ok::<_, crate::replica::ReplicaError>(connection_view(v, conn))
                },
            )
            .await?
            .map_err(MonitorError::from)?;
        Ok(Response::new(answer))
    }

    async fn report_replica_states(
        &self,
        req: Request<v1::ReportReplicaStatesRequest>,
    ) -> Result<Response<v1::ReportReplicaStatesResponse>, Status> {
        let r = own_host(req)?;
        let host = nqn(r.host_nqn, "host_nqn")?;
        let volume = volume_id(&r.volume_id)?;
        let reports = replica_reports(r.reports).map_err(MonitorError::from)?;
        // A host repeats what it sees every period; an unchanged view costs a read-index
        // round, not a Raft write.
        let news = self
            .core
            .read_replicas(false, |reg| reg.report_is_news(&host, &volume, &reports))
            .await?;
        let changed = if news {
            let done = self
                .write(ReplicaCommand::ReportStates {
                    host,
                    volume,
                    reports,
                })
                .await?;
            done.applied.changed_replicas
        } else {
            Vec::new()
        };
        let generation = self.local(|reg| reg.volume(&volume).map(|v| v.generation).unwrap_or(0));
        Ok(Response::new(v1::ReportReplicaStatesResponse {
            changed_replica_ids: changed.iter().map(ToString::to_string).collect(),
            generation,
        }))
    }

    async fn request_replacement(
        &self,
        req: Request<v1::RequestReplacementRequest>,
    ) -> Result<Response<v1::RequestReplacementResponse>, Status> {
        let r = own_host(req)?;
        // No host: an operator or the backend asks.
        let by = if r.host_nqn.is_empty() {
            None
        } else {
            Some(nqn(r.host_nqn, "host_nqn")?)
        };
        let done = self
            .write(ReplicaCommand::RequestReplacement {
                volume: volume_id(&r.volume_id)?,
                replica: replica_id(&r.replica_id)?,
                by,
                force: r.force,
            })
            .await?;
        Ok(Response::new(v1::RequestReplacementResponse {
            replacement: Some(replacement_of(&done)?),
        }))
    }

    async fn acknowledge_replacement(
        &self,
        req: Request<v1::AcknowledgeReplacementRequest>,
    ) -> Result<Response<v1::AcknowledgeReplacementResponse>, Status> {
        let r = own_host(req)?;
        let done = self
            .write(ReplicaCommand::AcknowledgeReplacement {
                host: nqn(r.host_nqn, "host_nqn")?,
                volume: volume_id(&r.volume_id)?,
                replacement: replacement_id(r.replacement_id)?,
                done: stage(r.done).field("done").map_err(MonitorError::from)?,
            })
            .await?;
        Ok(Response::new(v1::AcknowledgeReplacementResponse {
            replacement: Some(replacement_of(&done)?),
        }))
    }

    async fn create_volume(
        &self,
        req: Request<v1::CreateVolumeRequest>,
    ) -> Result<Response<v1::CreateVolumeResponse>, Status> {
        let r = req.into_inner();
        let spec = VolumeSpec::try_from(required(r.volume, "volume").map_err(MonitorError::from)?)
            .map_err(|e| MonitorError::from(e.within("volume")))?;
        let replicas = replica_specs(r.replicas, VolumeSpec::MAX_REPLICAS as usize, "replicas")
            .map_err(MonitorError::from)?;
        let id = spec.id;
        self.write(ReplicaCommand::CreateVolume { spec, replicas })
            .await?;
        let view = self
            .local(|reg| reg.volume(&id).map(volume_view))
            .map_err(MonitorError::from)?;
        Ok(Response::new(v1::CreateVolumeResponse {
            volume: Some(view),
        }))
    }

    async fn delete_volume(
        &self,
        req: Request<v1::DeleteVolumeRequest>,
    ) -> Result<Response<v1::DeleteVolumeResponse>, Status> {
        let r = req.into_inner();
        self.write(ReplicaCommand::DeleteVolume {
            volume: volume_id(&r.volume_id)?,
        })
        .await?;
        Ok(Response::new(v1::DeleteVolumeResponse {}))
    }

    async fn expand_volume(
        &self,
        req: Request<v1::ExpandVolumeRequest>,
    ) -> Result<Response<v1::ExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        let volume = volume_id(&r.volume_id)?;
        if r.capacity_bytes == 0 {
            return Err(
                MonitorError::from(FieldError::new("capacity_bytes", Invalid::Zero)).into(),
            );
        }
        self.write(ReplicaCommand::ExpandVolume {
            volume,
            capacity_bytes: r.capacity_bytes,
        })
        .await?;
        let view = self
            .local(|reg| reg.volume(&volume).map(volume_view))
            .map_err(MonitorError::from)?;
        Ok(Response::new(v1::ExpandVolumeResponse {
            volume: Some(view),
        }))
    }

    async fn supply_replacement(
        &self,
        req: Request<v1::SupplyReplacementRequest>,
    ) -> Result<Response<v1::SupplyReplacementResponse>, Status> {
        let r = req.into_inner();
        let spec = ReplicaSpec::try_from(
            required(r.new_replica, "new_replica").map_err(MonitorError::from)?,
        )
        .map_err(|e| MonitorError::from(e.within("new_replica")))?;
        let done = self
            .write(ReplicaCommand::SupplyReplacement {
                volume: volume_id(&r.volume_id)?,
                replacement: replacement_id(r.replacement_id)?,
                replica: spec,
            })
            .await?;
        Ok(Response::new(v1::SupplyReplacementResponse {
            replacement: Some(replacement_of(&done)?),
        }))
    }

    async fn cancel_replacement(
        &self,
        req: Request<v1::CancelReplacementRequest>,
    ) -> Result<Response<v1::CancelReplacementResponse>, Status> {
        let r = req.into_inner();
        check_reason(&r.reason)
            .field("reason")
            .map_err(MonitorError::from)?;
        let done = self
            .write(ReplicaCommand::CancelReplacement {
                volume: volume_id(&r.volume_id)?,
                replacement: replacement_id(r.replacement_id)?,
                reason: r.reason,
            })
            .await?;
        Ok(Response::new(v1::CancelReplacementResponse {
            replacement: Some(replacement_of(&done)?),
        }))
    }

    async fn confirm_replica_deleted(
        &self,
        req: Request<v1::ConfirmReplicaDeletedRequest>,
    ) -> Result<Response<v1::ConfirmReplicaDeletedResponse>, Status> {
        let r = req.into_inner();
        let done = self
            .write(ReplicaCommand::ConfirmReplicaDeleted {
                volume: volume_id(&r.volume_id)?,
                replica: replica_id(&r.replica_id)?,
            })
            .await?;
        Ok(Response::new(v1::ConfirmReplicaDeletedResponse {
            replacement: Some(replacement_of(&done)?),
        }))
    }

    async fn show_volume(
        &self,
        req: Request<v1::ShowVolumeRequest>,
    ) -> Result<Response<v1::ShowVolumeResponse>, Status> {
        let r = req.into_inner();
        // A UUID names the volume; anything else must be an alias.
        let key = match r.volume.parse::<VolumeId>() {
            Ok(id) => Ok(id),
            Err(_) => Err(r
                .volume
                .parse::<VolumeAlias>()
                .field("volume")
                .map_err(MonitorError::from)?),
        };
        let view = self
            .core
            .read_replicas(r.stale, |reg| {
                match &key {
                    Ok(id) => reg.volume(id),
                    Err(alias) => reg.volume_by_alias(alias),
                }
                .map(volume_view)
            })
            .await?
            .map_err(MonitorError::from)?;
        Ok(Response::new(v1::ShowVolumeResponse { volume: Some(view) }))
    }

    async fn list_volumes(
        &self,
        req: Request<v1::ListVolumesRequest>,
    ) -> Result<Response<v1::ListVolumesResponse>, Status> {
        let r = req.into_inner();
        let volumes = self
            .core
            .read_replicas(r.stale, |reg| {
                reg.volumes().values().map(volume_view).collect()
            })
            .await?;
        Ok(Response::new(v1::ListVolumesResponse { volumes }))
    }

    async fn list_hosts(
        &self,
        req: Request<v1::ListHostsRequest>,
    ) -> Result<Response<v1::ListHostsResponse>, Status> {
        let r = req.into_inner();
        let hosts = self
            .core
            .read_replicas(r.stale, |reg| reg.hosts().values().map(host_view).collect())
            .await?;
        Ok(Response::new(v1::ListHostsResponse { hosts }))
    }
}

// ---- views: registry -> wire ----

fn host_view(h: &Host) -> v1::HostView {
    v1::HostView {
        host_nqn: h.identity.nqn.to_string(),
        host_id: h.identity.id.map(String::from).unwrap_or_default(),
        name: h.identity.name.to_string(),
        registered_at_ms: h.registered_at.as_millis(),
        last_heartbeat_ms: h.last_heartbeat.map(|t| t.as_millis()),
        volume_ids: h.volumes.iter().map(ToString::to_string).collect(),
    }
}

fn replacement_view(p: &Replacement) -> v1::Replacement {
    v1::Replacement {
        replacement_id: p.id.get(),
        volume_id: p.volume.to_string(),
        old_replica_id: p.old.to_string(),
        new_replica: p.new.clone().map(Into::into),
        stage: v1::ReplacementStage::from(p.stage).into(),
        requested_by: p
            .requested_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        forced: p.forced,
        requested_at_ms: p.requested_at.as_millis(),
        stage_since_ms: p.stage_since.as_millis(),
        cancel_reason: p.cancel_reason.clone().unwrap_or_default(),
    }
}

fn replica_view(v: &Volume, r: &Replica) -> v1::ReplicaView {
    v1::ReplicaView {
        replica: Some(r.spec.clone().into()),
        state: v1::ReplicaState::from(r.state).into(),
        state_since_ms: r.since.as_millis(),
        bad_since_ms: r.bad_since.map(|t| t.as_millis()),
        in_sync_generation: r.generation,
        stale: v.is_stale(r),
        sync_permille: r.sync_permille.map(u32::from),
        reported_by: r
            .reported_by
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

fn volume_view(v: &Volume) -> v1::VolumeView {
    v1::VolumeView {
        volume: Some(v.spec.clone().into()),
        replicas: v.replicas.values().map(|r| replica_view(v, r)).collect(),
        generation: v.generation,
        replacement: v.replacement.as_ref().map(replacement_view),
        last_replacement: v.last_replacement.as_ref().map(replacement_view),
        created_at_ms: v.created_at.as_millis(),
    }
}

fn exclusion(e: Exclusion) -> v1::Exclusion {
    match e {
        Exclusion::Faulty => v1::Exclusion::Faulty,
        Exclusion::Terminating => v1::Exclusion::Terminating,
        Exclusion::Stale => v1::Exclusion::Stale,
        Exclusion::NotSynced => v1::Exclusion::NotSynced,
        Exclusion::Resyncing => v1::Exclusion::Resyncing,
    }
}

fn connection_view(v: &Volume, c: Connection) -> v1::GetVolumeConnectionResponse {
    v1::GetVolumeConnectionResponse {
        volume: Some(v.spec.clone().into()),
        replicas: c.replicas.into_iter().map(Into::into).collect(),
        excluded: c
            .excluded
            .into_iter()
            .map(|e| v1::ExcludedReplica {
                replica_id: e.replica.to_string(),
                reason: exclusion(e.reason).into(),
                message: e.message,
            })
            .collect(),
        generation: c.generation,
        replacement: v.replacement.as_ref().map(replacement_view),
    }
}
