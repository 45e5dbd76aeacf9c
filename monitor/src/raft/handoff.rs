//! Handing the leadership over before a planned stop.
//!
//! A leader that simply stops leaves its followers waiting out their election timeout, and
//! a leader restarted at once takes its office back in the same term (openraft resumes a
//! committed vote of its own), while gateways that lost it look elsewhere. Either way the
//! gateways' leases are spent on finding a leader. So before a planned stop the leader
//! stops sending heartbeats and stops campaigning: a follower's election timer runs out, it
//! is elected (its log is as long, the leader having replicated everything it committed),
//! the old leader learns of the new term and steps down, and its gateway sessions end
//! naming the new leader. openraft 0.9 has no leadership transfer; this is the part of one
//! a leader can do alone.

use std::time::Duration;

use tracing::{info, warn};

use super::{NodeId, Raft};

/// How long a stopping leader waits for a successor. In openraft 0.9 a follower that has
/// heard from a leader first waits out that leader's lease (`election_timeout_max`), then
/// its own election timeout (at most `election_timeout_max`), checked on a tick every one
/// and a half heartbeats; so the first campaign starts up to two election timeouts and a
/// tick after the last heartbeat. One more election timeout covers a split vote, and one
/// more the votes and the new leader's first append reaching this monitor on a busy host.
pub fn successor_within(election_timeout_max: Duration, heartbeat: Duration) -> Duration {
    election_timeout_max * 4 + heartbeat * 2
}

/// Hand the leadership of `raft` (this monitor, `id`) to another voter, waiting at most
/// `within` for one to be elected. Nothing to do for a follower or a lone voter. Returns
/// the new leader, if one was elected in time; either way this monitor no longer
/// campaigns, so it is only to be called on the way out.
pub async fn hand_off(raft: &Raft, id: NodeId, within: Duration) -> Option<NodeId> {
    let mut metrics = raft.metrics();
    let (leading, others) = {
        let m = metrics.borrow();
        let others = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != id)
            .count();
        (m.current_leader == Some(id), others)
    };
    if !leading || others == 0 {
        return None;
    }
    info!(id, "stopping: handing the leadership over");
    let config = raft.runtime_config();
    config.elect(false);
    config.heartbeat(false);
    let elected = tokio::time::timeout(
        within,
        metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != id)),
    )
    .await;
    match elected {
        Ok(Ok(m)) => {
            let new = m.current_leader;
            if let Some(l) = new {
                info!(id, new_leader = l, "leadership handed over");
            }
            new
        }
        Ok(Err(_)) => None,
        Err(_) => {
            warn!(
                id,
                waited_ms = within.as_millis() as u64,
                "no other monitor was elected before stopping: they elect one after this one stopped"
            );
            None
        }
    }
}
