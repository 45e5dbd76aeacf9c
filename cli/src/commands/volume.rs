//! `volume ...` and `host list`: the replica registry, through `ReplicaService`.

use std::io::Write;

use gwmon_proto::convert::replica::replica_specs;
use gwmon_proto::domain::{ReplicaId, VolumeId, VolumeSpec};
use gwmon_proto::v1;
use gwmon_proto::v1::replica_service_client::ReplicaServiceClient;

use super::{checked, emit};
use crate::args::{Format, VolumeCommand};
use crate::client::Admin;
use crate::error::CliError;
use crate::view::volume::{HostsOut, ReplaceOut, ReplacementOut, VolumeOut, VolumesOut};

/// `volume ...`: the replica registry, through `ReplicaService` with the same leader
/// following as every other command.
pub(super) async fn run(
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
            let spec = v1::VolumeSpec {
                volume_id,
                alias,
                capacity_bytes: capacity_arg(&capacity)?,
                replica_count: 0,
                grace_period_ms: grace_secs.saturating_mul(1000),
            };
            create(admin, spec, &replicas, replica_count, format, out).await
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
            checked::<ReplicaId>(&replica, "replica id")?;
            let volume_id = volume_id(admin, volume).await?;
            let req = v1::RequestReplacementRequest {
                host_nqn: String::new(),
                volume_id,
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

/// `volume create`: `spec` with its replica count still to settle (`replica_count`, else
/// as many as `replicas` given).
async fn create(
    admin: &mut Admin,
    mut spec: v1::VolumeSpec,
    replicas: &[String],
    replica_count: Option<u32>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let replicas = replicas
        .iter()
        .map(|r| replica_arg(r))
        .collect::<Result<Vec<_>, _>>()?;
    let count = u32::try_from(replicas.len()).unwrap_or(u32::MAX);
    spec.replica_count = replica_count.unwrap_or(count);
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

pub(super) async fn hosts(
    admin: &mut Admin,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let resp = admin
        .call_on(ReplicaServiceClient::new, |mut c| async move {
            c.list_hosts(v1::ListHostsRequest { stale }).await
        })
        .await?
        .value;
    emit(out, &HostsOut::from_wire(resp), format)
}

/// The volume's UUID: `volume` itself, or the volume whose alias it is (asked of the
/// leader), so that every volume command takes what `volume show` takes.
async fn volume_id(admin: &mut Admin, volume: String) -> Result<String, CliError> {
    if volume.parse::<VolumeId>().is_ok() {
        return Ok(volume);
    }
    let resp = admin
        .call_on(ReplicaServiceClient::new, |mut c| {
            let req = v1::ShowVolumeRequest {
                volume: volume.clone(),
                stale: false,
            };
            async move { c.show_volume(req).await }
        })
        .await?
        .value;
    Ok(volume_out(resp.volume)?.volume_id)
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
