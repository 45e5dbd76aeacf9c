//! `certs init` and `certs issue`: the files written and what the certificate says.

use std::path::PathBuf;

use rcgen::{CertificateParams, SanType};
use serde::Serialize;

use super::View;
use crate::certs::utc;

/// One certificate and its key, as written. `identity` is null for the CA, which names no
/// holder; `names` (DNS names and IP addresses) is empty but for monitors.
#[derive(Debug, Clone, Serialize)]
pub struct CertOut {
    pub certificate: String,
    pub key: String,
    /// The subject's common name.
    pub subject: String,
    /// The `gwmon://ROLE/NAME` URI the monitors authorize by.
    pub identity: Option<String>,
    pub names: Vec<String>,
    pub not_before: String,
    pub not_after: String,
}

impl CertOut {
    pub fn new(
        certificate: PathBuf,
        key: PathBuf,
        subject: &str,
        identity: Option<String>,
        params: &CertificateParams,
    ) -> Self {
        let names = params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::DnsName(name) => Some(name.as_str().to_owned()),
                SanType::IpAddress(ip) => Some(ip.to_string()),
                _ => None,
            })
            .collect();
        CertOut {
            certificate: certificate.display().to_string(),
            key: key.display().to_string(),
            subject: subject.to_owned(),
            identity,
            names,
            not_before: utc(params.not_before),
            not_after: utc(params.not_after),
        }
    }
}

impl View for CertOut {
    fn plain(&self) -> String {
        let mut s = format!(
            "certificate  {}\nkey          {} (keep it secret)\nsubject      CN={}\n",
            self.certificate, self.key, self.subject
        );
        if let Some(id) = &self.identity {
            s.push_str(&format!("identity     {id}\n"));
        }
        if !self.names.is_empty() {
            s.push_str(&format!("names        {}\n", self.names.join(", ")));
        }
        s.push_str(&format!(
            "valid        {} to {}\n",
            self.not_before, self.not_after
        ));
        s
    }
}
