//! The admin client: one gRPC call, made to whichever monitor can serve it.
//!
//! A monitor that is not the leader refuses writes and linearizable reads with
//! FAILED_PRECONDITION and the leader's address in the `gwmon-leader` header; the client goes
//! there at once, without counting it as a retry (a redirect is the normal way to find the
//! leader, not a failure). When a monitor does not answer, or answers that it cannot serve
//! now (UNAVAILABLE: no leader elected yet, no quorum, a membership change under way), the
//! client waits and tries the next address, a bounded number of times with a doubling wait,
//! so a command issued while the leader is being replaced succeeds once a new one is elected,
//! and a command against a dead cluster ends in a few seconds with every address it tried.
//! Any other error is the monitor's considered answer (unknown gateway, group full, invalid
//! id) and is returned at once: retrying would give the same refusal.

use std::future::Future;
use std::time::Duration;

use gwmon_proto::leader::leader_hint;
use gwmon_proto::tls::Tls;
use gwmon_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::error::CliError;

/// First wait after a failed attempt; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between attempts: an election takes about a second, so waiting longer
/// only delays the answer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Redirects followed in a row before one counts as a failed attempt. Two monitors naming
/// each other (each with a stale idea of the leader during an election) must not make the
/// client spin; after this many hops it waits like after any failure.
pub const MAX_REDIRECTS: u32 = 4;

/// The start of the message a monitor refuses with when it is not the leader and knows no
/// leader either (an election is running). It is FAILED_PRECONDITION without the header, the
/// same code as a refused map command ("refused: gateway ... is being deleted"), so the
/// message is what tells the two apart; a unit test pins it to gwmon-proto's text.
const NO_LEADER_PREFIX: &str = "this monitor is not the leader";

/// Where and how to reach the monitors.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to try, in order; `host:port` or a full `http://host:port` URI.
    pub monitors: Vec<String>,
    /// Limit of one attempt at one monitor, connecting included.
    pub timeout: Duration,
    /// Failed attempts retried before giving up (redirects do not count).
    pub retries: u32,
    /// Mutual TLS to every monitor; `None`: plain h2c.
    pub tls: Option<Tls>,
}

/// A successful answer and the monitor that gave it.
#[derive(Debug)]
pub struct Answer<T> {
    pub value: T,
    pub from: String,
}

/// Calls monitors with leader following and bounded retries; see the module documentation.
pub struct Admin {
    settings: Settings,
    /// The monitor that answered last: the next call starts there, as it is most likely
    /// the leader (a command that makes two calls then pays for one redirect, not two).
    preferred: Option<String>,
    /// The next index of `settings.monitors` to try when no better address is known.
    next: usize,
    /// Every address tried so far, first-tried order, for the "no monitor" message.
    tried: Vec<String>,
}

/// What one failed attempt means for the next.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Not the leader; the leader is at this address.
    Redirect { leader: String, message: String },
    /// No answer, or an answer that says "not now": try again, elsewhere, after a wait.
    Retry(String),
    /// A considered refusal: return it.
    Refused(String),
}

impl Admin {
    pub fn new(settings: Settings) -> Self {
        Admin {
            settings,
            preferred: None,
            next: 0,
            tried: Vec::new(),
        }
    }

    /// Start the next call at `addr` (say, the leader a status answer named).
    pub fn prefer(&mut self, addr: impl Into<String>) {
        self.preferred = Some(addr.into());
    }

    /// Let each attempt of the calls that follow take at least `timeout`: for a call the
    /// monitors answer only after a wait of their own (`cluster add`), an attempt cut
    /// shorter would be retried while the first still runs.
    pub fn attempts_of_at_least(&mut self, timeout: std::time::Duration) {
        self.settings.timeout = self.settings.timeout.max(timeout);
    }

    /// Make one call. `call` gets a client connected to the monitor being tried and may be
    /// invoked several times (once per attempt), so it must build its request afresh.
    pub async fn call<T, F, Fut>(&mut self, call: F) -> Result<Answer<T>, CliError>
    where
        F: FnMut(AdminServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call_on(AdminServiceClient::new, call).await
    }

    /// [`Admin::call`] on another service of the monitors (`ReplicaService`), which
    /// follows the same leader-redirect convention: `client` wraps the connected channel.
    pub async fn call_on<C, T, F, Fut>(
        &mut self,
        client: fn(Channel) -> C,
        mut call: F,
    ) -> Result<Answer<T>, CliError>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut target = self.preferred.take();
        let mut attempts = 0u32;
        let mut failures = 0u32;
        let mut redirects = 0u32;
        let mut wait = BACKOFF_MIN;
        loop {
            let addr = match target.take() {
                Some(a) => a,
                None => self.next_monitor(),
            };
            if !self.tried.contains(&addr) {
                self.tried.push(addr.clone());
            }
            attempts += 1;
            let last = match self.attempt(&addr, client, &mut call).await {
                Ok(resp) => {
                    self.preferred = Some(addr.clone());
                    return Ok(Answer {
                        value: resp.into_inner(),
                        from: addr,
                    });
                }
                Err(Failure::Refused(message)) => {
                    self.preferred = Some(addr);
                    return Err(CliError::Refused(message));
                }
                Err(Failure::Redirect { leader, .. }) if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    target = Some(leader);
                    continue;
                }
                Err(Failure::Redirect { message, .. } | Failure::Retry(message)) => {
                    format!("{addr}: {message}")
                }
            };
            failures += 1;
            // Every monitor gets one attempt whatever `--retries` says: any one will do.
            let round = self.settings.monitors.len() as u64;
            if u64::from(failures) > u64::from(self.settings.retries)
                && u64::from(failures) >= round
            {
                return Err(CliError::NoMonitor {
                    tried: self.tried.clone(),
                    attempts,
                    last,
                });
            }
            redirects = 0;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(BACKOFF_MAX);
        }
    }

    fn next_monitor(&mut self) -> String {
        let list = &self.settings.monitors;
        // The list is never empty (checked when the arguments are read); an empty one would
        // still not panic here, it would only find nothing to connect to.
        let addr = list
            .get(self.next % list.len().max(1))
            .cloned()
            .unwrap_or_default();
        self.next += 1;
        addr
    }

    /// One attempt at one monitor, connecting and answering within the timeout.
    async fn attempt<C, T, F, Fut>(
        &self,
        addr: &str,
        client: fn(Channel) -> C,
        call: &mut F,
    ) -> Result<Response<T>, Failure>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = self.settings.timeout;
        let endpoint = gwmon_proto::tls::endpoint(addr, self.settings.tls.as_ref())
            .map_err(|e| Failure::Retry(format!("not a usable address: {e}")))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let work = async {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| Failure::Retry(format!("cannot connect: {}", chain(&e))))?;
            call(client(channel))
                .await
                .map_err(|status| classify(&status))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Retry(format!(
                "no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

pub use gwmon_proto::addr::{check_addr, uri};

/// Decide what a monitor's error status means for the next attempt.
fn classify(status: &Status) -> Failure {
    let message = status.message().to_owned();
    if let Some(leader) = leader_hint(status) {
        return Failure::Redirect {
            leader: leader.to_owned(),
            message,
        };
    }
    match status.code() {
        Code::FailedPrecondition if message.starts_with(NO_LEADER_PREFIX) => {
            Failure::Retry(message)
        }
        // UNAVAILABLE is the monitor's "not now" (no quorum, membership change, shutting
        // down) and also tonic's code for a connection that broke; DEADLINE_EXCEEDED and
        // CANCELLED come from a call cut short; UNKNOWN is never sent by a monitor on purpose
        // (every error of theirs has a code), so it is a transport failure too.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Failure::Retry(if message.is_empty() {
                format!("{:?}", status.code())
            } else {
                message
            })
        }
        _ => Failure::Refused(message),
    }
}

/// An error and its causes in one line: tonic's transport error says only "transport
/// error"; the reason ("Connection refused") is further down the chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gwmon_monitor::error::MonitorError;
    use gwmon_monitor::map::MapError;

    #[test]
    fn a_redirect_names_the_leader() {
        let status = gwmon_proto::leader::not_leader(Some("127.0.0.1:7402"));
        assert!(matches!(
            classify(&status),
            Failure::Redirect { leader, .. } if leader == "127.0.0.1:7402"
        ));
    }

    #[test]
    fn not_leader_without_a_known_leader_is_retried() {
        // Pins NO_LEADER_PREFIX to the text the monitors send.
        let status = gwmon_proto::leader::not_leader(None);
        assert!(matches!(classify(&status), Failure::Retry(_)));
    }

    #[test]
    fn a_refused_map_command_with_the_same_code_is_a_refusal() {
        let key = gwmon_proto::domain::GroupKey::new(
            "rbd".parse().expect("pool"),
            "g".parse().expect("group"),
        );
        let status = Status::from(MonitorError::Refused(MapError::GatewayDeleting {
            key,
            gateway: "gw1".parse().expect("id"),
        }));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(matches!(classify(&status), Failure::Refused(m) if m.contains("being deleted")));
    }

    #[test]
    fn unavailable_is_retried_and_not_found_is_not() {
        assert!(matches!(
            classify(&Status::unavailable("replication: no quorum")),
            Failure::Retry(_)
        ));
        assert!(matches!(
            classify(&Status::not_found("refused: no gateway gw9 in group rbd/g")),
            Failure::Refused(_)
        ));
        assert!(matches!(
            classify(&Status::resource_exhausted("full")),
            Failure::Refused(_)
        ));
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_addr("127.0.0.1:7400").is_ok());
        assert!(check_addr("http://[::1]:7400").is_ok());
        assert!(check_addr("").is_err());
        assert!(check_addr("localhost").is_err());
        assert!(check_addr("a b:1").is_err());
    }

    #[tokio::test]
    async fn a_closed_port_ends_with_every_address_tried() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let mut admin = Admin::new(Settings {
            monitors: vec![closed.clone(), "127.0.0.1:1".into()],
            timeout: Duration::from_secs(1),
            retries: 2,
            tls: None,
        });
        let err = admin
            .call(|mut c| async move { c.health(gwmon_proto::v1::HealthRequest {}).await })
            .await
            .expect_err("nothing listens");
        match err {
            CliError::NoMonitor {
                tried, attempts, ..
            } => {
                assert_eq!(tried, vec![closed, "127.0.0.1:1".to_owned()]);
                assert_eq!(attempts, 3);
            }
            other => panic!("unexpected {other}"),
        }
    }
}
