//! `status`: the whole system in one line, as `ceph status` sums up a service ("2 gateways
//! active").

use serde::Serialize;

use super::group::GroupOut;
use super::View;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryOut {
    /// `HEALTH_OK`, `HEALTH_WARN` or `HEALTH_ERR`, as `health` says.
    pub health: String,
    /// Voting monitors.
    pub monitors: usize,
    /// The leader's id; `null` while none is known.
    pub leader: Option<u64>,
    pub term: u64,
    /// The map epoch the gateways were read at.
    pub epoch: u64,
    pub groups: usize,
    /// Gateways created and not being deleted.
    pub gateways: usize,
    /// Of those, the ones `AVAILABLE`.
    pub gateways_available: usize,
    /// ANA groups of the gateways not being deleted.
    pub ana_groups: usize,
    /// Of those, the ones some gateway is `ACTIVE` for (hosts have an optimized path).
    pub ana_groups_active: usize,
}

impl SummaryOut {
    /// Sum up the groups `show-all` returned.
    pub fn new(
        health: String,
        monitors: usize,
        leader: Option<u64>,
        term: u64,
        epoch: u64,
        groups: &[GroupOut],
    ) -> Self {
        let live = || {
            groups
                .iter()
                .flat_map(|g| &g.gateways)
                .filter(|gw| gw.availability != "DELETING")
        };
        let (mut ana_groups, mut ana_groups_active) = (0, 0);
        for g in groups {
            for owner in g.gateways.iter().filter(|gw| gw.availability != "DELETING") {
                ana_groups += 1;
                let active = g.gateways.iter().any(|gw| {
                    gw.ana
                        .iter()
                        .any(|(id, state)| *id == owner.anagrp_id && state == "ACTIVE")
                });
                ana_groups_active += usize::from(active);
            }
        }
        SummaryOut {
            health,
            monitors,
            leader,
            term,
            epoch,
            groups: groups.len(),
            gateways: live().count(),
            gateways_available: live().filter(|gw| gw.availability == "AVAILABLE").count(),
            ana_groups,
            ana_groups_active,
        }
    }
}

impl View for SummaryOut {
    fn plain(&self) -> String {
        let leader = match self.leader {
            Some(id) => format!("leader {id} (term {})", self.term),
            None => "no leader".to_owned(),
        };
        let plural = |n: usize, one: &str, many: &str| {
            if n == 1 {
                format!("{n} {one}")
            } else {
                format!("{n} {many}")
            }
        };
        format!(
            "{}: {}, {leader}; {}; {} of {} available; {} of {} active (map epoch {})\n",
            self.health,
            plural(self.monitors, "monitor", "monitors"),
            plural(self.groups, "group", "groups"),
            self.gateways_available,
            plural(self.gateways, "gateway", "gateways"),
            self.ana_groups_active,
            plural(self.ana_groups, "ANA group", "ANA groups"),
            self.epoch,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::group::fixtures;

    #[test]
    fn counts_gateways_available_and_ana_groups_with_an_active_gateway() {
        use fixtures::gateway;
        // gw1 failed, its group 1 served by gw2; gw3 is up but its group 3 waits for a
        // fence; gw4 is being deleted and counts nowhere.
        let groups = [fixtures::group(vec![
            gateway(
                "gw1",
                1,
                "UNAVAILABLE",
                "ENABLED",
                &[(1, "STANDBY"), (2, "STANDBY")],
            ),
            gateway(
                "gw2",
                2,
                "AVAILABLE",
                "ENABLED",
                &[(1, "ACTIVE"), (2, "ACTIVE")],
            ),
            gateway(
                "gw3",
                3,
                "AVAILABLE",
                "ENABLED",
                &[(3, "WAIT_BLOCKLIST_CMPL")],
            ),
            gateway("gw4", 4, "DELETING", "ENABLED", &[(4, "STANDBY")]),
        ])];
        let s = SummaryOut::new("HEALTH_WARN".into(), 3, Some(1), 4, 12, &groups);
        assert_eq!(
            (
                s.gateways,
                s.gateways_available,
                s.ana_groups,
                s.ana_groups_active
            ),
            (3, 2, 3, 2)
        );
        assert_eq!(
            s.plain(),
            "HEALTH_WARN: 3 monitors, leader 1 (term 4); 1 group; 2 of 3 gateways available; \
             2 of 3 ANA groups active (map epoch 12)\n"
        );
    }

    #[test]
    fn an_empty_system_without_a_leader_reads_as_such() {
        let s = SummaryOut::new("HEALTH_OK".into(), 1, None, 0, 0, &[]);
        assert_eq!(
            s.plain(),
            "HEALTH_OK: 1 monitor, no leader; 0 groups; 0 of 0 gateways available; \
             0 of 0 ANA groups active (map epoch 0)\n"
        );
    }
}
