//! The simulated compute node: what `nvmeof-agent` does with a replicated volume, over the
//! real replica service. The storage backend registers a volume of two replicas, the host
//! registers, and then, every 300 ms, asks which replicas to build its RAID1 array from;
//! when the run says so it reports a replica FAULTY (md failed the leg), until the report is
//! acknowledged. Check (e) reads the answers: once a FAULTY report was acknowledged, no
//! answer to a later question offers that replica.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use gwmon_proto::v1::replica_service_client::ReplicaServiceClient;
use gwmon_proto::v1::{self};
use tonic::transport::Channel;
use tonic::Code;

use crate::net;
use crate::nodes::monitor_addr;
use crate::world::{Event, World};

type HostResult = Result<(), Box<dyn std::error::Error>>;

pub const VOLUME: &str = "6a1d3c2e-5b4f-4e8a-9c1d-000000000001";
/// The volume's replicas; the second is the one runs report faulty.
pub const REPLICAS: [&str; 2] = [
    "6a1d3c2e-5b4f-4e8a-9c1d-0000000000a1",
    "6a1d3c2e-5b4f-4e8a-9c1d-0000000000a2",
];
const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6a1d3c2e-5b4f-4e8a-9c1d-0000000000f1";
const PERIOD: Duration = Duration::from_millis(300);

fn replica_spec(i: usize, id: &str) -> v1::ReplicaSpec {
    v1::ReplicaSpec {
        replica_id: id.to_owned(),
        target_nqn: format!("nqn.2016-06.io.spdk:sim-replica{i}"),
        portals: vec![v1::Portal {
            transport: v1::Transport::Tcp as i32,
            address: format!("10.0.0.{}", i + 1),
            port: 4420,
        }],
        namespace_uuid: String::new(),
    }
}

/// Call the leader: follow its hints, try each monitor in turn, and retry what failed for
/// want of a leader or an answer. Every call here is idempotent or a read, so retrying is
/// safe. Errors that retrying cannot change end it at once.
async fn on_leader<T, F, Fut>(monitors: u64, mut call: F) -> Result<T, String>
where
    F: FnMut(ReplicaServiceClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut hint: Option<String> = None;
    let mut last = String::from("no monitor answered");
    for attempt in 0..9u64 {
        let addr = hint
            .take()
            .unwrap_or_else(|| monitor_addr(attempt % monitors + 1));
        match net::channel(&addr, Duration::from_secs(1)).await {
            Err(why) => last = why,
            Ok(channel) => {
                let client = ReplicaServiceClient::new(channel);
                match tokio::time::timeout(Duration::from_secs(3), call(client)).await {
                    Err(_) => last = format!("{addr}: timed out"),
                    Ok(Ok(answer)) => return Ok(answer.into_inner()),
                    Ok(Err(status)) => {
                        last = format!("{addr}: {:?}: {}", status.code(), status.message());
                        if let Some(leader) = gwmon_proto::leader::leader_hint(&status) {
                            hint = Some(leader.to_owned());
                        } else if matches!(
                            status.code(),
                            Code::InvalidArgument | Code::NotFound | Code::AlreadyExists
                        ) {
                            return Err(last);
                        }
                    }
                }
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
    Err(last)
}

async fn set_up(monitors: u64) -> Result<(), String> {
    let volume = v1::VolumeSpec {
        volume_id: VOLUME.into(),
        alias: "simvol".into(),
        capacity_bytes: 1 << 30,
        replica_count: 2,
        grace_period_ms: 0,
    };
    let replicas: Vec<v1::ReplicaSpec> = REPLICAS
        .iter()
        .enumerate()
        .map(|(i, id)| replica_spec(i, id))
        .collect();
    on_leader(monitors, |mut c| {
        let req = v1::CreateVolumeRequest {
            volume: Some(volume.clone()),
            replicas: replicas.clone(),
        };
        async move { c.create_volume(req).await }
    })
    .await?;
    on_leader(monitors, |mut c| async move {
        c.register_host(v1::RegisterHostRequest {
            host_nqn: HOST_NQN.into(),
            host_id: String::new(),
            name: "sim-host".into(),
        })
        .await
    })
    .await?;
    Ok(())
}

async fn report_faulty(monitors: u64, replica: &str) -> Result<(), String> {
    on_leader(monitors, |mut c| {
        let req = v1::ReportReplicaStatesRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: VOLUME.into(),
            reports: vec![v1::ReplicaStateReport {
                replica_id: replica.to_owned(),
                state: v1::ReplicaState::Faulty as i32,
                sync_permille: None,
            }],
        };
        async move { c.report_replica_states(req).await }
    })
    .await
    .map(|_| ())
}

async fn connection(monitors: u64) -> Result<Vec<String>, String> {
    let answer = on_leader(monitors, |mut c| async move {
        c.get_volume_connection(v1::GetVolumeConnectionRequest {
            host_nqn: HOST_NQN.into(),
            volume_id: VOLUME.into(),
        })
        .await
    })
    .await?;
    Ok(answer.replicas.into_iter().map(|r| r.replica_id).collect())
}

/// The compute node's host.
pub fn host(world: World, monitors: u64) -> impl Fn() -> Pin<Box<dyn Future<Output = HostResult>>> {
    move || {
        let world = world.clone();
        Box::pin(async move {
            while let Err(why) = set_up(monitors).await {
                world.record(Event::Fault(format!("volume set-up failed: {why}")));
                tokio::time::sleep(PERIOD).await;
            }
            let mut n = 0;
            let mut to_report: Vec<String> = Vec::new();
            loop {
                to_report.extend(world.take_faulty_requests());
                if let Some(replica) = to_report.first().cloned() {
                    if report_faulty(monitors, &replica).await.is_ok() {
                        world.record(Event::ReplicaReported {
                            replica,
                            state: "FAULTY".into(),
                        });
                        to_report.remove(0);
                    }
                }
                n += 1;
                world.record(Event::ConnectionAsked { n });
                if let Ok(replicas) = connection(monitors).await {
                    world.record(Event::ConnectionRead { n, replicas });
                }
                tokio::time::sleep(PERIOD).await;
            }
        })
    }
}
