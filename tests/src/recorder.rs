//! A gateway handler that records, with a timestamp, every change of every ANA group
//! between optimized and inaccessible, so tests can check that no two gateways were ever
//! optimized for one ANA group at the same time, from what the targets say.
//!
//! The fence acts on the targets, as a storage backend or a data-plane fencer would: a
//! fenced target is made inaccessible at once (recorded like any other change) and refuses
//! to serve any state of a map epoch at or below the fence's, so a paused or cut-off process
//! resuming with its old map cannot serve again. The overlap check reads the targets'
//! records only; a fence ends an interval only by making the target inaccessible.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use gwmon_client::{AnaHandler, AnaStates, HandlerError};
use gwmon_proto::domain::{AnaAccess, AnaGroupId, GatewayId, Listener, Namespace, Nqn, Subsystem};
use tokio::time::Instant;

/// One change seen at a target.
#[derive(Debug, Clone)]
pub struct Change {
    pub at: Instant,
    pub gateway: GatewayId,
    pub ana_group: AnaGroupId,
    pub optimized: bool,
}

/// The shared log of all recorders of a test, plus the instants at which a fence of a
/// gateway completed (from then on a gateway's writes cannot reach storage).
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    inner: Arc<Mutex<TimelineInner>>,
}

#[derive(Debug, Default)]
struct TimelineInner {
    changes: Vec<Change>,
    fenced: Vec<(Instant, GatewayId)>,
    /// Per target: the map epoch up to which it refuses to serve, and whether it is
    /// currently optimized for each ANA group.
    targets: BTreeMap<GatewayId, TargetState>,
}

#[derive(Debug, Default)]
struct TargetState {
    fenced_epoch: u64,
    current: BTreeMap<AnaGroupId, bool>,
}

impl TimelineInner {
    /// Apply one target's new states, as a target would: refused whole if it serves
    /// anything at a fenced epoch.
    fn apply(&mut self, target: &GatewayId, states: &AnaStates, now: Instant) -> Result<(), ()> {
        let t = self.targets.entry(target.clone()).or_default();
        let serves = states
            .entries
            .iter()
            .any(|e| e.access == AnaAccess::Optimized);
        if serves && states.epoch.0 <= t.fenced_epoch {
            return Err(());
        }
        let mut changes = Vec::new();
        for e in &states.entries {
            let optimized = e.access == AnaAccess::Optimized;
            if t.current.get(&e.ana_group) != Some(&optimized) {
                t.current.insert(e.ana_group, optimized);
                changes.push(Change {
                    at: now,
                    gateway: target.clone(),
                    ana_group: e.ana_group,
                    optimized,
                });
            }
        }
        self.changes.extend(changes);
        Ok(())
    }
}

impl Timeline {
    fn lock(&self) -> std::sync::MutexGuard<'_, TimelineInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn changes(&self) -> Vec<Change> {
        self.lock().changes.clone()
    }

    /// The fencer cut `gateway` off as of map epoch `epoch`: its target goes inaccessible
    /// now and refuses to serve any map up to that epoch.
    pub fn fence(&self, gateway: &GatewayId, epoch: u64, at: Instant) {
        let mut inner = self.lock();
        inner.fenced.push((at, gateway.clone()));
        let t = inner.targets.entry(gateway.clone()).or_default();
        t.fenced_epoch = t.fenced_epoch.max(epoch);
        let down: Vec<AnaGroupId> = t
            .current
            .iter()
            .filter(|(_, on)| **on)
            .map(|(g, _)| *g)
            .collect();
        for g in &down {
            t.current.insert(*g, false);
        }
        for g in down {
            inner.changes.push(Change {
                at,
                gateway: gateway.clone(),
                ana_group: g,
                optimized: false,
            });
        }
    }

    pub fn fence_times(&self) -> Vec<(Instant, GatewayId)> {
        self.lock().fenced.clone()
    }

    /// When `gateway` last turned optimized for `g`, if it is optimized now.
    pub fn optimized_since(&self, gateway: &GatewayId, g: AnaGroupId) -> Option<Instant> {
        let inner = self.lock();
        let last = inner
            .changes
            .iter()
            .rev()
            .find(|c| &c.gateway == gateway && c.ana_group == g)?;
        last.optimized.then_some(last.at)
    }

    /// Whose target says optimized for `g` now.
    pub fn holders(&self, g: AnaGroupId) -> Vec<GatewayId> {
        let inner = self.lock();
        inner
            .targets
            .iter()
            .filter(|(_, t)| t.current.get(&g) == Some(&true))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When `gateway`'s target last went inaccessible for `g` by its own process (not by a
    /// fence), if it did.
    pub fn demoted_at(&self, gateway: &GatewayId, g: AnaGroupId) -> Option<Instant> {
        let inner = self.lock();
        inner
            .changes
            .iter()
            .rev()
            .find(|c| {
                &c.gateway == gateway
                    && c.ana_group == g
                    && !c.optimized
                    && !inner.fenced.iter().any(|(t, f)| f == gateway && *t == c.at)
            })
            .map(|c| c.at)
    }

    /// Panic if two targets ever said optimized for one ANA group at the same time. An
    /// interval ends only when the target says inaccessible (by its process, or because the
    /// fencer made it so); a fence that did not reach the target does not end it.
    pub fn assert_no_overlap(&self) {
        let inner = self.lock();
        let mut intervals: BTreeMap<AnaGroupId, Vec<(Instant, Option<Instant>, GatewayId)>> =
            BTreeMap::new();
        let mut open: BTreeMap<(AnaGroupId, GatewayId), Instant> = BTreeMap::new();
        for c in &inner.changes {
            let k = (c.ana_group, c.gateway.clone());
            if c.optimized {
                open.entry(k).or_insert(c.at);
            } else if let Some(start) = open.remove(&k) {
                intervals.entry(c.ana_group).or_default().push((
                    start,
                    Some(c.at),
                    c.gateway.clone(),
                ));
            }
        }
        for ((g, gw), start) in open {
            intervals.entry(g).or_default().push((start, None, gw));
        }
        for (g, list) in &mut intervals {
            list.sort_by_key(|(s, _, _)| *s);
            for pair in list.windows(2) {
                let (_, end_a, gw_a) = &pair[0];
                let (start_b, _, gw_b) = &pair[1];
                match end_a {
                    Some(e) if e <= start_b => {}
                    _ => panic!(
                        "ANA group {g}: {gw_b} optimized at {start_b:?} while {gw_a} still was (until {end_a:?})"
                    ),
                }
            }
        }
    }
}

/// A target that serves one subsystem with namespaces in the given ANA groups.
pub struct Recorder {
    /// The target's name on the timeline (usually the gateway id).
    target: GatewayId,
    subsystems: Vec<Subsystem>,
    timeline: Timeline,
    pub shutdown: Mutex<Option<String>>,
}

impl Recorder {
    pub fn new(gateway: &GatewayId, groups: &[u32], timeline: Timeline) -> Self {
        let nqn: Nqn = "nqn.2016-06.io.spdk:cnode1".parse().expect("nqn");
        let namespaces = groups
            .iter()
            .enumerate()
            .map(|(i, g)| Namespace {
                nsid: i as u32 + 1,
                ana_group: AnaGroupId::new(*g).expect("ana group"),
                nonce: Some(format!("{gateway}/{g}").parse().expect("nonce")),
            })
            .collect();
        Recorder {
            target: gateway.clone(),
            subsystems: vec![Subsystem {
                nqn,
                listeners: vec![Listener {
                    address: "127.0.0.1".parse().expect("ip"),
                    port: 4420,
                }],
                namespaces,
            }],
            timeline,
            shutdown: Mutex::new(None),
        }
    }

    /// The same target recorded under another name: a second process started with the
    /// same gateway id, on a target of its own.
    pub fn named(mut self, target: &str) -> Self {
        self.target = target.parse().expect("target name");
        self
    }
}

impl AnaHandler for Recorder {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        Ok(self.subsystems.clone())
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        let mut inner = self.timeline.lock();
        inner
            .apply(&self.target, states, Instant::now())
            .map_err(|()| HandlerError::Target {
                target: "recorder",
                op: "apply",
                message: format!("fenced: map epoch {} may not serve", states.epoch),
            })
    }

    async fn shutdown(&self, reason: &str) {
        *self
            .shutdown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_owned());
    }
}
