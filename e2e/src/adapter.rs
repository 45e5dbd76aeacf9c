//! gwmon-client's nvmet adapter on the kernel's own configfs (its tests run on a generated
//! tree): two adapters, each owning one port of one kernel target, scan the subsystem and
//! its namespaces back, create the ANA groups' directories, write every state, and what a
//! host connected to both ports sees is checked after each step, a namespace moved between
//! ANA groups included; then the writes the
//! kernel refuses: an ANA group past its limit, a state it does not know, and an adapter
//! without the right to write, which must fail with one clear line and change nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gwmon_client::adapters::nvmet::{NvmetConfig, NvmetTarget};
use gwmon_client::{AnaEntry, AnaHandler, AnaStates};
use gwmon_proto::domain::{
    AnaAccess, AnaGroupId, Epoch, Listener, Namespace, NamespacePlacement, Nqn, Subsystem,
};

use crate::cluster::wait_for;
use crate::host;
use crate::kernel::{self, Port, NQN, NVMET};
use crate::scenario::Measure;

pub const NAME: &str = "adapter";
/// Namespace 1 in ANA group 5, namespace 2 in group 7: neither exists on a port until the
/// adapter creates it.
const NAMESPACES: [(u32, u32); 2] = [(1, 5), (2, 7)];

fn ports() -> Vec<Port> {
    (1..=2u16)
        .map(|id| Port {
            id,
            addr: format!("127.0.0.{id}"),
        })
        .collect()
}

fn target(port: &Port) -> NvmetTarget {
    NvmetTarget::with_config(NvmetConfig {
        root: PathBuf::from(NVMET),
        nonce: None,
        ports: Some(BTreeSet::from([port.id.to_string()])),
    })
}

fn group(n: u32) -> Result<AnaGroupId, String> {
    AnaGroupId::new(n).map_err(|e| e.to_string())
}

fn nqn() -> Result<Nqn, String> {
    NQN.parse().map_err(|e| format!("{NQN}: {e}"))
}

/// States for every namespace's group: `optimized` for `serve`, inaccessible otherwise.
fn states(serve: &[u32]) -> Result<AnaStates, String> {
    let nqn = nqn()?;
    Ok(AnaStates {
        placements: Vec::new(),
        epoch: Epoch::ZERO.next(),
        entries: NAMESPACES
            .iter()
            .map(|&(_, g)| {
                Ok(AnaEntry {
                    nqn: nqn.clone(),
                    ana_group: group(g)?,
                    access: if serve.contains(&g) {
                        AnaAccess::Optimized
                    } else {
                        AnaAccess::Inaccessible
                    },
                    fence_epoch: Epoch::ZERO,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, String> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?
        .block_on(f))
}

/// What the kernel serves and what the host sees, for every (port, namespace): the state
/// in configfs (`absent` without a group directory) and at the host's path.
fn seen(ports: &[Port]) -> Vec<(u16, u32, String, String)> {
    let mut out = Vec::new();
    for p in ports {
        for &(nsid, grp) in &NAMESPACES {
            let kernel = p.state(grp).unwrap_or_else(|_| "absent".into());
            let at_host = host::path_state(&p.addr, nsid).unwrap_or_else(|| "no path".into());
            out.push((p.id, nsid, kernel, at_host));
        }
    }
    out
}

/// Wait until, on every port, the kernel serves and the host sees `want(port, nsid)`.
fn expect(
    ports: &[Port],
    what: &str,
    want: impl Fn(u16, u32) -> &'static str,
) -> Result<Duration, String> {
    wait_for(what, Duration::from_secs(20), || {
        seen(ports)
            .iter()
            .all(|(p, ns, k, h)| k == want(*p, *ns) && h == want(*p, *ns))
    })
    .map_err(|e| format!("{e}: seen (port, nsid, kernel, host) {:?}", seen(ports)))
}

/// The checks, in order; the first failure ends them.
fn checks(ports: &[Port], bins: &Path, detail: &mut Vec<String>) -> Result<(), String> {
    let [p1, p2] = ports else {
        return Err("two ports expected".into());
    };
    let (a, b) = (target(p1), target(p2));

    check_scan(p1, &a)?;
    detail.push("scan matches".into());

    // Before any apply the groups have no directory and the kernel serves them
    // inaccessible; the host connects to both ports and sees so.
    for p in ports {
        host::connect(&p.addr)?;
    }
    wait_for("the host's paths", Duration::from_secs(30), || {
        host::paths().len() == 4
    })?;
    let inaccessible_at_host = || {
        ports.iter().all(|p| {
            NAMESPACES
                .iter()
                .all(|&(ns, _)| host::path_state(&p.addr, ns).as_deref() == Some("inaccessible"))
        })
    };
    if !inaccessible_at_host() {
        return Err(format!("before any apply the host sees {:?}", seen(ports)));
    }

    // Each adapter serves one group: it creates both groups' directories on its port.
    let t = Instant::now();
    block_on(a.apply(&states(&[5])?))?.map_err(|e| e.to_string())?;
    block_on(b.apply(&states(&[7])?))?.map_err(|e| e.to_string())?;
    expect(ports, "groups split between the ports", |p, ns| {
        match (p, ns) {
            (1, 1) | (2, 2) => "optimized",
            _ => "inaccessible",
        }
    })?;
    detail.push(format!(
        "groups made and split, seen at host {} ms after the apply",
        t.elapsed().as_millis()
    ));

    // A planned move: port 1 gives group 5 up first, then port 2 takes it.
    block_on(a.apply(&states(&[])?))?.map_err(|e| e.to_string())?;
    block_on(b.apply(&states(&[5, 7])?))?.map_err(|e| e.to_string())?;
    expect(ports, "both groups through port 2", |p, _| {
        if p == 2 {
            "optimized"
        } else {
            "inaccessible"
        }
    })?;

    // Demotion of everything on port 2 leaves port 1 alone.
    block_on(a.apply(&states(&[5])?))?.map_err(|e| e.to_string())?;
    block_on(b.demote_all(&AnaStates::default()))?.map_err(|e| e.to_string())?;
    expect(ports, "port 2 demoted, port 1 serving group 5", |p, ns| {
        if (p, ns) == (1, 1) {
            "optimized"
        } else {
            "inaccessible"
        }
    })?;
    detail.push("move and demotion seen at host".into());
    move_namespace(ports, &a, &b, detail)?;

    check_kernel_limits(p1)?;
    detail.push("kernel refuses group 129 and an unknown state".into());

    check_refused_apply(ports, p1, bins, detail)
}

/// Scanning port 1 finds the subsystem, its namespaces with their groups, and only its own
/// port.
fn check_scan(p1: &Port, a: &NvmetTarget) -> Result<(), String> {
    let mut scanned = block_on(a.subsystems())?.map_err(|e| e.to_string())?;
    scanned.iter_mut().for_each(Subsystem::canonicalize);
    let want = vec![Subsystem {
        nqn: nqn()?,
        listeners: vec![Listener {
            address: p1.addr.parse::<IpAddr>().map_err(|e| e.to_string())?,
            port: 4420,
        }],
        namespaces: NAMESPACES
            .iter()
            .map(|&(nsid, g)| {
                Ok(Namespace {
                    nsid,
                    ana_group: group(g)?,
                    nonce: None,
                })
            })
            .collect::<Result<_, String>>()?,
    }];
    if scanned != want {
        return Err(format!("scan of port 1: {scanned:?}, expected {want:?}"));
    }
    Ok(())
}

/// The kernel's limit on ANA groups is gwmon's (128 is made, 129 refused), and a state the
/// kernel does not know is refused and changes nothing.
fn check_kernel_limits(p1: &Port) -> Result<(), String> {
    let groups = p1.dir().join("ana_groups");
    let max = groups.join(AnaGroupId::MAX.to_string());
    std::fs::create_dir(&max).map_err(|e| format!("mkdir {}: {e}", max.display()))?;
    std::fs::remove_dir(&max).map_err(|e| format!("rmdir {}: {e}", max.display()))?;
    let past = groups.join((AnaGroupId::MAX + 1).to_string());
    match std::fs::create_dir(&past) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&past);
            return Err(format!(
                "the kernel made {}: its limit is not gwmon's",
                past.display()
            ));
        }
        Err(e) if e.raw_os_error() == Some(22) => {}
        Err(e) => return Err(format!("mkdir {}: {e}, expected EINVAL", past.display())),
    }
    let state5 = groups.join("5/ana_state");
    match std::fs::write(&state5, "active\n") {
        Ok(()) => {
            return Err(format!(
                "the kernel took \"active\" in {}",
                state5.display()
            ))
        }
        Err(e) if e.raw_os_error() == Some(22) => {}
        Err(e) => return Err(format!("write {}: {e}, expected EINVAL", state5.display())),
    }
    Ok(())
}

/// An adapter the kernel refuses to let write: one line naming the file, and nothing
/// changes at the host.
fn check_refused_apply(
    ports: &[Port],
    p1: &Port,
    bins: &Path,
    detail: &mut Vec<String>,
) -> Result<(), String> {
    let out = Command::new(bins.join("gwmon-e2e"))
        .args(["--probe-apply", "1:7"])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the unprivileged adapter: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let path = p1.dir().join("ana_groups/7/ana_state");
    if out.status.success()
        || err.lines().count() != 1
        || !err.contains(&path.display().to_string())
        || !err.contains("Permission denied")
        || err.contains("Os {")
    {
        return Err(format!(
            "the unprivileged adapter: {}, stderr {err:?}",
            out.status
        ));
    }
    expect(ports, "nothing changed by the refused apply", |p, ns| {
        if (p, ns) == (1, 1) {
            "optimized"
        } else {
            "inaccessible"
        }
    })?;
    detail.push(format!("refused apply: {err}"));
    Ok(())
}

/// Namespace balancing on the kernel: the adapter moves namespace 2 from ANA group 7 to 5
/// by rewriting its `ana_grpid` while it is enabled, and the host follows the kernel's ANA
/// change event; then back. One kernel target serves both ports here, so the namespace
/// changes paths in one write (separate gateways' targets are sequenced by the monitors).
/// Leaves port 1 serving group 5 and port 2 demoted, as it found them.
fn move_namespace(
    ports: &[Port],
    a: &NvmetTarget,
    b: &NvmetTarget,
    detail: &mut Vec<String>,
) -> Result<(), String> {
    let [p1, p2] = ports else {
        return Err("two ports expected".into());
    };
    let serving_home = |p: u16, ns: u32| match (p, ns) {
        (1, 1) | (2, 2) => "optimized",
        _ => "inaccessible",
    };
    block_on(b.apply(&states(&[7])?))?.map_err(|e| e.to_string())?;
    expect(ports, "namespace 2 through port 2 again", serving_home)?;
    let at_host = |p: &Port, ns| host::path_state(&p.addr, ns).unwrap_or_default();
    let placed = |g| -> Result<AnaStates, String> {
        let mut s = states(&[5])?;
        s.placements = vec![NamespacePlacement {
            nqn: nqn()?,
            nsid: 2,
            ana_group: group(g)?,
        }];
        Ok(s)
    };
    let t = Instant::now();
    block_on(a.apply(&placed(5)?))?.map_err(|e| e.to_string())?;
    wait_for(
        "namespace 2 in ANA group 5",
        Duration::from_secs(20),
        || at_host(p1, 2) == "optimized" && at_host(p2, 2) == "inaccessible",
    )
    .map_err(|e| format!("{e}: seen {:?}", seen(ports)))?;
    detail.push(format!(
        "namespace 2 moved to ANA group 5, seen at host {} ms after the apply",
        t.elapsed().as_millis()
    ));
    block_on(a.apply(&placed(7)?))?.map_err(|e| e.to_string())?;
    expect(ports, "namespace 2 back in ANA group 7", serving_home)?;
    block_on(b.demote_all(&AnaStates::default()))?.map_err(|e| e.to_string())?;
    expect(ports, "port 2 demoted again", |p, ns| {
        if (p, ns) == (1, 1) {
            "optimized"
        } else {
            "inaccessible"
        }
    })?;
    Ok(())
}

/// `gwmon-e2e --probe-apply PORT:GROUP`: the nvmet adapter owning `PORT` makes `GROUP`
/// optimized (run unprivileged by the adapter check). Exit 1 with the error on stderr.
pub fn probe_apply(spec: &str) -> Result<(), String> {
    let (port, grp) = spec
        .split_once(':')
        .ok_or_else(|| format!("--probe-apply {spec}: PORT:GROUP"))?;
    let port = Port {
        id: port
            .parse()
            .map_err(|_| format!("--probe-apply: bad port {port}"))?,
        addr: String::new(),
    };
    let grp: u32 = grp
        .parse()
        .map_err(|_| format!("--probe-apply: bad group {grp}"))?;
    let states = AnaStates {
        placements: Vec::new(),
        epoch: Epoch::ZERO.next(),
        entries: vec![AnaEntry {
            nqn: nqn()?,
            ana_group: group(grp)?,
            access: AnaAccess::Optimized,
            fence_epoch: Epoch::ZERO,
        }],
    };
    block_on(target(&port).apply(&states))?.map_err(|e| e.to_string())
}

/// Run the checks once.
pub fn run(bins: &Path, run: u32) -> Vec<Measure> {
    let ports = ports();
    let mut m = Measure::new(NAME, "configfs", run, 0.0);
    let t0 = Instant::now();
    let mut detail = Vec::new();
    let outcome =
        kernel::export(&ports, &NAMESPACES, &[]).and_then(|()| checks(&ports, bins, &mut detail));
    m.recovered_ms = t0.elapsed().as_millis();
    match outcome {
        Ok(()) => m.matched = true,
        Err(e) => m.failure = Some(e),
    }
    m.detail = Some(detail.join("; "));
    let disconnected = host::disconnect();
    if let Err(e) = disconnected.and_then(|()| kernel::unexport(&ports, &NAMESPACES)) {
        m.failure.get_or_insert(format!("tear-down: {e}"));
    }
    vec![m]
}
