//! `events`: one line per event. JSON output is one compact object per line (JSON Lines),
//! so `nvme-gw events --follow --format json | jq` works while the stream runs.

use std::io::Write;

use gwmon_proto::v1::{self, watch_events_response::Event as W};
use serde::Serialize;

use super::group_label;
use crate::args::Format;
use crate::time::utc;

/// One event as printed. Fields that do not apply to the event's type are left out.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventOut {
    /// The map epoch after the change; pass it to `--after-epoch` to resume after it.
    pub epoch: u64,
    /// The Raft log index of the change; 0 for a leader change.
    pub log_index: u64,
    /// When, UTC.
    pub at: String,
    pub at_ms: u64,
    /// `gateway_created`, `gateway_deleted`, `gateway_state`, `zombie_refused`,
    /// `ana_group_released`, `fence_issued`, `fence_completed`, `fence_expired`,
    /// `failover_started`, `ana_group_promoted`, `failback_started`, `fence_wait_expired`,
    /// `disaster_recovered`, `leader_changed`, or `unknown` from a newer monitor.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ana_group: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence_epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
}

impl EventOut {
    pub fn from_wire(e: v1::WatchEventsResponse) -> Self {
        let mut out = EventOut {
            epoch: e.map_epoch,
            log_index: e.log_index,
            at: utc(e.at_ms),
            at_ms: e.at_ms,
            kind: "unknown",
            pool: e.key.as_ref().map(|k| k.pool.clone()),
            group: e.key.map(|k| k.group),
            gateway: None,
            ana_group: None,
            from: None,
            to: None,
            fence_epoch: None,
            location: None,
            leader: None,
            term: None,
        };
        let fence = |out: &mut EventOut, kind, f: v1::FenceEvent| {
            out.kind = kind;
            out.gateway = Some(f.gateway_id);
            out.fence_epoch = Some(f.fence_epoch);
        };
        match e.event {
            None => {}
            Some(W::GatewayCreated(c)) => {
                out.kind = "gateway_created";
                out.gateway = Some(c.gateway_id);
                out.ana_group = Some(c.ana_group);
            }
            Some(W::GatewayDeleted(d)) => {
                out.kind = "gateway_deleted";
                out.gateway = Some(d.gateway_id);
            }
            Some(W::GatewayState(s)) => {
                out.kind = "gateway_state";
                out.gateway = Some(s.gateway_id);
                out.from = Some(s.from);
                out.to = Some(s.to);
            }
            Some(W::ZombieRefused(z)) => {
                out.kind = "zombie_refused";
                out.gateway = Some(z.gateway_id);
            }
            Some(W::AnaGroupReleased(r)) => {
                out.kind = "ana_group_released";
                out.gateway = Some(r.gateway_id);
                out.ana_group = Some(r.ana_group);
            }
            Some(W::FenceIssued(f)) => fence(&mut out, "fence_issued", f),
            Some(W::FenceCompleted(f)) => fence(&mut out, "fence_completed", f),
            Some(W::FenceExpired(f)) => fence(&mut out, "fence_expired", f),
            Some(W::FailoverStarted(f)) => {
                out.kind = "failover_started";
                out.ana_group = Some(f.ana_group);
                out.to = Some(f.to);
                out.fence_epoch = Some(f.fence_epoch);
            }
            Some(W::AnaGroupPromoted(p)) => {
                out.kind = "ana_group_promoted";
                out.ana_group = Some(p.ana_group);
                out.gateway = Some(p.gateway_id);
            }
            Some(W::FailbackStarted(f)) => {
                out.kind = "failback_started";
                out.ana_group = Some(f.ana_group);
                out.from = Some(f.from);
                out.to = Some(f.to);
            }
            Some(W::FenceWaitExpired(f)) => {
                out.kind = "fence_wait_expired";
                out.ana_group = Some(f.ana_group);
                out.gateway = Some(f.gateway_id);
            }
            Some(W::DisasterRecovered(d)) => {
                out.kind = "disaster_recovered";
                out.location = Some(d.location);
            }
            Some(W::LeaderChanged(l)) => {
                out.kind = "leader_changed";
                out.leader = Some(l.leader_id);
                out.term = Some(l.term);
            }
        }
        out
    }

    /// What happened, in words.
    fn text(&self) -> String {
        let gw = self.gateway.as_deref().unwrap_or("-");
        let ana = self.ana_group.unwrap_or(0);
        let from = self.from.as_deref().unwrap_or("-");
        let to = self.to.as_deref().unwrap_or("-");
        let fence = self.fence_epoch.unwrap_or(0);
        match self.kind {
            "gateway_created" => format!("gateway {gw} created with ANA group {ana}"),
            "gateway_deleted" => format!("gateway {gw} deleted"),
            "gateway_state" => format!("gateway {gw} {from} -> {to}"),
            "zombie_refused" => format!("gateway {gw} beaconed after being failed; kept failed"),
            "ana_group_released" => format!("gateway {gw} released ANA group {ana}"),
            "fence_issued" => format!("fence of {gw} issued (fence epoch {fence})"),
            "fence_completed" => format!("fence of {gw} completed (fence epoch {fence})"),
            "fence_expired" => format!("fence of {gw} expired (fence epoch {fence})"),
            "failover_started" => {
                format!("ANA group {ana} failing over to {to} after fence epoch {fence}")
            }
            "ana_group_promoted" => format!("ANA group {ana} active on {gw}"),
            "failback_started" => format!("ANA group {ana} failing back from {from} to {to}"),
            "fence_wait_expired" => {
                format!("{gw} did not confirm the fence for ANA group {ana} in time")
            }
            "disaster_recovered" => format!(
                "location {} recovered",
                self.location.as_deref().unwrap_or("-")
            ),
            "leader_changed" => match self.leader {
                Some(0) | None => format!("no leader in term {}", self.term.unwrap_or(0)),
                Some(l) => format!("monitor {l} leads term {}", self.term.unwrap_or(0)),
            },
            _ => "an event this nvme-gw does not know; upgrade it".to_owned(),
        }
    }

    /// One line in `format`.
    pub fn write(&self, out: &mut dyn Write, format: Format) -> std::io::Result<()> {
        match format {
            // An event stream is one JSON object per line in either JSON format, so a
            // reader can act on each as it comes.
            Format::Json | Format::JsonPretty => {
                let line = serde_json::to_string(self).map_err(std::io::Error::other)?;
                writeln!(out, "{line}")?;
            }
            Format::Plain => {
                let group = match (&self.pool, &self.group) {
                    (Some(p), Some(g)) => group_label(p, g),
                    _ => "-".to_owned(),
                };
                writeln!(
                    out,
                    "{}  epoch {:<6} {:<24} {}",
                    self.at,
                    self.epoch,
                    group,
                    self.text()
                )?;
            }
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(event: W) -> v1::WatchEventsResponse {
        v1::WatchEventsResponse {
            map_epoch: 12,
            log_index: 40,
            at_ms: 1_700_000_000_123,
            key: Some(v1::GroupKey {
                pool: "rbd".into(),
                group: "grp1".into(),
            }),
            event: Some(event),
        }
    }

    #[test]
    fn failover_prints_one_json_line_and_one_sentence() {
        let e = EventOut::from_wire(wire(W::FailoverStarted(v1::FailoverStartedEvent {
            ana_group: 2,
            to: "gw2".into(),
            fence_epoch: 5,
        })));
        let mut json = Vec::new();
        e.write(&mut json, Format::Json).expect("write");
        let text = String::from_utf8(json).expect("utf8");
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "failover_started");
        assert_eq!(v["to"], "gw2");
        assert_eq!(v["ana_group"], 2);
        assert_eq!(v["epoch"], 12);
        assert!(
            v.get("gateway").is_none(),
            "fields that do not apply are left out"
        );
        let mut plain = Vec::new();
        e.write(&mut plain, Format::Plain).expect("write");
        let line = String::from_utf8(plain).expect("utf8");
        assert!(line.starts_with("2023-11-14T22:13:20Z  epoch 12"), "{line}");
        assert!(line.contains("rbd/grp1"), "{line}");
        assert!(
            line.contains("ANA group 2 failing over to gw2 after fence epoch 5"),
            "{line}"
        );
    }

    #[test]
    fn an_event_without_a_body_is_unknown_not_an_error() {
        let mut w = wire(W::ZombieRefused(v1::ZombieRefusedEvent {
            gateway_id: "gw1".into(),
        }));
        w.event = None;
        let e = EventOut::from_wire(w);
        assert_eq!(e.kind, "unknown");
    }
}
