//! The replicated monitor: in-process clusters with real gRPC on loopback and real sled
//! (and redb) stores in temp dirs.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gwmon_monitor::codec;
use gwmon_monitor::map::{Availability, Command, MapConfig};
use gwmon_monitor::store::StoreKind;
use gwmon_proto::domain::{
    Epoch, GatewayId, GatewayReport, GroupKey, Listener, Namespace, ReportedAvailability, Subsystem,
};
use gwmon_proto::leader::leader_hint;
use gwmon_proto::v1;
use gwmon_tests::{eventually, Cluster, DEADLINE};
use tonic::Code;

fn key(group: &str) -> GroupKey {
    GroupKey::new("rbd".parse().expect("pool"), group.parse().expect("group"))
}

fn gw(i: usize) -> GatewayId {
    format!("gw{i}").parse().expect("gateway id")
}

fn create(i: usize) -> Command {
    Command::CreateGateway {
        key: key(&format!("g{}", i % 16)),
        gateway: gw(i),
    }
}

fn encoded(c: &Cluster, id: u64) -> Vec<u8> {
    codec::encode(&c.map(id)).expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_survive_the_loss_of_the_leader() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    let mut last = 0;
    for i in 0..20 {
        last = c.write(create(i)).await.log_index;
    }
    c.applied_everywhere(last).await;
    let bytes = encoded(&c, 1);
    assert_eq!(encoded(&c, 2), bytes);
    assert_eq!(encoded(&c, 3), bytes);

    let old = c.leader().await;
    c.stop(old).await;
    let new = c.leader().await;
    assert_ne!(new, old);
    for i in 20..30 {
        last = c.write(create(i)).await.log_index;
    }
    c.restart(old).await;
    c.applied_everywhere(last).await;
    for id in 1..=3 {
        let map = c.map(id);
        let count: usize = map.groups().values().map(|g| g.gateways.len()).sum();
        assert_eq!(count, 30, "monitor {id} has every committed gateway");
    }
    assert_eq!(encoded(&c, old), encoded(&c, new));
    c.stop_all().await;
}

/// `n` gateways created, one given a location; waits until every running monitor applied
/// it all and returns the last index.
async fn fill(c: &Cluster, n: usize) -> u64 {
    for i in 0..n {
        c.write(create(i)).await;
    }
    let last = c
        .write(Command::SetLocation {
            key: key("g1"),
            gateway: gw(1),
            location: "east".parse().expect("location"),
        })
        .await
        .log_index;
    c.applied_everywhere(last).await;
    last
}

/// Every monitor runs this release: the leader raises the feature level by itself, every
/// replica applies it, and a restart keeps it (the map is then written as version 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_raises_the_feature_level_once_every_monitor_supports_it() {
    use gwmon_monitor::map::features::SUPPORTED;
    let mut c = Cluster::start(3, 0, |_| {}).await;
    c.leader().await;
    eventually("every monitor at this release's feature level", || {
        std::future::ready((1..=3).all(|id| c.map(id).features() == SUPPORTED))
    })
    .await;
    assert_eq!(encoded(&c, 1).first(), Some(&5), "written as version 5");
    c.stop(2).await;
    c.restart(2).await;
    eventually("monitor 2 restarted at the level", || {
        std::future::ready(c.map(2).features() == SUPPORTED)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restart_yields_the_identical_map() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    fill(&c, 25).await;
    restart_all_and_compare(&mut c).await;
    c.stop_all().await;
}

/// Stop every monitor and start them again: each must come back with the map they had
/// before, byte for byte. The leader raises the feature level once every monitor answers,
/// a change of the map too, so the map to compare with is taken after that, with
/// everything the leader applied by then applied everywhere.
async fn restart_all_and_compare(c: &mut Cluster) {
    eventually("every monitor at this release's feature level", || {
        let level = gwmon_monitor::map::features::SUPPORTED;
        std::future::ready((1..=3).all(|id| c.map(id).features() == level))
    })
    .await;
    let leader = c.leader().await;
    let applied = c.monitor(leader).raft().metrics().borrow().last_applied;
    let last = applied.map_or(0, |l| l.index);
    c.applied_everywhere(last).await;
    let before = encoded(c, leader);
    c.stop_all().await;
    for id in 1..=3 {
        c.restart(id).await;
    }
    c.leader().await;
    c.applied_everywhere(last).await;
    for id in 1..=3 {
        assert_eq!(encoded(c, id), before, "monitor {id} after the restart");
    }
}

/// Stop `lagging`, write until the leader has purged its log past it (snapshots every 20
/// entries), start it again and wait until it has applied everything, through a snapshot.
/// Returns the last index written.
async fn catch_up_by_snapshot(c: &mut Cluster, leader: u64, lagging: u64) -> u64 {
    let behind = c
        .monitor(lagging)
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    c.stop(lagging).await;
    let mut last = 0;
    for i in 0..120 {
        last = c.write(create(i)).await.log_index;
    }
    // Purging follows the snapshot in the background.
    eventually("the leader purged its log past the stopped monitor", || {
        let purged = c.monitor(leader).raft().metrics().borrow().purged;
        std::future::ready(purged.map_or(0, |l| l.index) > behind)
    })
    .await;
    c.restart(lagging).await;
    c.applied_everywhere(last).await;
    let snapshot = c.monitor(lagging).raft().metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|s| s.index > behind),
        "monitor {lagging} caught up through a snapshot: {snapshot:?}"
    );
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_that_missed_many_entries_catches_up_by_snapshot() {
    let mut c = Cluster::start(3, 0, |cfg| {
        cfg.snapshot_logs = 20;
        cfg.logs_kept = 5;
    })
    .await;
    let leader = c.leader().await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    catch_up_by_snapshot(&mut c, leader, lagging).await;
    assert_eq!(encoded(&c, lagging), encoded(&c, leader));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_on_redb_and_on_sled_replicate_snapshot_and_restart_as_one_cluster() {
    // Monitor 1 on sled, 2 and 3 on redb: the cluster one monitor at a time into a move
    // from one backend to the other.
    let mut c = Cluster::start(3, 0, |cfg| {
        cfg.snapshot_logs = 20;
        cfg.logs_kept = 5;
        cfg.store = Some(if cfg.node_id == 1 {
            StoreKind::Sled
        } else {
            StoreKind::Redb
        });
    })
    .await;
    for id in 1..=3 {
        let dir = c.dir.path().join(format!("m{id}")).join("store");
        let want = if id == 1 {
            StoreKind::Sled
        } else {
            StoreKind::Redb
        };
        assert_eq!(StoreKind::found_in(&dir), Some(want), "monitor {id}");
    }
    let leader = c.leader().await;
    let lagging = (2..=3).find(|id| *id != leader).expect("a redb follower");
    catch_up_by_snapshot(&mut c, leader, lagging).await;
    restart_all_and_compare(&mut c).await;
    c.stop_all().await;
}

async fn voters(c: &Cluster, id: u64) -> BTreeSet<u64> {
    let m = c.monitor(id).raft().metrics().borrow().clone();
    m.membership_config.membership().voter_ids().collect()
}

/// Create gateways through the admin API, following the leader header like a client would.
async fn admin_writer(addrs: Vec<String>, count: usize) -> usize {
    let mut target = addrs[0].clone();
    let mut done = 0;
    let end = tokio::time::Instant::now() + DEADLINE * 2;
    while done < count {
        assert!(tokio::time::Instant::now() < end, "writer stuck at {done}");
        let Ok(mut client) =
            v1::admin_service_client::AdminServiceClient::connect(format!("http://{target}")).await
        else {
            target = addrs[done % addrs.len()].clone();
            continue;
        };
        let req = v1::CreateGatewayRequest {
            key: Some(key(&format!("w{}", done % 8)).into()),
            gateway_id: format!("writer{done}"),
            location: String::new(),
        };
        match client.create_gateway(req).await {
            Ok(_) => done += 1,
            Err(s) if s.code() == Code::FailedPrecondition => {
                if let Some(l) = leader_hint(&s) {
                    target = l.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("write {done}: {s}"),
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_goes_from_three_to_five_to_three_while_writes_continue() {
    let c = Cluster::start(3, 2, |_| {}).await;
    let leader = c.leader().await;
    let addrs: Vec<String> = (1..=3).map(|id| c.addrs[&id].clone()).collect();
    let writer = tokio::spawn(admin_writer(addrs, 60));

    let admin = c.admin(leader).await;
    // A membership change waits while another is in progress (the initial one may still be
    // committing): the monitor answers UNAVAILABLE and a client tries again.
    for id in [4, 5] {
        let addr = c.addrs[&id].clone();
        let peer_addr = c.peer_addrs[&id].clone();
        eventually(&format!("monitor {id} added"), || {
            let mut admin = admin.clone();
            let (addr, peer_addr) = (addr.clone(), peer_addr.clone());
            async move {
                let req = v1::AddMonitorRequest {
                    id,
                    addr,
                    peer_addr,
                };
                match admin.add_monitor(req).await {
                    Ok(_) => true,
                    Err(s) if s.code() == Code::Unavailable => false,
                    Err(s) => panic!("add monitor {id}: {s}"),
                }
            }
        })
        .await;
    }
    assert_eq!(voters(&c, leader).await, (1..=5).collect());
    for id in [4, 5] {
        eventually(&format!("monitor {id} removed"), || {
            let mut admin = admin.clone();
            async move {
                match admin.remove_monitor(v1::RemoveMonitorRequest { id }).await {
                    Ok(_) => true,
                    Err(s) if s.code() == Code::Unavailable => false,
                    Err(s) => panic!("remove monitor {id}: {s}"),
                }
            }
        })
        .await;
    }
    let mut admin = admin;
    assert_eq!(voters(&c, leader).await, (1..=3).collect());
    let err = admin
        .remove_monitor(v1::RemoveMonitorRequest { id: 9 })
        .await
        .expect_err("unknown monitor");
    assert_eq!(err.code(), Code::NotFound);

    let written = tokio::time::timeout(DEADLINE * 3, writer)
        .await
        .expect("writer finishes")
        .expect("writer task");
    assert_eq!(written, 60);
    let last = c
        .monitor(leader)
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |l| l.index);
    for id in 1..=3 {
        c.monitor(id)
            .raft()
            .wait(Some(DEADLINE))
            .applied_index_at_least(Some(last), "writes applied")
            .await
            .expect("applied");
        let map = c.map(id);
        let written: usize = (0..8)
            .map(|w| {
                map.group(&key(&format!("w{w}")))
                    .map_or(0, |g| g.gateways.len())
            })
            .sum();
        assert_eq!(written, 60, "monitor {id} has every write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_redirect_writes_and_linearizable_reads_to_the_leader() {
    let c = Cluster::start(3, 0, |_| {}).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("follower");
    let mut admin = c.admin(follower).await;
    let status = admin
        .create_gateway(v1::CreateGatewayRequest {
            key: Some(key("g").into()),
            gateway_id: "gw1".into(),
            location: String::new(),
        })
        .await
        .expect_err("a follower does not write");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(leader_hint(&status), Some(c.addrs[&leader].as_str()));

    c.write(create(0)).await;
    let status = admin
        .show_all(v1::ShowAllRequest { stale: false })
        .await
        .expect_err("linearizable reads need the leader");
    assert_eq!(leader_hint(&status), Some(c.addrs[&leader].as_str()));
    eventually("the follower applied the write", || async {
        admin
            .clone()
            .show_all(v1::ShowAllRequest { stale: true })
            .await
            .is_ok_and(|r| r.into_inner().groups.len() == 1)
    })
    .await;

    let mut leader_admin = c.admin(leader).await;
    let shown = leader_admin
        .show_group(v1::ShowGroupRequest {
            key: Some(key("g0").into()),
            stale: false,
        })
        .await
        .expect("show")
        .into_inner()
        .group
        .expect("group");
    assert_eq!(shown.gateways.len(), 1);
    assert_eq!(shown.gateways[0].gateway_id, "gw0");
    let bad = leader_admin
        .create_gateway(v1::CreateGatewayRequest {
            key: Some(key("g").into()),
            gateway_id: "bad id".into(),
            location: String::new(),
        })
        .await
        .expect_err("invalid id");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("gateway_id"), "{}", bad.message());
}

fn report(seq: u64, availability: ReportedAvailability) -> GatewayReport {
    GatewayReport {
        seq,
        availability,
        subsystems: vec![Subsystem {
            nqn: "nqn.2016-06.io.spdk:cnode1".parse().expect("nqn"),
            listeners: vec![Listener {
                address: "127.0.0.1".parse().expect("ip"),
                port: 4420,
            }],
            namespaces: vec![Namespace {
                nsid: 1,
                ana_group: gwmon_proto::domain::AnaGroupId::new(1).expect("ana"),
                nonce: None,
            }],
        }],
        applied_epoch: Epoch::ZERO,
        fence_epoch: Epoch::ZERO,
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_leader_change_no_gateway_times_out_before_a_full_grace() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    let grace = 1_500;
    c.write(Command::SetConfig(MapConfig {
        beacon_grace_ms: grace,
        ..MapConfig::default()
    }))
    .await;
    let k = key("g");
    c.write(Command::CreateGateway {
        key: k.clone(),
        gateway: gw(1),
    })
    .await;
    let leader = c.leader().await;
    let liveness = c.monitor(leader).liveness.clone();
    liveness
        .beacon(
            &k,
            &gw(1),
            1,
            report(0, ReportedAvailability::Starting),
            None,
        )
        .await
        .expect("starting beacon");
    let ack = liveness
        .beacon(
            &k,
            &gw(1),
            1,
            report(1, ReportedAvailability::Available),
            None,
        )
        .await
        .expect("available beacon");
    assert!(ack.committed);
    let unchanged = liveness
        .beacon(
            &k,
            &gw(1),
            1,
            report(2, ReportedAvailability::Available),
            None,
        )
        .await
        .expect("unchanged beacon");
    assert!(!unchanged.committed, "an unchanged beacon costs no write");
    let late = liveness
        .beacon(
            &k,
            &gw(1),
            1,
            report(1, ReportedAvailability::Available),
            None,
        )
        .await
        .expect_err("a late beacon is refused");
    assert!(late.to_string().contains("stale beacon"), "{late}");

    // The last beacon reached the old leader just now; then the old leader dies.
    let killed_at = wall_ms();
    c.stop(leader).await;
    let new = c.leader().await;
    assert_ne!(new, leader);
    let down_at = {
        let mut down = None;
        eventually("the silent gateway is timed out by the new leader", || {
            let gw1 = c
                .map(new)
                .group(&k)
                .and_then(|g| g.gateways.get(&gw(1)).cloned());
            down = gw1
                .filter(|g| g.availability == Availability::Unavailable)
                .and_then(|g| g.last_down_at);
            std::future::ready(down.is_some())
        })
        .await;
        down.map_or(0, |t| t.as_millis())
    };
    assert!(
        down_at.saturating_sub(killed_at) >= grace,
        "timed out {} ms after the old leader died, less than the {grace} ms grace",
        down_at.saturating_sub(killed_at)
    );
    // A follower refuses beacons with the leader's address.
    let follower = (1..=3)
        .find(|id| *id != new && *id != leader)
        .expect("follower");
    let err = c
        .monitor(follower)
        .liveness
        .beacon(
            &k,
            &gw(1),
            1,
            report(3, ReportedAvailability::Available),
            None,
        )
        .await
        .expect_err("followers do not take beacons");
    assert!(err.to_string().contains("not the leader"), "{err}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_that_cannot_catch_up_is_not_made_a_voter() {
    let c = Cluster::start(1, 0, |_| {}).await;
    let leader = c.leader().await;
    // Nothing listens there: the learner never catches up.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("addr").to_string();
    drop(dead);
    let mut admin = c.admin(leader).await;
    let err = admin
        .add_monitor(v1::AddMonitorRequest {
            id: 5,
            peer_addr: addr.clone(),
            addr,
        })
        .await
        .expect_err("an unreachable monitor is refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message().contains("did not catch up"),
        "{}",
        err.message()
    );
    assert_eq!(voters(&c, leader).await, [1].into());
    assert_eq!(
        members(&c, leader).await,
        [1].into(),
        "the learner is gone too"
    );
    // The cluster still commits.
    c.write(create(0)).await;
}

/// Two of three monitors lost for good, and the quorum with them: `gwmon recover` rewrites
/// the survivor's store into a cluster of one that keeps every committed change, the
/// survivor serves the same map alone, and grows back with a monitor started with --join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_recovers_the_cluster_alone_and_grows_it_back() {
    let mut c = Cluster::start(3, 1, |_| {}).await;
    // Monitor 4 comes later, on a new machine.
    c.stop(4).await;
    let last = fill(&c, 20).await;
    let before = encoded(&c, 2);
    for id in 1..=3 {
        c.stop(id).await;
    }

    let data = c.dir.path().join("m2");
    let node = gwmon_monitor::raft::MonitorNode::new(c.addrs[&2].clone(), c.peer_addrs[&2].clone());
    let missing = gwmon_monitor::recover::force_new_cluster(
        &c.dir.path().join("nowhere"),
        2,
        node.clone(),
        None,
        8,
    )
    .await
    .expect_err("no store there");
    assert!(missing.to_string().contains("no store"), "{missing}");
    let done = gwmon_monitor::recover::force_new_cluster(&data, 2, node, None, 8)
        .await
        .expect("recovers");
    assert_eq!(done.removed, [1, 3].into(), "{done}");
    assert!(
        done.committed.is_some_and(|l| l.index >= last),
        "every committed change kept: {done}"
    );
    assert!(done.to_string().contains("only member"), "{done}");

    c.restart(2).await;
    assert_eq!(c.leader().await, 2, "alone, it elects itself");
    assert_eq!(voters(&c, 2).await, [2].into());
    assert_eq!(members(&c, 2).await, [2].into());
    assert_eq!(encoded(&c, 2), before, "the same map");
    c.write(create(100)).await;

    // Grown back: monitor 4, started with --join, waits to be added.
    c.restart(4).await;
    let mut admin = c.admin(2).await;
    admin
        .add_monitor(v1::AddMonitorRequest {
            id: 4,
            addr: c.addrs[&4].clone(),
            peer_addr: c.peer_addrs[&4].clone(),
        })
        .await
        .expect("a new monitor joins the recovered cluster");
    assert_eq!(voters(&c, 2).await, [2, 4].into());
    let index = c.write(create(101)).await.log_index;
    c.applied_everywhere(index).await;
    assert_eq!(
        encoded(&c, 4),
        encoded(&c, 2),
        "the new monitor has the map"
    );
    c.stop_all().await;
}

/// A backup (`ExportSnapshot`, what `nvme-gw cluster backup` saves) restored into an empty
/// data directory (`gwmon restore`) starts a one-monitor cluster with the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_the_same_state_in_a_new_cluster() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    let last = fill(&c, 12).await;
    let before = encoded(&c, 1);
    let mut admin = c.admin(c.leader().await).await;
    let backup = admin
        .export_snapshot(v1::ExportSnapshotRequest {})
        .await
        .expect("export")
        .into_inner();
    assert!(backup.index >= last, "everything committed is in it");
    c.stop_all().await;

    // A monitor that waits to be added: its store stays empty.
    let mut r = Cluster::start(1, 0, |m| {
        m.bootstrap = gwmon_monitor::config::Bootstrap::Join;
    })
    .await;
    r.stop(1).await;
    let data = r.dir.path().join("m1");
    let node = gwmon_monitor::raft::MonitorNode::new(r.addrs[&1].clone(), r.peer_addrs[&1].clone());
    let bad = gwmon_monitor::recover::restore(&data, 1, node.clone(), None, 8, b"not a backup")
        .await
        .expect_err("garbage");
    assert!(bad.to_string().contains("not a gwmon backup"), "{bad}");
    let done = gwmon_monitor::recover::restore(&data, 1, node.clone(), None, 8, &backup.snapshot)
        .await
        .expect("restores");
    assert_eq!(done.map_epoch, backup.map_epoch, "{done}");
    r.restart(1).await;
    assert_eq!(r.leader().await, 1);
    assert_eq!(members(&r, 1).await, [1].into());
    assert_eq!(encoded(&r, 1), before, "the same map");
    r.write(create(50)).await;
    r.stop(1).await;
    let again = gwmon_monitor::recover::restore(&data, 1, node, None, 8, &backup.snapshot)
        .await
        .expect_err("not over a monitor's store");
    assert!(again.to_string().contains("already holds"), "{again}");
}

async fn members(c: &Cluster, id: u64) -> BTreeSet<u64> {
    let m = c.monitor(id).raft().metrics().borrow().clone();
    m.membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect()
}

fn unreachable_addr() -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("addr").to_string();
    drop(dead);
    addr
}

/// Found trying membership as an operator: `nvme-gw cluster add` of a monitor that cannot
/// be reached, given up by the caller (its timeout, ^C), left the learner in the membership
/// for good, since the rollback ran in the request's handler and went with it. Now the
/// change runs on its own and the learner is taken out whether or not anyone waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_the_caller_gives_up_on_is_still_rolled_back() {
    let c = Cluster::start(1, 0, |_| {}).await;
    let leader = c.leader().await;
    let mut admin = c.admin(leader).await;
    let addr = unreachable_addr();
    let call = admin.add_monitor(v1::AddMonitorRequest {
        id: 6,
        peer_addr: addr.clone(),
        addr,
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .is_err(),
        "the learner cannot have caught up within 500 ms"
    );
    eventually("the learner is in the membership", || async {
        members(&c, leader).await.contains(&6)
    })
    .await;
    eventually("the abandoned learner taken out", || async {
        members(&c, leader).await == [1].into()
    })
    .await;
    c.write(create(0)).await;
}

/// Found trying membership as an operator: `cluster remove` of a learner answered
/// "removed" and the learner stayed (it asked for the voters to lose a node that was none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_learner_takes_it_out() {
    let c = Cluster::start(1, 0, |_| {}).await;
    let leader = c.leader().await;
    let addr = unreachable_addr();
    let mut adder = c.admin(leader).await;
    let adding = tokio::spawn(async move {
        adder
            .add_monitor(v1::AddMonitorRequest {
                id: 7,
                peer_addr: addr.clone(),
                addr,
            })
            .await
    });
    eventually("the learner is in the membership", || async {
        members(&c, leader).await.contains(&7)
    })
    .await;
    let mut admin = c.admin(leader).await;
    admin
        .remove_monitor(v1::RemoveMonitorRequest { id: 7 })
        .await
        .expect("a learner can be removed");
    // Well before the add gives up on it (10 s): the removal itself took it out.
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    while members(&c, leader).await.contains(&7) {
        assert!(
            tokio::time::Instant::now() < end,
            "the learner is still a member after its removal: {:?}",
            members(&c, leader).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = admin
        .remove_monitor(v1::RemoveMonitorRequest { id: 7 })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let added = adding.await.expect("add task");
    assert!(
        added.is_err(),
        "the add of a removed learner fails: {added:?}"
    );
    assert_eq!(members(&c, leader).await, [1].into());
    c.write(create(0)).await;
}

/// What a client may send is bounded before anything is committed: a beacon whose
/// subsystems carry more namespaces in all than a report may is refused with
/// INVALID_ARGUMENT, and a request over the client message limit with OUT_OF_RANGE before
/// it is read. Neither changes the map. (Both were accepted up to Raft's 64 MiB limit, and
/// a report that large could be committed and then not shipped to the followers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_reports_and_requests_are_refused_before_anything_is_committed() {
    use v1::gateway_message::Body;
    use v1::gateway_service_client::GatewayServiceClient;

    let c = Cluster::start(1, 0, |_| {}).await;
    let leader = c.leader().await;
    c.write(create(0)).await;
    let untouched = |c: &Cluster| {
        let map = c.map(leader);
        let gw = &map.group(&key("g0")).expect("group").gateways[&gw(0)];
        gw.reported.is_none() && gw.subsystems.is_empty() && gw.last_seq == 0
    };
    assert!(untouched(&c));

    let hello = v1::GatewayMessage {
        body: Some(Body::Hello(v1::Hello {
            gateway_id: "gw0".into(),
            key: Some(key("g0").into()),
            software_version: "test".into(),
            incarnation: 7,
        })),
    };
    // Three subsystems of 4,096 namespaces: each list within its cap, 12,288 in all.
    let subsystem = |i: u32| v1::Subsystem {
        nqn: format!("nqn.2016-06.io.spdk:c{i}"),
        listeners: vec![v1::Listener {
            address: "127.0.0.1".into(),
            port: 4420,
        }],
        namespaces: (1..=4096)
            .map(|nsid| v1::Namespace {
                nsid,
                ana_group: 1,
                nonce: String::new(),
            })
            .collect(),
    };
    let beacon = v1::GatewayMessage {
        body: Some(Body::Beacon(v1::Beacon {
            seq: 0,
            availability: v1::Availability::Starting.into(),
            subsystems: (0..3).map(subsystem).collect(),
            applied_epoch: 0,
            fence_epoch: 0,
            incarnation: 7,
            subsystems_unchanged: false,
        })),
    };
    let mut gateway = GatewayServiceClient::connect(format!("http://{}", c.addrs[&leader]))
        .await
        .expect("gateway client connects");
    let mut answers = gateway
        .session(tokio_stream::iter(vec![hello, beacon]))
        .await
        .expect("the hello is accepted")
        .into_inner();
    // The session opens with the gateway's slice; the beacon's refusal ends it.
    let refused = loop {
        match answers.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the session ended without refusing the beacon"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.message(),
        "invalid request: beacon.subsystems carry 12288 namespaces in all, more than the 8192 allowed"
    );
    assert!(untouched(&c));

    let mut admin = c.admin(leader).await;
    let huge = admin
        .create_gateway(v1::CreateGatewayRequest {
            key: Some(key("g0").into()),
            gateway_id: "gw1".into(),
            location: "x".repeat(gwmon_proto::MAX_CLIENT_MESSAGE_BYTES),
        })
        .await
        .expect_err("a request over the limit");
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
    let map = c.map(leader);
    let group = map.group(&key("g0")).expect("group");
    assert!(!group.gateways.contains_key(&gw(1)));
    // The monitor still serves requests of a sane size.
    admin
        .create_gateway(v1::CreateGatewayRequest {
            key: Some(key("g0").into()),
            gateway_id: "gw1".into(),
            location: String::new(),
        })
        .await
        .expect("a normal request");
}

/// A beacon may leave out a subsystem list that has not changed since the session's last
/// beacon that carried one, once an ack said the monitor takes that: the gateway keeps its
/// subsystems in the map. A session that leaves the list out before ever sending one is
/// ended with INVALID_ARGUMENT and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_beacon_may_leave_out_an_unchanged_subsystem_list_within_its_session() {
    use v1::gateway_message::Body;
    use v1::gateway_service_client::GatewayServiceClient;

    let c = Cluster::start(1, 0, |_| {}).await;
    let leader = c.leader().await;
    c.write(create(0)).await;
    let hello = v1::GatewayMessage {
        body: Some(Body::Hello(v1::Hello {
            gateway_id: "gw0".into(),
            key: Some(key("g0").into()),
            software_version: "test".into(),
            incarnation: 7,
        })),
    };
    let listed = vec![v1::Subsystem {
        nqn: "nqn.2016-06.io.spdk:c1".into(),
        listeners: vec![v1::Listener {
            address: "127.0.0.1".into(),
            port: 4420,
        }],
        namespaces: (1..=2)
            .map(|nsid| v1::Namespace {
                nsid,
                ana_group: 1,
                nonce: String::new(),
            })
            .collect(),
    }];
    let beacon = |seq: u64, unchanged: bool| v1::GatewayMessage {
        body: Some(Body::Beacon(v1::Beacon {
            seq,
            availability: if seq == 0 {
                v1::Availability::Starting
            } else {
                v1::Availability::Available
            }
            .into(),
            subsystems: if unchanged { vec![] } else { listed.clone() },
            applied_epoch: 0,
            fence_epoch: 0,
            incarnation: 7,
            subsystems_unchanged: unchanged,
        })),
    };
    // What the map holds of the gateway: what it last reported, and its namespaces.
    let in_map = |c: &Cluster| {
        let map = c.map(leader);
        let gw = &map.group(&key("g0")).expect("group").gateways[&gw(0)];
        (
            gw.reported,
            gw.subsystems
                .iter()
                .map(|s| s.namespaces.len())
                .sum::<usize>(),
        )
    };
    let mut gateway = GatewayServiceClient::connect(format!("http://{}", c.addrs[&leader]))
        .await
        .expect("gateway client connects");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(hello.clone()).await.expect("send");
    let mut answers = gateway
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("the hello is accepted")
        .into_inner();
    async fn ack_of(answers: &mut tonic::Streaming<v1::MonitorMessage>, seq: u64) -> v1::Ack {
        loop {
            match answers.message().await {
                Ok(Some(v1::MonitorMessage {
                    body: Some(v1::monitor_message::Body::Ack(a)),
                })) if a.seq == seq => return a,
                Ok(Some(_)) => {}
                other => panic!("the session ended before the ack of {seq}: {other:?}"),
            }
        }
    }
    tx.send(beacon(0, false)).await.expect("send");
    let ack = ack_of(&mut answers, 0).await;
    assert!(ack.unchanged_subsystems_accepted, "{ack:?}");
    assert_eq!(in_map(&c), (Some(ReportedAvailability::Starting), 2));
    // The first beacon without the list changes the gateway's availability, so its report
    // is committed: with the session's list, not an empty one.
    for seq in 1..=3 {
        tx.send(beacon(seq, true)).await.expect("send");
        ack_of(&mut answers, seq).await;
        let c = &c;
        eventually("the available report committed", || async move {
            in_map(c).0 == Some(ReportedAvailability::Available)
        })
        .await;
        assert_eq!(in_map(c).1, 2, "the gateway keeps its namespaces");
    }
    drop(tx);
    drop(answers);

    // A new session must list them before it may leave them out.
    let mut answers = gateway
        .session(tokio_stream::iter(vec![hello, beacon(4, true)]))
        .await
        .expect("the hello is accepted")
        .into_inner();
    let refused = loop {
        match answers.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the session ended without refusing the beacon"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.message(),
        "invalid request: beacon.subsystems_unchanged before any beacon of this session \
         listed the subsystems"
    );
    assert_eq!(in_map(&c), (Some(ReportedAvailability::Available), 2));
}

/// A session that beacons far faster than any gateway is configured to is closed with
/// RESOURCE_EXHAUSTED, after its burst allowance and before it can make the leader do
/// unbounded work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_beaconing_past_the_rate_limit_is_closed() {
    use v1::gateway_message::Body;
    use v1::gateway_service_client::GatewayServiceClient;

    let c = Cluster::start(1, 0, |_| {}).await;
    let leader = c.leader().await;
    c.write(create(0)).await;
    let mut messages = vec![v1::GatewayMessage {
        body: Some(Body::Hello(v1::Hello {
            gateway_id: "gw0".into(),
            key: Some(key("g0").into()),
            software_version: "test".into(),
            incarnation: 7,
        })),
    }];
    let flood = 1_000u64;
    messages.extend((0..flood).map(|seq| {
        v1::GatewayMessage {
            body: Some(Body::Beacon(v1::Beacon {
                seq,
                availability: if seq == 0 {
                    v1::Availability::Starting
                } else {
                    v1::Availability::Available
                }
                .into(),
                subsystems: Vec::new(),
                applied_epoch: 0,
                fence_epoch: 0,
                incarnation: 7,
                subsystems_unchanged: false,
            })),
        }
    }));
    let mut gateway = GatewayServiceClient::connect(format!("http://{}", c.addrs[&leader]))
        .await
        .expect("gateway client connects");
    let mut answers = gateway
        .session(tokio_stream::iter(messages))
        .await
        .expect("the hello is accepted")
        .into_inner();
    let mut acks = 0u64;
    let refused = loop {
        match answers.message().await {
            Ok(Some(v1::MonitorMessage {
                body: Some(v1::monitor_message::Body::Ack(_)),
            })) => acks += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the session ended without a refusal after {acks} acks"),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("beacons a second"),
        "{}",
        refused.message()
    );
    // The burst was served, the flood was not.
    assert!((100..flood).contains(&acks), "{acks} acks");
}

/// Event streams are bounded per monitor: once the limit is open, another is refused with
/// RESOURCE_EXHAUSTED, and closing one makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded_per_monitor() {
    use gwmon_monitor::admin::MAX_WATCHERS;

    let c = Cluster::start(1, 0, |_| {}).await;
    let leader = c.leader().await;
    // Several connections, so HTTP/2's own stream limit per connection is not what refuses.
    let per_connection = 32;
    let mut open = Vec::new();
    let mut admins = Vec::new();
    for _ in 0..MAX_WATCHERS.div_ceil(per_connection) {
        admins.push(c.admin(leader).await);
    }
    for i in 0..MAX_WATCHERS {
        let stream = admins[i / per_connection]
            .watch_events(v1::WatchEventsRequest::default())
            .await
            .unwrap_or_else(|e| panic!("stream {i} is refused: {e}"))
            .into_inner();
        open.push(stream);
    }
    let mut extra = c.admin(leader).await;
    let refused = extra
        .watch_events(v1::WatchEventsRequest::default())
        .await
        .expect_err("one stream too many");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("event streams are open"),
        "{}",
        refused.message()
    );
    drop(open.pop());
    eventually("a closed stream's place is free again", || {
        let mut extra = extra.clone();
        async move {
            extra
                .watch_events(v1::WatchEventsRequest::default())
                .await
                .is_ok()
        }
    })
    .await;
}

/// A client served at once: connected, with one answered call behind it.
async fn served_client(
    addr: &str,
) -> Result<v1::admin_service_client::AdminServiceClient<tonic::transport::Channel>, String> {
    let mut client =
        v1::admin_service_client::AdminServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| e.to_string())?;
    client
        .health(v1::HealthRequest {})
        .await
        .map_err(|e| e.to_string())?;
    Ok(client)
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_and_a_freed_slot_is_served() {
    let c = Cluster::start(1, 0, |config| config.max_connections = 2).await;
    c.leader().await;
    let addr = c.addrs[&1].clone();
    let limit = c.monitor(1).connections.clone().expect("a TCP listener");
    let first = served_client(&addr).await.expect("first connection");
    let second = served_client(&addr).await.expect("second connection");
    assert_eq!(limit.open(), 2);
    // The third is closed as it arrives, before any HTTP/2 is spoken; the two served keep
    // working.
    assert!(
        served_client(&addr).await.is_err(),
        "a third connection was served"
    );
    assert!(limit.refused() >= 1);
    let mut again = second.clone();
    again
        .health(v1::HealthRequest {})
        .await
        .expect("a served connection keeps working");
    // Closing one frees its slot.
    drop(first);
    let end = tokio::time::Instant::now() + DEADLINE;
    let _third = loop {
        match served_client(&addr).await {
            Ok(client) => break client,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < end,
                    "no connection served after another closed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(limit.open(), 2);
    drop(second);
}

/// `n` writes from as many proposers at once through the leader: each gets its own
/// outcome (every `SetLocation` of an unknown gateway refused, the others applied).
/// Returns how many log entries they took.
async fn concurrent_writes(c: &Cluster, n: usize) -> u64 {
    // The group the refused writes name exists, so each is refused for its gateway.
    c.write(create(1)).await;
    let leader = c.leader().await;
    let core = c.monitor(leader).core.clone();
    let before = c.monitor(leader).raft().metrics().borrow().last_log_index;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..n {
        let core = core.clone();
        let cmd = if i % 10 == 5 {
            Command::SetLocation {
                key: key("g1"),
                gateway: format!("nobody{i}").parse().expect("id"),
                location: "east".parse().expect("location"),
            }
        } else {
            create(1_000 + i)
        };
        writes.spawn(async move { (i, core.propose(cmd).await) });
    }
    let mut last = 0;
    while let Some(joined) = writes.join_next().await {
        let (i, outcome) = joined.expect("a write task");
        match outcome {
            Ok(done) if i % 10 != 5 => {
                assert!(done.applied.changed, "write {i} created its gateway");
                last = last.max(done.log_index);
            }
            Err(gwmon_monitor::error::MonitorError::Refused(
                gwmon_monitor::map::MapError::UnknownGateway { .. },
            )) if i % 10 == 5 => {}
            other => panic!("write {i}: unexpected outcome {other:?}"),
        }
    }
    c.applied_everywhere(last).await;
    for id in 1..=3 {
        let count: usize = c.map(id).groups().values().map(|g| g.gateways.len()).sum();
        assert_eq!(
            count,
            1 + n - n / 10,
            "monitor {id} has every created gateway"
        );
    }
    // Counted from the log, not from the answers: a refused write has no index to give,
    // and it may have been the last one written.
    let after = c.monitor(leader).raft().metrics().borrow().last_log_index;
    after.unwrap_or(0) - before.unwrap_or(0)
}

/// Commands proposed together are committed together (group commit): a leader that wrote
/// one entry per command flushed its disk once per command and so committed at most one
/// command per flush. At the batched-writes feature level 200 concurrent commands take far
/// fewer entries, each proposer still gets its own outcome, and every replica applies the
/// same map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_committed_together_each_with_its_own_outcome() {
    use gwmon_monitor::map::features::{BATCHED_WRITES, SUPPORTED};
    let mut c = Cluster::start(3, 0, |_| {}).await;
    eventually("the cluster at this release's feature level", || {
        std::future::ready((1..=3).all(|id| c.map(id).features() == SUPPORTED))
    })
    .await;
    const { assert!(SUPPORTED >= BATCHED_WRITES) };
    let entries = concurrent_writes(&c, 200).await;
    assert!(
        entries < 100,
        "200 concurrent writes took {entries} log entries"
    );
    let bytes = encoded(&c, 1);
    assert_eq!(encoded(&c, 2), bytes);
    assert_eq!(encoded(&c, 3), bytes);
    c.stop_all().await;
}

/// Under a steady stream of commits the map's time stays on the wall clock. Before the
/// fix a stamp was bounded only by the latest command applied: taken while earlier
/// commands were still committing, it lost their latency again, and the map's time (so
/// every failback delay, fence wait and skip window) fell behind by about as long as the
/// stream ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_maps_time_keeps_up_with_the_wall_clock_under_steady_commits() {
    let mut c = Cluster::start(3, 0, |_| {}).await;
    c.write(Command::TimerTick).await;
    let leader = c.leader().await;
    let core = c.monitor(leader).core.clone();
    let wall = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let core = core.clone();
        writers.spawn(async move {
            let mut writes = 0u64;
            while tokio::time::Instant::now() < until {
                core.propose(Command::TimerTick).await.expect("a tick");
                writes += 1;
            }
            writes
        });
    }
    let mut writes = 0;
    let mut lag = 0;
    while tokio::time::Instant::now() < until {
        // The latest stamp applied: the wall is ahead of it by about one commit's latency.
        let applied = core.reader().time_anchor().time;
        lag = lag.max(wall().saturating_sub(applied.as_millis()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Some(done) = writers.join_next().await {
        writes += done.expect("a writer");
    }
    assert!(writes > 100, "only {writes} commits in 3 s");
    assert!(
        lag < 300,
        "the map's time fell {lag} ms behind the wall clock over {writes} commits"
    );
    c.stop_all().await;
}

/// Below the batched-writes level (a monitor of the previous release in the cluster) every
/// command is an entry of its own, which that release can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_batched_writes_level_every_command_is_its_own_entry() {
    use gwmon_monitor::map::features::BATCHED_WRITES;
    use gwmon_monitor::node::Plumbing;
    let mut c = Cluster::start_each(
        3,
        0,
        |_| {},
        |id| Plumbing {
            features: if id == 3 {
                BATCHED_WRITES - 1
            } else {
                Plumbing::default().features
            },
            ..Plumbing::default()
        },
    )
    .await;
    eventually("the level every monitor supports", || {
        std::future::ready((1..=3).all(|id| c.map(id).features() == BATCHED_WRITES - 1))
    })
    .await;
    let entries = concurrent_writes(&c, 50).await;
    assert!(entries >= 50, "50 writes took only {entries} log entries");
    c.stop_all().await;
}
