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
//! # https and a token
//!
//! An `https://` URL is dialled with TLS (rustls), checking the endpoint's certificate
//! against `fencer_ca` (required: no system store is consulted, so only the CA named can
//! vouch for the endpoint). With `fencer_token_file`, every request carries
//! `Authorization: Bearer <token>`, the token being the file's content without its
//! trailing newline, read when the monitor starts. A token is refused over plain `http://`
//! unless the host is a loopback address, where nothing on the wire can read it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
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

/// Where the webhook's credentials are; the files are read when the fencer is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookAuth {
    /// `fencer_ca`: the CA (PEM) an `https://` endpoint's certificate must come from.
    pub ca: Option<PathBuf>,
    /// `fencer_token_file`: a bearer token sent with every request.
    pub token_file: Option<PathBuf>,
}

/// POSTs each fence order as JSON; see the module docs.
#[derive(Clone)]
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
    /// For an `https://` URL.
    tls: Option<TlsConnector>,
    /// `Authorization: Bearer ...`, marked sensitive.
    token: Option<HeaderValue>,
}

impl std::fmt::Debug for WebhookFencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("WebhookFencer")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// A URL as the webhook dials it, checked without touching the system.
struct Target {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str, auth: &WebhookAuth) -> Result<Target, FenceConfigError> {
        let bad = |message: String| FenceConfigError::new("fencer_url", message);
        let uri: Uri = url
            .parse()
            .map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad(format!("{url:?} is not an http:// or https:// URL"))),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad(format!("{url:?} has no host")))?;
        if authority.as_str().contains('@') {
            return Err(bad(format!(
                "{url:?}: credentials in the URL are not supported; use fencer_token_file"
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
        match (https, &auth.ca) {
            (true, None) => {
                return Err(FenceConfigError::new(
                    "fencer_ca",
                    format!("is required with an https:// fencer_url ({url}): the CA that signed the endpoint's certificate"),
                ))
            }
            (false, Some(_)) => {
                return Err(FenceConfigError::new(
                    "fencer_ca",
                    format!("applies only to an https:// fencer_url, not {url}"),
                ))
            }
            _ => {}
        }
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if auth.token_file.is_some() && !https && !loopback {
            return Err(FenceConfigError::new(
                "fencer_token_file",
                format!("a token is sent over https only, or over http to a loopback address; {url} would carry it in the clear"),
            ));
        }
        Ok(Target {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            host,
        })
    }
}

impl WebhookFencer {
    /// A fencer for an `http://HOST[:PORT][/PATH]` URL without credentials; see
    /// [`WebhookFencer::with_auth`].
    pub fn new(
        url: &str,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
    ) -> Result<Self, FenceConfigError> {
        Self::with_auth(url, timeout, retries, backoff, &WebhookAuth::default())
    }

    /// `timeout` bounds each attempt; up to `retries` more attempts follow a failed one.
    /// Reads the CA and the token `auth` names; refuses what [`WebhookFencer::check`]
    /// refuses, and files that cannot be read or hold nothing usable.
    pub fn with_auth(
        url: &str,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
        auth: &WebhookAuth,
    ) -> Result<Self, FenceConfigError> {
        let target = Target::parse(url, auth)?;
        let tls = match (&auth.ca, target.https) {
            (Some(ca), true) => Some(connector(ca)?),
            _ => None,
        };
        let token = auth.token_file.as_deref().map(read_token).transpose()?;
        Ok(WebhookFencer {
            url: url.to_owned(),
            host: target.host,
            port: target.port,
            authority: target.authority,
            path: target.path,
            timeout,
            retries,
            backoff,
            tls,
            token,
        })
    }

    /// Check `url` with `auth` without reading any file: the scheme, the host, a CA for
    /// https (and only for https), a token only where it cannot be read on the wire.
    pub fn check(url: &str, auth: &WebhookAuth) -> Result<(), FenceConfigError> {
        Target::parse(url, auth).map(|_| ())
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
        let Some(tls) = &self.tls else {
            return self.exchange(stream, body).await;
        };
        let name = ServerName::try_from(self.host.clone()).map_err(|e| self.transport(&e))?;
        let stream = tls
            .connect(name, stream)
            .await
            .map_err(|e| self.transport(&e))?;
        self.exchange(stream, body).await
    }

    /// The request and its answer over `io`, plain or TLS.
    async fn exchange<IO>(&self, io: IO, body: Bytes) -> Result<(), FenceError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.transport(&e))?;
        // The connection is driven by its own task, aborted when this attempt ends or is
        // dropped on timeout, so nothing outlives the attempt.
        let _conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "fence webhook connection ended");
            }
        }));
        let mut request = Request::post(self.path.as_str())
            .header(HOST, self.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("gwmon/", env!("CARGO_PKG_VERSION")))
            .header(CONNECTION, "close");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let request = request
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

/// A TLS client trusting only the CA in `path`.
fn connector(path: &Path) -> Result<TlsConnector, FenceConfigError> {
    let bad = |message: String| {
        FenceConfigError::new("fencer_ca", format!("{}: {message}", path.display()))
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| bad("is not a PEM certificate".to_owned()))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".to_owned()));
    }
    // ring, as for every other TLS connection of gwmon (tonic's tls-ring): aws-lc-rs, the
    // post-quantum alternative rustls now prefers, needs cmake and a C toolchain to build.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The bearer token in `path`: its content without the trailing newline, as a header value
/// marked sensitive (kept out of hyper's debug output).
fn read_token(path: &Path) -> Result<HeaderValue, FenceConfigError> {
    let bad = |message: String| {
        FenceConfigError::new(
            "fencer_token_file",
            format!("{}: {message}", path.display()),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(bad("is empty".to_owned()));
    }
    if token.contains(['\n', '\r']) || token.trim() != token {
        return Err(bad(
            "must hold the token on one line, without surrounding spaces".to_owned(),
        ));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| bad("holds characters a header cannot carry".to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
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
            ("ftp://x/", "not an http:// or https:// URL"),
            ("fence.local:8080", "not an http:// or https:// URL"),
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
    fn https_needs_its_ca_and_a_token_never_travels_in_the_clear() {
        let ca = |p: &str| WebhookAuth {
            ca: Some(PathBuf::from(p)),
            token_file: None,
        };
        let token = WebhookAuth {
            ca: None,
            token_file: Some(PathBuf::from("/etc/gwmon/fence.token")),
        };
        let check = |url: &str, auth: &WebhookAuth| {
            WebhookFencer::check(url, auth).map_err(|e| e.to_string())
        };
        assert!(check("https://fence.example/v1", &ca("/ca.pem")).is_ok());
        let e = check("https://fence.example/v1", &WebhookAuth::default()).unwrap_err();
        assert!(
            e.starts_with("fencer_ca: is required with an https:// fencer_url"),
            "{e}"
        );
        let e = check("http://fence.example/v1", &ca("/ca.pem")).unwrap_err();
        assert!(
            e.starts_with("fencer_ca: applies only to an https://"),
            "{e}"
        );
        let e = check("http://fence.example/v1", &token).unwrap_err();
        assert!(
            e.starts_with("fencer_token_file: a token is sent over https only"),
            "{e}"
        );
        for url in [
            "http://127.0.0.1:9/f",
            "http://[::1]:9/f",
            "http://localhost/f",
        ] {
            assert!(check(url, &token).is_ok(), "{url}");
        }
        let both = WebhookAuth {
            token_file: token.token_file.clone(),
            ..ca("/ca.pem")
        };
        assert!(check("https://fence.example/v1", &both).is_ok());
        let https = Target::parse("https://fence.example/v1", &both).expect("parse");
        assert_eq!(https.port, 443);
    }

    #[test]
    fn credentials_that_cannot_be_used_stop_the_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let build = |auth: WebhookAuth| {
            WebhookFencer::with_auth(
                "http://127.0.0.1:9/f",
                Duration::from_secs(1),
                0,
                Duration::ZERO,
                &auth,
            )
            .map(|f| f.token.is_some())
            .map_err(|e| e.to_string())
        };
        let token = |p: PathBuf| WebhookAuth {
            ca: None,
            token_file: Some(p),
        };
        assert_eq!(build(token(write("ok", "s3cret\n"))), Ok(true));
        for (text, why) in [
            ("", "is empty"),
            ("\n", "is empty"),
            ("a\nb\n", "on one line"),
            (" s3cret", "without surrounding spaces"),
            ("s3cr\u{7f}t", "cannot carry"),
        ] {
            let e = build(token(write("bad", text))).unwrap_err();
            assert!(
                e.starts_with("fencer_token_file: ") && e.contains(why),
                "{text:?}: {e}"
            );
        }
        let e = build(token(dir.path().join("absent"))).unwrap_err();
        assert!(
            e.starts_with("fencer_token_file: ") && e.contains("absent"),
            "{e}"
        );
        let junk = write("junk.pem", "not a certificate");
        let e = WebhookFencer::with_auth(
            "https://127.0.0.1:9/f",
            Duration::from_secs(1),
            0,
            Duration::ZERO,
            &WebhookAuth {
                ca: Some(junk),
                token_file: None,
            },
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("fencer_ca: ") && e.ends_with("holds no PEM certificate"),
            "{e}"
        );
        let f = WebhookFencer::new(
            "http://127.0.0.1:9/f",
            Duration::from_secs(1),
            0,
            Duration::ZERO,
        )
        .expect("plain");
        assert!(!format!("{f:?}").contains("s3cret"));
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
