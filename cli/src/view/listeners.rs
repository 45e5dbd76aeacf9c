//! `listeners POOL GROUP`: Ceph's `nvme-gw listeners` JSON, and a table.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gwmon_proto::v1;
use serde::Serialize;

use super::group::GroupOut;
use super::{group_label, View};
use crate::table::Table;

/// The listeners of one group, by subsystem NQN, with `ceph nvme-gw listeners`' keys. The
/// header (epoch, gateway count, group epoch) comes from a `show` of the group read just
/// before the listeners, since the monitor's listener answer carries none.
#[derive(Debug, Clone, Serialize)]
pub struct ListenersOut {
    pub epoch: u64,
    pub pool: String,
    pub group: String,
    #[serde(rename = "num gws")]
    pub num_gws: usize,
    #[serde(rename = "GW-epoch")]
    pub gw_epoch: u64,
    /// NQN to its listeners, NQNs in order, listeners by gateway.
    #[serde(rename = "Created listeners")]
    pub listeners: BTreeMap<String, Vec<ListenerOut>>,
}

/// One listener, as SPDK and Ceph describe it.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerOut {
    /// `IPv4` or `IPv6`.
    pub address_family: String,
    pub address: String,
    /// The port, as a string (NVMe's transport service id is text).
    pub svcid: String,
    pub gw_id: String,
}

impl ListenersOut {
    pub fn from_wire(group: &GroupOut, entries: Vec<v1::ListenerEntry>) -> Self {
        let mut listeners: BTreeMap<String, Vec<ListenerOut>> = BTreeMap::new();
        for e in entries {
            let l = e.listener.unwrap_or_default();
            let family = match l.address.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => "IPv4",
                Ok(IpAddr::V6(_)) => "IPv6",
                Err(_) => "unknown",
            };
            listeners.entry(e.nqn).or_default().push(ListenerOut {
                address_family: family.to_owned(),
                address: l.address,
                svcid: l.port.to_string(),
                gw_id: e.gateway_id,
            });
        }
        ListenersOut {
            epoch: group.epoch,
            pool: group.pool.clone(),
            group: group.group.clone(),
            num_gws: group.num_gws,
            gw_epoch: group.gw_epoch,
            listeners,
        }
    }
}

impl View for ListenersOut {
    fn plain(&self) -> String {
        let label = group_label(&self.pool, &self.group);
        if self.listeners.is_empty() {
            return format!("{label}: no listeners\n");
        }
        let mut t = Table::new(&["NQN", "GATEWAY", "FAMILY", "ADDRESS", "SVCID"]);
        for (nqn, list) in &self.listeners {
            for l in list {
                t.row(vec![
                    nqn.clone(),
                    l.gw_id.clone(),
                    l.address_family.clone(),
                    l.address.clone(),
                    l.svcid.clone(),
                ]);
            }
        }
        format!("{label}\n{}", t.render())
    }
}
