//! Quorum contact: when a quorum of voters last acknowledged this monitor as their leader.
//!
//! openraft 0.9 never steps a leader down when it loses its followers, and its metrics give
//! the age of the last quorum acknowledgement only as of their last report. A leader that
//! grants leases to gateways needs a bound it can trust, so the Raft transport records it
//! here itself: when a voter answers an AppendEntries, InstallSnapshot or granted Vote of
//! term `t`, it has reset its election timer no earlier than the moment the request was
//! *sent*. The time a quorum last did so is the `quorum`-th latest of those send instants
//! (this monitor counting as "now" if it is a voter), taken in every configuration of a
//! joint membership.
//!
//! Why it bounds a new leader: a voter that acknowledged this leader at `t_f` cannot vote in
//! a newer term before `t_f` (it would have refused the request), and any new leader needs a
//! majority that shares a member with the acknowledging quorum. So no other leader exists
//! before `quorum_since`, and none can be elected before the members of that quorum time
//! out, an election timeout (at least `election_timeout_min`) after they last heard from
//! this one. See `Core::lease` for how this becomes the bound of every gateway lease.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use tokio::time::Instant;

use super::NodeId;

/// The acknowledgements of the latest term this monitor sent requests in.
#[derive(Debug, Default)]
pub struct QuorumContact {
    inner: Mutex<Acks>,
}

#[derive(Debug, Default)]
struct Acks {
    term: u64,
    /// Per peer, the send instant of the latest request it acknowledged in `term`.
    sent: BTreeMap<NodeId, Instant>,
}

impl QuorumContact {
    fn lock(&self) -> std::sync::MutexGuard<'_, Acks> {
        // Instants only: a panic elsewhere cannot leave them inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `peer` acknowledged a request of `term` sent at `sent`.
    pub fn acknowledged(&self, term: u64, peer: NodeId, sent: Instant) {
        let mut acks = self.lock();
        if term > acks.term {
            acks.term = term;
            acks.sent.clear();
        }
        if term == acks.term {
            let at = acks.sent.entry(peer).or_insert(sent);
            *at = (*at).max(sent);
        }
    }

    /// The latest instant by which a quorum of every configuration in `configs` (a joint
    /// membership has two) had acknowledged `me` as leader of `term`, if they all have.
    pub fn quorum_since(
        &self,
        term: u64,
        me: NodeId,
        configs: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Option<Instant> {
        if configs.is_empty() {
            return None;
        }
        let acks = self.lock();
        let mut since: Option<Instant> = None;
        for voters in configs {
            let mut times: Vec<Instant> = voters
                .iter()
                .filter_map(|id| {
                    if *id == me {
                        Some(now)
                    } else if acks.term == term {
                        acks.sent.get(id).copied()
                    } else {
                        None
                    }
                })
                .collect();
            let quorum = voters.len() / 2 + 1;
            if times.len() < quorum {
                return None;
            }
            times.sort_unstable_by(|a, b| b.cmp(a));
            let t = times[quorum - 1];
            since = Some(since.map_or(t, |s| s.min(t)));
        }
        since
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_lone_voter_is_its_own_quorum() {
        let c = QuorumContact::default();
        let now = Instant::now();
        assert_eq!(c.quorum_since(1, 1, &[set(&[1])], now), Some(now));
    }

    #[test]
    fn the_majority_th_latest_acknowledgement_counts() {
        let c = QuorumContact::default();
        let t0 = Instant::now();
        let configs = [set(&[1, 2, 3, 4, 5])];
        c.acknowledged(3, 2, t0);
        let now = t0 + Duration::from_millis(100);
        // Me and one peer: 2 of 5, no quorum.
        assert_eq!(c.quorum_since(3, 1, &configs, now), None);
        c.acknowledged(3, 3, t0 + Duration::from_millis(50));
        // Me (now), peer 3 (t0+50), peer 2 (t0): the third latest is t0.
        assert_eq!(c.quorum_since(3, 1, &configs, now), Some(t0));
        c.acknowledged(3, 4, t0 + Duration::from_millis(80));
        assert_eq!(
            c.quorum_since(3, 1, &configs, now),
            Some(t0 + Duration::from_millis(50))
        );
        // An older acknowledgement never moves it back.
        c.acknowledged(3, 4, t0);
        assert_eq!(
            c.quorum_since(3, 1, &configs, now),
            Some(t0 + Duration::from_millis(50))
        );
    }

    #[test]
    fn acknowledgements_of_another_term_do_not_count() {
        let c = QuorumContact::default();
        let t0 = Instant::now();
        let configs = [set(&[1, 2, 3])];
        c.acknowledged(4, 2, t0);
        assert_eq!(c.quorum_since(5, 1, &configs, t0), None);
        // A newer term forgets the older one's acknowledgements.
        c.acknowledged(5, 3, t0);
        assert_eq!(c.quorum_since(4, 1, &configs, t0), None);
        assert_eq!(c.quorum_since(5, 1, &configs, t0), Some(t0));
        // A late answer of an older term is ignored.
        c.acknowledged(4, 2, t0);
        assert_eq!(c.lock().sent.len(), 1);
    }

    #[test]
    fn a_joint_membership_needs_a_quorum_of_both() {
        let c = QuorumContact::default();
        let t0 = Instant::now();
        let configs = [set(&[1, 2, 3]), set(&[3, 4, 5])];
        c.acknowledged(2, 2, t0);
        assert_eq!(c.quorum_since(2, 1, &configs, t0), None);
        c.acknowledged(2, 4, t0);
        c.acknowledged(2, 3, t0 + Duration::from_millis(10));
        // Old config: me and 3 (latest two). New config (me not a voter): 3 and 4 → t0.
        assert_eq!(c.quorum_since(2, 1, &configs, t0), Some(t0));
    }
}
