//! `maintenance enter|exit ID POOL GROUP`: host maintenance as one command. Entering
//! checks `ok-to-stop`, disables the gateway (its ANA groups move by the planned path) and
//! waits until every ANA group it served is served by another gateway; exiting enables it
//! and waits until it serves its own ANA group again. The gateway may be stopped once
//! `enter` has returned.

use std::time::Duration;

use gwmon_proto::v1;
use serde::Serialize;
use tokio::time::Instant;

use crate::args::GroupArgs;
use crate::client::Admin;
use crate::commands::{group_key, show_group};
use crate::error::CliError;
use crate::view::group::{GatewayOut, GroupOut};
use crate::view::{group_label, View};

/// How often the group is read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// What `maintenance enter|exit` did.
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceOut {
    pub gw_id: String,
    pub pool: String,
    pub group: String,
    /// `maintenance` after `enter`, `serving` after `exit`.
    pub state: String,
    /// Each ANA group the gateway served (enter) or owns (exit), and who serves it now.
    pub ana_groups: Vec<Served>,
    /// How long the wait took, in milliseconds.
    pub waited_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub ana_group: u32,
    pub served_by: String,
}

impl View for MaintenanceOut {
    fn plain(&self) -> String {
        let served = self
            .ana_groups
            .iter()
            .map(|s| format!("ANA group {} served by {}", s.ana_group, s.served_by))
            .collect::<Vec<_>>()
            .join(", ");
        let served = if served.is_empty() {
            "it served no ANA group".to_owned()
        } else {
            served
        };
        format!(
            "{} of {} is {} after {} ms: {served}\n",
            self.gw_id,
            group_label(&self.pool, &self.group),
            if self.state == "maintenance" {
                "in maintenance"
            } else {
                "serving again"
            },
            self.waited_ms
        )
    }
}

/// The ANA groups `gw` is ACTIVE for in `group`.
fn active_groups(gw: &GatewayOut) -> Vec<u32> {
    gw.ana
        .iter()
        .filter(|(_, state)| state == "ACTIVE")
        .map(|(id, _)| *id)
        .collect()
}

/// Who is ACTIVE for ANA group `ana` in `group`, if anyone.
fn holder(group: &GroupOut, ana: u32) -> Option<&str> {
    group
        .gateways
        .iter()
        .find(|g| g.ana.iter().any(|(id, s)| *id == ana && s == "ACTIVE"))
        .map(|g| g.gw_id.as_str())
}

fn find<'a>(group: &'a GroupOut, id: &str) -> Result<&'a GatewayOut, CliError> {
    group
        .gateways
        .iter()
        .find(|g| g.gw_id == id)
        .ok_or_else(|| {
            CliError::Refused(format!(
                "gateway {id} is not in {}",
                group_label(&group.pool, &group.group)
            ))
        })
}

/// Whether `id` has handed `served` over: it serves none of them, each has another
/// holder. `Some` with who serves each once it has.
fn handed_over(group: &GroupOut, id: &str, served: &[u32]) -> Option<Vec<Served>> {
    let gw = group.gateways.iter().find(|g| g.gw_id == id)?;
    if !active_groups(gw).is_empty() {
        return None;
    }
    served
        .iter()
        .map(|a| {
            holder(group, *a).map(|by| Served {
                ana_group: *a,
                served_by: by.to_owned(),
            })
        })
        .collect()
}

/// Whether `id` serves its own ANA group again.
fn serves_own(group: &GroupOut, id: &str) -> Option<Vec<Served>> {
    let gw = group.gateways.iter().find(|g| g.gw_id == id)?;
    (gw.availability == "AVAILABLE" && active_groups(gw).contains(&gw.anagrp_id)).then(|| {
        vec![Served {
            ana_group: gw.anagrp_id,
            served_by: id.to_owned(),
        }]
    })
}

/// What `enter` or `exit` waits for, read from one `show`.
type Reached = Box<dyn Fn(&GroupOut) -> Option<Vec<Served>>>;

/// Enter (`enabled` false) or leave maintenance, waiting at most `timeout` for the hosts
/// to be served as asked. Entering is refused, before anything changes, when stopping the
/// gateway would leave fewer than `min_available` of the others available, unless `force`.
pub async fn run(
    admin: &mut Admin,
    args: &GroupArgs,
    id: &str,
    enabled: bool,
    force: bool,
    min_available: u32,
    timeout: Duration,
) -> Result<MaintenanceOut, CliError> {
    let key = group_key(args)?;
    let before = show_group(admin, args, false).await?;
    let gw = find(&before, id)?;
    let reached: Reached = if enabled {
        let id = id.to_owned();
        Box::new(move |g| serves_own(g, &id))
    } else {
        let answer = crate::stop::gateways(&before, &[id.to_owned()], min_available)?;
        if !answer.ok_to_stop && !force {
            return Err(CliError::Busy(answer.reason));
        }
        // What it serves now, its own group included even if someone else serves it
        // (a failover): whoever serves that must not be this gateway.
        let mut served = active_groups(gw);
        if !served.contains(&gw.anagrp_id) {
            served.push(gw.anagrp_id);
        }
        let id = id.to_owned();
        Box::new(move |g| handed_over(g, &id, &served))
    };
    let req = v1::SetAdminStateRequest {
        key: Some(key),
        gateway_id: id.to_owned(),
        enabled,
    };
    admin
        .call(|mut c| {
            let req = req.clone();
            async move { c.set_admin_state(req).await }
        })
        .await?;
    let start = Instant::now();
    loop {
        let group = show_group(admin, args, false).await?;
        if let Some(ana_groups) = reached(&group) {
            return Ok(MaintenanceOut {
                gw_id: id.to_owned(),
                pool: group.pool,
                group: group.group,
                state: if enabled { "serving" } else { "maintenance" }.to_owned(),
                ana_groups,
                waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
        if start.elapsed() >= timeout {
            let what = if enabled {
                "serving its own ANA group again"
            } else {
                "its ANA groups served by other gateways"
            };
            return Err(CliError::Refused(format!(
                "{id} was {} but is not {what} after {} s; `nvme-gw show` says where things are",
                if enabled { "enabled" } else { "disabled" },
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::view::group::fixtures::group;

    fn gateway(id: &str, own: u32, availability: &str, ana: &[(u32, &str)]) -> GatewayOut {
        crate::view::group::fixtures::gateway(id, own, availability, "ENABLED", ana)
    }

    #[test]
    fn handed_over_only_once_another_gateway_is_active_for_each_group() {
        let serving = group(vec![
            gateway("gw1", 1, "AVAILABLE", &[(1, "ACTIVE"), (2, "STANDBY")]),
            gateway("gw2", 2, "AVAILABLE", &[(1, "STANDBY"), (2, "ACTIVE")]),
        ]);
        assert!(handed_over(&serving, "gw1", &[1]).is_none());
        // Let go, not yet taken: the hosts have no optimized path to group 1.
        let between = group(vec![
            gateway("gw1", 1, "AVAILABLE", &[(1, "STANDBY"), (2, "STANDBY")]),
            gateway("gw2", 2, "AVAILABLE", &[(1, "STANDBY"), (2, "ACTIVE")]),
        ]);
        assert!(handed_over(&between, "gw1", &[1]).is_none());
        let moved = group(vec![
            gateway("gw1", 1, "AVAILABLE", &[(1, "STANDBY"), (2, "STANDBY")]),
            gateway("gw2", 2, "AVAILABLE", &[(1, "ACTIVE"), (2, "ACTIVE")]),
        ]);
        let served = handed_over(&moved, "gw1", &[1]).expect("handed over");
        assert_eq!(served[0].served_by, "gw2");
        assert!(serves_own(&moved, "gw1").is_none());
        assert!(serves_own(&serving, "gw1").is_some());
    }
}
