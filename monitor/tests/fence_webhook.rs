//! The webhook fencer against a tiny HTTP/1.1 server on `127.0.0.1:0` that answers from a
//! script and records what it received.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gwmon_monitor::fence::{FenceError, FenceOrder, Fencer, WebhookAuth, WebhookFencer};
use gwmon_proto::domain::{Epoch, GroupKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// What the server does with one connection.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16, &'static str),
    /// Read the request, then never answer.
    Hang,
}

struct Server {
    url_base: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serve one connection per answer, in order, then stop listening.
    async fn start(answers: Vec<Answer>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            let mut hung = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().await.expect("accept");
                let request = read_request(&mut stream).await;
                log.lock().expect("log").push(request);
                match answer {
                    Answer::Status(code, body) => {
                        let reply = format!(
                            "HTTP/1.1 {code} Whatever\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        stream.write_all(reply.as_bytes()).await.expect("write");
                        stream.shutdown().await.ok();
                    }
                    Answer::Hang => hung.push(stream),
                }
            }
            // Keep hung connections open until the test ends.
            std::future::pending::<()>().await;
            drop(hung);
        });
        Server {
            url_base: format!("http://{addr}"),
            received,
            task,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Enough HTTP/1.1 to read one request with a `Content-Length` body.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Received {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed inside the request head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ascii head");
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().expect("request line").split(' ');
    let method = request_line.next().expect("method").to_owned();
    let target = request_line.next().expect("target").to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .expect("a content-length")
        .parse()
        .expect("a number");
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Received {
        method,
        target,
        headers,
        body,
    }
}

fn order() -> FenceOrder {
    FenceOrder {
        key: GroupKey::new("rbd".parse().expect("pool"), "grp1".parse().expect("group")),
        gateway: "gw-a".parse().expect("gateway"),
        epoch: Epoch(7),
        nonces: vec![
            "10.0.0.5:0/2718".parse().expect("nonce"),
            "10.0.0.5:0/3141".parse().expect("nonce"),
        ],
    }
}

fn fencer(url: &str, timeout: Duration, retries: u32) -> WebhookFencer {
    WebhookFencer::new(url, timeout, retries, Duration::from_millis(20)).expect("valid url")
}

#[tokio::test]
async fn a_503_is_retried_and_the_200_that_follows_completes_the_fence() {
    let server = Server::start(vec![Answer::Status(503, "busy"), Answer::Status(200, "{}")]).await;
    let url = format!("{}/v1/fence?site=a", server.url_base);
    let f = fencer(&url, Duration::from_secs(5), 3);
    assert_eq!(f.name(), "webhook");
    f.fence(&order()).await.expect("fenced on the retry");

    let got = server.received();
    assert_eq!(got.len(), 2, "one retry");
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/v1/fence?site=a");
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(
            r.headers.get("host"),
            Some(&server.url_base["http://".len()..].to_owned())
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json body");
        assert_eq!(
            body,
            serde_json::json!({
                "gateway": "gw-a",
                "pool": "rbd",
                "group": "grp1",
                "epoch": 7,
                "nonces": ["10.0.0.5:0/2718", "10.0.0.5:0/3141"],
            })
        );
    }
}

#[tokio::test]
async fn a_400_is_a_refusal_and_is_not_retried() {
    let server = Server::start(vec![
        Answer::Status(400, "unknown pool rbd\n"),
        Answer::Status(200, ""),
    ])
    .await;
    let err = fencer(
        &format!("{}/fence", server.url_base),
        Duration::from_secs(5),
        3,
    )
    .fence(&order())
    .await
    .expect_err("refused");
    let FenceError::Http { status, body } = &err else {
        panic!("expected an HTTP error, got {err}");
    };
    assert_eq!((*status, body.as_str()), (400, "unknown pool rbd"));
    assert!(err.is_permanent());
    assert_eq!(
        err.to_string(),
        "webhook answered HTTP 400: unknown pool rbd"
    );
    // The fencer returned: any retry would already have reached the server.
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_only_as_often_as_configured() {
    let server = Server::start(vec![Answer::Status(500, "oops"); 4]).await;
    let err = fencer(&server.url_base, Duration::from_secs(5), 2)
        .fence(&order())
        .await
        .expect_err("keeps failing");
    assert!(matches!(err, FenceError::Http { status: 500, .. }), "{err}");
    assert!(!err.is_permanent());
    assert_eq!(server.received().len(), 3, "the first try and 2 retries");
    assert_eq!(server.received()[0].target, "/", "an empty path is /");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_transport_error() {
    // A port that was just free: nothing listens there now.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let url = format!("http://{addr}/fence");
    let err = fencer(&url, Duration::from_secs(5), 1)
        .fence(&order())
        .await
        .expect_err("nobody listens");
    let FenceError::Transport { url: u, message } = &err else {
        panic!("expected a transport error, got {err}");
    };
    assert_eq!(u, &url);
    assert!(!message.is_empty());
}

#[tokio::test]
async fn each_attempt_is_bounded_by_the_timeout() {
    let server = Server::start(vec![Answer::Hang, Answer::Hang]).await;
    let started = Instant::now();
    let err = fencer(&server.url_base, Duration::from_millis(200), 1)
        .fence(&order())
        .await
        .expect_err("no answer");
    assert!(matches!(err, FenceError::Timeout { .. }), "{err}");
    assert_eq!(err.to_string(), "webhook request timed out after 200 ms");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(server.received().len(), 2, "the first try and 1 retry");
}

/// A CA and a certificate from it for 127.0.0.1, in PEM, and the certificate's key.
struct Pki {
    ca_pem: String,
    cert_der: rustls_pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    Pki {
        ca_pem: ca_cert.pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

/// Answer one https request with `status`, and hand back what was received.
async fn https_once(pki: &Pki, status: u16) -> (String, tokio::task::JoinHandle<Option<Received>>) {
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.cert_der.clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}/fence", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // A client that refuses the certificate ends the handshake: nothing is received.
        let mut tls = acceptor.accept(tcp).await.ok()?;
        let request = read_request(&mut tls).await;
        let reply =
            format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        tls.write_all(reply.as_bytes()).await.expect("write");
        tls.shutdown().await.ok();
        Some(request)
    });
    (url, task)
}

#[tokio::test]
async fn https_with_a_bearer_token_reaches_an_endpoint_the_ca_vouches_for() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write ca");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").expect("write token");
    let auth = WebhookAuth {
        ca: Some(ca),
        token_file: Some(token.clone()),
    };
    let (url, server) = https_once(&pki, 200).await;
    let f = WebhookFencer::with_auth(&url, Duration::from_secs(5), 0, Duration::ZERO, &auth)
        .expect("https fencer");
    f.fence(&order()).await.expect("fenced over https");
    let got = server.await.expect("join").expect("a request over TLS");
    assert_eq!(
        got.headers.get("authorization").map(String::as_str),
        Some("Bearer s3cret-token")
    );
    assert_eq!(got.target, "/fence");

    // An endpoint whose certificate another CA signed is never sent the order (or the
    // token): the handshake fails, which is a transport error.
    let (url, server) = https_once(&pki, 200).await;
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, pki_other_ca()).expect("write");
    let f = WebhookFencer::with_auth(
        &url,
        Duration::from_secs(5),
        0,
        Duration::ZERO,
        &WebhookAuth {
            ca: Some(other),
            token_file: Some(token),
        },
    )
    .expect("https fencer");
    let e = f.fence(&order()).await.expect_err("an unknown CA");
    assert!(matches!(e, FenceError::Transport { .. }), "{e}");
    assert!(
        server.await.expect("join").is_none(),
        "nothing was received"
    );
}

fn pki_other_ca() -> String {
    pki().ca_pem
}
