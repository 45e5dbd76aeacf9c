//! Mutual TLS on every gRPC connection: the three files each party names (the cluster's CA,
//! its own certificate, its private key; `nvme-gw certs` makes them), read and checked once
//! with a message that names the file at fault, and the server and client configurations
//! made from them. Monitors serve with [`Tls::server`] and require a client certificate
//! from the same CA; every client (the other monitors, gateways, `nvme-gw`, agents) dials
//! with [`Tls::endpoint`].

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

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

/// A party's TLS material, read and checked. Its `Debug` shows the file names only, never
/// the key.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    ca: Certificate,
    identity: Identity,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Read the three files and check that each holds what it should: the CA and the
    /// certificate at least one PEM certificate, the key a PEM private key.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let ca = read(&files.ca, "CA")?;
        let cert = read(&files.cert, "certificate")?;
        let key = read(&files.key, "key")?;
        let not_pem = |what, path: &Path, expected| TlsError::NotPem {
            what,
            path: path.to_owned(),
            expected,
        };
        let has_cert = |pem: &[u8]| {
            let mut certs = CertificateDer::pem_slice_iter(pem);
            matches!(certs.next(), Some(Ok(_))) && certs.all(|c| c.is_ok())
        };
        if !has_cert(&ca) {
            return Err(not_pem("CA", &files.ca, "certificate"));
        }
        if !has_cert(&cert) {
            return Err(not_pem("certificate", &files.cert, "certificate"));
        }
        if PrivateKeyDer::from_pem_slice(&key).is_err() {
            return Err(not_pem("key", &files.key, "private key"));
        }
        let tls = Tls {
            files: files.clone(),
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        };
        // Built once here so a key that is not the certificate's is refused at start, not
        // at the first connection.
        tls.check()?;
        Ok(tls)
    }

    fn check(&self) -> Result<(), TlsError> {
        tonic::transport::Server::builder()
            .tls_config(self.server())
            .map(|_| ())
            .map_err(|e| self.unusable(&e))
    }

    /// `e`, from configuring TLS with these files, as the error naming them.
    pub fn unusable(&self, e: &dyn std::error::Error) -> TlsError {
        TlsError::Unusable {
            cert: self.files.cert.clone(),
            key: self.files.key.clone(),
            reason: chain(e),
        }
    }

    /// The files this was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A monitor's listener: its certificate, and a client certificate from the CA required
    /// of every caller (a connection without one fails in the handshake).
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// A client's side: the monitor's certificate must come from the CA and name the host
    /// or address dialled; this party's certificate is presented in return.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
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
