//! Running a command: check the arguments, make the calls, print the result.

use std::io::Write;
use std::time::Duration;

use clap::CommandFactory;
use gwmon_proto::convert::replica::replica_specs;
use gwmon_proto::domain::{GatewayId, Group, Location, Pool, ReplicaId, VolumeId, VolumeSpec};
use gwmon_proto::tls::{Tls, TlsFiles};
use gwmon_proto::v1;
use gwmon_proto::v1::replica_service_client::ReplicaServiceClient;

use crate::args::{
    BlocklistCommand, Cli, ClusterCommand, Command, ConfigCommand, Format, GatewayArgs, GroupArgs,
    HostCommand, MaintenanceCommand, VolumeCommand,
};
use crate::client::{check_addr, Admin, Settings};
use crate::error::CliError;
use crate::view::blocklist::BlocklistOut;
use crate::view::cluster::{BackupOut, MembershipOut, StatusOut};
use crate::view::config::{parse_update, ConfigOut};
use crate::view::events::EventOut;
use crate::view::group::{AllOut, GroupOut};
use crate::view::health::HealthOut;
use crate::view::listeners::ListenersOut;
use crate::view::volume::{HostsOut, ReplaceOut, ReplacementOut, VolumeOut, VolumesOut};
use crate::view::write::{Change, WriteOut};
use crate::view::{print, View};

/// How long one attempt of `cluster add` may take: the leader gives a new monitor 10 s to
/// catch up before answering, and a retry while it waits would only ask again.
const ADD_MONITOR_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Run `cli`, printing to `out` in `format` (already resolved from `--format` and whether
/// standard output is a terminal).
pub async fn run(cli: Cli, format: Format, out: &mut dyn Write) -> Result<(), CliError> {
    let g = cli.global;
    if let Command::Completions { shell } = cli.command {
        // Needs no monitor, so it works before anything is set up.
        clap_complete::generate(shell, &mut Cli::command(), "nvme-gw", out);
        return Ok(());
    }
    if let Command::Certs { command } = cli.command {
        // Offline too: certificates are made before any monitor can check them.
        return crate::certs::run(command, format, out);
    }
    if let Command::Set { var, value } = &cli.command {
        // What it sets is how gwmon always works: no monitor to ask.
        return crate::set::run(*var, value, format, out);
    }
    if g.monitors.is_empty() {
        // Only an empty GWMON_MONITORS gets here; clap checked every address given.
        return Err(CliError::Refused(
            "invalid --monitors: no monitor address given".to_owned(),
        ));
    }
    let tls = TlsFiles::from_parts(g.tls_ca, g.tls_cert, g.tls_key, "--tls-")?
        .map(|files| Tls::load(&files))
        .transpose()?;
    let mut admin = Admin::new(Settings {
        monitors: g.monitors,
        timeout: Duration::from_millis(g.timeout_ms),
        retries: g.retries,
        tls,
    });
    let stale = g.stale;
    match cli.command {
        Command::Create { gw, location } => {
            let (id, key) = gateway(&gw)?;
            let location = match location {
                Some(l) => {
                    checked::<Location>(&l, "location")?;
                    l
                }
                None => String::new(),
            };
            let req = v1::CreateGatewayRequest {
                key: Some(key),
                gateway_id: id.clone(),
                location: location.clone(),
            };
            let resp = admin
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.create_gateway(req).await }
                })
                .await?
                .value;
            let mut o = WriteOut::new(
                Change::Create,
                &gw.group.pool,
                &gw.group.group,
                resp.map_epoch,
            );
            o.gw_id = Some(id);
            o.anagrp_id = Some(resp.ana_group);
            o.location = (!location.is_empty()).then_some(location);
            emit(out, &o, format)
        }
        Command::Delete { gw } => {
            let (id, key) = gateway(&gw)?;
            let req = v1::DeleteGatewayRequest {
                key: Some(key),
                gateway_id: id.clone(),
            };
            let resp = admin
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.delete_gateway(req).await }
                })
                .await?
                .value;
            let mut o = WriteOut::new(
                Change::Delete,
                &gw.group.pool,
                &gw.group.group,
                resp.map_epoch,
            );
            o.gw_id = Some(id);
            o.gone = Some(resp.gone);
            emit(out, &o, format)
        }
        Command::Enable { gw } => admin_state(&mut admin, &gw, true, format, out).await,
        Command::Disable { gw } => admin_state(&mut admin, &gw, false, format, out).await,
        Command::SetLocation { gw, location } => {
            let (id, key) = gateway(&gw)?;
            checked::<Location>(&location, "location")?;
            let req = v1::SetLocationRequest {
                key: Some(key),
                gateway_id: id.clone(),
                location: location.clone(),
            };
            let resp = admin
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.set_location(req).await }
                })
                .await?
                .value;
            let mut o = WriteOut::new(
                Change::SetLocation,
                &gw.group.pool,
                &gw.group.group,
                resp.map_epoch,
            );
            o.gw_id = Some(id);
            o.location = Some(location);
            emit(out, &o, format)
        }
        Command::DisasterSet { group, location } => {
            let (key, location) = disaster_args(&group, &location)?;
            let req = v1::DisasterSetRequest {
                key: Some(key),
                location: location.clone(),
            };
            let resp = admin
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.disaster_set(req).await }
                })
                .await?
                .value;
            let mut o = WriteOut::new(
                Change::DisasterSet,
                &group.pool,
                &group.group,
                resp.map_epoch,
            );
            o.location = Some(location);
            emit(out, &o, format)
        }
        Command::DisasterClear { group, location } => {
            let (key, location) = disaster_args(&group, &location)?;
            let req = v1::DisasterClearRequest {
                key: Some(key),
                location: location.clone(),
            };
            let resp = admin
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.disaster_clear(req).await }
                })
                .await?
                .value;
            let mut o = WriteOut::new(
                Change::DisasterClear,
                &group.pool,
                &group.group,
                resp.map_epoch,
            );
            o.location = Some(location);
            emit(out, &o, format)
        }
        Command::Show { group } => {
            let view = show_group(&mut admin, &group, stale).await?;
            emit(out, &view, format)
        }
        Command::OkToStop {
            group,
            gateways,
            min_available,
        } => {
            let view = show_group(&mut admin, &group, stale).await?;
            let answer = crate::stop::gateways(&view, &gateways, min_available)?;
            emit(out, &answer, format)?;
            busy_unless(answer.ok_to_stop, answer.reason)
        }
        Command::Maintenance { command } => {
            let (gw, enabled, force, min_available, timeout_s) = match command {
                MaintenanceCommand::Enter {
                    gw,
                    force,
                    min_available,
                    timeout_s,
                } => (gw, false, force, min_available, timeout_s),
                MaintenanceCommand::Exit { gw, timeout_s } => (gw, true, false, 1, timeout_s),
            };
            let (id, _) = gateway(&gw)?;
            let view = crate::maintenance::run(
                &mut admin,
                &gw.group,
                &id,
                enabled,
                force,
                min_available,
                Duration::from_secs(timeout_s),
            )
            .await?;
            emit(out, &view, format)
        }
        Command::ShowAll => {
            let resp = admin
                .call(|mut c| async move { c.show_all(v1::ShowAllRequest { stale }).await })
                .await?
                .value;
            let view = AllOut {
                epoch: resp.map_epoch,
                groups: resp.groups.into_iter().map(GroupOut::from_wire).collect(),
            };
            emit(out, &view, format)
        }
        Command::Listeners { group } => {
            // The group first: it gives the header Ceph prints (`num gws: 0` for a group
            // that does not exist, which has no listeners).
            let head = show_group(&mut admin, &group, stale).await?;
            let key = group_key(&group)?;
            let resp = admin
                .call(|mut c| {
                    let req = v1::ListenersRequest {
                        key: Some(key.clone()),
                        stale,
                    };
                    async move { c.listeners(req).await }
                })
                .await?
                .value;
            emit(out, &ListenersOut::from_wire(&head, resp.listeners), format)
        }
        Command::Blocklist {
            command: BlocklistCommand::Ls,
        } => {
            let resp =
                admin
                    .call(|mut c| async move {
                        c.blocklist_list(v1::BlocklistListRequest { stale }).await
                    })
                    .await?
                    .value;
            emit(out, &BlocklistOut::from_wire(resp), format)
        }
        Command::Status => crate::status::run(&mut admin, stale, format, out).await,
        Command::Health => {
            let resp = admin
                .call(|mut c| async move { c.health(v1::HealthRequest {}).await })
                .await?
                .value;
            emit(out, &HealthOut::from_wire(resp), format)
        }
        Command::Events {
            follow,
            after_epoch,
        } => events(&mut admin, follow, after_epoch, format, out).await,
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            let resp = admin
                .call(|mut c| async move { c.get_config(v1::GetConfigRequest { stale }).await })
                .await?
                .value;
            emit(out, &ConfigOut::from_get(resp), format)
        }
        Command::Config {
            command: ConfigCommand::Set { pairs },
        } => {
            let update = parse_update(&pairs).map_err(CliError::Refused)?;
            let resp = admin
                .call(|mut c| async move {
                    c.set_config(v1::SetConfigRequest {
                        update: Some(update),
                    })
                    .await
                })
                .await?
                .value;
            emit(out, &ConfigOut::from_set(resp), format)
        }
        Command::Cluster { command } => cluster(&mut admin, command, stale, format, out).await,
        Command::Volume { command } => volume(&mut admin, command, stale, format, out).await,
        Command::Host {
            command: HostCommand::List,
        } => {
            let resp = admin
                .call_on(ReplicaServiceClient::new, |mut c| async move {
                    c.list_hosts(v1::ListHostsRequest { stale }).await
                })
                .await?
                .value;
            emit(out, &HostsOut::from_wire(resp), format)
        }
        // Handled above, before any monitor is needed.
        Command::Completions { .. } | Command::Certs { .. } | Command::Set { .. } => Ok(()),
    }
}

/// Prints the event stream. Any monitor serves it, so a broken stream is resumed at the
/// next one that answers: from the epoch before the last one printed, skipping the events
/// of that epoch already printed (several events share an epoch and a connection can
/// break between them).
async fn events(
    admin: &mut Admin,
    follow: bool,
    after_epoch: Option<u64>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    // The last map epoch printed, and how many map events of it were printed.
    let mut last: Option<(u64, usize)> = None;
    loop {
        let (after, mut skip) = match last {
            Some((epoch, printed)) => (Some(epoch.saturating_sub(1)), Some((epoch, printed))),
            None => (after_epoch, None),
        };
        let req = v1::WatchEventsRequest {
            after_epoch: after,
            from_oldest: after.is_none(),
            stop_when_caught_up: !follow,
        };
        let mut stream = admin
            .call(|mut c| async move { c.watch_events(req).await })
            .await?
            .value;
        loop {
            let event = match stream.message().await {
                Ok(Some(e)) => e,
                Ok(None) if !follow => return Ok(()),
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::OutOfRange || !follow => {
                    return Err(CliError::Refused(status.message().to_owned()));
                }
                Err(_) => break,
            };
            let is_map_event = event.log_index != 0;
            if let Some((epoch, left)) = skip.as_mut() {
                if is_map_event && event.map_epoch == *epoch && *left > 0 {
                    *left -= 1;
                    continue;
                }
                if event.map_epoch <= *epoch && !is_map_event {
                    // A leader change the previous monitor may have reported already.
                    continue;
                }
            }
            skip = None;
            if is_map_event {
                last = match last {
                    Some((e, n)) if e == event.map_epoch => Some((e, n + 1)),
                    _ => Some((event.map_epoch, 1)),
                };
            }
            EventOut::from_wire(event).write(out, format)?;
        }
    }
}

fn emit<V: View>(out: &mut dyn Write, view: &V, format: Format) -> Result<(), CliError> {
    Ok(print(out, view, format)?)
}

/// Check a value with the domain type's rules: a bad one is refused here, with the same
/// reason the monitor would give, without a round trip.
fn checked<T: std::str::FromStr<Err = gwmon_proto::domain::Invalid>>(
    value: &str,
    what: &str,
) -> Result<(), CliError> {
    value
        .parse::<T>()
        .map(drop)
        .map_err(|e| CliError::Refused(format!("invalid {what} {value:?}: {e}")))
}

pub(crate) fn group_key(g: &GroupArgs) -> Result<v1::GroupKey, CliError> {
    checked::<Pool>(&g.pool, "pool")?;
    checked::<Group>(&g.group, "group")?;
    Ok(v1::GroupKey {
        pool: g.pool.clone(),
        group: g.group.clone(),
    })
}

fn gateway(gw: &GatewayArgs) -> Result<(String, v1::GroupKey), CliError> {
    checked::<GatewayId>(&gw.id, "gateway id")?;
    Ok((gw.id.clone(), group_key(&gw.group)?))
}

fn disaster_args(group: &GroupArgs, location: &str) -> Result<(v1::GroupKey, String), CliError> {
    let key = group_key(group)?;
    if location.is_empty() {
        return Err(CliError::Refused(
            "invalid location \"\": a disaster is declared for a named location".to_owned(),
        ));
    }
    checked::<Location>(location, "location")?;
    Ok((key, location.to_owned()))
}

pub(crate) async fn show_group(
    admin: &mut Admin,
    group: &GroupArgs,
    stale: bool,
) -> Result<GroupOut, CliError> {
    let key = group_key(group)?;
    let resp = admin
        .call(|mut c| {
            let req = v1::ShowGroupRequest {
                key: Some(key.clone()),
                stale,
            };
            async move { c.show_group(req).await }
        })
        .await?
        .value;
    let view = resp
        .group
        .ok_or_else(|| CliError::Refused("the monitor answered without the group".to_owned()))?;
    Ok(GroupOut::from_wire(view))
}

async fn admin_state(
    admin: &mut Admin,
    gw: &GatewayArgs,
    enabled: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (id, key) = gateway(gw)?;
    let req = v1::SetAdminStateRequest {
        key: Some(key),
        gateway_id: id.clone(),
        enabled,
    };
    let resp = admin
        .call(|mut c| {
            let req = req.clone();
            async move { c.set_admin_state(req).await }
        })
        .await?
        .value;
    let change = if enabled {
        Change::Enable
    } else {
        Change::Disable
    };
    let mut o = WriteOut::new(change, &gw.group.pool, &gw.group.group, resp.map_epoch);
    o.gw_id = Some(id);
    emit(out, &o, format)
}

async fn cluster_status(admin: &mut Admin) -> Result<StatusOut, CliError> {
    let answer = admin
        .call(|mut c| async move { c.cluster_status(v1::ClusterStatusRequest {}).await })
        .await?;
    Ok(StatusOut::from_wire(answer.value, answer.from))
}

/// The cluster's status, from the leader when it can be reached: any monitor answers, but
/// only the leader knows how far behind each member is, so when another answered, the
/// leader it named is asked once (if it cannot be reached, the first answer is returned).
async fn leader_status(admin: &mut Admin) -> Result<StatusOut, CliError> {
    let view = cluster_status(admin).await?;
    if view.has_progress() {
        return Ok(view);
    }
    if let Some(leader) = view.leader_addr().map(str::to_owned) {
        if leader != view.answered_by {
            admin.prefer(leader);
            if let Ok(better) = cluster_status(admin).await {
                return Ok(better);
            }
        }
    }
    Ok(view)
}

/// `Ok` for a yes; the reason as [`CliError::Busy`] (exit 16) for a no.
fn busy_unless(ok: bool, reason: String) -> Result<(), CliError> {
    if ok {
        Ok(())
    } else {
        Err(CliError::Busy(reason))
    }
}

async fn cluster(
    admin: &mut Admin,
    command: ClusterCommand,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        ClusterCommand::Status => {
            let view = if stale {
                cluster_status(admin).await?
            } else {
                leader_status(admin).await?
            };
            emit(out, &view, format)
        }
        ClusterCommand::OkToStop { id, max_lag } => {
            let view = leader_status(admin).await?;
            let answer = crate::stop::monitor(&view, id, max_lag)?;
            emit(out, &answer, format)?;
            busy_unless(answer.ok_to_stop, answer.reason)
        }
        ClusterCommand::Add { id, addr, peer } => {
            if id == 0 {
                return Err(CliError::Refused(
                    "invalid monitor id 0: ids start at 1".to_owned(),
                ));
            }
            check_addr(&addr).map_err(|e| CliError::Refused(format!("invalid address: {e}")))?;
            if let Some(peer) = &peer {
                check_addr(peer)
                    .map_err(|e| CliError::Refused(format!("invalid peer address: {e}")))?;
            }
            let req = v1::AddMonitorRequest {
                id,
                addr: addr.clone(),
                peer_addr: peer.unwrap_or_default(),
            };
            // The leader answers once the new monitor caught up, or after giving it 10 s.
            admin.attempts_of_at_least(ADD_MONITOR_WAIT);
            let resp = admin
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.add_monitor(req).await }
                })
                .await?
                .value;
            emit(
                out,
                &MembershipOut {
                    action: "add".to_owned(),
                    id,
                    addr: Some(addr),
                    log_index: resp.log_index,
                },
                format,
            )
        }
        ClusterCommand::Backup { file } => {
            if std::fs::symlink_metadata(&file).is_ok() {
                return Err(CliError::Refused(format!(
                    "{} exists: a backup is never written over a file",
                    file.display()
                )));
            }
            let resp = admin
                .call(|mut c| async move { c.export_snapshot(v1::ExportSnapshotRequest {}).await })
                .await?
                .value;
            write_backup(&file, &resp.snapshot)?;
            emit(
                out,
                &BackupOut {
                    file: file.display().to_string(),
                    bytes: resp.snapshot.len() as u64,
                    index: resp.index,
                    term: resp.term,
                    map_epoch: resp.map_epoch,
                },
                format,
            )
        }
        ClusterCommand::Remove { id } => {
            let resp = admin
                .call(
                    |mut c| async move { c.remove_monitor(v1::RemoveMonitorRequest { id }).await },
                )
                .await?
                .value;
            emit(
                out,
                &MembershipOut {
                    action: "remove".to_owned(),
                    id,
                    addr: None,
                    log_index: resp.log_index,
                },
                format,
            )
        }
    }
}

/// Write a backup: to a new file next to `file` (owner-only from the start), synced, then
/// renamed to `file`, so a backup that exists is whole. The rename does not replace:
/// `file` was checked absent, and a file appearing since is not overwritten.
fn write_backup(file: &std::path::Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    let fail = |what: &str, e: std::io::Error| {
        CliError::Refused(format!("cannot {what} {}: {e}", file.display()))
    };
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let partial = file.with_file_name(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(&partial).map_err(|e| fail("create", e))?;
    let written = out
        .write_all(bytes)
        .and_then(|()| out.sync_all())
        .map_err(|e| fail("write", e))
        .and_then(|()| std::fs::hard_link(&partial, file).map_err(|e| fail("create", e)));
    let _ = std::fs::remove_file(&partial);
    written
}

/// `volume ...`: the replica registry, through `ReplicaService` with the same leader
/// following as every other command.
async fn volume(
    admin: &mut Admin,
    command: VolumeCommand,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        VolumeCommand::Create {
            volume_id,
            alias,
            capacity,
            replicas,
            replica_count,
            grace_secs,
        } => {
            let replicas = replicas
                .iter()
                .map(|r| replica_arg(r))
                .collect::<Result<Vec<_>, _>>()?;
            let count = u32::try_from(replicas.len()).unwrap_or(u32::MAX);
            let spec = v1::VolumeSpec {
                volume_id,
                alias,
                capacity_bytes: capacity_arg(&capacity)?,
                replica_count: replica_count.unwrap_or(count),
                grace_period_ms: grace_secs.saturating_mul(1000),
            };
            // The monitor's own rules, applied before anything is sent.
            VolumeSpec::try_from(spec.clone())
                .map_err(|e| CliError::Refused(format!("invalid volume: {e}")))?;
            replica_specs(
                replicas.clone(),
                VolumeSpec::MAX_REPLICAS as usize,
                "replica",
            )
            .map_err(|e| CliError::Refused(format!("invalid --{e}")))?;
            let req = v1::CreateVolumeRequest {
                volume: Some(spec),
                replicas,
            };
            let resp = admin
                .call_on(ReplicaServiceClient::new, |mut c| {
                    let req = req.clone();
                    async move { c.create_volume(req).await }
                })
                .await?
                .value;
            emit(out, &volume_out(resp.volume)?, format)
        }
        VolumeCommand::Show { volume } => {
            let resp = admin
                .call_on(ReplicaServiceClient::new, |mut c| {
                    let req = v1::ShowVolumeRequest {
                        volume: volume.clone(),
                        stale,
                    };
                    async move { c.show_volume(req).await }
                })
                .await?
                .value;
            emit(out, &volume_out(resp.volume)?, format)
        }
        VolumeCommand::List => {
            let resp = admin
                .call_on(ReplicaServiceClient::new, |mut c| async move {
                    c.list_volumes(v1::ListVolumesRequest { stale }).await
                })
                .await?
                .value;
            let view = VolumesOut {
                volumes: resp.volumes.into_iter().map(VolumeOut::from_wire).collect(),
            };
            emit(out, &view, format)
        }
        VolumeCommand::Replace {
            volume,
            replica,
            force,
        } => {
            checked::<VolumeId>(&volume, "volume id")?;
            checked::<ReplicaId>(&replica, "replica id")?;
            let req = v1::RequestReplacementRequest {
                host_nqn: String::new(),
                volume_id: volume,
                replica_id: replica,
                force,
            };
            let resp = admin
                .call_on(ReplicaServiceClient::new, |mut c| {
                    let req = req.clone();
                    async move { c.request_replacement(req).await }
                })
                .await?
                .value;
            let replacement = resp.replacement.ok_or_else(|| {
                CliError::Refused("the monitor answered without the replacement".to_owned())
            })?;
            emit(
                out,
                &ReplaceOut {
                    replacement: ReplacementOut::from_wire(replacement),
                },
                format,
            )
        }
    }
}

fn volume_out(view: Option<v1::VolumeView>) -> Result<VolumeOut, CliError> {
    view.map(VolumeOut::from_wire)
        .ok_or_else(|| CliError::Refused("the monitor answered without the volume".to_owned()))
}

/// `--capacity`: bytes, or a number with a binary suffix (`10G` is 10 GiB).
fn capacity_arg(s: &str) -> Result<u64, CliError> {
    let bad = |why: &str| CliError::Refused(format!("invalid --capacity {s:?}: {why}"));
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad("the suffix must be K, M, G or T")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| bad("not a whole number of bytes"))?;
    n.checked_mul(1u64 << shift)
        .filter(|b| *b > 0)
        .ok_or_else(|| bad("must be more than 0 and fit in 64 bits"))
}

/// `--replica ID,NQN,PORTAL[,PORTAL...][,ns=UUID]`, PORTAL = `TRANSPORT:ADDRESS:PORT`.
/// Only the syntax is checked here; the values are checked with the monitor's rules by
/// the caller.
fn replica_arg(s: &str) -> Result<v1::ReplicaSpec, CliError> {
    let bad = |why: String| CliError::Refused(format!("invalid --replica {s:?}: {why}"));
    let mut parts = s.split(',');
    let (Some(id), Some(nqn)) = (parts.next(), parts.next()) else {
        return Err(bad("expected ID,NQN,PORTAL[,PORTAL...]".to_owned()));
    };
    let mut spec = v1::ReplicaSpec {
        replica_id: id.to_owned(),
        target_nqn: nqn.to_owned(),
        portals: Vec::new(),
        namespace_uuid: String::new(),
    };
    for part in parts {
        if let Some(ns) = part.strip_prefix("ns=") {
            spec.namespace_uuid = ns.to_owned();
            continue;
        }
        let (transport, rest) = part
            .split_once(':')
            .ok_or_else(|| bad(format!("portal {part:?} is not TRANSPORT:ADDRESS:PORT")))?;
        let transport = match transport {
            "tcp" => v1::Transport::Tcp,
            "rdma" => v1::Transport::Rdma,
            other => return Err(bad(format!("transport {other:?} is neither tcp nor rdma"))),
        };
        let (address, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("portal {part:?} has no port")))?;
        let address = address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(address);
        let port: u32 = port
            .parse()
            .map_err(|_| bad(format!("port {port:?} is not a number")))?;
        spec.portals.push(v1::Portal {
            transport: transport.into(),
            address: address.to_owned(),
            port,
        });
    }
    if spec.portals.is_empty() {
        return Err(bad("no portal given".to_owned()));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_take_binary_suffixes() {
        assert_eq!(capacity_arg("4096").ok(), Some(4096));
        assert_eq!(capacity_arg("10G").ok(), Some(10 << 30));
        assert_eq!(capacity_arg("1t").ok(), Some(1 << 40));
        for bad in ["", "0", "G", "10X", "-1", "99999999999T", "1.5G", "é"] {
            assert!(capacity_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replicas_parse_portals_of_both_families() {
        let r = replica_arg("id,nqn.2016-06.io.spdk:r1,tcp:10.0.0.5:4420,rdma:[fd00::5]:4421,ns=u")
            .expect("valid");
        assert_eq!(r.replica_id, "id");
        assert_eq!(r.target_nqn, "nqn.2016-06.io.spdk:r1");
        assert_eq!(r.portals.len(), 2);
        assert_eq!(r.portals[1].address, "fd00::5");
        assert_eq!(r.portals[1].port, 4421);
        assert_eq!(r.namespace_uuid, "u");
        for bad in [
            "id",
            "id,nqn",
            "id,nqn,udp:1.2.3.4:1",
            "id,nqn,tcp:1.2.3.4",
            "id,nqn,tcp:1.2.3.4:x",
        ] {
            assert!(replica_arg(bad).is_err(), "{bad:?}");
        }
    }
}
