//! `ok-to-stop POOL GROUP [GW...]` and `cluster ok-to-stop ID`: whether stopping gateways,
//! or a monitor, leaves everything served. Upgrades and host maintenance ask before each
//! stop; the answer is printed and, when it is no, the exit code is
//! [`crate::error::exit::BUSY`] (Ceph's ok-to-stop answers EBUSY).
//!
//! Both answers are worked out here from what any release's monitors already serve (`show`
//! and `cluster status`), so the check works in a cluster that is half way through an
//! upgrade.

use serde::Serialize;

use crate::error::CliError;
use crate::view::cluster::StatusOut;
use crate::view::group::GroupOut;
use crate::view::{group_label, View};

/// The answer for gateways.
#[derive(Debug, Clone, Serialize)]
pub struct GatewaysOut {
    pub pool: String,
    pub group: String,
    /// The gateways asked about; empty when the question was "any one gateway".
    pub stopping: Vec<String>,
    pub ok_to_stop: bool,
    /// The fewest gateways that must stay available.
    pub min_available: u32,
    /// The gateways that would still serve the group: available, enabled, not in a
    /// location declared a disaster, and not among those stopping.
    pub available_after: Vec<String>,
    /// Why not, or what stays; one line.
    pub reason: String,
}

/// Whether `stopping` (or, if empty, any one gateway) of `group` may stop while at least
/// `min_available` of its gateways stay available to take their ANA groups over.
pub fn gateways(
    group: &GroupOut,
    stopping: &[String],
    min_available: u32,
) -> Result<GatewaysOut, CliError> {
    let label = group_label(&group.pool, &group.group);
    for id in stopping {
        if !group.gateways.iter().any(|g| &g.gw_id == id) {
            return Err(CliError::Refused(format!("gateway {id} is not in {label}")));
        }
    }
    let serving: Vec<&str> = group
        .gateways
        .iter()
        .filter(|g| {
            g.availability == "AVAILABLE"
                && g.admin_state == "ENABLED"
                && g.disaster_state.is_none()
        })
        .map(|g| g.gw_id.as_str())
        .collect();
    let available_after: Vec<String> = if stopping.is_empty() {
        // Any one of them: the check holds for the worst choice, a serving gateway.
        serving.iter().skip(1).map(|s| (*s).to_owned()).collect()
    } else {
        serving
            .iter()
            .filter(|id| !stopping.iter().any(|s| s == *id))
            .map(|s| (*s).to_owned())
            .collect()
    };
    let after = u32::try_from(available_after.len()).unwrap_or(u32::MAX);
    let ok_to_stop = after >= min_available;
    let what = if stopping.is_empty() {
        "one gateway".to_owned()
    } else {
        stopping.join(" ")
    };
    let reason = if ok_to_stop {
        format!(
            "{after} gateway(s) of {label} stay available after stopping {what} (minimum {min_available})"
        )
    } else {
        format!(
            "stopping {what} would leave {after} gateway(s) of {label} available, fewer than the minimum {min_available}"
        )
    };
    Ok(GatewaysOut {
        pool: group.pool.clone(),
        group: group.group.clone(),
        stopping: stopping.to_vec(),
        ok_to_stop,
        min_available,
        available_after,
        reason,
    })
}

impl View for GatewaysOut {
    fn plain(&self) -> String {
        answer_line(self.ok_to_stop, &self.reason)
    }
}

/// The plain form of either answer: yes or no, then why.
fn answer_line(ok_to_stop: bool, reason: &str) -> String {
    let answer = if ok_to_stop {
        "ok to stop"
    } else {
        "not ok to stop"
    };
    format!("{answer}: {reason}\n")
}

/// The answer for a monitor.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorOut {
    pub id: u64,
    pub ok_to_stop: bool,
    /// Votes needed to commit: a majority of the voters, which stopping one does not change.
    pub quorum: usize,
    /// The other voters the leader knows to be caught up (within `max_lag` entries), the
    /// leader included: they commit without the one stopping.
    pub caught_up_after: Vec<u64>,
    pub max_lag: u64,
    pub reason: String,
}

/// Whether monitor `id` may stop: the other voters that are caught up still make a
/// majority of the voters. Needs the leader's view of the members' progress.
pub fn monitor(status: &StatusOut, id: u64, max_lag: u64) -> Result<MonitorOut, CliError> {
    let Some(member) = status.members.iter().find(|m| m.id == id) else {
        return Err(CliError::Refused(format!(
            "monitor {id} is not a member of the cluster"
        )));
    };
    let voters: Vec<_> = status.members.iter().filter(|m| m.voter).collect();
    let quorum = voters.len() / 2 + 1;
    let answer = |ok_to_stop: bool, caught_up_after: Vec<u64>, reason: String| MonitorOut {
        id,
        ok_to_stop,
        quorum,
        caught_up_after,
        max_lag,
        reason,
    };
    if !member.voter {
        return Ok(answer(
            true,
            Vec::new(),
            format!("monitor {id} is a learner: it does not vote"),
        ));
    }
    let Some(leader) = status.leader else {
        return Ok(answer(
            false,
            Vec::new(),
            "no leader is known: an election is running".to_owned(),
        ));
    };
    if !status.has_progress() {
        return Ok(answer(
            false,
            Vec::new(),
            format!(
                "monitor {} answered, not the leader: the members' progress is unknown",
                status.answered_by
            ),
        ));
    }
    let caught_up_after: Vec<u64> = voters
        .iter()
        .filter(|m| m.id != id)
        .filter(|m| m.id == leader || m.lag.is_some_and(|lag| lag <= max_lag))
        .map(|m| m.id)
        .collect();
    let ok = caught_up_after.len() >= quorum;
    let reason = if ok {
        format!(
            "{} of the other voters are caught up, a quorum of {quorum} of {} without monitor {id}",
            caught_up_after.len(),
            voters.len()
        )
    } else {
        format!(
            "without monitor {id} only {} voter(s) are caught up, fewer than a quorum of {quorum} of {}",
            caught_up_after.len(),
            voters.len()
        )
    };
    Ok(answer(ok, caught_up_after, reason))
}

impl View for MonitorOut {
    fn plain(&self) -> String {
        answer_line(self.ok_to_stop, &self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::cluster::MemberOut;
    use crate::view::group::fixtures::group;
    use crate::view::group::GatewayOut;

    fn gateway(id: &str, availability: &str, admin: &str) -> GatewayOut {
        crate::view::group::fixtures::gateway(id, 1, availability, admin, &[])
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn gateways_may_stop_while_enough_others_serve() {
        let g = group(vec![
            gateway("gw1", "AVAILABLE", "ENABLED"),
            gateway("gw2", "AVAILABLE", "ENABLED"),
            gateway("gw3", "UNAVAILABLE", "ENABLED"),
        ]);
        let one = gateways(&g, &names(&["gw1"]), 1).expect("answer");
        assert!(one.ok_to_stop, "{}", one.reason);
        assert_eq!(one.available_after, names(&["gw2"]));
        let both = gateways(&g, &names(&["gw1", "gw2"]), 1).expect("answer");
        assert!(!both.ok_to_stop);
        assert!(
            both.reason.contains("fewer than the minimum 1"),
            "{}",
            both.reason
        );
        // The minimum is honoured: one left is not enough for two.
        assert!(
            !gateways(&g, &names(&["gw1"]), 2)
                .expect("answer")
                .ok_to_stop
        );
        // Stopping the unavailable one changes nothing: two stay.
        assert!(
            gateways(&g, &names(&["gw3"]), 2)
                .expect("answer")
                .ok_to_stop
        );
    }

    #[test]
    fn disabled_and_disaster_gateways_do_not_count_as_serving() {
        let mut away = gateway("gw3", "AVAILABLE", "ENABLED");
        away.disaster_state = Some("Disaster".into());
        let g = group(vec![
            gateway("gw1", "AVAILABLE", "ENABLED"),
            gateway("gw2", "AVAILABLE", "DISABLED"),
            away,
        ]);
        let answer = gateways(&g, &names(&["gw1"]), 1).expect("answer");
        assert!(!answer.ok_to_stop);
        assert!(answer.available_after.is_empty());
    }

    #[test]
    fn without_names_any_one_serving_gateway_is_asked_about() {
        let two = group(vec![
            gateway("gw1", "AVAILABLE", "ENABLED"),
            gateway("gw2", "AVAILABLE", "ENABLED"),
        ]);
        assert!(gateways(&two, &[], 1).expect("answer").ok_to_stop);
        let one = group(vec![gateway("gw1", "AVAILABLE", "ENABLED")]);
        assert!(!gateways(&one, &[], 1).expect("answer").ok_to_stop);
    }

    #[test]
    fn an_unknown_gateway_is_refused_by_name() {
        let g = group(vec![gateway("gw1", "AVAILABLE", "ENABLED")]);
        let err = gateways(&g, &names(&["gw9"]), 1).expect_err("refused");
        assert_eq!(err.to_string(), "gateway gw9 is not in rbd/grp1");
    }

    fn member(id: u64, voter: bool, lag: Option<u64>) -> MemberOut {
        MemberOut {
            id,
            addr: format!("127.0.0.1:{}", 7400 + id),
            peer_addr: format!("127.0.0.1:{}", 7402 + id),
            role: String::new(),
            voter,
            matched_index: lag.map(|l| 100u64.saturating_sub(l)),
            lag,
        }
    }

    fn status(leader: Option<u64>, members: Vec<MemberOut>) -> StatusOut {
        StatusOut {
            leader,
            term: 3,
            commit_index: 100,
            applied_index: 100,
            answered_by: "127.0.0.1:7401".into(),
            features: 1,
            members,
        }
    }

    #[test]
    fn a_monitor_may_stop_while_the_others_caught_up_make_a_quorum() {
        let healthy = status(
            Some(1),
            vec![
                member(1, true, Some(0)),
                member(2, true, Some(0)),
                member(3, true, Some(2)),
            ],
        );
        for id in [1, 2, 3] {
            let a = monitor(&healthy, id, 100).expect("answer");
            assert!(a.ok_to_stop, "{id}: {}", a.reason);
            assert_eq!(a.quorum, 2);
        }
        // Monitor 3 far behind (or not heard from): only 1 and 2 commit, so neither of them
        // may stop, while 3 may.
        let lagging = status(
            Some(1),
            vec![
                member(1, true, Some(0)),
                member(2, true, Some(0)),
                member(3, true, Some(5_000)),
            ],
        );
        assert!(!monitor(&lagging, 2, 100).expect("answer").ok_to_stop);
        assert!(!monitor(&lagging, 1, 100).expect("answer").ok_to_stop);
        assert!(monitor(&lagging, 3, 100).expect("answer").ok_to_stop);
        let unheard = status(
            Some(1),
            vec![
                member(1, true, Some(0)),
                member(2, true, Some(0)),
                member(3, true, None),
            ],
        );
        assert!(!monitor(&unheard, 2, 100).expect("answer").ok_to_stop);
    }

    #[test]
    fn a_lone_monitor_never_may_stop_and_a_learner_always_may() {
        let alone = status(Some(1), vec![member(1, true, Some(0))]);
        assert!(!monitor(&alone, 1, 100).expect("answer").ok_to_stop);
        let with_learner = status(
            Some(1),
            vec![member(1, true, Some(0)), member(4, false, Some(900))],
        );
        assert!(monitor(&with_learner, 4, 100).expect("answer").ok_to_stop);
    }

    #[test]
    fn without_a_leader_or_its_view_the_answer_is_no() {
        let mut s = status(
            None,
            vec![
                member(1, true, Some(0)),
                member(2, true, Some(0)),
                member(3, true, Some(0)),
            ],
        );
        assert!(!monitor(&s, 2, 100).expect("answer").ok_to_stop);
        s.leader = Some(1);
        for m in &mut s.members {
            m.lag = None;
            m.matched_index = None;
        }
        let a = monitor(&s, 2, 100).expect("answer");
        assert!(!a.ok_to_stop);
        assert!(a.reason.contains("not the leader"), "{}", a.reason);
        let err = monitor(&s, 9, 100).expect_err("refused");
        assert_eq!(err.to_string(), "monitor 9 is not a member of the cluster");
    }
}
