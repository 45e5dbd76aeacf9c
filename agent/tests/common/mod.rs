//! Fixtures shared by the agent's tests: a volume of replicas exported by a simulated
//! host's targets and registered in an in-memory cluster.

#![allow(dead_code)]

use std::time::Duration;

use gwmon_agent::cluster::memory::MemoryCluster;
use gwmon_agent::cluster::{
    HostIdentity, Portal, ReplicaId, ReplicaInfo, ReplicaState, VolumeId, VolumeInfo,
};
use gwmon_agent::host::sim::SimHost;
use gwmon_agent::host::{Address, ArrayName, HostCommand, Transport};
use gwmon_agent::AgentConfig;
use gwmon_proto::domain::Nqn;

pub const GRACE: Duration = Duration::from_secs(60);

pub fn identity() -> HostIdentity {
    HostIdentity {
        nqn: "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"
            .parse()
            .expect("nqn"),
        id: Some(
            "11111111-2222-3333-4444-555555555555"
                .parse()
                .expect("host id"),
        ),
        name: "compute-1".parse().expect("host name"),
    }
}

pub fn config(state_dir: &std::path::Path) -> AgentConfig {
    AgentConfig {
        identity: identity(),
        period: Duration::from_secs(30),
        device_wait: Duration::from_secs(2),
        fast_io_fail: Duration::from_secs(2),
        state_dir: state_dir.to_owned(),
    }
}

pub fn nqn(n: u32) -> Nqn {
    format!("nqn.2016-06.io.spdk:replica-{n}")
        .parse()
        .expect("nqn")
}

/// Replica `n`'s id: `00000000-0000-4000-8000-00000000000n`.
pub fn rid(n: u32) -> ReplicaId {
    format!("00000000-0000-4000-8000-{n:012x}")
        .parse()
        .expect("replica id")
}

pub fn vid() -> VolumeId {
    "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
        .parse()
        .expect("volume id")
}

pub fn array() -> ArrayName {
    "vol1".parse().expect("array name")
}

fn uuid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

/// Replica `n`: subsystem `replica-n` at 10.0.0.n:4420.
pub fn replica(n: u32, state: ReplicaState) -> ReplicaInfo {
    ReplicaInfo {
        id: rid(n),
        nqn: nqn(n),
        portals: vec![Portal {
            transport: Transport::Tcp,
            address: Address {
                traddr: format!("10.0.0.{n}"),
                trsvcid: "4420".into(),
            },
        }],
        ns_uuid: Some(uuid(n)),
        state,
    }
}

/// Export replica `n` from the simulated backend.
pub fn export(host: &SimHost, n: u32) {
    host.add_target(&nqn(n), &format!("10.0.0.{n}"), "4420", &uuid(n));
}

pub fn volume(replicas: &[u32]) -> VolumeInfo {
    VolumeInfo {
        id: vid(),
        name: array(),
        capacity_bytes: 1 << 30,
        replica_count: u32::try_from(replicas.len()).expect("count"),
        grace: GRACE,
        replicas: replicas
            .iter()
            .map(|n| replica(*n, ReplicaState::Available))
            .collect(),
        left_out: Vec::new(),
        replacement: None,
    }
}

/// A host exporting replicas `ns` and a cluster holding volume `vol1` over them.
pub fn setup(ns: &[u32]) -> (SimHost, MemoryCluster) {
    let host = SimHost::new();
    for n in ns {
        export(&host, *n);
    }
    let cluster = MemoryCluster::new();
    cluster.add_volume(volume(ns));
    (host, cluster)
}

pub fn is_connect(cmd: &HostCommand, n: u32) -> bool {
    matches!(cmd, HostCommand::NvmeConnect(spec) if spec.nqn == nqn(n))
}

pub fn is_add(cmd: &HostCommand) -> bool {
    matches!(cmd, HostCommand::MdAdd { .. })
}
