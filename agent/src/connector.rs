//! `connect`, `disconnect` and `extend` of a volume, as os-brick's NVMe-oF connector does
//! for replicated volumes (seed 001): connect every replica, build or assemble a RAID1 over
//! them, give the device path; stop it and disconnect; grow it.
//!
//! Each is idempotent: connecting a connected volume prints the same path and runs
//! nothing, a controller already there is not connected again, an array already assembled
//! is not assembled again, and disconnecting a disconnected volume succeeds.

use crate::attach;
use crate::cluster::{Cluster, HostIdentity, VolumeId, VolumeInfo};
use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::host::{ArrayName, Host, HostCommand, HostError};
use crate::state::{StateDir, VolumeRecord};

/// How a `connect` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connected {
    /// The array was running already.
    Already { path: String },
    /// A new array was created over fresh replicas.
    Created { path: String },
    /// An existing array was assembled from its legs.
    Assembled { path: String },
}

impl Connected {
    pub fn path(&self) -> &str {
        match self {
            Connected::Already { path }
            | Connected::Created { path }
            | Connected::Assembled { path } => path,
        }
    }
}

/// The volume operations, over a host and a cluster.
pub struct Connector<'a, H, C> {
    pub host: &'a H,
    pub cluster: &'a C,
    pub config: &'a AgentConfig,
}

impl<H: Host, C: Cluster> Connector<'_, H, C> {
    fn identity(&self) -> &HostIdentity {
        &self.config.identity
    }

    fn state(&self) -> StateDir {
        StateDir::new(&self.config.state_dir)
    }

    /// Connect `volume` and give its device path.
    pub async fn connect(&self, volume: &VolumeId) -> Result<Connected, AgentError> {
        // The cluster answers only hosts it knows: register first (idempotent), so a
        // fresh host can connect before its daemon has ever run.
        self.cluster.register(self.identity()).await?;
        // The cluster lists only the replicas safe to build from; when none is (the seed's
        // four-replica case: the two reachable legs are stale) it refuses, and its
        // reason is the error.
        let info = self
            .cluster
            .connection_info(self.identity(), volume)
            .await?;
        let path = info.name.dev_path();
        let record = VolumeRecord {
            volume: *volume,
            array: info.name.clone(),
        };
        let snap = self.host.snapshot()?;
        if snap
            .array_named(info.name.as_str())
            .is_some_and(|a| a.array_state.is_running())
        {
            self.state().save(&record)?;
            return Ok(Connected::Already { path });
        }

        let mut problems = Vec::new();
        let mut reachable = Vec::new();
        for replica in &info.replicas {
            match attach::ensure_connected(self.host, self.identity(), replica, &snap).await {
                Ok(_) => reachable.push(replica),
                Err(e @ HostError::ToolMissing { .. }) => return Err(e.into()),
                Err(e) => problems.push(format!("replica {}: {e}", replica.id)),
            }
        }
        let mut legs = Vec::new();
        for replica in reachable {
            match attach::wait_device(
                self.host,
                self.identity(),
                replica,
                self.config.device_wait,
                self.config.fast_io_fail,
            )
            .await
            {
                Ok(d) => legs.push(d),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if legs.is_empty() {
            return Err(AgentError::NothingConnected {
                volume: *volume,
                details: joined(&problems, &info),
            });
        }

        let mut used = Vec::new();
        for leg in &legs {
            if attach::has_superblock(self.host, leg).await? {
                used.push(leg.clone());
            }
        }
        let outcome = if used.is_empty() {
            let expected = info.replica_count.max(1);
            if legs.len() < usize::try_from(expected).unwrap_or(usize::MAX) {
                return Err(AgentError::TooFewLegs {
                    volume: *volume,
                    expected,
                    found: legs.len(),
                    details: if problems.is_empty() && info.left_out.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", joined(&problems, &info))
                    },
                });
            }
            self.host
                .run(HostCommand::MdCreate {
                    name: info.name.clone(),
                    legs,
                })
                .await?;
            Connected::Created { path }
        } else {
            // Legs without a superblock are new replicas not yet attached; the daemon adds
            // them through the replacement stages, not here.
            self.host
                .run(HostCommand::MdAssemble {
                    name: info.name.clone(),
                    legs: used,
                })
                .await?;
            Connected::Assembled { path }
        };
        self.state().save(&record)?;
        Ok(outcome)
    }

    /// The array name of `volume`: the local record, else the cluster's.
    async fn array_of(
        &self,
        volume: &VolumeId,
    ) -> Result<(ArrayName, Option<VolumeInfo>), AgentError> {
        let info = match self.cluster.volume(self.identity(), volume).await {
            Ok(i) => Some(i),
            Err(e) => {
                tracing::warn!(%volume, "cannot ask the cluster about the volume: {e}");
                None
            }
        };
        if let Some(r) = self.state().get(volume)? {
            return Ok((r.array, info));
        }
        match info {
            Some(i) => Ok((i.name.clone(), Some(i))),
            None => Err(AgentError::NotConnected {
                volume: *volume,
                array: "(unknown: not recorded here and the cluster did not answer)".into(),
            }),
        }
    }

    /// Stop the volume's array and disconnect the subsystems it used. Succeeds when there
    /// is nothing left to do.
    pub async fn disconnect(&self, volume: &VolumeId) -> Result<(), AgentError> {
        let (name, info) = self.array_of(volume).await?;
        let snap = self.host.snapshot()?;
        let mut nqns = Vec::new();
        if let Some(array) = snap.array_named(name.as_str()) {
            for leg in &array.legs {
                if let Some(c) = snap.controller_of(&leg.device) {
                    nqns.push(c.subsysnqn.clone());
                }
            }
            self.host
                .run(HostCommand::MdStop { name: name.clone() })
                .await?;
        }
        // The cluster's replicas too: a disconnect that stopped the array and then died
        // left their controllers behind.
        if let Some(info) = &info {
            nqns.extend(info.replicas.iter().map(|r| r.nqn.clone()));
        }
        nqns.sort();
        nqns.dedup();
        for nqn in &nqns {
            attach::disconnect_if_unused(self.host, self.identity(), nqn).await?;
        }
        self.state().remove(volume)?;
        Ok(())
    }

    /// Grow the volume's array to its (grown) replicas' size.
    pub async fn extend(&self, volume: &VolumeId) -> Result<String, AgentError> {
        let (name, _) = self.array_of(volume).await?;
        let snap = self.host.snapshot()?;
        if !snap
            .array_named(name.as_str())
            .is_some_and(|a| a.array_state.is_running())
        {
            return Err(AgentError::NotConnected {
                volume: *volume,
                array: name.dev_path(),
            });
        }
        self.host
            .run(HostCommand::MdGrowSize { name: name.clone() })
            .await?;
        Ok(name.dev_path())
    }
}

fn joined(problems: &[String], info: &VolumeInfo) -> String {
    let mut all: Vec<&str> = problems.iter().map(String::as_str).collect();
    all.extend(info.left_out.iter().map(String::as_str));
    if all.is_empty() {
        "no replica listed".to_owned()
    } else {
        all.join("; ")
    }
}
