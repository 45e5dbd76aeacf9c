//! The operator: `nvme-gw` run in the admin namespace, its commands and their outcomes
//! recorded, and the final state read back for check (c).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::history::Recorder;
use crate::world::{AdminOp, AdminState, Event};

/// `nvme-gw` as the harness runs it: in namespace `ns`, against `monitors`, JSON out.
#[derive(Debug, Clone)]
pub struct NvmeGw {
    pub ns: String,
    pub bin: PathBuf,
    pub monitors: String,
    pub pool: String,
    pub group: String,
}

impl NvmeGw {
    /// Run it with `args`; each attempt at one monitor is bounded, and so are the retries,
    /// so a call ends within about fifteen seconds whatever the cluster does.
    pub fn run(&self, args: &[&str]) -> Result<Output, String> {
        self.run_at(&self.monitors, 4, args)
    }

    /// [`NvmeGw::run`] against `monitors` only, with `retries`.
    pub fn run_at(&self, monitors: &str, retries: u32, args: &[&str]) -> Result<Output, String> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .args(["--monitors", monitors, "--format", "json"])
            .args(["--timeout-ms", "2000", "--retries", &retries.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run nvme-gw: {e}"))
    }

    /// Run it and parse its JSON answer; an error says what it printed.
    pub fn json(&self, args: &[&str]) -> Result<Value, String> {
        parse(args, self.run(args)?)
    }

    /// The leader monitor `addr` itself knows, from its own state (`--stale`, no retry);
    /// `None` if it knows none or does not answer.
    pub fn leader_seen_by(&self, addr: &str) -> Option<u64> {
        let args = ["--stale", "cluster", "status"];
        let out = self.run_at(addr, 0, &args).ok()?;
        parse(&args, out).ok()?["leader"].as_u64()
    }
}

fn parse(args: &[&str], out: Output) -> Result<Value, String> {
    if !out.status.success() {
        return Err(format!(
            "nvme-gw {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "nvme-gw {}: not JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

impl NvmeGw {
    /// The leader and term, as the monitor that answered knows them.
    pub fn leader(&self) -> Result<(u64, u64), String> {
        let v = self.json(&["cluster", "status"])?;
        let leader = v["leader"]
            .as_u64()
            .ok_or_else(|| format!("no leader known: {v}"))?;
        Ok((leader, v["term"].as_u64().unwrap_or(0)))
    }

    /// Run one admin command. `Err((definite, why))`: `definite` is never claimed, because
    /// the CLI retries on its own and a refusal may follow an attempt whose fate is unknown.
    pub fn op(&self, op: &AdminOp) -> Result<(), (bool, String)> {
        let (pool, group) = (self.pool.as_str(), self.group.as_str());
        let delay;
        let args: Vec<&str> = match op {
            AdminOp::Create(g) => vec!["create", g, pool, group],
            AdminOp::Delete(g) => vec!["delete", g, pool, group],
            AdminOp::SetEnabled(g, true) => vec!["enable", g, pool, group],
            AdminOp::SetEnabled(g, false) => vec!["disable", g, pool, group],
            AdminOp::SetLocation(g, l) => vec!["set-location", g, pool, group, l],
            AdminOp::SetFailbackDelay(ms) => {
                delay = format!("failback_delay_ms={ms}");
                vec!["config", "set", &delay]
            }
            AdminOp::AddMonitor(_) | AdminOp::RemoveMonitor(_) => {
                return Err((
                    true,
                    "the real-process schedule does not change the membership".into(),
                ))
            }
        };
        let out = self.run(&args).map_err(|e| (false, e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err((
                false,
                format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ))
        }
    }

    /// The state every admin key names, read from the leader: `exists/GW`, `enabled/GW`,
    /// `location/GW` and `failback_delay_ms`, as the simulation's operator reads them.
    pub fn read_state(&self) -> Result<AdminState, String> {
        let show = self.json(&["show", &self.pool, &self.group])?;
        let config = self.json(&["config", "show"])?;
        let mut state = AdminState::new();
        let gateways = show["Created Gateways:"]
            .as_array()
            .ok_or_else(|| format!("show has no gateways: {show}"))?;
        for gw in gateways {
            let id = gw["gw-id"]
                .as_str()
                .ok_or_else(|| format!("a gateway without an id: {gw}"))?;
            let present = gw["Availability"].as_str() != Some("DELETING");
            state.insert(
                format!("exists/{id}"),
                if present { "yes" } else { "no" }.into(),
            );
            let enabled = gw["admin state"].as_str() == Some("ENABLED");
            state.insert(format!("enabled/{id}"), enabled.to_string());
            state.insert(
                format!("location/{id}"),
                gw["location"].as_str().unwrap_or_default().to_owned(),
            );
        }
        let delay = config["settings"]["failback_delay_ms"]
            .as_u64()
            .ok_or_else(|| format!("config show has no failback_delay_ms: {config}"))?;
        state.insert("failback_delay_ms".into(), delay.to_string());
        Ok(state)
    }
}

#[derive(Default)]
struct Queue {
    ops: VecDeque<(u64, AdminOp)>,
    busy: bool,
    next_id: u64,
}

/// Runs submitted commands one after the other on a thread of its own, so that commands
/// overlap the faults, and records each as sent, then acknowledged or failed.
pub struct Operator {
    queue: Arc<Mutex<Queue>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Operator {
    pub fn start(nvme: NvmeGw, rec: Recorder) -> Operator {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (queue, stop) = (queue.clone(), stop.clone());
            std::thread::spawn(move || {
                let lock = || queue.lock().unwrap_or_else(PoisonError::into_inner);
                while !stop.load(Ordering::SeqCst) {
                    let next = {
                        let mut q = lock();
                        let next = q.ops.pop_front();
                        q.busy = next.is_some();
                        next
                    };
                    let Some((id, op)) = next else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    rec.record(Event::AdminSent { id, op: op.clone() });
                    match nvme.op(&op) {
                        Ok(()) => rec.record(Event::AdminAcked { id }),
                        Err((definite, why)) => {
                            rec.record(Event::AdminFailed { id, definite, why })
                        }
                    };
                    lock().busy = false;
                }
            })
        };
        Operator {
            queue,
            stop,
            thread: Some(thread),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `op`; it runs after those queued before it.
    pub fn submit(&self, op: AdminOp) {
        let mut q = self.lock();
        q.next_id += 1;
        let id = q.next_id;
        q.ops.push_back((id, op));
    }

    /// Wait until every queued command has finished; false if `within` passed first.
    pub fn wait_idle(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        loop {
            {
                let q = self.lock();
                if q.ops.is_empty() && !q.busy {
                    return true;
                }
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
