//! Map engine throughput with 1,000 gateways in 64 groups (about 16 per group, the default
//! maximum), each serving one subsystem with 4 namespaces in every ANA group of its group.
//!
//! Run: `cargo bench -p gwmon-monitor --bench map`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gwmon_monitor::codec;
use gwmon_monitor::map::{Command, GatewayMap, MapConfig, Timestamp};
use gwmon_proto::domain::{
    AnaGroupId, Epoch, GatewayId, GatewayReport, GroupKey, Listener, Namespace, Nqn,
    ReportedAvailability, Subsystem,
};
use gwmon_proto::v1;
use prost::Message;

const GATEWAYS: usize = 1_000;
const GROUPS: usize = 64;
const NS_PER_ANA_GROUP: u32 = 4;

fn key(i: usize) -> GroupKey {
    GroupKey::new(
        "rbd".parse().expect("pool"),
        format!("grp{i}").parse().expect("group"),
    )
}

fn gw(i: usize) -> GatewayId {
    format!("client.nvmeof.rbd.host{i}.abcdef")
        .parse()
        .expect("gateway id")
}

fn subsystems(gateway: usize, ana_groups: u32, port: u16) -> Vec<Subsystem> {
    let nqn: Nqn = "nqn.2016-06.io.spdk:cnode1".parse().expect("nqn");
    let mut namespaces = Vec::new();
    for g in 1..=ana_groups {
        for n in 0..NS_PER_ANA_GROUP {
            namespaces.push(Namespace {
                nsid: (g - 1) * NS_PER_ANA_GROUP + n + 1,
                ana_group: AnaGroupId::new(g).expect("ana group"),
                nonce: Some(
                    format!("10.0.{}.{}:0/{}", gateway / 250, gateway % 250, g)
                        .parse()
                        .expect("nonce"),
                ),
            });
        }
    }
    vec![Subsystem {
        nqn,
        listeners: vec![Listener {
            address: "10.0.0.1".parse().expect("address"),
            port,
        }],
        namespaces,
    }]
}

struct Fixture {
    map: GatewayMap,
    now: u64,
    members: Vec<(GroupKey, GatewayId, usize)>,
}

/// Build the map the way a cluster would: create every gateway, then one `Starting` and one
/// `Available` beacon each, then confirm epochs until every group is settled.
fn fixture() -> Fixture {
    let mut map = GatewayMap::new(MapConfig::default()).expect("config");
    let now = 1_000_000;
    let members: Vec<(GroupKey, GatewayId, usize)> =
        (0..GATEWAYS).map(|i| (key(i % GROUPS), gw(i), i)).collect();
    let per_group = GATEWAYS.div_ceil(GROUPS) as u32;
    for (k, g, _) in &members {
        map.apply(
            &Command::CreateGateway {
                key: k.clone(),
                gateway: g.clone(),
            },
            Timestamp(now),
        )
        .expect("create");
    }
    let mut seq = 0;
    for round in 0..3 {
        for (k, g, i) in &members {
            seq += 1;
            let applied = map.slice(k, g).map_or(Epoch::ZERO, |s| s.epoch);
            let report = GatewayReport {
                seq,
                availability: if round == 0 {
                    ReportedAvailability::Starting
                } else {
                    ReportedAvailability::Available
                },
                subsystems: subsystems(*i, per_group, 4420),
                applied_epoch: applied,
                fence_epoch: Epoch::ZERO,
            };
            map.apply(
                &Command::GatewayReport {
                    key: k.clone(),
                    gateway: g.clone(),
                    report,
                },
                Timestamp(now + round * 5_000),
            )
            .expect("report");
        }
    }
    Fixture {
        map,
        now: now + 20_000,
        members,
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let per_group = GATEWAYS.div_ceil(GROUPS) as u32;
    let (k, g, i) = f.members[17].clone();

    let mut apply = c.benchmark_group("apply");
    apply.throughput(Throughput::Elements(1));
    // A beacon whose content changed (a listener port flips): the common write.
    {
        let mut map = f.map.clone();
        let mut seq = 1_000_000u64;
        let reports = [
            subsystems(i, per_group, 4420),
            subsystems(i, per_group, 4421),
        ];
        apply.bench_function("changed_beacon", |b| {
            b.iter(|| {
                seq += 1;
                let report = GatewayReport {
                    seq,
                    availability: ReportedAvailability::Available,
                    subsystems: reports[(seq % 2) as usize].clone(),
                    applied_epoch: map.slice(&k, &g).map_or(Epoch::ZERO, |s| s.epoch),
                    fence_epoch: Epoch::ZERO,
                };
                let cmd = Command::GatewayReport {
                    key: k.clone(),
                    gateway: g.clone(),
                    report,
                };
                black_box(map.apply(&cmd, Timestamp(f.now)).expect("apply"));
            })
        });
    }
    // The leader's tick over all 64 groups when no timer is due.
    {
        let mut map = f.map.clone();
        apply.bench_function("idle_tick_64_groups", |b| {
            b.iter(|| {
                black_box(
                    map.apply(&Command::TimerTick, Timestamp(f.now))
                        .expect("tick"),
                )
            })
        });
    }
    // A gateway times out: release, fence issue, target chosen.
    apply.bench_function("timeout_failover", |b| {
        b.iter_batched(
            || f.map.clone(),
            |mut map| {
                let cmd = Command::GatewayTimedOut {
                    key: k.clone(),
                    gateway: g.clone(),
                };
                let applied = map.apply(&cmd, Timestamp(f.now)).expect("apply");
                (map, applied) // dropped outside the timed part
            },
            BatchSize::LargeInput,
        )
    });
    apply.finish();

    // A beacon that only confirms a new applied epoch (the gateway applied a map): as the
    // whole report, and as the small confirmation committed from feature level 2.
    let mut confirm = c.benchmark_group("confirm");
    confirm.throughput(Throughput::Elements(1));
    {
        let mut map = f.map.clone();
        map.apply(&Command::SetFeatures(2), Timestamp(f.now))
            .expect("level 2");
        let report = |map: &GatewayMap, seq: u64| GatewayReport {
            seq,
            availability: ReportedAvailability::Available,
            subsystems: subsystems(i, per_group, 4420),
            applied_epoch: map.slice(&k, &g).map_or(Epoch::ZERO, |s| s.epoch),
            fence_epoch: Epoch::ZERO,
        };
        let seq0 = map
            .group(&k)
            .and_then(|grp| grp.gateways.get(&g))
            .map_or(0, |gw| gw.last_seq);
        let whole = Command::GatewayReport {
            key: k.clone(),
            gateway: g.clone(),
            report: report(&map, seq0 + 1),
        };
        let small = map.beacon_command(&k, &g, report(&map, seq0 + 1));
        assert!(matches!(small, Command::ConfirmApplied { .. }));
        let (whole_bytes, small_bytes) = (
            codec::encode(&whole).expect("encode").len(),
            codec::encode(&small).expect("encode").len(),
        );
        eprintln!(
            "a confirmation committed as the whole report: {whole_bytes} bytes; as \
             ConfirmApplied: {small_bytes} bytes ({} namespaces reported)",
            per_group * NS_PER_ANA_GROUP
        );
        confirm.bench_function("encode_decode_apply_whole_report", |b| {
            b.iter_batched(
                || map.clone(),
                |mut m| {
                    let bytes = codec::encode(&whole).expect("encode");
                    let cmd: Command = codec::decode(&bytes).expect("decode");
                    let applied = m.apply(&cmd, Timestamp(f.now)).expect("apply");
                    (m, applied)
                },
                BatchSize::LargeInput,
            )
        });
        confirm.bench_function("encode_decode_apply_confirmation", |b| {
            b.iter_batched(
                || map.clone(),
                |mut m| {
                    let bytes = codec::encode(&small).expect("encode");
                    let cmd: Command = codec::decode(&bytes).expect("decode");
                    let applied = m.apply(&cmd, Timestamp(f.now)).expect("apply");
                    (m, applied)
                },
                BatchSize::LargeInput,
            )
        });
    }
    confirm.finish();

    let mut slice = c.benchmark_group("slice");
    slice.bench_function("build", |b| {
        b.iter(|| black_box(f.map.slice(&k, &g).expect("slice")))
    });
    let domain = f.map.slice(&k, &g).expect("slice");
    let bytes = v1::MapSlice::from(domain.clone()).encode_to_vec().len();
    eprintln!("map slice for one gateway of a 16-gateway group: {bytes} bytes on the wire");
    slice.throughput(Throughput::Bytes(bytes as u64));
    slice.bench_function("encode_wire", |b| {
        b.iter(|| black_box(v1::MapSlice::from(domain.clone()).encode_to_vec()))
    });
    slice.bench_function("fan_out_all_1000", |b| {
        b.iter(|| {
            let mut total = 0;
            for (k, g, _) in &f.members {
                if let Some(s) = f.map.slice(k, g) {
                    total += v1::MapSlice::from(s).encode_to_vec().len();
                }
            }
            black_box(total)
        })
    });
    slice.finish();

    let mut snapshot = c.benchmark_group("snapshot");
    let encoded = codec::encode(&f.map).expect("encode");
    eprintln!("whole map snapshot: {} bytes", encoded.len());
    snapshot.throughput(Throughput::Bytes(encoded.len() as u64));
    snapshot.bench_function("encode", |b| {
        b.iter(|| black_box(codec::encode(&f.map).expect("encode")))
    });
    snapshot.bench_function("decode", |b| {
        b.iter(|| black_box(codec::decode::<GatewayMap>(&encoded).expect("decode")))
    });
    snapshot.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
