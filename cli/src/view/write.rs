//! The result of a command that changes the map: what changed and the map epoch at which
//! it was committed, so a script can wait for gateways to reach that epoch. (Ceph prints
//! nothing on success; the JSON here is an addition, the exit code says the same.)

use serde::Serialize;

use super::{group_label, View};

/// Which change was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    Delete,
    Enable,
    Disable,
    SetLocation,
    DisasterSet,
    DisasterClear,
}

impl Change {
    /// The command's name, as typed.
    pub fn name(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Delete => "delete",
            Change::Enable => "enable",
            Change::Disable => "disable",
            Change::SetLocation => "set-location",
            Change::DisasterSet => "disaster-set",
            Change::DisasterClear => "disaster-clear",
        }
    }
}

/// Keys are those of `show` where they mean the same thing; absent keys do not apply to the
/// command (`gw-id` for the disaster commands, `anagrp-id` for all but `create`).
#[derive(Debug, Clone, Serialize)]
pub struct WriteOut {
    pub command: &'static str,
    #[serde(rename = "gw-id", skip_serializing_if = "Option::is_none")]
    pub gw_id: Option<String>,
    pub pool: String,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The ANA group the gateway owns (`create`).
    #[serde(rename = "anagrp-id", skip_serializing_if = "Option::is_none")]
    pub anagrp_id: Option<u32>,
    /// `delete`: the gateway is not in the map after the deletion (never was, already
    /// erased, or erased at once for having no namespaces left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone: Option<bool>,
    /// The map epoch at which the change was committed.
    pub epoch: u64,
    #[serde(skip)]
    pub change: Change,
}

impl WriteOut {
    /// A result for `change` in group (`pool`, `group`); the other keys are set by the caller.
    pub fn new(change: Change, pool: &str, group: &str, epoch: u64) -> Self {
        WriteOut {
            command: change.name(),
            gw_id: None,
            pool: pool.to_owned(),
            group: group.to_owned(),
            location: None,
            anagrp_id: None,
            gone: None,
            epoch,
            change,
        }
    }
}

impl View for WriteOut {
    fn plain(&self) -> String {
        let group = group_label(&self.pool, &self.group);
        let gw = self.gw_id.as_deref().unwrap_or("");
        let loc = self.location.as_deref().unwrap_or("");
        let what = match self.change {
            Change::Create => format!(
                "gateway {gw} created in {group}, ANA group {}",
                self.anagrp_id.unwrap_or(0)
            ),
            Change::Delete if self.gone == Some(true) => {
                format!("gateway {gw} is not in {group}: nothing left to delete")
            }
            Change::Delete => format!(
                "gateway {gw} of {group} deleting; it is removed once its ANA group has no namespaces"
            ),
            Change::Enable => format!("gateway {gw} of {group} enabled"),
            Change::Disable => format!("gateway {gw} of {group} disabled"),
            Change::SetLocation if loc.is_empty() => {
                format!("gateway {gw} of {group} has no location now")
            }
            Change::SetLocation => format!("gateway {gw} of {group} is at location {loc}"),
            Change::DisasterSet => {
                format!("location {loc} of {group} declared a disaster")
            }
            Change::DisasterClear => {
                format!("disaster of location {loc} of {group} cleared")
            }
        };
        format!("{what} (map epoch {})\n", self.epoch)
    }
}
