//! Namespace balancing, the leader's part: every [`PERIOD`] it plans the next step of each
//! group ([`GroupState::plan_moves`](crate::map::GroupState::plan_moves)) and commits it
//! as a [`Command::MoveNamespaces`]. The engine checks each move again when it applies it
//! and carries it out (see [`crate::map::placement`]); a step is planned only once the
//! previous one in its group is done, so a group balances within a few steps of a
//! round-trip each.

use std::time::Duration;

use gwmon_proto::domain::GroupKey;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::core::Core;
use crate::map::features::NAMESPACE_BALANCING;
use crate::map::placement::NsMove;
use crate::map::Command;

/// How often the leader looks for a step to take.
pub const PERIOD: Duration = Duration::from_millis(200);
/// How long an unchanged map is not looked at again (a group's pause may run out).
const REPLAN: Duration = Duration::from_secs(5);

/// Plan and commit steps of at most `max_moves` namespaces per group until `stop`; nothing
/// with `max_moves` 0 (balancing off).
pub async fn run(core: Core, max_moves: u32, stop: CancellationToken) {
    if max_moves == 0 {
        return;
    }
    let max = usize::try_from(max_moves).unwrap_or(usize::MAX);
    // The map epoch at which no group had a step to take, and when: the same map gives the
    // same answer, so it is asked again only once the map changed, or after REPLAN (a
    // pause ran out).
    let mut idle: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PERIOD) => {}
        }
        if !core.is_leader() {
            idle = None;
            continue;
        }
        let epoch = core.reader().read(|m| m.epoch().0);
        if idle.is_some_and(|(e, at)| e == epoch && at.elapsed() < REPLAN) {
            continue;
        }
        let steps = steps(&core, max);
        idle = steps
            .is_empty()
            .then(|| (epoch, tokio::time::Instant::now()));
        for (key, moves) in steps {
            let count = moves.len();
            match core
                .propose(Command::MoveNamespaces {
                    key: key.clone(),
                    moves,
                })
                .await
            {
                Ok(_) => {
                    info!(group = %key, namespaces = count, "moving namespaces to balance ANA groups")
                }
                Err(e) => debug!(group = %key, error = %e, "namespace balancing step not taken"),
            }
        }
    }
}

/// The next step of every group that has one.
fn steps(core: &Core, max: usize) -> Vec<(GroupKey, Vec<NsMove>)> {
    let now = core.now();
    core.reader().read(|m| {
        if m.features() < NAMESPACE_BALANCING {
            return Vec::new();
        }
        m.groups()
            .iter()
            .filter_map(|(key, g)| {
                let moves = g.plan_moves(max, now);
                (!moves.is_empty()).then(|| (key.clone(), moves))
            })
            .collect()
    })
}
