//! Changes to one gateway or location: `create`, `delete`, `enable`, `disable`,
//! `set-location`, `disaster-set`, `disaster-clear`. Each prints what changed and the map
//! epoch it was committed at.

use std::io::Write;

use gwmon_proto::domain::Location;
use gwmon_proto::v1;

use super::{checked, emit, gateway_args, group_key};
use crate::args::{Format, GatewayArgs, GroupArgs};
use crate::client::Admin;
use crate::error::CliError;
use crate::view::write::{Change, WriteOut};

pub(super) async fn create(
    admin: &mut Admin,
    gw: &GatewayArgs,
    location: Option<String>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (id, key) = gateway_args(gw)?;
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

pub(super) async fn delete(
    admin: &mut Admin,
    gw: &GatewayArgs,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (id, key) = gateway_args(gw)?;
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

pub(super) async fn admin_state(
    admin: &mut Admin,
    gw: &GatewayArgs,
    enabled: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (id, key) = gateway_args(gw)?;
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

pub(super) async fn set_location(
    admin: &mut Admin,
    gw: &GatewayArgs,
    location: String,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (id, key) = gateway_args(gw)?;
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

/// `disaster-set` (`set`) or `disaster-clear` of a location of a group.
pub(super) async fn disaster(
    admin: &mut Admin,
    group: &GroupArgs,
    location: String,
    set: bool,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let (key, location) = disaster_args(group, &location)?;
    let map_epoch = if set {
        let req = v1::DisasterSetRequest {
            key: Some(key),
            location: location.clone(),
        };
        admin
            .call(|mut c| {
                let req = req.clone();
                async move { c.disaster_set(req).await }
            })
            .await?
            .value
            .map_epoch
    } else {
        let req = v1::DisasterClearRequest {
            key: Some(key),
            location: location.clone(),
        };
        admin
            .call(|mut c| {
                let req = req.clone();
                async move { c.disaster_clear(req).await }
            })
            .await?
            .value
            .map_epoch
    };
    let change = if set {
        Change::DisasterSet
    } else {
        Change::DisasterClear
    };
    let mut o = WriteOut::new(change, &group.pool, &group.group, map_epoch);
    o.location = Some(location);
    emit(out, &o, format)
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
