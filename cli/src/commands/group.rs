//! Reading a group: `show`, `show-all`, `listeners`; and what depends on it: `ok-to-stop`
//! and `maintenance`.

use std::io::Write;
use std::time::Duration;

use gwmon_proto::v1;

use super::{busy_unless, emit, gateway_args, group_key};
use crate::args::{Format, GroupArgs, MaintenanceCommand};
use crate::client::Admin;
use crate::error::CliError;
use crate::view::group::{AllOut, GroupOut};
use crate::view::listeners::ListenersOut;

pub(super) async fn show(
    admin: &mut Admin,
    group: &GroupArgs,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let view = show_group(admin, group, stale).await?;
    emit(out, &view, format)
}

pub(super) async fn show_all(
    admin: &mut Admin,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
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

pub(super) async fn listeners(
    admin: &mut Admin,
    group: &GroupArgs,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    // The group first: it gives the header Ceph prints (`num gws: 0` for a group
    // that does not exist, which has no listeners).
    let head = show_group(admin, group, stale).await?;
    let key = group_key(group)?;
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

pub(super) async fn ok_to_stop(
    admin: &mut Admin,
    group: &GroupArgs,
    gateways: &[String],
    min_available: u32,
    stale: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let view = show_group(admin, group, stale).await?;
    let answer = crate::stop::gateways(&view, gateways, min_available)?;
    emit(out, &answer, format)?;
    busy_unless(answer.ok_to_stop, answer.reason)
}

pub(super) async fn maintenance(
    admin: &mut Admin,
    command: MaintenanceCommand,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (gw, enabled, force, min_available, timeout_s) = match command {
        MaintenanceCommand::Enter {
            gw,
            force,
            min_available,
            timeout_s,
        } => (gw, false, force, min_available, timeout_s),
        MaintenanceCommand::Exit { gw, timeout_s } => (gw, true, false, 1, timeout_s),
    };
    let (id, _) = gateway_args(&gw)?;
    let view = crate::maintenance::run(
        admin,
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
