//! Carrying out a replacement, one committed stage at a time.
//!
//! The agent acts on the stage the cluster has committed and acknowledges what it did; the
//! cluster commits the next stage and answers with it; only then does the agent take the
//! next step. After a restart the agent reads the committed stage and looks at the host
//! before acting, so a step whose acknowledgement was lost is found done and acknowledged
//! again, never done twice:
//!
//! ```text
//!  stage (committed)   agent does                                   then acknowledges
//!  Requested           nothing: the backend is allocating           -
//!  Supplied            nvme connect the new replica, fail the old   Attached
//!                      leg if md still uses it, mdadm --add new leg
//!  Attached            wait for the new leg to be in sync           Synced
//!                      (progress goes out in the replica reports)
//!  Synced              mdadm --fail/--remove the old leg,           Retired
//!                      nvme disconnect its subsystem if unused
//!  Retired             nothing: the backend deletes the old replica -
//!                      and confirms; the replacement is then done
//! ```

use std::time::Duration;

use crate::attach;
use crate::cluster::{Cluster, HostIdentity, Replacement, ReplicaInfo, Stage, VolumeInfo};
use crate::error::AgentError;
use crate::host::{Host, HostCommand, LegState, MdArray, Snapshot};
use crate::observe;

/// What one step amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Acknowledged; the replacement as the cluster now has it.
    Advanced(Replacement),
    /// Nothing to do until something changes (the backend, or a resync).
    Waiting,
}

/// The pieces a step needs.
pub struct Replacer<'a, H, C> {
    pub host: &'a H,
    pub cluster: &'a C,
    pub identity: &'a HostIdentity,
    pub device_wait: Duration,
    pub fast_io_fail: Duration,
}

impl<H: Host, C: Cluster> Replacer<'_, H, C> {
    /// Take the step the committed stage of `rep` calls for.
    pub async fn step(&self, info: &VolumeInfo, rep: &Replacement) -> Result<Step, AgentError> {
        let done = match rep.stage {
            Stage::Requested | Stage::Retired | Stage::Done | Stage::Cancelled => {
                return Ok(Step::Waiting)
            }
            Stage::Supplied => {
                self.attach_new(info, rep).await?;
                Stage::Attached
            }
            Stage::Attached => {
                if !self.new_leg_in_sync(info, rep).await? {
                    return Ok(Step::Waiting);
                }
                Stage::Synced
            }
            Stage::Synced => {
                self.retire_old(info, rep).await?;
                Stage::Retired
            }
        };
        let next = self
            .cluster
            .acknowledge(self.identity, &info.id, rep, done)
            .await?;
        tracing::info!(volume = %info.id, replacement = %rep.id, stage = %next.stage, "acknowledged {done}");
        Ok(Step::Advanced(next))
    }

    fn new_replica<'r>(&self, rep: &'r Replacement) -> Result<&'r ReplicaInfo, AgentError> {
        rep.new.as_ref().ok_or_else(|| {
            AgentError::Protocol(format!(
                "replacement {} is {} but names no new replica",
                rep.id, rep.stage
            ))
        })
    }

    fn array<'s>(&self, info: &VolumeInfo, snap: &'s Snapshot) -> Result<&'s MdArray, AgentError> {
        snap.array_named(info.name.as_str())
            .ok_or_else(|| AgentError::NotConnected {
                volume: info.id,
                array: info.name.dev_path(),
            })
    }

    /// Supplied: connect the new replica and add it as a leg.
    async fn attach_new(&self, info: &VolumeInfo, rep: &Replacement) -> Result<(), AgentError> {
        let new = self.new_replica(rep)?;
        let snap = self.host.snapshot()?;
        self.array(info, &snap)?;
        attach::ensure_connected(self.host, self.identity, new, &snap).await?;
        let device = attach::wait_device(
            self.host,
            self.identity,
            new,
            self.device_wait,
            self.fast_io_fail,
        )
        .await?;
        let snap = self.host.snapshot()?;
        let array = self.array(info, &snap)?;
        self.make_room(info, rep, array, &snap).await?;
        match array.leg(&device).map(|l| l.state()) {
            // Added before a restart (or before a lost acknowledgement): not again.
            Some(LegState::InSync | LegState::Recovering | LegState::Spare) => {}
            Some(LegState::Faulty) => {
                // An earlier attempt's leg failed; take it out so it can go in afresh.
                self.host
                    .run(HostCommand::MdRemove {
                        name: info.name.clone(),
                        leg: device.clone(),
                    })
                    .await?;
                self.add(info, &device).await?;
            }
            None => self.add(info, &device).await?,
        }
        Ok(())
    }

    async fn add(&self, info: &VolumeInfo, device: &str) -> Result<(), AgentError> {
        self.host
            .run(HostCommand::MdAdd {
                name: info.name.clone(),
                leg: device.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// The old leg, if md still counts it as working, is failed so its slot goes to the
    /// new leg; never the last in-sync leg (md refuses that anyway).
    async fn make_room(
        &self,
        info: &VolumeInfo,
        rep: &Replacement,
        array: &MdArray,
        snap: &Snapshot,
    ) -> Result<(), AgentError> {
        let Some(old_dev) = info
            .replica(&rep.old)
            .and_then(|o| observe::device_of(o, snap, &self.identity.nqn))
        else {
            return Ok(());
        };
        let Some(old_leg) = array.leg(&old_dev) else {
            return Ok(());
        };
        if old_leg.state() == LegState::Faulty {
            return Ok(());
        }
        let others_in_sync = array
            .legs
            .iter()
            .filter(|l| l.device != old_dev && l.state() == LegState::InSync)
            .count();
        if others_in_sync == 0 {
            tracing::warn!(volume = %info.id, leg = %old_dev, "the old leg is the only one in sync; leaving it in");
            return Ok(());
        }
        self.host
            .run(HostCommand::MdFail {
                name: info.name.clone(),
                leg: old_dev,
            })
            .await?;
        Ok(())
    }

    /// Attached: whether the new leg is in sync. A new leg left as a spare (the old leg
    /// took its slot back meanwhile) gets room made for it.
    async fn new_leg_in_sync(
        &self,
        info: &VolumeInfo,
        rep: &Replacement,
    ) -> Result<bool, AgentError> {
        let new = self.new_replica(rep)?;
        let snap = self.host.snapshot()?;
        let array = self.array(info, &snap)?;
        let Some(device) = observe::device_of(new, &snap, &self.identity.nqn) else {
            tracing::warn!(volume = %info.id, replica = %new.id, "the new replica is not connected");
            return Ok(false);
        };
        match array.leg(&device).map(|l| l.state()) {
            Some(LegState::InSync) => Ok(true),
            Some(LegState::Spare) => {
                self.make_room(info, rep, array, &snap).await?;
                Ok(false)
            }
            Some(LegState::Recovering) => Ok(false),
            Some(LegState::Faulty) | None => {
                tracing::warn!(volume = %info.id, replica = %new.id, leg = %device, "the new leg failed or left the array during its resync");
                Ok(false)
            }
        }
    }

    /// Synced: take the old leg (and any faulty leg no replica owns) out of the array and
    /// disconnect the old replica's subsystem if nothing else uses it.
    async fn retire_old(&self, info: &VolumeInfo, rep: &Replacement) -> Result<(), AgentError> {
        let snap = self.host.snapshot()?;
        let array = self.array(info, &snap)?;
        let old = info.replica(&rep.old);
        let old_dev = old.and_then(|o| observe::device_of(o, &snap, &self.identity.nqn));
        let owned: Vec<String> = info
            .replicas
            .iter()
            .filter(|r| r.id != rep.old)
            .filter_map(|r| observe::device_of(r, &snap, &self.identity.nqn))
            .collect();
        for leg in &array.legs {
            let is_old = old_dev.as_deref() == Some(leg.device.as_str());
            let orphan = leg.state() == LegState::Faulty && !owned.contains(&leg.device);
            if !(is_old || orphan) {
                continue;
            }
            if leg.state() != LegState::Faulty {
                self.host
                    .run(HostCommand::MdFail {
                        name: info.name.clone(),
                        leg: leg.device.clone(),
                    })
                    .await?;
            }
            self.host
                .run(HostCommand::MdRemove {
                    name: info.name.clone(),
                    leg: leg.device.clone(),
                })
                .await?;
        }
        if let Some(old) = old {
            attach::disconnect_if_unused(self.host, self.identity, &old.nqn).await?;
        }
        Ok(())
    }
}
