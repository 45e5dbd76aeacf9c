//! `nvme-gw config show|set`: the map's tunables over the real binary.

mod common;

use common::*;
use gwmon_tests::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_show_set_and_refusals() {
    let cluster = Cluster::start(3, 0, |_| {}).await;
    cluster.leader().await;
    let m = all(&cluster);

    let shown = nvme_gw(&m, &["--format=json", "config", "show"])
        .await
        .json();
    assert_eq!(shown["settings"]["beacon_grace_ms"], 4000);
    assert_eq!(shown["defaults"]["beacon_grace_ms"], 4000);
    assert_eq!(shown["settings"].as_object().map(|o| o.len()), Some(11));
    assert_eq!(shown["ranges"]["beacon_grace_ms"]["min"], 500);
    assert_eq!(shown["ranges"]["beacon_grace_ms"]["max"], 120_000);
    assert_eq!(
        shown["ranges"]["blocklist_expiry_ms"]["min"], 30_000,
        "at least the fence timeout in force"
    );

    let set = nvme_gw(
        &m,
        &[
            "--format=json",
            "config",
            "set",
            "beacon_grace_ms=1500",
            "failback_delay_ms=250",
        ],
    )
    .await
    .json();
    assert_eq!(set["settings"]["beacon_grace_ms"], 1500);
    assert_eq!(set["settings"]["failback_delay_ms"], 250);
    assert!(set["epoch"].as_u64() > shown["epoch"].as_u64());

    // The table marks what differs from the default.
    let plain = nvme_gw(&m, &["--format=plain", "config", "show"]).await;
    let text = plain.ok();
    assert!(
        text.lines().any(|l| l.starts_with("beacon_grace_ms")
            && l.contains("1500")
            && l.contains("4000 (changed)")
            && l.contains("500 to 120000")),
        "{text}"
    );

    // Issue 14: a grace of u64::MAX was accepted; now the refusal names the range.
    let huge = nvme_gw(
        &m,
        &["config", "set", "beacon_grace_ms=18446744073709551615"],
    )
    .await;
    let said = huge.refused_with(1);
    assert!(
        said.contains("beacon_grace_ms 18446744073709551615") && said.contains("500 to 120000"),
        "{huge:?}"
    );

    let unknown = nvme_gw(&m, &["config", "set", "grace=1"]).await;
    assert!(
        unknown.refused_with(1).contains("unknown setting"),
        "{unknown:?}"
    );
    let invalid = nvme_gw(&m, &["config", "set", "max_gateways_per_group=0"]).await;
    assert!(
        invalid.refused_with(1).contains("max_gateways_per_group"),
        "{invalid:?}"
    );
    let after = nvme_gw(&m, &["--format=json", "config", "show"])
        .await
        .json();
    assert_eq!(
        after["settings"]["max_gateways_per_group"], 16,
        "a refusal changes nothing"
    );

    // The cluster-wide caps: one group only, and a create for a second is refused with the
    // setting to raise.
    nvme_gw(&m, &["config", "set", "max_groups=1"]).await.ok();
    nvme_gw(&m, &["create", "gw1", "rbd", "one"]).await.ok();
    let refused = nvme_gw(&m, &["create", "gw2", "rbd", "two"]).await;
    let said = refused.refused_with(1);
    assert!(
        said.contains("already has 1 groups") && said.contains("max_groups=N"),
        "{refused:?}"
    );
    let all = nvme_gw(&m, &["--format=json", "show-all"]).await.json();
    assert_eq!(
        all.as_array()
            .map(Vec::len)
            .or_else(|| all["groups"].as_array().map(Vec::len)),
        Some(1),
        "a refused create adds no group: {all}"
    );
}
