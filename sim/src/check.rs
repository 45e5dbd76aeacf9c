//! The checks, read from what hosts and storage saw, never from the map:
//!
//! * (a) **one server per ANA group**: at no point of the history do two gateways *serve*
//!   one ANA group, where serving means the target exposes it optimized *and* storage would
//!   accept the target's I/O (the identity it carries is not blocklisted). Events are ordered
//!   by their sequence number, so two changes in one simulated millisecond still count in the
//!   order they happened. A fence ends an interval only by blocklisting; it does not stop
//!   the counting.
//! * (b) **fences hold**: after a fence of a gateway completed, storage accepts no write from
//!   any process of that gateway that had started before the fence.
//! * (c) **acknowledged admin changes stay**: the state read back at the end is, key by
//!   key, what the last acknowledged command left, or what a later command whose outcome is
//!   unknown would have left.
//! * (d) **service returns**: once faults stop, every namespace is served again, and stays
//!   served, within the stated bound, if any gateway that can serve it exists (every ANA
//!   group, for a history whose targets record only their ANA states).
//! * (e) **no stale leg**: once a compute node's report that a replica is FAULTY was
//!   acknowledged, no answer to a later question of which replicas to build its array from
//!   offers that replica.
//! * (f) **no failover without a cause**: no gateway whose process ran, reachable and
//!   untouched by any fault or admin command, for a window before, is declared failed (as
//!   the leading monitor's liveness loop logs it). Fences keep
//!   (a) and (b) true whatever the monitors decide, so this is what shows a monitor that
//!   fails healthy gateways over (timers carried over from an earlier term, say): an
//!   outage for hosts that nothing called for. Only the simulation, which knows every
//!   fault it injected, runs it.
//! * (h) **one server per namespace**: as (a), per namespace: a namespace is served by the
//!   gateways whose target has it in an ANA group the target serves. Namespace balancing
//!   moves namespaces between ANA groups while faults happen; no move may let two
//!   gateways serve one namespace, whatever (a) says of the ANA groups.
//! * (g) **a full grace in office**: a leader declares a gateway failed only once it has
//!   led for a whole beacon grace, so the silence it acts on is one it could have heard the
//!   gateway break (timers restart in every term). (f) cannot see a leader that acts on
//!   timers left from an earlier term when a fault touched the gateways lately anyway; (g)
//!   can. Only the simulation, which sees every monitor take office, runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::world::{AdminOp, Event, Record};

/// What the checks need besides the history.
#[derive(Debug, Clone)]
pub struct Params {
    /// The ANA groups hosts use (every gateway has namespaces in each).
    pub ana_groups: Vec<u32>,
    /// The gateways that run a process in the liveness phase.
    pub gateways: Vec<String>,
    /// How long after faults stop every group must be served again.
    pub liveness_bound: Duration,
    /// For (f): what impaired which gateways when; `None` skips (f).
    pub impairments: Option<Vec<Impairment>>,
    /// For (g): the beacon grace; `None` skips (g) (the history does not record when each
    /// leader took office).
    pub grace: Option<Duration>,
}

/// A fault that can explain a gateway's failover: from `from` to `until`, `gateway` (or,
/// with `None`, every gateway) was stopped, cut off, slowed, or had a failing target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impairment {
    pub gateway: Option<String>,
    pub from: Duration,
    pub until: Duration,
}

/// For (f): how far back a cause may lie. A gateway cut off just under the grace is timed
/// out a moment after it is healed, if it has not reconnected by then: the grace, a
/// reconnect backoff, and a margin.
pub const CAUSE_WINDOW: Duration = Duration::from_secs(10);

/// One broken promise, with the records that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub check: &'static str,
    pub at_seq: u64,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}) at #{}: {}", self.check, self.at_seq, self.what)
    }
}

/// Run every check.
pub fn check(history: &[Record], params: &Params) -> Vec<Violation> {
    let mut v = one_server(history);
    v.extend(fences_hold(history));
    v.extend(admin_changes_stay(history));
    v.extend(service_returns(history, params));
    v.extend(no_stale_leg(history));
    v.extend(failovers_have_causes(history, params));
    v.extend(timeouts_wait_a_grace_in_office(history, params));
    v.extend(one_server_per_namespace(history));
    v
}

/// Who serves each ANA group, as events go by.
#[derive(Default)]
struct Serving {
    /// (gateway, ana) to the identity an optimized target carries.
    optimized: BTreeMap<(String, u32), String>,
    blocklist: BTreeSet<String>,
}

impl Serving {
    /// Feed one record; true if it changed what is optimized or blocklisted.
    fn feed(&mut self, r: &Record) -> bool {
        match &r.event {
            Event::Target {
                gateway,
                ana,
                optimized,
                nonce,
            } => {
                let k = (gateway.clone(), *ana);
                if *optimized {
                    self.optimized.insert(k, nonce.clone());
                } else {
                    self.optimized.remove(&k);
                }
                true
            }
            Event::Fenced { nonces, .. } => {
                self.blocklist.extend(nonces.iter().cloned());
                true
            }
            _ => false,
        }
    }

    /// The gateways serving `ana` now.
    fn servers(&self, ana: u32) -> Vec<&str> {
        self.optimized
            .iter()
            .filter(|((_, a), nonce)| *a == ana && !self.blocklist.contains(*nonce))
            .map(|((g, _), _)| g.as_str())
            .collect()
    }

    fn anas(&self) -> BTreeSet<u32> {
        self.optimized.keys().map(|(_, a)| *a).collect()
    }
}

/// Who serves each namespace, as events go by: [`Serving`] and where each target has each
/// namespace. A namespace is served through a target that has it in an ANA group the
/// target serves.
#[derive(Default)]
struct Hosts {
    serving: Serving,
    /// (gateway, nsid) to the ANA group its target has the namespace in.
    placed: BTreeMap<(String, u32), u32>,
}

impl Hosts {
    /// Feed one record; true if it changed what is served or where.
    fn feed(&mut self, r: &Record) -> bool {
        match &r.event {
            Event::Placed { gateway, nsid, ana } => {
                self.placed.insert((gateway.clone(), *nsid), *ana);
                true
            }
            _ => self.serving.feed(r),
        }
    }

    /// Every namespace placed, with the gateways serving it now.
    fn namespace_servers(&self) -> BTreeMap<u32, Vec<&str>> {
        let mut out: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for ((gateway, nsid), ana) in &self.placed {
            let by = out.entry(*nsid).or_default();
            if self.serving.servers(*ana).contains(&gateway.as_str()) {
                by.push(gateway);
            }
        }
        out
    }
}

/// (a): never two servers for one ANA group.
pub fn one_server(history: &[Record]) -> Vec<Violation> {
    let mut s = Serving::default();
    let mut out = Vec::new();
    let mut overlapping: BTreeSet<u32> = BTreeSet::new();
    for r in history {
        if !s.feed(r) {
            continue;
        }
        for ana in s.anas() {
            let servers = s.servers(ana);
            if servers.len() > 1 {
                if overlapping.insert(ana) {
                    out.push(Violation {
                        check: "a",
                        at_seq: r.seq,
                        what: format!(
                            "ANA group {ana} served by {} at once ({:.3}s)",
                            servers.join(" and "),
                            r.at.as_secs_f64()
                        ),
                    });
                }
            } else {
                overlapping.remove(&ana);
            }
        }
    }
    out
}

/// (h): never two servers for one namespace.
pub fn one_server_per_namespace(history: &[Record]) -> Vec<Violation> {
    let mut hosts = Hosts::default();
    let mut out = Vec::new();
    let mut overlapping: BTreeSet<u32> = BTreeSet::new();
    for r in history {
        if !hosts.feed(r) {
            continue;
        }
        let servers = hosts.namespace_servers();
        overlapping.retain(|nsid| servers.get(nsid).is_some_and(|v| v.len() > 1));
        for (nsid, by) in servers {
            if by.len() > 1 && overlapping.insert(nsid) {
                out.push(Violation {
                    check: "h",
                    at_seq: r.seq,
                    what: format!(
                        "namespace {nsid} served by {} at once ({:.3}s)",
                        by.join(" and "),
                        r.at.as_secs_f64()
                    ),
                });
            }
        }
    }
    out
}

/// (b): a target that was serving when a fence of its gateway began, and has served on
/// unchanged since, gets no write accepted once that fence completed: the fence cut off the
/// process that was actually writing, not an older one.
pub fn fences_hold(history: &[Record]) -> Vec<Violation> {
    // (gateway, ana) to the record at which the target began serving with its identity.
    let mut serving_since: BTreeMap<(&str, u32), u64> = BTreeMap::new();
    // (gateway, epoch) to the first attempt of that fence.
    let mut began: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    // Gateway to the start of the latest-starting fence completed so far.
    let mut fenced_from: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    let mut reported: BTreeSet<(&str, u32)> = BTreeSet::new();
    for r in history {
        match &r.event {
            Event::Target {
                gateway,
                ana,
                optimized,
                ..
            } => {
                if *optimized {
                    serving_since.insert((gateway, *ana), r.seq);
                } else {
                    serving_since.remove(&(gateway.as_str(), *ana));
                }
            }
            Event::FenceStarted { gateway, epoch } => {
                began.entry((gateway, *epoch)).or_insert(r.seq);
            }
            Event::Fenced { gateway, epoch, .. } => {
                let start = began
                    .get(&(gateway.as_str(), *epoch))
                    .copied()
                    .unwrap_or(r.seq);
                let e = fenced_from.entry(gateway).or_insert((start, r.seq));
                if start >= e.0 {
                    *e = (start, r.seq);
                }
            }
            Event::Write {
                gateway,
                nonce,
                accepted: true,
                ana,
            } => {
                let k = (gateway.as_str(), *ana);
                let (Some((start, fence)), Some(since)) =
                    (fenced_from.get(k.0), serving_since.get(&k))
                else {
                    continue;
                };
                if since < start && reported.insert(k) {
                    out.push(Violation {
                        check: "b",
                        at_seq: r.seq,
                        what: format!(
                            "storage accepted a write to ANA group {ana} from {nonce} ({:.3}s), \
                             whose target serves since #{since}, after a fence of {gateway} begun at #{start} \
                             completed at #{fence}",
                            r.at.as_secs_f64()
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// (c): every acknowledged admin change is in the final state.
pub fn admin_changes_stay(history: &[Record]) -> Vec<Violation> {
    let mut ops: BTreeMap<u64, AdminOp> = BTreeMap::new();
    // Per key: the values the final state may hold, once any command was acknowledged.
    let mut allowed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut out = Vec::new();
    for r in history {
        match &r.event {
            Event::AdminSent { id, op } => {
                ops.insert(*id, op.clone());
            }
            Event::AdminAcked { id } => {
                for (k, v) in ops.get(id).map(AdminOp::effects).unwrap_or_default() {
                    allowed.insert(k, [v].into());
                }
            }
            Event::AdminFailed {
                id,
                definite: false,
                ..
            } => {
                for (k, v) in ops.get(id).map(AdminOp::effects).unwrap_or_default() {
                    if let Some(set) = allowed.get_mut(&k) {
                        set.insert(v);
                    }
                }
            }
            Event::AdminRead { state } => {
                for (k, values) in &allowed {
                    let gateway_gone = k
                        .split_once('/')
                        .filter(|(kind, _)| *kind != "exists")
                        .is_some_and(|(_, g)| {
                            state.get(&format!("exists/{g}")).map(String::as_str) != Some("yes")
                        });
                    if gateway_gone {
                        continue;
                    }
                    let got = state.get(k).cloned().unwrap_or_else(|| {
                        if k.starts_with("exists/") {
                            "no".into()
                        } else {
                            "(absent)".into()
                        }
                    });
                    if !values.contains(&got) {
                        out.push(Violation {
                            check: "c",
                            at_seq: r.seq,
                            what: format!(
                                "{k} reads {got:?}, but acknowledged commands allow only {values:?}"
                            ),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// (d): after the faults, each ANA group is served within the bound and stays served.
pub fn service_returns(history: &[Record], params: &Params) -> Vec<Violation> {
    let Some(quiet) = history.iter().find(|r| r.event == Event::Quiet) else {
        return vec![Violation {
            check: "d",
            at_seq: 0,
            what: "the run never reached its liveness phase".into(),
        }];
    };
    let Some(end) = history.last() else {
        return Vec::new();
    };
    // Gateways that may serve at the end: running, existing and enabled per the final read.
    let final_state = history.iter().rev().find_map(|r| match &r.event {
        Event::AdminRead { state } => Some(state.clone()),
        _ => None,
    });
    let can_serve = params.gateways.iter().any(|g| {
        final_state.as_ref().is_none_or(|s| {
            s.get(&format!("exists/{g}")).map(String::as_str) != Some("no")
                && s.get(&format!("enabled/{g}")).map(String::as_str) != Some("false")
        })
    });
    if !can_serve {
        return Vec::new();
    }
    let deadline = quiet.at + params.liveness_bound;
    let since = served_since(history, &params.ana_groups, quiet.at);
    let mut out = Vec::new();
    for (unit, at) in since {
        match at {
            None => out.push(Violation {
                check: "d",
                at_seq: end.seq,
                what: format!(
                    "{unit} is not served at the end ({:.3}s), {:.3}s after faults stopped",
                    end.at.as_secs_f64(),
                    (end.at.saturating_sub(quiet.at)).as_secs_f64()
                ),
            }),
            Some(t) if t > deadline => out.push(Violation {
                check: "d",
                at_seq: end.seq,
                what: format!(
                    "{unit} served again only {:.3}s after faults stopped (bound {:.3}s)",
                    t.saturating_sub(quiet.at).as_secs_f64(),
                    params.liveness_bound.as_secs_f64()
                ),
            }),
            Some(_) => {}
        }
    }
    out
}

/// What hosts need served, and since when each has been served without a break at the end
/// of `history` (`None`: not served then); from `quiet` on (faults stopped), a break no
/// longer than a handover ([`HANDOVER_GAP`]) does not count. With namespaces placed in the history, each
/// namespace: an ANA group that holds none needs no optimized path (the monitors fail over
/// only groups with namespaces), and balancing may empty one. Without (a history of
/// targets that record only their ANA states), each of `ana_groups`, which every gateway
/// has namespaces in.
fn served_since(
    history: &[Record],
    ana_groups: &[u32],
    quiet: Duration,
) -> BTreeMap<String, Option<Duration>> {
    let mut hosts = Hosts::default();
    let by_namespace = history
        .iter()
        .any(|r| matches!(r.event, Event::Placed { .. }));
    let mut streaks: BTreeMap<String, Streak> = BTreeMap::new();
    for r in history {
        if !hosts.feed(r) {
            continue;
        }
        let served: BTreeMap<String, bool> = if by_namespace {
            hosts
                .namespace_servers()
                .into_iter()
                .map(|(nsid, by)| (format!("namespace {nsid}"), !by.is_empty()))
                .collect()
        } else {
            ana_groups
                .iter()
                .map(|a| {
                    let on = !hosts.serving.servers(*a).is_empty();
                    (format!("ANA group {a}"), on)
                })
                .collect()
        };
        for (unit, on) in served {
            let streak = streaks.entry(unit).or_default();
            match (on, streak.since, streak.off_at) {
                (true, None, _) => streak.since = Some(r.at),
                (true, Some(_), Some(off)) => {
                    if off < quiet || r.at.saturating_sub(off) > HANDOVER_GAP {
                        streak.since = Some(r.at);
                    }
                    streak.off_at = None;
                }
                (false, Some(_), None) => streak.off_at = Some(r.at),
                _ => {}
            }
        }
    }
    streaks
        .into_iter()
        .map(|(unit, s)| (unit, s.since.filter(|_| s.off_at.is_none())))
        .collect()
}

/// The longest break in service that still counts as served throughout: a handover
/// (failback, balancing), break before make, leaves a unit unserved between the holder
/// letting go and the new server taking it, which hosts ride out as an ANA transition. A
/// handover in the simulation takes tens of milliseconds; a longer break, or one that
/// began before the faults stopped, is an outage.
const HANDOVER_GAP: Duration = Duration::from_secs(1);

/// Since when a unit has been served (`since`), and when a break that may still be a
/// handover began (`off_at`).
#[derive(Default)]
struct Streak {
    since: Option<Duration>,
    off_at: Option<Duration>,
}

/// (e): no replica acknowledged FAULTY is offered to a question asked after the ack.
pub fn no_stale_leg(history: &[Record]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut faulty: BTreeSet<&str> = BTreeSet::new();
    // Each question, with the replicas acknowledged faulty when it was asked.
    let mut asked: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for r in history {
        match &r.event {
            Event::ReplicaReported { replica, state } if state == "FAULTY" => {
                faulty.insert(replica);
            }
            Event::ConnectionAsked { n } => {
                asked.insert(*n, faulty.clone());
            }
            Event::ConnectionRead { n, replicas } => {
                let Some(known) = asked.get(n) else { continue };
                for stale in replicas.iter().filter(|id| known.contains(id.as_str())) {
                    out.push(Violation {
                        check: "e",
                        at_seq: r.seq,
                        what: format!(
                            "replica {stale}, acknowledged faulty, offered to the compute node \
                             at {:.3}s",
                            r.at.as_secs_f64()
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// (f): every failure declaration has a cause: the gateway's process had not run for the
/// whole [`CAUSE_WINDOW`] before it was declared failed, a fault impaired it within that
/// window, or an admin command named it.
pub fn failovers_have_causes(history: &[Record], params: &Params) -> Vec<Violation> {
    let Some(impairments) = &params.impairments else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut running_since: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut named: BTreeMap<&str, Duration> = BTreeMap::new();
    for r in history {
        match &r.event {
            Event::Started { gateway, .. } => {
                running_since.insert(gateway, r.at);
            }
            Event::Exited { gateway, .. } => {
                running_since.remove(gateway.as_str());
            }
            Event::AdminSent { op, .. } => {
                if let Some(g) = op.gateway() {
                    named.insert(g, r.at);
                }
            }
            Event::TimedOut { gateway, .. } => {
                let from = r.at.saturating_sub(CAUSE_WINDOW);
                let ran = running_since
                    .get(gateway.as_str())
                    .is_some_and(|since| *since <= from);
                let was_named = named.get(gateway.as_str()).is_some_and(|t| *t >= from);
                let impaired = impairments.iter().any(|i| {
                    i.gateway.as_ref().is_none_or(|g| g == gateway)
                        && i.from <= r.at
                        && i.until >= from
                });
                if ran && !was_named && !impaired {
                    out.push(Violation {
                        check: "f",
                        at_seq: r.seq,
                        what: format!(
                            "{gateway} declared failed at {:.3}s with no fault or admin command \
                             touching it in the {} s before",
                            r.at.as_secs_f64(),
                            CAUSE_WINDOW.as_secs()
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// For (g): how much earlier than its true instant a leader's taking office may be on
/// record. The driver records it within one 2 ms step, and a timeout carries the time of the
/// step it was logged in.
const OFFICE_SLACK: Duration = Duration::from_millis(10);

/// (g): every failure declaration comes at least a grace after its leader took office.
pub fn timeouts_wait_a_grace_in_office(history: &[Record], params: &Params) -> Vec<Violation> {
    let Some(grace) = params.grace else {
        return Vec::new();
    };
    let mut took_office: BTreeMap<u64, Duration> = BTreeMap::new();
    let mut out = Vec::new();
    for r in history {
        match &r.event {
            Event::Leader { term, .. } => {
                took_office.entry(*term).or_insert(r.at);
            }
            Event::TimedOut { gateway, term } => {
                let what = match took_office.get(term) {
                    None => format!(
                        "{gateway} declared failed at {:.3}s in term {term}, whose leader was \
                         never seen in office",
                        r.at.as_secs_f64()
                    ),
                    Some(since) if r.at + OFFICE_SLACK < *since + grace => format!(
                        "{gateway} declared failed at {:.3}s by the leader of term {term}, {} ms \
                         after it took office: less than the {} ms grace it must hear gateways \
                         out for",
                        r.at.as_secs_f64(),
                        r.at.saturating_sub(*since).as_millis(),
                        grace.as_millis()
                    ),
                    Some(_) => continue,
                };
                out.push(Violation {
                    check: "g",
                    at_seq: r.seq,
                    what,
                });
            }
            _ => {}
        }
    }
    out
}

/// How long after faults stopped the last namespace (or ANA group, see [`served_since`])
/// was served again for good; `None` if one is not served at the end.
pub fn recovery(history: &[Record], ana_groups: &[u32]) -> Option<Duration> {
    let quiet = history.iter().find(|r| r.event == Event::Quiet)?.at;
    served_since(history, ana_groups, quiet)
        .into_values()
        .map(|t| t.map(|t| t.saturating_sub(quiet)))
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, ms: u64, event: Event) -> Record {
        Record {
            seq,
            at: Duration::from_millis(ms),
            event,
        }
    }

    fn target(gateway: &str, ana: u32, optimized: bool, nonce: &str) -> Event {
        Event::Target {
            gateway: gateway.into(),
            ana,
            optimized,
            nonce: nonce.into(),
        }
    }

    #[test]
    fn two_optimized_targets_overlap_unless_one_is_blocklisted() {
        let h = vec![
            rec(1, 0, target("g1", 1, true, "g1/1")),
            rec(2, 5, target("g2", 1, true, "g2/1")),
        ];
        assert_eq!(one_server(&h).len(), 1);
        let fenced = vec![
            rec(1, 0, target("g1", 1, true, "g1/1")),
            rec(
                2,
                5,
                Event::Fenced {
                    gateway: "g1".into(),
                    nonces: vec!["g1/1".into()],
                    epoch: 3,
                },
            ),
            rec(3, 5, target("g2", 1, true, "g2/1")),
        ];
        assert!(one_server(&fenced).is_empty());
        // A fence naming another identity does not stop the old process serving.
        let wrong = vec![
            rec(1, 0, target("g1", 1, true, "g1/1")),
            rec(
                2,
                5,
                Event::Fenced {
                    gateway: "g1".into(),
                    nonces: vec!["g1/2".into()],
                    epoch: 3,
                },
            ),
            rec(3, 5, target("g2", 1, true, "g2/1")),
        ];
        assert_eq!(one_server(&wrong).len(), 1);
    }

    fn placed(gateway: &str, nsid: u32, ana: u32) -> Event {
        Event::Placed {
            gateway: gateway.into(),
            nsid,
            ana,
        }
    }

    #[test]
    fn a_handover_gap_does_not_end_service_and_an_outage_does() {
        let quiet = rec(1, 10_000, Event::Quiet);
        let params = Params {
            ana_groups: vec![1],
            gateways: vec!["g1".into(), "g2".into()],
            liveness_bound: Duration::from_secs(26),
            impairments: None,
            grace: None,
        };
        // Served by g2 from 11 s; failed back to g1 at 40 s, 14 ms without a server.
        let mut h = vec![
            quiet.clone(),
            rec(2, 11_000, target("g2", 1, true, "g2/1")),
            rec(3, 40_000, target("g2", 1, false, "g2/1")),
            rec(4, 40_014, target("g1", 1, true, "g1/2")),
            rec(5, 45_000, Event::Quiet),
        ];
        assert!(service_returns(&h, &params).is_empty());
        assert_eq!(recovery(&h, &[1]), Some(Duration::from_secs(1)));
        // Two seconds without a server: an outage, so service returned only at 42 s.
        h[3].at = Duration::from_millis(42_000);
        let v = service_returns(&h, &params);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(recovery(&h, &[1]), Some(Duration::from_secs(32)));
        // Unserved at the end, however briefly: not served.
        h.truncate(3);
        h.push(rec(5, 40_010, Event::Quiet));
        assert_eq!(recovery(&h, &[1]), None);
        // A break that began before the faults stopped is theirs: recovery counts it.
        let straddling = vec![
            rec(1, 9_000, target("g1", 1, true, "g1/1")),
            rec(2, 9_900, target("g1", 1, false, "g1/1")),
            quiet,
            rec(4, 10_050, target("g2", 1, true, "g2/1")),
        ];
        assert_eq!(recovery(&straddling, &[1]), Some(Duration::from_millis(50)));
    }

    #[test]
    fn a_namespace_moved_before_its_old_server_let_go_is_served_twice() {
        let start = || {
            vec![
                rec(1, 0, placed("g1", 7, 1)),
                rec(2, 0, placed("g2", 7, 1)),
                rec(3, 0, target("g1", 1, true, "g1/1")),
                rec(4, 0, target("g2", 2, true, "g2/1")),
            ]
        };
        // The new server takes it first: two servers, though each ANA group has one.
        let mut early = start();
        early.push(rec(5, 3, placed("g2", 7, 2)));
        early.push(rec(6, 4, placed("g1", 7, 2)));
        assert!(one_server(&early).is_empty());
        assert_eq!(one_server_per_namespace(&early).len(), 1);
        // The old server lets go first: never two.
        let mut handed = start();
        handed.push(rec(5, 3, placed("g1", 7, 2)));
        handed.push(rec(6, 4, placed("g2", 7, 2)));
        assert!(one_server_per_namespace(&handed).is_empty());
        // Fenced first: no longer a server.
        let mut fenced = start();
        fenced.push(rec(
            5,
            3,
            Event::Fenced {
                gateway: "g1".into(),
                nonces: vec!["g1/1".into()],
                epoch: 4,
            },
        ));
        fenced.push(rec(6, 4, placed("g2", 7, 2)));
        assert!(one_server_per_namespace(&fenced).is_empty());
    }

    #[test]
    fn order_within_one_millisecond_counts() {
        let h = vec![
            rec(1, 0, target("g1", 1, true, "g1/1")),
            rec(2, 5, target("g2", 1, true, "g2/1")),
            rec(3, 5, target("g1", 1, false, "g1/1")),
        ];
        assert_eq!(one_server(&h).len(), 1);
    }

    #[test]
    fn writes_after_a_fence_from_a_target_serving_across_it_are_violations() {
        let h = vec![
            rec(1, 0, target("g1", 1, true, "g1/1")),
            rec(
                2,
                5,
                Event::FenceStarted {
                    gateway: "g1".into(),
                    epoch: 2,
                },
            ),
            rec(
                3,
                9,
                Event::Fenced {
                    gateway: "g1".into(),
                    nonces: vec![],
                    epoch: 2,
                },
            ),
            rec(
                4,
                10,
                Event::Write {
                    gateway: "g1".into(),
                    ana: 1,
                    nonce: "g1/1".into(),
                    accepted: true,
                },
            ),
        ];
        assert_eq!(fences_hold(&h).len(), 1);
        // A process that began serving after the fence began is not what it was aimed at.
        let mut later = h.clone();
        later[0].seq = 6;
        later.sort_by_key(|r| r.seq);
        assert!(fences_hold(&later).is_empty());
    }

    #[test]
    fn an_acknowledged_change_must_be_read_back() {
        let op = AdminOp::SetFailbackDelay(700);
        let mut h = vec![
            rec(1, 0, Event::AdminSent { id: 1, op }),
            rec(2, 1, Event::AdminAcked { id: 1 }),
        ];
        let read = |v: &str| Event::AdminRead {
            state: [("failback_delay_ms".to_owned(), v.to_owned())].into(),
        };
        h.push(rec(3, 2, read("700")));
        assert!(admin_changes_stay(&h).is_empty());
        h.pop();
        h.push(rec(3, 2, read("0")));
        assert_eq!(admin_changes_stay(&h).len(), 1);
    }

    #[test]
    fn a_failure_declaration_needs_a_fault_or_a_command_near_its_gateway() {
        let started = |g: &str| Event::Started {
            gateway: g.into(),
            nonce: format!("{g}/1"),
        };
        let declared = |g: &str| Event::TimedOut {
            gateway: g.into(),
            term: 1,
        };
        let params = |impairments| Params {
            ana_groups: vec![1],
            gateways: vec!["g1".into(), "g2".into()],
            liveness_bound: Duration::from_secs(26),
            impairments: Some(impairments),
            grace: None,
        };
        let h = vec![
            rec(1, 0, started("g1")),
            rec(2, 0, started("g2")),
            rec(3, 20_000, declared("g1")),
        ];
        let v = failovers_have_causes(&h, &params(Vec::new()));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].at_seq, 3);

        // A fault on g1 that ended within the window explains it; one that ended earlier,
        // or that hit g2, does not.
        let on = |g: Option<&str>, from, until| Impairment {
            gateway: g.map(str::to_owned),
            from: Duration::from_millis(from),
            until: Duration::from_millis(until),
        };
        assert!(failovers_have_causes(&h, &params(vec![on(Some("g1"), 5_000, 12_000)])).is_empty());
        assert!(failovers_have_causes(&h, &params(vec![on(None, 15_000, 16_000)])).is_empty());
        assert_eq!(
            failovers_have_causes(&h, &params(vec![on(Some("g1"), 1_000, 9_000)])).len(),
            1
        );
        assert_eq!(
            failovers_have_causes(&h, &params(vec![on(Some("g2"), 15_000, 19_000)])).len(),
            1
        );

        // A process started within the window, or a command naming the gateway, explains
        // it too; without impairments known, (f) is not checked.
        let restarted = vec![
            rec(1, 0, started("g1")),
            rec(2, 15_000, started("g1")),
            rec(3, 20_000, declared("g1")),
        ];
        assert!(failovers_have_causes(&restarted, &params(Vec::new())).is_empty());
        let named = vec![
            rec(1, 0, started("g1")),
            rec(
                2,
                19_000,
                Event::AdminSent {
                    id: 9,
                    op: AdminOp::SetEnabled("g1".into(), false),
                },
            ),
            rec(3, 20_000, declared("g1")),
        ];
        assert!(failovers_have_causes(&named, &params(Vec::new())).is_empty());
        let unknown = Params {
            impairments: None,
            ..params(Vec::new())
        };
        assert!(failovers_have_causes(&h, &unknown).is_empty());
    }

    #[test]
    fn a_failure_declaration_must_come_a_grace_after_its_leader_took_office() {
        let leader = |monitor, term| Event::Leader { monitor, term };
        let declared = |term| Event::TimedOut {
            gateway: "g1".into(),
            term,
        };
        let params = |grace: Option<u64>| Params {
            ana_groups: vec![1],
            gateways: vec!["g1".into()],
            liveness_bound: Duration::from_secs(26),
            impairments: None,
            grace: grace.map(Duration::from_millis),
        };
        let grace = params(Some(4_000));
        // m1 leads term 1 from 0 s and rightly declares g1 failed at 4 s; m2 takes term 2 at
        // 6 s and may not act on g1 before 10 s.
        let h = vec![
            rec(1, 0, leader(1, 1)),
            rec(2, 4_000, declared(1)),
            rec(3, 6_000, leader(2, 2)),
            rec(4, 10_000, declared(2)),
        ];
        assert!(timeouts_wait_a_grace_in_office(&h, &grace).is_empty());
        // A leader re-elected in term 3 at 12 s that acts at once, on its timers of term 1.
        let mut stale = h.clone();
        stale.push(rec(5, 12_000, leader(1, 3)));
        stale.push(rec(6, 12_100, declared(3)));
        let v = timeouts_wait_a_grace_in_office(&stale, &grace);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].at_seq, 6);
        // A term nobody was seen leading is a violation too; without a grace, no check.
        let unseen = vec![rec(1, 5_000, declared(7))];
        assert_eq!(timeouts_wait_a_grace_in_office(&unseen, &grace).len(), 1);
        assert!(timeouts_wait_a_grace_in_office(&stale, &params(None)).is_empty());
    }

    #[test]
    fn a_replica_acknowledged_faulty_is_never_offered_to_a_later_question() {
        let read = |n, ids: &[&str]| Event::ConnectionRead {
            n,
            replicas: ids.iter().map(|s| (*s).to_owned()).collect(),
        };
        let faulty = Event::ReplicaReported {
            replica: "r2".into(),
            state: "FAULTY".into(),
        };
        let h = vec![
            rec(1, 0, Event::ConnectionAsked { n: 1 }),
            rec(2, 10, faulty),
            // Asked before the ack: may still list it.
            rec(3, 20, read(1, &["r1", "r2"])),
            rec(4, 300, Event::ConnectionAsked { n: 2 }),
            rec(5, 310, read(2, &["r1"])),
            rec(6, 600, Event::ConnectionAsked { n: 3 }),
            rec(7, 610, read(3, &["r1", "r2"])),
        ];
        let v = no_stale_leg(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].at_seq, 7);
    }
}
