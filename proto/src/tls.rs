//! Mutual TLS on every gRPC connection: the three files each party names (the cluster's CA,
//! its own certificate, its private key; `nvme-gw certs` makes them), read and checked once
//! with a message that names the file at fault, and the server and client configurations
//! made from them. Monitors serve with [`Tls::server_config`] and require a client
//! certificate from the same CA; every client (the other monitors, gateways, `nvme-gw`,
//! agents) dials with [`Tls::endpoint`]. [`Tls::reload`] takes new files without a restart
//! (a monitor on SIGHUP; gateways and agents before each connection they make).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The longest a TLS handshake may take on a monitor's listener: a client that connects and
/// never speaks is dropped instead of holding a connection forever.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a party's TLS material is: its CA (to check peers), its certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The three settings together, or none: TLS with only some of its files is refused,
    /// naming the missing ones (`what` prefixes each name, e.g. `--tls-` or `tls_`).
    pub fn from_parts(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        what: &str,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
            (ca, cert, key) => {
                let missing: Vec<String> = [
                    ("ca", ca.is_none()),
                    ("cert", cert.is_none()),
                    ("key", key.is_none()),
                ]
                .into_iter()
                .filter(|(_, m)| *m)
                .map(|(name, _)| format!("{what}{name}"))
                .collect();
                Err(TlsError::Incomplete {
                    missing: missing.join(" and "),
                })
            }
        }
    }
}

/// Why TLS could not be set up. One line, naming the file or setting at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("TLS needs a CA, a certificate and a key; {missing} not given")]
    Incomplete { missing: String },
    #[error("cannot read the TLS {what} {}: {reason}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the TLS {what} {} holds no PEM {expected}", path.display())]
    NotPem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("cannot use the TLS files ({}, {}): {reason}", cert.display(), key.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// A party's TLS material, read and checked. Clones share it, and [`Tls::reload`] replaces
/// it for all of them at once: new connections use the new files, open ones keep theirs.
/// Its `Debug` shows the file names only, never the key.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<Material>>>,
}

/// What the three files held when they were last read.
struct Material {
    ca: Certificate,
    identity: Identity,
    server: Arc<rustls::ServerConfig>,
    http: Arc<rustls::ServerConfig>,
    stamp: Stamp,
}

/// The files' sizes and modification times, to notice that they were replaced.
type Stamp = [Option<(u64, std::time::SystemTime)>; 3];

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Read the three files and check that each holds what it should: the CA and the
    /// certificate at least one PEM certificate, the key a PEM private key that belongs to
    /// the certificate.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        Ok(Tls {
            files: files.clone(),
            current: Arc::new(RwLock::new(Arc::new(Material::read(files)?))),
        })
    }

    /// Read the files again. On success every clone uses the new material for the
    /// connections it makes or accepts from now on; on failure (a file missing, half
    /// written, or a key that is not the certificate's) the old material stays in use and
    /// the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(Material::read(&self.files)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// [`Tls::reload`] if any of the files changed (size or modification time) since they
    /// were last read; `Ok(true)` when new material was taken. Cheap enough to call before
    /// every connection a client makes.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if stamp(&self.files) == self.material().stamp {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `e`, from configuring TLS with these files, as the error naming them.
    pub fn unusable(&self, e: &dyn std::error::Error) -> TlsError {
        unusable(&self.files, e)
    }

    /// The files this was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A monitor's listener, for a rustls acceptor: its certificate, HTTP/2 by ALPN, and a
    /// client certificate from the CA required of every caller (a connection without one
    /// fails in the handshake). The current material: take it anew for each connection.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.material().server.clone()
    }

    /// A monitor's HTTP listener (`/metrics`, `/health/*`, `/status`, read-only): its
    /// certificate over HTTP/1.1, no client certificate asked for, so Prometheus and
    /// health probes need only the CA to check it.
    pub fn http_server_config(&self) -> Arc<rustls::ServerConfig> {
        self.material().http.clone()
    }

    /// A client's side: the monitor's certificate must come from the CA and name the host
    /// or address dialled; this party's certificate is presented in return.
    pub fn client(&self) -> ClientTlsConfig {
        let m = self.material();
        ClientTlsConfig::new()
            .ca_certificate(m.ca.clone())
            .identity(m.identity.clone())
    }

    /// An endpoint for the monitor at `addr` (`host:port`, or with a scheme, which becomes
    /// `https`), speaking TLS with [`Tls::client`].
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, TlsError> {
        let host_port = addr.split_once("://").map_or(addr, |(_, rest)| rest);
        Endpoint::from_shared(format!("https://{host_port}"))
            .and_then(|e| e.tls_config(self.client()))
            .map_err(|e| self.unusable(&e))
    }
}

impl Material {
    fn read(files: &TlsFiles) -> Result<Material, TlsError> {
        // Stamped before reading: a file replaced while it is read is read again next time.
        let stamp = stamp(files);
        let ca = read(&files.ca, "CA")?;
        let cert = read(&files.cert, "certificate")?;
        let key = read(&files.key, "key")?;
        let not_pem = |what, path: &Path, expected| TlsError::NotPem {
            what,
            path: path.to_owned(),
            expected,
        };
        let certs = |pem: &[u8]| -> Option<Vec<CertificateDer<'static>>> {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
            certs.ok().filter(|c| !c.is_empty())
        };
        let ca_certs = certs(&ca).ok_or_else(|| not_pem("CA", &files.ca, "certificate"))?;
        let chain =
            certs(&cert).ok_or_else(|| not_pem("certificate", &files.cert, "certificate"))?;
        let private = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|_| not_pem("key", &files.key, "private key"))?;
        // Built here so a key that is not the certificate's, or a CA rustls cannot use, is
        // refused when the files are read, not at the first connection.
        let http =
            http_config(chain.clone(), private.clone_key()).map_err(|e| unusable(files, &e))?;
        let server = server_config(ca_certs, chain, private).map_err(|e| unusable(files, &e))?;
        Ok(Material {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
            server: Arc::new(server),
            http: Arc::new(http),
            stamp,
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring, as tonic's tls-ring on the client side: aws-lc-rs, the post-quantum provider
    // rustls now prefers, needs cmake and a C toolchain to build.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn http_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn server_config(
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots.add(c)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn stamp(files: &TlsFiles) -> Stamp {
    [&files.ca, &files.cert, &files.key].map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    })
}

fn unusable(files: &TlsFiles, e: &dyn std::error::Error) -> TlsError {
    TlsError::Unusable {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: chain(e),
    }
}

/// An endpoint for `addr` with TLS when `tls` is given, else plain (h2c).
pub fn endpoint(addr: &str, tls: Option<&Tls>) -> Result<Endpoint, String> {
    match tls {
        Some(tls) => tls.endpoint(addr).map_err(|e| e.to_string()),
        None => Endpoint::from_shared(crate::addr::uri(addr))
            .map_err(|e| format!("monitor address {addr:?}: {}", chain(&e))),
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// An error and its sources in one line (`a: b: c`), without repeating a source whose text
/// its parent already carries.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_three_files_or_none() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(TlsFiles::from_parts(None, None, None, "--tls-"), Ok(None));
        assert!(TlsFiles::from_parts(p("a"), p("b"), p("c"), "--tls-").is_ok_and(|f| f.is_some()));
        let e = TlsFiles::from_parts(p("a"), None, None, "--tls-")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("TLS needs a CA, a certificate and a key; --tls-cert and --tls-key not given")
        );
    }

    #[test]
    fn files_that_are_missing_or_not_pem_are_named() {
        let dir = std::env::temp_dir().join(format!("gwmon-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let files = TlsFiles {
            ca: junk.clone(),
            cert: junk.clone(),
            key: dir.join("absent.key"),
        };
        let e = Tls::load(&files)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("cannot read the TLS key ") && e.contains("absent.key"),
            "{e}"
        );
        let files = TlsFiles {
            key: junk.clone(),
            ..files
        };
        let e = Tls::load(&files)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("the TLS CA ") && e.ends_with("holds no PEM certificate"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
