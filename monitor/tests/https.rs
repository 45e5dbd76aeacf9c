//! The HTTP listener over TLS (`http_tls`): `/health/live` answers over https with the
//! monitor's certificate, and a plain-HTTP request on that port gets no answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gwmon_monitor::config::MonitorConfig;
use gwmon_monitor::node::{Listeners, Monitor, Plumbing};
use gwmon_proto::tls::TlsFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A CA and a monitor certificate for 127.0.0.1, as PEM files in `dir`.
fn pki(dir: &Path) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::URI("gwmon://monitor/1".try_into().expect("uri")));
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("monitor-1.pem"),
        key: dir.join("monitor-1.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).expect("write ca");
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

const GET: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: monitor\r\nConnection: close\r\n\r\n";

async fn https_get(addr: std::net::SocketAddr, ca: &Path) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(c.expect("ca cert")).expect("add root");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.write_all(GET).await.expect("send");
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tls_serves_health_over_https_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = pki(dir.path());
    let listeners = Listeners::loopback(true).await.expect("bind");
    let mut config = MonitorConfig::new(
        1,
        dir.path().join("m1"),
        listeners.grpc.local_addr().expect("addr"),
    );
    config.tls = Some(files.clone());
    config.http_tls = true;
    let monitor = Monitor::start(config, listeners, Plumbing::default())
        .await
        .expect("monitor starts");
    let http = monitor.http_addr.expect("an HTTP listener");

    let reply = https_get(http, &files.ca).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // Plain HTTP on the same port: the handshake fails and no HTTP answer comes back.
    let mut plain = TcpStream::connect(http).await.expect("connect");
    plain.write_all(GET).await.expect("send");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut reply)).await;
    assert!(
        !String::from_utf8_lossy(&reply).contains("HTTP/1.1"),
        "plain HTTP was answered: {reply:?}"
    );

    monitor.shutdown().await.expect("stops");
}

#[test]
fn http_tls_needs_the_tls_files() {
    let mut config = MonitorConfig::new(1, "unused", "127.0.0.1:0".parse().expect("addr"));
    config.http_tls = true;
    let err = config.validate().expect_err("http_tls without TLS");
    assert!(
        err.to_string().starts_with("http_tls: needs tls_ca"),
        "{err}"
    );
}
