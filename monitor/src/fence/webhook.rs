//! The fencer that asks an HTTP endpoint to do it: a storage management API, or a small
//! service in front of one.
//!
//! # The request
//!
//! ```text
//! POST <url path>  HTTP/1.1
//! Content-Type: application/json
//!
//! {"gateway":"gw-a","pool":"rbd","group":"grp1","epoch":7,"nonces":["10.0.0.5:0/3141","10.0.0.5:0/2718"]}
//! ```
//!
//! `epoch` is a JSON number (the group epoch the fence was issued at), `nonces` an array of
//! strings in sorted order, possibly empty; `group` may be `""` (Ceph's default group).
//! Any 2xx answer means the gateway is fenced.
//!
//! # Retries
//!
//! Each attempt has its own timeout. Transport errors, timeouts and 5xx answers are retried
//! up to `retries` more times, waiting `backoff`, `2 × backoff`, `4 × backoff`… (each wait at
//! most [`MAX_BACKOFF`]) in between; 3xx and 4xx answers are a refusal (wrong path,
//! credentials, a request the endpoint will never accept) and end the attempt at once.
//! These quick retries ride out a blip; after them the runner keeps retrying the fence on
//! its own, slower schedule, forever. So the endpoint must be idempotent.
//!
//! # Only `http://`
//!
//! The monitor speaks plain HTTP/1.1 (hyper, already linked for gRPC) and has no TLS
//! client. For an `https://` endpoint run a local TLS-originating proxy (stunnel, envoy,
//! nginx) and point the URL at it on loopback.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::config::FenceConfigError;
use super::{one_line_tail, BoxFuture, FenceError, FenceOrder, Fencer};

/// The longest wait between two quick retries, however large `backoff` and `retries` are:
/// the runner has its own, slower retry schedule for long outages.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bytes of the start of a refusal's body quoted in the error.
const ERROR_TAIL: usize = 500;
/// Bytes of a response body read at most: only its start is ever shown.
const READ_LIMIT: usize = 4096;

/// POSTs each fence order as JSON; see the module docs.
#[derive(Debug, Clone)]
pub struct WebhookFencer {
    url: String,
    /// Host to dial: without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// `Host` header: the URL's authority as written.
    authority: String,
    path: String,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
}

impl WebhookFencer {
    /// `timeout` bounds each attempt; up to `retries` more attempts follow a failed one.
    /// Refuses a URL that is not `http://HOST[:PORT][/PATH]`.
    pub fn new(
        url: &str,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
    ) -> Result<Self, FenceConfigError> {
        let bad = |message: String| FenceConfigError::new("fencer_url", message);
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(format!(
                    "{url:?}: https is not supported; run a local TLS proxy and give its http:// address"
                )))
            }
            _ => return Err(bad(format!("{url:?} is not an http:// URL"))),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| bad(format!("{url:?} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(bad(format!(
                "{url:?}: credentials in the URL are not supported"
            )));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad(format!("{url:?} has no host")));
        }
        Ok(WebhookFencer {
            url: url.to_owned(),
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            timeout,
            retries,
            backoff,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The JSON body for `order`.
    pub fn body(order: &FenceOrder) -> serde_json::Value {
        serde_json::json!({
            "gateway": order.gateway.as_str(),
            "pool": order.key.pool.as_str(),
            "group": order.key.group.as_str(),
            "epoch": order.epoch.0,
            "nonces": order.nonces.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        })
    }

    /// The wait before quick retry `n` (1-based).
    fn wait_before(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }

    async fn run(&self, order: &FenceOrder) -> Result<(), FenceError> {
        let body = Bytes::from(Self::body(order).to_string());
        let mut attempt = 0u32;
        loop {
            let result = match tokio::time::timeout(self.timeout, self.post(body.clone())).await {
                Ok(r) => r,
                Err(_) => Err(FenceError::Timeout {
                    what: "webhook request",
                    after: self.timeout,
                }),
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_permanent() => return Err(e),
                Err(e) => e,
            };
            if attempt >= self.retries {
                return Err(error);
            }
            attempt += 1;
            let wait = self.wait_before(attempt);
            warn!(key = %order.key, gateway = %order.gateway, epoch = %order.epoch, %error,
                retry = attempt, of = self.retries, wait_ms = wait.as_millis() as u64,
                "fence webhook failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One request on a fresh connection: fences are rare, so nothing is pooled.
    async fn post(&self, body: Bytes) -> Result<(), FenceError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.transport(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.transport(&e))?;
        // The connection is driven by its own task, aborted when this attempt ends or is
        // dropped on timeout, so nothing outlives the attempt.
        let _conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "fence webhook connection ended");
            }
        }));
        let request = Request::post(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("gwmon/", env!("CARGO_PKG_VERSION")))
            .header(CONNECTION, "close")
            .body(Full::new(body))
            .map_err(|e| self.transport(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_success() {
            debug!(url = %self.url, %status, "fence webhook accepted");
            return Ok(());
        }
        let body = read_start(response.into_body()).await;
        Err(FenceError::Http {
            status: status.as_u16(),
            // The start of a body says what went wrong; joining its lines at most doubles
            // it, so nothing of that start is cut again.
            body: one_line_tail(&body[..body.len().min(ERROR_TAIL)], 2 * ERROR_TAIL),
        })
    }

    fn transport(&self, e: &dyn std::error::Error) -> FenceError {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        FenceError::Transport {
            url: self.url.clone(),
            message,
        }
    }
}

impl Fencer for WebhookFencer {
    fn fence<'a>(&'a self, order: &'a FenceOrder) -> BoxFuture<'a, Result<(), FenceError>> {
        Box::pin(self.run(order))
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

/// The first [`READ_LIMIT`] bytes of a body, or what arrived before it broke off: it only
/// decorates an error, so a read failure is not one of its own.
async fn read_start(mut body: Incoming) -> Vec<u8> {
    let mut kept = Vec::new();
    while kept.len() < READ_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = READ_LIMIT - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    kept
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_once_at_configuration() {
        let f = WebhookFencer::new(
            "http://fence.local:8080/v1/fence?x=1",
            Duration::from_secs(1),
            2,
            Duration::from_millis(100),
        )
        .expect("valid");
        assert_eq!((f.host.as_str(), f.port), ("fence.local", 8080));
        assert_eq!(f.path, "/v1/fence?x=1");
        assert_eq!(f.authority, "fence.local:8080");

        let f =
            WebhookFencer::new("http://[::1]", Duration::ZERO, 0, Duration::ZERO).expect("ipv6");
        assert_eq!((f.host.as_str(), f.port, f.path.as_str()), ("::1", 80, "/"));

        for (url, why) in [
            ("https://x/", "https is not supported"),
            ("ftp://x/", "not an http:// URL"),
            ("fence.local:8080", "not an http:// URL"),
            ("http://u:p@x/", "credentials"),
            ("not a url", "is not a URL"),
        ] {
            let e = WebhookFencer::new(url, Duration::ZERO, 0, Duration::ZERO)
                .expect_err(url)
                .to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(e.starts_with("fencer_url: "), "{e}");
        }
    }

    #[test]
    fn quick_retries_double_and_are_capped() {
        let f = WebhookFencer::new(
            "http://x/",
            Duration::from_secs(1),
            40,
            Duration::from_millis(100),
        )
        .expect("valid");
        assert_eq!(f.wait_before(1), Duration::from_millis(100));
        assert_eq!(f.wait_before(2), Duration::from_millis(200));
        assert_eq!(f.wait_before(3), Duration::from_millis(400));
        assert_eq!(f.wait_before(40), MAX_BACKOFF);
    }
}
