//! `show POOL GROUP` and `show-all`: Ceph's `nvme-gw show` JSON, and a table with one row
//! per gateway.

use gwmon_proto::v1;
use serde::Serialize;

use super::{group_label, or_dash, View};
use crate::table::Table;

/// One group, with `ceph nvme-gw show`'s keys. Unlike Ceph, every key is always present
/// (an empty group has `"num gws": 0` and an empty `"Created Gateways:"`), so a parser
/// never has to guess; Ceph's scripts only ever read keys Ceph sets.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOut {
    /// The map epoch the group was read at.
    pub epoch: u64,
    pub pool: String,
    pub group: String,
    #[serde(rename = "num gws")]
    pub num_gws: usize,
    /// The group epoch: grows with every change of the group's ANA ownership (the fencing
    /// token).
    #[serde(rename = "GW-epoch")]
    pub gw_epoch: u64,
    /// The ANA groups of gateways not being deleted, printed as Ceph does: `"[ 1 2 ]"`.
    #[serde(rename = "Anagrp list")]
    pub anagrp_list: String,
    #[serde(rename = "num-namespaces")]
    pub num_namespaces: u32,
    /// `"LB"` once the monitors balance namespaces between ANA groups, as Ceph prints it;
    /// empty before.
    pub features: String,
    /// Namespaces being moved between ANA groups now.
    #[serde(rename = "moving-namespaces")]
    pub moving_namespaces: u32,
    #[serde(rename = "Created Gateways:")]
    pub gateways: Vec<GatewayOut>,
}

/// One gateway of a group.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayOut {
    #[serde(rename = "gw-id")]
    pub gw_id: String,
    #[serde(rename = "anagrp-id")]
    pub anagrp_id: u32,
    pub location: String,
    /// `"Disaster"` while the gateway's location is declared a disaster; absent otherwise,
    /// as in Ceph.
    #[serde(rename = "disaster state", skip_serializing_if = "Option::is_none")]
    pub disaster_state: Option<String>,
    /// `"ENABLED"` or `"DISABLED"`.
    #[serde(rename = "admin state")]
    pub admin_state: String,
    #[serde(rename = "num-namespaces")]
    pub num_namespaces: u32,
    /// 1 once the gateway held a map and reported available since it started, else 0.
    #[serde(rename = "performed-full-startup")]
    pub performed_full_startup: u8,
    /// `CREATED`, `AVAILABLE`, `UNAVAILABLE` or `DELETING`.
    #[serde(rename = "Availability")]
    pub availability: String,
    #[serde(rename = "num-listeners")]
    pub num_listeners: u32,
    /// Ceph's exact form: `" 1: ACTIVE ,  2: STANDBY "`.
    #[serde(rename = "ana states")]
    pub ana_states: String,
    /// The same states, structured, for the table.
    #[serde(skip)]
    pub ana: Vec<(u32, String)>,
}

/// `show-all`: every group, each in the `show` shape.
#[derive(Debug, Clone, Serialize)]
pub struct AllOut {
    /// The map epoch the groups were read at.
    pub epoch: u64,
    pub groups: Vec<GroupOut>,
}

impl GroupOut {
    pub fn from_wire(view: v1::GroupView) -> Self {
        let key = view.key.unwrap_or_default();
        let gateways: Vec<GatewayOut> = view
            .gateways
            .into_iter()
            .map(|gw| GatewayOut::from_wire(gw, &view.disaster_locations))
            .collect();
        GroupOut {
            epoch: view.map_epoch,
            pool: key.pool,
            group: key.group,
            num_gws: gateways.len(),
            gw_epoch: view.epoch,
            anagrp_list: anagrp_list(&view.ana_groups),
            num_namespaces: view.num_namespaces,
            features: view.features,
            moving_namespaces: view.moving_namespaces,
            gateways,
        }
    }

    fn heading(&self) -> String {
        let moving = if self.moving_namespaces > 0 {
            format!("  moving {}", self.moving_namespaces)
        } else {
            String::new()
        };
        format!(
            "{}  gateways {}  namespaces {}{moving}  ANA groups {}  epoch {}  gw-epoch {}\n",
            group_label(&self.pool, &self.group),
            self.num_gws,
            self.num_namespaces,
            self.anagrp_list,
            self.epoch,
            self.gw_epoch
        )
    }
}

impl GatewayOut {
    fn from_wire(gw: v1::GatewayView, disaster_locations: &[String]) -> Self {
        let ana: Vec<(u32, String)> = gw
            .ana_states
            .iter()
            .map(|e| (e.ana_group, ceph_state(&e.state)))
            .collect();
        let in_disaster = !gw.location.is_empty() && disaster_locations.contains(&gw.location);
        GatewayOut {
            ana_states: ana_states(&ana),
            ana,
            disaster_state: in_disaster.then(|| "Disaster".to_owned()),
            gw_id: gw.gateway_id,
            anagrp_id: gw.ana_group,
            location: gw.location,
            admin_state: if gw.admin_enabled {
                "ENABLED"
            } else {
                "DISABLED"
            }
            .to_owned(),
            num_namespaces: gw.num_namespaces,
            performed_full_startup: u8::from(gw.performed_full_startup),
            availability: gw.availability.to_uppercase(),
            num_listeners: gw.num_listeners,
        }
    }
}

/// Ceph's `"[ 1 2 ]"`: an opening bracket, each id followed by a space, a closing bracket.
pub fn anagrp_list(ids: &[u32]) -> String {
    let mut s = String::from("[ ");
    for id in ids {
        s.push_str(&format!("{id} "));
    }
    s.push(']');
    s
}

/// Ceph's `" 1: ACTIVE ,  2: STANDBY "`: each entry is `" {id}: {STATE} "` (Ceph prints a
/// state with a trailing space) and entries are joined by `", "`. Scripts split it on `,` and
/// `:` and trim, so the spacing is kept exactly.
pub fn ana_states(states: &[(u32, String)]) -> String {
    states
        .iter()
        .map(|(id, state)| format!(" {id}: {state} "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The per-ANA-group state in Ceph's spelling. The monitor already sends Ceph's names;
/// the older CamelCase names of the proto's documentation are mapped too, and anything new
/// is shown upper-cased rather than dropped.
pub fn ceph_state(state: &str) -> String {
    match state {
        "Standby" => "STANDBY",
        "Active" => "ACTIVE",
        "WaitFenceComplete" => "WAIT_BLOCKLIST_CMPL",
        "WaitFailbackPrepared" => "WAIT_FAILBACK_PREPARED",
        "OwnerWaitFailbackPrepared" => "OWNER_FAILBACK_PREPARED",
        other => return other.to_uppercase(),
    }
    .to_owned()
}

/// The table of one group's gateways.
fn gateway_table(gateways: &[GatewayOut]) -> Table {
    let mut t = Table::new(&[
        "GATEWAY",
        "ANA",
        "AVAILABILITY",
        "ADMIN",
        "LOCATION",
        "NS",
        "LISTENERS",
        "STARTED",
        "ANA STATES",
    ]);
    for gw in gateways {
        let location = match &gw.disaster_state {
            Some(state) => format!("{} ({})", or_dash(&gw.location), state.to_lowercase()),
            None => or_dash(&gw.location),
        };
        let states = gw
            .ana
            .iter()
            .map(|(id, s)| format!("{id}:{s}"))
            .collect::<Vec<_>>()
            .join(" ");
        t.row(vec![
            gw.gw_id.clone(),
            gw.anagrp_id.to_string(),
            gw.availability.clone(),
            gw.admin_state.clone(),
            location,
            gw.num_namespaces.to_string(),
            gw.num_listeners.to_string(),
            if gw.performed_full_startup == 1 {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            states,
        ]);
    }
    t
}

impl View for GroupOut {
    fn plain(&self) -> String {
        let mut out = self.heading();
        if self.gateways.is_empty() {
            out.push_str("no gateways\n");
        } else {
            out.push_str(&gateway_table(&self.gateways).render());
        }
        out
    }
}

impl View for AllOut {
    fn plain(&self) -> String {
        if self.groups.is_empty() {
            return format!("no gateway groups (map epoch {})\n", self.epoch);
        }
        self.groups
            .iter()
            .map(View::plain)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Groups and gateways as `show` gives them, for the unit tests of what reads them.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{GatewayOut, GroupOut};

    /// Gateway `id` owning ANA group `own`, with per-group states `ana`.
    pub fn gateway(
        id: &str,
        own: u32,
        availability: &str,
        admin: &str,
        ana: &[(u32, &str)],
    ) -> GatewayOut {
        GatewayOut {
            gw_id: id.to_owned(),
            anagrp_id: own,
            location: String::new(),
            disaster_state: None,
            admin_state: admin.to_owned(),
            num_namespaces: 0,
            performed_full_startup: 1,
            availability: availability.to_owned(),
            num_listeners: 1,
            ana_states: String::new(),
            ana: ana.iter().map(|(a, s)| (*a, (*s).to_owned())).collect(),
        }
    }

    /// rbd/grp1 with `gateways`.
    pub fn group(gateways: Vec<GatewayOut>) -> GroupOut {
        GroupOut {
            epoch: 1,
            pool: "rbd".into(),
            group: "grp1".into(),
            num_gws: gateways.len(),
            gw_epoch: 1,
            anagrp_list: String::new(),
            num_namespaces: 0,
            features: String::new(),
            moving_namespaces: 0,
            gateways,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ana_states_are_printed_exactly_as_ceph_prints_them() {
        let states = vec![(1, "ACTIVE".to_owned()), (2, "STANDBY".to_owned())];
        assert_eq!(ana_states(&states), " 1: ACTIVE ,  2: STANDBY ");
        assert_eq!(ana_states(&states[..1]), " 1: ACTIVE ");
        assert_eq!(ana_states(&[]), "");
    }

    #[test]
    fn the_ana_group_list_is_printed_as_ceph_prints_it() {
        assert_eq!(anagrp_list(&[1, 2]), "[ 1 2 ]");
        assert_eq!(anagrp_list(&[]), "[ ]");
    }

    #[test]
    fn states_use_cephs_names() {
        assert_eq!(ceph_state("WaitFenceComplete"), "WAIT_BLOCKLIST_CMPL");
        assert_eq!(ceph_state("ACTIVE"), "ACTIVE");
        assert_eq!(ceph_state("SomethingNew"), "SOMETHINGNEW");
    }

    fn view() -> v1::GroupView {
        let gw = |id: &str, ana: u32, loc: &str, states: [&str; 2]| v1::GatewayView {
            gateway_id: id.into(),
            ana_group: ana,
            location: loc.into(),
            admin_enabled: ana == 1,
            availability: "AVAILABLE".into(),
            performed_full_startup: true,
            num_namespaces: 3,
            num_listeners: 1,
            ana_states: states
                .iter()
                .enumerate()
                .map(|(i, s)| v1::AnaStateEntry {
                    ana_group: u32::try_from(i + 1).expect("small"),
                    state: (*s).into(),
                })
                .collect(),
        };
        v1::GroupView {
            key: Some(v1::GroupKey {
                pool: "rbd".into(),
                group: "g".into(),
            }),
            epoch: 5,
            map_epoch: 9,
            gateways: vec![
                gw("gw1", 1, "", ["ACTIVE", "STANDBY"]),
                gw("gw2", 2, "b", ["STANDBY", "ACTIVE"]),
            ],
            ana_groups: vec![1, 2],
            num_namespaces: 6,
            disaster_locations: vec!["b".into()],
            features: "LB".into(),
            moving_namespaces: 0,
        }
    }

    #[test]
    fn the_json_has_cephs_keys_in_cephs_order() {
        let out = GroupOut::from_wire(view());
        let json = serde_json::to_value(&out).expect("json");
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        // serde_json without preserve_order sorts keys; check the set here and the order in
        // the text.
        for k in [
            "epoch",
            "pool",
            "group",
            "num gws",
            "GW-epoch",
            "Anagrp list",
            "num-namespaces",
            "features",
            "moving-namespaces",
            "Created Gateways:",
        ] {
            assert!(keys.contains(&k), "{k} missing");
        }
        assert_eq!(json["features"], "LB");
        let gw2 = &json["Created Gateways:"][1];
        assert_eq!(gw2["disaster state"], "Disaster");
        assert!(json["Created Gateways:"][0].get("disaster state").is_none());
        assert_eq!(gw2["admin state"], "DISABLED");
        assert_eq!(gw2["performed-full-startup"], 1);
        assert_eq!(gw2["ana states"], " 1: STANDBY ,  2: ACTIVE ");
        let text = serde_json::to_string(&out).expect("text");
        let pos = |k: &str| text.find(k).expect("present");
        assert!(pos("\"epoch\"") < pos("\"pool\""));
        assert!(pos("\"num gws\"") < pos("\"GW-epoch\""));
        assert!(pos("\"Anagrp list\"") < pos("\"Created Gateways:\""));
    }

    #[test]
    fn the_table_has_one_row_per_gateway_with_its_ana_states() {
        let text = GroupOut::from_wire(view()).plain();
        assert_eq!(
            text,
            "rbd/g  gateways 2  namespaces 6  ANA groups [ 1 2 ]  epoch 9  gw-epoch 5\n\
             GATEWAY  ANA  AVAILABILITY  ADMIN     LOCATION      NS  LISTENERS  STARTED  ANA STATES\n\
             gw1      1    AVAILABLE     ENABLED   -             3   1          yes      1:ACTIVE 2:STANDBY\n\
             gw2      2    AVAILABLE     DISABLED  b (disaster)  3   1          yes      1:STANDBY 2:ACTIVE\n"
        );
    }
}
