//! One network namespace per process, joined by veth pairs to a bridge in a hub namespace
//! of their own, and partitions made with iptables inside a node's namespace.
//!
//! ```text
//!   hub namespace:  br0 ── v1 ─┐  v2 ─┐  ...
//!                              │      │
//!   node namespaces:         eth0   eth0      (10.77.0.x/24 each)
//! ```
//!
//! Everything lives in namespaces named `gwreal-PID-*`, so the subnet never collides with
//! the host's or another run's, and nothing is added to the root namespace. [`Network`]
//! deletes its namespaces when dropped (which also removes the veth pairs and the bridge);
//! namespaces left by a run that was killed outright are removed by the next
//! [`Network::new`] once their process is gone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Namespaces of this harness start with this.
const PREFIX: &str = "gwreal-";

/// Why the network could not be set up or changed. One line, with the command that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError(pub String);

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetError {}

/// Run a command; its stderr in the error.
fn run(program: &str, args: &[&str]) -> Result<(), NetError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A node: its namespace and address.
#[derive(Debug, Clone)]
pub struct Node {
    pub ns: String,
    pub addr: Ipv4Addr,
}

/// The namespaces of one run.
#[derive(Debug)]
pub struct Network {
    hub: String,
    nodes: BTreeMap<String, Node>,
}

impl Network {
    /// Namespaces for `nodes` (name, last octet of its 10.77.0.0/24 address), each joined to
    /// the bridge. Fails, saying why, without root or without `ip`.
    pub fn new(nodes: &[(&str, u8)]) -> Result<Network, NetError> {
        remove_stale();
        let tag = format!("{PREFIX}{}", std::process::id());
        let mut net = Network {
            hub: format!("{tag}-hub"),
            nodes: BTreeMap::new(),
        };
        run("ip", &["netns", "add", &net.hub]).map_err(|e| {
            NetError(format!(
                "cannot create a network namespace (the real-process test needs root, \
                 iproute2 and iptables; run it as root, e.g. through .ci/run): {e}"
            ))
        })?;
        let hub = net.hub.clone();
        run("ip", &["-n", &hub, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, (name, octet)) in nodes.iter().enumerate() {
            let ns = format!("{tag}-{name}");
            // Registered before it exists, so a failure half way still deletes it.
            let addr = Ipv4Addr::new(10, 77, 0, *octet);
            net.nodes.insert(
                (*name).to_owned(),
                Node {
                    ns: ns.clone(),
                    addr,
                },
            );
            run("ip", &["netns", "add", &ns])?;
            let veth = format!("v{i}");
            run(
                "ip",
                &[
                    "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run("ip", &["-n", &hub, "link", "set", &veth, "master", "br0"])?;
            run("ip", &["-n", &hub, "link", "set", &veth, "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            let cidr = format!("{addr}/24");
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(net)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    pub fn addr(&self, name: &str) -> Result<Ipv4Addr, NetError> {
        self.node(name)
            .map(|n| n.addr)
            .ok_or_else(|| NetError(format!("no node {name}")))
    }

    /// `program` to be run in `name`'s namespace (`ip netns exec`, which execs it: the
    /// child's pid is the program's own, so signals reach it).
    pub fn command(&self, name: &str, program: &std::path::Path) -> Result<Command, NetError> {
        let node = self
            .node(name)
            .ok_or_else(|| NetError(format!("no node {name}")))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &node.ns]).arg(program);
        Ok(c)
    }

    /// Drop every packet between `name` and each of `others`, in both directions, inside
    /// `name`'s namespace. Connections hang (nothing answers), as in a real partition.
    pub fn isolate(&self, name: &str, others: &[&str]) -> Result<(), NetError> {
        let ns = self
            .node(name)
            .ok_or_else(|| NetError(format!("no node {name}")))?
            .ns
            .clone();
        for other in others {
            let addr = self.addr(other)?.to_string();
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "iptables", "-w", "-A", "INPUT", "-s", &addr, "-j",
                    "DROP",
                ],
            )?;
            run(
                "ip",
                &[
                    "netns", "exec", &ns, "iptables", "-w", "-A", "OUTPUT", "-d", &addr, "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Remove every rule [`Network::isolate`] added in `name`'s namespace.
    pub fn heal(&self, name: &str) -> Result<(), NetError> {
        let ns = self
            .node(name)
            .ok_or_else(|| NetError(format!("no node {name}")))?
            .ns
            .clone();
        run("ip", &["netns", "exec", &ns, "iptables", "-w", "-F"])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for node in self.nodes.values() {
            let _ = run("ip", &["netns", "del", &node.ns]);
        }
        let _ = run("ip", &["netns", "del", &self.hub]);
    }
}

/// Delete the namespaces of runs whose process no longer exists.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}
