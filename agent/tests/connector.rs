//! `connect`, `disconnect` and `extend` on the simulated host with the in-memory cluster.

mod common;

use common::*;
use gwmon_agent::cluster::{ReplicaState, VolumeInfo};
use gwmon_agent::connector::{Connected, Connector};
use gwmon_agent::host::{Host, HostCommand, LegState, Tool};
use gwmon_agent::state::StateDir;
use gwmon_agent::AgentError;

#[tokio::test]
async fn connect_creates_a_raid1_over_fresh_replicas_once() {
    let (host, cluster) = setup(&[1, 2]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    let out = c.connect(&vid()).await.expect("connect");
    assert_eq!(
        out,
        Connected::Created {
            path: "/dev/md/vol1".into()
        }
    );
    let snap = host.snapshot().expect("snapshot");
    let a = snap.array_named("vol1").expect("array");
    assert_eq!(a.legs.len(), 2);
    assert!(a.legs.iter().all(|l| l.state() == LegState::InSync));
    assert!(host.commands().iter().any(|c| matches!(
        c,
        HostCommand::MdCreate { legs, .. } if legs.len() == 2
    )));
    // The connect used this host's NQN.
    assert!(host.commands().iter().any(|c| matches!(
        c,
        HostCommand::NvmeConnect(spec) if spec.host_nqn.as_ref() == Some(&identity().nqn)
    )));
    assert_eq!(
        StateDir::new(dir.path()).list().expect("list").len(),
        1,
        "the volume is recorded for `run`"
    );

    // Again: same path, nothing run.
    let before = host.commands().len();
    let again = c.connect(&vid()).await.expect("connect again");
    assert_eq!(
        again,
        Connected::Already {
            path: "/dev/md/vol1".into()
        }
    );
    assert_eq!(host.commands().len(), before);
}

#[tokio::test]
async fn connect_after_disconnect_assembles_and_does_not_create() {
    let (host, cluster) = setup(&[1, 2]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    c.connect(&vid()).await.expect("connect");
    c.disconnect(&vid()).await.expect("disconnect");
    let snap = host.snapshot().expect("snapshot");
    assert!(snap.arrays.is_empty(), "array stopped");
    assert!(snap.controllers.is_empty(), "controllers disconnected");
    assert!(StateDir::new(dir.path()).list().expect("list").is_empty());

    let out = c.connect(&vid()).await.expect("reconnect");
    assert!(matches!(out, Connected::Assembled { .. }), "{out:?}");
    let creates = host.count(|c| matches!(c, HostCommand::MdCreate { .. }));
    assert_eq!(creates, 1, "the array was created once only");
    assert_eq!(
        host.snapshot()
            .expect("snapshot")
            .array_named("vol1")
            .map(|a| a.legs.len()),
        Some(2)
    );
}

#[tokio::test]
async fn an_existing_controller_is_not_connected_again() {
    let (host, cluster) = setup(&[1, 2]);
    // Replica 1 was connected by hand (or by an earlier, interrupted connect).
    let pre = HostCommand::NvmeConnect(gwmon_agent::host::ConnectSpec {
        transport: gwmon_agent::host::Transport::Tcp,
        address: replica(1, ReplicaState::Available).portals[0]
            .address
            .clone(),
        nqn: nqn(1),
        host_nqn: None,
        host_id: None,
    });
    host.run(pre).await.expect("manual connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    c.connect(&vid()).await.expect("connect");
    assert_eq!(host.count(|c| is_connect(c, 1)), 1, "only the manual one");
    assert_eq!(host.count(|c| is_connect(c, 2)), 1);
}

#[tokio::test]
async fn a_new_array_needs_every_replica() {
    let (host, cluster) = setup(&[1, 2]);
    host.lose_target(&nqn(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    let err = c.connect(&vid()).await.expect_err("one leg only");
    assert!(
        matches!(
            err,
            AgentError::TooFewLegs {
                found: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("replica {}", rid(2))),
        "names the failed replica: {text}"
    );
    assert!(
        text.contains("Connection refused"),
        "with the tool's reason: {text}"
    );
    assert_eq!(host.count(|c| matches!(c, HostCommand::MdCreate { .. })), 0);
    assert!(StateDir::new(dir.path()).list().expect("list").is_empty());
}

#[tokio::test]
async fn an_existing_array_is_assembled_degraded_from_the_safe_legs() {
    let (host, cluster) = setup(&[1, 2]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    c.connect(&vid()).await.expect("connect");
    c.disconnect(&vid()).await.expect("disconnect");
    // Replica 2 is down when the host comes back.
    host.lose_target(&nqn(2));
    let out = c.connect(&vid()).await.expect("assembles degraded");
    assert!(matches!(out, Connected::Assembled { .. }), "{out:?}");
    let snap = host.snapshot().expect("snapshot");
    let a = snap.array_named("vol1").expect("array");
    assert_eq!((a.legs.len(), a.degraded), (1, 1));
}

/// Seed 001's four-replica case: the host can reach only the two replicas that missed
/// writes. The cluster lists no safe replica and says why; the agent builds nothing.
#[tokio::test]
async fn stale_replicas_are_refused_with_the_clusters_reason() {
    let host = gwmon_agent::host::sim::SimHost::new();
    for n in 1..=4 {
        export(&host, n);
    }
    let cluster = gwmon_agent::cluster::memory::MemoryCluster::new();
    let mut info: VolumeInfo = volume(&[1, 2, 3, 4]);
    for r in info.replicas.iter_mut() {
        if r.id == rid(3) || r.id == rid(4) {
            r.state = ReplicaState::Faulty;
        } else {
            r.state = ReplicaState::Missing;
        }
    }
    cluster.add_volume(info);
    host.lose_target(&nqn(1));
    host.lose_target(&nqn(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    let err = c.connect(&vid()).await.expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("no replica safe to use"), "{text}");
    assert!(text.contains(&format!("{} is faulty", rid(3))), "{text}");
    assert!(host.commands().is_empty(), "nothing connected or assembled");
}

#[tokio::test]
async fn disconnect_twice_and_of_an_unknown_volume() {
    let (host, cluster) = setup(&[1, 2]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    c.connect(&vid()).await.expect("connect");
    c.disconnect(&vid()).await.expect("disconnect");
    let before = host.commands().len();
    c.disconnect(&vid()).await.expect("disconnect again");
    assert_eq!(host.commands().len(), before, "nothing left to do");

    cluster.set_unavailable(true);
    let other: gwmon_agent::cluster::VolumeId =
        "0f81d4fa-7dec-11d0-a765-00a0c91e6bf6".parse().expect("id");
    let err = c.disconnect(&other).await.expect_err("unknown");
    assert!(matches!(err, AgentError::NotConnected { .. }), "{err}");
}

#[tokio::test]
async fn disconnect_leaves_a_subsystem_another_array_uses() {
    let (host, cluster) = setup(&[1, 2]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    c.connect(&vid()).await.expect("connect");
    // Another array on this host uses replica 1's namespace (a second volume on the same
    // subsystem, as os-brick allows).
    let dev = host.device_of(&nqn(1)).expect("device");
    host.run(HostCommand::MdStop { name: array() })
        .await
        .expect("stop");
    host.run(HostCommand::MdCreate {
        name: "other".parse().expect("name"),
        legs: vec![dev],
    })
    .await
    .expect("other array");
    c.disconnect(&vid()).await.expect("disconnect");
    let snap = host.snapshot().expect("snapshot");
    assert!(
        snap.controllers.iter().any(|c| c.subsysnqn == nqn(1)),
        "still used"
    );
    assert!(
        !snap.controllers.iter().any(|c| c.subsysnqn == nqn(2)),
        "unused: gone"
    );
}

#[tokio::test]
async fn extend_grows_a_connected_array_only() {
    let (host, cluster) = setup(&[1, 2]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    let err = c.extend(&vid()).await.expect_err("not connected");
    assert!(matches!(err, AgentError::NotConnected { .. }), "{err}");
    c.connect(&vid()).await.expect("connect");
    assert_eq!(c.extend(&vid()).await.expect("extend"), "/dev/md/vol1");
    assert_eq!(
        host.count(|c| matches!(c, HostCommand::MdGrowSize { .. })),
        1
    );
}

#[tokio::test]
async fn a_missing_tool_is_named_with_its_package() {
    let (host, cluster) = setup(&[1, 2]);
    host.remove_tool(Tool::Nvme);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    let err = c.connect(&vid()).await.expect_err("no nvme");
    assert_eq!(err.to_string(), "nvme not found: install nvme-cli");
}

/// Hosts sharing a kernel (containers) all see every controller in sysfs: another host
/// NQN's controller to the same replica is neither used nor disconnected.
#[tokio::test]
async fn another_host_nqns_controllers_are_left_alone() {
    let (host, cluster) = setup(&[1, 2]);
    let other: gwmon_proto::domain::Nqn =
        "nqn.2014-08.org.nvmexpress:uuid:99999999-2222-3333-4444-555555555555"
            .parse()
            .expect("nqn");
    host.run(HostCommand::NvmeConnect(gwmon_agent::host::ConnectSpec {
        transport: gwmon_agent::host::Transport::Tcp,
        address: replica(1, ReplicaState::Available).portals[0]
            .address
            .clone(),
        nqn: nqn(1),
        host_nqn: Some(other.clone()),
        host_id: None,
    }))
    .await
    .expect("the other host connects");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = Connector {
        host: &host,
        cluster: &cluster,
        config: &cfg,
    };
    c.connect(&vid()).await.expect("connect");
    assert_eq!(
        host.count(|c| is_connect(c, 1)),
        2,
        "its own controller too"
    );
    let snap = host.snapshot().expect("snapshot");
    let legs: Vec<String> = snap
        .array_named("vol1")
        .expect("array")
        .legs
        .iter()
        .map(|l| l.device.clone())
        .collect();
    let others: Vec<_> = snap
        .controllers
        .iter()
        .filter(|c| c.hostnqn.as_deref() == Some(other.as_str()))
        .collect();
    assert_eq!(others.len(), 1);
    assert!(
        !legs.contains(&others[0].namespaces[0].device),
        "the other host's namespace is not a leg"
    );

    c.disconnect(&vid()).await.expect("disconnect");
    let snap = host.snapshot().expect("snapshot");
    assert_eq!(snap.controllers.len(), 1, "only the other host's is left");
    assert_eq!(snap.controllers[0].hostnqn.as_deref(), Some(other.as_str()));
    assert!(host
        .commands()
        .iter()
        .any(|c| matches!(c, HostCommand::NvmeDisconnectController { .. })));
}
