//! The leader raises the map's feature level (see [`crate::map::features`]) once every
//! member of the cluster supports it: after the last monitor of a rolling upgrade runs the
//! new release, within one [`PERIOD`]. Members are asked over the peer port; a monitor of
//! an older release answers that it does not know the question (level 0), and one that
//! cannot be reached leaves the level where it is until it can.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::network::Network;
use crate::core::Core;
use crate::map::Command;

/// How often the leader looks, while the level is below what it supports.
pub const PERIOD: Duration = Duration::from_secs(2);
/// How long one member has to answer.
const ASK_BUDGET: Duration = Duration::from_secs(1);

/// Raise the level to the lowest any member supports (this monitor's `supported`
/// included), whenever that is above the map's, for as long as `stop` is not cancelled.
pub async fn raise(core: Core, network: Network, supported: u32, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PERIOD) => {}
        }
        if !core.is_leader() {
            continue;
        }
        let level = core.reader().read(|m| m.features());
        if level >= supported {
            continue;
        }
        let answers = ask_members(&core, &network).await;
        let Some(common) = next_level(level, supported, &answers) else {
            continue;
        };
        match core.propose(Command::SetFeatures(common)).await {
            Ok(_) => info!(
                from = level,
                to = common,
                "feature level raised: every monitor applies its rules"
            ),
            Err(e) => debug!(error = %e, "cannot raise the feature level now"),
        }
    }
}

/// The level to raise the map to from `level`, given this monitor's `supported` and every
/// other member's answer: the lowest any of them supports, if that is above `level`.
/// `None` while a member cannot say (it may be of an older release that is down now, and
/// would misread the new rules once it is back).
pub fn next_level(level: u32, supported: u32, answers: &[Result<u32, String>]) -> Option<u32> {
    let mut common = supported;
    for answer in answers {
        common = common.min(*answer.as_ref().ok()?);
    }
    (common > level).then_some(common)
}

/// Every other member's supported level, or why it could not be learned.
async fn ask_members(core: &Core, network: &Network) -> Vec<Result<u32, String>> {
    let members: Vec<_> = {
        let m = core.raft().metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != core.id())
            .map(|(id, node)| (*id, node.clone()))
            .collect()
    };
    let mut answers = Vec::with_capacity(members.len());
    for (id, node) in members {
        let answer = network.client(id, &node).features(ASK_BUDGET).await;
        if let Err(e) = &answer {
            // Asked again every period while it lasts; a peer's loss is logged once by the
            // Raft network already.
            debug!(monitor = id, error = %e, "cannot learn a monitor's feature level");
        }
        answers.push(answer);
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_raised_to_what_every_member_supports_and_never_on_a_doubt() {
        // Everyone new: raised to this build's level.
        assert_eq!(next_level(0, 1, &[Ok(1), Ok(1)]), Some(1));
        // A member of the previous release (it does not know the question: 0) holds it.
        assert_eq!(next_level(0, 1, &[Ok(1), Ok(0)]), None);
        // A member that cannot be asked holds it too.
        assert_eq!(next_level(0, 1, &[Ok(1), Err("down".into())]), None);
        // The lowest support wins, and a level is never lowered or raised past anyone.
        assert_eq!(next_level(1, 3, &[Ok(2), Ok(3)]), Some(2));
        assert_eq!(next_level(2, 3, &[Ok(2)]), None);
        // Alone in the cluster: its own level.
        assert_eq!(next_level(0, 1, &[]), Some(1));
    }
}
