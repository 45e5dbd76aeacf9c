//! A gateway handler that records, with a timestamp, every change of every ANA group
//! between optimized and inaccessible, so tests can check that no two gateways were ever
//! optimized for one ANA group at the same time.

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

    pub fn fenced(&self, gateway: &GatewayId, at: Instant) {
        self.lock().fenced.push((at, gateway.clone()));
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

    /// Who can write through an optimized path of `g` now, by the targets' own records: a
    /// gateway whose target says optimized and that has not been fenced since.
    pub fn holders(&self, g: AnaGroupId) -> Vec<GatewayId> {
        let inner = self.lock();
        let mut last: BTreeMap<GatewayId, (bool, Instant)> = BTreeMap::new();
        for c in inner.changes.iter().filter(|c| c.ana_group == g) {
            last.insert(c.gateway.clone(), (c.optimized, c.at));
        }
        last.into_iter()
            .filter(|(gw, (optimized, since))| {
                *optimized && !inner.fenced.iter().any(|(t, f)| f == gw && t >= since)
            })
            .map(|(g, _)| g)
            .collect()
    }

    /// Panic if two gateways were ever optimized for one ANA group at once. A gateway's
    /// optimized interval ends when its target says inaccessible, or when it was fenced,
    /// whichever comes first (a killed gateway never says anything again).
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
            // Cut each interval at the first fence of its gateway after it began.
            for (start, end, gw) in list.iter_mut() {
                let fence = inner
                    .fenced
                    .iter()
                    .filter(|(t, f)| f == gw && *t >= *start)
                    .map(|(t, _)| *t)
                    .min();
                *end = match (*end, fence) {
                    (Some(e), Some(f)) => Some(e.min(f)),
                    (e, f) => e.or(f),
                };
            }
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
    gateway: GatewayId,
    subsystems: Vec<Subsystem>,
    timeline: Timeline,
    current: Mutex<BTreeMap<AnaGroupId, bool>>,
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
            gateway: gateway.clone(),
            subsystems: vec![Subsystem {
                nqn,
                listeners: vec![Listener {
                    address: "127.0.0.1".parse().expect("ip"),
                    port: 4420,
                }],
                namespaces,
            }],
            timeline,
            current: Mutex::new(BTreeMap::new()),
            shutdown: Mutex::new(None),
        }
    }
}

impl AnaHandler for Recorder {
    async fn subsystems(&self) -> Result<Vec<Subsystem>, HandlerError> {
        Ok(self.subsystems.clone())
    }

    async fn apply(&self, states: &AnaStates) -> Result<(), HandlerError> {
        let now = Instant::now();
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changes = Vec::new();
        for e in &states.entries {
            let optimized = e.access == AnaAccess::Optimized;
            if current.get(&e.ana_group) != Some(&optimized) {
                current.insert(e.ana_group, optimized);
                changes.push(Change {
                    at: now,
                    gateway: self.gateway.clone(),
                    ana_group: e.ana_group,
                    optimized,
                });
            }
        }
        self.timeline.lock().changes.extend(changes);
        Ok(())
    }

    async fn shutdown(&self, reason: &str) {
        *self
            .shutdown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_owned());
    }
}
