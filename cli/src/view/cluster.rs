//! `cluster status`, `cluster add`, `cluster remove`: the Raft cluster of monitors.

use gwmon_proto::v1;
use serde::Serialize;

use super::View;
use crate::table::Table;

#[derive(Debug, Clone, Serialize)]
pub struct StatusOut {
    /// The leader's id; `null` while none is known (an election is running).
    pub leader: Option<u64>,
    pub term: u64,
    /// The highest log index known committed, as the answering monitor sees it.
    pub commit_index: u64,
    /// The highest log index the answering monitor has applied to its map.
    pub applied_index: u64,
    /// The monitor that answered. Only the leader knows the members' progress, so `lag` is
    /// `null` everywhere when another monitor answered (with `--stale`, or when the leader
    /// could not be reached).
    pub answered_by: String,
    /// The map's feature level: which release's rules the monitors apply (raised by the
    /// leader once every member supports it).
    pub features: u32,
    pub members: Vec<MemberOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberOut {
    pub id: u64,
    /// Where clients reach it.
    pub addr: String,
    /// Where the other monitors send it Raft (its peer port).
    pub peer_addr: String,
    /// `leader`, `follower` (a voter) or `learner` (catching up, not voting yet).
    pub role: String,
    pub voter: bool,
    /// The highest log index the leader knows this member holds; `null` if unknown.
    pub matched_index: Option<u64>,
    /// Entries this member is behind the leader's last entry; `null` if unknown.
    pub lag: Option<u64>,
}

impl StatusOut {
    pub fn from_wire(resp: v1::ClusterStatusResponse, answered_by: String) -> Self {
        let leader = (resp.leader_id != 0).then_some(resp.leader_id);
        StatusOut {
            leader,
            term: resp.term,
            commit_index: resp.commit_index,
            applied_index: resp.applied_index,
            answered_by,
            features: resp.features,
            members: resp
                .members
                .into_iter()
                .map(|m| MemberOut {
                    role: if Some(m.id) == leader {
                        "leader"
                    } else if m.voter {
                        "follower"
                    } else {
                        "learner"
                    }
                    .to_owned(),
                    id: m.id,
                    addr: m.addr,
                    peer_addr: m.peer_addr,
                    voter: m.voter,
                    matched_index: m.matched_index,
                    lag: m.lag,
                })
                .collect(),
        }
    }

    /// Whether the answer carries the members' progress, which only the leader knows.
    pub fn has_progress(&self) -> bool {
        self.members.iter().any(|m| m.matched_index.is_some())
    }

    /// The leader's address, from the membership.
    pub fn leader_addr(&self) -> Option<&str> {
        let leader = self.leader?;
        self.members
            .iter()
            .find(|m| m.id == leader)
            .map(|m| m.addr.as_str())
    }
}

impl View for StatusOut {
    fn plain(&self) -> String {
        let leader = self
            .leader
            .map_or_else(|| "none (election running)".to_owned(), |l| l.to_string());
        let mut t = Table::new(&["ID", "ADDRESS", "PEER", "ROLE", "MATCHED", "LAG"]);
        for m in &self.members {
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            t.row(vec![
                m.id.to_string(),
                m.addr.clone(),
                m.peer_addr.clone(),
                m.role.clone(),
                opt(m.matched_index),
                opt(m.lag),
            ]);
        }
        format!(
            "leader {leader}  term {}  commit {}  applied {}  features {}  (answered by {})\n{}",
            self.term,
            self.commit_index,
            self.applied_index,
            self.features,
            self.answered_by,
            t.render()
        )
    }
}

/// The result of `cluster backup`.
#[derive(Debug, Clone, Serialize)]
pub struct BackupOut {
    pub file: String,
    pub bytes: u64,
    /// The log index and term the state is as of.
    pub index: u64,
    pub term: u64,
    pub map_epoch: u64,
}

impl View for BackupOut {
    fn plain(&self) -> String {
        format!(
            "backup of the state as of index {} (term {}, map epoch {}) written to {} ({} bytes)\n",
            self.index, self.term, self.map_epoch, self.file, self.bytes
        )
    }
}

/// The result of `cluster add` and `cluster remove`.
#[derive(Debug, Clone, Serialize)]
pub struct MembershipOut {
    /// `add` or `remove`.
    pub action: String,
    pub id: u64,
    /// The new monitor's address (`add` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The Raft log index at which the new membership was committed.
    pub log_index: u64,
}

impl View for MembershipOut {
    fn plain(&self) -> String {
        match &self.addr {
            Some(addr) => format!(
                "monitor {} ({addr}) added as a voter (log index {})\n",
                self.id, self.log_index
            ),
            None => format!(
                "monitor {} removed (log index {})\n",
                self.id, self.log_index
            ),
        }
    }
}
