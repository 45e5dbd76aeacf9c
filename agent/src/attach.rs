//! Host steps shared by the connector and the replacement: connect a replica unless it is
//! connected, wait for its block device, tell a used leg from a fresh one, disconnect a
//! subsystem no array uses any more. Each step looks before it acts, so running it again
//! after a crash does nothing twice.

use std::time::Duration;

use gwmon_proto::domain::Nqn;

use crate::cluster::{HostIdentity, ReplicaInfo};
use crate::error::AgentError;
use crate::host::{ConnectSpec, Host, HostCommand, HostError, Snapshot};
use crate::observe;

/// How often a wait for a device looks again.
const POLL: Duration = Duration::from_millis(100);

/// What nvme-cli says when the controller exists already (older versions exit 70, newer
/// 114; the text is the same).
const ALREADY_CONNECTED: &str = "already connected";

/// Connect `replica` through its first portal that works, unless a controller already
/// carries it. Returns whether a command was run.
pub async fn ensure_connected<H: Host>(
    host: &H,
    identity: &HostIdentity,
    replica: &ReplicaInfo,
    snap: &Snapshot,
) -> Result<bool, HostError> {
    if observe::controller_of(replica, snap, &identity.nqn).is_some() {
        return Ok(false);
    }
    let mut last = None;
    for portal in &replica.portals {
        let reaching = snap.controllers.iter().any(|c| {
            !c.state.is_going()
                && c.reaches(&replica.nqn, &portal.transport, &portal.address)
                && c.hostnqn
                    .as_deref()
                    .is_none_or(|h| h == identity.nqn.as_str())
        });
        if reaching {
            // Connected, namespace not scanned yet: connecting again would only fail.
            return Ok(false);
        }
        let cmd = HostCommand::NvmeConnect(ConnectSpec {
            transport: portal.transport.clone(),
            address: portal.address.clone(),
            nqn: replica.nqn.clone(),
            host_nqn: Some(identity.nqn.clone()),
            host_id: identity.id.map(|i| i.to_string()),
        });
        match host.run(cmd).await {
            Ok(_) => return Ok(true),
            Err(e) if e.says(ALREADY_CONNECTED) => return Ok(false),
            Err(e @ HostError::ToolMissing { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(replica = %replica.id, %portal, "cannot connect: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| HostError::Failed {
        command: format!("nvme connect -n {}", replica.nqn),
        status: "not run".to_owned(),
        stderr: format!("replica {} has no portal", replica.id),
    }))
}

/// Wait up to `wait` for `replica`'s block device to show in sysfs; then make its
/// controller fail I/O after `fast_io_fail` lost (see [`ensure_fast_io_fail`]).
pub async fn wait_device<H: Host>(
    host: &H,
    identity: &HostIdentity,
    replica: &ReplicaInfo,
    wait: Duration,
    fast_io_fail: Duration,
) -> Result<String, AgentError> {
    let end = tokio::time::Instant::now() + wait;
    loop {
        let snap = host.snapshot()?;
        if let Some(d) = observe::device_of(replica, &snap, &identity.nqn) {
            ensure_fast_io_fail(host, identity, replica, &snap, fast_io_fail)?;
            return Ok(d);
        }
        if tokio::time::Instant::now() >= end {
            return Err(AgentError::NoDevice {
                replica: replica.id,
                seconds: wait.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Give every controller of this host to `replica` the `fast_io_fail` it lacks. With
/// ctrl-loss-tmo -1 and fast_io_fail_tmo off (the kernel's default), a lost replica's
/// writes wait for it forever, and md's RAID1 writes wait with them: the whole array
/// stops and md never sees the error that would fail the leg. Returns how many
/// controllers were set.
pub fn ensure_fast_io_fail<H: Host>(
    host: &H,
    identity: &HostIdentity,
    replica: &ReplicaInfo,
    snap: &Snapshot,
    fast_io_fail: Duration,
) -> Result<usize, HostError> {
    let want = fast_io_fail.as_secs();
    let mut set = 0;
    for c in snap.controllers.iter().filter(|c| {
        c.subsysnqn == replica.nqn
            && !c.state.is_going()
            && c.fast_io_fail_s != Some(want)
            && c.hostnqn
                .as_deref()
                .is_none_or(|h| h == identity.nqn.as_str())
    }) {
        host.set_fast_io_fail(&c.name, want)?;
        set += 1;
    }
    Ok(set)
}

/// Whether `device` carries an md superblock (it was a leg of an array before).
pub async fn has_superblock<H: Host>(host: &H, device: &str) -> Result<bool, HostError> {
    match host
        .run(HostCommand::MdExamine {
            leg: device.to_owned(),
        })
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.says("No md superblock") => Ok(false),
        Err(e) => Err(e),
    }
}

/// Disconnect this host's controllers of subsystem `nqn` if no running array uses a
/// namespace of them (os-brick's `can_disconnect`: a subsystem may export namespaces of
/// other volumes). Returns whether anything was disconnected.
pub async fn disconnect_if_unused<H: Host>(
    host: &H,
    identity: &HostIdentity,
    nqn: &Nqn,
) -> Result<bool, HostError> {
    let snap = host.snapshot()?;
    let mine = |c: &&crate::host::Controller| {
        c.hostnqn
            .as_deref()
            .is_none_or(|h| h == identity.nqn.as_str())
    };
    let all: Vec<_> = snap
        .controllers
        .iter()
        .filter(|c| &c.subsysnqn == nqn)
        .collect();
    let ctrls: Vec<_> = all.iter().copied().filter(mine).collect();
    if ctrls.is_empty() {
        return Ok(false);
    }
    let in_use = ctrls.iter().any(|c| {
        c.namespaces.iter().any(|n| {
            snap.arrays.iter().any(|a| {
                a.legs
                    .iter()
                    .any(|l| l.device == n.device && !l.flags.faulty)
            })
        })
    });
    if in_use {
        tracing::info!(%nqn, "left connected: a namespace of it is a leg of a running array");
        return Ok(false);
    }
    if ctrls.len() == all.len() {
        host.run(HostCommand::NvmeDisconnect { nqn: nqn.clone() })
            .await?;
    } else {
        for c in ctrls {
            host.run(HostCommand::NvmeDisconnectController {
                controller: c.name.clone(),
            })
            .await?;
        }
    }
    Ok(true)
}
