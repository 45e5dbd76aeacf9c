//! `cluster ...`: the monitors themselves: status, ok-to-stop, membership and backups.

use std::io::Write;
use std::path::Path;

use gwmon_proto::v1;

use super::{busy_unless, emit};
use crate::args::{ClusterCommand, Format};
use crate::client::{check_addr, Admin};
use crate::error::CliError;
use crate::view::cluster::{BackupOut, MembershipOut, StatusOut};

/// How long one attempt of `cluster add` may take: the leader gives a new monitor 10 s to
/// catch up before answering, and a retry while it waits would only ask again.
const ADD_MONITOR_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

pub(super) async fn run(
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
        ClusterCommand::Add { id, addr, peer } => add(admin, id, addr, peer, format, out).await,
        ClusterCommand::Backup { file } => backup(admin, &file, format, out).await,
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

async fn add(
    admin: &mut Admin,
    id: u64,
    addr: String,
    peer: Option<String>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if id == 0 {
        return Err(CliError::Refused(
            "invalid monitor id 0: ids start at 1".to_owned(),
        ));
    }
    check_addr(&addr).map_err(|e| CliError::Refused(format!("invalid address: {e}")))?;
    if let Some(peer) = &peer {
        check_addr(peer).map_err(|e| CliError::Refused(format!("invalid peer address: {e}")))?;
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

async fn backup(
    admin: &mut Admin,
    file: &Path,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if std::fs::symlink_metadata(file).is_ok() {
        return Err(CliError::Refused(format!(
            "{} exists: a backup is never written over a file",
            file.display()
        )));
    }
    let resp = admin
        .call(|mut c| async move { c.export_snapshot(v1::ExportSnapshotRequest {}).await })
        .await?
        .value;
    write_backup(file, &resp.snapshot)?;
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

/// Write a backup: to a new file next to `file` (owner-only from the start), synced, then
/// renamed to `file`, so a backup that exists is whole. The rename does not replace:
/// `file` was checked absent, and a file appearing since is not overwritten.
fn write_backup(file: &Path, bytes: &[u8]) -> Result<(), CliError> {
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
