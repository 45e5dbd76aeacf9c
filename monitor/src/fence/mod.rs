//! The pluggable fence: cutting a failed gateway off from storage before another gateway is
//! allowed to serve its ANA group.
//!
//! When an ANA group fails over, the map issues a [`Fence`] and the failover target holds
//! I/O until the fence is committed as complete (`Command::FenceCompleted`). The map only
//! records *that* a fence is needed; *how* a gateway is cut off depends on the storage
//! (Ceph: `ceph osd blocklist add` for each RADOS client nonce; others: a storage API call
//! or a switch port). So the leader runs a [`Fencer`] chosen by configuration:
//!
//! * [`none::NoFence`]: completes at once, for storage with no blocklist;
//! * [`exec::ExecFencer`]: runs a configured command (never through a shell);
//! * [`webhook::WebhookFencer`]: POSTs a JSON body to an HTTP endpoint;
//! * [`file::FileFencer`]: rewrites the file adapter's target file (demos and tests).
//!
//! For the reference targets (kernel nvmet, SPDK) `deploy/fence/` ships scripts for the
//! exec fencer that make the failed gateway's ports inaccessible on its host.
//!
//! [`runner::FenceRunner`] is the leader's loop that finds pending fences, runs them
//! concurrently, retries failures with a capped exponential backoff (never giving up: a
//! promotion without a fence is not an option) and commits their completion.
//! [`config`] turns the daemon's settings into a fencer.
//!
//! ```text
//!   map: Fence{completed_at: None} ──▶ FenceRunner (leader only) ──▶ Fencer::fence(order)
//!          ▲                                 │ Ok                        │ Err
//!          └── Command::FenceCompleted ◀─────┘              retry after 0.5 s, 1 s, 2 s … max
//! ```

pub mod config;
pub mod exec;
pub mod file;
pub mod none;
pub mod runner;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use gwmon_proto::domain::{Epoch, GatewayId, GroupKey, Nonce};

use crate::map::{Fence, GatewayMap};

pub use config::{FenceConfigError, FencerConfig, FencerKind, FencerSettings};
pub use exec::ExecFencer;
pub use file::FileFencer;
pub use none::NoFence;
pub use runner::FenceRunner;
pub use webhook::{WebhookAuth, WebhookFencer};

/// A boxed, sendable future: what makes [`Fencer`] object safe, so the monitor can hold the
/// configured fencer as `Arc<dyn Fencer>` without knowing its type.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a fencer is asked to do: make sure `gateway` of `key` can no longer write, through
/// any of `nonces`, as of group epoch `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FenceOrder {
    pub key: GroupKey,
    pub gateway: GatewayId,
    /// The group epoch the fence was issued at: storage that checks epochs rejects writes
    /// tagged with an older one. It also tells two fences of one gateway apart.
    pub epoch: Epoch,
    /// The gateway's fencing nonces (for Ceph, RADOS client addresses). May be empty when
    /// the gateway never reported any; the fencer then has only the gateway id to go by.
    pub nonces: Vec<Nonce>,
}

impl FenceOrder {
    /// The order for one fence of the map's group `key`.
    pub fn new(key: &GroupKey, fence: &Fence) -> Self {
        FenceOrder {
            key: key.clone(),
            gateway: fence.gateway.clone(),
            epoch: fence.epoch,
            nonces: fence.nonces.clone(),
        }
    }

    /// Every fence of the map not yet completed, in group order and issue order.
    pub fn pending(map: &GatewayMap) -> Vec<FenceOrder> {
        map.groups()
            .iter()
            .flat_map(|(key, group)| {
                group
                    .fences
                    .iter()
                    .filter(|f| f.completed_at.is_none())
                    .map(move |f| FenceOrder::new(key, f))
            })
            .collect()
    }
}

/// Cuts a gateway off from storage.
///
/// Contract, which every implementation must keep because the runner relies on it:
/// * **Idempotent.** The same order may be run more than once: after a failure, after a
///   completion that could not be committed, and after a leader change (the new leader does
///   not know what the old one ran).
/// * **Bounded.** `fence` must finish, with success or an error, in bounded time; the
///   runner imposes no timeout of its own because only the fencer knows how slow its
///   backend may legitimately be.
/// * **`Ok` means done.** Success must mean the gateway can no longer write; the failover
///   target starts serving on the strength of it.
pub trait Fencer: Send + Sync {
    /// Fence once (an implementation may retry internally within its own bound).
    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>>;

    /// A short name for logs and health checks: `none`, `exec`, `webhook`, `file`.
    fn name(&self) -> &'static str;

    /// Whether `Ok` means the gateway can no longer write. A fencer that cannot cut a
    /// gateway off (`none`) answers false, and the runner then completes its fences only a
    /// full beacon grace after starting them: by then every lease the gateway held has run
    /// out and its own demotion has had the time the configuration guarantees it. Without
    /// that wait a gateway declared failed while alive (it reported its target unusable)
    /// could still be serving under its lease when its group is promoted elsewhere.
    fn cuts_off(&self) -> bool {
        true
    }
}

/// Why one fence attempt failed. One line, fit for a log and for `nvme-gw` output.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The attempt did not finish in time (the command was killed, the request dropped).
    #[error("{what} timed out after {} ms", after.as_millis())]
    Timeout { what: &'static str, after: Duration },
    /// The fence command could not be started at all.
    #[error("cannot run fence command {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// The fence command ran and failed. `code` is `None` when a signal ended it.
    #[error("fence command {}{}", exit_text(*code), tail_text(stderr))]
    Exit { code: Option<i32>, stderr: String },
    /// The webhook answered, with a status other than 2xx.
    #[error("webhook answered HTTP {status}{}", tail_text(body))]
    Http { status: u16, body: String },
    /// The webhook could not be reached or the exchange broke off.
    #[error("webhook {url}: {message}")]
    Transport { url: String, message: String },
    /// A target file could not be fenced (its lock stayed busy, it could not be read,
    /// parsed or replaced).
    #[error("file fencer: {path}: {message}")]
    File { path: String, message: String },
}

impl FenceError {
    /// Whether trying again soon is pointless: the endpoint refused the request as such
    /// (HTTP 3xx/4xx, e.g. bad credentials or a wrong path). The runner still retries (a
    /// fence is never given up on) but logs it as an error that needs an operator.
    pub fn is_permanent(&self) -> bool {
        matches!(self, FenceError::Http { status, .. } if (300..500).contains(status))
    }
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exited with code {c}"),
        None => "was killed by a signal".to_owned(),
    }
}

fn tail_text(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// The end of `bytes` as one line of at most about `max` bytes of text: lossy UTF-8,
/// line breaks shown as ` | `, blank lines dropped, `…` where the start was cut. Used for
/// stderr and response bodies in errors, which must stay one short line however much a
/// command printed. Callers pass already bounded buffers.
pub(crate) fn one_line_tail(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if joined.len() <= max {
        return joined;
    }
    let mut start = joined.len() - max;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    let cut = joined[start..].trim_start_matches([' ', '|']);
    format!("…{cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_with_the_useful_detail() {
        let e = FenceError::Exit {
            code: Some(3),
            stderr: "no such pool".into(),
        };
        assert_eq!(
            e.to_string(),
            "fence command exited with code 3: no such pool"
        );
        let e = FenceError::Exit {
            code: None,
            stderr: String::new(),
        };
        assert_eq!(e.to_string(), "fence command was killed by a signal");
        let e = FenceError::Timeout {
            what: "fence command",
            after: Duration::from_millis(1500),
        };
        assert_eq!(e.to_string(), "fence command timed out after 1500 ms");
        let e = FenceError::Http {
            status: 403,
            body: "denied".into(),
        };
        assert_eq!(e.to_string(), "webhook answered HTTP 403: denied");
        assert!(e.is_permanent());
        assert!(!FenceError::Http {
            status: 503,
            body: String::new()
        }
        .is_permanent());
    }

    #[test]
    fn tails_keep_the_end_on_one_line() {
        assert_eq!(one_line_tail(b"a\nb\r\n\n c \n", 100), "a | b | c");
        assert_eq!(one_line_tail(b"0123456789", 4), "…6789");
        assert_eq!(one_line_tail(b"ab\ncd\nef", 8), "…cd | ef");
        // A cut inside a multi-byte character moves to the next boundary.
        assert_eq!(one_line_tail("ééé".as_bytes(), 3), "…é");
        // Invalid UTF-8 is shown, not refused.
        assert_eq!(one_line_tail(b"a\xffb", 10), "a\u{fffd}b");
    }
}
