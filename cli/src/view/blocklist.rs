//! `blocklist ls`: the fences issued against failed gateways.

use gwmon_proto::v1;
use serde::Serialize;

use super::View;
use crate::table::Table;
use crate::time::utc;

/// Every fence on record, oldest first. (Ceph has no such command: its blocklist lives in
/// the OSD map, `ceph osd blocklist ls`.)
#[derive(Debug, Clone, Serialize)]
pub struct BlocklistOut {
    pub entries: Vec<FenceOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FenceOut {
    pub pool: String,
    pub group: String,
    pub gw_id: String,
    /// Storage that rejects writes carrying an older epoch is safe from the fenced gateway.
    pub fence_epoch: u64,
    /// The storage-client nonces the fencer cut off.
    pub nonces: Vec<String>,
    /// Milliseconds since the Unix epoch, by the leader's clock.
    pub issued_at_ms: u64,
    /// When the entry lapses; `null` until the fence completes (a pending fence never
    /// lapses).
    pub expires_at_ms: Option<u64>,
    /// Whether the fencer confirmed the fence.
    pub completed: bool,
}

impl BlocklistOut {
    pub fn from_wire(resp: v1::BlocklistListResponse) -> Self {
        BlocklistOut {
            entries: resp
                .entries
                .into_iter()
                .map(|e| {
                    let key = e.key.unwrap_or_default();
                    FenceOut {
                        pool: key.pool,
                        group: key.group,
                        gw_id: e.gateway_id,
                        fence_epoch: e.fence_epoch,
                        nonces: e.nonces,
                        issued_at_ms: e.issued_at_ms,
                        expires_at_ms: (e.expires_at_ms != 0).then_some(e.expires_at_ms),
                        completed: e.completed,
                    }
                })
                .collect(),
        }
    }
}

impl View for BlocklistOut {
    fn plain(&self) -> String {
        if self.entries.is_empty() {
            return "blocklist empty\n".to_owned();
        }
        let mut t = Table::new(&[
            "POOL", "GROUP", "GATEWAY", "EPOCH", "STATE", "ISSUED", "EXPIRES", "NONCES",
        ]);
        for e in &self.entries {
            t.row(vec![
                e.pool.clone(),
                super::or_dash(&e.group),
                e.gw_id.clone(),
                e.fence_epoch.to_string(),
                if e.completed { "fenced" } else { "pending" }.to_owned(),
                utc(e.issued_at_ms),
                e.expires_at_ms.map_or_else(|| "-".to_owned(), utc),
                if e.nonces.is_empty() {
                    "-".to_owned()
                } else {
                    e.nonces.join(",")
                },
            ]);
        }
        t.render()
    }
}
