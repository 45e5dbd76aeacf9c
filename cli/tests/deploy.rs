//! The deployment files against what reads them, since no Kubernetes cluster or systemd
//! runs here:
//! * every Kubernetes manifest (deploy/kubernetes) deserializes as its kind with the
//!   Kubernetes API's own types (k8s-openapi), and serializes back to the same document, so
//!   no field is misspelt or misplaced (those types skip unknown fields); the parts that
//!   must agree do (service and StatefulSet, selectors, probes and ports, the initial
//!   members and the pods' DNS names, the non-root and read-only settings);
//! * every flag the manifests, the compose file and the systemd units pass to `gwmon` or
//!   `gwmon-gateway` is one the binary has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// The YAML documents of a file, as JSON values.
fn documents(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(rel)).expect("read manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v = serde_yaml::Value::deserialize(doc).expect("YAML");
            serde_json::to_value(v).expect("as JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `doc` as a `T`, which must give `doc` back exactly.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{} is not a valid {}: {e}",
            doc["metadata"]["name"], doc["kind"]
        )
    });
    let back = serde_json::to_value(&t).expect("serialize");
    if let Some(at) = first_difference(doc, &back, String::new()) {
        panic!(
            "{} {}: not the same document once read by the API's types, at {at} (a field it \
             does not know, or one it writes differently)",
            doc["kind"], doc["metadata"]["name"]
        );
    }
    t
}

/// The path of the first place `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, format!("{at}.{k}")),
                    _ => Some(format!("{at}.{k}")),
                })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, format!("{at}[{i}]"))),
        _ => (a != b).then_some(at),
    }
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn flags_in(script: &str) -> BTreeSet<String> {
    script
        .split(|c: char| c.is_whitespace() || c == '"' || c == '=' || c == '\\')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect()
}

/// The long flags `bin --help` lists (the `recover` subcommand's of gwmon too).
fn known_flags(bin: &Path, sub: Option<&str>) -> BTreeSet<String> {
    let mut cmd = Command::new(bin);
    if let Some(s) = sub {
        cmd.arg(s);
    }
    let out = cmd.arg("--help").output().expect("run --help");
    assert!(out.status.success(), "{} --help", bin.display());
    flags_in(&String::from_utf8_lossy(&out.stdout))
}

fn bins() -> BTreeMap<String, PathBuf> {
    gwmon_tests::bins::build(
        env!("CARGO_BIN_EXE_nvme-gw"),
        &["gwmon-monitor", "gwmon-client"],
        &["gwmon", "gwmon-gateway"],
    )
}

fn script(c: &Container) -> String {
    let mut all: Vec<String> = c.command.clone().unwrap_or_default();
    all.extend(c.args.clone().unwrap_or_default());
    all.join(" ")
}

#[test]
fn the_monitors_manifest_is_valid_and_consistent() {
    let docs = documents("deploy/kubernetes/monitors.yaml");
    assert_eq!(docs.len(), 4, "service, config map, statefulset, budget");
    let svc: Service = typed(by_kind(&docs, "Service")[0]);
    let cm: ConfigMap = typed(by_kind(&docs, "ConfigMap")[0]);
    let sts: StatefulSet = typed(by_kind(&docs, "StatefulSet")[0]);
    let pdb: PodDisruptionBudget = typed(by_kind(&docs, "PodDisruptionBudget")[0]);

    let svc_spec = svc.spec.expect("service spec");
    assert_eq!(svc_spec.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!(svc_spec.publish_not_ready_addresses, Some(true));
    let spec = sts.spec.expect("statefulset spec");
    assert_eq!(spec.service_name, svc.metadata.name);
    assert_eq!(spec.replicas, Some(3));
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    let selects =
        |sel: &BTreeMap<String, String>| sel.iter().all(|(k, v)| labels.get(k) == Some(v));
    assert!(selects(
        spec.selector.match_labels.as_ref().expect("selector")
    ));
    assert!(selects(
        svc_spec.selector.as_ref().expect("service selector")
    ));
    let pdb_spec = pdb.spec.expect("budget spec");
    assert!(selects(
        pdb_spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .expect("budget selector")
    ));
    assert_eq!(
        pdb_spec.max_unavailable,
        Some(IntOrString::Int(1)),
        "never two at once"
    );

    let pod = spec.template.spec.expect("pod spec");
    let psc = pod.security_context.expect("pod security");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(65532), "the image's user");
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().expect("container security");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    let ports: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([
            ("grpc".into(), 7400),
            ("http".into(), 7401),
            ("raft".into(), 7402)
        ])
    );
    for p in svc_spec.ports.iter().flatten() {
        let IntOrString::String(name) = p.target_port.clone().expect("target port") else {
            panic!("service ports target the container's named ports");
        };
        assert_eq!(ports.get(&name), Some(&p.port), "service port {name}");
    }
    let ready = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("readiness");
    assert_eq!(ready.path.as_deref(), Some("/health/ready"));
    assert_eq!(ready.port, IntOrString::String("http".into()));
    let live = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("liveness");
    assert_eq!(live.path.as_deref(), Some("/health/live"));

    // Every pod is an initial member, by its stable DNS name, at the gRPC port.
    let run = script(c);
    for (i, id) in (0..3).zip(1..) {
        assert!(
            run.contains(&format!("{id}=gwmon-{i}.gwmon.$NAMESPACE.svc:7400")),
            "initial member {id}: {run}"
        );
    }
    assert!(run.contains("--data-dir /var/lib/gwmon/data"), "{run}");
    let mounts: BTreeSet<String> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.clone())
        .collect();
    assert!(
        mounts.contains("/var/lib/gwmon") && mounts.contains("/certs"),
        "{mounts:?}"
    );
    let claims: Vec<String> = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    assert_eq!(claims, ["data"]);
    let env_from = c.env_from.as_ref().expect("fencing settings");
    assert_eq!(
        env_from[0].config_map_ref.as_ref().map(|r| r.name.clone()),
        cm.metadata.name.clone(),
        "the fencer's config map is the one in the file"
    );
    assert!(
        cm.data
            .as_ref()
            .is_some_and(|d| d.contains_key("GWMON_FENCER")),
        "several monitors must be told how to fence"
    );
}

#[test]
fn the_gateways_manifest_is_valid_and_keeps_only_what_configfs_needs() {
    let docs = documents("deploy/kubernetes/gateways.yaml");
    assert_eq!(docs.len(), 1);
    let ds: DaemonSet = typed(&docs[0]);
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(pod.host_network, Some(true), "the node's nvmet ports");
    let c = &pod.containers[0];
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(caps.add, Some(vec!["DAC_OVERRIDE".to_owned()]));
    let configfs = pod
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.host_path.as_ref())
        .expect("configfs from the host");
    assert_eq!(configfs.path, "/sys/kernel/config");
    let run = script(c);
    for i in 0..3 {
        assert!(
            run.contains(&format!("gwmon-{i}.gwmon.gwmon.svc:7400")),
            "{run}"
        );
    }
    assert!(run.contains("--adapter nvmet"), "{run}");
}

#[test]
fn every_flag_the_deployments_pass_exists() {
    let bins = bins();
    let monitor = known_flags(&bins["gwmon"], None);
    let gateway = known_flags(&bins["gwmon-gateway"], None);
    let check = |what: &str, line: &str| {
        let known = if line.contains("gwmon-gateway") {
            &gateway
        } else {
            &monitor
        };
        for flag in flags_in(line) {
            assert!(
                known.contains(&flag),
                "{what}: {flag} is not a flag of: {line}"
            );
        }
    };

    for file in [
        "deploy/kubernetes/monitors.yaml",
        "deploy/kubernetes/gateways.yaml",
    ] {
        for doc in documents(file) {
            let containers = &doc["spec"]["template"]["spec"]["containers"];
            for c in containers.as_array().into_iter().flatten() {
                let c: Container = serde_json::from_value(c.clone()).expect("container");
                check(file, &script(&c));
            }
        }
    }
    let compose = documents("deploy/compose/docker-compose.yml");
    let services = compose[0]["services"].as_object().expect("services");
    assert_eq!(services.len(), 6);
    for (name, s) in services {
        let line: Vec<&str> = s["command"]
            .as_array()
            .expect("command")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        check(&format!("compose service {name}"), &line.join(" "));
    }
    for unit in ["gwmon.service", "gwmon-gateway@.service"] {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).expect("unit");
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .expect("ExecStart");
        check(unit, exec);
    }
}
