//! `nvmeof-agent run`: every period, look at the host, tell the cluster what changed, and
//! carry replacements forward.
//!
//! One pass:
//! 1. heartbeat, naming the volumes connected here (the local state directory);
//! 2. per volume: fetch it from the cluster, read the host, and
//!    * report each replica whose observed state (or resync progress) differs from what
//!      was last reported or from what the cluster holds: edge-triggered, and a report
//!      lost with a crash is sent again because the cluster's record still differs;
//!    * with no replacement under way, ask for a bad replica to be replaced: the cluster
//!      refuses until the volume's grace period has passed (it measures it), so the agent
//!      asks each period and keeps no timer of its own that a restart would reset;
//!    * with a replacement under way, take the step its committed stage calls for
//!      ([`crate::replace`]), acknowledge it, and go on while the cluster answers with a
//!      stage that has a step for this host.
//!
//! Errors in a pass are logged and the pass moves on to the next volume; the next period
//! tries again. One cancellation token stops the loop between steps, so a command that
//! has started (an `mdadm --add`, say) finishes rather than being cut off halfway.

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use crate::attach;
use crate::cluster::{
    Cluster, ClusterError, Refusal, ReplicaId, ReplicaReport, ReplicaState, Stage, VolumeId,
};
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::host::{CtrlState, Host};
use crate::observe::{self, VolumeView};
use crate::replace::{Replacer, Step};
use crate::state::StateDir;

/// Steps taken for one volume in one pass at most: a replacement has three steps for the
/// host, so three is enough to go from Supplied to Retired in one pass when the resync is
/// instant; the bound keeps a confused cluster from keeping the agent in one volume.
const MAX_STEPS: usize = 4;

/// What a pass did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassSummary {
    pub volumes: usize,
    pub reports: usize,
    pub requested: usize,
    pub steps: usize,
    pub errors: Vec<String>,
}

/// The daemon's memory between passes: only what makes reports edge-triggered. Losing it
/// (a restart) costs one round of repeated reports, which the cluster takes as no change.
pub struct Daemon<H, C> {
    host: H,
    cluster: C,
    config: AgentConfig,
    reported: BTreeMap<(VolumeId, ReplicaId), ReplicaReport>,
    controllers: BTreeMap<String, CtrlState>,
}

impl<H: Host, C: Cluster> Daemon<H, C> {
    pub fn new(host: H, cluster: C, config: AgentConfig) -> Self {
        Daemon {
            host,
            cluster,
            config,
            reported: BTreeMap::new(),
            controllers: BTreeMap::new(),
        }
    }

    /// Run passes every period until `stop` is cancelled. The first pass runs at once.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), AgentError> {
        let mut ticker = tokio::time::interval(self.config.period);
        // A pass that overran (a slow cluster) is not followed by a burst of catch-up
        // passes: the next one simply comes a period later.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(host = %self.config.identity.nqn, period_s = self.config.period.as_secs_f64(), "agent running");
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let summary = self.pass(&stop).await;
            for e in &summary.errors {
                tracing::warn!("{e}");
            }
        }
        tracing::info!("agent stopped");
        Ok(())
    }

    /// One pass over every connected volume.
    pub async fn pass(&mut self, stop: &CancellationToken) -> PassSummary {
        let mut summary = PassSummary::default();
        let records = match StateDir::new(&self.config.state_dir).list() {
            Ok(r) => r,
            Err(e) => {
                summary.errors.push(e.to_string());
                return summary;
            }
        };
        let volumes: Vec<VolumeId> = records.iter().map(|r| r.volume).collect();
        summary.volumes = volumes.len();
        self.log_controller_changes();
        if let Err(e) = self
            .cluster
            .heartbeat(&self.config.identity, &volumes)
            .await
        {
            summary.errors.push(format!("heartbeat: {e}"));
            if matches!(e, ClusterError::Unavailable(_)) {
                // Nothing else will get through either.
                return summary;
            }
        }
        for volume in &volumes {
            if stop.is_cancelled() {
                break;
            }
            if let Err(e) = self.tend(volume, stop, &mut summary).await {
                summary.errors.push(format!("volume {volume}: {e}"));
            }
        }
        summary
    }

    /// Log controllers that appeared, changed state or went away since the last pass: the
    /// connection events, as the KumoScale agent sent them ("host disconnected from
    /// backend"); the replica reports carry their consequence to the cluster.
    fn log_controller_changes(&mut self) {
        let Ok(snap) = self.host.snapshot() else {
            return;
        };
        let now: BTreeMap<String, CtrlState> = snap
            .controllers
            .iter()
            .map(|c| (c.name.clone(), c.state.clone()))
            .collect();
        for c in &snap.controllers {
            match self.controllers.get(&c.name) {
                Some(before) if before == &c.state => {}
                before => {
                    let level_warn = !c.state.is_live();
                    let before = before.map(CtrlState::as_str).unwrap_or("absent");
                    if level_warn {
                        tracing::warn!(controller = %c.name, nqn = %c.subsysnqn, address = %c.address, "controller {before} -> {}", c.state);
                    } else {
                        tracing::info!(controller = %c.name, nqn = %c.subsysnqn, address = %c.address, "controller {before} -> {}", c.state);
                    }
                }
            }
        }
        for name in self.controllers.keys().filter(|n| !now.contains_key(*n)) {
            tracing::info!(controller = %name, "controller gone");
        }
        self.controllers = now;
    }

    async fn tend(
        &mut self,
        volume: &VolumeId,
        stop: &CancellationToken,
        summary: &mut PassSummary,
    ) -> Result<(), AgentError> {
        let mut info = self.cluster.volume(&self.config.identity, volume).await?;
        let snap = self.host.snapshot()?;
        // Controllers connected before this agent ran, by hand or by one with another
        // setting, get it too; a failure is logged and tried again next pass.
        for replica in &info.replicas {
            if let Err(e) = attach::ensure_fast_io_fail(
                &self.host,
                &self.config.identity,
                replica,
                &snap,
                self.config.fast_io_fail,
            ) {
                tracing::warn!(%volume, replica = %replica.id, "cannot set fast_io_fail_tmo: {e}");
            }
        }
        let view = observe::observe(&info, &snap, &self.config.identity.nqn);
        if view.array.is_none() {
            return Err(AgentError::NotConnected {
                volume: *volume,
                array: info.name.dev_path(),
            });
        }
        summary.reports += self.report(&info, &view).await?;

        if info.replacement.is_none() {
            if let Some(bad) = view
                .replicas
                .iter()
                .find(|r| r.state.is_bad() && r.recorded.is_bad())
            {
                match self
                    .cluster
                    .request_replacement(&self.config.identity, volume, &bad.id)
                    .await
                {
                    Ok(rep) => {
                        tracing::info!(%volume, replica = %bad.id, replacement = %rep.id, "replacement accepted");
                        summary.requested += 1;
                        info.replacement = Some(rep);
                    }
                    Err(e) if e.is(Refusal::NotYet) => {
                        tracing::debug!(%volume, replica = %bad.id, "replacement not yet: {e}");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }

        let replacer = Replacer {
            host: &self.host,
            cluster: &self.cluster,
            identity: &self.config.identity,
            device_wait: self.config.device_wait,
            fast_io_fail: self.config.fast_io_fail,
        };
        let mut stepped = false;
        for _ in 0..MAX_STEPS {
            let Some(rep) = info.replacement.clone() else {
                break;
            };
            if stop.is_cancelled() {
                break;
            }
            match replacer.step(&info, &rep).await? {
                Step::Waiting => break,
                Step::Advanced(next) => {
                    summary.steps += 1;
                    stepped = true;
                    // The stage moved: the replicas' recorded states moved with it (new one
                    // synchronizing, old one terminating), so read the volume again.
                    info = self.cluster.volume(&self.config.identity, volume).await?;
                    if info.replacement.as_ref().map(|r| r.id) != Some(next.id) {
                        break;
                    }
                }
            }
        }
        // Progress made by the steps (a new leg recovering) goes out now, not a period later.
        if stepped {
            let snap = self.host.snapshot()?;
            let view = observe::observe(&info, &snap, &self.config.identity.nqn);
            summary.reports += self.report(&info, &view).await?;
        }
        Ok(())
    }

    /// Send the reports that differ from what was last sent or from the cluster's record.
    async fn report(
        &mut self,
        info: &crate::cluster::VolumeInfo,
        view: &VolumeView,
    ) -> Result<usize, AgentError> {
        // The new replica of a replacement is the stages' business until it is synced:
        // nothing to report before it is attached, and its arrival in sync is said by the
        // SYNCED acknowledgement, not by a report racing it.
        let held = |r: &observe::ReplicaView| {
            info.replacement.as_ref().is_some_and(|rep| {
                rep.new.as_ref().is_some_and(|n| n.id == r.id)
                    && (rep.stage < Stage::Attached
                        || (rep.stage == Stage::Attached && r.state == ReplicaState::Available))
            })
        };
        let reports: Vec<ReplicaReport> = view
            .replicas
            .iter()
            // Terminating is the cluster's to change.
            .filter(|r| r.recorded != ReplicaState::Terminating)
            .filter(|r| !held(r))
            .map(|r| r.report())
            .filter(|rep| {
                let recorded = view.replica(&rep.replica).map(|r| r.recorded);
                let last = self.reported.get(&(info.id, rep.replica));
                recorded != Some(rep.state) || last != Some(rep)
            })
            .collect();
        if reports.is_empty() {
            return Ok(0);
        }
        for r in &reports {
            tracing::info!(volume = %info.id, replica = %r.replica, state = %r.state, sync_permille = ?r.sync_permille, "reporting");
        }
        self.cluster
            .report(&self.config.identity, &info.id, &reports)
            .await?;
        for r in &reports {
            self.reported.insert((info.id, r.replica), r.clone());
        }
        Ok(reports.len())
    }
}
